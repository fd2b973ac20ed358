"""The source plugin interface.

A plugin is one module in `sources/providers/` that defines a `SourcePlugin` subclass. It
declares its metadata, turns the user's authorization into provider credentials, fetches raw
pages since a cursor, and normalizes a page into `Record`s (dense samples may come as
`Readings`, column by column). Everything else (locking, token refresh, retries and backoff,
upserts, deletion by absence, sync runs, notifications) belongs to the engine in
`sources.sync`.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, ClassVar, NamedTuple

from .http import ProviderHttp
from .types import RECORD_TYPES

# SOURCE_<SLUG>_<KEY> settings every source may have, and what they must be. The system checks
# (`sources.checks`) refuse a malformed one at startup, naming it.
URL_SETTINGS = ("AUTHORIZE_URL", "TOKEN_URL", "API_URL")
INTEGER_SETTINGS = {"HISTORY_DAYS": 1, "LOOKBACK_DAYS": 0, "SYNC_INTERVAL": 60, "PER_PAGE": 1}
# Rate limits (`count/seconds[/rolling]`, comma-separated, or `off`) overriding the plugin's own.
RATE_LIMIT_SETTINGS = ("RATE_LIMITS", "USER_RATE_LIMITS")


class RateLimit(NamedTuple):
    """At most `requests` per window of `seconds`: a fixed window aligned to UTC (the multiples
    of `seconds` since the epoch: Strava's quarter hours and midnight), or a rolling one (any
    `seconds` in a row). See `sources.ratebudget`."""

    requests: int
    seconds: int
    rolling: bool = False

    def __str__(self) -> str:
        return f"{self.requests}/{self.seconds}" + ("/rolling" if self.rolling else "")


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


_EPOCH_DAY = date(1970, 1, 1).toordinal()
_DAYS: dict[int, date] = {}  # ordinal -> date: the few days a sync's pages span


def day_at(moment: datetime, tz_offset: int) -> date:
    """The local date of an aware `moment` at `tz_offset` minutes east of UTC: the same as
    `(moment + timedelta(minutes=tz_offset)).date()`, in integers (half the time)."""
    if moment.tzinfo is None:  # a naive time is taken as UTC's wall clock, not the machine's
        return (moment + timedelta(minutes=tz_offset)).date()
    return day_of_ordinal(_EPOCH_DAY + (int(moment.timestamp() // 60) + tz_offset) // 1440)


def day_of_ordinal(ordinal: int) -> date:
    """`date.fromordinal`, remembered."""
    found = _DAYS.get(ordinal)
    if found is None:
        if len(_DAYS) > 10_000:
            _DAYS.clear()
        found = _DAYS[ordinal] = date.fromordinal(ordinal)
    return found


@dataclass(frozen=True, init=False)
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

    def __init__(
        self,
        type: str,
        external_id: str,
        start_time: datetime,
        tz_offset: int,
        end_time: datetime | None = None,
        value: float | None = None,
        fields: Mapping[str, Any] | None = None,
        source_data: Mapping[str, Any] | None = None,
        day: date | None = None,
    ) -> None:
        # What dataclass would write, less its object.__setattr__ per field (frozen): a plugin
        # makes a record per reading, 1,440 a day per type, and this halves what each costs.
        self.__dict__.update(
            type=type,
            external_id=external_id,
            start_time=start_time,
            tz_offset=tz_offset,
            end_time=end_time,
            value=value,
            fields={} if fields is None else fields,
            source_data={} if source_data is None else source_data,
            day=day,
        )

    @property
    def local_day(self) -> date:
        """The day a person files it under: the provider's day; else the local day it ends on
        for types filed by their end (a sleep belongs to the morning after); else the local
        day it starts on. Worked out once (the engine reads it more than once per record; a
        record never changes), without functools.cached_property's lock, which cost more than
        the arithmetic on a page of 1,440 readings."""
        found = self.__dict__.get("_local_day")
        if found is None:
            if self.day is not None:
                found = self.day
            else:
                kind = RECORD_TYPES.get(self.type)
                end = kind is not None and kind.day_of == "end" and self.end_time
                found = day_at(self.end_time if end else self.start_time, self.tz_offset)  # type: ignore[arg-type]
            self.__dict__["_local_day"] = found  # frozen: set past __setattr__, as cached_property does
        return found


@dataclass
class Readings:
    """Readings of one type, column by column: how a plugin hands over a provider's dense
    samples (a heart rate a minute is 1,440 a day) without a `Record` of each. It means exactly
    the records `records()` makes of it (no end time, filed by their start), and the engine
    stores it as it stores them, column by column."""

    type: str
    external_ids: list[str]
    start_times: list[datetime]
    tz_offsets: list[int]
    values: list[Any]
    fields: list[Mapping[str, Any]]
    source_data: list[Mapping[str, Any]]

    def __post_init__(self) -> None:
        sizes = {len(column) for column in self.columns()}
        if len(sizes) > 1:
            raise ValueError(f"{self.type} readings: columns of different lengths {sorted(sizes)}")

    def __len__(self) -> int:
        return len(self.external_ids)

    def columns(self) -> tuple[list[Any], ...]:
        return (self.external_ids, self.start_times, self.tz_offsets, self.values, self.fields, self.source_data)

    def records(self) -> list[Record]:
        n = len(self)
        return list(
            map(
                Record,
                [self.type] * n,
                self.external_ids,
                self.start_times,
                self.tz_offsets,
                [None] * n,
                self.values,
                self.fields,
                self.source_data,
            )
        )


def as_records(items: Iterable[Record | Readings]) -> list[Record]:
    """A plugin's normalized items as records, each run of readings expanded."""
    found: list[Record] = []
    for item in items:
        if isinstance(item, Readings):
            found.extend(item.records())
        else:
            found.append(item)
    return found


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
    # (record type, external id) of stored records the provider says no longer exist (the
    # object a notification named, gone when fetched): the engine deletes them after the page.
    gone: list[tuple[str, str]] = field(default_factory=list)

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
    # "interactive" ("sync now", a notification's fetch: may use the rate budget's reserve) or
    # "backfill" (history and scheduled syncs); see `sources.ratebudget`.
    priority: str = "backfill"


