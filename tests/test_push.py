"""Push notifications from providers, end to end: the Strava and Oura emulators run the
subscription APIs (and verify the callback, as the providers do) and POST real notifications to
the running server (gunicorn) when a test changes data there; a real Celery worker fetches what
changed; the Data API serves it and the app's receiver gets `data.updated`."""

from __future__ import annotations

import copy
import hashlib
import hmac
import io
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from django.core import checks
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from connect.models import Application, AuditEntry, Token, TokenKind
from data_api.models import Record
from humanapi_project.celery import app
from sources import push
from sources.base import SUBSCRIBE, Change, Credentials
from sources.models import Connection, ConnectionStatus, PushEvent, PushStatus, PushSubscription, SyncRun
from sources.providers import withings as withings_plugin
from sources.push import callback_url, connection_push, push_maintain, token_hash
from sources.services import connection_store
from sources.sync import connection_sync, drop_claim, release_sync
from tests.conftest import Persona
from tests.emulators.google_health import GoogleHealthEmulator
from tests.emulators.oura import OuraEmulator, document_id, workout
from tests.emulators.strava import StravaEmulator, synthetic
from tests.emulators.webhook_receiver import WebhookReceiver, running_receiver
from tests.emulators.withings import WithingsEmulator
from tests.factories import connect_through_oauth
from tests.live import LiveStack, free_port, start_stack, stop_stack, wait_until

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

CALLBACK = "http://127.0.0.1:8000/connect/oauth/callback"
HISTORY_DAYS = 5
OURA_TOPICS = 18  # six data types x three events (heart rate is refused)
GOOGLE_SECRET = "gh-subscriber-secret-5f1d0c9e"  # what the operator gave the subscriber


@pytest.fixture(scope="module")
def strava() -> Iterator[StravaEmulator]:
    emulator = StravaEmulator().start()
    today = datetime.now(UTC).date()
    emulator.seed(today - timedelta(days=HISTORY_DAYS - 1), today)
    yield emulator
    emulator.stop()


@pytest.fixture(scope="module")
def oura() -> Iterator[OuraEmulator]:
    emulator = OuraEmulator().start()
    today = datetime.now(UTC).date()
    emulator.seed(today - timedelta(days=HISTORY_DAYS - 1), today)
    yield emulator
    emulator.stop()


@pytest.fixture(scope="module")
def withings() -> Iterator[WithingsEmulator]:
    emulator = WithingsEmulator(page_size=50).start()
    yield emulator
    emulator.stop()


@pytest.fixture(scope="module")
def google() -> Iterator[GoogleHealthEmulator]:
    emulator = GoogleHealthEmulator().start()
    yield emulator
    emulator.stop()


def push_env(
    strava: StravaEmulator, oura: OuraEmulator, withings: WithingsEmulator, google: GoogleHealthEmulator, base: str
) -> dict[str, str]:
    return {
        **strava.source_settings(HISTORY_DAYS),
        **oura.source_settings(HISTORY_DAYS),
        **withings.source_settings(HISTORY_DAYS),
        **google.source_settings(HISTORY_DAYS),
        "SOURCE_FITBIT_PUSH_SECRET": GOOGLE_SECRET,
        "PUBLIC_BASE_URL": base,
        "ALLOW_HTTP_PROVIDERS": "1",
        "PROVIDER_RETRY_MAX_WAIT": "2",
    }


