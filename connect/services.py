"""Writes of the connect app: applications, humans, tokens."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.http import HttpRequest
from django.utils import timezone

from humanapi_project import crypto

from .audit import audit
from .models import Actor, Application, Human, Token, TokenKind


class ExchangeError(Exception):
    def __init__(self, status: int, message: str, keys: list[str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.keys = keys


@dataclass
class CreatedApplication:
    application: Application
    client_secret: str
    app_key: str
    webhook_secret: str

    def as_json(self) -> dict[str, str]:
        return {
            "client_id": self.application.client_id,
            "client_secret": self.client_secret,
            "app_key": self.app_key,
            "webhook_secret": self.webhook_secret,
        }


def application_create(*, name: str, origins: list[str], notify_url: str = "") -> CreatedApplication:
    client_secret = crypto.new_token()
    app_key = crypto.new_token(24)
    webhook_secret = "whsec_" + secrets.token_hex(24)
    application = Application.objects.create(
        name=name,
        client_secret_hash=crypto.token_hash(client_secret),
        app_key_hash=crypto.token_hash(app_key),
        webhook_secret_sealed=crypto.encrypt_json(webhook_secret),
        allowed_origins=[o.rstrip("/") for o in origins],
        notify_url=notify_url,
    )
    audit("application.created", actor=Actor.OPERATOR, application=application, name=name, origins=origins)
    return CreatedApplication(application, client_secret, app_key, webhook_secret)


def authenticate_client(client_id: str, client_secret: str) -> Application:
    application = Application.objects.filter(client_id=client_id).first() if client_id else None
    # Compare even when the id is unknown, so timing doesn't tell which ids exist.
    stored = application.client_secret_hash if application else crypto.token_hash("no-such-application")
    if not crypto.hashes_match(client_secret or "", stored) or application is None:
        raise ExchangeError(401, "Invalid client credentials")
    return application


def human_for_session(application: Application, client_user_id: str, email: str) -> Human:
    try:
        with transaction.atomic():
            human, created = Human.objects.get_or_create(
                application=application, client_user_id=client_user_id, defaults={"email": email}
            )
    except IntegrityError:  # a concurrent first exchange created it
        human, created = Human.objects.get(application=application, client_user_id=client_user_id), False
    if not created and email and human.email != email:
        Human.objects.filter(pk=human.pk).update(email=email, updated_at=timezone.now())
        human.email = email
    return human


def token_exchange(*, data: dict[str, str], request: HttpRequest | None) -> dict[str, Any]:
    """CONTRACT §2. `data` has been checked for presence and length by the view."""
    application = authenticate_client(data["client_id"], data["client_secret"])
    kind = data["type"]
    client_user_id = data.get("client_user_id", "")
    if kind == "refresh":
        return _refresh(application, data.get("refresh_token", ""), request)
    if kind == "session":
        human = human_for_session(application, client_user_id, data.get("client_user_email", ""))
        _token, value = Token.mint(kind=TokenKind.SESSION, human=human, ttl=settings.SESSION_TOKEN_TTL)
        _audit_exchange(application, human, kind, request)
        return {"session_token": value, "expires_in": settings.SESSION_TOKEN_TTL, "human_id": human.pk}
    existing = Human.objects.filter(application=application, client_user_id=client_user_id).first()
    if existing is None:
        raise ExchangeError(404, "No user with this client_user_id; open Connect with a session token first")
    if kind == "id":
        _token, value = Token.mint(kind=TokenKind.ID, human=existing, ttl=settings.SESSION_TOKEN_TTL)
        _audit_exchange(application, existing, kind, request)
        return {"id_token": value, "id_token_expires_in": settings.SESSION_TOKEN_TTL, "human_id": existing.pk}
    # access
    if not existing.connections.exclude(status="disconnected").exists():
        raise ExchangeError(404, "This user has not connected any source yet")
    body = _mint_access(existing, family=secrets.token_hex(8))
    _audit_exchange(application, existing, kind, request)
    return body


def _mint_access(human: Human, family: str) -> dict[str, Any]:
    _access, access_value = Token.mint(kind=TokenKind.ACCESS, human=human, ttl=settings.ACCESS_TOKEN_TTL)
    _refresh_token, refresh_value = Token.mint(
        kind=TokenKind.REFRESH, human=human, ttl=settings.REFRESH_TOKEN_TTL, family=family
    )
    return {
        "access_token": access_value,
        "expires_in": settings.ACCESS_TOKEN_TTL,
        "token_type": "Bearer",
        "refresh_token": refresh_value,
        "human_id": human.pk,
    }


def _refresh(application: Application, value: str, request: HttpRequest | None) -> dict[str, Any]:
    token = Token.find(value, (TokenKind.REFRESH,))
    if token is None or token.application_id != application.pk:
        raise ExchangeError(401, "Invalid refresh token")
    now = timezone.now()
    # Claim the token: of two concurrent uses, exactly one wins.
    claimed = Token.objects.filter(pk=token.pk, revoked_at__isnull=True, expires_at__gt=now).update(revoked_at=now)
    if not claimed:
        if token.revoked_at is not None:
            # A spent refresh token came back: assume it leaked and end the whole chain.
            Token.objects.filter(family=token.family, kind=TokenKind.REFRESH, revoked_at__isnull=True).update(
                revoked_at=now
            )
            audit(
                "token.refresh_reused",
                actor=Actor.APP_SERVER,
                application=application,
                human_id=token.human_id,
                request=request,
            )
        raise ExchangeError(401, "Refresh token expired or already used")
    body = _mint_access(token.human, family=token.family)
    _audit_exchange(application, token.human, "refresh", request)
    return body


def _audit_exchange(application: Application, human: Human, kind: str, request: HttpRequest | None) -> None:
    audit(
        "token.exchange", actor=Actor.APP_SERVER, application=application, human_id=human.pk, request=request, type=kind
    )


def resolve_connect_token(value: str) -> tuple[Token | None, str]:
    """The token that opens Connect, and a status: "" when usable, else the CONTRACT §3 status."""
    if not value:
        return None, "MISSING_SESSION_TOKEN"
    token = Token.find(value, (TokenKind.SESSION, TokenKind.ID, TokenKind.PUBLIC))
    if token is None or token.revoked_at is not None:
        return None, "SESSION_TOKEN_INVALID"
    if token.is_expired():
        return None, "SESSION_TOKEN_EXPIRED"
    return token, ""


def revoke_expired_tokens(batch: int = 5000) -> int:
    """Delete tokens that expired more than a day ago, in batches (a maintenance task)."""
    cutoff = timezone.now() - timedelta(days=1)
    total = 0
    while True:
        ids = list(Token.objects.filter(expires_at__lt=cutoff).values_list("pk", flat=True)[:batch])
        if not ids:
            return total
        total += Token.objects.filter(pk__in=ids).delete()[0]
