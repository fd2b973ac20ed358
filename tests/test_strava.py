"""The Strava source against the Strava emulator, over real HTTP, on the real database."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import pytest
import requests
from django.test import Client

from connect.models import Token, TokenKind
from connect.views import csrf_for
from data_api.models import Record
from sources.base import AuthorizationFailed
from sources.http import ProviderHttp
from sources.models import Connection, ConnectionStatus, RateBudget, SyncOutcome
from sources.providers.strava import StravaSource
from sources.registry import get_plugin
from sources.services import connection_store
from sources.sync import RetryLater, connection_sync
from tests.conftest import Persona
from tests.emulators.strava import StravaEmulator

CALLBACK = "http://127.0.0.1:8000/connect/oauth/callback"
HISTORY_DAYS = 10
SEEDED_DAYS = 8

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def strava(settings: Any) -> Iterator[StravaEmulator]:
    emulator = StravaEmulator().start()
    settings.SOURCE_SETTINGS = emulator.source_settings(HISTORY_DAYS, PER_PAGE="4")
    settings.PROVIDER_RETRY_MAX_WAIT = 5
    today = datetime.now(UTC).date()
    # Eight days: all recent enough to be looked up as listed (the plugin remembers 9 days).
    emulator.seed(today - timedelta(days=SEEDED_DAYS - 1), today)
    yield emulator
    emulator.stop()


def plugin() -> StravaSource:
    found = get_plugin("strava")
    assert isinstance(found, StravaSource)
    return found


def authorize(emulator: StravaEmulator) -> dict[str, list[str]]:
    url = plugin().authorization_url(redirect_uri=CALLBACK, state="state-1", code_challenge=None)
    answer = requests.get(url, allow_redirects=False, timeout=5)
    assert answer.status_code == 302
    return parse_qs(urlsplit(answer.headers["Location"]).query)


def connect(persona: Persona, emulator: StravaEmulator) -> Connection:
    code = authorize(emulator)["code"][0]
    credentials = plugin().exchange_code(code=code, redirect_uri=CALLBACK, code_verifier=None, http=ProviderHttp())
    return connection_store(human=persona.human, slug="strava", credentials=credentials, request=None)


def stored_ids(connection: Connection) -> list[str]:
    return sorted(Record.objects.filter(connection=connection, type="activities").values_list("external_id", flat=True))


def provider_ids(emulator: StravaEmulator) -> list[str]:
    return sorted(str(i) for i in emulator.activities)


def stored_calories(connection: Connection) -> dict[str, float | None]:
    rows = Record.objects.filter(connection=connection, type="activities").values_list("external_id", "data")
    return {external_id: data["calories"] for external_id, data in rows}


def sync(connection: Connection, http: ProviderHttp | None = None) -> Any:
    run = connection_sync(connection_id=connection.pk, http=http)
    assert run is not None
    return run


def test_it_connects_with_a_code_and_learns_the_athlete(alice: Persona, strava: StravaEmulator) -> None:
    url = plugin().authorization_url(redirect_uri=CALLBACK, state="s", code_challenge="ignored")
    query = parse_qs(urlsplit(url).query)
    assert query["scope"] == ["read,activity:read_all"]  # Strava separates scopes with commas
    assert query["approval_prompt"] == ["auto"] and "code_challenge" not in query
    assert authorize(strava)["scope"] == ["read,activity:read_all"]

    connection = connect(alice, strava)

    assert connection.external_user_id == strava.user_id
    token = strava.access[connection.credentials["access_token"]]
    assert connection.token_expires_at is not None
    assert int(connection.token_expires_at.timestamp()) == int(token.expires_at)  # Strava's expires_at
    assert strava.calls["athlete"] == 0  # the athlete came with the token


def test_it_connects_through_the_connect_page_oauth_flow(alice: Persona, strava: StravaEmulator) -> None:
    token, value = Token.mint(kind=TokenKind.SESSION, human=alice.human, ttl=3600)
    browser = Client()
    start = browser.get("/connect/oauth/strava/start", {"token": value, "csrf": csrf_for(token)})
    assert start.status_code == 302
    consent = requests.get(start["Location"], allow_redirects=False, timeout=5)  # the user says yes
    back = urlsplit(consent.headers["Location"])
    assert back.path == "/connect/oauth/callback"

    done = browser.get(back.path, {k: v[0] for k, v in parse_qs(back.query).items()})

    assert done.status_code == 200
    connection = Connection.objects.get(human=alice.human, source="strava")
    assert connection.status == ConnectionStatus.ACTIVE and connection.external_user_id == strava.user_id
    assert strava.grants["authorization_code"] == 1


def test_it_refuses_a_reused_code_and_a_denied_consent(alice: Persona, strava: StravaEmulator) -> None:
    code = authorize(strava)["code"][0]
    plugin().exchange_code(code=code, redirect_uri=CALLBACK, code_verifier=None, http=ProviderHttp())
    with pytest.raises(AuthorizationFailed, match="AuthorizationCode code invalid"):
        plugin().exchange_code(code=code, redirect_uri=CALLBACK, code_verifier=None, http=ProviderHttp())

    strava.deny = True
    assert authorize(strava)["error"] == ["access_denied"]


def test_it_syncs_history_page_by_page_then_incremental_with_one_copy(alice: Persona, strava: StravaEmulator) -> None:
    connection = connect(alice, strava)

    history = sync(connection)

    assert history.outcome == SyncOutcome.SUCCEEDED and history.kind == "history"
    assert stored_ids(connection) == provider_ids(strava)  # "Only Me" ones too (activity:read_all)
    assert any(a["private"] for a in strava.activities.values())
    assert history.pages == len(strava.activities) // 4 + 1
    assert strava.calls["activity"] == len(strava.activities)  # each detail once, for its calories

    again = sync(connection)

    assert again.outcome == SyncOutcome.SUCCEEDED and again.kind == "incremental"
    assert stored_ids(connection) == provider_ids(strava)
    assert all(c["created"] == c["updated"] == c["deleted"] == 0 for c in again.counts.values())
    assert strava.calls["activity"] == len(strava.activities)  # calories remembered, not asked again
    route, query = strava.log[-1]
    assert route == "activities" and int(query["after"]) > time.time() - 8 * 86400  # a trailing week


def test_it_normalizes_activities_with_local_offsets_and_units(alice: Persona, strava: StravaEmulator) -> None:
    connection = connect(alice, strava)
    sync(connection)
    ride = next(a for a in strava.activities.values() if a["sport_type"] == "Ride")
    start = datetime.fromisoformat(ride["start_date"].replace("Z", "+00:00"))

    record = Record.objects.get(connection=connection, type="activities", external_id=str(ride["id"]))

    # Seeded at 07:30 Los Angeles time: UTC-7 or UTC-8 by the date, whatever the label says.
    local = start.astimezone(ZoneInfo("America/Los_Angeles"))
    assert local.strftime("%H:%M") == "07:30"
    assert record.tz_offset == local.utcoffset().total_seconds() / 60  # type: ignore[union-attr]
    assert record.start_time == start
    assert (record.end_time - record.start_time).total_seconds() == ride["elapsed_time"]
    assert record.local_day == local.date()
    assert record.data == {
        "type": "cycling",
        "duration": ride["moving_time"],
        "distance": ride["distance"],
        "steps": None,
        "calories": ride["calories"],  # from the activity's detail; kilojoules are not kcal
    }
    assert record.source_data["kilojoules"] == 480.5 and record.source_data["calories"] == ride["calories"]
    assert record.source_data["average_heartrate"] == 141.3 and record.source_data["max_heartrate"] == 172.0
    assert "laps" not in record.source_data and "embed_token" not in record.source_data


def test_it_updates_edits_in_place_and_deletes_vanished_activities(alice: Persona, strava: StravaEmulator) -> None:
    connection = connect(alice, strava)
    sync(connection)
    newest = sorted(strava.activities)[-2:]
    edited, removed = newest
    before = Record.objects.get(connection=connection, external_id=str(edited))
    strava.change(edited, distance=12345.6, sport_type="TrailRun")
    strava.remove(removed)

    run = sync(connection)

    after = Record.objects.get(pk=before.pk)
    assert after.data["distance"] == 12345.6 and after.data["type"] == "running"
    assert after.created_at == before.created_at and after.updated_at > before.updated_at
    assert stored_ids(connection) == provider_ids(strava)
    counts = run.counts["activities"]
    assert (counts["created"], counts["updated"], counts["deleted"]) == (0, 1, 1)


def test_it_resumes_an_interrupted_history_sync_at_the_next_page(
    alice: Persona, strava: StravaEmulator, settings: Any
) -> None:
    settings.PROVIDER_RETRY_ATTEMPTS = 1
    connection = connect(alice, strava)
    strava.fail("activities", 503, skip=1)

    failed = sync(connection)

    # The only collection stayed unreachable: the run failed, what it stored stays stored.
    assert failed.outcome == SyncOutcome.FAILED and "unreachable after retries" in failed.error
    assert len(stored_ids(connection)) == 4
    assert Connection.objects.get(pk=connection.pk).cursor["activities"]["page"] == 2
    strava.log.clear()

    resumed = sync(connection)

    assert resumed.kind == "history" and resumed.outcome == SyncOutcome.SUCCEEDED
    assert strava.log[0][1]["page"] == "2"
    assert stored_ids(connection) == provider_ids(strava)
    assert resumed.counts["activities"]["created"] == len(strava.activities) - 4


def test_it_refreshes_near_expiry_storing_the_rotated_refresh_token(alice: Persona, strava: StravaEmulator) -> None:
    strava.access_ttl = 120  # under an hour left: Strava issues a new access token
    connection = connect(alice, strava)
    old_access, old_refresh = connection.credentials["access_token"], connection.credentials["refresh_token"]

    assert sync(connection).outcome == SyncOutcome.SUCCEEDED

    connection.refresh_from_db()
    assert connection.credentials["access_token"] != old_access
    assert connection.credentials["refresh_token"] != old_refresh
    assert old_refresh not in strava.refresh  # the rotated one died at once
    assert connection.external_user_id == strava.user_id
    assert connection.token_expires_at is not None and connection.token_expires_at.timestamp() > time.time()


def test_it_keeps_a_refresh_that_returns_the_same_access_token(alice: Persona, strava: StravaEmulator) -> None:
    connection = connect(alice, strava)
    credentials = connection.credentials

    renewed = plugin().refresh(credentials, ProviderHttp())

    assert renewed.data["access_token"] == credentials["access_token"]  # more than an hour left
    assert renewed.data["refresh_token"] != credentials["refresh_token"]
    assert renewed.external_user_id == strava.user_id


def test_it_refreshes_once_on_a_401_and_goes_on(alice: Persona, strava: StravaEmulator) -> None:
    connection = connect(alice, strava)
    strava.revoke_access_tokens()

    run = sync(connection)

    assert run.outcome == SyncOutcome.SUCCEEDED
    assert strava.grants["refresh_token"] == 1
    assert stored_ids(connection) == provider_ids(strava)


def test_it_needs_reauthorization_when_the_refresh_is_refused_and_keeps_the_data(
    alice: Persona, strava: StravaEmulator
) -> None:
    connection = connect(alice, strava)
    sync(connection)
    strava.revoke_everything()

    run = sync(connection)

    assert run.outcome == SyncOutcome.REAUTH_REQUIRED and "RefreshToken refresh_token invalid" in run.error
    assert Connection.objects.get(pk=connection.pk).status == ConnectionStatus.REAUTH_REQUIRED
    assert stored_ids(connection) == provider_ids(strava)


def test_it_stops_at_the_limit_strava_reports(alice: Persona, strava: StravaEmulator, settings: Any) -> None:
    settings.PROVIDER_RETRY_MAX_WAIT = 0
    connection = connect(alice, strava)
    strava.read_limit = (1, 1000)  # below the declared 100: the first answer's headers say so

    with pytest.raises(RetryLater) as caught:
        connection_sync(connection_id=connection.pk)

    assert strava.calls["429"] == 0 and caught.value.waiting
    assert caught.value.retry_after is not None and 0 < caught.value.retry_after <= 901
    # One list call; no detail (the window is past half), and the shared budget stops the next list.
    assert strava.calls["activities"] == 1 and strava.calls["activity"] == 0
    assert len(stored_ids(connection)) == 4  # the page read before stays stored
    strava.read_limit, strava.usage = (100, 1000), [0, 0]  # the window reset...
    RateBudget.objects.all().delete()  # ...for the application's budget too

    assert sync(connection).outcome == SyncOutcome.SUCCEEDED
    assert stored_ids(connection) == provider_ids(strava)
    assert all(stored_calories(connection).values())  # the details left waiting were fetched


def test_it_reschedules_a_429_until_the_window_resets(alice: Persona, strava: StravaEmulator, settings: Any) -> None:
    settings.PROVIDER_RETRY_MAX_WAIT = 0  # never wait in place, even right before the window resets
    connection = connect(alice, strava)
    strava.usage = [100, 100]  # exhausted by others before this sync's first call

    with pytest.raises(RetryLater) as caught:
        connection_sync(connection_id=connection.pk)

    assert strava.calls["429"] == 1
    assert caught.value.retry_after is not None and 0 < caught.value.retry_after <= 901
    assert Connection.objects.get(pk=connection.pk).status == ConnectionStatus.ACTIVE


def test_it_backs_off_on_5xx_and_malformed_json(alice: Persona, strava: StravaEmulator) -> None:
    connection = connect(alice, strava)
    strava.fail("activities", 500)
    strava.fail("activities", 200, skip=1, body="[{")
    waits: list[float] = []

    run = sync(connection, ProviderHttp(sleep=waits.append))

    assert run.outcome == SyncOutcome.SUCCEEDED and len(waits) == 2
    assert stored_ids(connection) == provider_ids(strava)


def test_it_skips_a_malformed_activity_and_deletes_nothing_that_run(alice: Persona, strava: StravaEmulator) -> None:
    connection = connect(alice, strava)
    sync(connection)
    gone = sorted(strava.activities)[-1]
    strava.remove(gone)
    recent = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    strava.put({"id": 1, "sport_type": "Run", "start_date": recent, "start_date_local": recent})  # no elapsed_time

    run = sync(connection)

    assert run.outcome == SyncOutcome.PARTIAL
    assert run.counts["activities"]["unreadable"] == 1 and "elapsed_time is missing" in str(run.unreadable)
    assert str(gone) in stored_ids(connection) and "1" not in stored_ids(connection)


def test_it_rejects_millisecond_bounds_like_strava(strava: StravaEmulator) -> None:
    """The emulator's own fidelity: `after` in milliseconds is a 400 Fault."""
    from tests.emulators.oauth_code import Grant

    access, _ = strava.issue(Grant(strava.user_id, ("read", "activity:read_all")))
    answer = requests.get(
        strava.url + "/api/v3/athlete/activities",
        params={"after": int(time.time() * 1000)},
        headers={"Authorization": f"Bearer {access}"},
        timeout=5,
    )
    assert answer.status_code == 400 and answer.json()["errors"][0]["field"] == "after"
    assert answer.headers["X-RateLimit-Usage"] == "1,1"


