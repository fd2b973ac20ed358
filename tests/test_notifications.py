"""Webhooks (CONTRACT §8), delivered to a real HTTP receiver that checks signatures as a client
app would."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import requests
from django.conf import LazySettings
from django.db.models import F
from django.test import Client
from django.utils import timezone

from connect.audit import audit, deleted_user_marker
from connect.models import Actor, Application, AuditEntry, Human
from data_api.app_services import app_user_delete
from data_api.models import AttemptOutcome, DeliveryAttempt, Notification
from data_api.notifications import (
    RETRY_FOR,
    _claim,
    deliver,
    delivery_timeout,
    next_delay,
    notify_connection_event,
    signature_header,
)
from data_api.tasks import enqueue_due_notifications
from sources.models import Connection, SyncRun
from sources.services import connection_disconnect
from sources.sync import connection_sync, mark_reauth_required
from tests.app_client import app_call
from tests.conftest import Persona
from tests.data_api_helpers import stored_counts
from tests.emulators.webhook_receiver import WebhookReceiver, running_receiver, verify_signature
from tests.factories import make_application, make_connection, make_human
from tests.live import LiveStack, wait_until

EVENT_KEYS = {
    "eventId",
    "eventType",
    "humanId",
    "clientUserId",
    "sequence",
    "source",
    "dataTypes",
    "changedAt",
    "timestamp",
}


@pytest.fixture
def receiver(alice: Persona) -> Iterator[WebhookReceiver]:
    """Alice's webhook endpoint, set as her application's notify URL."""
    with running_receiver(alice.app.webhook_secret) as running:
        Application.objects.filter(pk=alice.app.application.pk).update(notify_url=running.url)
        alice.app.application.notify_url = running.url
        alice.human.application.notify_url = running.url
        yield running


def connection_of(persona: Persona) -> Connection:
    return connection_of_human(persona.human)


def connection_of_human(human: Human) -> Connection:
    connection = make_connection(human)
    return Connection.objects.select_related("human__application").get(pk=connection.pk)


def test_it_signs_the_raw_body_with_the_webhook_secret() -> None:
    body = b'{"eventId":"e1"}'
    header = signature_header("whsec_test", body, at=1767225600)
    assert re.fullmatch(r"t=1767225600,v1=[0-9a-f]{64}", header)
    assert verify_signature("whsec_test", header, body, now=1767225600)
    assert not verify_signature("whsec_other", header, body, now=1767225600)
    assert not verify_signature("whsec_test", header, body + b" ", now=1767225600)
    assert not verify_signature("whsec_test", header, body, now=1767225600 + 3600)  # replayed an hour later


def test_it_delivers_a_signed_event_the_receiver_verifies(alice: Persona, receiver: WebhookReceiver) -> None:
    connection = connection_of(alice)
    notification = notify_connection_event(connection, "source.connected")
    assert notification is not None

    assert deliver(notification.pk) is True

    [delivery] = receiver.deliveries
    assert delivery.signature_valid
    assert delivery.headers["Content-Type"] == "application/json"
    assert delivery.headers["X-Humanapi-Event"] == "source.connected"
    event = delivery.event
    assert set(event) == EVENT_KEYS
    assert event["eventId"] == notification.event_id and event["eventType"] == "source.connected"
    assert event["humanId"] == alice.human.pk and event["clientUserId"] == "alice-user-1"
    assert event["source"] == "demo" and event["dataTypes"] == {}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", event["timestamp"])
    assert event["sequence"] == 1 and event["changedAt"] == event["timestamp"]  # raised as it changed
    [attempt] = DeliveryAttempt.objects.filter(notification=notification)
    assert attempt.status_code == 200 and attempt.error == ""
    assert attempt.number == 1 and attempt.outcome == AttemptOutcome.DELIVERED
    notification.refresh_from_db()
    assert notification.delivered_at is not None and notification.next_attempt_at is None
    assert notification.attempts == 1
    assert deliver(notification.pk) is None  # delivered once, never again
    assert len(receiver.deliveries) == 1


def test_it_counts_a_receiver_that_rejects_the_signature_as_a_failure(alice: Persona) -> None:
    with running_receiver("not-the-webhook-secret") as stranger:
        Application.objects.filter(pk=alice.app.application.pk).update(notify_url=stranger.url)
        connection = connection_of(alice)
        notification = notify_connection_event(connection, "source.connected")
        assert notification is not None
        assert deliver(notification.pk) is False
    assert DeliveryAttempt.objects.get(notification=notification).error == "answered HTTP 401"


def test_it_retries_a_failing_receiver_with_growing_delays(alice: Persona, receiver: WebhookReceiver) -> None:
    receiver.status = 503
    notification = notify_connection_event(connection_of(alice), "source.connected")
    assert notification is not None
    waits = []
    for _ in range(3):
        before = timezone.now()
        assert deliver(notification.pk) is False
        notification.refresh_from_db()
        assert notification.next_attempt_at is not None
        waits.append(round((notification.next_attempt_at - before).total_seconds()))
    assert waits == [30, 60, 120]
    attempts = list(DeliveryAttempt.objects.filter(notification=notification).order_by("id"))
    assert [(a.status_code, a.error) for a in attempts] == [(503, "answered HTTP 503")] * 3
    assert [(a.number, a.outcome) for a in attempts] == [(n, AttemptOutcome.STATUS) for n in (1, 2, 3)]
    assert all(a.duration_ms < 3000 for a in attempts)
    assert notification.attempts == 3 and notification.delivered_at is None and notification.gave_up_at is None

    receiver.status = 200
    assert deliver(notification.pk) is True
    assert len(receiver.deliveries) == 4
    assert len({d.event["eventId"] for d in receiver.deliveries}) == 1  # the receiver dedupes by eventId


def test_it_keeps_retrying_for_more_than_a_day_then_gives_up(alice: Persona, receiver: WebhookReceiver) -> None:
    schedule, attempts = timedelta(0), 0
    while schedule < timedelta(hours=24):
        attempts += 1
        schedule += next_delay(attempts)
    assert 12 < attempts < 40  # a day of backoff in a few dozen attempts, never a flood
    assert timedelta(hours=24) < RETRY_FOR

    receiver.status = 500
    notification = notify_connection_event(connection_of(alice), "source.connected")
    assert notification is not None
    Notification.objects.filter(pk=notification.pk).update(created_at=timezone.now() - timedelta(hours=23))
    assert deliver(notification.pk) is False
    notification.refresh_from_db()
    assert notification.gave_up_at is None and notification.next_attempt_at is not None

    Notification.objects.filter(pk=notification.pk).update(created_at=timezone.now() - RETRY_FOR - timedelta(minutes=1))
    assert deliver(notification.pk) is False
    notification.refresh_from_db()
    assert notification.gave_up_at is not None and notification.next_attempt_at is None
    assert deliver(notification.pk) is None
    assert DeliveryAttempt.objects.filter(notification=notification).count() == 2


def test_it_stops_waiting_for_a_slow_receiver_after_3_seconds(alice: Persona, receiver: WebhookReceiver) -> None:
    receiver.delay = 10
    notification = notify_connection_event(connection_of(alice), "source.connected")
    assert notification is not None
    started = time.monotonic()
    assert deliver(notification.pk) is False
    elapsed = time.monotonic() - started
    assert delivery_timeout() <= elapsed < delivery_timeout() + 2
    attempt = DeliveryAttempt.objects.get(notification=notification)
    assert attempt.error == "no answer within 3 s" and attempt.status_code is None
    assert attempt.outcome == AttemptOutcome.TIMEOUT
    assert 2900 <= attempt.duration_ms < 5000


class TricklingReceiver:
    """A receiver on a raw socket (threaded, a connection each): it reads each request whole,
    then either trickles an answer, one byte every `every` seconds, never finishing (from the
    status line on, or with `whole_headers` from the body on), or, once `answering`, answers
    200 at once. It keeps every request it read and every one it answered."""

    ANSWER = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"

    def __init__(self, every: float = 0.5) -> None:
        self.every, self.answering, self.whole_headers = every, False, False
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.answered: list[tuple[dict[str, str], bytes]] = []
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(0.1)
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}/hooks/humanapi"
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.accept, daemon=True)
        self.thread.start()

    def accept(self) -> None:
        while not self.stop.is_set():
            with contextlib.suppress(TimeoutError):
                peer, _ = self.server.accept()
                threading.Thread(target=self.serve, args=(peer,), daemon=True).start()

    def serve(self, peer: socket.socket) -> None:
        with peer, contextlib.suppress(OSError):
            peer.settimeout(5)
            raw = b""
            while b"\r\n\r\n" not in raw:
                raw += peer.recv(65536)
            head, body = raw.split(b"\r\n\r\n", 1)
            lines = head.decode("latin-1").split("\r\n")[1:]
            headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
            while len(body) < int(headers.get("content-length", "0")):
                body += peer.recv(65536)
            self.requests.append((headers, body))
            if self.answering:
                self.answered.append((headers, body))
                peer.sendall(self.ANSWER)
                return
            head, body = self.ANSWER.split(b"\r\n\r\n")
            if self.whole_headers:
                peer.sendall(head.replace(b"Content-Length: 2", b"Content-Length: 100") + b"\r\n\r\n")
            for byte in body * 50 if self.whole_headers else head:  # never the whole answer
                peer.sendall(bytes([byte]))
                if self.stop.wait(self.every):
                    return

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        self.server.close()


@contextlib.contextmanager
def trickling_receiver_of(persona: Persona) -> Iterator[TricklingReceiver]:
    receiver = TricklingReceiver()
    Application.objects.filter(pk=persona.app.application.pk).update(notify_url=receiver.url)
    persona.human.application.notify_url = receiver.url
    try:
        yield receiver
    finally:
        receiver.close()


def time_passes_until_due(notification: Notification) -> timedelta:
    """The scheduled wait goes by: the event is that much older, and its next attempt is due."""
    notification.refresh_from_db()
    assert notification.next_attempt_at is not None
    wait = notification.next_attempt_at - timezone.now()
    Notification.objects.filter(pk=notification.pk).update(
        created_at=F("created_at") - wait, next_attempt_at=timezone.now()
    )
    return wait


def test_it_cuts_off_a_trickling_receiver_and_retries_it_as_the_contract_says_then_fails(
    alice: Persona, client: Client, settings: LazySettings
) -> None:
    """A receiver that sends its answer a byte every 0.5 s keeps every socket read short: only
    the attempt's overall deadline frees the worker. Each attempt is recorded; the backoff goes
    on for more than 24 h (CONTRACT §8), then the notification is failed, in the audit log."""
    with trickling_receiver_of(alice) as hook:
        notification = notify_connection_event(connection_of(alice), "source.connected")
        assert notification is not None
        started = time.monotonic()
        assert deliver(notification.pk) is False
        elapsed = time.monotonic() - started
        assert 3 <= elapsed < 4
        first = DeliveryAttempt.objects.get(notification=notification)
        assert (first.number, first.outcome, first.status_code) == (1, AttemptOutcome.TIMEOUT, None)
        assert first.error == "no answer within 3 s" and 2900 <= first.duration_ms < 4000
        [(headers, body)] = hook.requests  # it was sent, signed; the answer never came
        assert verify_signature(alice.app.webhook_secret, headers["x-humanapi-signature"], body)

        settings.NOTIFY_TIMEOUT_SECONDS = 0.3  # the rest of the schedule, with shorter attempts
        waits = []
        while Notification.objects.filter(pk=notification.pk, gave_up_at__isnull=True).exists():
            waits.append(round(time_passes_until_due(notification).total_seconds()))
            assert deliver(notification.pk) is False
        assert deliver(notification.pk) is None
        assert not hook.answered

    expected: list[int] = []
    elapsed_s = 0
    while elapsed_s <= RETRY_FOR.total_seconds():
        expected.append(round(next_delay(len(expected) + 1).total_seconds()))
        elapsed_s += expected[-1]
    assert waits == expected  # 30 s, 1 min, 2 min, ... 2 h, 2 h, ...
    assert sum(waits) > 24 * 3600 and len(waits) + 1 == 21
    attempts = list(DeliveryAttempt.objects.filter(notification=notification).order_by("id"))
    assert [a.number for a in attempts] == list(range(1, len(waits) + 2))
    assert {a.outcome for a in attempts} == {AttemptOutcome.TIMEOUT}
    assert all(a.duration_ms < 1000 for a in attempts[1:])
    assert len(hook.requests) == len(attempts)
    notification.refresh_from_db()
    assert notification.gave_up_at is not None and notification.next_attempt_at is None
    assert notification.delivered_at is None and notification.attempts == len(attempts)

    response = app_call(client, alice, "GET", "audit?action=notification.failed")
    assert response.status_code == 200
    [entry] = response.json()
    assert entry["actor"] == "system" and entry["humanId"] == alice.human.pk
    assert entry["details"] == {
        "event_id": notification.event_id,
        "event_type": "source.connected",
        "attempts": len(attempts),
        "last_outcome": "timeout",
        "last_error": "no answer within 0.3 s",
    }


def test_it_cuts_off_a_receiver_that_answers_at_once_but_trickles_the_body(
    alice: Persona, settings: LazySettings
) -> None:
    settings.NOTIFY_TIMEOUT_SECONDS = 1.5
    with trickling_receiver_of(alice) as hook:
        hook.whole_headers = True
        notification = notify_connection_event(connection_of(alice), "source.connected")
        assert notification is not None
        started = time.monotonic()
        assert deliver(notification.pk) is False
        elapsed = time.monotonic() - started
    assert 1.5 <= elapsed < 2.5
    attempt = DeliveryAttempt.objects.get(notification=notification)
    assert attempt.outcome == AttemptOutcome.TIMEOUT and attempt.error == "no answer within 1.5 s"


def test_a_receiver_that_comes_back_gets_the_event_exactly_once(alice: Persona, settings: LazySettings) -> None:
    settings.NOTIFY_TIMEOUT_SECONDS = 1
    with trickling_receiver_of(alice) as hook:
        notification = notify_connection_event(connection_of(alice), "source.connected")
        assert notification is not None
        assert deliver(notification.pk) is False
        time_passes_until_due(notification)
        assert deliver(notification.pk) is False

        hook.answering = True  # back to health
        time_passes_until_due(notification)
        assert deliver(notification.pk) is True

        assert enqueue_due_notifications() == 0  # beat has nothing more to send
        assert deliver(notification.pk) is None  # nor has a late or duplicated task
        [(headers, body)] = hook.answered
        assert len(hook.requests) == 3
    assert verify_signature(alice.app.webhook_secret, headers["x-humanapi-signature"], body)
    event = json.loads(body)
    assert event["eventId"] == notification.event_id and event["clientUserId"] == "alice-user-1"
    attempts = DeliveryAttempt.objects.filter(notification=notification).order_by("id")
    assert [(a.number, a.outcome, a.status_code) for a in attempts] == [
        (1, AttemptOutcome.TIMEOUT, None),
        (2, AttemptOutcome.TIMEOUT, None),
        (3, AttemptOutcome.DELIVERED, 200),
    ]


def test_it_records_an_attempt_whose_worker_stopped_and_sends_it_again(
    alice: Persona, receiver: WebhookReceiver
) -> None:
    notification = notify_connection_event(connection_of(alice), "source.connected")
    assert notification is not None
    assert _claim(notification, timezone.now()) is not None  # ... and the worker is killed here
    [lost] = DeliveryAttempt.objects.filter(notification=notification)
    assert (lost.number, lost.outcome) == (1, AttemptOutcome.UNFINISHED)
    Notification.objects.filter(pk=notification.pk).update(next_attempt_at=timezone.now())  # the lease ran out
    assert enqueue_due_notifications() == 1
    assert deliver(notification.pk) is True
    attempts = DeliveryAttempt.objects.filter(notification=notification).order_by("id")
    assert [(a.number, a.outcome) for a in attempts] == [(1, "unfinished"), (2, "delivered")]
    assert len(receiver.deliveries) == 1


def test_it_refuses_a_bad_notify_timeout_at_startup(settings: LazySettings) -> None:
    from django.core import checks

    from tests.test_configuration import run

    checked = run(["manage.py", "check"], NOTIFY_TIMEOUT_SECONDS="soon")
    assert checked.returncode != 0
    assert "NOTIFY_TIMEOUT_SECONDS must be a number of seconds above 0 and at most 30, got 'soon'" in checked.stderr
    bad: list[object] = ["0", "-1", "31", "nan", "inf", None, True]
    for value in bad:
        settings.NOTIFY_TIMEOUT_SECONDS = value
        assert [m.id for m in checks.run_checks(tags=["notifications"])] == ["data_api.E001"], value
    good: list[object] = ["2.5", 3, 30]
    for value in good:
        settings.NOTIFY_TIMEOUT_SECONDS = value
        assert checks.run_checks(tags=["notifications"]) == [], value


# --- a deleted user ----------------------------------------------------------------------------


def test_deleting_a_user_drops_their_queued_events_and_leaves_no_external_id(
    client: Client, alice: Persona, receiver: WebhookReceiver
) -> None:
    human_id, external_id, email = alice.human.pk, alice.human.client_user_id, alice.human.email
    connection = connection_of(alice)
    sent = notify_connection_event(connection, "source.connected")
    assert sent is not None and deliver(sent.pk) is True
    queued = notify_connection_event(connection, "source.reauth_required")
    receiver.status = 503
    retrying = notify_connection_event(connection, "sync.failed", error="provider down")
    assert retrying is not None and deliver(retrying.pk) is False
    bob = make_human(alice.app, "bob-user-2", "bob@example.com")
    bobs = notify_connection_event(connection_of_human(bob), "source.connected")
    # An entry that named the user in its details (written by an admin change, say).
    audit("user.note", actor=Actor.OPERATOR, application=alice.app.application, human_id=human_id, email=email)

    assert app_call(client, alice, "DELETE", f"users/{human_id}").status_code == 204

    assert queued is not None and bobs is not None
    assert not Notification.objects.filter(pk__in=[queued.pk, retrying.pk]).exists()
    assert not DeliveryAttempt.objects.filter(notification_id=retrying.pk).exists()
    kept = Notification.objects.get(pk=sent.pk)  # the record of what was sent stays, naming nobody
    assert kept.delivered_at is not None and kept.payload["humanId"] == human_id
    assert Notification.objects.filter(pk=bobs.pk, delivered_at__isnull=True).exists()  # another user's waits
    stored = json.dumps(
        [
            list(Notification.objects.values_list("payload", flat=True)),
            list(DeliveryAttempt.objects.values_list("error", flat=True)),
            list(AuditEntry.objects.values_list("action", "details")),
        ]
    )
    assert external_id not in stored and email not in stored
    marker = deleted_user_marker(human_id)
    assert marker.startswith("deleted user ") and human_id not in marker
    entries = app_call(client, alice, "GET", f"audit?humanId={human_id}").json()
    by_action = {e["action"]: e for e in entries}
    assert by_action["user.deleted"]["details"]["external_id"] == marker
    assert by_action["user.note"]["details"] == {"email": marker}
    assert {"connection.connected", "user.note", "user.deleted"} <= set(by_action)  # the events stay


def test_an_event_raised_after_the_user_was_deleted_is_dropped_not_sent(
    alice: Persona, receiver: WebhookReceiver
) -> None:
    """A sync still running when its user is deleted may raise an event after the erasure: it is
    dropped when its attempt comes, never sent with the user's external id."""
    connection = connection_of(alice)  # what the running sync holds
    app_user_delete(human=alice.human, request=None)

    late = notify_connection_event(connection, "sync.failed", error="stopped")
    assert late is not None and "clientUserId" not in late.payload

    assert deliver(late.pk) is None
    assert not Notification.objects.filter(pk=late.pk).exists()
    assert receiver.deliveries == []


