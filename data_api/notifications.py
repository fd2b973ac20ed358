"""Webhooks (CONTRACT §8): one Notification row per event, delivered by Celery, signed, retried
with exponential backoff for more than 24 hours, then marked failed (and audited).

A slow or failing receiver never holds up a sync: the sync only inserts a row and publishes a
task after its transaction commits; the HTTP call happens in that task. Each attempt has one
deadline, NOTIFY_TIMEOUT_SECONDS (3 s), for everything: resolving the host, connecting, TLS,
sending, and reading the whole answer. Socket timeouts alone bound each wait, not their sum (a
receiver that trickles its answer a byte at a time would hold the worker as long as it liked),
so every read and write is given only what is left of the deadline, checked between chunks.

Delivery is at least once (a receiver deduplicates by `eventId`); each attempt is claimed with
a conditional update so two workers never post the same attempt twice, and is on record from
the moment it is claimed. Attempts may arrive out of order (a retry overtakes nothing, but a
later event may be delivered before an earlier one's retry): each Human's events carry
`sequence`, 1, 2, 3, ... in the order they were raised, taken in the transaction that stores the
event (EventCounter), so a receiver can put them in order and see a gap.

Signatures: `t=...,v1=...` (HMAC-SHA256 keyed with the webhook secret) by default, or, for an
Application whose `signature_mode` is "humanapi", as Human API signs its own notifications
(HMAC-SHA1 keyed with the client secret; README "Webhook signatures" says what is documented
and what is assumed).
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import io
import ipaddress
import json
import logging
import secrets
import socket
import ssl
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

from django.conf import settings
from django.db import connection as database
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from connect.audit import audit
from connect.models import Actor, Application, Human, SignatureMode
from humanapi_project.crypto import DecryptionError

from .models import AttemptOutcome, DeliveryAttempt, EventCounter, Notification

if TYPE_CHECKING:
    from sources.models import Connection, SyncRun

log = logging.getLogger(__name__)

# Attempts continue until this long after the event, then the notification is given up.
RETRY_FOR = timedelta(hours=26)


def requeue_lease() -> timedelta:
    """An attempt handed to the broker is due for beat again this long after (NOTIFY_REQUEUE_AFTER),
    should its message be lost (a broker restarted without persistence, a worker killed)."""
    return timedelta(seconds=settings.NOTIFY_REQUEUE_AFTER)


# How long one claimed attempt may take before beat may hand it to another worker.
ATTEMPT_LEASE = timedelta(minutes=5)
# Of the answer's body, this much at most is read (and ignored); the rest is not waited for.
MAX_ANSWER_BODY = 64 * 1024


def delivery_timeout() -> float:
    """NOTIFY_TIMEOUT_SECONDS: how long one attempt may take in all."""
    return float(settings.NOTIFY_TIMEOUT_SECONDS)


def signature_header(secret: str, body: bytes, at: int | None = None) -> str:
    """`t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">`, keyed with the webhook secret."""
    stamp = int(time.time()) if at is None else at
    mac = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={stamp},v1={mac}"


def humanapi_signature(client_secret: str, body: bytes, timestamp: str, nonce: str) -> str:
    """Human API's `X-HumanAPI-Signature`: hex HMAC-SHA1 of the raw body, then the timestamp,
    then the nonce (no separators), keyed with the Application's client secret."""
    message = body + timestamp.encode() + nonce.encode()
    return hmac.new(client_secret.encode(), message, hashlib.sha1).hexdigest()


class NotSent(Exception):
    """Nothing was sent, and why."""


def signed_headers(application: Application, body: bytes) -> dict[str, str]:
    """The headers that sign `body` the way the Application asked for, or NotSent."""
    if application.signature_mode == SignatureMode.HUMANAPI:
        try:
            client_secret = application.client_secret
        except DecryptionError:
            raise NotSent("the client secret can't be decrypted with the configured keys") from None
        if not client_secret:
            raise NotSent(
                "Human API signatures are keyed with the client secret, which is not stored: replace it "
                "(manage.py signature_mode CLIENT_ID humanapi --replace-client-secret, or the admin's action)"
            )
        stamp, nonce = str(int(time.time())), secrets.token_hex(16)
        return {
            "X-HumanAPI-Signature": humanapi_signature(client_secret, body, stamp, nonce),
            "X-HumanAPI-Timestamp": stamp,
            "X-HumanAPI-Nonce": nonce,
        }
    try:
        secret = application.webhook_secret
    except DecryptionError:
        raise NotSent("the webhook secret can't be decrypted with the configured keys") from None
    return {"X-HumanAPI-Signature": signature_header(secret, body)}


