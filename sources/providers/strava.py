"""Strava (API v3): the athlete's activities.

The first sync pages through `/athlete/activities` over the history window (resumable by page).
Later syncs re-read a trailing window as one page: Strava announces edits of distance, times or
heart rate nowhere but webhooks, and a deleted activity simply vanishes from the list, so the
window lets the engine delete what is gone. Rate limits are per application and reported on
every answer; the plugin stops before exhausting them rather than collecting 429s.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import requests

from ..base import (
    Credentials,
    RateLimited,
    RawPage,
    Record,
    RefreshRefused,
    SyncContext,
    TransientError,
    Window,
)
from ..http import ProviderHttp, decode_json, raise_for_status, raise_for_token_status
from ..oauth import OAuth2CodeSource

log = logging.getLogger(__name__)

PER_PAGE = 200  # Strava's maximum
REPULL = timedelta(days=7)  # later syncs re-read the last week (edits and deletions)
MAX_PAGES = 1000
RATE_RESERVE = 2  # requests left unused in a rate-limit window, for the app's other calls

SPORT_TYPES = {
    "Run": "running",
    "TrailRun": "running",
    "VirtualRun": "running",
    "Walk": "walking",
    "Hike": "hiking",
    "Ride": "cycling",
    "MountainBikeRide": "cycling",
    "GravelRide": "cycling",
    "EBikeRide": "cycling",
    "EMountainBikeRide": "cycling",
    "VirtualRide": "cycling",
    "Swim": "swimming",
    "Rowing": "rowing",
    "WeightTraining": "weight_training",
}


class BadItem(ValueError):
    """An activity that doesn't have the documented shape."""


