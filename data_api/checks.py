"""System checks of the notification settings: a mistake stops `manage.py check`, `migrate`,
`runserver`, gunicorn and the workers at startup, naming the setting."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from django.conf import settings
from django.core import checks

# An attempt must end well inside the delivery task's time limit (data_api.tasks).
MAX_NOTIFY_TIMEOUT = 30.0


@checks.register("notifications")
def check_notify_settings(app_configs: Sequence[Any] | None = None, **kwargs: Any) -> list[checks.CheckMessage]:
    raw = settings.NOTIFY_TIMEOUT_SECONDS
    try:
        value = float(raw)
    except (TypeError, ValueError):
        value = math.nan
    if isinstance(raw, bool) or not 0 < value <= MAX_NOTIFY_TIMEOUT:
        message = f"NOTIFY_TIMEOUT_SECONDS must be a number of seconds above 0 and at most {MAX_NOTIFY_TIMEOUT:g}"
        return [checks.Error(f"{message}, got {raw!r}", id="data_api.E001")]
    return []