@pytest.fixture(scope="module")
def stack(
    django_db_setup: None,
    django_db_blocker: Any,
    strava: StravaEmulator,
    oura: OuraEmulator,
    withings: WithingsEmulator,
    google: GoogleHealthEmulator,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[LiveStack]:
    port = free_port()
    env = push_env(strava, oura, withings, google, f"http://127.0.0.1:{port}")
    live = start_stack(tmp_path_factory.mktemp("push"), env, port=port)
    try:
        # The worker makes the subscriptions as it starts; each provider checks the callback first.
        wait_until(lambda: strava.subscriptions, timeout=60, message="the Strava subscription:\n" + live.log_tail())
        wait_until(lambda: len(oura.webhooks) == OURA_TOPICS, timeout=60, message="the Oura subscriptions")
        yield live
    finally:
        stop_stack(live)


@pytest.fixture
def pushing(
    stack: LiveStack,
    strava: StravaEmulator,
    oura: OuraEmulator,
    withings: WithingsEmulator,
    google: GoogleHealthEmulator,
    settings: Any,
) -> LiveStack:
    """This process configured like the stack; the subscriptions known (each test starts on an
    emptied database: they are found again at the providers and taken back, not made twice)."""
    for key, value in push_env(strava, oura, withings, google, stack.base_url).items():
        if key.startswith("SOURCE_"):
            settings.SOURCE_SETTINGS = {**settings.SOURCE_SETTINGS, key: value}
    settings.PUBLIC_BASE_URL, settings.ALLOW_HTTP_PROVIDERS = stack.base_url, True
    settings.PROVIDER_RETRY_MAX_WAIT = 2
    push_maintain()
    assert PushSubscription.objects.filter(source="strava", status=PushStatus.ACTIVE).count() == 1
    assert PushSubscription.objects.filter(source="oura", status=PushStatus.ACTIVE).count() == OURA_TOPICS
    assert len(strava.subscriptions) == 1 and len(oura.webhooks) == OURA_TOPICS
    return stack


@pytest.fixture
def receiver(alice: Persona) -> Iterator[WebhookReceiver]:
    with running_receiver(alice.app.webhook_secret) as running:
        Application.objects.filter(pk=alice.app.application.pk).update(notify_url=running.url)
        yield running


def connect(persona: Persona, slug: str) -> Connection:
    connection = connect_through_oauth(persona.human, slug, CALLBACK)
    run = connection_sync(connection_id=connection.pk)
    assert run is not None and run.outcome == "succeeded", run.error if run else "claimed"
    return Connection.objects.get(pk=connection.pk)


def activities(stack: LiveStack, persona: Persona, source: str) -> dict[str, dict[str, Any]]:
    """The Human's activities from `source`, as the running server's Data API serves them."""
    _, token = Token.mint(kind=TokenKind.ACCESS, human=persona.human, ttl=600)
    answer = requests.get(
        stack.url("/v1/human/activities"),
        params={"limit": "500", "source": source},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    return {
        item["sourceData"]["id"] if source == "oura" else str(item["sourceData"]["id"]): item for item in answer.json()
    }


def push_runs(connection: Connection) -> list[SyncRun]:
    return list(SyncRun.objects.filter(connection=connection, kind="push", finished_at__isnull=False).order_by("id"))


def updated_events(receiver: WebhookReceiver, source: str) -> list[dict[str, Any]]:
    return [e for e in receiver.events("data.updated") if e["source"] == source]


# --- Strava ----------------------------------------------------------------------------------------


def test_it_stores_a_new_strava_activity_announced_by_a_signed_event(
    pushing: LiveStack, strava: StravaEmulator, alice: Persona, receiver: WebhookReceiver
) -> None:
    connection = connect(alice, "strava")
    before = len(strava.pusher.deliveries)
    item = synthetic(
        20_000_000_001, datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2), "Europe/Paris", "Run"
    )

    strava.create(item)

    [delivery] = strava.pusher.deliveries[before:]
    assert delivery.status == 200 and delivery.seconds < 2  # Strava's deadline
    assert "X-Strava-Signature" in delivery.headers
    served = wait_until(lambda: activities(pushing, alice, "strava").get("20000000001"), timeout=30)
    assert served["type"] == "running" and served["calories"] == item["calories"]
    [run] = push_runs(connection)
    assert run.outcome == "succeeded" and run.counts["activities"]["created"] == 1
    event = wait_until(lambda: updated_events(receiver, "strava"), timeout=30)[0]
    assert event["dataTypes"] == {"activities": {"created": 1, "updated": 0, "deleted": 0}}
    assert Connection.objects.get(pk=connection.pk).next_sync_at == connection.next_sync_at  # the schedule stays


def test_it_updates_and_deletes_strava_activities_as_announced(
    pushing: LiveStack, strava: StravaEmulator, alice: Persona, receiver: WebhookReceiver
) -> None:
    connection = connect(alice, "strava")
    target = max(strava.activities)

    strava.change(target, name="Renamed on Strava")

    wait_until(lambda: activities(pushing, alice, "strava")[str(target)]["sourceData"]["name"] == "Renamed on Strava")
    strava.remove(target)
    wait_until(lambda: str(target) not in activities(pushing, alice, "strava"), timeout=30)
    runs = wait_until(lambda: len(push_runs(connection)) == 2 and push_runs(connection), timeout=30)
    assert [r.counts["activities"]["updated"] for r in runs] == [1, 0]
    assert runs[1].counts["activities"]["deleted"] == 1
    assert sorted(activities(pushing, alice, "strava")) == sorted(str(i) for i in strava.activities)
    kinds = wait_until(lambda: len(updated_events(receiver, "strava")) == 2 and updated_events(receiver, "strava"))
    assert [k["dataTypes"]["activities"]["deleted"] for k in kinds] == [0, 1]


def test_it_refetches_instead_of_trusting_an_event(pushing: LiveStack, strava: StravaEmulator, alice: Persona) -> None:
    connection = connect(alice, "strava")
    kept = max(strava.activities)
    subscription = next(iter(strava.subscriptions))
    # A delete of an activity Strava still has (forged without a signature): refetched, it stays.
    body = json.dumps(
        {
            "aspect_type": "delete",
            "event_time": int(time.time()),
            "object_id": kept,
            "object_type": "activity",
            "owner_id": int(strava.user_id),
            "subscription_id": subscription,
            "updates": {},
        }
    ).encode()

    answer = requests.post(callback_url("strava"), data=body, timeout=5)

    assert answer.status_code == 200
    [run] = wait_until(lambda: push_runs(connection), timeout=30)
    assert run.counts["activities"]["deleted"] == 0 and run.counts["activities"]["read"] == 1
    assert str(kept) in activities(pushing, alice, "strava")


def test_it_disconnects_when_the_athlete_deauthorizes(
    pushing: LiveStack, strava: StravaEmulator, alice: Persona, receiver: WebhookReceiver
) -> None:
    connection = connect(alice, "strava")
    stored = Record.objects.filter(connection=connection).count()

    strava.deauthorize()

    wait_until(lambda: Connection.objects.get(pk=connection.pk).status == ConnectionStatus.DISCONNECTED, timeout=30)
    entry = AuditEntry.objects.get(action="connection.disconnected", human_id=alice.human.pk)
    assert entry.actor == "system" and "withdrew access at Strava" in json.dumps(entry.details)
    assert Record.objects.filter(connection=connection).count() == stored  # the data stays
    wait_until(lambda: receiver.events("source.disconnected"), timeout=30)


def test_a_deauthorization_strava_does_not_confirm_changes_nothing(
    pushing: LiveStack, strava: StravaEmulator, alice: Persona
) -> None:
    connection = connect(alice, "strava")

    strava.notify("athlete", int(strava.user_id), "update", {"authorized": "false"})  # the token still works

    [run] = wait_until(lambda: push_runs(connection), timeout=30)
    assert run.outcome == "succeeded"
    assert Connection.objects.get(pk=connection.pk).status == ConnectionStatus.ACTIVE
    assert not AuditEntry.objects.filter(action="connection.disconnected").exists()


def test_forged_replayed_and_unknown_strava_events_change_nothing(
    pushing: LiveStack, strava: StravaEmulator, alice: Persona
) -> None:
    connection = connect(alice, "strava")
    subscription = next(iter(strava.subscriptions))
    event = {
        "aspect_type": "create",
        "event_time": int(time.time()),
        "object_id": max(strava.activities),
        "object_type": "activity",
        "owner_id": int(strava.user_id),
        "subscription_id": subscription,
        "updates": {},
    }
    body = json.dumps(event).encode()
    url = callback_url("strava")

    forged = requests.post(url, data=body, headers=strava.signature(body, secret="not-the-secret"), timeout=5)
    stale = requests.post(url, data=body, headers=strava.signature(body, at=int(time.time()) - 3600), timeout=5)
    stranger = json.dumps({**event, "owner_id": 999}).encode()
    unknown_owner = requests.post(url, data=stranger, headers=strava.signature(stranger), timeout=5)
    other = json.dumps({**event, "subscription_id": 1}).encode()
    not_ours = requests.post(url, data=other, headers=strava.signature(other), timeout=5)
    malformed = requests.post(url, data=b"[1, 2", headers=strava.signature(b"[1, 2"), timeout=5)

    assert forged.status_code == stale.status_code == 401
    assert forged.json()["statusCode"] == 401 and forged.json()["requestId"]
    assert "X-Strava-Signature" in forged.json()["message"] and "not-the-secret" not in forged.text
    assert unknown_owner.status_code == not_ours.status_code == 200  # so Strava stops retrying
    assert malformed.status_code == 400
    first = requests.post(url, data=body, headers=strava.signature(body), timeout=5)
    replay = requests.post(url, data=body, headers=strava.signature(body), timeout=5)
    assert first.json() == {"received": 1} and replay.json()["duplicate"] is True
    # The other shape integrations read: a bare hex HMAC of the body (no timestamp).
    bare = json.dumps({**event, "event_time": event["event_time"] + 1}).encode()
    digest = hmac.new(strava.client_secret.encode(), bare, hashlib.sha256).hexdigest()
    assert (
        requests.post(
            url, data=bare, headers={"X-Strava-Signature": ("1" if digest[0] == "0" else "0") + digest[1:]}, timeout=5
        ).status_code
        == 401
    )
    assert requests.post(url, data=bare, headers={"X-Strava-Signature": digest.upper()}, timeout=5).status_code == 200
    wait_until(lambda: len(push_runs(connection)) == 2, timeout=30)
    time.sleep(1)
    assert len(push_runs(connection)) == 2  # only the genuine ones, each once
    log = "\n".join(p.read_text(errors="replace") for p in pushing.logs)
    assert "refused" in log and strava.client_secret not in log


# --- Oura ------------------------------------------------------------------------------------------


def test_it_stores_changes_and_deletes_oura_documents_as_announced(
    pushing: LiveStack, oura: OuraEmulator, alice: Persona, receiver: WebhookReceiver
) -> None:
    connection = connect(alice, "oura")
    day = datetime.now(UTC).date()
    new = {**workout(day, datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1), 7), "id": "pushed-workout-1"}

    oura.put("workout", new)

    served = wait_until(lambda: activities(pushing, alice, "oura").get("pushed-workout-1"), timeout=30)
    assert served["calories"] == new["calories"]
    assert all(d.status == 200 and d.seconds < 10 for d in oura.pusher.deliveries)
    oura.change("workout", "pushed-workout-1", calories=123.5)
    wait_until(lambda: activities(pushing, alice, "oura")["pushed-workout-1"]["calories"] == 123.5, timeout=30)
    night = document_id("sleep", day - timedelta(days=1))
    oura.remove("sleep", night)
    wait_until(lambda: not Record.objects.filter(connection=connection, external_id=night).exists(), timeout=30)
    runs = wait_until(lambda: len(push_runs(connection)) == 3 and push_runs(connection), timeout=30)
    assert runs[0].counts["activities"]["created"] == 1 and runs[1].counts["activities"]["updated"] == 1
    assert runs[2].counts["sleeps"]["deleted"] == 1 and runs[2].counts["resting_heart_rate"]["deleted"] == 1
    wait_until(lambda: len(updated_events(receiver, "oura")) == 3, timeout=30)


