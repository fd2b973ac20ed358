"""The Oura source against the Oura emulator, over real HTTP, on the real database."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from django.test import Client
from django.utils import timezone

from connect.models import Token, TokenKind
from connect.views import csrf_for
from data_api.models import Record
from sources.base import AuthorizationFailed
from sources.http import ProviderHttp
from sources.models import Connection, ConnectionStatus, SyncOutcome
from sources.providers.oura import OuraSource
from sources.registry import get_plugin
from sources.services import connection_store
from sources.sync import RetryLater, connection_sync
from tests.conftest import Persona
from tests.data_api_helpers import stored_counts, stored_records
from tests.emulators.oauth_code import Grant
from tests.emulators.oura import OuraEmulator, document_id

CALLBACK = "http://127.0.0.1:8000/connect/oauth/callback"
HISTORY_DAYS = 10

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def oura(settings: Any) -> Iterator[OuraEmulator]:
    emulator = OuraEmulator(page_size=25).start()
    settings.SOURCE_SETTINGS = emulator.source_settings(HISTORY_DAYS)
    settings.PROVIDER_RETRY_MAX_WAIT = 5
    today = datetime.now(UTC).date()
    emulator.seed(today - timedelta(days=HISTORY_DAYS), today)
    yield emulator
    emulator.stop()


def plugin() -> OuraSource:
    found = get_plugin("oura")
    assert isinstance(found, OuraSource)
    return found


def authorize(emulator: OuraEmulator) -> str:
    """The user consents at the emulator's authorize page; returns the code sent to the callback."""
    url = plugin().authorization_url(redirect_uri=CALLBACK, state="state-1", code_challenge=None)
    answer = requests.get(url, allow_redirects=False, timeout=5)
    assert answer.status_code == 302
    query = parse_qs(urlsplit(answer.headers["Location"]).query)
    assert query["state"] == ["state-1"]
    return query["code"][0]


def connect(persona: Persona, emulator: OuraEmulator) -> Connection:
    credentials = plugin().exchange_code(
        code=authorize(emulator), redirect_uri=CALLBACK, code_verifier=None, http=ProviderHttp()
    )
    return connection_store(human=persona.human, slug="oura", credentials=credentials, request=None)


def stored(connection: Connection) -> Counter[str]:
    return stored_counts(connection=connection)


def expected(emulator: OuraEmulator) -> Counter[str]:
    nights = len(emulator.documents["sleep"])  # every seeded night is a long sleep with its readings
    return Counter(
        activities=len(emulator.documents["workout"]),
        sleeps=nights,
        resting_heart_rate=nights,
        heart_rate_variability=nights,
        respiratory_rate=nights,
        activity_summaries=len(emulator.documents["daily_activity"]),
        blood_oxygen=len(emulator.documents["daily_spo2"]),
        heart_rate=len(emulator.heart_rate),
        body_temperature=len(emulator.documents["daily_readiness"]),
        vo2_max=len(emulator.documents["vO2_max"]),
    )


def sync(connection: Connection, http: ProviderHttp | None = None) -> Any:
    run = connection_sync(connection_id=connection.pk, http=http)
    assert run is not None
    return run


def test_it_connects_with_a_code_and_learns_the_oura_user(alice: Persona, oura: OuraEmulator) -> None:
    url = plugin().authorization_url(redirect_uri=CALLBACK, state="s", code_challenge="ignored")
    query = parse_qs(urlsplit(url).query)
    assert query["scope"] == ["personal daily heartrate workout spo2 spo2Daily heart_health"]
    assert "code_challenge" not in query  # Oura documents no PKCE

    connection = connect(alice, oura)

    assert connection.external_user_id == oura.user_id
    assert connection.credentials["access_token"] in oura.access
    assert connection.token_expires_at is not None
    assert abs((connection.token_expires_at - timezone.now()).total_seconds() - 86400) < 60
    assert oura.calls["token"] == 1 and oura.calls["personal_info"] == 1


