"""Humanity (API v2): the shifts and timeclocks of the employee who connects.

Auth is the OAuth2 password grant against the user's own instance (`{instance}/oauth2/token.php`);
the password is used once and dropped, the rotating refresh token is kept. The instance URL comes
from the user, so it must match the operator's allowlist (`SOURCE_HUMANITY_ALLOWED_INSTANCES`):
otherwise Connect could make this server call any address.

Two collections, fetched and failing independently: `shifts` (GET /shifts, mode=employee) and
`timeclocks` (GET /timeclocks). A role that may not read timeclocks (Humanity status 20, or HTTP
403) fails that collection alone. Humanity has no `updated_at` and no webhooks, so every sync
re-pulls a rolling window (30 days back, 60 ahead by default) in date chunks of at most a month,
and each chunk is declared a complete `Window`: the engine deletes stored records that vanished.

Time (docs/providers/humanity.md): the absolute instant of a shift is `start_date.timestamp`
(Unix seconds); `start_timestamp` is the account's wall clock as text ("2017-06-08 16:48:25").
Timeclocks carry the instant in `in_timestamp`/`out_timestamp` (Unix seconds, "0" while still
clocked in) and the wall clock in `start_timestamp`/`end_timestamp`. A record's offset is its wall
clock minus its instant (or the offset an `iso8601` field states); it is filed under the local
day Humanity gives it. Humanity states no time zone, and a user, a location and the account may
each have their own, so the offset is worked out per item; an item with no wall clock takes the
offset most items of its page share, else the last one learned (kept in the cursor), else UTC.

Every time text is read by slicing and `str` methods, never by a regular expression, so a long
or hostile value costs time in proportion to its length (and is refused past a few dozen chars).
"""

from __future__ import annotations

import logging
import math
import re
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, ClassVar
from urllib.parse import urlsplit

import requests
from django.core.exceptions import ImproperlyConfigured

from ..base import (
    AuthKind,
    AuthorizationFailed,
    Collection,
    Credentials,
    FormField,
    PermanentError,
    RateLimited,
    RawPage,
    Record,
    RefreshRefused,
    SourcePlugin,
    SyncContext,
    TokenRejected,
    TransientError,
    Window,
    token_expiry,
)
from ..http import ProviderHttp, decode_json, oauth_error_code, parse_retry_after, raise_for_token_status

log = logging.getLogger(__name__)

DEFAULT_ALLOWED = "www.humanity.com,*.humanity.com"
CHUNK_DAYS = 28  # + a margin day on each side: 30 dates per call, within Humanity's month
MAX_OFFSET = 14 * 60  # minutes: no time zone is further from UTC
MAX_TEXT = 40  # the longest time text read; longer is not a time Humanity writes
_HOST = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$")
# Humanity's status codes (v1 response-code table, still used by API v2) that are not a refusal
# for good: 3 = the token is invalid or expired, 91 = throttled, 99 = service offline.
STATUS_OK, STATUS_BAD_TOKEN, STATUS_THROTTLED, STATUS_OFFLINE = 1, 3, 91, 99
STATUS_WORDS = {
    -3: "API key banned",
    -2: "API key flagged",
    -1: "API key disabled",
    2: "invalid API key",
    4: "invalid method",
    5: "invalid module",
    6: "invalid action",
    7: "authentication failed",
    8: "missing parameters",
    9: "invalid parameters",
    10: "extra parameters",
    15: "get failed",
    20: "incorrect permissions",
    90: "API access suspended",
    98: "bad API parameters",
}


# --- the instance allowlist ------------------------------------------------------------------