def test_forged_stale_replayed_and_unknown_oura_events_change_nothing(
    pushing: LiveStack, oura: OuraEmulator, alice: Persona
) -> None:
    connection = connect(alice, "oura")
    url = callback_url("oura")
    event = {
        "event_type": "update",
        "data_type": "workout",
        "object_id": document_id("workout", datetime.now(UTC).date()),
        "event_time": datetime.now(UTC).isoformat(),
        "user_id": oura.user_id,
    }
    body = json.dumps(event).encode()

    unsigned = requests.post(url, data=body, headers={"Content-Type": "application/json"}, timeout=5)
    forged = requests.post(url, data=body, headers=oura.signature(body, secret="guessed"), timeout=5)
    stale = requests.post(url, data=body, headers=oura.signature(body, at=time.time() - 600), timeout=5)
    stranger = json.dumps({**event, "user_id": "someone-else"}).encode()
    unknown = requests.post(url, data=stranger, headers=oura.signature(stranger), timeout=5)
    assert unsigned.status_code == forged.status_code == stale.status_code == 401
    assert unknown.status_code == 200 and unknown.json() == {"received": 0}

    oura.signature_upper, oura.timestamp_ms = False, True  # lower-case hex, milliseconds: both taken
    headers = oura.signature(body)
    oura.signature_upper, oura.timestamp_ms = True, False
    first = requests.post(url, data=body, headers=headers, timeout=5)
    replayed = requests.post(url, data=body, headers=headers, timeout=5)

    assert first.json() == {"received": 1} and replayed.json()["duplicate"] is True
    [run] = wait_until(lambda: push_runs(connection), timeout=30)
    assert run.outcome == "succeeded" and run.counts["activities"]["updated"] == 0  # unchanged at Oura
    time.sleep(1)
    assert len(push_runs(connection)) == 1
    assert PushEvent.objects.filter(source="oura").count() == 2  # the unknown user's and the genuine one