def test_it_lets_only_one_worker_take_an_attempt(alice: Persona, receiver: WebhookReceiver) -> None:
    receiver.status = 500
    notification = notify_connection_event(connection_of(alice), "source.connected")
    assert notification is not None
    stale = Notification.objects.get(pk=notification.pk)  # what a second worker loaded
    assert deliver(notification.pk) is False
    assert _claim(stale, timezone.now()) is None
    assert len(receiver.deliveries) == 1


def test_it_enqueues_due_notifications_from_beat(alice: Persona, receiver: WebhookReceiver) -> None:
    notification = notify_connection_event(connection_of(alice), "source.connected")
    assert notification is not None
    Notification.objects.filter(pk=notification.pk).update(next_attempt_at=timezone.now() - timedelta(seconds=1))
    assert enqueue_due_notifications() == 1
    notification.refresh_from_db()
    assert notification.next_attempt_at is not None and notification.next_attempt_at > timezone.now()
    assert enqueue_due_notifications() == 0  # leased: the next beat doesn't publish it again


def test_it_gives_up_when_the_notify_url_was_removed(alice: Persona, receiver: WebhookReceiver) -> None:
    notification = notify_connection_event(connection_of(alice), "source.connected")
    assert notification is not None
    Application.objects.filter(pk=alice.app.application.pk).update(notify_url="")
    assert deliver(notification.pk) is False
    notification.refresh_from_db()
    assert notification.gave_up_at is not None and not receiver.deliveries