def _time_text(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def next_sequence(human_id: str) -> int:
    """The Human's next event number. Call it in the transaction that stores the event: the
    counter's row stays locked until that commits (concurrent callers wait, and get the numbers
    after), and a rollback gives the number back."""
    assert transaction.get_connection().in_atomic_block, "take a sequence in the event's transaction"
    table = EventCounter._meta.db_table
    with database.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (human_id, last) VALUES (%s, 1) "
            f"ON CONFLICT (human_id) DO UPDATE SET last = {table}.last + 1 RETURNING last",
            [human_id],
        )
        row = cursor.fetchone()
    return int(row[0])


def _enqueue(
    connection: Connection,
    event_type: str,
    data_types: dict[str, Any],
    changed_at: datetime | None = None,
    **extra: Any,
) -> Notification | None:
    """Store the event (numbered in its Human's sequence) and publish its first attempt once
    the transaction commits. `timestamp` is when the event was raised, `changedAt` when the
    change happened (`changed_at`, or now); retries send both unchanged."""
    application = connection.human.application
    if not application.notify_url:
        return None
    event_id, now = secrets.token_hex(12), timezone.now()
    with transaction.atomic():
        sequence = next_sequence(connection.human_id)
        payload = {  # `clientUserId` is added when each attempt is sent
            **extra,
            "eventId": event_id,
            "eventType": event_type,
            "humanId": connection.human_id,
            "sequence": sequence,
            "source": connection.source,
            "dataTypes": data_types,
            "changedAt": _time_text(changed_at or now),
            "timestamp": _time_text(now),
        }
        notification = Notification.objects.create(
            event_id=event_id,
            application=application,
            human_id=connection.human_id,
            sequence=sequence,
            event_type=event_type,
            payload=payload,
            next_attempt_at=now + requeue_lease(),
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
    # The run's last page was stored when it finished.
    return _enqueue(connection, "data.updated", changed, changed_at=run.finished_at)


def notify_connection_event(
    connection: Connection, event_type: str, changed_at: datetime | None = None, **extra: Any
) -> Notification | None:
    """Raised as the state changes (or right after it commits): `changedAt` is now, unless given."""
    return _enqueue(connection, event_type, {}, changed_at, **extra)


def next_delay(attempts: int) -> timedelta:
    """After the n-th failed attempt: 30 s, 1 min, 2 min, 4 min, ... capped at 2 h."""
    return timedelta(seconds=min(7200, 30 * 2 ** max(0, attempts - 1)))


def drop_human_notifications(human_id: str) -> int:
    """A deleted Human's events: those not yet delivered are dropped (never sent); those already
    sent (or given up) stay on record without an external id, which only rows stored by earlier
    versions still held. Returns how many were dropped."""
    dropped = Notification.objects.filter(human_id=human_id, delivered_at__isnull=True, gave_up_at__isnull=True)
    count = dropped.delete()[1].get(Notification._meta.label, 0)
    kept = list(Notification.objects.filter(human_id=human_id, payload__has_key="clientUserId"))
    for row in kept:
        row.payload = {k: v for k, v in row.payload.items() if k != "clientUserId"}
    Notification.objects.bulk_update(kept, ["payload"], batch_size=500)
    return count


@dataclass
class Outcome:
    status_code: int | None
    outcome: AttemptOutcome
    error: str
    duration_ms: int

    @property
    def delivered(self) -> bool:
        return self.outcome == AttemptOutcome.DELIVERED


def _claim(notification: Notification, now: datetime) -> DeliveryAttempt | None:
    """Take this attempt: of two workers holding the same notification, exactly one wins. The
    attempt is on record from here: unfinished, until its end is written."""
    with transaction.atomic():
        taken = Notification.objects.filter(
            pk=notification.pk,
            attempts=notification.attempts,
            delivered_at__isnull=True,
            gave_up_at__isnull=True,
        ).update(attempts=F("attempts") + 1, next_attempt_at=now + ATTEMPT_LEASE)
        if not taken:
            return None
        return DeliveryAttempt.objects.create(
            notification=notification,
            number=notification.attempts + 1,
            outcome=AttemptOutcome.UNFINISHED,
            error="no outcome yet: under way, or its worker stopped",
        )


def _refused_addresses(host: str, addresses: Iterable[str]) -> str:
    for address in sorted(set(addresses)):
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if not ip.is_global or ip.is_multicast:
            return f"{host} resolves to {ip}, not a public address (ALLOW_PRIVATE_NOTIFY_URLS=1 allows it)"
    return ""


def refused_notify_url(url: str) -> str:
    """Why notifications may not go to `url` ("" if they may): a notify URL that resolves to a
    loopback, private, link-local or otherwise non-public address would let a tenant make this
    server call inside its own network. ALLOW_PRIVATE_NOTIFY_URLS=1 allows it (development,
    tests). A name that doesn't resolve is not refused here: the delivery records the failure,
    and checks again the addresses it connects to."""
    if settings.ALLOW_PRIVATE_NOTIFY_URLS:
        return ""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return "the notify URL is malformed"
    try:
        found = [str(info[4][0]) for info in socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)]
    except (OSError, UnicodeError):
        return ""
    return _refused_addresses(host, found)