# --- Withings (subscriptions per user, unsigned notifications) -------------------------------------


def test_withings_subscribes_each_user_and_reads_what_a_notification_announces(
    pushing: LiveStack, withings: WithingsEmulator, alice: Persona, receiver: WebhookReceiver
) -> None:
    connection = connect(alice, "withings")
    assert push_maintain()["withings"] == "checked; 1 connection(s) to subscribe"

    # (what the worker does with what push_maintain enqueued: here, in this process)
    run = connection_push(connection_id=connection.pk, change=Change("", "", SUBSCRIBE))

    assert run is not None and run.outcome == "succeeded"
    assert sorted(s["appli"] for s in withings.subscriptions) == [1, 2, 4, 16, 44, 46]
    url = withings.subscriptions[0]["callbackurl"]
    assert url.startswith(callback_url("withings") + "?token=") and len(parse_qs(urlsplit(url).query)["token"][0]) >= 32
    assert PushSubscription.objects.get(source="withings").verified_at is not None  # Withings' HEAD came
    assert push_maintain()["withings"] == "checked; 0 connection(s) to subscribe"  # noted in the cursor

    withings.add_measures(datetime.now(UTC) - timedelta(minutes=30), {1: (72350, -3)})

    weight = wait_until(lambda: Record.objects.filter(connection=connection, type="weight").first(), timeout=30)
    assert weight.value == 72.35
    assert all(d.status == 200 and d.seconds < 2 for d in withings.pusher.deliveries)
    wait_until(lambda: updated_events(receiver, "withings"), timeout=30)
    [push] = [r for r in push_runs(connection) if r.counts]
    assert push.counts["weight"]["created"] == 1

    hook = callback_url("withings")
    body = "userid=3021977&appli=1&startdate=1&enddate=2"
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    assert requests.post(hook, data=body, headers=form, timeout=5).status_code == 401  # no token
    assert requests.post(hook + "?token=guess", data=body, headers=form, timeout=5).status_code == 401
    assert requests.head(hook + "?token=guess", timeout=5).status_code == 403
    assert requests.post(url, data="appli=1", headers=form, timeout=5).status_code == 400

    withings.unlink()

    wait_until(lambda: Connection.objects.get(pk=connection.pk).status == ConnectionStatus.DISCONNECTED, timeout=30)
    assert AuditEntry.objects.filter(action="connection.disconnected", actor="system").exists()


