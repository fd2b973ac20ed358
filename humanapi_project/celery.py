import logging
import os
from typing import Any

from celery import Celery
from celery.signals import after_setup_logger, after_setup_task_logger, worker_init

from .log_redaction import redact_handlers

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "humanapi_project.settings")

app = Celery("humanapi_project")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_init.connect
def check_settings(**kwargs: Any) -> None:
    """A worker with a misconfigured source stops at start, naming the setting."""
    from sources.checks import refuse_to_start_on_errors

    refuse_to_start_on_errors()


@after_setup_logger.connect
@after_setup_task_logger.connect
def redact_worker_logs(logger: logging.Logger, **kwargs: Any) -> None:
    """A worker replaces the root handlers of settings.LOGGING with its own: they redact secrets too."""
    redact_handlers(logger)