def test_it_connects_through_the_connect_page_oauth_flow(alice: Persona, oura: OuraEmulator) -> None:
    token, value = Token.mint(kind=TokenKind.SESSION, human=alice.human, ttl=3600)
    browser = Client()
    start = browser.get("/connect/oauth/oura/start", {"token": value, "csrf": csrf_for(token)})
    assert start.status_code == 302
    consent = requests.get(start["Location"], allow_redirects=False, timeout=5)  # the user says yes
    back = urlsplit(consent.headers["Location"])
    assert back.path == "/connect/oauth/callback"

    done = browser.get(back.path, {k: v[0] for k, v in parse_qs(back.query).items()})

    assert done.status_code == 200
    connection = Connection.objects.get(human=alice.human, source="oura")
    assert connection.status == ConnectionStatus.ACTIVE and connection.external_user_id == oura.user_id
    assert oura.grants["authorization_code"] == 1


def test_it_refuses_a_reused_code_and_a_denied_consent(alice: Persona, oura: OuraEmulator) -> None:
    code = authorize(oura)
    plugin().exchange_code(code=code, redirect_uri=CALLBACK, code_verifier=None, http=ProviderHttp())
    with pytest.raises(AuthorizationFailed, match="invalid_grant"):
        plugin().exchange_code(code=code, redirect_uri=CALLBACK, code_verifier=None, http=ProviderHttp())

    oura.deny = True
    url = plugin().authorization_url(redirect_uri=CALLBACK, state="s", code_challenge=None)
    location = requests.get(url, allow_redirects=False, timeout=5).headers["Location"]
    assert parse_qs(urlsplit(location).query)["error"] == ["access_denied"]


def test_it_syncs_history_then_incremental_with_exactly_one_copy(alice: Persona, oura: OuraEmulator) -> None:
    connection = connect(alice, oura)

    history = sync(connection)

    assert history.outcome == SyncOutcome.SUCCEEDED and history.kind == "history"
    assert stored(connection) == expected(oura)
    # The padding beats Oura's date quirk: today's 04:00 daily activity is not dropped.
    today = datetime.now(UTC).date()
    assert Record.objects.filter(connection=connection, type="activity_summaries", external_id=str(today)).exists()
    calls = oura.calls["collection"]

    again = sync(connection)

    assert again.outcome == SyncOutcome.SUCCEEDED and again.kind == "incremental"
    assert stored(connection) == expected(oura)
    assert all(c["created"] == 0 and c["updated"] == 0 and c["deleted"] == 0 for c in again.counts.values())
    assert oura.calls["collection"] - calls < calls  # incremental re-reads only the recent days


