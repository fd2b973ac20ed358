"""Webhooks (CONTRACT §8): one Notification row per event, delivered by Celery, signed, retried
with exponential backoff for more than 24 hours.

A slow or failing receiver never holds up a sync: the sync only inserts a row and publishes a
task after its transaction commits; the HTTP call happens in that task, with a 3 s timeout.
Delivery is at least once (a receiver deduplicates by `eventId`); each attempt is claimed with
a conditional update so two workers never post the same attempt twice.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import http.client
import ipaddress
import json
import logging
import secrets
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from humanapi_project.crypto import DecryptionError

from .models import DeliveryAttempt, Notification

if TYPE_CHECKING:
    from sources.models import Connection, SyncRun

log = logging.getLogger(__name__)

# Attempts continue until this long after the event, then the notification is given up.
RETRY_FOR = timedelta(hours=26)
# The receiver must answer (status line and headers) within this many seconds.
DELIVERY_TIMEOUT = 3.0
# Should the enqueued first attempt be lost (broker down, worker killed), beat retries then.
FIRST_ATTEMPT_LEASE = timedelta(minutes=2)
# How long one claimed attempt may take before beat may hand it to another worker.
ATTEMPT_LEASE = timedelta(minutes=5)


def signature_header(secret: str, body: bytes, at: int | None = None) -> str:
    """`t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">`, keyed with the webhook secret."""
    stamp = int(time.time()) if at is None else at
    mac = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={stamp},v1={mac}"


def _now_text() -> str:
    return timezone.now().isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _enqueue(connection: Connection, event_type: str, data_types: dict[str, Any], **extra: Any) -> Notification | None:
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
        "timestamp": _now_text(),
        **extra,
    }
    notification = Notification.objects.create(
        event_id=event_id,
        application=application,
        event_type=event_type,
        payload=payload,
        next_attempt_at=timezone.now() + FIRST_ATTEMPT_LEASE,
    )
    transaction.on_commit(lambda: _publish(notification.pk))
    return notification


def _publish(notification_id: int) -> None:
    """Hand the first attempt to a worker. A broker that can't be reached must not fail the
    sync or the request that raised the event: beat retries from `next_attempt_at`."""
    from .tasks import deliver_notification

    try:
        deliver_notification.delay(notification_id)
    except Exception:
        log.warning("could not enqueue notification %s; beat will retry it", notification_id, exc_info=True)


def notify_data_updated(connection: Connection, run: SyncRun) -> Notification | None:
    changed = {
        kind: {change: counts.get(change, 0) for change in ("created", "updated", "deleted")}
        for kind, counts in run.counts.items()
        if counts.get("created") or counts.get("updated") or counts.get("deleted")
    }
    if not changed:
        return None
    return _enqueue(connection, "data.updated", changed)


def notify_connection_event(connection: Connection, event_type: str, **extra: Any) -> Notification | None:
    return _enqueue(connection, event_type, {}, **extra)


def next_delay(attempts: int) -> timedelta:
    """After the n-th failed attempt: 30 s, 1 min, 2 min, 4 min, ... capped at 2 h."""
    return timedelta(seconds=min(7200, 30 * 2 ** max(0, attempts - 1)))


@dataclass
class Outcome:
    status_code: int | None
    error: str
    duration_ms: int

    @property
    def delivered(self) -> bool:
        return not self.error


def _claim(notification: Notification, now: datetime) -> bool:
    """Take this attempt: of two workers holding the same notification, exactly one wins."""
    return bool(
        Notification.objects.filter(
            pk=notification.pk,
            attempts=notification.attempts,
            delivered_at__isnull=True,
            gave_up_at__isnull=True,
        ).update(attempts=F("attempts") + 1, next_attempt_at=now + ATTEMPT_LEASE)
    )


def refused_notify_url(url: str) -> str:
    """Why notifications may not go to `url` ("" if they may): a notify URL that resolves to a
    loopback, private, link-local or otherwise non-public address would let a tenant make this
    server call inside its own network. ALLOW_PRIVATE_NOTIFY_URLS=1 allows it (development,
    tests). A name that doesn't resolve is not refused here: the delivery records the failure."""
    if settings.ALLOW_PRIVATE_NOTIFY_URLS:
        return ""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return "the notify URL is malformed"
    try:
        found = {str(info[4][0]) for info in socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)}
    except (OSError, UnicodeError):
        return ""
    for address in sorted(found):
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if not ip.is_global or ip.is_multicast:
            return f"{host} resolves to {ip}, not a public address (ALLOW_PRIVATE_NOTIFY_URLS=1 allows it)"
    return ""


