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
from django.utils import timezone

from connect.models import Application
from data_api.models import DeliveryAttempt, Notification
from data_api.notifications import (
    DELIVERY_TIMEOUT,
    RETRY_FOR,
    _claim,
    deliver,
    next_delay,
    notify_connection_event,
    signature_header,
)
from data_api.tasks import enqueue_due_notifications
from sources.models import Connection, SyncRun
from sources.services import connection_disconnect
from sources.sync import connection_sync, mark_reauth_required
from tests.conftest import Persona
from tests.data_api_helpers import stored_counts
from tests.emulators.webhook_receiver import WebhookReceiver, running_receiver, verify_signature
from tests.factories import make_application, make_connection
from tests.live import LiveStack, wait_until

EVENT_KEYS = {"eventId", "eventType", "humanId", "clientUserId", "source", "dataTypes", "timestamp"}


@pytest.fixture
def receiver(alice: Persona) -> Iterator[WebhookReceiver]:
    """Alice's webhook endpoint, set as her application's notify URL."""
    with running_receiver(alice.app.webhook_secret) as running:
        Application.objects.filter(pk=alice.app.application.pk).update(notify_url=running.url)
        alice.app.application.notify_url = running.url
        alice.human.application.notify_url = running.url
        yield running


def connection_of(persona: Persona) -> Connection:
    connection = make_connection(persona.human)
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
    [attempt] = DeliveryAttempt.objects.filter(notification=notification)
    assert attempt.status_code == 200 and attempt.error == ""
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
    assert DELIVERY_TIMEOUT <= elapsed < DELIVERY_TIMEOUT + 2
    attempt = DeliveryAttempt.objects.get(notification=notification)
    assert attempt.error == "no answer within 3 s" and attempt.status_code is None
    assert 2900 <= attempt.duration_ms < 5000


def test_it_cuts_off_a_receiver_that_trickles_its_answer_after_3_seconds(alice: Persona) -> None:
    """A receiver that sends its status line a byte at a time keeps every socket read short:
    only an overall deadline frees the worker."""
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def trickle() -> None:
        peer, _ = server.accept()
        with peer:
            peer.recv(65536)  # the request
            for byte in b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" * 4:
                if stop.wait(0.4):
                    return
                with contextlib.suppress(OSError):
                    peer.sendall(bytes([byte]))

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.getsockname()[1]}/hooks/humanapi"
    Application.objects.filter(pk=alice.app.application.pk).update(notify_url=url)
    alice.human.application.notify_url = url
    notification = notify_connection_event(connection_of(alice), "source.connected")
    assert notification is not None
    try:
        started = time.monotonic()
        assert deliver(notification.pk) is False
        elapsed = time.monotonic() - started
    finally:
        stop.set()
        server.close()
    assert DELIVERY_TIMEOUT <= elapsed < DELIVERY_TIMEOUT + 1
    attempt = DeliveryAttempt.objects.get(notification=notification)
    assert attempt.error == "no answer within 3 s" and attempt.status_code is None
    notification.refresh_from_db()
    assert notification.next_attempt_at is not None and notification.gave_up_at is None  # retried later


def test_it_lets_only_one_worker_take_an_attempt(alice: Persona, receiver: WebhookReceiver) -> None:
    receiver.status = 500
    notification = notify_connection_event(connection_of(alice), "source.connected")
    assert notification is not None
    stale = Notification.objects.get(pk=notification.pk)  # what a second worker loaded
    assert deliver(notification.pk) is False
    assert _claim(stale, timezone.now()) is False
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
    assert time.monotonic() - started < DELIVERY_TIMEOUT
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
        assert took < DELIVERY_TIMEOUT, f"the sync took {took:.1f} s"

        def timed_out() -> DeliveryAttempt | None:
            return DeliveryAttempt.objects.filter(
                notification__application=created.application, notification__event_type="data.updated"
            ).first()

        attempt: DeliveryAttempt = wait_until(timed_out, timeout=30, message="the slow delivery attempt")
    assert attempt.error == "no answer within 3 s" and 2900 <= attempt.duration_ms < 6000
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
    assert len(bindings) == len(app.amqp.queues) == 2


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