def test_it_normalizes_oura_documents_to_the_data_api_fields(alice: Persona, oura: OuraEmulator) -> None:
    connection, day = connect(alice, oura), datetime.now(UTC).date() - timedelta(days=2)
    sync(connection)

    sleep = Record.objects.get(connection=connection, type="sleeps", external_id=document_id("sleep", day))
    assert sleep.tz_offset == 120  # the document's own +02:00
    assert sleep.start_time == datetime.combine(day - timedelta(days=1), datetime.min.time(), UTC) + timedelta(hours=21)
    assert sleep.local_day == day  # Oura's day
    raw = oura.documents["sleep"][document_id("sleep", day)]
    assert sleep.data == {
        "day": day.isoformat(),
        "mainSleep": True,
        "timeAsleep": round(raw["total_sleep_duration"] / 60),
        "timeAwake": round(raw["awake_time"] / 60),
        "timeInBed": 480,
        "timeToFallAsleep": 10,
        "efficiency": raw["efficiency"],
        "numberOfWakeups": 2,
        "deepSleep": 90,
        "lightSleep": round(raw["light_sleep_duration"] / 60),
        "remSleep": 90,
    }
    assert sleep.source_data["average_heart_rate"] == 58.25 and "heart_rate" not in sleep.source_data
    night = {
        kind: Record.objects.get(connection=connection, type=kind, external_id=document_id("sleep", day))
        for kind in ("resting_heart_rate", "heart_rate_variability", "respiratory_rate")
    }
    assert {kind: (r.value, r.data["unit"]) for kind, r in night.items()} == {
        "resting_heart_rate": (57, "bpm"),  # the lowest 5-minute sample, not lowest_heart_rate (52)
        "heart_rate_variability": (42, "ms"),
        "respiratory_rate": (14.5, "breaths/min"),
    }
    assert {(r.start_time, r.tz_offset, r.local_day) for r in night.values()} == {(sleep.end_time, 120, day)}

    workout = Record.objects.get(connection=connection, type="activities", external_id=document_id("workout", day))
    doc = oura.documents["workout"][document_id("workout", day)]
    assert workout.data["type"] == doc["activity"] and workout.local_day == day
    assert workout.data["duration"] == (workout.end_time - workout.start_time).total_seconds()
    assert workout.data["distance"] == doc["distance"] and workout.data["calories"] == doc["calories"]

    summary = Record.objects.get(connection=connection, type="activity_summaries", external_id=str(day))
    activity = oura.documents["daily_activity"][document_id("daily_activity", day)]
    assert summary.data["steps"] == activity["steps"] and summary.data["calories"] == activity["total_calories"]
    assert summary.local_day == day and summary.tz_offset == 120
    assert summary.start_time == datetime.combine(day, datetime.min.time(), UTC) - timedelta(hours=2)

    spo2 = Record.objects.get(connection=connection, type="blood_oxygen", external_id=document_id("daily_spo2", day))
    average = oura.documents["daily_spo2"][document_id("daily_spo2", day)]["spo2_percentage"]["average"]
    assert spo2.value == average and spo2.data == {"value": average, "unit": "%"} and spo2.local_day == day

    temperature = Record.objects.get(
        connection=connection, type="body_temperature", external_id=document_id("daily_readiness", day)
    )
    deviation = oura.documents["daily_readiness"][document_id("daily_readiness", day)]["temperature_deviation"]
    assert temperature.value is None and temperature.data == {"value": None, "unit": "°C", "deviation": deviation}
    assert temperature.local_day == day and temperature.start_time == datetime.combine(day, datetime.min.time(), UTC)

    beat = stored_records("heart_rate", connection=connection)[-1]
    assert beat is not None and beat.data["unit"] == "bpm" and beat.value == beat.data["value"]


def test_it_updates_changed_documents_in_place_and_deletes_removed_ones(alice: Persona, oura: OuraEmulator) -> None:
    connection = connect(alice, oura)
    sync(connection)
    today = datetime.now(UTC).date()
    changed_id, tombstone_id = document_id("sleep", today - timedelta(days=1)), document_id("sleep", today)
    removed_id = document_id("workout", today)
    before = Record.objects.get(connection=connection, type="sleeps", external_id=changed_id)
    untouched_id = document_id("sleep", today - timedelta(days=3))
    untouched = Record.objects.get(connection=connection, type="sleeps", external_id=untouched_id)
    oura.change("sleep", changed_id, awake_time=3600, total_sleep_duration=8 * 3600 - 3600)
    oura.remove("workout", removed_id)
    oura.change("sleep", tombstone_id, type="deleted")

    run = sync(connection)

    after = Record.objects.get(pk=before.pk)
    assert after.data["timeAwake"] == 60 and after.created_at == before.created_at
    assert after.updated_at > before.updated_at
    assert Record.objects.get(pk=untouched.pk).updated_at == untouched.updated_at
    assert not Record.objects.filter(connection=connection, external_id__in=[removed_id, tombstone_id]).exists()
    sleeps = run.counts["sleeps"]
    assert (sleeps["created"], sleeps["updated"], sleeps["deleted"]) == (0, 1, 1)
    assert run.counts["activities"]["deleted"] == 1


def test_it_resumes_heart_rate_from_its_cursor_after_a_failed_run(
    alice: Persona, oura: OuraEmulator, settings: Any
) -> None:
    settings.PROVIDER_RETRY_ATTEMPTS = 1  # fail at once, as a long outage would
    connection = connect(alice, oura)
    # Four document collections, then three heart-rate pages succeed; the fourth fails.
    oura.fail("collection", 503, skip=7, times=1)

    failed = sync(connection)

    assert failed.outcome == SyncOutcome.PARTIAL and set(failed.failures) == {"heart_rate"}
    partial = stored(connection)
    assert partial["sleeps"] == len(oura.documents["sleep"]) and partial["heart_rate"] == 75
    cursor = Connection.objects.get(pk=connection.pk).cursor
    assert cursor["heartrate"]["next_token"]
    oura.log.clear()

    resumed = sync(connection)

    assert resumed.outcome == SyncOutcome.SUCCEEDED
    assert stored(connection) == expected(oura)
    heart_rate_calls = [query for route, query in oura.log if "start_datetime" in query]
    assert heart_rate_calls[0]["next_token"] == cursor["heartrate"]["next_token"]
    assert resumed.counts["heart_rate"]["created"] == len(oura.heart_rate) - 75


