"""The Withings source against its emulator, over real HTTP."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlparse
from zoneinfo import ZoneInfo

import pytest
import requests
from django.utils import timezone

from connect.models import Human
from data_api.models import Record
from sources.base import AuthorizationFailed
from sources.http import ProviderHttp
from sources.models import Connection, ConnectionStatus, RateBudget, SyncOutcome
from sources.providers.withings import WithingsSource
from sources.registry import get_plugin
from sources.services import connection_store
from sources.sync import RetryLater, connection_sync
from tests.data_api_helpers import stored_counts, stored_records
from tests.emulators.withings import USER_ID, WithingsEmulator
from tests.factories import Persona

REDIRECT_URI = "https://hapi.example.org/connect/oauth/callback"


@pytest.fixture
def withings(settings: Any) -> Iterator[WithingsEmulator]:
    emulator = WithingsEmulator().start()
    settings.SOURCE_SETTINGS = emulator.source_settings(30)
    settings.PROVIDER_RETRY_ATTEMPTS = 3
    settings.PROVIDER_RETRY_MAX_WAIT = 5
    yield emulator
    emulator.stop()


def plugin() -> WithingsSource:
    found = get_plugin("withings")
    assert isinstance(found, WithingsSource)
    return found


def consent(state: str = "state-1") -> str:
    url = plugin().authorization_url(redirect_uri=REDIRECT_URI, state=state, code_challenge="ignored")
    query = parse_qs(urlparse(url).query)
    assert query["scope"] == ["user.info,user.metrics,user.activity,user.sleepevents"]
    assert "code_challenge" not in query  # Withings documents no PKCE
    answer = requests.get(url, allow_redirects=False, timeout=5)
    back = parse_qs(urlparse(answer.headers["Location"]).query)
    assert back["state"] == [state]
    return back["code"][0]


def connect(human: Human) -> Connection:
    credentials = plugin().exchange_code(
        code=consent(), redirect_uri=REDIRECT_URI, code_verifier=None, http=ProviderHttp()
    )
    return connection_store(human=human, slug="withings", credentials=credentials, request=None)


def seed(withings: WithingsEmulator, now: datetime) -> dict[str, Any]:
    day = now.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=3)
    return {
        "height": withings.add_measures(day - timedelta(days=20), {4: (180, -2)}, attrib=4),
        "weight": withings.add_measures(day + timedelta(hours=6), {1: (75232, -3), 6: (182, -1)}),
        "bp": withings.add_measures(day + timedelta(hours=7), {9: (80, 0), 10: (122, 0), 11: (64, 0)}),
        "spo2": withings.add_measures(day + timedelta(hours=8), {54: (97, 0)}),
        "thermo": withings.add_measures(day + timedelta(hours=9), {71: (37150, -3)}),
        "vo2": withings.add_measures(day + timedelta(hours=10), {123: (423, -1)}),
        "run": withings.add_workout(day + timedelta(hours=17), 32),
        "sleep": withings.add_sleep(
            day - timedelta(hours=1), day + timedelta(hours=6, minutes=30), asleep_s=24600, awake_s=2400
        ),
        "totals": withings.add_activity((day + timedelta(hours=12)).date()),
    }


def stored(connection: Connection) -> Counter[str]:
    return stored_counts(connection=connection)


def sync(connection: Connection, http: ProviderHttp | None = None) -> Any:
    run = connection_sync(connection_id=connection.pk, http=http)
    assert run is not None
    return run


EVERY_TYPE = Counter(
    weight=1,
    bmi=1,
    height=1,
    body_fat=1,
    blood_pressure=1,
    heart_rate=1,
    blood_oxygen=1,
    body_temperature=2,  # the thermometer's, and the night's core temperature
    vo2_max=1,
    activities=1,
    sleeps=1,
    respiratory_rate=1,
    heart_rate_variability=2,  # the night's start and end averages
    activity_summaries=1,
)
# What the sleep summaries give.
NIGHT = Counter(sleeps=1, respiratory_rate=1, heart_rate_variability=2, body_temperature=1)


@pytest.mark.django_db(transaction=True)
def test_it_exchanges_a_code_for_tokens_and_the_user_id(alice: Persona, withings: WithingsEmulator) -> None:
    connection = connect(alice.human)

    assert connection.external_user_id == str(USER_ID)
    credentials = Connection.objects.get(pk=connection.pk).credentials
    assert credentials["access_token"] and credentials["refresh_token"]
    assert connection.token_expires_at is not None
    assert timedelta(hours=2, minutes=55) < connection.token_expires_at - timezone.now() <= timedelta(hours=3)
    assert withings.calls["requesttoken authorization_code"] == 1


@pytest.mark.django_db(transaction=True)
def test_it_keeps_a_userid_sent_as_an_integer(alice: Persona, withings: WithingsEmulator) -> None:
    withings.userid_as_int = True  # the reference's type; observed replies send a string

    connection = connect(alice.human)

    assert connection.external_user_id == str(USER_ID)
    assert Connection.objects.get(pk=connection.pk).credentials["user_id"] == str(USER_ID)


@pytest.mark.django_db(transaction=True)
def test_it_refuses_a_code_used_twice(alice: Persona, withings: WithingsEmulator) -> None:
    code = consent()
    plugin().exchange_code(code=code, redirect_uri=REDIRECT_URI, code_verifier=None, http=ProviderHttp())

    with pytest.raises(AuthorizationFailed, match="invalid code"):
        plugin().exchange_code(code=code, redirect_uri=REDIRECT_URI, code_verifier=None, http=ProviderHttp())


@pytest.mark.django_db(transaction=True)
def test_it_syncs_history_in_metric_units_then_incrementally(alice: Persona, withings: WithingsEmulator) -> None:
    now = datetime.now(UTC)
    ids = seed(withings, now)
    connection = connect(alice.human)

    run = sync(connection)

    assert run.outcome == SyncOutcome.SUCCEEDED and run.kind == "history"
    assert stored(connection) == EVERY_TYPE
    records: dict[str, Any] = {r.type: r for r in Record.objects.filter(connection=connection)}
    records["heart_rate"] = stored_records("heart_rate", connection=connection)[0]
    paris = ZoneInfo("Europe/Paris")
    weight = records["weight"]
    assert weight.data == {"value": 75.232, "unit": "kg"}
    assert weight.tz_offset == weight.start_time.astimezone(paris).utcoffset().total_seconds() // 60
    assert records["height"].data == {"value": 180.0, "unit": "cm"}
    assert records["bmi"].data == {"value": 23.2, "unit": "kg/m2"}
    assert records["body_fat"].data == {"value": 18.2, "unit": "%"}
    assert records["blood_pressure"].data == {"systolic": 122, "diastolic": 80, "unit": "mmHg"}
    assert records["heart_rate"].data == {"value": 64, "unit": "bpm"}
    assert records["blood_oxygen"].data == {"value": 97.0, "unit": "%"}
    thermo = Record.objects.get(connection=connection, type="body_temperature", external_id=str(ids["thermo"]))
    assert thermo.data == {"value": 37.15, "unit": "°C", "deviation": None}
    assert records["vo2_max"].data == {"value": 42.3, "unit": "mL/kg/min"}
    assert records["activities"].data == {
        "type": "running",
        "duration": 32 * 60 - 120,
        "distance": 5000.0,
        "steps": 6400,
        "calories": 345.5,
    }
    sleep = records["sleeps"]
    assert sleep.end_time is not None
    wake_day = sleep.end_time.astimezone(paris).date()
    assert sleep.local_day == wake_day
    assert sleep.data == {
        "day": wake_day.isoformat(),
        "mainSleep": True,
        "timeAsleep": 410,
        "timeAwake": 40,
        "timeInBed": 450,
        "efficiency": 91,
        "numberOfWakeups": 3,
        "deepSleep": 102,  # 24600 // 4 s
        "lightSleep": 205,  # 24600 // 2 s
        "remSleep": 102,  # the rest, 6150 s
    }
    night = Record.objects.get(connection=connection, type="body_temperature", external_id=f"sleep-{ids['sleep']}")
    assert night.data == {
        "value": 36.62,
        "unit": "°C",
        "deviation": None,
        "min": 36.21,
        "max": 36.94,
        "status": "usual",
    }
    assert night.start_time == sleep.end_time and night.local_day == wake_day
    assert records["respiratory_rate"].data == {"value": 14.0, "unit": "breaths/min", "min": 11.0, "max": 19.0}
    hrv = {r.data["period"]: r for r in Record.objects.filter(connection=connection, type="heart_rate_variability")}
    assert (hrv["sleepStart"].value, hrv["sleepStart"].start_time) == (38.5, sleep.start_time)
    assert (hrv["sleepEnd"].value, hrv["sleepEnd"].start_time) == (51.2, sleep.end_time)
    totals = records["activity_summaries"]
    assert totals.external_id == ids["totals"] and totals.local_day.isoformat() == ids["totals"]
    assert totals.data == {
        "date": ids["totals"],
        "steps": 8543,
        "distance": 6234.5,
        "calories": 2150.0,
        "activeCalories": 312.5,
        "duration": 2340 + 1200 + 600,
        "sedentary": None,
        "light": 2340,
        "moderate": 1200,
        "vigorous": 600,
    }

    withings.add_measures(now - timedelta(hours=1), {1: (74900, -3)})
    backdated = withings.add_measures(now - timedelta(days=20), {1: (76100, -3)}, attrib=2)  # typed in late
    withings.update_series("workouts", ids["run"], calories=350.0)
    withings.update_activity(date.fromisoformat(ids["totals"]), steps=9001)
    withings.calls.clear()
    withings.requests.clear()
    again = sync(connection)

    assert again.kind == "incremental" and again.outcome == SyncOutcome.SUCCEEDED
    assert again.counts["weight"]["created"] == 2 and again.counts["weight"]["deleted"] == 0
    assert Record.objects.filter(connection=connection, type="weight", external_id=str(backdated)).exists()
    assert again.counts["activities"]["updated"] == 1
    assert Record.objects.get(connection=connection, type="activities").data["calories"] == 350.0
    assert again.counts["activity_summaries"]["updated"] == 1
    assert Record.objects.get(connection=connection, type="activity_summaries").data["steps"] == 9001
    # lastupdate, never together with a day range: only what changed
    for action in ("getworkouts", "getsummary", "getactivity"):
        (call,) = [r for r in withings.requests if r["action"] == action]
        assert "lastupdate" in call and "startdateymd" not in call and "enddateymd" not in call


@pytest.mark.django_db(transaction=True)
def test_it_keeps_one_copy_after_repeated_and_partly_failed_syncs(alice: Persona, withings: WithingsEmulator) -> None:
    now = datetime.now(UTC)
    seed(withings, now)
    for index in range(7):  # several pages of 2
        withings.add_measures(now - timedelta(days=10, hours=index), {1: (80000 + index, -3)})
        withings.add_workout(now - timedelta(days=9, hours=index), 20, category=1)
        withings.add_activity((now - timedelta(days=12 + index)).date())
    connection = connect(alice.human)
    withings.fail("/v2/sleep", http=500, times=10)  # longer than the in-place retries last

    run = connection_sync(connection_id=connection.pk, http=ProviderHttp(sleep=lambda _: None))

    # The sleep collection failed alone; the others were stored.
    assert run is not None and run.outcome == SyncOutcome.PARTIAL
    assert set(run.failures) == set(NIGHT) and "500" in run.failures["sleeps"]
    partial = stored(connection)
    assert partial["weight"] == 8 and partial["activities"] == 8 and partial["activity_summaries"] == 8
    assert partial["sleeps"] == 0 and partial["body_temperature"] == 1  # the thermometer's
    withings.faults.clear()
    assert sync(connection).outcome == SyncOutcome.SUCCEEDED
    complete = stored(connection)
    assert complete == partial + NIGHT

    repeat = sync(connection)
    assert stored(connection) == complete
    assert all(c["created"] == 0 and c["updated"] == 0 and c["deleted"] == 0 for c in repeat.counts.values())


@pytest.mark.django_db(transaction=True)
def test_it_updates_in_place_and_drops_deleted_measures(alice: Persona, withings: WithingsEmulator) -> None:
    ids = seed(withings, datetime.now(UTC))
    connection = connect(alice.human)
    sync(connection)
    before = Record.objects.get(connection=connection, type="weight")

    withings.update_measures(ids["weight"], {1: (74100, -3), 6: (179, -1)})
    withings.delete_group(ids["bp"])
    run = sync(connection)

    after = Record.objects.get(connection=connection, type="weight")
    assert (after.pk, after.created_at) == (before.pk, before.created_at)
    assert after.value == 74.1 and after.updated_at > before.updated_at
    # The only blood pressure (and pulse) of the re-read week is gone: an empty answer for a
    # type is held once, and believed when Withings gives it again.
    assert run.counts["blood_pressure"]["held"] == 1
    again = sync(connection)
    left = stored_counts(connection=connection)
    assert not left["blood_pressure"] and not left["heart_rate"]
    assert again.counts["blood_pressure"]["deleted"] == 1 and again.counts["heart_rate"]["deleted"] == 1
    assert stored(connection)["weight"] == 1


@pytest.mark.django_db(transaction=True)
def test_it_refreshes_before_expiry_and_stores_the_rotated_refresh_token(
    alice: Persona, withings: WithingsEmulator
) -> None:
    seed(withings, datetime.now(UTC))
    connection = connect(alice.human)
    first = Connection.objects.get(pk=connection.pk).credentials
    Connection.objects.filter(pk=connection.pk).update(token_expires_at=timezone.now() + timedelta(seconds=30))

    assert sync(connection).outcome == SyncOutcome.SUCCEEDED

    renewed = Connection.objects.get(pk=connection.pk).credentials
    assert withings.calls["requesttoken refresh_token"] == 1
    assert renewed["refresh_token"] != first["refresh_token"]
    assert renewed["user_id"] == str(USER_ID)
    # The new access token was used, so the old refresh token is dead and only the new one works.
    assert not withings.refresh_token_valid(first["refresh_token"])
    assert withings.refresh_token_valid(renewed["refresh_token"])


@pytest.mark.django_db(transaction=True)
def test_it_refreshes_when_the_access_token_is_rejected(alice: Persona, withings: WithingsEmulator) -> None:
    seed(withings, datetime.now(UTC))
    connection = connect(alice.human)
    withings.expire_access_tokens()  # answered as status 401 inside HTTP 200

    run = sync(connection)

    assert run.outcome == SyncOutcome.SUCCEEDED and stored(connection) == EVERY_TYPE
    assert withings.calls["requesttoken refresh_token"] == 1


@pytest.mark.django_db(transaction=True)
def test_status_100_is_an_authentication_failure_not_an_empty_answer(
    alice: Persona, withings: WithingsEmulator
) -> None:
    seed(withings, datetime.now(UTC))
    connection = connect(alice.human)
    withings.fail("/measure", status=100)  # "Authentication failed" in the reference's table

    run = sync(connection)

    assert run.outcome == SyncOutcome.SUCCEEDED and stored(connection) == EVERY_TYPE
    assert withings.calls["requesttoken refresh_token"] == 1


@pytest.mark.django_db(transaction=True)
def test_it_backs_off_on_rate_limits_and_transient_failures(
    alice: Persona, withings: WithingsEmulator, settings: Any
) -> None:
    seed(withings, datetime.now(UTC))
    connection = connect(alice.human)
    withings.fail("/measure", status=601)  # too many requests, in the envelope
    settings.PROVIDER_RETRY_MAX_WAIT = 10  # it empties the application's budget for a tenth of its minute
    withings.fail("/v2/measure", http=502)
    withings.fail("/v2/sleep", body='{"status": 0, "body": {"series": [')  # malformed JSON
    withings.fail("/v2/measure", action="getactivity", status=522)  # "Timeout": retry
    waits: list[float] = []
    http = ProviderHttp(sleep=waits.append)

    run = sync(connection, http)

    assert run.outcome == SyncOutcome.SUCCEEDED and stored(connection) == EVERY_TYPE
    assert http.retries == 4 and len(waits) == 4


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("status", "words"),
    [
        (293, "status 293"),  # invalid params
        (2554, "status 2554"),  # not implemented
        (2555, "status 2555"),  # unauthorized
    ],
)
def test_a_refused_collection_fails_alone(alice: Persona, withings: WithingsEmulator, status: int, words: str) -> None:
    seed(withings, datetime.now(UTC))
    connection = connect(alice.human)
    withings.fail("/v2/measure", action="getworkouts", status=status, times=10)

    run = sync(connection)

    assert run.outcome == SyncOutcome.PARTIAL
    assert set(run.failures) == {"activities"} and words in run.failures["activities"]
    assert stored(connection) == EVERY_TYPE - Counter(activities=1)
    assert withings.calls["fault " + str(status)] == 1  # refused for good: not retried in place
    assert Connection.objects.get(pk=connection.pk).status == ConnectionStatus.ACTIVE
    withings.faults.clear()
    assert sync(connection).outcome == SyncOutcome.SUCCEEDED and stored(connection) == EVERY_TYPE


@pytest.mark.django_db(transaction=True)
def test_a_scope_the_user_did_not_grant_fails_its_collection_alone(alice: Persona, withings: WithingsEmulator) -> None:
    seed(withings, datetime.now(UTC))
    withings.granted_scopes = "user.info,user.metrics,user.activity"  # no user.sleepevents
    connection = connect(alice.human)

    run = sync(connection)

    assert run.outcome == SyncOutcome.PARTIAL
    assert set(run.failures) == set(NIGHT) and "status 403" in run.failures["sleeps"]
    assert "Insufficient_scope" in run.failures["sleeps"]
    assert stored(connection) == EVERY_TYPE - NIGHT
    assert Connection.objects.get(pk=connection.pk).status == ConnectionStatus.ACTIVE


@pytest.mark.django_db(transaction=True)
def test_it_needs_reauth_when_the_refresh_is_refused_and_keeps_the_data(
    alice: Persona, withings: WithingsEmulator
) -> None:
    seed(withings, datetime.now(UTC))
    connection = connect(alice.human)
    sync(connection)
    withings.revoke_refresh_tokens()

    run = sync(connection)

    assert run.outcome == SyncOutcome.REAUTH_REQUIRED and "invalid refresh_token" in run.error
    assert Connection.objects.get(pk=connection.pk).status == ConnectionStatus.REAUTH_REQUIRED
    assert stored(connection) == EVERY_TYPE


@pytest.mark.django_db(transaction=True)
def test_it_counts_malformed_rows_as_unreadable_and_keeps_the_rest(alice: Persona, withings: WithingsEmulator) -> None:
    now = datetime.now(UTC)
    seed(withings, now)
    bad = withings.add_measures(now - timedelta(days=2), {1: (70000, -3)})
    withings.groups[bad]["measures"][0]["value"] = "heavy"
    night = withings.add_sleep(now - timedelta(days=2, hours=8), now - timedelta(days=2), asleep_s=100, awake_s=10)
    withings.sleeps[night]["timezone"] = "Mars/Olympus_Mons"
    withings.add_activity((now - timedelta(days=6)).date(), date="06/11/2026")
    connection = connect(alice.human)

    run = sync(connection)

    assert run.outcome == SyncOutcome.PARTIAL and stored(connection) == EVERY_TYPE
    assert {k: c["unreadable"] for k, c in run.counts.items() if c["unreadable"]} == {
        "weight": 1,
        "sleeps": 1,
        # The broken night's own readings can't be placed either.
        "respiratory_rate": 1,
        "heart_rate_variability": 2,
        "body_temperature": 1,
        "activity_summaries": 1,
    }
    assert "measures[].value is not a number" in run.unreadable["weight"][0]
    assert "timezone" in run.unreadable["sleeps"][0]
    assert "date is not a YYYY-MM-DD day" in run.unreadable["activity_summaries"][0]


@pytest.mark.django_db(transaction=True)
def test_a_token_endpoint_outage_never_asks_for_reauthorization(alice: Persona, withings: WithingsEmulator) -> None:
    seed(withings, datetime.now(UTC))
    connection = connect(alice.human)
    withings.expire_access_tokens()
    withings.fail("/v2/oauth2", http=503, times=40)

    try:
        run = connection_sync(connection_id=connection.pk, http=ProviderHttp(sleep=lambda _: None))
    except RetryLater:
        run = None
    # However the engine files it (a retry, or collections failed for now), the connection stays.
    assert run is None or run.outcome in (SyncOutcome.FAILED, SyncOutcome.PARTIAL)
    assert Connection.objects.get(pk=connection.pk).status == ConnectionStatus.ACTIVE
    withings.faults.clear()
    assert sync(connection).outcome == SyncOutcome.SUCCEEDED and stored(connection) == EVERY_TYPE


@pytest.mark.django_db(transaction=True)
def test_it_waits_out_status_601_and_keeps_what_it_fetched(alice: Persona, withings: WithingsEmulator) -> None:
    seed(withings, datetime.now(UTC))
    connection = connect(alice.human)
    withings.fail("/v2/sleep", status=601, times=10)

    with pytest.raises(RetryLater):
        connection_sync(connection_id=connection.pk, http=ProviderHttp(sleep=lambda _: None))

    # A rate limit stops the run (it is the app's budget): what came before sleep is stored.
    assert stored(connection) == EVERY_TYPE - NIGHT - Counter(activity_summaries=1)
    assert Connection.objects.get(pk=connection.pk).status == ConnectionStatus.ACTIVE
    withings.faults.clear()
    RateBudget.objects.all().delete()  # the application's budget, emptied by the 601s, has freed too
    assert sync(connection).outcome == SyncOutcome.SUCCEEDED and stored(connection) == EVERY_TYPE


def test_the_operators_sync_interval_comes_before_the_sources_own(
    alice: Persona, withings: WithingsEmulator, settings: Any
) -> None:
    settings.SYNC_INTERVAL = 600
    withings.add_measures(datetime.now(UTC) - timedelta(days=1), {1: (75232, -3)})
    connection = connect(alice.human)

    def interval() -> timedelta:
        assert sync(connection).outcome == SyncOutcome.SUCCEEDED
        connection.refresh_from_db()
        assert connection.next_sync_at is not None and connection.last_synced_at is not None
        return connection.next_sync_at - connection.last_synced_at

    # Withings asks to be polled hourly, whatever SYNC_INTERVAL says...
    assert interval() == timedelta(seconds=3600) == timedelta(seconds=plugin().sync_interval or 0)
    # ...unless its operator says otherwise for this source.
    settings.SOURCE_SETTINGS = {**settings.SOURCE_SETTINGS, "SOURCE_WITHINGS_SYNC_INTERVAL": "120"}
    assert interval() == timedelta(seconds=120)
