"""Webhook delivery. Retries are driven by beat from `next_attempt_at` rather than by long
Celery countdowns, which a Redis broker would redeliver past its visibility timeout."""

from celery import shared_task
from django.utils import timezone

from .models import Notification
from .notifications import deliver, requeue_lease


# One attempt is at most NOTIFY_TIMEOUT_SECONDS (30 s at most) of HTTP and a few small writes; the
# limit only guards against a hang.
@shared_task(acks_late=True, soft_time_limit=50, time_limit=60)
def deliver_notification(notification_id: int) -> None:
    deliver(notification_id)


@shared_task
def enqueue_due_notifications(limit: int = 1000) -> int:
    """Beat: publish every notification whose next attempt is due."""
    now = timezone.now()
    due = list(
        Notification.objects.filter(next_attempt_at__lte=now, delivered_at__isnull=True, gave_up_at__isnull=True)
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:limit]
    )
    # Leased for a while, so the next beat doesn't publish the same attempt again.
    Notification.objects.filter(pk__in=due).update(next_attempt_at=now + requeue_lease())
    for pk in due:
        deliver_notification.delay(pk)
    return len(due)
