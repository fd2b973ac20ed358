"""The Fitbit source (Google Health API) against its emulator, over real HTTP."""

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
from sources.models import Connection, ConnectionStatus, RateBudget, SyncOutcome
from sources.oauth import pkce_pair
from sources.providers.fitbit import FitbitSource
from sources.registry import get_plugin
from sources.services import connection_store
from sources.sync import RetryLater, connection_sync
from tests.data_api_helpers import stored_counts, stored_records
from tests.emulators.google_health import HEALTH_USER_ID, GoogleHealthEmulator
from tests.factories import Persona

REDIRECT_URI = "http://127.0.0.1:8000/connect/oauth/callback"


@pytest.fixture
def google(settings: Any) -> Iterator[GoogleHealthEmulator]:
    emulator = GoogleHealthEmulator().start()
    settings.SOURCE_SETTINGS = emulator.source_settings(30)
    settings.PROVIDER_RETRY_ATTEMPTS = 3
    settings.PROVIDER_RETRY_MAX_WAIT = 5
    yield emulator
    emulator.stop()


def plugin() -> FitbitSource:
    found = get_plugin("fitbit")
    assert isinstance(found, FitbitSource)
    return found


def consent(state: str = "state-1") -> tuple[str, str]:
    """The user's trip through Google's consent page: returns (code, code_verifier)."""
    verifier, challenge = pkce_pair()
    url = plugin().authorization_url(redirect_uri=REDIRECT_URI, state=state, code_challenge=challenge)
    query = parse_qs(urlparse(url).query)
    assert query["access_type"] == ["offline"] and query["code_challenge_method"] == ["S256"]
    answer = requests.get(url, allow_redirects=False, timeout=5)
    assert answer.status_code == 302
    back = parse_qs(urlparse(answer.headers["Location"]).query)
    assert back["state"] == [state]
    return back["code"][0], verifier


def connect(human: Human) -> Connection:
    code, verifier = consent()
    credentials = plugin().exchange_code(
        code=code, redirect_uri=REDIRECT_URI, code_verifier=verifier, http=ProviderHttp()
    )
    return connection_store(human=human, slug="fitbit", credentials=credentials, request=None)


def seed(google: GoogleHealthEmulator, now: datetime) -> dict[str, str]:
    day = now.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=3)
    ids = {
        "height": google.add_sample("height", day - timedelta(days=20), 1780),
        "weight": google.add_sample("weight", day + timedelta(hours=6), 72500.0),
        "fat": google.add_sample("body-fat", day + timedelta(hours=6), 18.5),
        "spo2": google.add_daily(
            "daily-oxygen-saturation",
            day.date(),
            {"averagePercentage": 97.0, "lowerBoundPercentage": 94.6, "upperBoundPercentage": 99.1},
        ),
        "glucose": google.add_sample("blood-glucose", day + timedelta(hours=7), 92.0),
        "run": google.add_exercise(day + timedelta(hours=17), 31, distance_m=5012.4, steps=6100, kcal=330.0),
        "sleep": google.add_sleep(
            day - timedelta(hours=1),
            day + timedelta(hours=6),
            asleep=380,
            awake=40,
            stages={"LIGHT": 230, "DEEP": 80, "REM": 70},
        ),
    }
    google.add_daily("daily-resting-heart-rate", day.date(), {"beatsPerMinute": "57"})
    google.add_daily("daily-heart-rate-variability", day.date(), {"averageHeartRateVariabilityMilliseconds": 41.5})
    google.add_daily("daily-respiratory-rate", day.date(), {"breathsPerMinute": 14.2})
    google.add_daily(
        "daily-sleep-temperature-derivations",
        day.date(),
        {"nightlyTemperatureCelsius": 33.1, "baselineTemperatureCelsius": 33.4},
    )
    google.add_daily("daily-vo2-max", day.date(), {"vo2Max": 41.2})
    for minute in range(0, 50, 10):
        google.add_sample("heart-rate", day + timedelta(hours=12, minutes=minute), 60 + minute)
    google.set_rollup("steps", day.date(), {"countSum": "9525"})
    google.set_rollup("total-calories", day.date(), {"kcalSum": 3028.784634})
    return ids


def changes(counts: dict[str, int]) -> dict[str, int]:
    return {k: counts[k] for k in ("created", "updated", "deleted")}


def stored(connection: Connection) -> Counter[str]:
    return stored_counts(connection=connection)


def sync(connection: Connection, http: ProviderHttp | None = None) -> Any:
    run = connection_sync(connection_id=connection.pk, http=http)
    assert run is not None
    return run