@dataclass(frozen=True)
class InstancePattern:
    """One allowlist entry: `host`, `host:port`, `*.domain`, optionally prefixed `http://` to
    allow plain HTTP for it (meant for local test servers; every other pattern is https only)."""

    host: str
    port: int | None
    plain_http: bool

    @classmethod
    def parse(cls, raw: str) -> InstancePattern:
        text = raw.strip().lower()
        plain = text.startswith("http://")
        text = text.removeprefix("http://").removeprefix("https://").rstrip("/")
        host, _, port = text.partition(":")
        bare = host.removeprefix("*.")
        if not _HOST.match(bare) or (port and not (port.isascii() and port.isdigit())):
            raise ImproperlyConfigured(f"SOURCE_HUMANITY_ALLOWED_INSTANCES has a bad pattern: {raw!r}")
        return cls(host=host, port=int(port) if port else None, plain_http=plain)

    def allows(self, scheme: str, host: str, port: int) -> bool:
        if scheme == "http" and not self.plain_http:
            return False
        default_port = 80 if scheme == "http" else 443
        if (self.port or default_port) != port:
            return False
        if self.host.startswith("*."):
            return host.endswith(self.host[1:]) and len(host) > len(self.host) - 1
        return host == self.host


def allowed_patterns(setting: str) -> list[InstancePattern]:
    return [InstancePattern.parse(p) for p in (setting or DEFAULT_ALLOWED).split(",") if p.strip()]


def checked_instance(url: str, patterns: list[InstancePattern]) -> str:
    """The instance's origin (`https://acme.humanity.com`) if the allowlist admits it; else
    ValueError with a message fit for the user."""
    text = url.strip()
    if "://" not in text:
        text = "https://" + text
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise ValueError("The instance URL is not a valid URL.") from None
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("https", "http") or not _HOST.match(host) or parts.username or parts.password:
        raise ValueError("The instance URL must look like https://yourcompany.humanity.com.")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError("The instance URL must be just the address, like https://yourcompany.humanity.com.")
    effective_port = port or (80 if parts.scheme == "http" else 443)
    if not any(p.allows(parts.scheme, host, effective_port) for p in patterns):
        raise ValueError(f"This server does not connect to {parts.scheme}://{parts.netloc}: use your Humanity address.")
    default = (parts.scheme == "http" and effective_port == 80) or (parts.scheme == "https" and effective_port == 443)
    return f"{parts.scheme}://{host}" + ("" if default else f":{effective_port}")


# --- the plugin -------------------------------------------------------------------------------


