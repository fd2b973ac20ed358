"""The source plugin interface.

A plugin is one module in `sources/providers/` that defines a `SourcePlugin` subclass. It
declares its metadata, turns the user's authorization into provider credentials, fetches raw
pages since a cursor, and normalizes a page into `Record`s. Everything else (locking, token
refresh, retries and backoff, upserts, deletion by absence, sync runs, notifications) belongs
to the engine in `sources.sync`.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import cached_property
from typing import Any, ClassVar

from .http import ProviderHttp
from .types import RECORD_TYPES

# SOURCE_<SLUG>_<KEY> settings every source may have, and what they must be. The system checks
# (`sources.checks`) refuse a malformed one at startup, naming it.
URL_SETTINGS = ("AUTHORIZE_URL", "TOKEN_URL", "API_URL")
INTEGER_SETTINGS = {"HISTORY_DAYS": 1, "LOOKBACK_DAYS": 0, "SYNC_INTERVAL": 60, "PER_PAGE": 1}


class AuthKind(enum.StrEnum):
    CREDENTIALS = "credentials"  # a form checked by the plugin itself (Demo)
    OAUTH2_PASSWORD = "oauth2_password"  # noqa: S105 - OAuth2 resource-owner password grant (Humanity)
    OAUTH2_CODE = "oauth2_code"  # OAuth2 authorization code (+ PKCE where supported)


@dataclass(frozen=True)
class FormField:
    name: str
    label: str
    kind: str = "text"  # text | password | url
    required: bool = True
    autocomplete: str = "off"


@dataclass
class Credentials:
    """What the engine stores (encrypted) after authorization, and gives back to `fetch`."""

    data: dict[str, Any]
    expires_at: datetime | None = None
    external_user_id: str = ""


@dataclass(frozen=True)
class Record:
    """One normalized record. `fields` use the Data API's (Human API's) names."""

    type: str
    external_id: str
    start_time: datetime
    tz_offset: int  # minutes east of UTC
    end_time: datetime | None = None
    value: float | None = None
    fields: Mapping[str, Any] = field(default_factory=dict)
    source_data: Mapping[str, Any] = field(default_factory=dict)
    # The local day the provider files it under, where it says (Oura's `day`, Fitbit's
    # `dateOfSleep`, a daily total's date). Otherwise it is derived (see `local_day`).
    day: date | None = None

    @cached_property  # read by the engine more than once per record; a record never changes
    def local_day(self) -> date:
        """The day a person files it under: the provider's day; else the local day it ends on
        for types filed by their end (a sleep belongs to the morning after); else the local
        day it starts on."""
        if self.day is not None:
            return self.day
        kind = RECORD_TYPES.get(self.type)
        moment = self.end_time if kind is not None and kind.day_of == "end" and self.end_time else self.start_time
        return (moment + timedelta(minutes=self.tz_offset)).date()


@dataclass(frozen=True)
class Window:
    """The page is the provider's complete list of `type` records starting in [start, end): a
    stored record of that type starting inside whose id is absent from the page was deleted."""

    type: str
    start: datetime
    end: datetime
    # Types derived from the same items (e.g. BMI from weights), complete for the window too.
    also: tuple[str, ...] = ()


@dataclass(frozen=True)
class Unreadable:
    """Items of a page that could not be read: how many, of which record type, and why."""

    type: str
    reason: str
    count: int = 1


@dataclass
class RawPage:
    """One provider response, as fetched. `cursor` is the plugin's cursor once this page is stored."""

    type: str
    payload: Any
    cursor: dict[str, Any] | None = None
    window: Window | None = None
    context: dict[str, Any] = field(default_factory=dict)
    unreadable: list[Unreadable] = field(default_factory=list)

    def skipped(self, reason: str, *, type: str | None = None, count: int = 1) -> None:
        """`count` items of record type `type` could not be read and are left out; the engine
        counts them in the run and the connection's status, with the first reasons. They may
        still exist at the provider, so the page no longer vouches for deletions: its window
        is dropped. `type` defaults to the window's type, else the page's."""
        kind = type or (self.window.type if self.window is not None else self.type)
        self.unreadable.append(Unreadable(kind, reason[:300], count))
        self.window = None


@dataclass(frozen=True)
class Collection:
    """One independently fetched part of a source (an endpoint, a provider data type): the
    unit that fails alone. A collection that fails (403, 404, 5xx after retries) is reported
    for its `types` and retried by the next run, and the run goes on with the others."""

    name: str
    types: tuple[str, ...]


@dataclass
class SyncContext:
    connection_id: str
    external_user_id: str
    credentials: dict[str, Any]
    cursor: dict[str, Any]
    history: bool
    now: datetime
    http: ProviderHttp
    settings: Mapping[str, str]