def test_an_empty_answer_deletes_only_when_strava_repeats_it(alice: Persona, strava: StravaEmulator) -> None:
    connection = connect(alice, strava)
    sync(connection)
    kept = stored_ids(connection)
    recent = [i for i, a in strava.activities.items() if _age(a) < timedelta(days=6)]
    for activity_id in list(strava.activities):
        strava.remove(activity_id)

    first = sync(connection)

    assert first.outcome == SyncOutcome.SUCCEEDED
    assert stored_ids(connection) == kept  # one empty answer proves nothing (a hiccup, a lapsed scope)
    assert first.counts["activities"]["held"] >= len(recent)

    second = sync(connection)

    assert second.counts["activities"]["deleted"] >= len(recent)
    assert not set(stored_ids(connection)) & {str(i) for i in recent}


def test_details_stay_within_half_the_read_budget_and_the_rest_wait(
    alice: Persona, strava: StravaEmulator, settings: Any
) -> None:
    connection = connect(alice, strava)
    strava.read_limit = (12, 1000)  # details only while fewer than 6 calls were made this window

    run = sync(connection)

    assert run.outcome == SyncOutcome.SUCCEEDED and strava.calls["429"] == 0
    calories = stored_calories(connection)
    assert set(calories) == {str(i) for i in strava.activities}  # every activity is stored anyway
    with_calories = [k for k, v in calories.items() if v is not None]
    assert 0 < len(with_calories) < len(calories)
    assert strava.calls["activity"] == len(with_calories)
    assert strava.usage[0] <= 12 // 2 + 2  # details stopped at half; the last list call is not a detail
    waiting = Connection.objects.get(pk=connection.pk).cursor["calories"]["pending"]
    assert {k for k, _ in waiting} == set(calories) - set(with_calories)

    for _ in range(6):  # later windows: the waiting ones get their calories, inside or outside the re-read
        strava.usage = [0, 0]
        RateBudget.objects.all().delete()
        sync(connection)

    calories = stored_calories(connection)
    assert all(calories[str(i)] == a["calories"] for i, a in strava.activities.items())
    assert Connection.objects.get(pk=connection.pk).cursor["calories"]["pending"] == []
    assert strava.calls["activity"] == len(strava.activities)  # each detail once
    old = min(strava.activities, key=lambda i: strava.activities[i]["start_date"])
    record = Record.objects.get(connection=connection, external_id=str(old))
    assert "laps" not in record.source_data and "polyline" not in record.source_data["map"]


