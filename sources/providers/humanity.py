"""Humanity (API v2): shifts and timeclocks of the employee who connects.

Auth is the OAuth2 password grant against the user's own instance (`{instance}/oauth2/token.php`);
the password is used once and dropped, the rotating refresh token is kept. The instance URL comes
from the user, so it must match the operator's allowlist (`SOURCE_HUMANITY_ALLOWED_INSTANCES`):
otherwise Connect could make this server call any address.

Humanity has no `updated_at` and no webhooks, so every sync re-pulls a rolling window (30 days
back, 60 ahead by default) in date chunks of at most a month, and each chunk is declared a
complete `Window`: the engine deletes stored shifts that vanished from it.

Time zones: Humanity gives none. The Unix timestamps are absolute and used for times; the
account's offset is derived from a shift's wall-clock `start_date` (date + time) against its
timestamp, rounded to 15 minutes. Timeclocks carry no wall-clock fields, so they take the
offset learned from shifts (kept in the cursor between syncs), else UTC.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from urllib.parse import urlsplit

import requests
from django.core.exceptions import ImproperlyConfigured

from ..base import (
    AuthKind,
    AuthorizationFailed,
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
)
from ..http import ProviderHttp, decode_json, oauth_error_code, parse_retry_after, raise_for_token_status

log = logging.getLogger(__name__)

DEFAULT_ALLOWED = "www.humanity.com,*.humanity.com"
CHUNK_DAYS = 28  # + a margin day on each side: 30 dates per call, within Humanity's month
MAX_OFFSET = 14 * 60
_HOST = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$")
_CLOCK = re.compile(r"^\s*(\d{1,2}):(\d{2})(?::(\d{2}))?\s*([ap]m)?\s*$", re.IGNORECASE)


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
        if not _HOST.match(bare) or (port and not port.isdigit()):
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
    def days(self, key: str, default: int) -> int:
        raw = self.setting(key, str(default))
        if not raw.isdigit():
            raise ImproperlyConfigured(f"SOURCE_HUMANITY_{key} must be a whole number of days, got {raw!r}")
        return int(raw)

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
        if not isinstance(me, dict) or not str(me.get("id", "")):
            raise TransientError("Humanity returned no employee id for this account")
        return self.credentials(data, token, str(me["id"]))

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
        lifetime = token.get("expires_in")
        expires_at = datetime.now(UTC) + timedelta(seconds=float(lifetime)) if lifetime else None
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
    def fetch(self, ctx: SyncContext) -> Iterator[RawPage]:
        credentials = {**ctx.credentials, "instance_url": self._instance_of(ctx.credentials)}
        names = {
            "positions": _by_id(self.api_get(ctx.http, credentials, "positions", {})),
            "locations": _by_id(self.api_get(ctx.http, credentials, "locations", {})),
        }
        today = ctx.now.astimezone(UTC).date()
        back, ahead = self.days("WINDOW_BACK_DAYS", 30), self.days("WINDOW_AHEAD_DAYS", 60)
        history = self.days("HISTORY_DAYS", self.history_days)
        tz = ctx.cursor.get("tz_offset")
        for kind, last in (("shifts", today + timedelta(days=ahead + 1)), ("timeclocks", today + timedelta(days=1))):
            state = ctx.cursor.get(kind) or {}
            if state.get("next"):  # a pass that was cut short: resume it
                first = date.fromisoformat(state["next"])
            elif state.get("synced"):
                first = today - timedelta(days=back)
            else:
                first = today - timedelta(days=max(history, back))
            for start, end in _chunks(first, last):
                page = self._page(ctx, credentials, kind, start, end, names, tz)
                tz = page.cursor.get("tz_offset", tz) if page.cursor else tz
                more = end < last
                page.cursor = {
                    **(page.cursor or {}),
                    kind: {"next": end.isoformat() if more else None, "synced": state.get("synced") or None},
                }
                if not more:
                    page.cursor[kind]["synced"] = today.isoformat()
                yield page

    def _page(
        self,
        ctx: SyncContext,
        credentials: dict[str, Any],
        kind: str,
        start: date,
        end: date,
        names: dict[str, Any],
        tz: int | None,
    ) -> RawPage:
        # Humanity filters by the account's local date; local dates of instants in [start, end)
        # UTC lie within a day of it either way, so ask one more day on each side.
        params = {"start_date": (start - timedelta(days=1)).isoformat(), "end_date": end.isoformat()}
        if kind == "shifts":
            params["mode"] = "employee"
        else:
            params["employee"] = str(credentials.get("employee_id") or ctx.external_user_id)
        items = self.api_get(ctx.http, credentials, kind, params)
        if not isinstance(items, list):
            raise TransientError(f"Humanity /{kind} returned {type(items).__name__}, not a list")
        cursor: dict[str, Any] = {}
        if kind == "shifts":
            learned = _common_offset(items)
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
        records = []
        for item in page.payload:
            try:
                records.append(convert(item, page.context, ctx.external_user_id))
            except (KeyError, TypeError, ValueError, ArithmeticError) as exc:
                # One malformed item must not block the rest of the account's data.
                log.warning("skipping a malformed Humanity %s item: %s", page.type, type(exc).__name__)
                page.skipped(type(exc).__name__)
        return records


# --- the wire ---------------------------------------------------------------------------------


def _retry_after(response: requests.Response) -> float | None:
    return parse_retry_after(response.headers.get("Retry-After"))


def _inspect(response: requests.Response) -> None:
    """Humanity reports errors in the body, often with HTTP 200: read `status` every time."""
    body = decode_json(response)
    status = body.get("status") if isinstance(body, dict) else None
    if status == 1 and "data" in body:
        return
    if status == 3:
        raise TokenRejected("Humanity rejected the access token (status 3)")
    if status == 91:
        raise RateLimited("Humanity throttled the request (status 91)", _retry_after(response))
    if status is None:
        raise TransientError("Humanity returned a body without a status")
    error = str(body.get("error", ""))[:200]
    raise PermanentError(f"Humanity answered status {status}: {error}")


# --- normalizing ------------------------------------------------------------------------------


def _shift(item: Mapping[str, Any], context: Mapping[str, Any], employee_id: str) -> Record:
    start, end = _instant(item["start_timestamp"]), _instant(item["end_timestamp"])
    tz = _offset(item.get("start_date"), start)
    if tz is None:
        tz = int(context.get("tz_offset") or 0)
    position = str(item.get("schedule") or "")
    location = str(item.get("schedule_location_id") or "")
    employees = [str(e.get("id")) for e in item.get("employees") or [] if isinstance(e, dict)]
    return Record(
        type="shifts",
        external_id=str(item["id"]),
        start_time=start,
        end_time=end,
        tz_offset=tz,
        fields={
            "title": item.get("title") or "",
            "position": _name(context, "positions", position) or item.get("schedule_name") or None,
            "location": _name(context, "locations", location) or None,
            "published": _flag(item.get("published")),
            "employeeId": employee_id if employee_id in employees or not employees else employees[0],
        },
        source_data=dict(item),
    )


def _timeclock(item: Mapping[str, Any], context: Mapping[str, Any], employee_id: str) -> Record:
    start = _instant(item["in_timestamp"])
    end = _instant(item["out_timestamp"]) if item.get("out_timestamp") else None
    schedule = _object(item.get("schedule"))
    position = _object(context.get("positions", {}).get(str(schedule.get("id") or "")))
    location = _object(position.get("location"))
    hours = _object(item.get("length")).get("total_hours")
    duration = int((end - start).total_seconds()) if end else (round(float(hours) * 3600) if hours else None)
    return Record(
        type="timeclocks",
        external_id=str(item["id"]),
        start_time=start,
        end_time=end,
        tz_offset=int(context.get("tz_offset") or 0),
        fields={
            "duration": duration,
            "position": schedule.get("name") or position.get("name") or None,
            "location": location.get("name") or None,
            "shiftId": str(item["shift"]) if item.get("shift") else None,
        },
        source_data=dict(item),
    )


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _instant(value: Any) -> datetime:
    """A Unix timestamp; a value outside what a datetime holds (1e20, inf) is a ValueError."""
    try:
        return datetime.fromtimestamp(int(float(value)), UTC)
    except (OverflowError, OSError):
        raise ValueError(f"timestamp out of range: {str(value)[:30]}") from None


def _offset(date_object: Any, instant: datetime) -> int | None:
    """Minutes east of UTC, from the wall-clock date and time Humanity shows next to a
    timestamp; None when they are missing or make no sense."""
    if not isinstance(date_object, dict):
        return None
    match = _CLOCK.match(str(date_object.get("time", "")))
    try:
        day = date.fromisoformat(str(date_object.get("date", "")))
    except ValueError:
        return None
    if match is None:
        return None
    hour, minute, second = int(match[1]), int(match[2]), int(match[3] or 0)
    if match[4]:
        hour = hour % 12 + (12 if match[4].lower() == "pm" else 0)
    if hour > 23 or minute > 59:
        return None
    wall = datetime.combine(day, time(hour, minute, min(second, 59)), tzinfo=UTC)
    minutes = round((wall - instant).total_seconds() / 60 / 15) * 15
    return minutes if abs(minutes) <= MAX_OFFSET else None


def _common_offset(items: list[Any]) -> int | None:
    seen: Counter[int] = Counter()
    for item in items:
        if isinstance(item, dict) and item.get("start_timestamp"):
            try:
                found = _offset(item.get("start_date"), _instant(item["start_timestamp"]))
            except (TypeError, ValueError, ArithmeticError):
                continue
            if found is not None:
                seen[found] += 1
    return seen.most_common(1)[0][0] if seen else None


def _flag(value: Any) -> bool:
    return value not in (None, False, 0, "0", "", "false")


def _name(context: Mapping[str, Any], table: str, key: str) -> str | None:
    entry = context.get(table, {}).get(key)
    return str(entry["name"]) if isinstance(entry, dict) and entry.get("name") else None


def _by_id(items: Any) -> dict[str, Any]:
    if isinstance(items, dict):
        items = list(items.values())
    return {str(i["id"]): i for i in items or [] if isinstance(i, dict) and "id" in i}


def _chunks(first: date, last: date) -> Iterator[tuple[date, date]]:
    """[start, end) day ranges of at most CHUNK_DAYS covering [first, last)."""
    start = first
    while start < last:
        end = min(start + timedelta(days=CHUNK_DAYS), last)
        yield start, end
        start = end


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=UTC)