class SourcePlugin:
    slug: ClassVar[str]
    name: ClassVar[str]
    auth_kind: ClassVar[AuthKind]
    data_types: ClassVar[tuple[str, ...]]
    history_days: ClassVar[int] = 365
    sync_interval: ClassVar[int | None] = None  # seconds; None: the SYNC_INTERVAL setting
    credential_fields: ClassVar[tuple[FormField, ...]] = ()
    # OAuth2 authorization code sources:
    default_authorize_url: ClassVar[str] = ""
    default_token_url: ClassVar[str] = ""
    default_api_url: ClassVar[str] = ""
    scopes: ClassVar[tuple[str, ...]] = ()
    supports_pkce: ClassVar[bool] = False
    # This source's own integer settings (key -> minimum), beside the common INTEGER_SETTINGS.
    integer_settings: ClassVar[dict[str, int]] = {}

    def __init__(self, settings: Mapping[str, str]) -> None:
        # This source's SOURCE_<SLUG>_<KEY> settings, keys without the prefix.
        self.settings = settings

    def setting(self, key: str, default: str = "") -> str:
        return self.settings.get(key, "") or default

    def int_setting(self, key: str, default: int) -> int:
        """An integer SOURCE_<SLUG>_<KEY>; a malformed one fails the system checks at startup
        (`sources.checks`), so here it only falls back to the default."""
        raw = self.setting(key).strip()
        minimum = {**INTEGER_SETTINGS, **self.integer_settings}.get(key, 0)
        return int(raw) if raw.isdigit() and int(raw) >= minimum else default

    @property
    def api_url(self) -> str:
        return self.setting("API_URL", self.default_api_url).rstrip("/")

    @property
    def token_url(self) -> str:
        return self.setting("TOKEN_URL", self.default_token_url)

    @property
    def authorize_url(self) -> str:
        return self.setting("AUTHORIZE_URL", self.default_authorize_url)

    def check_settings(self) -> None:
        """Raise ImproperlyConfigured, naming the setting, for a setting of this source's own
        that is malformed (the common ones are checked by `sources.checks`)."""

    def is_available(self) -> bool:
        """Whether Connect offers this source (OAuth sources need a client id)."""
        if self.auth_kind == AuthKind.OAUTH2_CODE:
            return bool(self.setting("CLIENT_ID"))
        return True

    # --- authorization -------------------------------------------------------------------
    def authorize_with_form(
        self, form: Mapping[str, str], app_config: Mapping[str, str], http: ProviderHttp
    ) -> Credentials:
        """Credentials and password-grant sources: check the form, return credentials.
        Raise `AuthorizationFailed` with a message fit for the user."""
        raise NotImplementedError

    def refresh(self, credentials: dict[str, Any], http: ProviderHttp) -> Credentials:
        """Exchange the stored refresh token; raise `RefreshRefused` if the provider says no."""
        raise RefreshRefused("this source has no token refresh")

    # --- sync ----------------------------------------------------------------------------
    def collections(self, ctx: SyncContext) -> Sequence[Collection]:
        """The parts of this source that are fetched (and fail) independently, in order.
        By default the whole source is one collection, fetched by `fetch`."""
        return (Collection("all", self.data_types),)

    def fetch_collection(self, ctx: SyncContext, collection: Collection) -> Iterator[RawPage]:
        """Raw pages of one collection since the cursor. By default, `fetch`."""
        return self.fetch(ctx)

    def fetch(self, ctx: SyncContext) -> Iterator[RawPage]:
        raise NotImplementedError

    def normalize(self, page: RawPage, ctx: SyncContext) -> list[Record]:
        raise NotImplementedError


# A token lifetime past this is not believed (and would overflow a datetime if absurd enough).
MAX_TOKEN_LIFETIME = timedelta(days=3660)


def token_expiry(token: Mapping[str, Any], now: datetime) -> datetime | None:
    """When a provider's token answer says the access token expires: `expires_in` seconds (a
    number, or digits in text) or an absolute `expires_at` (Unix seconds). Anything else, or a
    value out of reason, is taken as unknown: the token is then refreshed when it is refused."""
    relative, absolute = _seconds(token.get("expires_in")), _seconds(token.get("expires_at"))
    if relative is not None and 0 < relative <= MAX_TOKEN_LIFETIME.total_seconds():
        return now + timedelta(seconds=relative)
    if absolute is not None and now.timestamp() < absolute <= (now + MAX_TOKEN_LIFETIME).timestamp():
        return datetime.fromtimestamp(absolute, now.tzinfo)
    return None


def _seconds(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        text = value.strip()
        value = float(text) if text.replace(".", "", 1).isdigit() and len(text) <= 20 else None
    if isinstance(value, int | float) and value == value and abs(value) < 1e15:  # not NaN, not absurd
        return float(value)
    return None


class SourceError(Exception):
    """Base of what a plugin raises; messages must never contain secrets."""


class AuthorizationFailed(SourceError):
    """The user's authorization was refused; `fields` names the form fields at fault."""

    def __init__(self, message: str, fields: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.fields = fields


class RefreshRefused(SourceError):
    pass


class TokenRejected(SourceError):
    """The provider refused the access token (HTTP 401, Humanity status 3): refresh and retry."""


class RateLimited(SourceError):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class TransientError(SourceError):
    """5xx, a timeout, a reset connection, a malformed body: try again later."""


class PermanentError(SourceError):
    """The provider answered in a way retrying won't change (4xx other than 401/429)."""
