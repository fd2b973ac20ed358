"""Notifications a receiver can order, deduplicate and verify (CONTRACT §8, README
"Notifications"): each Human's events are numbered 1, 2, 3, ... (`sequence`) with the time of the
change (`changedAt`), unchanged on retries; and an Application may have them signed as Human API
signs its own, so that a receiver written for Human API verifies them unchanged. Every delivery
goes over real HTTP to the receiver in tests/emulators/webhook_receiver.py."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from datetime import datetime
from io import StringIO
from typing import Any

import pytest
import requests
from django.conf import LazySettings
from django.core.management import CommandError, call_command
from django.db import IntegrityError, connection, connections, transaction
from django.db.migrations.executor import MigrationExecutor
from django.test import Client
from django.utils import timezone

from connect.models import Application, AuditEntry, SignatureMode
from connect.services import CreatedApplication, application_rotate_secret, authenticate_client
from data_api.models import AttemptOutcome, DeliveryAttempt, EventCounter, Notification
from data_api.notifications import deliver, humanapi_signature, notify_connection_event
from sources.models import Connection
from sources.sync import connection_sync
from tests.emulators.webhook_receiver import (
    WebhookReceiver,
    running_receiver,
    verify_humanapi_signature,
    verify_signature,
)
from tests.factories import Persona, make_application, make_connection, make_human

ISO_MS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def connection_for(human: Any) -> Connection:
    return Connection.objects.select_related("human__application").get(pk=make_connection(human).pk)


def point_at(app: CreatedApplication, receiver: WebhookReceiver) -> None:
    Application.objects.filter(pk=app.application.pk).update(notify_url=receiver.url)
    app.application.notify_url = receiver.url


@pytest.fixture
def receiver(alice: Persona) -> Iterator[WebhookReceiver]:
    with running_receiver(alice.app.webhook_secret) as running:
        point_at(alice.app, running)
        alice.human.application.notify_url = running.url
        yield running


def replay(delivery: Any, url: str, body: bytes | None = None) -> int:
    """POST a received request again, as an attacker who saw it would (optionally altered)."""
    headers = {k: v for k, v in delivery.headers.items() if k.lower().startswith("x-humanapi")}
    headers["Content-Type"] = "application/json"
    return requests.post(url, data=delivery.body if body is None else body, headers=headers, timeout=5).status_code


# --- sequence and changedAt --------------------------------------------------------------------


def test_each_humans_events_are_numbered_from_one_and_retries_resend_them_unchanged(
    alice: Persona, receiver: WebhookReceiver
) -> None:
    connection = connection_for(alice.human)
    bob = make_human(alice.app, "bob-user-2", "bob@example.com")
    raised = [
        notify_connection_event(connection, "source.connected"),
        notify_connection_event(connection_for(bob), "source.connected"),
        notify_connection_event(connection, "sync.failed", error="provider down"),
        notify_connection_event(connection, "source.disconnected"),
    ]
    assert all(raised)
    numbered = [(n.human_id, n.sequence, n.payload["sequence"]) for n in raised if n]
    assert numbered == [
        (alice.human.pk, 1, 1),
        (bob.pk, 1, 1),
        (alice.human.pk, 2, 2),
        (alice.human.pk, 3, 3),
    ]
    assert EventCounter.objects.get(human_id=alice.human.pk).last == 3

    failing = raised[2]
    assert failing is not None
    receiver.status = 503
    assert deliver(failing.pk) is False and deliver(failing.pk) is False
    receiver.status = 200
    assert deliver(failing.pk) is True
    bodies = [d.body for d in receiver.deliveries]
    assert len(bodies) == 3 and len(set(bodies)) == 1  # every attempt sends the same event
    event = json.loads(bodies[0])
    assert event["sequence"] == 2 and event["eventId"] == failing.event_id
    assert ISO_MS.fullmatch(event["changedAt"]) and ISO_MS.fullmatch(event["timestamp"])
    assert [d.signature_valid for d in receiver.deliveries] == [True, True, True]
    headers = [d.headers["X-Humanapi-Signature"] for d in receiver.deliveries]
    assert all(verify_signature(alice.app.webhook_secret, h, bodies[0]) for h in headers)


def test_data_updated_says_when_the_sync_stored_the_data(
    alice: Persona, receiver: WebhookReceiver, settings: LazySettings
) -> None:
    settings.DEMO_HISTORY_DAYS = 1
    connection = connection_for(alice.human)
    run = connection_sync(connection_id=connection.pk)
    assert run is not None and run.finished_at is not None
    notification = Notification.objects.get(event_type="data.updated")
    assert deliver(notification.pk) is True
    [event] = receiver.events("data.updated")
    assert datetime.fromisoformat(event["changedAt"]) == run.finished_at.replace(
        microsecond=run.finished_at.microsecond // 1000 * 1000
    )
    assert event["sequence"] == notification.sequence >= 1
    assert event["changedAt"] <= event["timestamp"]


def test_the_receiver_applies_events_in_sequence_order_whatever_order_they_arrive_in(
    alice: Persona, receiver: WebhookReceiver, settings: LazySettings
) -> None:
    """Event 2's first attempt times out after the receiver got it (so it comes twice); events 3
    and 4 arrive before 2's retry and 1 comes last. The receiver holds back what is early, drops
    the duplicate, and applies 1, 2, 3, 4."""
    connection = connection_for(alice.human)
    first, second, third, fourth = (
        notify_connection_event(connection, kind)
        for kind in ("source.connected", "source.reauth_required", "source.connected", "source.disconnected")
    )
    assert first and second and third and fourth
    settings.NOTIFY_TIMEOUT_SECONDS = 0.5
    receiver.delay = 1.5
    assert deliver(second.pk) is False
    receiver.delay = 0
    assert deliver(third.pk) is True and deliver(fourth.pk) is True
    assert receiver.applied.get(alice.human.pk, []) == []  # waiting for 1
    assert deliver(second.pk) is True  # the retry: a duplicate for the receiver
    assert deliver(first.pk) is True

    assert [e["sequence"] for e in receiver.applied[alice.human.pk]] == [1, 2, 3, 4]
    assert [e["eventId"] for e in receiver.applied[alice.human.pk]] == [
        n.event_id for n in (first, second, third, fourth)
    ]
    assert receiver.held[alice.human.pk] == {}
    arrived = [d.event["sequence"] for d in receiver.deliveries]
    assert arrived == [2, 3, 4, 2, 1]
    attempts = DeliveryAttempt.objects.filter(notification=second).order_by("number")
    assert [a.outcome for a in attempts] == [AttemptOutcome.TIMEOUT, AttemptOutcome.DELIVERED]


@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_for_one_human_get_unique_consecutive_numbers() -> None:
    """Eight threads, each on its own database connection, raise events for one Human at once,
    each in a transaction that goes on a little after taking its number; some roll back. The
    numbers that stay are exactly 1..n, with no gap and no repeat."""
    app = make_application("Busy app", notify_url="http://127.0.0.1:9/hook")
    human = make_human(app, "busy-1", "busy-1@example.com")
    connection_id = make_connection(human).pk
    before = Notification.objects.filter(human_id=human.pk).count()  # source.connected
    threads_n, each, rolled_back = 8, 6, 0
    start = threading.Barrier(threads_n)
    errors: list[BaseException] = []
    lock = threading.Lock()

    class Undo(Exception):
        pass

    def writer(index: int) -> None:
        nonlocal rolled_back
        try:
            mine = Connection.objects.select_related("human__application").get(pk=connection_id)
            start.wait(timeout=30)
            for round_ in range(each):
                try:
                    with transaction.atomic():
                        assert notify_connection_event(mine, "sync.failed", error=f"{index}/{round_}")
                        connection.cursor().execute("SELECT pg_sleep(0.01)")
                        if (index + round_) % 5 == 0:
                            raise Undo
                except Undo:
                    with lock:
                        rolled_back += 1
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    kept = before + threads_n * each - rolled_back
    assert rolled_back > 0
    sequences = list(Notification.objects.filter(human_id=human.pk).order_by("id").values_list("sequence", flat=True))
    assert sorted(sequences) == list(range(1, kept + 1))
    assert sequences == sorted(sequences)  # numbered in the order the rows were stored
    payloads = Notification.objects.filter(human_id=human.pk).values_list("sequence", "payload")
    assert all(payload["sequence"] == sequence for sequence, payload in payloads)
    assert EventCounter.objects.get(human_id=human.pk).last == kept


def test_the_database_refuses_a_repeated_number(alice: Persona, receiver: WebhookReceiver) -> None:
    notification = notify_connection_event(connection_for(alice.human), "source.connected")
    assert notification is not None
    with pytest.raises(IntegrityError), transaction.atomic():
        Notification.objects.create(
            event_id="x" * 24,
            application=alice.app.application,
            human_id=alice.human.pk,
            sequence=notification.sequence,
            event_type="source.connected",
            payload={},
        )


# --- Human API's signature ---------------------------------------------------------------------


def humanapi_app(name: str = "Human API style app") -> CreatedApplication:
    """Created as an operator would: `create_application --signature-mode humanapi`."""
    out = StringIO()
    call_command("create_application", "--name", name, "--signature-mode", "humanapi", stdout=out)
    shown = json.loads(out.getvalue())
    application = Application.objects.get(client_id=shown["client_id"])
    return CreatedApplication(application, shown["client_secret"], shown["app_key"], shown["webhook_secret"])


def test_it_signs_as_human_api_documents_and_a_human_api_receiver_verifies_it(db: None) -> None:
    app = humanapi_app()
    assert app.application.signature_mode == SignatureMode.HUMANAPI
    assert app.application.client_secret == app.client_secret  # kept, encrypted, to sign
    assert app.client_secret not in app.application.client_secret_sealed
    human = make_human(app, "h-1", "h-1@example.com")
    with running_receiver("", mode="humanapi", client_secret=app.client_secret) as hook:
        point_at(app, hook)
        notification = notify_connection_event(connection_for(human), "source.connected")
        assert notification is not None
        assert deliver(notification.pk) is True
        [delivery] = hook.deliveries
        assert delivery.signature_valid and hook.applied[human.pk][0]["sequence"] == 1
        headers = delivery.headers
        assert re.fullmatch(r"[0-9a-f]{40}", headers["X-Humanapi-Signature"])  # hex SHA-1
        assert headers["X-Humanapi-Timestamp"].isdigit() and re.fullmatch(r"[0-9a-f]{32}", headers["X-Humanapi-Nonce"])
        # Neither the default scheme nor another key verifies it.
        assert not verify_signature(app.webhook_secret, headers["X-Humanapi-Signature"], delivery.body)
        assert not verify_humanapi_signature(app.webhook_secret, headers, delivery.body)

        tampered = delivery.body.replace(b'"source.connected"', b'"source.disconnected"')
        assert tampered != delivery.body
        assert replay(delivery, hook.url, tampered) == 401  # an altered body fails
        assert replay(delivery, hook.url) == 401  # so does the same request again (its nonce was used)
        assert [d.signature_valid for d in hook.deliveries] == [True, False, False]


def test_a_tampered_body_fails_the_default_signature_too(alice: Persona, receiver: WebhookReceiver) -> None:
    notification = notify_connection_event(connection_for(alice.human), "source.connected")
    assert notification is not None and deliver(notification.pk) is True
    [delivery] = receiver.deliveries
    tampered = delivery.body.replace(b'"sequence":1', b'"sequence":7')
    assert tampered != delivery.body
    assert replay(delivery, receiver.url, tampered) == 401
    assert [d.signature_valid for d in receiver.deliveries] == [True, False]


def test_the_human_api_signature_is_the_documented_hmac() -> None:
    """A value computed with another tool:
    printf '%s' '{"a":1}1767225600abc' | openssl dgst -sha1 -hmac secret"""
    body, stamp, nonce = b'{"a":1}', "1767225600", "abc"
    digest = humanapi_signature("secret", body, stamp, nonce)
    assert digest == "e58d534a51c60f1beba18d54b42f29a438e70f0d"
    headers = {"X-HumanAPI-Signature": digest, "X-HumanAPI-Timestamp": stamp, "X-HumanAPI-Nonce": nonce}
    assert verify_humanapi_signature("secret", headers, body, now=1767225600)
    assert not verify_humanapi_signature("secret", headers, body + b" ", now=1767225600)
    assert not verify_humanapi_signature("secret", {**headers, "X-HumanAPI-Nonce": "abd"}, body, now=1767225600)
    assert not verify_humanapi_signature("secret", headers, body, now=1767225600 + 3600)  # stale


def test_switching_an_application_to_human_api_signatures_replaces_its_client_secret(
    alice: Persona, receiver: WebhookReceiver
) -> None:
    client_id, old_secret = alice.app.application.client_id, alice.app.client_secret
    with pytest.raises(CommandError, match=r"stored only as a hash.*--replace-client-secret"):
        call_command("signature_mode", client_id, "humanapi", stdout=StringIO())
    stored = Application.objects.get(pk=alice.app.application.pk)
    assert stored.signature_mode == SignatureMode.DEFAULT and stored.client_secret_sealed == ""
    authenticate_client(client_id, old_secret)  # unchanged

    out = StringIO()
    call_command("signature_mode", client_id, "humanapi", "--replace-client-secret", stdout=out)
    shown = json.loads(out.getvalue())
    assert shown["client_id"] == client_id and shown["signature_mode"] == "humanapi"
    new_secret = shown["client_secret"]
    assert new_secret != old_secret
    authenticate_client(client_id, new_secret)
    with pytest.raises(Exception, match="Invalid client credentials"):
        authenticate_client(client_id, old_secret)
    entry = AuditEntry.objects.get(action="application.signature_mode_set")
    assert entry.details == {"signature_mode": "humanapi", "client_secret_replaced": True}
    assert new_secret not in json.dumps(list(AuditEntry.objects.values_list("details", flat=True)))

    # Already on: nothing replaced, nothing printed but the mode.
    out = StringIO()
    call_command("signature_mode", client_id, "humanapi", stdout=out)
    assert json.loads(out.getvalue()) == {"client_id": client_id, "signature_mode": "humanapi"}

    receiver.mode, receiver.client_secret = "humanapi", new_secret
    notification = notify_connection_event(connection_for(alice.human), "source.connected")
    assert notification is not None and deliver(notification.pk) is True
    assert receiver.deliveries[-1].signature_valid

    # Replacing the client secret keeps signing with the new one.
    application = Application.objects.get(pk=alice.app.application.pk)
    receiver.client_secret = application_rotate_secret(application, "client-secret")
    notification = notify_connection_event(connection_for(alice.human), "source.disconnected")
    assert notification is not None and deliver(notification.pk) is True
    assert receiver.deliveries[-1].signature_valid

    # Back to the default: the encrypted copy goes, the webhook secret signs again.
    out = StringIO()
    call_command("signature_mode", client_id, "default", stdout=out)
    assert json.loads(out.getvalue()) == {"client_id": client_id, "signature_mode": "default"}
    assert Application.objects.get(pk=application.pk).client_secret_sealed == ""
    receiver.mode = "default"
    notification = notify_connection_event(connection_for(alice.human), "source.connected")
    assert notification is not None and deliver(notification.pk) is True
    assert receiver.deliveries[-1].signature_valid
    assert [e["sequence"] for e in receiver.applied[alice.human.pk]] == [1, 2, 3]


def test_without_the_client_secret_nothing_is_sent_and_the_attempt_says_why(
    alice: Persona, receiver: WebhookReceiver
) -> None:
    Application.objects.filter(pk=alice.app.application.pk).update(signature_mode=SignatureMode.HUMANAPI)
    notification = notify_connection_event(connection_for(alice.human), "source.connected")
    assert notification is not None and deliver(notification.pk) is False
    [attempt] = DeliveryAttempt.objects.filter(notification=notification)
    assert attempt.outcome == AttemptOutcome.NOT_SENT and attempt.status_code is None
    assert "keyed with the client secret, which is not stored" in attempt.error
    assert receiver.deliveries == []


def test_bad_signature_modes_are_refused_and_change_nothing(db: None) -> None:
    with pytest.raises(CommandError, match="invalid choice: 'sha1'"):
        call_command("create_application", "--name", "X", "--signature-mode", "sha1", stdout=StringIO())
    assert not Application.objects.exists()
    app = make_application("Y")
    with pytest.raises(CommandError, match="invalid choice"):
        call_command("signature_mode", app.application.client_id, "HUMANAPI", stdout=StringIO())
    with pytest.raises(CommandError, match="No application"):
        call_command("signature_mode", "nope", "humanapi", "--replace-client-secret", stdout=StringIO())
    assert Application.objects.get().signature_mode == SignatureMode.DEFAULT


# --- the admin ---------------------------------------------------------------------------------


def test_the_admin_switches_to_human_api_signatures_only_by_replacing_the_client_secret(
    operator: Client, alice: Persona
) -> None:
    application = alice.app.application
    url = f"/admin/connect/application/{application.pk}/change/"
    form = {"name": "Alice's app", "allowed_origins": "", "notify_url": "", "source_priority": ""}
    page = operator.post(url, {**form, "signature_mode": "humanapi"})
    assert page.status_code == 200 and "stored only as a hash" in page.content.decode()
    assert operator.post(url, {**form, "signature_mode": "rot13"}).status_code == 200
    assert Application.objects.get(pk=application.pk).signature_mode == SignatureMode.DEFAULT

    action = {"action": "sign_as_humanapi", "_selected_action": [application.pk]}
    confirm = operator.post("/admin/connect/application/", action)
    assert confirm.status_code == 200 and "stops working at once" in " ".join(confirm.content.decode().split())
    assert Application.objects.get(pk=application.pk).signature_mode == SignatureMode.DEFAULT
    answer = operator.post("/admin/connect/application/", {**action, "confirm": "yes"})
    assert answer.status_code == 302 and "no-store" in answer["Cache-Control"]
    shown = operator.get(answer["Location"]).content.decode()
    match = re.search(r'class="rotated-secret" data-client-id="[0-9a-f]+">([^<]+)<', shown)
    assert match
    assert match.group(1) not in operator.get(answer["Location"]).content.decode()  # shown once
    stored = Application.objects.get(pk=application.pk)
    assert stored.signature_mode == SignatureMode.HUMANAPI and stored.client_secret == match.group(1)
    authenticate_client(stored.client_id, match.group(1))

    # Saved again as it is, it keeps signing this way; back to the default drops the secret's copy.
    assert operator.post(url, {**form, "signature_mode": "humanapi"}).status_code == 302
    assert Application.objects.get(pk=application.pk).client_secret_sealed != ""
    assert operator.post(url, {**form, "signature_mode": "default"}).status_code == 302
    stored = Application.objects.get(pk=application.pk)
    assert stored.signature_mode == SignatureMode.DEFAULT and stored.client_secret_sealed == ""
    changed = AuditEntry.objects.filter(action="admin.application_changed").order_by("id").last()
    assert changed is not None and changed.details["fields"] == ["signature_mode"]


def test_the_admin_creates_an_application_that_signs_as_human_api(operator: Client) -> None:
    answer = operator.post(
        "/admin/connect/application/add/",
        {"name": "Z", "allowed_origins": "", "notify_url": "", "signature_mode": "humanapi"},
    )
    assert answer.status_code == 302
    created = Application.objects.get(name="Z")
    assert created.signature_mode == SignatureMode.HUMANAPI
    assert created.client_secret and created.client_secret in operator.get(answer["Location"]).content.decode()


# --- the migration -----------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_the_migration_numbers_the_events_already_stored() -> None:
    before, after = (
        [("data_api", "0008_notification_human_attempt_outcome")],
        [("data_api", "0009_notification_sequence")],
    )
    executor = MigrationExecutor(connection)
    executor.migrate(before)
    try:
        old = executor.loader.project_state(before).apps
        application = make_application("Old").application  # connect's tables are as they are now
        rows = old.get_model("data_api", "Notification").objects
        now = timezone.now()
        for index, human in enumerate(["h1", "h2", "h1", "h1", ""]):
            stamp = f"2026-01-0{index + 1}T00:00:00.000Z"
            rows.create(
                event_id=f"e{index}",
                application_id=application.pk,
                human_id=human,
                event_type="source.connected",
                payload={"eventId": f"e{index}", "humanId": human, "timestamp": stamp},
                created_at=now,
            )
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(after)
    numbered = {
        n.event_id: (n.sequence, n.payload.get("sequence"), n.payload.get("changedAt"))
        for n in Notification.objects.all()
    }
    assert numbered == {
        "e0": (1, 1, "2026-01-01T00:00:00.000Z"),
        "e1": (1, 1, "2026-01-02T00:00:00.000Z"),
        "e2": (2, 2, "2026-01-03T00:00:00.000Z"),
        "e3": (3, 3, "2026-01-04T00:00:00.000Z"),
        "e4": (0, None, None),
    }
    assert dict(EventCounter.objects.values_list("human_id", "last")) == {"h1": 3, "h2": 1}
