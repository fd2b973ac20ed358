"""Humanity's two collections fail and recover on their own; unreadable items are counted and
never delete their stored copy; empty answers delete only when repeated; the plugin asks for its
own user's records and keeps only those; its time-text reading is linear."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from data_api.models import Record
from sources.http import ProviderHttp
from sources.models import Connection, SyncOutcome, SyncRun
from sources.providers import humanity as plugin
from sources.sync import connection_sync
from tests.data_api_helpers import access_client
from tests.emulators.humanity import EMPLOYEE_ID, OTHER_EMPLOYEE_ID, PASSWORD, HumanityEmulator
from tests.factories import Persona
from tests.humanity_helpers import good_form, humanity_settings, post_connect_form, seed
from tests.live import database_url

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def http() -> ProviderHttp:
    return ProviderHttp(sleep=lambda s: None, timeout=(2.0, 2.0))


def connect(humanity: HumanityEmulator, persona: Persona) -> Connection:
    response, _ = post_connect_form(Client(), persona.human, **good_form(humanity))
    assert response.status_code == 200, response.content
    return Connection.objects.get(pk=response.json()["connection"]["id"])


def sync(connection: Connection, http: ProviderHttp) -> SyncRun:
    run = connection_sync(connection_id=connection.pk, http=http)
    assert run is not None
    return run


def stored(connection: Connection, kind: str = "shifts") -> set[str]:
    return set(Record.objects.filter(connection=connection, type=kind).values_list("external_id", flat=True))


# --- collections fail alone ------------------------------------------------------------------


@pytest.mark.parametrize("how", ["status20", "http403"])
def test_a_role_refused_clock_times_still_gets_its_shifts(
    humanity: HumanityEmulator, alice: Persona, http: ProviderHttp, how: str
) -> None:
    seed(humanity)
    connection = connect(humanity, alice)
    fault = humanity.fail("/api/v2/timeclocks", how, times=None)
    run = sync(connection, http)

    assert run.outcome == SyncOutcome.PARTIAL
    assert set(run.failures) == {"timeclocks"}
    assert "status 20" in run.failures["timeclocks"] or "403" in run.failures["timeclocks"]
    assert stored(connection) == {"s-old", "s-past", "s-soon", "s-later"}
    assert stored(connection, "timeclocks") == set()
    connection.refresh_from_db()
    assert connection.cursor["shifts"]["synced"] and "timeclocks" not in connection.cursor

    humanity.faults.remove(fault)  # the role was given the permission
    again = sync(connection, http)
    assert again.outcome == SyncOutcome.SUCCEEDED, again.error
    assert stored(connection, "timeclocks") == {"t-past", "t-now"}


def test_a_refused_lookup_of_position_names_keeps_the_records(
    humanity: HumanityEmulator, alice: Persona, http: ProviderHttp
) -> None:
    seed(humanity)
    connection = connect(humanity, alice)
    humanity.fail("/api/v2/positions", "status20", times=None)
    run = sync(connection, http)

    assert run.outcome == SyncOutcome.SUCCEEDED, run.error
    soon = Record.objects.get(connection=connection, type="shifts", external_id="s-soon")
    assert soon.data["position"] == "Front Desk"  # the shift's own schedule_name
    assert soon.data["location"] == "Main St"  # from /locations, by schedule_location_id
    clock = Record.objects.get(connection=connection, type="timeclocks", external_id="t-past")
    assert clock.data["position"] == "Front Desk"  # the clock time's own schedule.name
    assert clock.data["location"] is None  # only /positions says where a position is


def test_a_permanent_refusal_of_shifts_fails_that_collection(
    humanity: HumanityEmulator, alice: Persona, http: ProviderHttp
) -> None:
    seed(humanity)
    connection = connect(humanity, alice)
    humanity.fail("/api/v2/shifts", "status15", skip=1, times=None)
    run = sync(connection, http)

    assert run.outcome == SyncOutcome.PARTIAL and set(run.failures) == {"shifts"}
    assert "status 15" in run.failures["shifts"]
    assert stored(connection, "timeclocks") == {"t-past", "t-now"}


def test_humanity_offline_is_retried_in_place(humanity: HumanityEmulator, alice: Persona) -> None:
    seed(humanity)
    connection = connect(humanity, alice)
    humanity.fail("/api/v2/shifts", "status99", skip=1)
    http = ProviderHttp(sleep=lambda s: None)
    run = sync(connection, http)

    assert run.outcome == SyncOutcome.SUCCEEDED, run.error
    assert http.retries == 1 and len(stored(connection)) == 4


# --- unreadable items and empty answers ------------------------------------------------------


def test_an_unreadable_shift_is_counted_and_nothing_of_its_window_is_deleted(
    humanity: HumanityEmulator, alice: Persona, http: ProviderHttp
) -> None:
    at = seed(humanity)
    humanity.add_shift("s-near", at["soon"] + timedelta(days=1), title="Near")
    connection = connect(humanity, alice)
    sync(connection, http)
    assert {"s-soon", "s-near"} <= stored(connection)

    with humanity.lock:  # s-soon loses its instant; s-near, in the same month-chunk, is deleted
        del humanity.shifts["s-soon"]["start_date"]["timestamp"]
        del humanity.shifts["s-near"]
    run = sync(connection, http)

    assert run.outcome == SyncOutcome.PARTIAL
    assert run.counts["shifts"]["unreadable"] == 1
    assert any("start_date.timestamp" in reason for reason in run.unreadable["shifts"])
    # The page holding an unreadable item vouches for no deletion: both stay stored.
    assert {"s-soon", "s-near"} <= stored(connection)
    sources = access_client(alice.human).get("/v1/human/sources").json()
    status = next(s["syncStatus"] for s in sources if s["source"] == "humanity")
    assert status["status"] == "partial" and status["unreadable"] == {"shifts": 1}


def test_an_empty_answer_deletes_only_when_humanity_repeats_it(
    humanity: HumanityEmulator, alice: Persona, http: ProviderHttp
) -> None:
    seed(humanity)
    connection = connect(humanity, alice)
    sync(connection, http)
    assert stored(connection, "timeclocks") == {"t-past", "t-now"}

    with humanity.lock:
        humanity.timeclocks.clear()  # every clock-time window now answers `data: []`
    first = sync(connection, http)
    assert first.counts["timeclocks"]["deleted"] == 0
    assert stored(connection, "timeclocks") == {"t-past", "t-now"}  # one empty answer: held

    second = sync(connection, http)
    assert second.counts["timeclocks"]["deleted"] == 2
    assert stored(connection, "timeclocks") == set()


# --- whose records ---------------------------------------------------------------------------


def test_it_asks_for_its_own_shifts_and_clock_times(
    humanity: HumanityEmulator, alice: Persona, http: ProviderHttp
) -> None:
    seed(humanity)
    connection = connect(humanity, alice)
    sync(connection, http)

    shift_calls = [params for path, params in humanity.requests if path == "/api/v2/shifts"]
    clock_calls = [params for path, params in humanity.requests if path == "/api/v2/timeclocks"]
    assert shift_calls and all(p["mode"] == "employee" and p["employees"] == EMPLOYEE_ID for p in shift_calls)
    assert clock_calls and all(p["employee"] == EMPLOYEE_ID for p in clock_calls)
    for params in shift_calls + clock_calls:  # dates as YYYY-MM-DD, at most a month apart
        first, last = (date.fromisoformat(params[k]) for k in ("start_date", "end_date"))
        assert 0 <= (last - first).days <= 31


def test_it_keeps_only_its_own_shifts_when_the_instance_answers_everyones(
    humanity: HumanityEmulator, alice: Persona, http: ProviderHttp
) -> None:
    at = seed(humanity)
    humanity.ignore_mode = True
    humanity.add_shift("s-other", at["soon"], employees=(OTHER_EMPLOYEE_ID,))
    humanity.add_shift("s-both", at["soon"] + timedelta(days=2), employees=(OTHER_EMPLOYEE_ID, EMPLOYEE_ID))
    humanity.add_timeclock("t-other", at["past"], 4, employee=OTHER_EMPLOYEE_ID)
    connection = connect(humanity, alice)
    run = sync(connection, http)

    assert run.outcome == SyncOutcome.SUCCEEDED, run.error  # someone else's record is not unreadable
    assert stored(connection) == {"s-old", "s-past", "s-soon", "s-later", "s-both"}
    assert Record.objects.get(connection=connection, external_id="s-both").data["employeeId"] == EMPLOYEE_ID
    assert stored(connection, "timeclocks") == {"t-past", "t-now"}


def test_a_list_written_as_an_object_keyed_by_position_is_read(
    humanity: HumanityEmulator, alice: Persona, http: ProviderHttp
) -> None:
    seed(humanity)
    humanity.data_as_object = True
    connection = connect(humanity, alice)
    run = sync(connection, http)

    assert run.outcome == SyncOutcome.SUCCEEDED, run.error
    assert stored(connection) == {"s-old", "s-past", "s-soon", "s-later"}
    assert stored(connection, "timeclocks") == {"t-past", "t-now"}


# --- reading time text -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "1:00" + " " * 200_000 + "x",  # the shape that makes `\s*(..)?\s*$` backtrack
        "2026-12-07 09:00:00" + "+" * 200_000,
        "9" * 200_000 + ":00",
        "2026-12-07T" + "1:" * 100_000,
    ],
)
def test_reading_time_text_takes_time_in_proportion_to_its_length(text: str) -> None:
    began = time.perf_counter()
    assert plugin._clock(text) is None
    with pytest.raises(plugin.UnreadableItem):
        plugin._moment(text, "start_timestamp")
    assert plugin._wall_of({"date": "2026-12-07", "time": text}) is None
    assert time.perf_counter() - began < 0.5


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("9:00am", (9, 0, 0)),
        ("12:30am", (0, 30, 0)),
        ("12:05pm", (12, 5, 0)),
        ("5:22 PM", (17, 22, 0)),
        ("17:22", (17, 22, 0)),
        ("17:22:05", (17, 22, 5)),
        ("24:00", None),
        ("13:00pm", None),
        ("9", None),
        ("\uff19:00", None),  # a digit (fullwidth nine), but not an ASCII one
    ],
)
def test_clock_text_reads_as_humanity_writes_it(text: str, expected: tuple[int, int, int] | None) -> None:
    found = plugin._clock(text)
    assert ((found.hour, found.minute, found.second) if found else None) == expected


def test_a_wall_clock_far_from_its_instant_is_unreadable() -> None:
    item: dict[str, Any] = {
        "id": "1",
        "start_date": {"date": "2026-12-07", "timestamp": 1796652000},
        "end_date": {"date": "2026-12-07", "timestamp": 1796680800},
        "start_timestamp": "2026-12-09 09:00:00",  # two days off: not an offset any zone has
        "end_timestamp": "2026-12-09 17:00:00",
    }
    with pytest.raises(plugin.UnreadableItem, match="start_timestamp"):
        plugin._shift(item, {}, EMPLOYEE_ID)


def test_the_old_unix_reading_cannot_read_a_documented_shift_and_this_one_does() -> None:
    item: dict[str, Any] = {
        "id": "1",
        "start_date": {"date": "2026-12-07", "timestamp": 1796652000},
        "end_date": {"date": "2026-12-07", "timestamp": 1796680800},
        "start_timestamp": "2026-12-07 09:00:00",
        "end_timestamp": "2026-12-07 17:00:00",
    }
    with pytest.raises(ValueError):
        int(float(item["start_timestamp"]))  # the former reading: start_timestamp as Unix seconds
    record = plugin._shift(item, {}, EMPLOYEE_ID)
    assert record is not None
    assert record.start_time == datetime(2026, 12, 7, 14, tzinfo=UTC)
    assert record.end_time == datetime(2026, 12, 7, 22, tzinfo=UTC)
    assert (record.tz_offset, record.local_day) == (-300, date(2026, 12, 7))


def test_it_keeps_tokens_out_of_debug_logs(humanity: HumanityEmulator, alice: Persona) -> None:
    """A worker run with LOG_LEVEL=DEBUG: Humanity's access token travels in the query string,
    and no log line may carry it (nor the refresh token, nor the password)."""
    connection = connect(humanity, alice)
    credentials = connection.credentials
    env = {**os.environ, "LOG_LEVEL": "DEBUG", "DATABASE_URL": database_url(), **humanity_settings(humanity)}
    ran = subprocess.run(
        [sys.executable, "manage.py", "sync_connection", connection.pk],
        cwd=Path(__file__).resolve().parent.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ran.returncode == 0, ran.stderr[-2000:]
    logs = ran.stdout + ran.stderr
    assert humanity.calls["/api/v2/shifts"]  # the provider was called, with the token in the query
    for secret in (credentials["access_token"], credentials["refresh_token"], PASSWORD):
        assert secret not in logs, "a secret reached the logs"