# --- Google Health (the operator's subscriber; notifications authorized by its secret) -------------


def test_google_health_verification_and_notified_intervals(
    pushing: LiveStack, google: GoogleHealthEmulator, alice: Persona, receiver: WebhookReceiver
) -> None:
    connection = connect(alice, "fitbit")
    hook = callback_url("fitbit")
    assert not google.subscribe(hook, "Bearer some-other-secret-entirely")  # ours refuses it: not kept
    assert google.subscribe(hook, "Bearer " + GOOGLE_SECRET)  # 201 with the secret, 401 without
    assert PushSubscription.objects.get(source="fitbit").verified_at is not None

    point = google.add_sample("weight", datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1), 71500)

    weight = wait_until(lambda: Record.objects.filter(connection=connection, type="weight").first(), timeout=30)
    assert weight.value == 71.5
    # Announced with the very body of the addition (UPSERT, the same instant): a change all the same.
    google.update("weight", point, weightGrams=72000)
    wait_until(lambda: Record.objects.get(connection=connection, type="weight").value == 72.0, timeout=30)
    google.delete("weight", point)  # a DELETE notification: the re-read window comes back empty
    wait_until(lambda: not Record.objects.filter(connection=connection, type="weight").exists(), timeout=30)
    runs = wait_until(lambda: len(push_runs(connection)) == 3 and push_runs(connection), timeout=30)
    assert runs[0].counts["weight"]["created"] == 1 and runs[1].counts["weight"]["updated"] == 1
    assert runs[2].counts["weight"]["deleted"] == 1
    wait_until(lambda: len(updated_events(receiver, "fitbit")) == 3, timeout=30)

    note = json.dumps([{"data": {"healthUserId": "someone-else", "dataType": "weight", "operation": "UPSERT"}}])
    secret = {"Authorization": GOOGLE_SECRET, "Content-Type": "application/json"}
    assert requests.post(hook, data=note, headers={"Authorization": "nope"}, timeout=5).status_code == 401
    assert requests.post(hook, data=note, timeout=5).status_code == 401
    assert requests.post(hook, data="{", headers=secret, timeout=5).status_code == 400
    assert requests.post(hook, data=note, headers=secret, timeout=5).json() == {"received": 0}  # not a user here


# --- deletions through push --------------------------------------------------------------------------