def test_it_rereads_a_chunk_when_a_stored_next_token_has_expired(
    alice: Persona, oura: OuraEmulator, settings: Any
) -> None:
    settings.PROVIDER_RETRY_ATTEMPTS = 1
    connection = connect(alice, oura)
    oura.fail("collection", 503, skip=5, times=1)
    assert sync(connection).outcome == SyncOutcome.PARTIAL
    oura.forget_page_tokens()

    assert sync(connection).outcome == SyncOutcome.SUCCEEDED
    assert stored(connection) == expected(oura)


def test_it_refreshes_a_token_near_expiry_and_rotates_the_refresh_token(alice: Persona, oura: OuraEmulator) -> None:
    oura.access_ttl = 120  # inside the engine's refresh margin
    connection = connect(alice, oura)
    first_refresh = connection.credentials["refresh_token"]

    assert sync(connection).outcome == SyncOutcome.SUCCEEDED

    connection.refresh_from_db()
    assert oura.grants["refresh_token"] == 1
    assert connection.credentials["refresh_token"] != first_refresh
    assert first_refresh not in oura.refresh  # single-use: the old one is dead
    assert connection.credentials["refresh_token"] in oura.refresh
    assert connection.external_user_id == oura.user_id


def test_it_refreshes_once_on_a_401_and_goes_on(alice: Persona, oura: OuraEmulator) -> None:
    connection = connect(alice, oura)
    oura.revoke_access_tokens()

    run = sync(connection)

    assert run.outcome == SyncOutcome.SUCCEEDED
    assert oura.grants["refresh_token"] == 1
    assert stored(connection) == expected(oura)


def test_it_needs_reauthorization_when_the_refresh_is_refused_and_keeps_the_data(
    alice: Persona, oura: OuraEmulator
) -> None:
    connection = connect(alice, oura)
    sync(connection)
    kept = stored(connection)
    oura.revoke_everything()

    run = sync(connection)

    assert run.outcome == SyncOutcome.REAUTH_REQUIRED
    assert Connection.objects.get(pk=connection.pk).status == ConnectionStatus.REAUTH_REQUIRED
    assert stored(connection) == kept


def test_it_waits_out_a_429_and_backs_off_on_5xx_and_malformed_json(alice: Persona, oura: OuraEmulator) -> None:
    connection = connect(alice, oura)
    oura.rate_limit(2)  # Retry-After and the X-RateLimit-* headers Oura documents
    oura.fail("collection", 502, skip=1)
    oura.fail("collection", 200, skip=2, body='{"data": [')
    waits: list[float] = []

    run = sync(connection, ProviderHttp(sleep=waits.append))

    assert run.outcome == SyncOutcome.SUCCEEDED
    assert len(waits) == 3 and waits[0] >= 2.0
    assert stored(connection) == expected(oura)


def test_it_reschedules_on_a_long_retry_after_keeping_stored_pages(alice: Persona, oura: OuraEmulator) -> None:
    connection = connect(alice, oura)
    oura.rate_limit(3600, skip=2)

    with pytest.raises(RetryLater) as caught:
        connection_sync(connection_id=connection.pk)

    assert caught.value.retry_after == 3600
    assert stored(connection)["activities"] == len(oura.documents["workout"])
    assert Connection.objects.get(pk=connection.pk).status == ConnectionStatus.ACTIVE


def test_it_records_a_collection_whose_scope_was_not_granted_and_syncs_the_others(
    alice: Persona, oura: OuraEmulator
) -> None:
    oura.unticked = {"heartrate"}
    connection = connect(alice, oura)

    run = sync(connection)

    assert run.outcome == SyncOutcome.PARTIAL
    assert set(run.failures) == {"heart_rate"} and "403" in run.failures["heart_rate"]
    assert "Forbidden" in run.failures["heart_rate"]
    assert stored(connection) == expected(oura) - Counter(heart_rate=len(oura.heart_rate))
    assert "heartrate" not in Connection.objects.get(pk=connection.pk).cursor  # retried next run