def _post(url: str, signature: dict[str, str], body: bytes, event_type: str) -> Outcome:
    headers = {
        "Content-Type": "application/json",
        "User-Agent": settings.OUTBOUND_USER_AGENT,
        **signature,
        "X-HumanAPI-Event": event_type,
        "Connection": "close",
    }
    timeout = delivery_timeout()
    started = time.monotonic()
    status_code, outcome, error = None, AttemptOutcome.DELIVERED, ""
    try:
        status_code = _exchange(url, body, headers, started + timeout)
        if not 200 <= status_code < 300:
            outcome, error = AttemptOutcome.STATUS, f"answered HTTP {status_code}"
    except NotSent as exc:
        outcome, error = AttemptOutcome.NOT_SENT, f"not sent: {exc}"
    except TimeoutError:
        outcome, error = AttemptOutcome.TIMEOUT, f"no answer within {timeout:g} s"
    except (OSError, http.client.HTTPException, ValueError) as exc:
        outcome, error = AttemptOutcome.UNREACHABLE, f"request failed: {type(exc).__name__}"
    return Outcome(status_code, outcome, error, int((time.monotonic() - started) * 1000))


def _exchange(url: str, body: bytes, headers: dict[str, str], deadline: float) -> int:
    """POST `body` to `url` and read the whole answer before `deadline` (time.monotonic()), or
    raise TimeoutError. Connects only to addresses checked against ALLOW_PRIVATE_NOTIFY_URLS
    (the name is resolved once). Redirects are not followed. Returns the HTTP status."""
    parts = urlsplit(url)
    https = parts.scheme == "https"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise NotSent("the notify URL is not an http(s) URL")
    try:
        port = parts.port or (443 if https else 80)
    except ValueError:
        raise NotSent("the notify URL has a malformed port") from None
    host = parts.hostname
    addresses = _resolve(host, port, deadline)
    if not settings.ALLOW_PRIVATE_NOTIFY_URLS:
        refused = _refused_addresses(host, (str(address[0]) for _, address in addresses))
        if refused:
            raise NotSent(refused)
    sock = _connect(addresses, deadline)
    try:
        connection: http.client.HTTPConnection
        if https:
            context = ssl.create_default_context()
            sock.settimeout(_left(deadline))  # the whole handshake, not each step
            sock = context.wrap_socket(sock, server_hostname=host)
            connection = http.client.HTTPSConnection(host, parts.port, context=context)
        else:
            connection = http.client.HTTPConnection(host, parts.port)
        connection.sock = cast(Any, _DeadlineSocket(sock, deadline))  # never connect() again
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        read = 0
        while read <= MAX_ANSWER_BODY:
            chunk = response.read(16384)
            if not chunk:
                break
            read += len(chunk)
        return response.status
    finally:
        sock.close()