def served(stack: LiveStack, persona: Persona, path: str, **params: str) -> list[dict[str, Any]]:
    """A Data API list of the Human's, as the running server serves it."""
    _, token = Token.mint(kind=TokenKind.ACCESS, human=persona.human, ttl=600)
    answer = requests.get(
        stack.url(f"/v1/human/{path}"),
        params={"limit": "500", **params},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    return list(answer.json())


def deleted_events(receiver: WebhookReceiver, source: str, kind: str) -> list[dict[str, Any]]:
    return [e for e in updated_events(receiver, source) if e["dataTypes"].get(kind, {}).get("deleted")]


def test_withings_deletions_are_read_from_the_notified_span(
    pushing: LiveStack, withings: WithingsEmulator, alice: Persona, receiver: WebhookReceiver
) -> None:
    assert withings_plugin.SPAN == push.SPAN  # the operation the engine takes as certain
    connection = connect(alice, "withings")
    run = connection_push(connection_id=connection.pk, change=Change("", "", SUBSCRIBE))
    assert run is not None and run.outcome == "succeeded"
    now = datetime.now(UTC).replace(microsecond=0)
    weighed = withings.add_measures(now - timedelta(hours=3), {1: (80100, -3)})
    pressure = withings.add_measures(now - timedelta(hours=2), {10: (128, 0), 9: (82, 0), 11: (64, 0)})
    today = now.date()
    withings.add_activity(today - timedelta(days=1), steps=4321)
    withings.add_activity(today - timedelta(days=2), steps=8765)
    kinds = ("weight", "blood_pressure", "activity_summaries")  # (heart rate is kept as a series)
    wait_until(
        lambda: (
            all(Record.objects.filter(connection=connection, type=k).exists() for k in kinds)
            and served(pushing, alice, "heart_rate/readings", source="withings")
        ),
        timeout=30,
        message="the notified measures and daily totals",
    )
    assert served(pushing, alice, "blood_pressure/readings", source="withings")[0]["systolic"] == 128

    # A measure group deleted: Withings names its span, which now holds nothing: certain.
    withings.delete_group(pressure)

    wait_until(lambda: not served(pushing, alice, "blood_pressure/readings", source="withings"), timeout=30)
    assert not served(pushing, alice, "heart_rate/readings", source="withings")  # the group's pulse too
    weights = served(pushing, alice, "weight/readings", source="withings")
    assert str(weighed) in {str(w["sourceData"]["grpid"]) for w in weights}  # outside the span: kept
    [run] = wait_until(
        lambda: [r for r in push_runs(connection) if r.counts.get("blood_pressure", {}).get("deleted")], timeout=30
    )
    assert run.counts["blood_pressure"]["deleted"] == 1 and run.counts["heart_rate"]["deleted"] == 1
    event = wait_until(lambda: deleted_events(receiver, "withings", "blood_pressure"), timeout=30)[0]
    assert event["dataTypes"]["heart_rate"]["deleted"] == 1

    # A day's totals deleted: the days around it are read again, the one gone goes.
    withings.delete_activity(today - timedelta(days=1))

    def days() -> set[str]:
        return {s["date"] for s in served(pushing, alice, "activities/summaries", source="withings")}

    wait_until(lambda: (today - timedelta(days=1)).isoformat() not in days(), timeout=30)
    assert (today - timedelta(days=2)).isoformat() in days()
    assert not Record.objects.filter(
        connection=connection, type="activity_summaries", external_id=str(today - timedelta(days=1))
    ).exists()
    event = wait_until(lambda: deleted_events(receiver, "withings", "activity_summaries"), timeout=30)[0]
    assert event["dataTypes"]["activity_summaries"]["deleted"] == 1
    runs = wait_until(
        lambda: [r for r in push_runs(connection) if r.counts.get("activity_summaries", {}).get("deleted")],
        timeout=30,
    )
    assert [r.counts["activity_summaries"]["deleted"] for r in runs] == [1]


@pytest.mark.parametrize(
    ("form", "span"),
    [
        ("startdate=1700000000&enddate=1700000600", "1700000000/1700000600"),
        ("date=1700000000", "1700000000/1700000000"),
        # A local day: every instant it covers in some zone (UTC+14 .. UTC-12).
        ("date=2023-11-14", f"{1699920000 - 14 * 3600}/{1699920000 + 36 * 3600 - 1}"),
        ("startdate=1700000600&enddate=1700000000", ""),  # reversed
        (f"startdate=1700000000&enddate={1700000000 + 32 * 86400}", ""),  # over a month
        ("date=2023-13-40", ""),
        ("date=0001-01-01", ""),
        ("startdate=1&enddate=99999999999", ""),
        ("", ""),
    ],
)
def test_a_withings_notification_is_read_for_its_span(form: str, span: str) -> None:
    plugin = withings_plugin.WithingsSource({})
    now = datetime.now(UTC)
    body = f"userid=3021977&appli=16&{form}".encode()

    batch = plugin.push_read(headers={}, body=body, now=now, max_age=300)

    operation = push.SPAN if span else "update"
    assert [n.change for n in batch.notices] == [Change(k, span, operation) for k in ("workouts", "activity")]
    again = plugin.push_read(headers={}, body=body, now=now + timedelta(microseconds=1), max_age=300)
    assert again.key != batch.key  # the same body later is another notification (a deletion, say)


def test_oura_daily_totals_deleted_at_oura_go_through_push(
    pushing: LiveStack, oura: OuraEmulator, alice: Persona, receiver: WebhookReceiver
) -> None:
    connection = connect(alice, "oura")
    day = datetime.now(UTC).date() - timedelta(days=2)
    first = document_id("daily_activity", day)
    row = Record.objects.get(connection=connection, type="activity_summaries", external_id=day.isoformat())
    assert row.source_data["id"] == first  # filed under its day, the document id kept in sourceData

    def steps() -> Any:
        summaries = served(pushing, alice, "activities/summaries", source="oura")
        return next((s["steps"] for s in summaries if s["date"] == day.isoformat()), None)

    # Oura makes the day again: a new document for it, then the old one deleted. The day stays.
    oura.put(
        "daily_activity", {**copy.deepcopy(oura.documents["daily_activity"][first]), "id": "redone-1", "steps": 23456}
    )
    wait_until(lambda: steps() == 23456, timeout=30)
    oura.remove("daily_activity", first)
    runs = wait_until(lambda: len(push_runs(connection)) == 2 and push_runs(connection), timeout=30)
    assert runs[1].outcome == "succeeded" and not runs[1].counts.get("activity_summaries", {}).get("deleted")
    assert steps() == 23456

    oura.remove("daily_activity", "redone-1")  # now the day's totals are gone at Oura

    wait_until(lambda: steps() != 23456, timeout=30)
    assert not Record.objects.filter(
        connection=connection, type="activity_summaries", external_id=day.isoformat()
    ).exists()
    runs = wait_until(lambda: len(push_runs(connection)) == 3 and push_runs(connection), timeout=30)
    assert runs[2].counts["activity_summaries"]["deleted"] == 1
    event = wait_until(lambda: deleted_events(receiver, "oura", "activity_summaries"), timeout=30)[0]
    assert event["dataTypes"]["activity_summaries"]["deleted"] == 1


# --- subscriptions, verification, the schedule ----------------------------------------------------


def test_it_remakes_a_vanished_subscription_and_renews_expiring_ones(
    pushing: LiveStack, strava: StravaEmulator, oura: OuraEmulator
) -> None:
    [old] = list(strava.subscriptions)
    del strava.subscriptions[old]  # gone at Strava (deleted by hand, say)
    soon = next(iter(oura.webhooks.values()))
    soon["expires"] = datetime.now(UTC) + timedelta(days=2)
    PushSubscription.objects.filter(provider_id=soon["id"]).update(expires_at=soon["expires"])
    out = io.StringIO()

    call_command("push_subscriptions", stdout=out, stderr=io.StringIO())  # as beat does

    [new] = list(strava.subscriptions)
    shown = [json.loads(line) for line in out.getvalue().splitlines()]
    [strava_row] = [row for row in shown if row["source"] == "strava"]
    assert {"topic": "", "status": "active", "provider_id": str(new)}.items() <= strava_row.items()
    assert len(shown) == 1 + 21 + 1 + 1 and GOOGLE_SECRET not in out.getvalue()
    assert new != old
    row = PushSubscription.objects.get(source="strava")
    assert row.provider_id == str(new) and row.status == PushStatus.ACTIVE and row.verified_at is not None
    assert soon["expires"] > datetime.now(UTC) + timedelta(days=80)
    assert PushSubscription.objects.get(provider_id=soon["id"]).expires_at == soon["expires"]
    assert len(oura.webhooks) == OURA_TOPICS  # nothing made twice
    refused = PushSubscription.objects.get(source="oura", topic="heartrate/create")
    assert refused.status == PushStatus.UNSUPPORTED and "heartrate" in refused.error


def test_polling_only_reconciles_while_push_is_healthy(pushing: LiveStack, alice: Persona, settings: Any) -> None:
    strava_connection, oura_connection = connect(alice, "strava"), connect(alice, "oura")
    now = timezone.now()
    # Strava announces every type it has; Oura sends nothing for heart rate, so it is still polled.
    assert strava_connection.next_sync_at > now + timedelta(seconds=settings.PUSH_RECONCILE_INTERVAL - 60)
    assert oura_connection.next_sync_at < now + timedelta(seconds=settings.SYNC_INTERVAL + 60)

    # A subscription made long ago that has heard nothing since is no longer relied on.
    stale = now - timedelta(seconds=settings.PUSH_RECONCILE_INTERVAL + 60)
    PushSubscription.objects.filter(source="strava").update(verified_at=stale, last_event_at=None)
    again = connection_sync(connection_id=strava_connection.pk)
    assert again is not None
    assert Connection.objects.get(pk=strava_connection.pk).next_sync_at < now + timedelta(seconds=3700)


def test_a_change_for_a_busy_connection_is_remembered(
    pushing: LiveStack, strava: StravaEmulator, alice: Persona
) -> None:
    connection = connect(alice, "strava")
    item = synthetic(20_000_000_077, datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1), "UTC", "Ride")
    strava.put(item)  # (no event: the change is handed over here, as a worker would)
    Connection.objects.filter(pk=connection.pk).update(sync_claim="running", sync_claimed_at=timezone.now())

    assert connection_push(connection_id=connection.pk, change=Change("activity", "20000000077", "create")) is None
    assert Connection.objects.get(pk=connection.pk).sync_requested  # the running sync goes once more

    assert release_sync(connection.pk, "running") is True  # the busy sync sees it: it runs once more
    drop_claim(connection.pk, "running")  # then ends; the worker's retry of the change comes

    run = connection_push(connection_id=connection.pk, change=Change("activity", "20000000077", "create"))

    assert run is not None and run.kind == "push" and run.counts["activities"]["created"] == 1
    assert Record.objects.filter(connection=connection, external_id="20000000077").exists()


