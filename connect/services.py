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
from sources.models import Connection, ConnectionStatus
from sources.services import audit_connection

from .audit import audit
from .models import Actor, Application, Human, SignatureMode, Token, TokenKind, origins_normalize


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


def _new_client_secret() -> str:
    return crypto.new_token()


def _new_app_key() -> str:
    return crypto.new_token(24)


def _new_webhook_secret() -> str:
    return "whsec_" + secrets.token_hex(24)


def _client_secret_stored(value: str, signature_mode: str) -> dict[str, str]:
    """How a client secret is kept: its hash, and, only while notifications are signed with it
    (signature_mode "humanapi"), the secret itself, encrypted."""
    sealed = crypto.encrypt_json(value) if signature_mode == SignatureMode.HUMANAPI else ""
    return {"client_secret_hash": crypto.token_hash(value), "client_secret_sealed": sealed}


def application_create(
    *,
    name: str,
    origins: list[str],
    notify_url: str = "",
    operator: str = "",
    signature_mode: str = SignatureMode.DEFAULT,
) -> CreatedApplication:
    """ValueError if an origin is not one (see origin_normalize), or the signature mode unknown."""
    origins = origins_normalize(origins)
    if signature_mode not in SignatureMode.values:
        raise ValueError(f"unknown signature mode {signature_mode!r} (one of {', '.join(SignatureMode.values)})")
    client_secret, app_key, webhook_secret = _new_client_secret(), _new_app_key(), _new_webhook_secret()
    application = Application.objects.create(
        name=name,
        **_client_secret_stored(client_secret, signature_mode),
        signature_mode=signature_mode,
        app_key_hash=crypto.token_hash(app_key),
        webhook_secret_sealed=crypto.encrypt_json(webhook_secret),
        allowed_origins=origins,
        notify_url=notify_url,
    )
    details: dict[str, Any] = {"name": name, "origins": origins}
    if signature_mode != SignatureMode.DEFAULT:
        details["signature_mode"] = signature_mode
    if operator:
        details["operator"] = operator
    audit("application.created", actor=Actor.OPERATOR, application=application, **details)
    return CreatedApplication(application, client_secret, app_key, webhook_secret)


# What `rotate_secret --what` and the admin's actions can renew, and the JSON key of the new value.
ROTATABLE = {"client-secret": "client_secret", "app-key": "app_key", "webhook-secret": "webhook_secret"}


def application_rotate_secret(
    application: Application, what: str, *, operator: str = "", request: HttpRequest | None = None
) -> str:
    """Replace one of the Application's secrets with a new random value and return it (the only
    time it is seen). The old value stops working at once: there is no grace period, so the app's
    server must be given the new value right away. Tokens already issued stay valid; webhooks
    not yet delivered are signed with the new secret. Audited without the value."""
    if what == "client-secret":
        value = _new_client_secret()
        stored = _client_secret_stored(value, application.signature_mode)
    elif what == "app-key":
        value = _new_app_key()
        stored = {"app_key_hash": crypto.token_hash(value)}
    elif what == "webhook-secret":
        value = _new_webhook_secret()
        stored = {"webhook_secret_sealed": crypto.encrypt_json(value)}
    else:
        raise ValueError(f"unknown secret {what!r} (one of {', '.join(ROTATABLE)})")
    with transaction.atomic():
        Application.objects.filter(pk=application.pk).update(**stored, updated_at=timezone.now())
        details: dict[str, Any] = {"rotated": what}
        if operator:
            details["operator"] = operator
        audit("application.secret_rotated", actor=Actor.OPERATOR, application=application, request=request, **details)
    for field, stored_value in stored.items():
        setattr(application, field, stored_value)
    return value


def application_set_signature_mode(
    application: Application,
    mode: str,
    *,
    replace_client_secret: bool = False,
    operator: str = "",
    request: HttpRequest | None = None,
) -> str:
    """Sign the Application's notifications by `mode`. "humanapi" keys them with the client
    secret, of which only a hash is kept unless the mode is already on: switching to it then
    replaces the client secret (only with `replace_client_secret`, else ValueError), keeps the
    new one encrypted and returns it (the only time it is seen; the old one stops working at
    once). Back to "default", the encrypted copy is dropped. Returns "" when no secret changed.
    Audited without the value."""
    if mode not in SignatureMode.values:
        raise ValueError(f"unknown signature mode {mode!r} (one of {', '.join(SignatureMode.values)})")
    value, stored = "", {"signature_mode": mode, "client_secret_sealed": ""}
    if mode == SignatureMode.HUMANAPI:
        if application.signature_mode == mode and application.client_secret_sealed:
            stored = {"signature_mode": mode}
        elif not replace_client_secret:
            raise ValueError(
                "Human API signatures are keyed with the client secret, which is stored only as a hash: "
                "switching replaces the client secret (the old one stops working at once)"
            )
        else:
            value = _new_client_secret()
            stored = {"signature_mode": mode, **_client_secret_stored(value, mode)}
    with transaction.atomic():
        Application.objects.filter(pk=application.pk).update(**stored, updated_at=timezone.now())
        details: dict[str, Any] = {"signature_mode": mode, "client_secret_replaced": bool(value)}
        if operator:
            details["operator"] = operator
        audit(
            "application.signature_mode_set", actor=Actor.OPERATOR, application=application, request=request, **details
        )
    for field, stored_value in stored.items():
        setattr(application, field, stored_value)
    return value


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
    # The access token joins its refresh token's family: ending a leaked chain ends both.
    _access, access_value = Token.mint(kind=TokenKind.ACCESS, human=human, ttl=settings.ACCESS_TOKEN_TTL, family=family)
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
            # A spent refresh token came back: assume it leaked and end the whole chain, the
            # access tokens minted from it included.
            Token.objects.filter(
                family=token.family, kind__in=(TokenKind.REFRESH, TokenKind.ACCESS), revoked_at__isnull=True
            ).update(revoked_at=now)
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