@pytest.mark.django_db(transaction=True)
def test_it_exchanges_a_code_for_tokens_and_the_health_user_id(alice: Persona, google: GoogleHealthEmulator) -> None:
    connection = connect(alice.human)

    assert connection.external_user_id == HEALTH_USER_ID
    credentials = Connection.objects.get(pk=connection.pk).credentials
    assert credentials["refresh_token"].startswith("1//") and credentials["access_token"].startswith("ya29.")
    assert connection.token_expires_at is not None
    assert timedelta(minutes=55) < connection.token_expires_at - timezone.now() <= timedelta(seconds=3599)
    assert google.calls["token authorization_code"] == 1 and google.calls["identity"] == 1


@pytest.mark.django_db(transaction=True)
def test_it_refuses_a_code_used_twice(alice: Persona, google: GoogleHealthEmulator) -> None:
    code, verifier = consent()
    plugin().exchange_code(code=code, redirect_uri=REDIRECT_URI, code_verifier=verifier, http=ProviderHttp())

    with pytest.raises(AuthorizationFailed, match="invalid_grant"):
        plugin().exchange_code(code=code, redirect_uri=REDIRECT_URI, code_verifier=verifier, http=ProviderHttp())


@pytest.mark.django_db(transaction=True)
def test_it_refuses_an_account_without_health_data(alice: Persona, google: GoogleHealthEmulator) -> None:
    google.account_linked = False
    code, verifier = consent()

    with pytest.raises(AuthorizationFailed, match="no Fitbit data"):
        plugin().exchange_code(code=code, redirect_uri=REDIRECT_URI, code_verifier=verifier, http=ProviderHttp())
    assert not Connection.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_it_reports_a_denied_consent(alice: Persona, google: GoogleHealthEmulator) -> None:
    google.deny_consent = True
    url = plugin().authorization_url(redirect_uri=REDIRECT_URI, state="s-9", code_challenge=None)
    back = parse_qs(urlparse(requests.get(url, allow_redirects=False, timeout=5).headers["Location"]).query)
    assert back == {"error": ["access_denied"], "state": ["s-9"]}


@pytest.mark.django_db(transaction=True)
def test_it_syncs_history_in_metric_units_then_incrementally(alice: Persona, google: GoogleHealthEmulator) -> None:
    now = datetime.now(UTC)
    seed(google, now)
    connection = connect(alice.human)

    run = sync(connection)

    assert run.outcome == SyncOutcome.SUCCEEDED and run.kind == "history"
    assert stored(connection) == Counter(
        heart_rate=5,
        height=1,
        weight=1,
        bmi=1,
        body_fat=1,
        blood_oxygen=1,
        blood_glucose=1,
        activities=1,
        sleeps=1,
        activity_summaries=1,
        resting_heart_rate=1,
        heart_rate_variability=1,
        respiratory_rate=1,
        body_temperature=1,
        vo2_max=1,
    )
    records = {r.type: r for r in Record.objects.filter(connection=connection)}
    assert records["weight"].data == {"value": 72.5, "unit": "kg"} and records["weight"].tz_offset == 60
    assert records["height"].data == {"value": 178.0, "unit": "cm"}
    assert records["bmi"].data == {"value": 22.9, "unit": "kg/m2"}
    assert records["body_fat"].data == {"value": 18.5, "unit": "%"}
    assert records["blood_glucose"].data == {"value": 92.0, "unit": "mg/dL"}
    assert records["blood_oxygen"].data == {"value": 97.0, "unit": "%"}
    assert records["activities"].data == {
        "type": "running",
        "duration": 31 * 60 - 60,
        "distance": 5012.4,
        "steps": 6100,
        "calories": 330.0,
    }
    sleep = records["sleeps"]
    assert sleep.end_time is not None
    assert sleep.data == {
        "day": (sleep.end_time + timedelta(hours=1)).date().isoformat(),
        "mainSleep": True,
        "timeAsleep": 380,
        "timeAwake": 40,
        "timeInBed": 420,
        "efficiency": 90,
        "numberOfWakeups": 2,
        "deepSleep": 80,
        "lightSleep": 230,
        "remSleep": 70,
    }
    assert records["resting_heart_rate"].data == {"value": 57, "unit": "bpm"}
    assert records["heart_rate_variability"].data == {"value": 41.5, "unit": "ms"}
    assert records["respiratory_rate"].data == {"value": 14.2, "unit": "breaths/min"}
    assert records["body_temperature"].data == {"value": None, "unit": "°C", "deviation": -0.3}
    assert records["vo2_max"].data == {"value": 41.2, "unit": "mL/kg/min"}
    assert google.calls["settings"] == 1  # read once a run, for every dated collection
    assert sorted(r.data["value"] for r in stored_records("heart_rate")) == [60, 70, 80, 90, 100]

    google.add_sample("weight", now - timedelta(hours=2), 72100.0)
    google.requests.clear()
    again = sync(connection)

    assert again.kind == "incremental" and again.outcome == SyncOutcome.SUCCEEDED
    assert changes(again.counts["weight"]) == {"created": 1, "updated": 0, "deleted": 0}
    # Incremental syncs read a few days back, not the whole history.
    weight_filters = [q["filter"] for path, q in google.requests if path.endswith("/weight/dataPoints:reconcile")]
    assert len(weight_filters) == 1