def _left(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("the delivery deadline passed")
    return left


def _resolve(host: str, port: int, deadline: float) -> list[tuple[socket.AddressFamily, tuple[Any, ...]]]:
    """(family, address) of each of `host`'s addresses, found before the deadline. The system
    resolver takes no timeout, so it runs in a thread of its own, left to finish alone when it
    is too slow."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return [(socket.AF_INET6 if ip.version == 6 else socket.AF_INET, (host, port))]
    found: list[tuple[socket.AddressFamily, tuple[Any, ...]]] = []
    failed: list[Exception] = []

    def lookup() -> None:
        try:
            found.extend((info[0], info[4]) for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except (OSError, UnicodeError) as exc:
            failed.append(exc)

    resolver = threading.Thread(target=lookup, name="notify-resolve", daemon=True)
    resolver.start()
    resolver.join(_left(deadline))
    if resolver.is_alive():
        raise TimeoutError("the notify URL's host did not resolve in time")
    if failed:
        raise failed[0]
    return found


def _connect(addresses: list[tuple[socket.AddressFamily, tuple[Any, ...]]], deadline: float) -> socket.socket:
    failure: OSError = OSError("the notify URL's host has no address")
    for family, address in addresses:
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.settimeout(_left(deadline))
            sock.connect(address)
        except OSError as exc:
            sock.close()
            if isinstance(exc, TimeoutError):
                raise
            failure = exc
        else:
            return sock
    raise failure


class _DeadlineSocket:
    """What http.client needs of a socket (sendall, makefile), where every read and every write
    waits at most until the deadline: a peer that keeps each read short still can't outlast it.
    Closing is left to the caller, as the answer is read after http.client lets go of it."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock, self.deadline = sock, deadline

    def sendall(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            self.sock.settimeout(_left(self.deadline))
            view = view[self.sock.send(view) :]

    def makefile(self, mode: str) -> io.BufferedReader:
        return io.BufferedReader(_DeadlineReader(self))

    def close(self) -> None:
        pass


class _DeadlineReader(io.RawIOBase):
    def __init__(self, owner: _DeadlineSocket) -> None:
        self.owner = owner

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        self.owner.sock.settimeout(_left(self.owner.deadline))
        return self.owner.sock.recv_into(buffer)


def deliver(notification_id: int) -> bool | None:
    """One attempt. True delivered, False failed (another attempt scheduled, or given up),
    None nothing to do (already delivered, given up, another worker has this attempt, or the
    user was deleted: the event is dropped)."""
    notification = Notification.objects.select_related("application").filter(pk=notification_id).first()
    if notification is None or notification.delivered_at or notification.gave_up_at:
        return None
    external_id = Human.objects.filter(pk=notification.human_id).values_list("client_user_id", flat=True).first()
    if external_id is None:  # raised by a sync that outlived its user's deletion
        Notification.objects.filter(pk=notification.pk, delivered_at__isnull=True).delete()
        return None
    attempt = _claim(notification, timezone.now())
    if attempt is None:
        return None
    started = time.monotonic()
    try:
        outcome = _attempt(notification, external_id)
    except Exception as exc:  # recorded like any failure: the schedule goes on
        log.exception("delivery of notification %s failed", notification.pk)
        duration = int((time.monotonic() - started) * 1000)
        outcome = Outcome(None, AttemptOutcome.ERROR, f"internal error: {type(exc).__name__}", duration)
    _record(notification, attempt, outcome)
    return outcome.delivered


def _attempt(notification: Notification, external_id: str) -> Outcome:
    """Send the notification once, unless it can't be sent at all (and why)."""
    application = notification.application
    if not application.notify_url:
        return Outcome(None, AttemptOutcome.NOT_SENT, "the application has no notify URL", 0)
    body = json.dumps({**notification.payload, "clientUserId": external_id}, separators=(",", ":")).encode()
    try:
        signature = signed_headers(application, body)
    except NotSent as exc:
        return Outcome(None, AttemptOutcome.NOT_SENT, str(exc), 0)
    return _post(application.notify_url, signature, body, notification.event_type)


def _record(notification: Notification, attempt: DeliveryAttempt, outcome: Outcome) -> None:
    DeliveryAttempt.objects.filter(pk=attempt.pk).update(
        outcome=outcome.outcome,
        status_code=outcome.status_code,
        error=outcome.error[:500],
        duration_ms=outcome.duration_ms,
    )
    now = timezone.now()
    mine = Notification.objects.filter(pk=notification.pk, delivered_at__isnull=True, gave_up_at__isnull=True)
    if outcome.delivered:
        mine.update(delivered_at=now, next_attempt_at=None)
    elif not notification.application.notify_url or now - notification.created_at > RETRY_FOR:
        if mine.update(gave_up_at=now, next_attempt_at=None):
            audit(
                "notification.failed",
                actor=Actor.SYSTEM,
                application=notification.application,
                human_id=notification.human_id,
                event_id=notification.event_id,
                event_type=notification.event_type,
                attempts=attempt.number,
                last_outcome=outcome.outcome,
                last_error=outcome.error[:500],
            )
    else:
        mine.update(next_attempt_at=now + next_delay(attempt.number))