@dataclass(frozen=True)
class Change:
    """What a provider's notification says changed for one of its users: the provider's kind of
    object (Strava `activity`, Oura `sleep`), its id where the notification names one, and what
    happened (`create`, `update`, `delete`, or `deauthorize`: the user withdrew access). Only a
    pointer: the plugin fetches the object itself and never trusts more of the notification."""

    kind: str
    object_id: str = ""
    operation: str = "update"

    def as_json(self) -> dict[str, str]:
        return {"kind": self.kind, "object_id": self.object_id, "operation": self.operation}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Change:
        return cls(str(raw.get("kind", "")), str(raw.get("object_id", "")), str(raw.get("operation", "update")))


DEAUTHORIZE = "deauthorize"
SUBSCRIBE = "subscribe"  # (per-user sources) make this connection's subscriptions at the provider


@dataclass(frozen=True)
class Notice:
    """One change a notification announces, for the provider's user `owner` (the connection's
    `external_user_id`)."""

    owner: str
    change: Change


@dataclass(frozen=True)
class PushBatch:
    """A notification request, authenticated and read. `key` identifies the delivery (the same
    key again is a replay or a retry of one already taken); `subscription` is the provider's
    subscription id where the request names it."""

    notices: list[Notice]
    key: str
    subscription: str = ""
    # A verification request the provider sends as a POST (Google Health): answered 201 once
    # authenticated, nothing else done.
    verification: bool = False


class PushTopic(NamedTuple):
    """One subscription a source keeps at its provider for the whole application (Strava: one
    for everything; Oura: one per data type and event), and the record types it announces."""

    key: str
    types: tuple[str, ...]


