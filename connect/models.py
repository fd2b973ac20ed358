import ipaddress
import re
import secrets
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone

from humanapi_project import crypto


def new_human_id() -> str:
    return secrets.token_hex(12)


def new_client_id() -> str:
    return secrets.token_hex(20)


_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


def origin_normalize(value: str) -> str:
    """`https://app.example.com[:port]` from what an operator typed; ValueError if not exactly one
    origin. It goes into Connect's `frame-ancestors` and is a postMessage target, so anything
    else (a space and a `*`, a `;`, a wildcard host, credentials) would widen who may frame
    Connect, or break its messages."""
    text = value.strip()
    problem = ValueError(f"{value!r} is not an origin like https://app.example.com")
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or parts.path not in ("", "/") or parts.query or parts.fragment:
        raise problem
    host = (parts.hostname or "").lower()
    try:
        port = parts.port
    except ValueError:
        raise problem from None
    if parts.username is not None or parts.password is not None or not _is_host(host):
        raise problem
    if port is not None and not 0 < port < 65536:
        raise problem
    shown = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{shown}" + (f":{port}" if port is not None else "")


def _is_host(host: str) -> bool:
    """A DNS name or an IP address, and nothing else (no `*`, no spaces)."""
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    labels = host.split(".")
    return 0 < len(host) <= 253 and all(_LABEL.fullmatch(label) for label in labels)


def origins_normalize(values: Any) -> list[str]:
    """Every origin of a list normalized; ValueError naming the first that is not one."""
    if not isinstance(values, list | tuple) or not all(isinstance(v, str) for v in values):
        raise ValueError("allowed origins must be a list of origins like https://app.example.com")
    return [origin_normalize(v) for v in values]


class SignatureMode(models.TextChoices):
    """How notifications are signed (README "Webhook signatures")."""

    DEFAULT = "default", "t=...,v1=... (HMAC-SHA256 keyed with the webhook secret)"
    HUMANAPI = "humanapi", "as Human API signs (HMAC-SHA1 keyed with the client secret)"


class Application(models.Model):
    """One client app, one tenant. Secrets are stored as hashes; the webhook secret encrypted, and
    the client secret encrypted too while notifications are signed as Human API signs them (the
    key is the client secret, so it must be at hand), never otherwise."""

    name = models.CharField(max_length=200)
    client_id = models.CharField(max_length=64, unique=True, default=new_client_id)
    client_secret_hash = models.CharField(max_length=64)
    app_key_hash = models.CharField(max_length=64)
    webhook_secret_sealed = models.TextField(blank=True, default="")
    signature_mode = models.CharField(max_length=16, choices=SignatureMode.choices, default=SignatureMode.DEFAULT)
    # Only while signature_mode is "humanapi"; written when the client secret is created or replaced.
    client_secret_sealed = models.TextField(blank=True, default="")
    allowed_origins = models.JSONField(default=list, blank=True)
    notify_url = models.URLField(blank=True, default="")
    # Per-application source configuration (e.g. Humanity's client id and secret), encrypted.
    source_config_sealed = models.TextField(blank=True, default="")
    # Which source answers a day's summary when a Human has several: comma-separated slugs,
    # first wins. Blank: the SOURCE_PRIORITY setting.
    source_priority = models.CharField(
        max_length=500,
        blank=True,
        default="",
        help_text="Comma-separated source slugs, first wins (blank: the SOURCE_PRIORITY setting).",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.name} ({self.client_id})"

    def clean(self) -> None:
        try:
            self.allowed_origins = origins_normalize(self.allowed_origins)
        except ValueError as exc:
            raise ValidationError({"allowed_origins": str(exc)}) from None

    def check_client_secret(self, secret: str) -> bool:
        return crypto.hashes_match(secret, self.client_secret_hash)

    def check_app_key(self, key: str) -> bool:
        return crypto.hashes_match(key, self.app_key_hash)

    @property
    def webhook_secret(self) -> str:
        return str(crypto.decrypt_json(self.webhook_secret_sealed) or "")

    @property
    def client_secret(self) -> str:
        """The client secret, if it is kept to sign notifications ("" otherwise)."""
        return str(crypto.decrypt_json(self.client_secret_sealed) or "")

    def source_config(self, slug: str) -> dict[str, str]:
        config = crypto.decrypt_json(self.source_config_sealed) or {}
        return dict(config.get(slug, {}))

    @property
    def summary_priority(self) -> list[str]:
        """Source slugs in the order they answer a day's summary (not every source need be named)."""
        own = [slug.strip() for slug in self.source_priority.split(",") if slug.strip()]
        return own or list(settings.SOURCE_PRIORITY)

    def allows_origin(self, origin: str) -> bool:
        return origin.rstrip("/") in {o.rstrip("/") for o in self.allowed_origins}


class Human(models.Model):
    """One end user of one Application, known to the app by its own `client_user_id`."""

    id = models.CharField(primary_key=True, max_length=32, default=new_human_id, editable=False)
    application = models.ForeignKey(Application, on_delete=models.CASCADE, related_name="humans")
    client_user_id = models.CharField(max_length=255)
    email = models.CharField(max_length=320, blank=True, default="")
    default_time_zone = models.CharField(max_length=64, blank=True, default="UTC")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["application", "client_user_id"], name="human_unique_client_user"),
        ]

    def __str__(self) -> str:
        return f"{self.id} ({self.client_user_id})"


