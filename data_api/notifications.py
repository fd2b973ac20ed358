"""Webhooks (CONTRACT §8): one Notification row per event, delivered by Celery, signed, retried
with exponential backoff for more than 24 hours. A slow receiver never holds up a sync: the
sync only inserts a row and enqueues after commit."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from .models import Notification

if TYPE_CHECKING:
    from sources.models import Connection, SyncRun

RETRY_FOR = timedelta(hours=26)


def signature_header(secret: str, body: bytes, at: int | None = None) -> str:
    stamp = int(time.time()) if at is None else at
    mac = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={stamp},v1={mac}"


def _enqueue(connection: Connection, event_type: str, data_types: dict[str, Any], **extra: Any) -> Notification | None:
    from .tasks import deliver_notification

    application = connection.human.application
    if not application.notify_url:
        return None
    event_id = secrets.token_hex(12)
    payload = {
        "eventId": event_id,
        "eventType": event_type,
        "humanId": connection.human_id,
        "clientUserId": connection.human.client_user_id,
        "source": connection.source,
        "dataTypes": data_types,
        "timestamp": timezone.now().isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        **extra,
    }
    notification = Notification.objects.create(
        event_id=event_id,
        application=application,
        event_type=event_type,
        payload=payload,
        # The enqueue below makes the first attempt; beat retries only if that one is lost.
        next_attempt_at=timezone.now() + timedelta(minutes=5),
    )
    transaction.on_commit(lambda: deliver_notification.delay(notification.pk))
    return notification


def notify_data_updated(connection: Connection, run: SyncRun) -> Notification | None:
    changed = {k: v for k, v in run.counts.items() if v.get("created") or v.get("updated") or v.get("deleted")}
    return _enqueue(connection, "data.updated", changed)


def notify_connection_event(connection: Connection, event_type: str, **extra: Any) -> Notification | None:
    return _enqueue(connection, event_type, {}, **extra)


def next_delay(attempts: int) -> timedelta:
    """30 s, 1 min, 2 min, ... capped at 2 h between attempts."""
    return timedelta(seconds=min(7200, 30 * 2 ** max(0, attempts - 1)))


def deliver(notification_id: int) -> bool | None:
    """One attempt. True delivered, False failed (another attempt scheduled), None nothing to do."""
    import requests

    from .models import DeliveryAttempt

    notification = Notification.objects.select_related("application").filter(pk=notification_id).first()
    if notification is None or notification.delivered_at or notification.gave_up_at:
        return None
    application = notification.application
    body = json.dumps(notification.payload, separators=(",", ":")).encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": settings.OUTBOUND_USER_AGENT,
        "X-HumanAPI-Signature": signature_header(application.webhook_secret, body),
        "X-HumanAPI-Event": notification.event_type,
    }
    started = time.monotonic()
    status_code, error = None, ""
    try:
        response = requests.post(application.notify_url, data=body, headers=headers, timeout=3, allow_redirects=False)
        status_code = response.status_code
        if not 200 <= status_code < 300:
            error = f"answered {status_code}"
    except requests.RequestException as exc:
        error = type(exc).__name__
    elapsed = int((time.monotonic() - started) * 1000)
    DeliveryAttempt.objects.create(notification=notification, status_code=status_code, error=error, duration_ms=elapsed)
    now = timezone.now()
    attempts = notification.attempts + 1
    if not error:
        Notification.objects.filter(pk=notification.pk).update(
            attempts=attempts, delivered_at=now, next_attempt_at=None
        )
        return True
    if now - notification.created_at > RETRY_FOR:
        Notification.objects.filter(pk=notification.pk).update(attempts=attempts, gave_up_at=now, next_attempt_at=None)
        return False
    Notification.objects.filter(pk=notification.pk).update(
        attempts=attempts, next_attempt_at=now + next_delay(attempts)
    )
    return False