class HumanitySource(SourcePlugin):
    slug = "humanity"
    name = "Humanity"
    auth_kind = AuthKind.OAUTH2_PASSWORD
    data_types = ("shifts", "timeclocks")
    history_days = 365
    credential_fields = (
        FormField("instance_url", "Instance URL", kind="url", autocomplete="url"),
        FormField("username", "Username", autocomplete="username"),
        FormField("password", "Password", kind="password", autocomplete="current-password"),
        FormField("client_id", "Client ID"),
        FormField("client_secret", "Client Secret", kind="password"),
    )

    # --- settings ---------------------------------------------------------------------------
    integer_settings: ClassVar[dict[str, int]] = {"WINDOW_BACK_DAYS": 0, "WINDOW_AHEAD_DAYS": 0}

    def check_settings(self) -> None:
        allowed_patterns(self.setting("ALLOWED_INSTANCES"))  # raises on a bad pattern, naming the setting

    def instance(self, url: str) -> str:
        return checked_instance(url, allowed_patterns(self.setting("ALLOWED_INSTANCES")))

    # --- authorization ----------------------------------------------------------------------
    def authorize_with_form(
        self, form: Mapping[str, str], app_config: Mapping[str, str], http: ProviderHttp
    ) -> Credentials:
        try:
            instance = self.instance(form.get("instance_url", ""))
        except ValueError as exc:
            raise AuthorizationFailed(str(exc), fields=("instance_url",)) from None
        client_id = app_config.get("client_id") or form.get("client_id", "").strip() or self.setting("CLIENT_ID")
        secret = (
            app_config.get("client_secret") or form.get("client_secret", "").strip() or self.setting("CLIENT_SECRET")
        )
        username, password = form.get("username", "").strip(), form.get("password", "")
        if not (client_id and secret and username and password):
            missing = tuple(
                name
                for name, value in (
                    ("username", username),
                    ("password", password),
                    ("client_id", client_id),
                    ("client_secret", secret),
                )
                if not value
            )
            raise AuthorizationFailed(
                "Fill in every field: username, password, client ID and client secret.", fields=missing
            )
        fields = {"grant_type": "password", "username": username, "password": password}
        try:
            token = self.token_request(instance, client_id, secret, fields, http)
        except RefreshRefused as exc:
            raise AuthorizationFailed(
                f"Humanity did not accept these credentials ({exc}).", fields=("username", "password")
            ) from None
        data = {"instance_url": instance, "client_id": client_id, "client_secret": secret}
        me = self.api_get(http, {**data, **token}, "me", {})
        employee_id = _id(me.get("id")) if isinstance(me, dict) else None
        if not employee_id:
            raise TransientError("Humanity returned no employee id for this account")
        return self.credentials(data, token, employee_id)

    def refresh(self, credentials: dict[str, Any], http: ProviderHttp) -> Credentials:
        if not credentials.get("refresh_token"):
            raise RefreshRefused("no refresh token stored")
        fields = {"grant_type": "refresh_token", "refresh_token": str(credentials["refresh_token"])}
        instance = self._instance_of(credentials)
        token = self.token_request(
            instance, str(credentials["client_id"]), str(credentials["client_secret"]), fields, http
        )
        return self.credentials(credentials, token, str(credentials.get("employee_id", "")))

    def credentials(self, previous: Mapping[str, Any], token: Mapping[str, Any], employee_id: str) -> Credentials:
        data = {
            "instance_url": previous["instance_url"],
            "client_id": previous["client_id"],
            "client_secret": previous["client_secret"],
            "access_token": token["access_token"],
            # Humanity rotates: the refresh token just spent is dead, keep the new one.
            "refresh_token": token.get("refresh_token") or previous.get("refresh_token", ""),
            "employee_id": employee_id,
        }
        expires_at = token_expiry({"expires_in": token.get("expires_in")}, datetime.now(UTC))
        return Credentials(data=data, expires_at=expires_at, external_user_id=employee_id)

    def token_request(
        self, instance: str, client_id: str, secret: str, fields: dict[str, str], http: ProviderHttp
    ) -> dict[str, Any]:
        """POST the token endpoint. A refusal raises RefreshRefused (with the OAuth error code
        only: descriptions could echo what was sent); 429/5xx/bad bodies are retried."""

        def inspect(response: requests.Response) -> None:
            raise_for_token_status(response, "Humanity")
            decode_json(response)  # a refusal must be JSON too, to be read

        response = http.request(
            "POST",
            f"{instance}/oauth2/token.php",
            data={"client_id": client_id, "client_secret": secret, **fields},
            check=False,
            allow_redirects=False,
            inspect=inspect,
        )
        body = response.json()
        if response.status_code != 200 or not isinstance(body, dict) or not body.get("access_token"):
            raise RefreshRefused(oauth_error_code(response))
        return body

    # --- sync -------------------------------------------------------------------------------
    def collections(self, ctx: SyncContext) -> Sequence[Collection]:
        return (Collection("shifts", ("shifts",)), Collection("timeclocks", ("timeclocks",)))

    def fetch_collection(self, ctx: SyncContext, collection: Collection) -> Iterator[RawPage]:
        """The collection's date chunks from where its cursor stands. A refusal of the
        collection's own endpoint (status 20, HTTP 403, ...) propagates: the engine fails this
        collection alone and the next run tries it again from the same cursor."""
        kind = collection.name
        if kind not in self.data_types:
            raise PermanentError(f"Humanity has no collection {kind!r}")
        credentials = {**ctx.credentials, "instance_url": self._instance_of(ctx.credentials)}
        employee = str(credentials.get("employee_id") or ctx.external_user_id)
        names = self._names(ctx, credentials)
        today = ctx.now.astimezone(UTC).date()
        back, ahead = self.int_setting("WINDOW_BACK_DAYS", 30), self.int_setting("WINDOW_AHEAD_DAYS", 60)
        history = self.int_setting("HISTORY_DAYS", self.history_days)
        # Shifts are planned ahead; a clock time exists only once someone clocked in.
        last = today + timedelta(days=(ahead if kind == "shifts" else 0) + 1)
        state = ctx.cursor.get(kind) or {}
        if state.get("next"):  # a pass that was cut short: resume it
            first = date.fromisoformat(state["next"])
        elif state.get("synced"):
            first = today - timedelta(days=back)
        else:
            first = today - timedelta(days=max(history, back))
        learned = ctx.cursor.get("tz_offset")
        tz = learned if isinstance(learned, int) and abs(learned) <= MAX_OFFSET else None
        for start, end in _chunks(first, last):
            page = self._page(ctx, credentials, kind, employee, start, end, names, tz)
            tz = page.context.get("tz_offset", tz)
            more = end < last
            page.cursor = {
                **(page.cursor or {}),
                kind: {
                    "next": end.isoformat() if more else None,
                    "synced": today.isoformat() if not more else state.get("synced") or None,
                },
            }
            yield page

    def _names(self, ctx: SyncContext, credentials: dict[str, Any]) -> dict[str, Any]:
        """Position and location names for the ids on shifts and clock times. They only name
        things the items already identify, so a role that may not list them (status 20) still
        gets its shifts and clock times, without those names."""
        names: dict[str, Any] = {}
        for table in ("positions", "locations"):
            try:
                names[table] = _by_id(self.api_get(ctx.http, credentials, table, {}))
            except PermanentError as exc:
                log.warning("Humanity /%s is not readable for connection %s: %s", table, ctx.connection_id, exc)
                names[table] = {}
        return names

    def _page(
        self,
        ctx: SyncContext,
        credentials: dict[str, Any],
        kind: str,
        employee: str,
        start: date,
        end: date,
        names: dict[str, Any],
        tz: int | None,
    ) -> RawPage:
        # Humanity filters by the account's local date; local dates of instants in [start, end)
        # UTC lie within a day of it either way, so ask one more day on each side.
        params = {"start_date": (start - timedelta(days=1)).isoformat(), "end_date": end.isoformat()}
        if kind == "shifts":
            # Always name the mode: what an instance does without it is not the same everywhere.
            params["mode"] = "employee"
            params["employees"] = employee
        else:
            params["employee"] = employee
        items = _items(self.api_get(ctx.http, credentials, kind, params), kind)
        cursor: dict[str, Any] = {}
        learned = _common_offset(items, kind)
        if learned is not None:
            tz = cursor["tz_offset"] = learned
        return RawPage(
            type=kind,
            payload=items,
            cursor=cursor,
            window=Window(type=kind, start=_midnight(start), end=_midnight(end)),
            context={**names, "tz_offset": tz},
        )

    def api_get(self, http: ProviderHttp, credentials: Mapping[str, Any], path: str, params: dict[str, str]) -> Any:
        body = http.get_json(
            f"{credentials['instance_url']}/api/v2/{path}",
            params={**params, "access_token": credentials["access_token"]},
            allow_redirects=False,
            inspect=_inspect,
        )
        return body["data"]

    def _instance_of(self, credentials: Mapping[str, Any]) -> str:
        """The stored instance, checked again: the operator may have narrowed the allowlist."""
        try:
            return self.instance(str(credentials.get("instance_url", "")))
        except ValueError:
            raise PermanentError("the stored Humanity instance is no longer allowed on this server") from None

    def normalize(self, page: RawPage, ctx: SyncContext) -> list[Record]:
        convert = _shift if page.type == "shifts" else _timeclock
        employee = str(ctx.credentials.get("employee_id") or ctx.external_user_id)
        records = []
        for item in page.payload:
            try:
                record = convert(item, page.context, employee)
            except UnreadableItem as exc:
                page.skipped(str(exc), type=page.type)
                continue
            except (KeyError, TypeError, ValueError, ArithmeticError) as exc:
                # A shape nobody has seen: reported, and the rest of the page still stored.
                page.skipped(f"unexpected item shape ({type(exc).__name__})", type=page.type)
                continue
            if record is not None:
                records.append(record)
        return records


