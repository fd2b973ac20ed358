"""The audit log: who did what, for which Application and Human, from where. Never secrets."""

import ipaddress
from typing import Any

from django.conf import settings
from django.http import HttpRequest

from .models import Actor, Application, AuditEntry

# Keys that must never reach the audit log, whatever a caller passes.
_SECRET_KEYS = {
    "password",
    "client_secret",
    "secret",
    "token",
    "access_token",
    "refresh_token",
    "session_token",
    "id_token",
    "public_token",
    "code",
    "code_verifier",
    "state",
    "csrf",
}


def client_ip(request: HttpRequest | None) -> str | None:
    """The client's address. Behind TRUSTED_PROXIES reverse proxies, the address the outermost
    trusted proxy saw (X-Forwarded-For, counted from the right: entries further left are
    whatever the client claimed and can't be trusted)."""
    if request is None:
        return None
    remote = request.META.get("REMOTE_ADDR") or None
    proxies = settings.TRUSTED_PROXIES
    if not proxies:
        return remote
    hops = [h.strip() for h in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if h.strip()]
    if len(hops) < proxies:
        return remote
    candidate = hops[-proxies]
    try:
        return str(ipaddress.ip_address(candidate))
    except ValueError:
        return remote


def audit(
    action: str,
    *,
    actor: str,
    application: Application | None = None,
    human_id: str = "",
    request: HttpRequest | None = None,
    **details: Any,
) -> AuditEntry:
    clean = {key: value for key, value in details.items() if key.lower() not in _SECRET_KEYS}
    return AuditEntry.objects.create(
        action=action,
        actor=Actor(actor),
        application=application,
        human_id=human_id,
        ip=client_ip(request),
        details=clean,
    )
