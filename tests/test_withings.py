"""The Withings source against its emulator, over real HTTP."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
import requests
from django.utils import timezone

from connect.models import Human
from data_api.models import Record
from sources.base import AuthorizationFailed
from sources.http import ProviderHttp
from sources.models import Connection, ConnectionStatus, SyncOutcome
from sources.providers.withings import WithingsSource
from sources.registry import get_plugin
from sources.services import connection_store
from sources.sync import RetryLater, connection_sync
from tests.emulators.withings import CLIENT_ID, CLIENT_SECRET, USER_ID, WithingsEmulator
from tests.factories import Persona

REDIRECT_URI = "https://hapi.example.org/connect/oauth/callback"


@pytest.fixture
def withings(settings: Any) -> Iterator[WithingsEmulator]:
    emulator = WithingsEmulator().start()
    settings.SOURCE_SETTINGS = {
        "SOURCE_WITHINGS_CLIENT_ID": CLIENT_ID,
        "SOURCE_WITHINGS_CLIENT_SECRET": CLIENT_SECRET,
        "SOURCE_WITHINGS_AUTHORIZE_URL": f"{emulator.url}/oauth2_user/authorize2",
        "SOURCE_WITHINGS_TOKEN_URL": f"{emulator.url}/v2/oauth2",
        "SOURCE_WITHINGS_API_URL": emulator.url,
        "SOURCE_WITHINGS_HISTORY_DAYS": "30",
    }
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


def seed(withings: WithingsEmulator, now: datetime) -> dict[str, int]:
    day = now.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=3)
    return {
        "height": withings.add_measures(day - timedelta(days=20), {4: (180, -2)}, attrib=4),
        "weight": withings.add_measures(day + timedelta(hours=6), {1: (75232, -3), 6: (182, -1)}),
        "bp": withings.add_measures(day + timedelta(hours=7), {9: (80, 0), 10: (122, 0), 11: (64, 0)}),
        "spo2": withings.add_measures(day + timedelta(hours=8), {54: (97, 0)}),
        "run": withings.add_workout(day + timedelta(hours=17), 32),
        "sleep": withings.add_sleep(
            day - timedelta(hours=1), day + timedelta(hours=6, minutes=30), asleep_s=24600, awake_s=2400
        ),
    }


def stored(connection: Connection) -> Counter[str]:
    return Counter(Record.objects.filter(connection=connection).values_list("type", flat=True))


def sync(connection: Connection, http: ProviderHttp | None = None) -> Any:
    run = connection_sync(connection_id=connection.pk, http=http)
    assert run is not None
    return run


EVERY_TYPE = Counter(
    weight=1, bmi=1, height=1, body_fat=1, blood_pressure=1, heart_rate=1, blood_oxygen=1, activities=1, sleeps=1
)


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
    records = {r.type: r for r in Record.objects.filter(connection=connection)}
    assert records["weight"].data == {"value": 75.232, "unit": "kg"}
    assert records["weight"].tz_offset == 60  # Europe/Paris in winter
    assert records["height"].data == {"value": 180.0, "unit": "cm"}
    assert records["bmi"].data == {"value": 23.2, "unit": "kg/m2"}
    assert records["body_fat"].data == {"value": 18.2, "unit": "%"}
    assert records["blood_pressure"].data == {"systolic": 122, "diastolic": 80, "unit": "mmHg"}
    assert records["heart_rate"].data == {"value": 64, "unit": "bpm"}
    assert records["blood_oxygen"].data == {"value": 97.0, "unit": "%"}
    assert records["activities"].data == {
        "type": "running",
        "duration": 32 * 60 - 120,
        "distance": 5000.0,
        "steps": 6400,
        "calories": 345.5,
    }
    sleep = records["sleeps"]
    assert sleep.end_time is not None
    assert sleep.data == {
        "day": (sleep.end_time + timedelta(hours=1)).date().isoformat(),
        "mainSleep": True,
        "timeAsleep": 410,
        "timeAwake": 40,
        "timeInBed": 450,
        "efficiency": 91,
        "numberOfWakeups": 3,
    }

    withings.add_measures(now - timedelta(hours=1), {1: (74900, -3)})
    withings.update_series("workouts", ids["run"], calories=350.0)
    withings.calls.clear()
    again = sync(connection)

    assert again.kind == "incremental" and again.outcome == SyncOutcome.SUCCEEDED
    assert again.counts["weight"] == {"created": 1, "updated": 0, "deleted": 0}
    assert again.counts["activities"] == {"created": 0, "updated": 1, "deleted": 0}
    assert Record.objects.get(connection=connection, type="activities").data["calories"] == 350.0
    assert withings.calls["getsummary"] == 1  # lastupdate: only what changed


@pytest.mark.django_db(transaction=True)
def test_it_keeps_one_copy_after_repeated_and_interrupted_syncs(alice: Persona, withings: WithingsEmulator) -> None:
    now = datetime.now(UTC)
    seed(withings, now)
    for index in range(7):  # several pages of 2
        withings.add_measures(now - timedelta(days=10, hours=index), {1: (80000 + index, -3)})
        withings.add_workout(now - timedelta(days=9, hours=index), 20, category=1)
    connection = connect(alice.human)
    withings.fail("/v2/sleep", http=500, times=10)  # longer than the in-place retries last

    with pytest.raises(RetryLater):
        connection_sync(connection_id=connection.pk, http=ProviderHttp(sleep=lambda _: None))

    partial = stored(connection)
    assert partial["weight"] == 8 and partial["activities"] == 8 and partial["sleeps"] == 0
    withings.faults.clear()
    sync(connection)
    complete = stored(connection)
    assert complete == partial + Counter(sleeps=1)

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
    assert not Record.objects.filter(connection=connection, type__in=["blood_pressure", "heart_rate"]).exists()
    assert run.counts["blood_pressure"]["deleted"] == 1 and run.counts["heart_rate"]["deleted"] == 1


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
def test_it_backs_off_on_rate_limits_and_transient_failures(alice: Persona, withings: WithingsEmulator) -> None:
    seed(withings, datetime.now(UTC))
    connection = connect(alice.human)
    withings.fail("/measure", status=601)  # too many requests, in the envelope
    withings.fail("/v2/measure", http=502)
    withings.fail("/v2/sleep", body='{"status": 0, "body": {"series": [')  # malformed JSON
    waits: list[float] = []
    http = ProviderHttp(sleep=waits.append)

    run = sync(connection, http)

    assert run.outcome == SyncOutcome.SUCCEEDED and stored(connection) == EVERY_TYPE
    assert http.retries == 3 and len(waits) == 3


@pytest.mark.django_db(transaction=True)
def test_it_fails_permanently_on_an_unexpected_status(alice: Persona, withings: WithingsEmulator) -> None:
    seed(withings, datetime.now(UTC))
    connection = connect(alice.human)
    withings.fail("/v2/measure", status=293)  # invalid params

    run = sync(connection)

    assert run.outcome == SyncOutcome.FAILED and "status 293" in run.error
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
def test_it_skips_malformed_rows(alice: Persona, withings: WithingsEmulator) -> None:
    now = datetime.now(UTC)
    seed(withings, now)
    bad = withings.add_measures(now - timedelta(days=2), {1: (70000, -3)})
    withings.groups[bad]["measures"][0]["value"] = "heavy"
    night = withings.add_sleep(now - timedelta(days=2, hours=8), now - timedelta(days=2), asleep_s=100, awake_s=10)
    withings.sleeps[night]["timezone"] = "Mars/Olympus_Mons"
    connection = connect(alice.human)

    run = sync(connection)

    assert run.outcome == SyncOutcome.SUCCEEDED and stored(connection) == EVERY_TYPE


@pytest.mark.django_db(transaction=True)
def test_it_retries_later_when_the_token_endpoint_fails(alice: Persona, withings: WithingsEmulator) -> None:
    seed(withings, datetime.now(UTC))
    connection = connect(alice.human)
    withings.expire_access_tokens()
    withings.fail("/v2/oauth2", http=503, times=10)

    with pytest.raises(RetryLater):
        connection_sync(connection_id=connection.pk, http=ProviderHttp(sleep=lambda _: None))

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

    assert stored(connection) == EVERY_TYPE - Counter(sleeps=1)
    assert Connection.objects.get(pk=connection.pk).status == ConnectionStatus.ACTIVE