@dataclass(frozen=True)
class Subscribed:
    """A subscription as the provider lists or returns it."""

    provider_id: str
    callback_url: str = ""
    topic: str = ""  # the PushTopic key, where the provider says
    expires_at: datetime | None = None


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
    # The provider's documented request limits (`sources.ratebudget`): per application (shared by
    # every connection through one client id, whatever the tenant) and per provider user.
    # SOURCE_<SLUG>_RATE_LIMITS and SOURCE_<SLUG>_USER_RATE_LIMITS override them.
    rate_limits: ClassVar[tuple[RateLimit, ...]] = ()
    user_rate_limits: ClassVar[tuple[RateLimit, ...]] = ()
    # Which budget a 429 (or the provider's own "too many requests") empties: "app" or "user".
    rate_limit_scope: ClassVar[str] = "app"

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
        return int(raw) if raw.isascii() and raw.isdigit() and int(raw) >= minimum else default

    def budget_client_id(self, credentials: Mapping[str, Any], app_config: Mapping[str, str]) -> str:
        """The client id whose limits a connection spends: the one it was authorized with (an
        Application may bring its own provider credentials), else the server's."""
        return str(credentials.get("client_id") or app_config.get("client_id") or self.setting("CLIENT_ID"))

    def rate_usage(self, response: Any) -> list[tuple[int, int | None]]:
        """What the provider says of the application's use of its limits in an answer's headers,
        as (requests used, limit) per window, shortest window first; [] where it says nothing."""
        return []

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

    def normalize(self, page: RawPage, ctx: SyncContext) -> Sequence[Record | Readings]:
        """The page's records; a provider's dense samples may come as `Readings` instead."""
        raise NotImplementedError

    # --- push notifications (webhooks in) ----------------------------------------------------
    # The subscriptions this source keeps at its provider; none: the source is only polled.
    push_topics: ClassVar[tuple[PushTopic, ...]] = ()
    # Subscriptions made per user with the user's token (Withings), not per application: the
    # callback URL then carries a secret of this server's (`?token=`), the provider signing nothing.
    push_per_user: ClassVar[bool] = False
    # The subscription is made by the operator at the provider (Google Health's subscribers take
    # a Cloud service account this server doesn't hold): the server only answers it.
    push_by_operator: ClassVar[bool] = False

    def push_configured(self) -> bool:
        """Whether this source takes notifications here (e.g. its push secret is set)."""
        return bool(self.push_topics)

    def push_list(self, http: ProviderHttp) -> list[Subscribed]:
        """The application's subscriptions at the provider."""
        raise NotImplementedError

    def push_subscribe(
        self, topic: PushTopic, *, callback_url: str, verify_token: str, http: ProviderHttp
    ) -> Subscribed:
        """Create one; the provider checks `callback_url` with `verify_token` before it answers.
        Raise `PushUnsupported` if the provider does not offer the topic."""
        raise NotImplementedError

    def push_renew(self, provider_id: str, http: ProviderHttp) -> datetime | None:
        """Push back a subscription's expiry; returns the new one (None: it never expires)."""
        return None

    def push_unsubscribe(self, provider_id: str, http: ProviderHttp) -> None:
        raise NotImplementedError

    def push_subscribe_user(self, ctx: SyncContext, callback_url: str) -> None:
        """(push_per_user) Subscribe `callback_url` to every kind of change of this user."""
        raise NotImplementedError

    def push_challenge(self, query: Mapping[str, str]) -> tuple[str, dict[str, Any]] | None:
        """A verification request's (verify token, JSON to answer), or None if `query` is not one."""
        return None

    def push_read(self, *, headers: Mapping[str, str], body: bytes, now: datetime, max_age: int) -> PushBatch:
        """Authenticate and read a notification. Raise `PushRefused` for one that is forged,
        unsigned where the provider signs, older than `max_age` seconds, or malformed."""
        raise NotImplementedError

    def fetch_changed(self, ctx: SyncContext, change: Change) -> Iterator[RawPage]:
        """Raw pages of what `change` names, fetched afresh (a page's `gone` lists what no longer
        exists). Pages without a window: one object proves nothing about the others."""
        raise NotImplementedError

    def authorized(self, ctx: SyncContext) -> bool:
        """Whether the provider still accepts the connection's credentials (asked when a
        notification says the user withdrew access: it is believed only if the provider agrees)."""
        return True


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
        # ASCII digits only: str.isdigit() also admits "²", which float() refuses.
        plain = text.isascii() and text.replace(".", "", 1).isdigit() and len(text) <= 20
        value = float(text) if plain else None
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


class PushRefused(SourceError):
    """A notification or verification request that must change nothing; `status` is the answer."""

    def __init__(self, message: str, status: int = 401) -> None:
        super().__init__(message)
        self.status = status


class PushUnsupported(SourceError):
    """The provider does not offer this subscription (e.g. a data type it sends no events for)."""


class RateLimited(SourceError):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class BudgetSpent(RateLimited):
    """The shared rate budget has no room for this call before `retry_after` seconds: nothing was
    sent, and the sync waits for the budget (not a failure)."""


class TransientError(SourceError):
    """5xx, a timeout, a reset connection, a malformed body: try again later."""


class PermanentError(SourceError):
    """The provider answered in a way retrying won't change (4xx other than 401/429)."""