@pytest.mark.django_db(transaction=True)
def test_it_keeps_one_copy_after_repeated_and_interrupted_syncs(alice: Persona, google: GoogleHealthEmulator) -> None:
    now = datetime.now(UTC)
    seed(google, now)
    for index in range(30):  # more exercise sessions than one page (25) holds
        google.add_exercise(now - timedelta(days=5, hours=index), 20, kind="WALKING")
    connection = connect(alice.human)
    google.fail("/dataTypes/sleep/", 503, times=10)  # longer than the in-place retries last

    first = sync(connection, ProviderHttp(sleep=lambda _: None))

    # The sleep collection failed alone; the others were stored.
    assert first.outcome == SyncOutcome.PARTIAL and set(first.failures) == {"sleeps"}
    partial = stored(connection)
    assert partial["activities"] == 31 and partial["sleeps"] == 0 and partial["weight"] == 1
    google.faults.clear()
    sync(connection)
    complete = stored(connection)
    assert complete == partial + Counter(sleeps=1)

    repeat = sync(connection)
    assert stored(connection) == complete
    assert all(c["created"] == 0 and c["updated"] == 0 and c["deleted"] == 0 for c in repeat.counts.values())


@pytest.mark.django_db(transaction=True)
def test_it_updates_in_place_and_drops_points_deleted_at_the_provider(
    alice: Persona, google: GoogleHealthEmulator
) -> None:
    now = datetime.now(UTC)
    ids = seed(google, now)
    nap = now.replace(hour=13, minute=0, second=0, microsecond=0) - timedelta(days=4)
    kept = google.add_sleep(nap, nap + timedelta(minutes=40), asleep=35, awake=5, main=False)
    connection = connect(alice.human)
    sync(connection)
    before = Record.objects.get(connection=connection, type="weight")

    google.update("weight", ids["weight"], weightGrams=71800.0)
    google.delete("sleep", ids["sleep"])
    run = sync(connection)

    after = Record.objects.get(connection=connection, type="weight")
    assert (after.pk, after.created_at) == (before.pk, before.created_at)
    assert after.value == 71.8 and after.updated_at > before.updated_at
    # The nap still comes back in the same window, so the missing night is gone at once.
    assert list(Record.objects.filter(connection=connection, type="sleeps").values_list("external_id", flat=True)) == [
        kept
    ]
    assert run.counts["sleeps"]["deleted"] == 1 and run.counts["weight"]["updated"] == 1


@pytest.mark.django_db(transaction=True)
def test_it_refreshes_before_expiry_and_keeps_the_refresh_token(alice: Persona, google: GoogleHealthEmulator) -> None:
    seed(google, datetime.now(UTC))
    connection = connect(alice.human)
    first = Connection.objects.get(pk=connection.pk).credentials
    Connection.objects.filter(pk=connection.pk).update(token_expires_at=timezone.now() + timedelta(seconds=30))

    assert sync(connection).outcome == SyncOutcome.SUCCEEDED

    renewed = Connection.objects.get(pk=connection.pk)
    assert google.calls["token refresh_token"] == 1
    assert renewed.credentials["access_token"] != first["access_token"]
    assert renewed.credentials["refresh_token"] == first["refresh_token"]  # Google doesn't rotate it
    assert renewed.credentials["scope"] == first["scope"]
    assert renewed.token_expires_at is not None and renewed.token_expires_at > timezone.now() + timedelta(minutes=55)


@pytest.mark.django_db(transaction=True)
def test_it_refreshes_when_the_access_token_is_rejected(alice: Persona, google: GoogleHealthEmulator) -> None:
    seed(google, datetime.now(UTC))
    connection = connect(alice.human)
    google.expire_access_tokens()

    run = sync(connection)

    assert run.outcome == SyncOutcome.SUCCEEDED and stored(connection)["weight"] == 1
    assert google.calls["token refresh_token"] == 1


@pytest.mark.django_db(transaction=True)
def test_it_backs_off_on_rate_limits_and_server_errors(alice: Persona, google: GoogleHealthEmulator) -> None:
    seed(google, datetime.now(UTC))
    connection = connect(alice.human)
    google.fail("/dataTypes/weight/", 429, retry_after="2")
    google.fail("/dataTypes/exercise/", 500)
    google.fail("/dataTypes/sleep/", 200, body='{"dataPoints": [')  # malformed JSON
    waits: list[float] = []
    http = ProviderHttp(sleep=waits.append)

    run = sync(connection, http)

    assert run.outcome == SyncOutcome.SUCCEEDED
    assert http.retries == 3 and len(waits) == 3
    assert waits[0] >= 2  # Retry-After is a floor
    assert stored(connection)["weight"] == 1 and stored(connection)["activities"] == 1
    assert stored(connection)["sleeps"] == 1


