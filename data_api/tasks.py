"""Webhook delivery. Retries are driven by beat from `next_attempt_at` rather than by long
Celery countdowns, which a Redis broker would redeliver past its visibility timeout."""

from datetime import timedelta

from celery import shared_task
from django.utils import timezone

from .models import Notification
from .notifications import deliver


@shared_task(acks_late=True)
def deliver_notification(notification_id: int) -> None:
    deliver(notification_id)


@shared_task
def enqueue_due_notifications(limit: int = 1000) -> int:
    now = timezone.now()
    due = list(
        Notification.objects.filter(next_attempt_at__lte=now, delivered_at__isnull=True, gave_up_at__isnull=True)
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:limit]
    )
    # Claimed for a while, so the next beat doesn't enqueue the same attempt again.
    Notification.objects.filter(pk__in=due).update(next_attempt_at=now + timedelta(minutes=5))
    for pk in due:
        deliver_notification.delay(pk)
    return len(due)