# --- the wire ---------------------------------------------------------------------------------


def _inspect(response: requests.Response) -> None:
    """Humanity reports errors in the body, often with HTTP 200: read `status` every time."""
    body = decode_json(response)
    status = _status(body.get("status")) if isinstance(body, dict) else None
    if status == STATUS_OK and "data" in body:
        return
    if status == STATUS_BAD_TOKEN:
        raise TokenRejected("Humanity rejected the access token (status 3)")
    if status == STATUS_THROTTLED:
        raise RateLimited(
            "Humanity throttled the request (status 91)", parse_retry_after(response.headers.get("Retry-After"))
        )
    if status == STATUS_OFFLINE:
        raise TransientError("Humanity is offline (status 99)")
    if status is None or status == STATUS_OK:
        raise TransientError("Humanity returned a body without a status and data")
    # Humanity's own `error` text is left out: it may repeat what the request carried.
    raise PermanentError(f"Humanity answered status {status} ({STATUS_WORDS.get(status, 'refused')})")


def _status(value: Any) -> int | None:
    """The body's `status`: an integer, or one written as text ("1")."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and 0 < len(value) <= 4 and value.lstrip("-").isascii() and value.lstrip("-").isdigit():
        return int(value)
    return None


def _items(data: Any, kind: str) -> list[Any]:
    """A list answer's items. `data: []` is an empty answer; an object keyed "0", "1", ... (as
    PHP writes some arrays) is read as its values."""
    if isinstance(data, list):
        return data
    if isinstance(data, dict) and all(isinstance(k, str) and k.isascii() and k.isdigit() for k in data):
        return [data[k] for k in sorted(data, key=int)]
    raise TransientError(f"Humanity /{kind} returned {type(data).__name__} data, not a list")


# --- normalizing ------------------------------------------------------------------------------


class UnreadableItem(ValueError):
    """An item that can't be read; the message names the field and the problem."""