def test_the_verification_request_is_answered_only_for_our_token(settings: Any, strava_settings: None) -> None:
    PushSubscription.objects.create(source="strava", status=PushStatus.PENDING, verify_token_hash=token_hash("ours"))
    client = Client()

    ok = client.get("/hooks/strava", {"hub.mode": "subscribe", "hub.challenge": "c-1", "hub.verify_token": "ours"})
    wrong = client.get("/hooks/strava", {"hub.mode": "subscribe", "hub.challenge": "c-1", "hub.verify_token": "x"})
    bare = client.get("/hooks/strava")

    assert ok.status_code == 200 and ok.json() == {"hub.challenge": "c-1"}
    assert PushSubscription.objects.get(source="strava").verified_at is not None
    assert wrong.status_code == 403 and wrong.json()["statusCode"] == 403 and "c-1" not in wrong.content.decode()
    assert bare.status_code == 400 and bare.json()["error"] == "Bad Request"


def test_the_hook_refuses_what_is_not_a_notification(settings: Any, strava_settings: None) -> None:
    client = Client(enforce_csrf_checks=True)

    assert client.post("/hooks/humanity", b"{}", content_type="application/json").status_code == 404
    assert client.post("/hooks/nothing", b"{}", content_type="application/json").status_code == 404
    big = client.post("/hooks/strava", b"x" * 300_000, content_type="application/json")
    assert big.status_code == 413 and big.json()["statusCode"] == 413
    put = client.put("/hooks/strava", b"{}", content_type="application/json")
    assert put.status_code == 405 and put["Allow"] == "GET, HEAD, POST"
    # Not a subscription of ours, whatever it says: answered (Strava would retry), nothing kept.
    body = json.dumps({"object_type": "activity", "object_id": 1, "aspect_type": "create", "owner_id": 2,
                       "subscription_id": 3, "updates": {}, "event_time": 4})  # fmt: skip
    assert client.post("/hooks/strava", body, content_type="application/json").status_code == 200
    assert not PushEvent.objects.exists()
    settings.SOURCES_ENABLED = ["oura"]
    assert client.get("/hooks/strava").status_code == 404  # a source the operator disabled