def test_it_sends_nothing_for_an_application_without_a_notify_url(alice: Persona) -> None:
    assert notify_connection_event(connection_of(alice), "source.connected") is None
    assert not Notification.objects.exists()


def test_it_reports_per_type_counts_after_a_sync(
    alice: Persona, receiver: WebhookReceiver, settings: LazySettings
) -> None:
    settings.DEMO_HISTORY_DAYS = 2
    connection = connection_of(alice)
    run = connection_sync(connection_id=connection.pk)
    assert run is not None
    notification = Notification.objects.get(event_type="data.updated")
    stored = stored_counts(connection=connection)
    assert {k: v["created"] for k, v in notification.payload["dataTypes"].items()} == stored
    assert deliver(notification.pk) is True
    assert receiver.events("data.updated")[0]["dataTypes"] == changes(run.counts)

    connection_sync(connection_id=connection.pk)  # nothing changed: no event
    assert Notification.objects.filter(event_type="data.updated").count() == 1


def test_it_notifies_each_connection_state_change(
    alice: Persona, receiver: WebhookReceiver, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        connection = connection_of(alice)
    mark_reauth_required(connection, "refresh refused")
    with django_capture_on_commit_callbacks(execute=True):
        connection_disconnect(connection=connection, actor="end_user", request=None)
    kinds = list(Notification.objects.order_by("id").values_list("event_type", flat=True))
    assert kinds == ["source.connected", "source.reauth_required", "source.disconnected"]
    for notification in Notification.objects.all():
        deliver(notification.pk)
    assert [e["eventType"] for e in receiver.events()] == kinds


def test_it_never_makes_a_sync_wait_for_the_receiver(
    alice: Persona, receiver: WebhookReceiver, settings: LazySettings, django_capture_on_commit_callbacks: Any
) -> None:
    """In process: the sync publishes the delivery (to the broker) and returns; it never calls
    the receiver itself. The live test below shows the same with the real worker."""
    receiver.delay = 10
    settings.DEMO_HISTORY_DAYS = 2
    connection = connection_of(alice)
    started = time.monotonic()
    with django_capture_on_commit_callbacks(execute=True):
        connection_sync(connection_id=connection.pk)
    assert time.monotonic() - started < delivery_timeout()
    assert Notification.objects.filter(event_type="data.updated", delivered_at__isnull=True).count() == 1
    assert not receiver.deliveries


# --- with the live stack's real Celery worker --------------------------------------------------

STATE = re.compile(r'<script id="connect-state" type="application/json">(.*?)</script>', re.S)


def connect_demo_over_http(stack: LiveStack, client_id: str, client_secret: str, user: str) -> str:
    """What the client app's server and its user's browser do; returns the Human's id."""
    exchange = requests.post(
        stack.url("/v1/connect/token"),
        json={
            "client_id": client_id,
            "client_secret": client_secret,
            "type": "session",
            "client_user_id": user,
            "client_user_email": f"{user}@example.com",
        },
        timeout=10,
    )
    assert exchange.status_code == 200, exchange.text
    token, human_id = exchange.json()["session_token"], exchange.json()["human_id"]
    page = requests.get(stack.url("/connect/"), params={"token": token, "mode": "auth"}, timeout=10)
    match = STATE.search(page.text)
    assert match, "the Connect page carries its state as JSON"
    csrf = json.loads(match.group(1))["csrf"]
    form = {"token": token, "csrf": csrf, "username": "demouser", "password": "password"}
    connected = requests.post(stack.url("/connect/sources/demo/connect"), data=form, timeout=10)
    assert connected.status_code == 200, connected.text
    return str(human_id)


def finished_history_run(human_id: str) -> SyncRun:
    def finished() -> SyncRun | None:
        return SyncRun.objects.filter(connection__human_id=human_id, kind="history", finished_at__isnull=False).first()

    run: SyncRun = wait_until(finished, timeout=60, message="the history sync")
    return run


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_it_delivers_data_updated_from_the_real_worker(live_stack: LiveStack) -> None:
    created = make_application("Webhooks app")
    with running_receiver(created.webhook_secret) as hook:
        Application.objects.filter(pk=created.application.pk).update(notify_url=hook.url)
        human_id = connect_demo_over_http(live_stack, created.application.client_id, created.client_secret, "hook-1")

        events = wait_until(lambda: hook.events("data.updated"), timeout=60, message="a data.updated event")
        run = finished_history_run(human_id)
        wait_until(lambda: hook.events("source.connected"), timeout=30, message="a source.connected event")

    [event] = events
    assert all(d.signature_valid for d in hook.deliveries)
    assert sorted(e["sequence"] for e in hook.events()) == [1, 2]  # the Human's two events
    assert [e["sequence"] for e in hook.applied[human_id]] == [1, 2]
    assert event["humanId"] == human_id and event["clientUserId"] == "hook-1" and event["source"] == "demo"
    stored = stored_counts(human_id=human_id)
    assert stored["heart_rate"] > 1000
    assert event["dataTypes"] == {kind: {"created": n, "updated": 0, "deleted": 0} for kind, n in stored.items()}
    assert event["dataTypes"] == changes(run.counts)
    notification = Notification.objects.get(event_id=event["eventId"])
    assert notification.delivered_at is not None
    assert DeliveryAttempt.objects.get(notification=notification).status_code == 200


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_it_keeps_syncing_at_full_speed_while_the_receiver_sleeps(live_stack: LiveStack) -> None:
    """The receiver sleeps 10 s on every request. The sync never waits for it (each delivery
    would cost it at least the 3 s timeout); the worker gives up each attempt after 3 s and
    schedules the next one."""
    created = make_application("Slow receiver app")
    with running_receiver(created.webhook_secret, delay=10) as hook:
        Application.objects.filter(pk=created.application.pk).update(notify_url=hook.url)
        human_id = connect_demo_over_http(live_stack, created.application.client_id, created.client_secret, "slow-1")
        run = finished_history_run(human_id)
        assert run.finished_at is not None
        took = (run.finished_at - run.started_at).total_seconds()
        assert took < delivery_timeout(), f"the sync took {took:.1f} s"

        def timed_out() -> DeliveryAttempt | None:
            return (
                DeliveryAttempt.objects.filter(
                    notification__application=created.application, notification__event_type="data.updated"
                )
                .exclude(outcome=AttemptOutcome.UNFINISHED)
                .first()
            )

        attempt: DeliveryAttempt = wait_until(timed_out, timeout=30, message="the slow delivery attempt")
    assert attempt.error == "no answer within 3 s" and 2900 <= attempt.duration_ms < 6000
    assert attempt.outcome == AttemptOutcome.TIMEOUT and attempt.number == 1
    notification = attempt.notification
    notification.refresh_from_db()
    assert notification.delivered_at is None and notification.next_attempt_at is not None
    assert hook.events("data.updated")  # it was sent, signed, and the receiver got it


def test_it_shows_notifications_and_their_attempts_read_only_in_the_admin(
    alice: Persona, receiver: WebhookReceiver, admin_client: Any
) -> None:
    receiver.status = 502
    notification = notify_connection_event(connection_of(alice), "source.connected")
    assert notification is not None
    deliver(notification.pk)
    listing = admin_client.get("/admin/data_api/notification/")
    assert listing.status_code == 200 and notification.event_id in listing.content.decode()
    page = admin_client.get(f"/admin/data_api/notification/{notification.pk}/change/")
    assert page.status_code == 200
    assert "answered HTTP 502" in page.content.decode()
    assert 'name="_save"' not in page.content.decode()  # nothing to edit
    assert admin_client.get("/admin/data_api/notification/add/").status_code == 403
    assert admin_client.post(f"/admin/data_api/notification/{notification.pk}/delete/").status_code == 403
    assert Notification.objects.filter(pk=notification.pk).exists()


def test_it_routes_deliveries_to_their_own_queue() -> None:
    from django.conf import settings

    from humanapi_project.celery import app

    delivery = app.amqp.router.route({}, "data_api.tasks.deliver_notification")
    sync = app.amqp.router.route({}, "sources.tasks.sync_connection")
    assert delivery["queue"].name == settings.CELERY_NOTIFY_QUEUE
    assert sync["queue"].name == settings.CELERY_TASK_DEFAULT_QUEUE != settings.CELERY_NOTIFY_QUEUE
    # Two queues bound with the same exchange and key would each receive every message.
    bindings = {(q.exchange.name, q.routing_key) for q in app.amqp.queues.values()}
    assert len(bindings) == len(app.amqp.queues) == 3


def changes(counts: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    """A run's counts as a notification reports them (CONTRACT §8: created, updated, deleted)."""
    return {kind: {k: c[k] for k in ("created", "updated", "deleted")} for kind, c in counts.items()}


def test_it_refuses_to_notify_a_private_address_unless_allowed(
    alice: Persona, receiver: WebhookReceiver, settings: LazySettings
) -> None:
    settings.ALLOW_PRIVATE_NOTIFY_URLS = False
    notification = notify_connection_event(connection_of(alice), "source.connected")
    assert notification is not None
    assert deliver(notification.pk) is False
    assert receiver.deliveries == []  # nothing left this server
    [attempt] = DeliveryAttempt.objects.filter(notification=notification)
    assert attempt.status_code is None
    assert "resolves to 127.0.0.1, not a public address" in attempt.error

    settings.ALLOW_PRIVATE_NOTIFY_URLS = True
    Notification.objects.filter(pk=notification.pk).update(next_attempt_at=None)
    assert deliver(notification.pk) is True and len(receiver.deliveries) == 1


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:9/hook", "http://10.1.2.3/hook", "http://[::1]/h", "http://169.254.169.254/"]
)
def test_it_refuses_a_private_notify_url_when_an_application_is_created(url: str, settings: LazySettings) -> None:
    from django.core.management import CommandError, call_command

    from connect.admin import ApplicationCreateForm

    settings.ALLOW_PRIVATE_NOTIFY_URLS = False
    with pytest.raises(CommandError, match="not a public address"):
        call_command("create_application", "--name", "Bob's app", "--notify-url", url)
    form = ApplicationCreateForm(data={"name": "Bob's app", "allowed_origins": "", "notify_url": url})
    assert not form.is_valid() and "not a public address" in str(form.errors["notify_url"])
