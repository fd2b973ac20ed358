import os
from typing import Any

from celery import Celery
from celery.signals import worker_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "humanapi_project.settings")

app = Celery("humanapi_project")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_init.connect
def check_settings(**kwargs: Any) -> None:
    """A worker with a misconfigured source stops at start, naming the setting."""
    from sources.checks import refuse_to_start_on_errors

    refuse_to_start_on_errors()