def legacy_tokens_exchange(
    *, human_id: str, client_id: str, client_secret: str, session_token: str, request: HttpRequest | None
) -> dict[str, Any]:
    """Human API v1 `POST /v1/connect/tokens`: a Connect session token (or id token) of this
    Application and Human becomes an access token and a new public token.

    The session token is not consumed: it stays usable until it expires, as Connect may still be
    open with it. v1 clients have no refresh flow and keep the access token, so it lives
    LEGACY_ACCESS_TOKEN_TTL (default a year) rather than ACCESS_TOKEN_TTL. As with `type=access`,
    a Human who has connected nothing yet gets a 404.
    """
    application = authenticate_client(client_id, client_secret)
    token = Token.find(session_token, (TokenKind.SESSION, TokenKind.ID))
    valid = token is not None and token.application_id == application.pk and token.human_id == human_id
    if token is None or not valid or not token.is_usable():
        raise ExchangeError(401, "Invalid or expired sessionToken for this humanId")
    human = token.human
    if not human.connections.exclude(status="disconnected").exists():
        raise ExchangeError(404, "This user has not connected any source yet")
    _access, access_value = Token.mint(kind=TokenKind.ACCESS, human=human, ttl=settings.LEGACY_ACCESS_TOKEN_TTL)
    public_value = public_token_issue(human)
    _audit_exchange(application, human, "legacy", request)
    return {
        "humanId": human.pk,
        "accessToken": access_value,
        "publicToken": public_value,
        "clientId": application.client_id,
        "clientUserId": human.client_user_id,
    }


def legacy_public_token_exchange(
    *, human_id: str, client_id: str, client_secret: str, request: HttpRequest | None
) -> dict[str, Any]:
    """Human API v1 `POST /v1/connect/publictokens`: a new public token for one of the
    Application's Humans (its earlier public tokens stop working, see `public_token_issue`)."""
    application = authenticate_client(client_id, client_secret)
    human = Human.objects.filter(pk=human_id, application=application).first()
    if human is None:
        raise ExchangeError(404, "No user with this humanId in this application")
    value = public_token_issue(human)
    _audit_exchange(application, human, "public", request)
    return {"humanId": human.pk, "publicToken": value}


def public_token_issue(human: Human) -> str:
    """Mint the Human's public token. A Human has at most one live public token: minting a new
    one revokes the others (the Human row is locked so two concurrent mints can't both survive)."""
    with transaction.atomic():
        Human.objects.select_for_update().filter(pk=human.pk).first()
        Token.objects.filter(human=human, kind=TokenKind.PUBLIC, revoked_at__isnull=True).update(
            revoked_at=timezone.now()
        )
        _token, value = Token.mint(kind=TokenKind.PUBLIC, human=human, ttl=settings.PUBLIC_TOKEN_TTL)
    return value


def public_tokens_rotate(*, human: Human, session: Token) -> int:
    """After a new connection made in Connect, the Human's public tokens rotate: every earlier
    one is revoked, so a leaked public token can't be used to see or change the new connection.

    The app gets the new one as a v1 client always did after Connect finishes: from
    `POST /v1/connect/tokens` or `POST /v1/connect/publictokens`. The public token that opened
    the running Connect session (if it is one) is not revoked but cut to at most
    SESSION_TOKEN_TTL from now, so the user can finish the session. Returns how many were revoked.
    """
    now = timezone.now()
    earlier = Token.objects.filter(human=human, kind=TokenKind.PUBLIC, revoked_at__isnull=True)
    revoked = earlier.exclude(pk=session.pk).update(revoked_at=now)
    if session.kind == TokenKind.PUBLIC:
        cap = now + timedelta(seconds=settings.SESSION_TOKEN_TTL)
        Token.objects.filter(pk=session.pk, expires_at__gt=cap).update(expires_at=cap)
    return revoked


def connect_completed(
    *, session: Token, connection: Connection, previous_status: str | None, request: HttpRequest | None
) -> None:
    """What Connect does after any successful connection (credential form or OAuth): rotate the
    public tokens and, when the connection needed reauthorization, record that it got it."""
    public_tokens_rotate(human=session.human, session=session)
    if previous_status == ConnectionStatus.REAUTH_REQUIRED:
        audit_connection("connection.reauthorized", connection, Actor.END_USER, request)


def previous_status(human: Human, slug: str) -> str | None:
    return Connection.objects.filter(human=human, source=slug).values_list("status", flat=True).first()


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