def _post(url: str, secret: str, body: bytes, event_type: str) -> Outcome:
    headers = {
        "Content-Type": "application/json",
        "User-Agent": settings.OUTBOUND_USER_AGENT,
        "X-HumanAPI-Signature": signature_header(secret, body),
        "X-HumanAPI-Event": event_type,
    }
    started = time.monotonic()
    status_code, error = None, ""
    try:
        status_code = _post_within(url, body, headers, DELIVERY_TIMEOUT)
        if not 200 <= status_code < 300:
            error = f"answered HTTP {status_code}"
    except TimeoutError:
        error = f"no answer within {DELIVERY_TIMEOUT:g} s"
    except (OSError, http.client.HTTPException, ValueError) as exc:
        error = f"request failed: {type(exc).__name__}"
    return Outcome(status_code, error, int((time.monotonic() - started) * 1000))


def _post_within(url: str, body: bytes, headers: dict[str, str], deadline: float) -> int:
    """POST and read the status line and headers (never the body), all within `deadline`
    seconds. Socket timeouts bound each wait only: a receiver that trickles its answer a byte
    at a time would hold a worker for as long as it likes, so a watchdog cuts the connection
    when the deadline passes. Redirects are not followed."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("not an http(s) URL")
    port = parts.port
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    connection: http.client.HTTPConnection
    if parts.scheme == "https":
        connection = http.client.HTTPSConnection(
            parts.hostname, port, timeout=deadline, context=ssl.create_default_context()
        )
    else:
        connection = http.client.HTTPConnection(parts.hostname, port, timeout=deadline)
    expired = threading.Event()

    def cut() -> None:
        expired.set()
        sock = connection.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    watchdog = threading.Timer(deadline, cut)
    watchdog.start()
    try:
        connection.request("POST", path, body=body, headers=headers)
        status = connection.getresponse().status
    except (OSError, http.client.HTTPException):
        if expired.is_set():
            raise TimeoutError from None
        raise
    finally:
        watchdog.cancel()
        connection.close()
    if expired.is_set():
        raise TimeoutError
    return status


def deliver(notification_id: int) -> bool | None:
    """One attempt. True delivered, False failed (another attempt scheduled, or given up),
    None nothing to do (already delivered, given up, or another worker has this attempt)."""
    notification = Notification.objects.select_related("application").filter(pk=notification_id).first()
    if notification is None or notification.delivered_at or notification.gave_up_at:
        return None
    if not _claim(notification, timezone.now()):
        return None
    outcome = _attempt(notification)
    _record(notification, outcome)
    return outcome.delivered


def _attempt(notification: Notification) -> Outcome:
    """Send the notification once, unless it can't be sent at all (and why)."""
    application = notification.application
    if not application.notify_url:
        return Outcome(None, "the application has no notify URL", 0)
    try:
        secret = application.webhook_secret
    except DecryptionError:
        return Outcome(None, "the webhook secret can't be decrypted with the configured keys", 0)
    refused = refused_notify_url(application.notify_url)
    if refused:
        return Outcome(None, f"not sent: {refused}", 0)
    body = json.dumps(notification.payload, separators=(",", ":")).encode()
    return _post(application.notify_url, secret, body, notification.event_type)


def _record(notification: Notification, outcome: Outcome) -> None:
    DeliveryAttempt.objects.create(
        notification=notification,
        status_code=outcome.status_code,
        error=outcome.error[:500],
        duration_ms=outcome.duration_ms,
    )
    now = timezone.now()
    attempts = notification.attempts + 1
    mine = Notification.objects.filter(pk=notification.pk)
    if outcome.delivered:
        mine.update(delivered_at=now, next_attempt_at=None)
    elif not notification.application.notify_url or now - notification.created_at > RETRY_FOR:
        mine.update(gave_up_at=now, next_attempt_at=None)
    else:
        mine.update(next_attempt_at=now + next_delay(attempts))