@pytest.mark.django_db(transaction=True)
def test_it_needs_reauth_when_the_refresh_is_refused_and_keeps_the_data(
    alice: Persona, google: GoogleHealthEmulator
) -> None:
    seed(google, datetime.now(UTC))
    connection = connect(alice.human)
    sync(connection)
    kept = stored(connection)
    google.revoke_refresh_tokens()

    run = sync(connection)

    assert run.outcome == SyncOutcome.REAUTH_REQUIRED
    assert Connection.objects.get(pk=connection.pk).status == ConnectionStatus.REAUTH_REQUIRED
    assert stored(connection) == kept


@pytest.mark.django_db(transaction=True)
def test_it_skips_malformed_points_and_ungranted_types(alice: Persona, google: GoogleHealthEmulator) -> None:
    seed(google, datetime.now(UTC))
    google.add_malformed("weight")
    google.add_malformed("exercise")
    google.granted_scopes = [s for s in plugin().scopes if "sleep" not in s]  # the user unticked sleep
    connection = connect(alice.human)

    run = sync(connection)

    # The malformed points are counted unreadable (the run is partial); sleep was never asked for.
    assert run.outcome == SyncOutcome.PARTIAL
    assert run.unreadable.keys() == {"weight", "activities"}
    assert run.counts["weight"]["unreadable"] == 1 and run.counts["activities"]["unreadable"] == 1
    assert stored(connection)["weight"] == 1 and stored(connection)["activities"] == 1
    assert stored(connection)["sleeps"] == 0 and google.calls["reconcile sleep"] == 0
    assert "sleeps" not in run.failures


@pytest.mark.django_db(transaction=True)
def test_it_waits_out_a_spent_quota_and_keeps_what_it_fetched(alice: Persona, google: GoogleHealthEmulator) -> None:
    seed(google, datetime.now(UTC))
    connection = connect(alice.human)
    google.rate_limit_per_minute = 4  # spent after the first few calls of the history

    with pytest.raises(RetryLater):
        connection_sync(connection_id=connection.pk, http=ProviderHttp(sleep=lambda _: None))

    assert google.calls["reconcile height"] == 1 and stored(connection)["height"] == 1
    assert Connection.objects.get(pk=connection.pk).status == ConnectionStatus.ACTIVE
    google.rate_limit_per_minute = 300
    RateBudget.objects.all().delete()  # the user's budget, emptied by the 429s, has freed too
    assert sync(connection).outcome == SyncOutcome.SUCCEEDED
    assert stored(connection)["sleeps"] == 1 and stored(connection)["height"] == 1


@pytest.mark.django_db(transaction=True)
def test_it_retries_later_when_the_token_endpoint_fails(alice: Persona, google: GoogleHealthEmulator) -> None:
    seed(google, datetime.now(UTC))
    connection = connect(alice.human)
    google.expire_access_tokens()
    google.fail("/token", 503, times=100)

    # Whether the engine stops the run or records the collections as failed, an outage of the
    # token endpoint is never a refusal: the connection stays active, nothing is lost.
    try:
        run = connection_sync(connection_id=connection.pk, http=ProviderHttp(sleep=lambda _: None))
    except RetryLater:
        run = None
    if run is not None:
        assert run.outcome in (SyncOutcome.PARTIAL, SyncOutcome.FAILED) and run.failures
    assert Connection.objects.get(pk=connection.pk).status == ConnectionStatus.ACTIVE
    google.faults.clear()
    assert sync(connection).outcome == SyncOutcome.SUCCEEDED


@pytest.mark.django_db(transaction=True)
def test_it_drops_the_bmi_of_a_weight_deleted_at_the_provider(alice: Persona, google: GoogleHealthEmulator) -> None:
    ids = seed(google, datetime.now(UTC))
    connection = connect(alice.human)
    sync(connection)  # height is fetched before weight, so the weights carry a BMI at once
    assert Record.objects.filter(connection=connection, type="bmi").count() == 1

    google.delete("weight", ids["weight"])
    first = sync(connection)

    # The window of weights now comes back empty: held once (a provider hiccup looks the same)...
    assert Record.objects.filter(connection=connection, type__in=("weight", "bmi")).count() == 2
    assert first.counts["weight"]["held"] == 1 and first.counts["bmi"]["held"] == 1
    run = sync(connection)

    # ... and deleted, with its BMI, when it is empty again.
    assert not Record.objects.filter(connection=connection, type__in=("weight", "bmi")).exists()
    assert run.counts["weight"]["deleted"] == 1 and run.counts["bmi"]["deleted"] == 1