@dataclass(frozen=True)
class Moment:
    """What a Humanity time field says: the absolute instant, the wall clock, and the offset
    it states outright (an `iso8601` value), each where known."""

    instant: datetime | None = None
    wall: datetime | None = None  # naive: the account's (or user's) local clock
    offset: int | None = None  # minutes east of UTC


def _shift(item: Any, context: Mapping[str, Any], employee: str) -> Record | None:
    if not isinstance(item, dict):
        raise UnreadableItem("the shift is not an object")
    shift_id = _id(item.get("id"))
    if not shift_id:
        raise UnreadableItem("id is missing")
    people = _employee_ids(item.get("employees"))
    if employee and people and employee not in people:
        # mode=employee answers the caller's own shifts; one that names only other people (an
        # instance that ignored the mode) is their record, not an unreadable one of this user.
        return None
    start = _when(item, "start")
    end = _when(item, "end")
    if start.instant is None:
        raise UnreadableItem("start_date.timestamp is missing or not Unix seconds")
    if end.instant is None:
        raise UnreadableItem("end_date.timestamp is missing or not Unix seconds")
    if end.instant < start.instant:
        raise UnreadableItem("end_date.timestamp is before start_date.timestamp")
    tz = _offset_of(start, "start_timestamp")
    if tz is None:
        tz = int(context.get("tz_offset") or 0)
    day = _date_of(item.get("start_date")) or (start.wall.date() if start.wall else None)
    position = _id(item.get("schedule"))
    schedule = _object(item.get("schedule"))
    location = _id(item.get("schedule_location_id"))
    return Record(
        type="shifts",
        external_id=shift_id,
        start_time=start.instant,
        end_time=end.instant,
        tz_offset=tz,
        day=day,
        fields={
            "title": _text(item.get("title")),
            "position": _name(context, "positions", position)
            or _text(item.get("schedule_name"))
            or _text(schedule.get("name"))
            or None,
            "location": _name(context, "locations", location) or _position_location(context, position) or None,
            "published": _flag(item.get("published")),
            "employeeId": employee or (min(people) if people else None),
        },
        source_data=dict(item),
    )