def test_details_per_run_caps_the_lookups(alice: Persona, strava: StravaEmulator, settings: Any) -> None:
    settings.SOURCE_SETTINGS = {**settings.SOURCE_SETTINGS, "SOURCE_STRAVA_DETAILS_PER_RUN": "3"}
    connection = connect(alice, strava)

    sync(connection)

    assert strava.calls["activity"] == 3
    assert sum(v is not None for v in stored_calories(connection).values()) == 3


def test_a_detail_that_is_gone_leaves_the_activity_without_calories(
    alice: Persona, strava: StravaEmulator, settings: Any
) -> None:
    connection = connect(alice, strava)
    strava.fail(
        "activity",
        404,
        body='{"message":"Record Not Found","errors":[{"resource":"Activity","field":"id","code":"invalid"}]}',
    )

    run = sync(connection)

    assert run.outcome == SyncOutcome.SUCCEEDED
    assert stored_ids(connection) == provider_ids(strava)
    assert sum(v is None for v in stored_calories(connection).values()) == 1
    asked = strava.calls["activity"]

    sync(connection)

    assert strava.calls["activity"] == asked  # not asked again and again


def test_a_token_without_activity_access_fails_the_run_without_refreshing(
    alice: Persona, strava: StravaEmulator
) -> None:
    strava.unticked = {"activity:read_all"}  # the athlete unticked the activity scope at consent
    connection = connect(alice, strava)

    run = sync(connection)

    assert run.outcome == SyncOutcome.FAILED
    assert "activity:read_permission missing" in run.error
    assert strava.grants["refresh_token"] == 0  # a refresh can't grant a scope
    assert Connection.objects.get(pk=connection.pk).status == ConnectionStatus.ACTIVE


