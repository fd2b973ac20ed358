"""Celery adapters: take ids, call the engine, decide when to try again."""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from celery import shared_task
from celery.app.task import Task
from celery.signals import worker_ready
from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.db import connection as db
from django.db.models import F, Q
from django.db.models.functions import Coalesce
from django.utils import timezone

from .base import Change
from .http import backoff_delay
from .models import Connection, ConnectionStatus, SyncPriority
from .push import connection_push, prune_push_events, push_maintain
from .sync import RetryLater, connection_sync

log = logging.getLogger(__name__)


def route_by_priority(
    name: str, args: Sequence[Any] | None, kwargs: Mapping[str, Any] | None, options: Mapping[str, Any], **kw: Any
) -> dict[str, str] | None:
    """Celery router (CELERY_TASK_ROUTES): a sync someone waits for goes to the interactive
    queue, which workers take from first; other syncs to the default queue. Every send of the
    task passes here with its arguments (Connect, beat, a retry, a wait for the rate budget)."""
    if name != "sources.tasks.sync_connection":
        return None
    priority = (kwargs or {}).get("priority") or (args[1] if args and len(args) > 1 else SyncPriority.BACKFILL)
    if priority == SyncPriority.INTERACTIVE:
        return {"queue": settings.CELERY_INTERACTIVE_QUEUE}
    return None


@shared_task(bind=True, acks_late=True, max_retries=None)
def sync_connection(self: Task[..., None], connection_id: str, priority: str = "backfill") -> None:
    retry_after: float | None = None
    try:
        connection_sync(connection_id=connection_id, priority=priority)
        return
    except RetryLater as exc:
        if exc.waiting:
            wait_for_budget(connection_id, priority, exc.retry_after or 60.0)
            return
        reason: Exception = exc
        retry_after = exc.retry_after
    except (OperationalError, InterfaceError) as exc:  # the database went away between runs
        db.close()  # the next try opens a new connection
        reason = exc
    if self.request.retries >= settings.SYNC_MAX_RETRIES:
        log.warning("giving up on connection %s after %s retries: %s", connection_id, self.request.retries, reason)
        return
    countdown = backoff_delay(
        self.request.retries, base=settings.SYNC_RETRY_BASE_SECONDS, cap=3600, retry_after=retry_after
    )
    raise self.retry(countdown=countdown, exc=reason) from None


def wait_for_budget(connection_id: str, priority: str, wait: float) -> None:
    """The provider's shared rate budget frees in `wait` seconds: the sync is sent again for
    then (a little spread, so waiting connections don't all arrive at once), as a new task, since
    waiting is no failure to count against SYNC_MAX_RETRIES. A longer wait is looked at again
    after SYNC_REQUEUE_AFTER; beat sends the sync again only if this message is lost."""
    countdown = min(wait + random.uniform(0, min(wait * 0.1, 30.0)), float(settings.SYNC_REQUEUE_AFTER))
    Connection.objects.filter(pk=connection_id, status=ConnectionStatus.ACTIVE).update(
        next_sync_at=timezone.now() + timedelta(seconds=countdown + settings.SYNC_REQUEUE_AFTER)
    )
    sync_connection.apply_async((connection_id, priority), countdown=countdown)


@shared_task
def enqueue_due_syncs(limit: int = 500) -> int:
    """Beat: enqueue every active connection whose next incremental sync is due."""
    now = timezone.now()
    # A claim left by a crashed worker counts as free once stale (claim_sync takes it over),
    # or the connection would never be picked again.
    free = Q(sync_claimed_at__isnull=True) | Q(sync_claimed_at__lt=now - timedelta(seconds=settings.SYNC_CLAIM_TIMEOUT))
    due = list(
        Connection.objects.filter(free, status=ConnectionStatus.ACTIVE, next_sync_at__lte=now)
        .order_by("next_sync_at")
        .values_list("pk", flat=True)[:limit]
    )
    # Not due again until this attempt had time to run: a lost message is retried, a
    # backlogged queue is not flooded. A finished sync sets the real next time. It has waited
    # since it fell due (the queue's lag, in /metrics).
    Connection.objects.filter(pk__in=due).update(
        next_sync_at=now + timedelta(seconds=settings.SYNC_REQUEUE_AFTER),
        sync_queued_at=Coalesce(F("sync_queued_at"), F("next_sync_at")),
    )
    for connection_id in due:
        sync_connection.delay(connection_id)
    return len(due)


# A change whose connection is busy syncing is tried again after 1, 2, 4, ... seconds (at most
# PUSH_BUSY_WAIT apart), this many times: another change's short run ends soon, a long sync
# later. The busy sync also runs once more when it ends (sync_requested).
PUSH_BUSY_WAIT = 60
PUSH_BUSY_TRIES = 40


@shared_task(bind=True, acks_late=True, max_retries=None)
def push_sync(self: Task[..., None], connection_id: str, change: dict[str, str]) -> None:
    """Fetch what a provider's notification named (sources.push)."""
    try:
        run = connection_push(connection_id=connection_id, change=Change.from_json(change))
    except RetryLater as exc:
        if self.request.retries >= settings.SYNC_MAX_RETRIES:
            log.warning("giving up on a push sync of connection %s: %s", connection_id, exc)
            return
        countdown = backoff_delay(
            self.request.retries, base=settings.SYNC_RETRY_BASE_SECONDS, cap=3600, retry_after=exc.retry_after
        )
        raise self.retry(countdown=countdown, exc=exc) from None
    busy = run is None and Connection.objects.filter(pk=connection_id, status=ConnectionStatus.ACTIVE).exists()
    if busy and self.request.retries < PUSH_BUSY_TRIES:
        raise self.retry(countdown=min(PUSH_BUSY_WAIT, 2**self.request.retries))


@shared_task
def maintain_push() -> dict[str, str]:
    """Beat (and each worker's start): the providers' subscriptions, and old delivery keys."""
    prune_push_events()
    return push_maintain()


@worker_ready.connect
def _maintain_push_at_start(**kwargs: object) -> None:
    """A subscription is made as soon as a worker runs with the source configured."""
    try:
        maintain_push.delay()
    except Exception:
        log.warning("could not enqueue the push subscription check; beat will", exc_info=True)