class StravaSource(OAuth2CodeSource):
    slug = "strava"
    name = "Strava"
    data_types = ("activities",)
    history_days = 365
    default_authorize_url = "https://www.strava.com/oauth/authorize"
    default_token_url = "https://www.strava.com/oauth/token"  # noqa: S105 - a URL, not a secret
    default_api_url = "https://www.strava.com/api/v3"
    # activity:read_all includes "Only Me" activities, which activity:read silently leaves out.
    scopes = ("read", "activity:read_all")
    scope_separator = ","
    extra_authorize_params = {"approval_prompt": "auto"}
    supports_pkce = False  # not documented by Strava
    client_auth = "body"

    # --- authorization -------------------------------------------------------------------
    def token_request(self, fields: dict[str, str], http: ProviderHttp) -> dict[str, Any]:
        """POST the token endpoint. Strava refuses with its own `Fault` body (no OAuth `error`)
        and may rotate the refresh token on any refresh, the old one dying at once."""
        body = {**fields, "client_id": self.client_id, "client_secret": self.client_secret}
        body.pop("redirect_uri", None)  # not part of Strava's token request
        response = http.request("POST", self.token_url, data=body, check=False, inspect=_token_status)
        if response.status_code >= 400:
            raise RefreshRefused(f"Strava refused the grant ({_fault(response)})")
        token = response.json()
        if not isinstance(token, dict):
            raise TransientError("Strava token endpoint returned an unexpected body")
        return token

    def credentials_from_token(
        self, token: dict[str, Any], http: ProviderHttp, previous: dict[str, Any] | None = None
    ) -> Credentials:
        credentials = super().credentials_from_token(token, http, previous)
        expires_at = token.get("expires_at")
        if isinstance(expires_at, int | float) and not isinstance(expires_at, bool):
            # Strava's absolute expiry is exact; expires_in is relative to when it answered.
            credentials.expires_at = datetime.fromtimestamp(expires_at, UTC)
        return credentials

    def identify(self, token: dict[str, Any], http: ProviderHttp) -> str:
        athlete = token.get("athlete")
        if not isinstance(athlete, dict) or athlete.get("id") is None:
            athlete = http.get_json(f"{self.api_url}/athlete", headers=self.auth_headers(token))
        athlete_id = athlete.get("id") if isinstance(athlete, dict) else None
        if isinstance(athlete_id, bool) or not isinstance(athlete_id, int | str) or athlete_id == "":
            raise TransientError("Strava did not say which athlete authorized")
        return str(athlete_id)

    # --- fetch ---------------------------------------------------------------------------
    def history_depth(self) -> int:
        raw = self.setting("HISTORY_DAYS")
        return int(raw) if raw.isdigit() and int(raw) > 0 else self.history_days

    def per_page(self) -> int:
        raw = self.setting("PER_PAGE")
        return min(int(raw), PER_PAGE) if raw.isdigit() and int(raw) > 0 else PER_PAGE

    def fetch(self, ctx: SyncContext) -> Iterator[RawPage]:
        state = ctx.cursor.get("activities") or {}
        now = int(ctx.now.timestamp())
        if state.get("page") and state.get("after") is not None and state.get("before") is not None:
            # An interrupted history pass: go on from the next page.
            yield from self._pass(ctx, int(state["after"]), int(state["before"]), int(state["page"]))
        elif state.get("done") is not None:
            after = max(now - self.history_depth() * 86400, min(int(state["done"]), now) - int(REPULL.total_seconds()))
            yield self._window(ctx, after, now)
        else:
            yield from self._pass(ctx, now - self.history_depth() * 86400, now, 1)

    def _pass(self, ctx: SyncContext, after: int, before: int, page: int) -> Iterator[RawPage]:
        """Page through [after, before), storing each page with the next page as the cursor."""
        budget = RateBudget()
        for _ in range(MAX_PAGES):
            items = self._list(ctx, budget, after, before, page)
            last = len(items) < self.per_page()
            position = {"done": before} if last else {"after": after, "before": before, "page": page + 1}
            yield RawPage(type="activities", payload=items, cursor={"activities": position})
            if last:
                return
            page += 1
        raise TransientError(f"Strava kept paging activities past {MAX_PAGES} pages")

    def _window(self, ctx: SyncContext, after: int, before: int) -> RawPage:
        """Every activity starting in [after, before), as one page the engine can delete against."""
        budget = RateBudget()
        items: list[Any] = []
        for page in range(1, MAX_PAGES + 1):
            batch = self._list(ctx, budget, after, before, page)
            items.extend(batch)
            if len(batch) < self.per_page():
                window = Window("activities", datetime.fromtimestamp(after, UTC), datetime.fromtimestamp(before, UTC))
                return RawPage(type="activities", payload=items, cursor={"activities": {"done": before}}, window=window)
        raise TransientError(f"Strava kept paging activities past {MAX_PAGES} pages")

    def _list(self, ctx: SyncContext, budget: RateBudget, after: int, before: int, page: int) -> list[Any]:
        budget.check(ctx.now)
        # Strava's bounds are exclusive; widen by a second so an activity on the edge is kept.
        params = {"after": after - 1, "before": before + 1, "page": page, "per_page": self.per_page()}
        response = ctx.http.request(
            "GET",
            f"{self.api_url}/athlete/activities",
            params=params,
            headers=self.auth_headers(ctx.credentials),
            check=False,
            inspect=budget.inspect,
        )
        body = response.json()
        if not isinstance(body, list):
            raise TransientError("Strava returned an unexpected body for activities (not a list)")
        return body

    # --- normalize -----------------------------------------------------------------------
    def normalize(self, page: RawPage, ctx: SyncContext) -> list[Record]:
        records: list[Record] = []
        for item in page.payload:
            try:
                records.append(activity_record(item))
            except BadItem as exc:
                log.warning("skipping a malformed Strava activity: %s", exc)
                page.skipped(str(exc))
        return records


# --- rate limits -----------------------------------------------------------------------------


@dataclass
class RateBudget:
    """What Strava's X-RateLimit-* and X-ReadRateLimit-* headers said about the app's budget."""

    # (15-minute usage, 15-minute limit, daily usage, daily limit) per header family
    seen: dict[str, tuple[int, int, int, int]] = field(default_factory=dict)

    def inspect(self, response: requests.Response) -> None:
        for family in ("X-RateLimit", "X-ReadRateLimit"):
            usage = _pair(response.headers.get(f"{family}-Usage"))
            limit = _pair(response.headers.get(f"{family}-Limit"))
            if usage and limit:
                self.seen[family] = (usage[0], limit[0], usage[1], limit[1])
        _api_status(response, self)

    def wait(self, now: datetime) -> float | None:
        """Seconds until the exhausted window resets, or None if there is room left."""
        wait: float | None = None
        for short_used, short_limit, day_used, day_limit in self.seen.values():
            if day_used >= day_limit - RATE_RESERVE:
                wait = max(wait or 0, _until_midnight(now))
            elif short_used >= short_limit - RATE_RESERVE:
                wait = max(wait or 0, _until_quarter(now))
        return wait

    def check(self, now: datetime) -> None:
        wait = self.wait(now)
        if wait is not None:
            raise RateLimited("Strava's rate limit is nearly used up; waiting for its window to reset", wait)