def test_the_emulator_serves_summaries_in_lists_and_details_by_id(strava: StravaEmulator) -> None:
    """The emulator's own fidelity: lists carry no detail-only keys; a detail 404s when unknown."""
    from tests.emulators.oauth_code import Grant

    access, _ = strava.issue(Grant(strava.user_id, ("read", "activity:read_all")))
    headers = {"Authorization": f"Bearer {access}"}
    listed = requests.get(strava.url + "/api/v3/athlete/activities", headers=headers, timeout=5).json()
    assert listed and all(a["resource_state"] == 2 and "calories" not in a and "laps" not in a for a in listed)
    detail = requests.get(f"{strava.url}/api/v3/activities/{listed[0]['id']}", headers=headers, timeout=5).json()
    assert detail["resource_state"] == 3 and isinstance(detail["calories"], float) and detail["laps"]
    missing = requests.get(strava.url + "/api/v3/activities/1", headers=headers, timeout=5)
    assert missing.status_code == 404 and missing.json()["message"] == "Record Not Found"


def _age(item: dict[str, Any]) -> timedelta:
    return datetime.now(UTC) - datetime.fromisoformat(item["start_date"].replace("Z", "+00:00"))


def test_a_malformed_details_per_run_setting_fails_the_system_checks(settings: Any) -> None:
    from sources.checks import check_source_settings

    settings.SOURCE_SETTINGS = {"SOURCE_STRAVA_CLIENT_ID": "1", "SOURCE_STRAVA_DETAILS_PER_RUN": "some"}

    errors = [str(e.msg) for e in check_source_settings()]

    assert any("SOURCE_STRAVA_DETAILS_PER_RUN must be a whole number" in e for e in errors)