class TokenKind(models.TextChoices):
    SESSION = "session"
    ID = "id"
    ACCESS = "access"
    REFRESH = "refresh"
    PUBLIC = "public"


class TokenQuerySet(models.QuerySet["Token"]):
    def live(self, now: datetime | None = None) -> "TokenQuerySet":
        return self.filter(revoked_at__isnull=True, expires_at__gt=now or timezone.now())


class Token(models.Model):
    """A bearer token of any kind. Only its SHA-256 is kept; the value is shown once."""

    kind = models.CharField(max_length=16, choices=TokenKind.choices)
    token_hash = models.CharField(max_length=64, unique=True)
    application = models.ForeignKey(Application, on_delete=models.CASCADE, related_name="tokens")
    human = models.ForeignKey(Human, on_delete=models.CASCADE, related_name="tokens")
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True)
    # Refresh tokens of one chain share a family, so a replayed one can revoke the chain.
    family = models.CharField(max_length=32, blank=True, default="")

    objects = TokenQuerySet.as_manager()

    class Meta:
        indexes = [models.Index(fields=["expires_at"], name="token_expires_idx")]

    def __str__(self) -> str:
        return f"{self.kind} token of {self.human_id}"

    def is_expired(self, now: datetime | None = None) -> bool:
        return self.expires_at <= (now or timezone.now())

    def is_usable(self, now: datetime | None = None) -> bool:
        return self.revoked_at is None and not self.is_expired(now)

    @classmethod
    def mint(cls, *, kind: str, human: Human, ttl: int, family: str = "") -> tuple["Token", str]:
        value = crypto.new_token()
        token = cls.objects.create(
            kind=kind,
            token_hash=crypto.token_hash(value),
            application_id=human.application_id,
            human=human,
            expires_at=timezone.now() + timedelta(seconds=ttl),
            family=family,
        )
        return token, value

    @classmethod
    def find(cls, value: str, kinds: tuple[str, ...]) -> "Token | None":
        """The token with this value, whatever its state, or None. Lookup is by hash."""
        if not value or len(value) > 200:
            return None
        return (
            cls.objects.select_related("human", "application")
            .filter(token_hash=crypto.token_hash(value), kind__in=kinds)
            .first()
        )


class Actor(models.TextChoices):
    END_USER = "end_user"
    APP_SERVER = "app_server"
    OPERATOR = "operator"
    SYSTEM = "system"


class AuditEntry(models.Model):
    """Append-only: rows are only ever inserted (see connect.audit), except that a deleted
    Human's external id and email are replaced by a marker (audit.redact_deleted_human)."""

    at = models.DateTimeField(default=timezone.now, db_index=True)
    application = models.ForeignKey(Application, null=True, blank=True, on_delete=models.SET_NULL)
    # Kept as plain ids so the trail outlives a deleted Human.
    human_id = models.CharField(max_length=32, blank=True, default="", db_index=True)
    actor = models.CharField(max_length=16, choices=Actor.choices)
    action = models.CharField(max_length=64)
    ip = models.GenericIPAddressField(null=True, blank=True)
    details = models.JSONField(default=dict, blank=True)

    class Meta:
        indexes = [models.Index(fields=["application", "-at", "-id"], name="audit_app_at_idx")]
        verbose_name_plural = "audit entries"

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.action}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.pk is not None:
            raise ValueError("audit entries are append-only")
        super().save(*args, **kwargs)


class OAuthState(models.Model):
    """One pending OAuth2 authorization of a source, started from one Connect session.

    The `state` value sent to the provider is random and kept here only as a hash; the row is
    consumed once by a conditional UPDATE (see connect.oauth). `sealed` holds, encrypted, what the
    callback needs and must not be readable from the database: the PKCE verifier and, in redirect
    mode, the Connect token to send the user back with.
    """

    state_hash = models.CharField(max_length=64, unique=True)
    connect_token = models.ForeignKey(Token, on_delete=models.CASCADE, related_name="+")
    human = models.ForeignKey(Human, on_delete=models.CASCADE, related_name="+")
    source = models.CharField(max_length=64)
    redirect_uri = models.CharField(max_length=500)
    # Hash of a cookie set on the browser that started the flow: the callback must come from it.
    browser_hash = models.CharField(max_length=64)
    redirect_mode = models.BooleanField(default=False)
    sealed = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(db_index=True)
    used_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"OAuth state for {self.source} of {self.human_id}"

    def is_expired(self, now: datetime | None = None) -> bool:
        return self.expires_at <= (now or timezone.now())

    @property
    def secrets(self) -> dict[str, Any]:
        return dict(crypto.decrypt_json(self.sealed) or {})


class RateLimitBucket(models.Model):
    """One fixed-window counter (`key` names the limit, the subject and the window)."""

    key = models.CharField(max_length=200, primary_key=True)
    count = models.PositiveIntegerField(default=0)
    expires_at = models.DateTimeField(db_index=True)

    def __str__(self) -> str:
        return f"{self.key}: {self.count}"