def _pair(raw: str | None) -> tuple[int, int] | None:
    parts = (raw or "").split(",")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        return None
    return int(parts[0]), int(parts[1])


def _until_quarter(now: datetime) -> float:
    """Strava's 15-minute windows reset at :00, :15, :30 and :45."""
    now = now.astimezone(UTC)
    start = now.replace(minute=now.minute - now.minute % 15, second=0, microsecond=0)
    return (start + timedelta(minutes=15) - now).total_seconds() + 1


def _until_midnight(now: datetime) -> float:
    now = now.astimezone(UTC)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    return (midnight - now).total_seconds() + 1


# --- HTTP answers ----------------------------------------------------------------------------


def _api_status(response: requests.Response, budget: RateBudget) -> None:
    if response.status_code >= 400:
        # Strava sends no Retry-After on a 429: its rate-limit headers say which window is spent.
        raise_for_status(response, detail=_fault(response), retry_after=budget.wait(datetime.now(UTC)) or 60.0)
    decode_json(response)  # a malformed body is retried like a 5xx


def _token_status(response: requests.Response) -> None:
    raise_for_token_status(response, "Strava")


def _fault(response: requests.Response) -> str:
    """Strava's `Fault {message, errors: [{resource, field, code}]}` in a few words."""
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}"
    errors = body.get("errors") if isinstance(body, dict) else None
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        first = errors[0]
        return " ".join(str(first.get(k, "?"))[:60] for k in ("resource", "field", "code"))
    message = body.get("message") if isinstance(body, dict) else None
    return str(message)[:100] if message else f"HTTP {response.status_code}"


# --- activities -> records --------------------------------------------------------------------


def _field(item: Any, key: str) -> Any:
    if not isinstance(item, dict):
        raise BadItem("not an object")
    if item.get(key) is None:
        raise BadItem(f"{key} is missing")
    return item[key]


def _number(item: dict[str, Any], key: str, *, optional: bool = False) -> float | None:
    if optional and item.get(key) is None:
        return None
    value = _field(item, key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadItem(f"{key} is not a number")
    return float(value)


def _utc(item: dict[str, Any], key: str) -> datetime:
    raw = _field(item, key)
    try:
        moment = datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
    except ValueError:
        raise BadItem(f"{key} is not an ISO 8601 timestamp") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _offset_minutes(item: dict[str, Any], start: datetime) -> int:
    """Minutes east of UTC. `start_date_local` is local wall time wrongly suffixed `Z`, so it is
    only a fallback, read as wall time."""
    offset = _number(item, "utc_offset", optional=True)
    if offset is not None:
        return round(offset / 60)
    if item.get("start_date_local") is not None:
        return round((_utc(item, "start_date_local") - start).total_seconds() / 60)
    raise BadItem("utc_offset is missing")


def sport(item: dict[str, Any]) -> str:
    name = item.get("sport_type") or item.get("type")  # `type` is the older, coarser field
    if not isinstance(name, str) or not name:
        raise BadItem("sport_type is missing")
    return SPORT_TYPES.get(name) or re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def activity_record(item: Any) -> Record:
    activity_id = _field(item, "id")
    if isinstance(activity_id, bool) or not isinstance(activity_id, int | str):
        raise BadItem("id is not an integer")
    start = _utc(item, "start_date")
    elapsed = _number(item, "elapsed_time")
    assert elapsed is not None
    # Calories are only in an activity's detail; rides with a power meter report the work done
    # in kJ, which is close to the kcal burned (muscle efficiency ~24% cancels 4.184 kJ/kcal).
    calories = _number(item, "calories", optional=True)
    if calories is None:
        calories = _number(item, "kilojoules", optional=True)
    fields = {
        "type": sport(item),
        "duration": round(elapsed),
        "distance": _number(item, "distance", optional=True),
        "steps": None,  # Strava doesn't count steps
        "calories": calories,
    }
    end = start + timedelta(seconds=elapsed)
    offset = _offset_minutes(item, start)
    return Record("activities", str(activity_id), start, offset, end, fields=fields, source_data=dict(item))
