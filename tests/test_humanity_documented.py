"""Humanity's documented payloads, served by the emulator over HTTP, synced through the real
engine, and the stored and served records checked field by field against values worked out by
hand from the documentation (docs/providers/humanity.md).

Shifts: `start_date.timestamp` is the instant (Unix seconds); `start_timestamp` is the wall clock
as text; the offset is the one minus the other; the shift is filed under `start_date.date`.
Clock times: the v1 timeclock examples (platform.humanity.com/v1.0/reference/timeclocktimeclock,
timeclockstatus, timeclockclockout), whose `in_timestamp` is Unix seconds as text, whose
`start_timestamp` is the wall clock, and whose `out_timestamp` is "0" while still clocked in.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from data_api.models import Record
from data_api.records import record_json
from sources.http import ProviderHttp
from sources.models import Connection, SyncOutcome, SyncRun
from sources.sync import connection_sync
from tests.data_api_helpers import access_client
from tests.emulators.humanity import USERNAME, ClockShape, HumanityEmulator, ShiftShape
from tests.factories import Persona
from tests.humanity_helpers import good_form, humanity_settings, minute, offset_text, post_connect_form

pytestmark = pytest.mark.django_db(transaction=True)


# --- documented payloads ------------------------------------------------------------------------

# A shift as GET /shifts writes it (platform.humanity.com/reference/get-shifts; the v1
# schedule.shifts example for the date objects; start_timestamp as public clients read it).
# The account is in America/New_York: on 2026-12-07 that is EST, UTC-05:00.
#   09:00 EST = 14:00Z = 1796652000;  17:00 EST = 22:00Z = 1796680800.
SHIFT: dict[str, Any] = {
    "id": "3001",
    "title": "Opening",
    "notes": "",
    "schedule": "11",
    "schedule_name": "Front Desk",
    "schedule_location_id": "21",
    "location": "0",
    "working": "0",
    "start_date": {
        "date": "2026-12-07",
        "time": "9:00am",
        "formatted": "Dec 7, 2026",
        "timestamp": 1796652000,
        "day": 7,
        "month": 12,
        "year": 2026,
        "weekday": "Mon",
    },
    "end_date": {
        "date": "2026-12-07",
        "time": "5:00pm",
        "formatted": "Dec 7, 2026",
        "timestamp": 1796680800,
        "day": 7,
        "month": 12,
        "year": 2026,
        "weekday": "Mon",
    },
    "start_timestamp": "2026-12-07 09:00:00",
    "end_timestamp": "2026-12-07 17:00:00",
    "employees": [{"id": "1001", "name": "Morgan Manager", "paidtime": 8}],
    "published": "0",
    "confirmed": 1,
    "confirmed_end_timestamp": None,
    "paidtime": 8,
}


def shift(shift_id: str, start: tuple[str, str, int], end: tuple[str, str, int], **extra: Any) -> dict[str, Any]:
    """SHIFT with other times: (wall clock text, date, Unix seconds) for each end."""
    item = copy.deepcopy(SHIFT)
    item["id"] = shift_id
    for edge, (wall, day, stamp) in (("start", start), ("end", end)):
        item[f"{edge}_timestamp"] = wall
        item[f"{edge}_date"].update(date=day, timestamp=stamp, day=int(day[8:]), month=int(day[5:7]), year=int(day[:4]))
        item[f"{edge}_date"]["time"] = wall[11:16]
    item.update(extra)
    return item


# The v1 timeclock.timeclock example (id 64522004), as published. The account is at UTC+03:00:
#   in  1496929705 = 2017-06-08 13:48:25Z, wall "2017-06-08 16:48:25" -> +03:00
#   out 1496972905 = 2017-06-09 01:48:25Z, wall "2017-06-09 04:48:25"; 12 hours = 43200 s.
CLOCK: dict[str, Any] = {
    "id": "64522004",
    "store": "202039",
    "status": "0",
    "schedule": None,
    "notes": None,
    "created": "1496929705",
    "in_timestamp": "1496929705",
    "in_day": "2962",
    "out_timestamp": "1496972905",
    "out_day": "2963",
    "in_hour": "68",
    "out_hour": "0",
    "in_location": "TC Location  IP",
    "out_location": "Website",
    "in_terminal": "0",
    "out_terminal": "-98",
    "approved_by": "0",
    "approved_time": "0",
    "approved_notes": "",
    "in_picture": None,
    "out_picture": "",
    "screenshots": None,
    "break_time": "0",
    "start_timestamp": "2017-06-08 16:48:25",
    "end_timestamp": "2017-06-09 04:48:25",
    "in_picture_url": "",
    "out_picture_url": None,
    "in_gps": '{"latitude":"","longitude":"","supported":0}',
    "out_gps": None,
    "shift": None,
    # The excerpt of this example stops before `employee`; the sibling examples name this one.
    "employee": {"id": "2097936", "name": "Jelena Pavlovic"},
}

# The v1 timeclock.status example (id 64601743): still clocked in, so out_timestamp is "0" and
# end_timestamp null.  in 1497020114 = 2017-06-09 14:55:14Z; wall 17:55:14; iso8601 +0300.
OPEN_CLOCK: dict[str, Any] = {
    "id": "64601743",
    "store": "202039",
    "status": "0",
    "schedule": None,
    "notes": None,
    "created": "1497020114",
    "in_timestamp": "1497020114",
    "in_day": "2963",
    "out_timestamp": "0",
    "out_day": "0",
    "in_hour": "73",
    "out_hour": "0",
    "break_time": "0",
    "start_timestamp": "2017-06-09 17:55:14",
    "end_timestamp": None,
    "shift": None,
    "employee": {"id": "2097936", "name": "Jelena Pavlovic"},
    "in_time": {"time": "5:55pm", "day": "Jun 9, 2017", "timestamp": "2017-06-09 17:55:14"},
    "start": {
        "id": 2963,
        "month": 6,
        "day": 9,
        "wday": 5,
        "year": 2017,
        "weekday": "Fri",
        "mname": "Jun",
        "week": 23,
        "dayid": 6,
        "timeid": 73,
        "timeid_exact": 72,
        "formatted": "Jun 9, 2017",
        "iso8601": "2017-06-09T17:55:14+0300",
        "time": "5:55pm",
        "timestamp": 1497020114,
    },
}

# The v1 timeclock.clockout example (id 64598896): in 1497018132 = 14:22:12Z (17:22:12 local),
# out 1497019885 = 14:51:25Z (17:51:25 local): 29 min 13 s = 1753 s.
CLOSED_CLOCK: dict[str, Any] = {
    "id": "64598896",
    "status": "0",
    "schedule": None,
    "notes": None,
    "created": "1497018132",
    "in_timestamp": "1497018132",
    "out_timestamp": "1497019885",
    "break_time": "0",
    "start_timestamp": "2017-06-09 17:22:12",
    "end_timestamp": "2017-06-09 17:51:25",
    "shift": None,
    "employee": {"id": "2097936", "name": "Jelena Pavlovic"},
    "in_time": {"time": "5:22pm", "day": "Jun 9, 2017", "timestamp": "2017-06-09 17:22:12"},
}


# --- set-up -------------------------------------------------------------------------------------


@pytest.fixture
def humanity() -> Iterator[HumanityEmulator]:
    emulator = HumanityEmulator().start()
    yield emulator
    emulator.stop()


def covering(settings: Any, emulator: HumanityEmulator, *days: date) -> None:
    """Settings whose history and look-ahead reach every one of `days` from today."""
    today = timezone.now().date()
    back = max([1, *((today - d).days + 2 for d in days)])
    ahead = max([60, *((d - today).days + 2 for d in days)])
    settings.SOURCE_SETTINGS = {
        **settings.SOURCE_SETTINGS,
        **humanity_settings(emulator, history_days=back),
        "SOURCE_HUMANITY_WINDOW_AHEAD_DAYS": str(ahead),
    }


def connect_and_sync(emulator: HumanityEmulator, persona: Persona) -> tuple[Connection, SyncRun]:
    response, _ = post_connect_form(Client(), persona.human, **good_form(emulator))
    assert response.status_code == 200, response.content
    connection = Connection.objects.get(pk=response.json()["connection"]["id"])
    run = connection_sync(connection_id=connection.pk, http=ProviderHttp(sleep=lambda s: None))
    assert run is not None
    return connection, run


def stored(connection: Connection, kind: str) -> dict[str, Record]:
    return {r.external_id: r for r in Record.objects.filter(connection=connection, type=kind)}


# --- shifts -------------------------------------------------------------------------------------


def test_a_documented_shift_is_stored_at_its_instant_with_the_accounts_offset(
    settings: Any, humanity: HumanityEmulator, alice: Persona
) -> None:
    covering(settings, humanity, date(2026, 12, 7))
    humanity.add_raw_shift(copy.deepcopy(SHIFT))
    connection, run = connect_and_sync(humanity, alice)

    assert run.outcome == SyncOutcome.SUCCEEDED, run.error
    record = stored(connection, "shifts")["3001"]
    body = record_json(record)
    assert body["startTime"] == "2026-12-07T14:00:00.000Z"  # 09:00 EST, from start_date.timestamp
    assert body["endTime"] == "2026-12-07T22:00:00.000Z"  # 17:00 EST
    assert body["tzOffset"] == "-05:00"  # "2026-12-07 09:00:00" minus 14:00Z
    assert record.local_day == date(2026, 12, 7)
    assert body["title"] == "Opening"
    assert body["position"] == "Front Desk" and body["location"] == "Main St"
    assert body["published"] is False  # "0"
    assert body["employeeId"] == "1001"
    assert body["sourceData"]["start_timestamp"] == "2026-12-07 09:00:00"

    served = access_client(alice.human).get("/v1/human/shifts/daily/2026-12-07").json()
    assert [s["startTime"] for s in served] == ["2026-12-07T14:00:00.000Z"]


@pytest.mark.parametrize(
    ("item", "start", "end", "offset", "day"),
    [
        pytest.param(
            # Summer in New York is EDT, UTC-04:00: 09:00 = 13:00Z, 17:30 = 21:30Z.
            shift(
                "3002",
                ("2026-07-07 09:00:00", "2026-07-07", 1783429200),
                ("2026-07-07 17:30:00", "2026-07-07", 1783459800),
            ),
            "2026-07-07T13:00:00.000Z",
            "2026-07-07T21:30:00.000Z",
            "-04:00",
            date(2026, 7, 7),
            id="daylight-saving",
        ),
        pytest.param(
            # Overnight: 22:00 EST = 03:00Z the next day; filed under the day it starts locally.
            shift(
                "3003",
                ("2026-12-07 22:00:00", "2026-12-07", 1796698800),
                ("2026-12-08 06:00:00", "2026-12-08", 1796727600),
            ),
            "2026-12-08T03:00:00.000Z",
            "2026-12-08T11:00:00.000Z",
            "-05:00",
            date(2026, 12, 7),
            id="overnight",
        ),
        pytest.param(
            # A location in Sydney (AEDT, UTC+11:00): 08:00 local = 21:00Z the day before.
            shift(
                "3004",
                ("2026-12-07 08:00:00", "2026-12-07", 1796590800),
                ("2026-12-07 16:00:00", "2026-12-07", 1796619600),
            ),
            "2026-12-06T21:00:00.000Z",
            "2026-12-07T05:00:00.000Z",
            "+11:00",
            date(2026, 12, 7),
            id="east-of-utc",
        ),
        pytest.param(
            # Kathmandu is UTC+05:45: 09:00 local = 03:15Z.
            shift(
                "3005",
                ("2026-12-07 09:00:00", "2026-12-07", 1796613300),
                ("2026-12-07 13:00:00", "2026-12-07", 1796627700),
            ),
            "2026-12-07T03:15:00.000Z",
            "2026-12-07T07:15:00.000Z",
            "+05:45",
            date(2026, 12, 7),
            id="quarter-hour-offset",
        ),
    ],
)
def test_each_shift_takes_the_offset_and_day_of_its_own_wall_clock(
    settings: Any,
    humanity: HumanityEmulator,
    alice: Persona,
    item: dict[str, Any],
    start: str,
    end: str,
    offset: str,
    day: date,
) -> None:
    covering(settings, humanity, day - timedelta(days=1), day + timedelta(days=1))
    humanity.add_raw_shift(item)
    connection, run = connect_and_sync(humanity, alice)

    assert run.outcome == SyncOutcome.SUCCEEDED, run.error
    record = stored(connection, "shifts")[item["id"]]
    body = record_json(record)
    assert (body["startTime"], body["endTime"], body["tzOffset"]) == (start, end, offset)
    assert record.local_day == day
    served = access_client(alice.human).get(f"/v1/human/shifts/daily/{day.isoformat()}").json()
    assert [s["startTime"] for s in served] == [start]


@pytest.mark.parametrize(
    "shape",
    [
        pytest.param(ShiftShape(), id="as-documented"),
        pytest.param(ShiftShape(id_as_number=True), id="numeric-id"),
        pytest.param(ShiftShape(published="text"), id="published-text"),
        pytest.param(ShiftShape(published="bool"), id="published-bool"),
        pytest.param(ShiftShape(clock="24h"), id="24h-clock"),
        pytest.param(ShiftShape(timestamp_as_text=True), id="timestamp-as-text"),
        pytest.param(ShiftShape(iso8601=True), id="iso8601"),
        pytest.param(ShiftShape(employees="keyed"), id="employees-keyed-by-id"),
        pytest.param(ShiftShape(employees="none"), id="nobody-assigned"),
    ],
)
def test_every_written_form_of_a_shift_reads_the_same(
    settings: Any, humanity: HumanityEmulator, alice: Persona, shape: ShiftShape
) -> None:
    covering(settings, humanity)
    start = minute(timezone.now()).replace(hour=14) + timedelta(days=3)
    humanity.add_shift("4001", start, hours=7.5, published=False, shape=shape)
    connection, run = connect_and_sync(humanity, alice)

    assert run.outcome == SyncOutcome.SUCCEEDED, run.error
    record = stored(connection, "shifts")["4001"]
    body = record_json(record)
    assert body["startTime"] == start.strftime("%Y-%m-%dT%H:%M:00.000Z")
    assert body["endTime"] == (start + timedelta(hours=7.5)).strftime("%Y-%m-%dT%H:%M:00.000Z")
    assert body["tzOffset"] == offset_text(humanity.offset_minutes(start))
    assert record.local_day == humanity.local(start).date()
    assert body["published"] is False and body["employeeId"] == "1001"
    assert body["position"] == "Front Desk" and body["location"] == "Main St"


# --- clock times --------------------------------------------------------------------------------


def test_the_documented_clock_times_are_stored_at_their_instants_with_their_offset(
    settings: Any, humanity: HumanityEmulator, alice: Persona
) -> None:
    humanity.users[USERNAME]["id"] = "2097936"  # the employee of Humanity's examples
    covering(settings, humanity, date(2017, 6, 8))
    for item in (CLOCK, OPEN_CLOCK, CLOSED_CLOCK):
        humanity.add_raw_timeclock(copy.deepcopy(item))
    connection, run = connect_and_sync(humanity, alice)

    assert run.outcome == SyncOutcome.SUCCEEDED, run.error
    clocks = stored(connection, "timeclocks")
    done = record_json(clocks["64522004"])
    assert done["startTime"] == "2017-06-08T13:48:25.000Z"  # in_timestamp 1496929705
    assert done["endTime"] == "2017-06-09T01:48:25.000Z"  # out_timestamp 1496972905
    assert done["duration"] == 43200  # 12 hours
    assert done["tzOffset"] == "+03:00"  # "2017-06-08 16:48:25" minus 13:48:25Z
    assert clocks["64522004"].local_day == date(2017, 6, 8)
    assert done["position"] is None and done["location"] is None and done["shiftId"] is None

    open_ = record_json(clocks["64601743"])
    assert open_["startTime"] == "2017-06-09T14:55:14.000Z"
    assert open_["endTime"] is None and open_["duration"] is None  # out_timestamp "0": still in
    assert open_["tzOffset"] == "+03:00"  # start.iso8601 "2017-06-09T17:55:14+0300"
    assert clocks["64601743"].local_day == date(2017, 6, 9)

    closed = record_json(clocks["64598896"])
    assert (closed["startTime"], closed["endTime"]) == ("2017-06-09T14:22:12.000Z", "2017-06-09T14:51:25.000Z")
    assert closed["duration"] == 1753 and closed["tzOffset"] == "+03:00"

    served = access_client(alice.human).get("/v1/human/timeclocks/daily/2017-06-09").json()
    assert sorted(c["sourceData"]["id"] for c in served) == ["64598896", "64601743"]


@pytest.mark.parametrize(
    ("shape", "open_out"),
    [
        pytest.param(ClockShape(), "zero", id="as-documented"),
        pytest.param(ClockShape(in_as_number=True, id_as_number=True), "zero", id="numbers"),
        pytest.param(ClockShape(open_out="null"), "null", id="open-null"),
        pytest.param(ClockShape(open_out="number"), "number", id="open-zero-number"),
        pytest.param(ClockShape(wall=False), "zero", id="iso8601-only"),
        pytest.param(ClockShape(start_object=False), "zero", id="wall-clock-only"),
    ],
)
def test_every_written_form_of_a_clock_time_reads_the_same(
    settings: Any, humanity: HumanityEmulator, alice: Persona, shape: ClockShape, open_out: str
) -> None:
    covering(settings, humanity)
    start = minute(timezone.now()) - timedelta(days=2, hours=3)
    humanity.add_timeclock("5001", start, 7.25, shift="4001", shape=shape)
    humanity.add_timeclock("5002", minute(timezone.now()) - timedelta(hours=1), None, shape=shape)
    connection, run = connect_and_sync(humanity, alice)

    assert run.outcome == SyncOutcome.SUCCEEDED, run.error
    clocks = stored(connection, "timeclocks")
    done = record_json(clocks["5001"])
    assert done["startTime"] == start.strftime("%Y-%m-%dT%H:%M:00.000Z")
    assert done["endTime"] == (start + timedelta(hours=7.25)).strftime("%Y-%m-%dT%H:%M:00.000Z")
    assert done["duration"] == 7.25 * 3600 and done["shiftId"] == "4001"
    assert done["tzOffset"] == offset_text(humanity.offset_minutes(start))
    assert clocks["5001"].local_day == humanity.local(start).date()
    assert done["position"] == "Front Desk" and done["location"] == "Main St"
    still_in = record_json(clocks["5002"])
    assert still_in["endTime"] is None and still_in["duration"] is None


def test_a_clock_time_with_no_wall_clock_takes_the_offset_its_shifts_showed(
    settings: Any, humanity: HumanityEmulator, alice: Persona
) -> None:
    covering(settings, humanity)
    start = minute(timezone.now()).replace(hour=14) - timedelta(days=2)
    humanity.add_shift("4002", start)
    humanity.add_timeclock("5003", start, 8, shape=ClockShape(wall=False, start_object=False))
    connection, run = connect_and_sync(humanity, alice)

    assert run.outcome == SyncOutcome.SUCCEEDED, run.error
    body = record_json(stored(connection, "timeclocks")["5003"])
    assert body["tzOffset"] == offset_text(humanity.offset_minutes(start))
