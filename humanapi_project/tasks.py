"""Celery tasks of the project's operational pieces."""

from celery import shared_task

from .metrics import fold


@shared_task
def fold_metrics() -> None:
    """Beat, every minute: keep /metrics reading only the last minutes of runs and attempts."""
    fold()
