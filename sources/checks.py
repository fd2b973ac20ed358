"""System checks of the sources' settings: a mistake stops `manage.py check`, `migrate`,
`runserver` and the workers at startup, naming the setting, instead of reaching a user."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured

from .base import INTEGER_SETTINGS, RATE_LIMIT_SETTINGS, URL_SETTINGS
from .ratebudget import parse_limits
from .registry import plugin_classes, source_settings

_HOST = re.compile(r"^[A-Za-z0-9.-]+$|^\[[0-9A-Fa-f:.]+\]$")


@checks.register("sources")
def check_source_settings(app_configs: Sequence[Any] | None = None, **kwargs: Any) -> list[checks.CheckMessage]:
    errors: list[checks.CheckMessage] = []
    installed = plugin_classes()
    for slug, cls in installed.items():
        values = source_settings(slug)
        for key in URL_SETTINGS:
            if values.get(key):
                errors.extend(_url_errors(f"SOURCE_{slug.upper()}_{key}", values[key]))
        for key, minimum in {**INTEGER_SETTINGS, **cls.integer_settings}.items():
            raw = values.get(key, "")
            if raw and not (raw.strip().isascii() and raw.strip().isdigit() and int(raw) >= minimum):
                name = f"SOURCE_{slug.upper()}_{key}"
                errors.append(_error(f"{name} must be a whole number of at least {minimum}, got {raw!r}", "E002"))
        for key in RATE_LIMIT_SETTINGS:
            try:
                parse_limits((values.get(key) or "").strip() or "off")
            except ValueError as exc:
                name = f"SOURCE_{slug.upper()}_{key}"
                errors.append(_error(f"{name} must be count/seconds[/rolling], comma-separated, or off: {exc}", "E007"))
        try:
            plugin = cls(values)
            plugin.check_settings()
        except ImproperlyConfigured as exc:
            errors.append(_error(str(exc), "E003"))
    if not 0 <= settings.PROVIDER_RATE_RESERVE <= 90:
        reserve = settings.PROVIDER_RATE_RESERVE
        errors.append(_error(f"PROVIDER_RATE_RESERVE must be a percent from 0 to 90, got {reserve}"))
    for name in ("SOURCES_ENABLED", "SOURCE_PRIORITY"):
        unknown = [slug for slug in getattr(settings, name) if slug not in installed]
        if unknown:
            errors.append(_error(f"{name} names unknown sources: {', '.join(unknown)} (known: {', '.join(installed)})"))
    return errors


@checks.register("sources")
def check_public_base_url(app_configs: Sequence[Any] | None = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """PUBLIC_BASE_URL is where providers call back (OAuth redirects, /hooks/<slug>): an http(s)
    origin, optionally with a path prefix, without credentials, query or fragment."""
    value = settings.PUBLIC_BASE_URL
    if not value:
        return []
    errors = _http_url_errors("PUBLIC_BASE_URL", value, "E006")
    if not errors and (urlsplit(value).query or urlsplit(value).fragment):
        errors = [_error("PUBLIC_BASE_URL must be an origin and path only (no query or fragment)", "E006")]
    return errors


@checks.register("sources")
def check_queue_settings(app_configs: Sequence[Any] | None = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Interactive syncs need a queue of their own: one shared with the backfills would put them
    back behind every queued sync."""
    name = settings.CELERY_INTERACTIVE_QUEUE
    if not name.strip():
        return [_error("CELERY_INTERACTIVE_QUEUE must name a queue, got an empty value", "E008")]
    others = {
        "CELERY_TASK_DEFAULT_QUEUE": settings.CELERY_TASK_DEFAULT_QUEUE,
        "CELERY_NOTIFY_QUEUE": settings.CELERY_NOTIFY_QUEUE,
    }
    clash = [other for other, value in others.items() if value == name]
    if clash:
        return [_error(f"CELERY_INTERACTIVE_QUEUE ({name!r}) must differ from {' and '.join(clash)}", "E008")]
    return []


def _http_url_errors(name: str, value: str, code: str) -> list[checks.CheckMessage]:
    """An http(s) URL with a well-formed host and port, and no credentials."""
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname or not _HOST.match(parts.netloc.split(":")[0]):
        return [_error(f"{name} is not an http(s) URL: {value!r}", code)]
    try:
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        return [_error(f"{name} has a malformed port: {value!r}", code)]
    if parts.username or parts.password:
        return [_error(f"{name} must not carry credentials in the URL", code)]
    return []


def _url_errors(name: str, value: str) -> list[checks.CheckMessage]:
    errors = _http_url_errors(name, value, "E001")
    if errors:
        return errors
    if urlsplit(value.strip()).scheme == "http" and not settings.ALLOW_HTTP_PROVIDERS:
        return [
            _error(
                f"{name} is plain http ({value!r}); use https, or set ALLOW_HTTP_PROVIDERS=1 for an emulator or "
                "local development",
                "E004",
            )
        ]
    return []


def _error(message: str, code: str = "E005") -> checks.Error:
    return checks.Error(message, id=f"sources.{code}")


def refuse_to_start_on_errors() -> None:
    """For processes that don't run Django's checks themselves (gunicorn, Celery workers): stop
    with the settings' names rather than serve, or sync, with a broken configuration."""
    found = [m for m in checks.run_checks(tags=["sources", "notifications", "humanapi", "ratelimit"]) if m.is_serious()]
    if found:
        raise ImproperlyConfigured("; ".join(str(m.msg) for m in found))