def test_a_burst_of_notifications_for_one_connection_becomes_one_sync(
    settings: Any, strava_settings: None, alice: Persona
) -> None:
    settings.RATE_LIMIT_PUSH_PER_CONNECTION, settings.RATE_LIMIT_WINDOW = 2, 3600
    credentials = Credentials(data={"access_token": "a"}, external_user_id="134815")
    connection = connection_store(human=alice.human, slug="strava", credentials=credentials, request=None)
    Connection.objects.filter(pk=connection.pk).update(next_sync_at=timezone.now() + timedelta(hours=1))
    PushSubscription.objects.create(source="strava", status=PushStatus.ACTIVE, provider_id="77")
    event = {"object_type": "activity", "object_id": 5, "aspect_type": "update", "owner_id": 134815,
             "subscription_id": 77, "updates": {"title": "x"}}  # fmt: skip
    client = Client()

    answers = [
        client.post("/hooks/strava", json.dumps({**event, "event_time": n}), content_type="application/json").json()
        for n in range(4)
    ]

    assert [a["received"] for a in answers] == [1, 1, 0, 0]  # two fetches, then none
    assert Connection.objects.get(pk=connection.pk).next_sync_at <= timezone.now()  # a sync instead


@pytest.fixture
def strava_settings(settings: Any) -> None:
    settings.SOURCE_SETTINGS = {"SOURCE_STRAVA_CLIENT_ID": "1", "SOURCE_STRAVA_CLIENT_SECRET": "s"}


@pytest.mark.parametrize(
    "value",
    ["ftp://api.example.com", "https://", "https://api.example.com/?x=1", "https://u:p@api.example.com", "https://a:b"],
)
def test_a_malformed_public_base_url_fails_the_system_checks(settings: Any, value: str) -> None:
    settings.PUBLIC_BASE_URL = value
    messages = [m.msg for m in checks.run_checks(tags=["sources"]) if m.is_serious()]
    assert any("PUBLIC_BASE_URL" in m for m in messages), messages


def test_a_new_withings_connection_is_subscribed_at_once_not_at_the_next_check(
    pushing: LiveStack, withings: WithingsEmulator, alice: Persona, charlie: Persona, settings: Any
) -> None:
    # What a worker does with the tasks a new connection sends (its history sync, its
    # subscription), done here, in this process, as they are sent.
    app.conf.task_always_eager = True
    try:
        connection = connect(alice, "withings")
        settings.PUBLIC_BASE_URL = ""  # push not set up: polled only, nothing to subscribe
        unsubscribed = connect(charlie, "withings")
    finally:
        app.conf.task_always_eager = False

    settings.PUBLIC_BASE_URL = pushing.base_url
    current = token_hash(callback_url("withings", per_user=True))[:16]
    assert connection.cursor.get(push.SUBSCRIBED_KEY) == current  # subscribed by the connect itself
    assert {s["appli"] for s in withings.subscriptions} == {1, 2, 4, 16, 44, 46}
    assert push.SUBSCRIBED_KEY not in unsubscribed.cursor
    assert push_maintain()["withings"] == "checked; 1 connection(s) to subscribe"  # charlie's, at the next check
