"""The Humanity source over its emulator: Connect, history and incremental sync, updates and
deletions, token refresh (before expiry, on rejection, refused, racing), and backoff."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection as db
from django.test import Client
from django.utils import timezone

from connect.models import AuditEntry
from data_api.models import Notification, Record
from data_api.records import record_json
from sources.http import ProviderHttp
from sources.models import Connection, ConnectionStatus, SyncOutcome, SyncRun
from sources.providers.humanity import HumanitySource
from sources.registry import get_plugin
from sources.sync import RetryLater, connection_sync, fresh_credentials
from tests.conftest import Persona
from tests.emulators.humanity import CLIENT_SECRET, PASSWORD, HumanityEmulator
from tests.factories import make_application, make_human
from tests.humanity_helpers import good_form, offset_text, post_connect_form, seed

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def naps() -> list[float]:
    """The waits ProviderHttp asked for, recorded instead of slept."""
    return []


@pytest.fixture
def http(naps: list[float]) -> ProviderHttp:
    return ProviderHttp(sleep=naps.append, timeout=(2.0, 2.0))


def connect(humanity: HumanityEmulator, alice: Persona) -> Connection:
    response, _ = post_connect_form(Client(), alice.human, **good_form(humanity))
    assert response.status_code == 200, response.content
    return Connection.objects.get(pk=response.json()["connection"]["id"])


def sync(connection: Connection, http: ProviderHttp) -> SyncRun:
    run = connection_sync(connection_id=connection.pk, http=http)
    assert run is not None
    return run


def stored(connection: Connection, kind: str = "shifts") -> dict[str, Record]:
    return {r.external_id: r for r in Record.objects.filter(connection=connection, type=kind)}


def changes(run: SyncRun) -> dict[str, dict[str, int]]:
    """What a run created, updated and deleted, per type."""
    return {kind: {k: c[k] for k in ("created", "updated", "deleted")} for kind, c in run.counts.items()}


# --- Connect ---------------------------------------------------------------------------------


def test_it_connects_with_the_password_grant_and_never_stores_the_password(
    humanity: HumanityEmulator, alice: Persona
) -> None:
    connection = connect(humanity, alice)
    assert connection.external_user_id == "1001"
    assert connection.token_expires_at is not None
    credentials = connection.credentials
    assert credentials["access_token"] and credentials["refresh_token"]
    assert PASSWORD not in str(credentials)
    assert PASSWORD not in connection.credentials_sealed and CLIENT_SECRET not in connection.credentials_sealed
    assert humanity.grants["password"] == 1
    entries = list(AuditEntry.objects.filter(action="connection.connected").values_list("details", flat=True))
    assert entries and PASSWORD not in str(entries) and CLIENT_SECRET not in str(entries)


def test_it_shows_a_clear_error_for_wrong_credentials(humanity: HumanityEmulator, alice: Persona) -> None:
    response, _ = post_connect_form(Client(), alice.human, **{**good_form(humanity), "password": "wrong"})
    assert response.status_code == 400
    assert "did not accept" in response.json()["message"]
    assert "wrong" not in response.json()["message"]
    assert set(response.json()["validation"]["keys"]) == {"username", "password"}
    assert not Connection.objects.filter(source="humanity").exists()


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:1",  # right host, port not allowed
        "http://www.humanity.com",  # plain http to an https-only pattern
        "https://evil.example.com",
        "https://humanity.com.evil.example",
        "https://user:pw@acme.humanity.com",
        "https://acme.humanity.com/api/v2?x=1",
        "http://169.254.169.254",
    ],
)
def test_it_refuses_an_instance_outside_the_allowlist(humanity: HumanityEmulator, alice: Persona, url: str) -> None:
    form = {**good_form(humanity), "instance_url": url.format(port=humanity.server.port)}
    response, _ = post_connect_form(Client(), alice.human, **form)
    assert response.status_code == 400
    assert "instance URL" in response.json()["message"] or "does not connect" in response.json()["message"]
    assert response.json()["validation"]["keys"] == ["instance_url"]
    assert humanity.grants["password"] == 0
    assert not Connection.objects.filter(source="humanity").exists()


def test_it_does_not_follow_a_redirect_from_the_instance(humanity: HumanityEmulator, alice: Persona) -> None:
    humanity.fail("/oauth2/token.php", "redirect")
    response, _ = post_connect_form(Client(), alice.human, **good_form(humanity))
    assert response.status_code == 502
    assert not Connection.objects.filter(source="humanity").exists()


def test_it_hides_the_client_fields_the_operator_configured(humanity: HumanityEmulator, db: None) -> None:
    from django.core.management import call_command

    app = make_application("Configured app")
    human = make_human(app, "u-9", "u9@example.com")
    call_command(
        "set_source_config",
        "--client-id",
        app.application.client_id,
        "--source",
        "humanity",
        "--set",
        "client_id=hum-app-1",
        "--set",
        f"client_secret={CLIENT_SECRET}",
    )
    form = {k: v for k, v in good_form(humanity).items() if k not in ("client_id", "client_secret")}
    response, state = post_connect_form(Client(), human, **form)
    fields = next(s["fields"] for s in state["sources"] if s["slug"] == "humanity")
    assert [f["name"] for f in fields] == ["instance_url", "username", "password"]
    assert [f["label"] for f in fields] == ["Instance URL", "Username", "Password"]
    assert response.status_code == 200, response.content
    entry = AuditEntry.objects.get(action="application.source_config")
    assert CLIENT_SECRET not in str(entry.details)


# --- sync ------------------------------------------------------------------------------------


def test_it_syncs_history_then_the_rolling_window(
    humanity: HumanityEmulator, alice: Persona, http: ProviderHttp
) -> None:
    at = seed(humanity)
    connection = connect(humanity, alice)
    run = sync(connection, http)
    assert run.kind == "history" and run.outcome == SyncOutcome.SUCCEEDED
    shifts = stored(connection)
    assert set(shifts) == {"s-old", "s-past", "s-soon", "s-later"}
    assert changes(run) == {
        "shifts": {"created": 4, "updated": 0, "deleted": 0},
        "timeclocks": {"created": 2, "updated": 0, "deleted": 0},
    }
    body = record_json(shifts["s-soon"])
    assert body["startTime"] == at["soon"].strftime("%Y-%m-%dT%H:%M:00.000Z")
    assert body["endTime"] == (at["soon"] + timedelta(hours=8)).strftime("%Y-%m-%dT%H:%M:00.000Z")
    # The wall-clock start_timestamp against start_date.timestamp: the account's offset that day.
    assert body["tzOffset"] == offset_text(humanity.offset_minutes(at["soon"]))
    assert shifts["s-soon"].local_day == humanity.local(at["soon"]).date()
    assert body["title"] == "Closing" and body["published"] is False
    assert body["position"] == "Front Desk" and body["location"] == "Main St" and body["employeeId"] == "1001"
    assert body["sourceData"]["id"] == "s-soon"
    clocks = stored(connection, "timeclocks")
    past = record_json(clocks["t-past"])
    assert past["duration"] == 7.5 * 3600 and past["shiftId"] == "s-past"
    assert past["tzOffset"] == offset_text(humanity.offset_minutes(at["past"]))
    assert past["position"] == "Front Desk" and past["location"] == "Main St"
    assert record_json(clocks["t-now"])["endTime"] is None
    history_calls = humanity.calls["/api/v2/shifts"]

    again = sync(connection, http)
    assert again.kind == "incremental" and again.outcome == SyncOutcome.SUCCEEDED
    assert all(c == {"created": 0, "updated": 0, "deleted": 0} for c in changes(again).values())
    # The rolling window only (30 back + 60 ahead = 4 calls of 28 days), not the history again.
    assert humanity.calls["/api/v2/shifts"] - history_calls == 4
    assert stored(connection).keys() == shifts.keys()


def test_it_updates_changed_shifts_in_place_and_deletes_vanished_ones(
    humanity: HumanityEmulator, alice: Persona, http: ProviderHttp
) -> None:
    at = seed(humanity)
    connection = connect(humanity, alice)
    sync(connection, http)
    before = stored(connection)

    humanity.add_shift("s-soon", at["soon"], title="Closing (extended)", hours=9, published=True)
    humanity.remove_shift("s-past")
    humanity.remove_shift("s-old")  # outside the rolling window now: no longer looked at
    run = sync(connection, http)

    # s-past was the only shift of its month-chunk: a chunk answered empty is believed only
    # when Humanity answers it empty again, in the next run.
    assert changes(run)["shifts"] == {"created": 0, "updated": 1, "deleted": 0}
    assert "s-past" in stored(connection)
    run = sync(connection, http)
    assert changes(run)["shifts"] == {"created": 0, "updated": 0, "deleted": 1}
    after = stored(connection)
    assert set(after) == {"s-old", "s-soon", "s-later"}
    soon, old_soon = after["s-soon"], before["s-soon"]
    assert (soon.pk, soon.created_at) == (old_soon.pk, old_soon.created_at)
    assert soon.updated_at > old_soon.updated_at
    assert soon.data["title"] == "Closing (extended)" and soon.end_time == at["soon"] + timedelta(hours=9)
    assert after["s-later"].updated_at == before["s-later"].updated_at
    # The timeclock of the deleted shift is the provider's own record and stays.
    assert "t-past" in stored(connection, "timeclocks")


def test_it_refreshes_a_token_near_expiry_and_keeps_the_rotated_one(
    humanity: HumanityEmulator, alice: Persona, http: ProviderHttp
) -> None:
    seed(humanity)
    connection = connect(humanity, alice)
    old = connection.credentials
    Connection.objects.filter(pk=connection.pk).update(token_expires_at=timezone.now() + timedelta(seconds=30))
    run = sync(connection, http)
    assert run.outcome == SyncOutcome.SUCCEEDED
    assert humanity.grants["refresh_token"] == 1
    new = Connection.objects.get(pk=connection.pk)
    assert new.credentials["refresh_token"] != old["refresh_token"]
    assert new.credentials["access_token"] != old["access_token"]
    assert new.token_expires_at is not None and new.token_expires_at > timezone.now() + timedelta(minutes=50)
    assert old["refresh_token"] not in humanity.refresh  # spent: the old one is dead


@pytest.mark.parametrize("how", ["status3", "http401"])
def test_it_refreshes_when_the_token_is_rejected(
    humanity: HumanityEmulator, alice: Persona, http: ProviderHttp, how: str
) -> None:
    seed(humanity)
    connection = connect(humanity, alice)
    if how == "status3":
        humanity.expire_access_tokens()  # every data call answers HTTP 200 with status 3
    else:
        humanity.fail("/api/v2/shifts", "http401", skip=1)
    run = sync(connection, http)
    assert run.outcome == SyncOutcome.SUCCEEDED, run.error
    assert humanity.grants["refresh_token"] == 1
    assert len(stored(connection)) == 4
    assert Connection.objects.get(pk=connection.pk).status == ConnectionStatus.ACTIVE


def test_it_asks_for_reauth_when_the_refresh_is_refused_and_keeps_the_data(
    humanity: HumanityEmulator, db: None, http: ProviderHttp
) -> None:
    app = make_application("Notified app", notify_url="http://127.0.0.1:9/hook")
    persona = Persona(app, make_human(app, "u-1", "u1@example.com"))
    seed(humanity)
    connection = connect(humanity, persona)
    sync(connection, http)
    humanity.expire_access_tokens()
    humanity.revoke_refresh_tokens()

    run = sync(connection, http)

    assert run.outcome == SyncOutcome.REAUTH_REQUIRED and "refresh refused" in run.error
    connection.refresh_from_db()
    assert connection.status == ConnectionStatus.REAUTH_REQUIRED
    assert len(stored(connection)) == 4
    entry = AuditEntry.objects.get(action="connection.reauth_required")
    assert entry.actor == "system" and entry.details["source"] == "humanity"
    assert Notification.objects.filter(event_type="source.reauth_required", application=app.application).exists()
    assert connection_sync(connection_id=connection.pk, http=http) is None  # no more syncs until reconnected


def test_it_sends_a_single_refresh_when_two_syncs_race_for_it(humanity: HumanityEmulator, alice: Persona) -> None:
    connection = connect(humanity, alice)
    old = connection.credentials
    Connection.objects.filter(pk=connection.pk).update(token_expires_at=timezone.now() + timedelta(seconds=10))
    humanity.refresh_delay = 0.5  # both threads are inside fresh_credentials together
    plugin = get_plugin("humanity")
    assert isinstance(plugin, HumanitySource)
    results: list[dict[str, Any]] = []
    barrier = threading.Barrier(2)

    def refresh() -> None:
        try:
            mine = Connection.objects.get(pk=connection.pk)
            barrier.wait()
            results.append(fresh_credentials(mine, plugin, ProviderHttp()))
        finally:
            db.close()

    threads = [threading.Thread(target=refresh) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)

    assert humanity.grants["refresh_token"] == 1 and humanity.calls["/oauth2/token.php"] == 2  # password + 1
    assert humanity.refused_refresh_tokens == []  # the spent refresh token was never sent again
    current = Connection.objects.get(pk=connection.pk).credentials
    assert [r["access_token"] for r in results] == [current["access_token"]] * 2
    assert current["refresh_token"] != old["refresh_token"]


def test_it_sends_a_single_refresh_when_two_holders_of_a_rejected_token_race(
    humanity: HumanityEmulator, alice: Persona
) -> None:
    connection = connect(humanity, alice)
    rejected = connection.credentials["access_token"]
    humanity.expire_access_tokens()
    humanity.refresh_delay = 0.5
    plugin = get_plugin("humanity")
    assert isinstance(plugin, HumanitySource)
    results: list[str] = []

    def refresh() -> None:
        try:
            mine = Connection.objects.get(pk=connection.pk)
            results.append(fresh_credentials(mine, plugin, ProviderHttp(), rejected_token=rejected)["access_token"])
        finally:
            db.close()

    threads = [threading.Thread(target=refresh) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    assert humanity.grants["refresh_token"] == 1 and humanity.refused_refresh_tokens == []
    assert results == [Connection.objects.get(pk=connection.pk).credentials["access_token"]] * 2


# --- failures --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "options"),
    [
        ("http429", {"retry_after": 3}),
        ("status91", {"retry_after": 2}),
        ("http500", {}),
        ("malformed", {}),
        ("slow", {"delay": 3.0}),  # longer than the client's read timeout
    ],
)
def test_it_backs_off_and_retries_in_place(
    humanity: HumanityEmulator, alice: Persona, naps: list[float], kind: str, options: dict[str, Any]
) -> None:
    seed(humanity)
    connection = connect(humanity, alice)
    humanity.fail("/api/v2/shifts", kind, skip=1, times=2, **options)
    http = ProviderHttp(sleep=naps.append, timeout=(2.0, 1.0))
    run = sync(connection, http)
    assert run.outcome == SyncOutcome.SUCCEEDED, run.error
    assert http.retries == 2 and len(naps) == 2
    if "retry_after" in options:
        assert min(naps) >= options["retry_after"]  # Retry-After is a floor
    assert len(stored(connection)) == 4 and run.counts["shifts"]["created"] == 4
    assert Connection.objects.get(pk=connection.pk).status == ConnectionStatus.ACTIVE


def test_it_reschedules_on_a_rate_limit_and_resumes_from_the_cursor(
    humanity: HumanityEmulator, alice: Persona, http: ProviderHttp
) -> None:
    seed(humanity)
    connection = connect(humanity, alice)
    fault = humanity.fail("/api/v2/shifts", "http429", skip=2, times=None, retry_after=120)
    with pytest.raises(RetryLater) as raised:
        connection_sync(connection_id=connection.pk, http=http)
    assert raised.value.retry_after == 120
    run = SyncRun.objects.get(connection=connection)
    assert run.outcome == SyncOutcome.RETRYING and run.error and run.pages == 2
    connection.refresh_from_db()
    assert connection.status == ConnectionStatus.ACTIVE and connection.sync_claim == ""
    assert connection.cursor["shifts"]["next"]  # two month-chunks stored, with their cursor
    kept = set(stored(connection))
    assert kept == {"s-old"}  # the first chunks' shift, written with the cursor

    humanity.faults.remove(fault)
    calls = humanity.calls["/api/v2/shifts"]
    second = sync(connection, http)
    assert second.outcome == SyncOutcome.SUCCEEDED and second.kind == "history"
    # 60 history days + 61 ahead = 5 chunks; 2 were done: only 3 are fetched again.
    assert humanity.calls["/api/v2/shifts"] - calls == 3
    assert len(stored(connection)) == 4
    assert Record.objects.filter(connection=connection).count() == 6


def test_a_collection_unreachable_after_retries_fails_alone_and_resumes_next_run(
    humanity: HumanityEmulator, alice: Persona, http: ProviderHttp
) -> None:
    seed(humanity)
    connection = connect(humanity, alice)
    fault = humanity.fail("/api/v2/shifts", "http500", skip=2, times=None)
    run = sync(connection, http)
    # The shifts collection failed after its in-place retries; the clock times were still read.
    assert run.outcome == SyncOutcome.PARTIAL and set(run.failures) == {"shifts"}
    assert "unreachable" in run.failures["shifts"]
    connection.refresh_from_db()
    assert connection.status == ConnectionStatus.ACTIVE and connection.sync_claim == ""
    assert connection.cursor["shifts"]["next"]  # two month-chunks stored, with their cursor
    assert set(stored(connection)) == {"s-old"}
    assert set(stored(connection, "timeclocks")) == {"t-past", "t-now"}

    humanity.faults.remove(fault)
    calls = humanity.calls["/api/v2/shifts"]
    second = sync(connection, http)
    assert second.outcome == SyncOutcome.SUCCEEDED
    # 60 history days + 61 ahead = 5 chunks; 2 were done: only 3 are fetched again.
    assert humanity.calls["/api/v2/shifts"] - calls == 3
    assert len(stored(connection)) == 4
    assert Record.objects.filter(connection=connection).count() == 6


def test_it_fails_the_run_when_a_fresh_token_is_rejected_too(
    humanity: HumanityEmulator, alice: Persona, http: ProviderHttp
) -> None:
    connection = connect(humanity, alice)
    humanity.fail("/api/v2/positions", "status3", times=None)  # no token works any more
    run = sync(connection, http)
    assert run.outcome == SyncOutcome.FAILED and "status 3" in run.error
    assert humanity.grants["refresh_token"] == 1  # one refresh, then it gives up
    assert Connection.objects.get(pk=connection.pk).status == ConnectionStatus.ACTIVE
