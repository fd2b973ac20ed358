"""Celery adapters: take ids, call the engine, decide when to try again."""

from __future__ import annotations

import logging
from datetime import timedelta

from celery import shared_task
from celery.app.task import Task
from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from .http import backoff_delay
from .models import Connection, ConnectionStatus
from .sync import RetryLater, connection_sync

log = logging.getLogger(__name__)


@shared_task(bind=True, acks_late=True, max_retries=None)
def sync_connection(self: Task[..., None], connection_id: str) -> None:
    try:
        connection_sync(connection_id=connection_id)
    except RetryLater as exc:
        if self.request.retries >= settings.SYNC_MAX_RETRIES:
            log.warning("giving up on connection %s after %s retries: %s", connection_id, self.request.retries, exc)
            return
        countdown = backoff_delay(
            self.request.retries, base=settings.SYNC_RETRY_BASE_SECONDS, cap=3600, retry_after=exc.retry_after
        )
        raise self.retry(countdown=countdown, exc=exc) from None


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
    # backlogged queue is not flooded. A finished sync sets the real next time.
    Connection.objects.filter(pk__in=due).update(next_sync_at=now + timedelta(minutes=15))
    for connection_id in due:
        sync_connection.delay(connection_id)
    return len(due)
