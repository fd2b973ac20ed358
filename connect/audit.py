"""The audit log: who did what, for which Application and Human, from where. Never secrets."""

import hashlib
import ipaddress
from typing import Any

from django.conf import settings
from django.http import HttpRequest

from .models import Actor, Application, AuditEntry

# Keys that must never reach the audit log, whatever a caller passes.
_SECRET_KEYS = {
    "password",
    "client_secret",
    "app_key",
    "webhook_secret",
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


# Detail keys that say who a Human is to the Application (or to anyone), whatever their value.
_IDENTIFYING_KEYS = {"external_id", "externalid", "client_user_id", "clientuserid", "email", "client_user_email"}


def deleted_user_marker(human_id: str) -> str:
    """What the audit log says instead of a deleted Human's external id or email: the same for
    every entry of that Human, naming nobody."""
    return "deleted user " + hashlib.sha256(human_id.encode()).hexdigest()[:16]


def redact_deleted_human(human_id: str, identifiers: set[str]) -> int:
    """A deleted Human's entries keep what happened, when, by whom and from where, but no longer
    who the person was: identifying details (and any detail equal to one of `identifiers`,
    their external id and email) become the marker. The only change ever made to the log.
    Returns how many entries changed."""
    marker = deleted_user_marker(human_id)
    values = {value for value in identifiers if value}
    changed = 0
    for entry in AuditEntry.objects.filter(human_id=human_id).only("pk", "details").iterator(chunk_size=2000):
        details = _redacted(entry.details, values, marker)
        if details != entry.details:
            AuditEntry.objects.filter(pk=entry.pk).update(details=details)
            changed += 1
    return changed


def _redacted(value: Any, identifiers: set[str], marker: str, key: str = "") -> Any:
    if isinstance(value, dict):
        return {k: _redacted(v, identifiers, marker, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_redacted(v, identifiers, marker, key) for v in value]
    if isinstance(value, str) and value and (value in identifiers or key.lower() in _IDENTIFYING_KEYS):
        return marker
    return value