def test_it_records_a_missing_collection_and_reads_it_once_it_answers(alice: Persona, oura: OuraEmulator) -> None:
    oura.missing = {"daily_spo2"}
    connection = connect(alice, oura)

    run = sync(connection)

    assert run.outcome == SyncOutcome.PARTIAL and set(run.failures) == {"blood_oxygen"}
    assert "404" in run.failures["blood_oxygen"] and "Not Found" in run.failures["blood_oxygen"]
    assert stored(connection) == expected(oura) - Counter(blood_oxygen=len(oura.documents["daily_spo2"]))
    oura.missing = set()

    again = sync(connection)

    assert again.outcome == SyncOutcome.SUCCEEDED and stored(connection) == expected(oura)


def test_it_fails_every_collection_when_the_membership_lapsed_and_keeps_the_data(
    alice: Persona, oura: OuraEmulator
) -> None:
    connection = connect(alice, oura)
    sync(connection)
    oura.lapsed = True

    run = sync(connection)

    assert run.outcome == SyncOutcome.FAILED
    assert set(run.failures) == set(plugin().data_types)
    assert stored(connection) == expected(oura)


def test_it_deletes_on_an_empty_answer_only_when_oura_repeats_it(alice: Persona, oura: OuraEmulator) -> None:
    connection = connect(alice, oura)
    sync(connection)
    for ident in list(oura.documents["workout"]):
        oura.remove("workout", ident)

    first = sync(connection)

    assert first.counts["activities"]["deleted"] == 0 and first.counts["activities"]["held"] > 0
    assert stored(connection)["activities"] == HISTORY_DAYS + 1

    second = sync(connection)

    assert second.counts["activities"]["deleted"] > 0
    # The re-read week is gone; older chunks are not re-read by an incremental sync.
    remaining = Record.objects.filter(connection=connection, type="activities")
    horizon = datetime.now(UTC) - timedelta(days=7)
    assert not remaining.filter(start_time__gte=horizon).exists()


def test_it_counts_a_malformed_document_unreadable_without_deleting_anything(
    alice: Persona, oura: OuraEmulator
) -> None:
    connection = connect(alice, oura)
    sync(connection)
    today = datetime.now(UTC).date()
    oura.put("sleep", {"id": "broken", "type": "long_sleep", "day": today.isoformat(), "bedtime_start": "soon"})
    oura.remove("sleep", document_id("sleep", today))  # gone, but the window is no longer trusted this run

    run = sync(connection)

    assert run.outcome == SyncOutcome.PARTIAL
    assert run.counts["sleeps"]["unreadable"] == 1
    assert run.unreadable == {"sleeps": ["sleep: bedtime_start is not an ISO 8601 timestamp"]}
    assert Record.objects.filter(connection=connection, external_id=document_id("sleep", today)).exists()
    assert not Record.objects.filter(connection=connection, external_id="broken").exists()


def test_it_names_oura_validation_errors_without_echoing_the_input(alice: Persona, oura: OuraEmulator) -> None:
    connection = connect(alice, oura)
    oura.fail(
        "collection",
        422,
        body='{"detail": [{"type": "value_error", "loc": ["query", "start_date"], '
        '"msg": "Start date must be before end date", "input": "2099-01-01"}]}',
    )

    run = sync(connection)

    assert run.outcome == SyncOutcome.PARTIAL
    assert "Start date must be before end date" in run.failures["activities"]
    assert "2099" not in run.failures["activities"]


def test_it_answers_malformed_dates_with_an_empty_page_like_oura(oura: OuraEmulator) -> None:
    """The emulator's own fidelity: Oura returns 200 and no data for a date it can't parse."""
    access, _ = oura.issue(Grant(oura.user_id, ("daily",)))
    answer = requests.get(
        oura.url + "/v2/usercollection/sleep",
        params={"start_date": "yesterday", "end_date": date.today().isoformat()},
        headers={"Authorization": f"Bearer {access}"},
        timeout=5,
    )
    assert answer.status_code == 200 and answer.json() == {"data": [], "next_token": None}