def _timeclock(item: Any, context: Mapping[str, Any], employee: str) -> Record | None:
    if not isinstance(item, dict):
        raise UnreadableItem("the clock time is not an object")
    clock_id = _id(item.get("id"))
    if not clock_id:
        raise UnreadableItem("id is missing")
    owner = _id(_object(item.get("employee")).get("id")) or _id(item.get("employee"))
    if employee and owner and owner != employee:
        # The request names this employee; a clock time of someone else is not this user's.
        return None
    start = _clock_moment(item, "in_timestamp", "start_timestamp", ("start", "in_time"))
    if start.instant is None:
        raise UnreadableItem("in_timestamp is missing or not Unix seconds")
    end = _clock_moment(item, "out_timestamp", "end_timestamp", ("end", "out_time"))
    if end.instant is not None and end.instant < start.instant:
        raise UnreadableItem("out_timestamp is before in_timestamp")
    tz = _offset_of(start, "start_timestamp")
    if tz is None:
        tz = int(context.get("tz_offset") or 0)
    day = start.wall.date() if start.wall else None
    schedule = item.get("schedule")
    position = _id(_object(schedule).get("id")) or _id(schedule)
    shift = _id(_object(item.get("shift")).get("id")) or _id(item.get("shift"))
    return Record(
        type="timeclocks",
        external_id=clock_id,
        start_time=start.instant,
        end_time=end.instant,
        tz_offset=tz,
        day=day,
        fields={
            "duration": int((end.instant - start.instant).total_seconds()) if end.instant else None,
            "position": _text(_object(schedule).get("name")) or _name(context, "positions", position) or None,
            "location": _position_location(context, position) or None,
            "shiftId": shift,
        },
        source_data=dict(item),
    )


def _when(item: Mapping[str, Any], edge: str) -> Moment:
    """A shift's start or end: the instant from `{edge}_date.timestamp` (or its `iso8601`), the
    wall clock from `{edge}_timestamp` text (or `{edge}_date.date` + `.time`). A
    `{edge}_timestamp` of bare digits is read as Unix seconds, the instant."""
    obj = _object(item.get(f"{edge}_date"))
    stamp = _moment(obj.get("timestamp"), f"{edge}_date.timestamp")
    iso = _lenient(obj.get("iso8601"), f"{edge}_date.iso8601")
    text = _lenient(item.get(f"{edge}_timestamp"), f"{edge}_timestamp")
    instant = stamp.instant or iso.instant or text.instant
    wall = text.wall or _wall_of(obj) or iso.wall
    return Moment(instant=instant, wall=wall, offset=iso.offset if iso.offset is not None else text.offset)


def _clock_moment(item: Mapping[str, Any], unix_key: str, wall_key: str, objects: tuple[str, ...]) -> Moment:
    """A clock time's in or out: the instant from `in_timestamp` (Unix seconds; "0" while still
    clocked in), else the `start`/`in_time` object's `timestamp` or `iso8601`; the wall clock
    from `start_timestamp` text, else the objects' text."""
    found = _moment(item.get(unix_key), unix_key)
    instant, wall, offset = found.instant, found.wall, found.offset
    text = _lenient(item.get(wall_key), wall_key)
    wall = text.wall or wall
    instant = instant or text.instant
    offset = offset if offset is not None else text.offset
    for name in objects:
        obj = _object(item.get(name))
        for key in ("timestamp", "iso8601"):
            seen = _lenient(obj.get(key), f"{name}.{key}")
            instant = instant or seen.instant
            wall = wall or seen.wall
            offset = offset if offset is not None else seen.offset
    return Moment(instant=instant, wall=wall, offset=offset)


def _moment(value: Any, field: str) -> Moment:
    """Read one time value as Humanity writes them: Unix seconds (a number or digits; 0 and
    "0" mean not set), wall-clock text ("2017-06-08 16:48:25"), ISO 8601 with an offset
    ("2017-06-09T17:22:12+0300"), or an object holding `timestamp`/`iso8601`."""
    if value is None or value == "" or isinstance(value, bool):
        return Moment()
    if isinstance(value, dict):
        for key in ("timestamp", "iso8601"):
            inner = value.get(key)
            if inner is not None and not isinstance(inner, dict):
                found = _moment(inner, f"{field}.{key}")
                if found != Moment():
                    return found
        return Moment()
    if isinstance(value, int | float):
        return Moment(instant=_unix(value, field))
    if not isinstance(value, str):
        raise UnreadableItem(f"{field} is a {type(value).__name__}, not a time")
    text = value.strip()
    if not text or len(text) > MAX_TEXT or not text.isascii():
        raise UnreadableItem(f"{field} is not a time Humanity writes")
    whole, _, fraction = text.lstrip("-").partition(".")
    if _digits(whole) and (not fraction or _digits(fraction)):
        return Moment(instant=_unix(float(text), field))
    wall, offset = _wall_text(text, field)
    instant = (wall - timedelta(minutes=offset)).replace(tzinfo=UTC) if offset is not None else None
    return Moment(instant=instant, wall=wall, offset=offset)


