"""System checks of the HTTPS and key settings: a combination that contradicts itself stops
`manage.py check`, `migrate`, `runserver`, gunicorn and the workers at start, naming the setting."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from django.conf import settings
from django.core import checks

from . import crypto

# Browsers' HSTS preload list asks for a year at least, and for every subdomain.
PRELOAD_MIN_SECONDS = 31536000


def _error(message: str, code: str) -> checks.Error:
    return checks.Error(message, id=f"humanapi.{code}")


@checks.register("humanapi")
def check_https_settings(app_configs: Sequence[Any] | None = None, **kwargs: Any) -> list[checks.CheckMessage]:
    errors: list[checks.CheckMessage] = []
    hsts = settings.SECURE_HSTS_SECONDS
    https_only = settings.SECURE_SSL_REDIRECT or hsts > 0
    if not hsts and (settings.SECURE_HSTS_INCLUDE_SUBDOMAINS or settings.SECURE_HSTS_PRELOAD):
        errors.append(
            _error(
                "SECURE_HSTS_INCLUDE_SUBDOMAINS and SECURE_HSTS_PRELOAD do nothing without SECURE_HSTS_SECONDS",
                "E101",
            )
        )
    preload_ready = hsts >= PRELOAD_MIN_SECONDS and settings.SECURE_HSTS_INCLUDE_SUBDOMAINS
    if settings.SECURE_HSTS_PRELOAD and hsts and not preload_ready:
        errors.append(
            _error(
                f"SECURE_HSTS_PRELOAD needs SECURE_HSTS_SECONDS of at least {PRELOAD_MIN_SECONDS} and "
                "SECURE_HSTS_INCLUDE_SUBDOMAINS=1 (the browsers' preload list refuses less)",
                "E102",
            )
        )
    if https_only and not settings.SECURE_COOKIES:
        errors.append(
            _error(
                "SECURE_COOKIES=0 with SECURE_SSL_REDIRECT or SECURE_HSTS_SECONDS: a site served only over https "
                "must not send its session and CSRF cookies over http",
                "E103",
            )
        )
    if settings.SECURE_SSL_REDIRECT and settings.TRUSTED_PROXIES and not settings.TRUSTED_PROXY_TLS_HEADER:
        errors.append(
            _error(
                "SECURE_SSL_REDIRECT behind TRUSTED_PROXIES needs TRUSTED_PROXY_TLS_HEADER (e.g. "
                "'X-Forwarded-Proto: https'): without it every request looks like http and is redirected forever",
                "E104",
            )
        )
    if settings.TRUSTED_PROXY_TLS_HEADER and not settings.TRUSTED_PROXIES:
        errors.append(
            _error(
                "TRUSTED_PROXY_TLS_HEADER trusts a header only a reverse proxy may set: set TRUSTED_PROXIES to the "
                "number of proxies in front of the web processes (each must overwrite that header)",
                "E105",
            )
        )
    if https_only and settings.PUBLIC_BASE_URL.startswith("http://"):
        errors.append(
            _error(
                "PUBLIC_BASE_URL is http:// while SECURE_SSL_REDIRECT or SECURE_HSTS_SECONDS serve the site over "
                "https only: OAuth redirect URIs would point at http",
                "E106",
            )
        )
    for pattern in settings.SECURE_REDIRECT_EXEMPT:
        try:
            re.compile(pattern)
        except re.error as exc:
            errors.append(_error(f"SECURE_REDIRECT_EXEMPT has a bad regular expression {pattern!r}: {exc}", "E107"))
    return errors


@checks.register("humanapi")
def check_key_settings(app_configs: Sequence[Any] | None = None, **kwargs: Any) -> list[checks.CheckMessage]:
    errors: list[checks.CheckMessage] = []
    for n, key in enumerate(settings.FIELD_ENCRYPTION_KEYS, 1):
        problem = crypto.fernet_key_problem(key)
        if problem:
            errors.append(_error(f"FIELD_ENCRYPTION_KEYS entry {n} {problem}", "E108"))
    return errors