def _lenient(value: Any, field: str) -> Moment:
    """A field that only adds to what the item's own instant field says (the wall clock, an
    `iso8601` twin): a form of it nobody has documented leaves it out, not the item."""
    try:
        return _moment(value, field)
    except UnreadableItem:
        return Moment()


def _unix(seconds: float, field: str) -> datetime | None:
    if seconds == 0:
        return None  # Humanity writes 0 for a time not yet set (out_timestamp while clocked in)
    if not math.isfinite(seconds):
        raise UnreadableItem(f"{field} is not a finite number")
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        raise UnreadableItem(f"{field} is out of range") from None


def _wall_text(text: str, field: str) -> tuple[datetime, int | None]:
    """ "YYYY-MM-DD HH:MM[:SS]" or with "T", optionally followed by "Z", "+HHMM" or "+HH:MM"."""
    if len(text) < 16 or text[10] not in " T":
        raise UnreadableItem(f"{field} is not a date and time")
    day = _iso_date(text[:10])
    if day is None:
        raise UnreadableItem(f"{field} has no valid date")
    rest, offset = text[11:].strip(), None
    if rest.endswith(("Z", "z")):
        rest, offset = rest[:-1], 0
    else:
        cut = max(rest.rfind("+"), rest.rfind("-"))
        if cut > 0:
            offset = _offset_text(rest[cut:])
            if offset is None:
                raise UnreadableItem(f"{field} has an offset that is not +HH:MM")
            rest = rest[:cut]
    clock = _clock(rest.split(".", 1)[0])
    if clock is None:
        raise UnreadableItem(f"{field} has no valid time of day")
    return datetime.combine(day, clock), offset


def _offset_text(text: str) -> int | None:
    """ "+0300", "+03:00", "-05", "+05:45" -> minutes east of UTC."""
    sign = -1 if text[0] == "-" else 1
    digits = text[1:].replace(":", "", 1)
    if not _digits(digits) or len(digits) not in (2, 4):
        return None
    minutes = int(digits[:2]) * 60 + (int(digits[2:]) if len(digits) == 4 else 0)
    return sign * minutes if minutes <= MAX_OFFSET and (len(digits) == 2 or int(digits[2:]) < 60) else None


def _clock(text: str) -> time | None:
    """ "17:22", "17:22:05", "5:22pm", "5:22 PM" -> a time of day; None if it is none."""
    value = text.strip().lower()
    if not value or len(value) > 16:
        return None
    meridiem = ""
    if value.endswith(("am", "pm")):
        meridiem, value = value[-2:], value[:-2].rstrip()
    parts = value.split(":")
    if not 2 <= len(parts) <= 3 or not all(_digits(p) and len(p) <= 2 for p in parts):
        return None
    hour, minute = int(parts[0]), int(parts[1])
    second = int(parts[2]) if len(parts) == 3 else 0
    if meridiem:
        if not 1 <= hour <= 12:
            return None
        hour = hour % 12 + (12 if meridiem == "pm" else 0)
    if hour > 23 or minute > 59 or second > 59:
        return None
    return time(hour, minute, second)


def _wall_of(obj: Mapping[str, Any]) -> datetime | None:
    """The wall clock a `start_date` object states: its `date` and `time`."""
    day, clock = _date_of(obj), obj.get("time")
    when = _clock(clock) if isinstance(clock, str) and len(clock) <= MAX_TEXT else None
    return datetime.combine(day, when) if day and when else None


def _date_of(obj: Any) -> date | None:
    """The local date of a `start_date` object: `date` ("YYYY-MM-DD"), else `year`/`month`/`day`."""
    if not isinstance(obj, dict):
        return None
    text = obj.get("date")
    if isinstance(text, str):
        found = _iso_date(text.strip())
        if found:
            return found
    parts = [obj.get(k) for k in ("year", "month", "day")]
    numbers = [_whole(p) for p in parts]
    if None in numbers:
        return None
    try:
        return date(*numbers)  # type: ignore[arg-type]
    except ValueError:
        return None


def _whole(value: Any) -> int | None:
    """A whole number written as a number or as digits (Humanity writes both)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and len(value) <= 10 and _digits(value):
        return int(value)
    return None


def _iso_date(text: str) -> date | None:
    if len(text) != 10 or not text.isascii():
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


def _offset_of(moment: Moment, wall_field: str) -> int | None:
    """Minutes east of UTC: as an `iso8601` value states it, else the wall clock minus the
    instant (to the quarter hour: every zone's offset is a multiple of 15 minutes)."""
    if moment.offset is not None:
        return moment.offset
    if moment.wall is None or moment.instant is None:
        return None
    minutes = round((moment.wall - moment.instant.replace(tzinfo=None)).total_seconds() / 60 / 15) * 15
    if abs(minutes) > MAX_OFFSET:
        raise UnreadableItem(f"{wall_field} is more than 14 hours from the instant")
    return minutes


def _common_offset(items: list[Any], kind: str) -> int | None:
    """The offset most items of a page state, for the ones that state none."""
    seen: Counter[int] = Counter()
    for item in items:
        if not isinstance(item, dict):
            continue
        try:
            if kind == "shifts":
                found = _offset_of(_when(item, "start"), "start_timestamp")
            else:
                found = _offset_of(
                    _clock_moment(item, "in_timestamp", "start_timestamp", ("start", "in_time")), "start_timestamp"
                )
        except UnreadableItem:
            continue
        if found is not None:
            seen[found] += 1
    return seen.most_common(1)[0][0] if seen else None


def _digits(text: str) -> bool:
    return bool(text) and text.isascii() and text.isdigit()


def _id(value: Any) -> str | None:
    """An id as text: Humanity writes ids as strings ("64522004") and, in places, numbers."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return str(value) if value > 0 else None
    if isinstance(value, float) and value.is_integer() and value > 0:
        return str(int(value))
    if isinstance(value, str):
        text = value.strip()
        return text if text and text != "0" and len(text) <= 64 else None
    return None


def _employee_ids(value: Any) -> set[str]:
    """Ids of a shift's `employees`: a list of {id, name, ...}, an object of them keyed by id,
    or null/false/"" when nobody is assigned."""
    if isinstance(value, dict):
        value = list(value.values())
    if not isinstance(value, list):
        return set()
    found = {_id(e.get("id")) if isinstance(e, dict) else _id(e) for e in value}
    return {i for i in found if i}


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def _flag(value: Any) -> bool:
    """`published` and the like: 1/0, "1"/"0", true/false, "true"/"false"."""
    if isinstance(value, str):
        return value.strip().lower() not in ("", "0", "false", "no", "n", "null")
    return bool(value)


def _name(context: Mapping[str, Any], table: str, key: str | None) -> str | None:
    entry = context.get(table, {}).get(key) if key else None
    return _text(entry.get("name")) or None if isinstance(entry, dict) else None


def _position_location(context: Mapping[str, Any], position: str | None) -> str | None:
    """The location a position belongs to (GET /positions: `location {id, name}`)."""
    entry = context.get("positions", {}).get(position) if position else None
    location = _object(entry.get("location")) if isinstance(entry, dict) else {}
    return _text(location.get("name")) or _name(context, "locations", _id(location.get("id")))


def _by_id(items: Any) -> dict[str, Any]:
    if isinstance(items, dict):
        items = list(items.values())
    if not isinstance(items, list):
        return {}
    found = {}
    for entry in items:
        key = _id(entry.get("id")) if isinstance(entry, dict) else None
        if key:
            found[key] = entry
    return found


def _chunks(first: date, last: date) -> Iterator[tuple[date, date]]:
    """[start, end) day ranges of at most CHUNK_DAYS covering [first, last)."""
    start = first
    while start < last:
        end = min(start + timedelta(days=CHUNK_DAYS), last)
        yield start, end
        start = end


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=UTC)
