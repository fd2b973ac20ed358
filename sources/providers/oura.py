"""Oura (Cloud API v2): workouts, sleeps, heart rate, daily activity totals and SpO2 of an Oura ring.

Document collections (`workout`, `sleep`, `daily_activity`, `daily_spo2`) are read in date
chunks. Oura's date bounds are fuzzy (a date-only bound means midnight, daily documents are
filtered on their 04:00 `timestamp`, `sleep` once looked start-exclusive), so every query is
padded by two days on each side while the chunk's deletion window stays exact: a document
starting inside the window is certainly in the answer if it still exists. Heart rate is a time
series in UTC with `next_token` paging; it is stored page by page and resumes mid-chunk.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import requests

from ..base import (
    AuthorizationFailed,
    PermanentError,
    RawPage,
    Record,
    RefreshRefused,
    SyncContext,
    TransientError,
    Window,
)
from ..http import ProviderHttp, decode_json, oauth_error_code, raise_for_status, raise_for_token_status
from ..oauth import OAuth2CodeSource

log = logging.getLogger(__name__)

CHUNK_DAYS = 30  # one query per collection and month of history
PAD_DAYS = 2  # query padding around a chunk, for Oura's fuzzy date bounds
REPULL_DAYS = 7  # sleeps and workouts appear (and change) days late: re-read the last week
HEART_RATE_OVERLAP = timedelta(hours=24)  # the ring uploads hours-old readings when the phone syncs
MAX_PAGES = 1000  # a provider that keeps returning next_token must not loop forever

# Oura collection -> the record type it yields. Order matters only for the cursor's readability.
DOCUMENTS = (
    ("workout", "activities"),
    ("sleep", "sleeps"),
    ("daily_activity", "activity_summaries"),
    ("daily_spo2", "blood_oxygen"),
)
# Time series samples that would bloat sourceData for little use.
BULKY = frozenset({"met", "class_5_min", "heart_rate", "hrv", "movement_30_sec", "motion_count"})


class ScopeNotGranted(PermanentError):
    """Oura answered 403: the user didn't grant this collection's scope (or the membership lapsed)."""


class BadItem(ValueError):
    """A provider document that doesn't have the documented shape."""


class OuraSource(OAuth2CodeSource):
    slug = "oura"
    name = "Oura"
    data_types = ("activities", "sleeps", "heart_rate", "activity_summaries", "blood_oxygen")
    history_days = 365
    default_authorize_url = "https://cloud.ouraring.com/oauth/authorize"
    default_token_url = "https://api.ouraring.com/oauth/token"  # noqa: S105 - a URL, not a secret
    default_api_url = "https://api.ouraring.com"
    # The SpO2 scope is `spo2` in Oura's docs and `spo2Daily` in its OpenAPI; unknown scopes are
    # dropped at consent, so asking for both is harmless.
    scopes = ("personal", "daily", "heartrate", "workout", "spo2", "spo2Daily")
    supports_pkce = False  # not documented by Oura
    client_auth = "body"

    # --- authorization -------------------------------------------------------------------
    def token_request(self, fields: dict[str, str], http: ProviderHttp) -> dict[str, Any]:
        """POST the token endpoint. Refresh tokens are single-use (the engine serializes
        refreshes per connection); a refused grant is a 400/401 with an OAuth `error`."""
        body = {**fields, "client_id": self.client_id, "client_secret": self.client_secret}
        response = http.request("POST", self.token_url, data=body, check=False, inspect=_token_status)
        if response.status_code >= 400:
            raise RefreshRefused(f"Oura refused the grant ({oauth_error_code(response)})")
        token = response.json()
        if not isinstance(token, dict):
            raise TransientError("Oura token endpoint returned an unexpected body")
        return token

    def identify(self, token: dict[str, Any], http: ProviderHttp) -> str:
        info = http.get_json(
            f"{self.api_url}/v2/usercollection/personal_info", headers=self.auth_headers(token), inspect=None
        )
        user_id = info.get("id") if isinstance(info, dict) else None
        if not isinstance(user_id, str) or not user_id:
            raise AuthorizationFailed("Oura did not say which user authorized")
        return user_id

    # --- fetch ---------------------------------------------------------------------------
    def history_depth(self) -> int:
        raw = self.setting("HISTORY_DAYS")
        return int(raw) if raw.isdigit() and int(raw) > 0 else self.history_days

    def fetch(self, ctx: SyncContext) -> Iterator[RawPage]:
        today = ctx.now.astimezone(UTC).date()
        first_day = today - timedelta(days=self.history_depth())
        for collection, kind in DOCUMENTS:
            yield from self._documents(ctx, collection, kind, first_day, today)
        yield from self._heart_rate(ctx, datetime.combine(first_day, time(), UTC))

    def _documents(self, ctx: SyncContext, collection: str, kind: str, first: date, today: date) -> Iterator[RawPage]:
        state = ctx.cursor.get(collection) or {}
        start = first
        if state.get("done"):
            # Continue after the last stored chunk; later syncs also re-read the recent days, which
            # still change (a resumed history sync just goes on).
            start = date.fromisoformat(state["done"]) + timedelta(days=1)
            if not ctx.history:
                start = max(first, min(start, today - timedelta(REPULL_DAYS)))
        while start <= today:
            end = min(start + timedelta(days=CHUNK_DAYS - 1), today)
            params = {
                "start_date": (start - timedelta(PAD_DAYS)).isoformat(),
                "end_date": (end + timedelta(PAD_DAYS)).isoformat(),
            }
            try:
                items = [item for page in self._pages(ctx, collection, params) for item in page[0]]
            except ScopeNotGranted:
                log.info("Oura connection %s has no access to %s; skipping it", ctx.connection_id, collection)
                return
            window = Window(kind, _midnight(start), _midnight(end + timedelta(days=1)))
            yield RawPage(type=collection, payload=items, cursor={collection: {"done": end.isoformat()}}, window=window)
            start = end + timedelta(days=1)

    def _heart_rate(self, ctx: SyncContext, first: datetime) -> Iterator[RawPage]:
        state = ctx.cursor.get("heartrate") or {}
        now = ctx.now.astimezone(UTC).replace(microsecond=0)
        done = datetime.fromisoformat(state["done"]) if state.get("done") else None
        start = first
        if done:
            start = done if ctx.history else max(first, min(done, now - HEART_RATE_OVERLAP))
        token = None
        if state.get("next_token") and state.get("start") and state.get("end"):
            # An interrupted chunk: go on from its next page.
            start, token = datetime.fromisoformat(state["start"]), str(state["next_token"])
        while start < now:
            end = datetime.fromisoformat(state["end"]) if token else min(start + timedelta(days=CHUNK_DAYS), now)
            params = {"start_datetime": start.isoformat(), "end_datetime": end.isoformat()}
            try:
                for items, next_token in self._pages(ctx, "heartrate", params, token):
                    position: dict[str, Any] = {"done": (done or start).isoformat()}
                    if next_token:
                        position.update(start=start.isoformat(), end=end.isoformat(), next_token=next_token)
                    else:
                        position["done"] = end.isoformat()
                    yield RawPage(type="heartrate", payload=items, cursor={"heartrate": position})
            except ScopeNotGranted:
                log.info("Oura connection %s has no access to heart rate; skipping it", ctx.connection_id)
                return
            except PermanentError:
                if token is None:
                    raise
                # The stored next_token is no longer accepted: read the chunk again from its start.
                log.info("Oura refused a stored next_token; re-reading the chunk from %s", start.isoformat())
                token = None
                continue
            token, state, done = None, {}, end
            start = end

    def _pages(
        self, ctx: SyncContext, collection: str, params: dict[str, str], token: str | None = None
    ) -> Iterator[tuple[list[Any], str | None]]:
        """Each page of one query as (documents, next_token), following next_token to the end."""
        url = f"{self.api_url}/v2/usercollection/{collection}"
        for _ in range(MAX_PAGES):
            query = {**params, "next_token": token} if token else params
            response = ctx.http.request(
                "GET", url, params=query, headers=self.auth_headers(ctx.credentials), check=False, inspect=_api_status
            )
            items, token = _envelope(response.json(), collection)
            yield items, token
            if not token:
                return
        raise TransientError(f"Oura kept paging {collection} past {MAX_PAGES} pages")

    # --- normalize -----------------------------------------------------------------------
    def normalize(self, page: RawPage, ctx: SyncContext) -> list[Record]:
        parse = PARSERS[page.type]
        records: list[Record] = []
        skipped = 0
        for item in page.payload:
            try:
                record = parse(item)
            except BadItem as exc:
                skipped += 1
                log.warning("skipping a malformed Oura %s document: %s", page.type, exc)
                continue
            if record is not None:
                records.append(record)
        if skipped:
            page.skipped(f"{skipped} unreadable document(s)")
        return records


# --- HTTP answers ----------------------------------------------------------------------------


def _api_status(response: requests.Response) -> None:
    """Oura's answers mapped to the engine's errors; a 403 (scope not granted) is told apart."""
    if response.status_code == 403:
        raise ScopeNotGranted(f"{response.url.split('?', 1)[0]} answered 403")
    if response.status_code >= 400:
        raise_for_status(response, detail=_detail(response))
    decode_json(response)  # a malformed body is retried like a 5xx


def _token_status(response: requests.Response) -> None:
    raise_for_token_status(response, "Oura")


def _detail(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return "no details"
    detail = body.get("detail") if isinstance(body, dict) else None
    return str(detail)[:200] if detail else "no details"


def _envelope(body: Any, collection: str) -> tuple[list[Any], str | None]:
    if not isinstance(body, dict) or not isinstance(body.get("data"), list):
        raise TransientError(f"Oura returned an unexpected body for {collection} (no data list)")
    token = body.get("next_token")
    if token is not None and not isinstance(token, str):
        raise TransientError(f"Oura returned an unexpected next_token for {collection}")
    return body["data"], token or None


# --- documents -> records ---------------------------------------------------------------------


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(), UTC)


def _field(item: Any, key: str) -> Any:
    if not isinstance(item, dict):
        raise BadItem("not an object")
    if item.get(key) is None:
        raise BadItem(f"{key} is missing")
    return item[key]


def _text(item: Any, key: str) -> str:
    value = _field(item, key)
    if not isinstance(value, str) or not value:
        raise BadItem(f"{key} is not a string")
    return value


def _number(item: Any, key: str, *, optional: bool = False) -> float | None:
    if optional and (not isinstance(item, dict) or item.get(key) is None):
        return None
    value = _field(item, key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadItem(f"{key} is not a number")
    return float(value)


def _instant(item: Any, key: str) -> tuple[datetime, int]:
    """An ISO 8601 timestamp with its offset -> (UTC instant, offset in minutes east of UTC)."""
    raw = _text(item, key)
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise BadItem(f"{key} is not an ISO 8601 timestamp") from None
    offset = moment.utcoffset()
    if offset is None:
        raise BadItem(f"{key} has no UTC offset")
    return moment.astimezone(UTC), int(offset.total_seconds() // 60)


def _day(item: Any) -> date:
    try:
        return date.fromisoformat(_text(item, "day"))
    except ValueError:
        raise BadItem("day is not a date") from None


def _minutes(seconds: float | None) -> int | None:
    return None if seconds is None else round(seconds / 60)


def _raw(item: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in item.items() if k not in BULKY}


def workout_record(item: Any) -> Record:
    start, offset = _instant(item, "start_datetime")
    end, _ = _instant(item, "end_datetime")
    if end < start:
        raise BadItem("end_datetime is before start_datetime")
    fields = {
        "type": _text(item, "activity").lower(),
        "duration": round((end - start).total_seconds()),
        "distance": _number(item, "distance", optional=True),
        "steps": None,  # Oura counts steps per day (activity summaries), not per workout
        "calories": _number(item, "calories", optional=True),
    }
    return Record("activities", _text(item, "id"), start, offset, end, fields=fields, source_data=_raw(item))


def sleep_record(item: Any) -> Record | None:
    kind = _text(item, "type")
    if kind in ("deleted", "rest"):
        # A user-deleted sleep is a tombstone and `rest` a rejected detection: neither is a sleep.
        # Left out, the chunk's window deletes a stored copy.
        return None
    start, offset = _instant(item, "bedtime_start")
    end, _ = _instant(item, "bedtime_end")
    phases = item.get("sleep_phase_5_min")
    fields = {
        "day": _day(item).isoformat(),
        "mainSleep": kind == "long_sleep",
        "timeAsleep": _minutes(_number(item, "total_sleep_duration")),
        "timeAwake": _minutes(_number(item, "awake_time")),
        "timeInBed": _minutes(_number(item, "time_in_bed")),
        "timeToFallAsleep": _minutes(_number(item, "latency", optional=True)),
        "efficiency": _number(item, "efficiency", optional=True),
        "numberOfWakeups": _wakeups(phases) if isinstance(phases, str) else None,
    }
    return Record("sleeps", _text(item, "id"), start, offset, end, fields=fields, source_data=_raw(item))


def _wakeups(phases: str) -> int:
    """Awake stretches (phase 4) between falling asleep and the final wake-up."""
    return len(re.findall("4+", phases.strip("4")))


def daily_activity_record(item: Any) -> Record:
    start, offset = _instant(item, "timestamp")  # the day starts at 04:00 local time
    low = _number(item, "low_activity_time", optional=True) or 0
    medium = _number(item, "medium_activity_time", optional=True) or 0
    high = _number(item, "high_activity_time", optional=True) or 0
    fields = {
        "date": _day(item).isoformat(),
        "steps": _number(item, "steps"),
        "calories": _number(item, "total_calories", optional=True),
        "activeCalories": _number(item, "active_calories", optional=True),
        "distance": _number(item, "equivalent_walking_distance", optional=True),
        "duration": round(low + medium + high),
        "sedentary": _number(item, "sedentary_time", optional=True),
        "light": low,
        "moderate": medium,
        "vigorous": high,
    }
    end = start + timedelta(days=1)
    return Record("activity_summaries", _text(item, "id"), start, offset, end, fields=fields, source_data=_raw(item))


def spo2_record(item: Any) -> Record | None:
    average = _number(item.get("spo2_percentage") if isinstance(item, dict) else None, "average", optional=True)
    if average is None:
        return None  # no reading that night (older rings have no SpO2 sensor)
    fields = {"value": average, "unit": "%"}
    day = _midnight(_day(item))  # a nightly average with a day but no time
    return Record("blood_oxygen", _text(item, "id"), day, 0, value=average, fields=fields, source_data=_raw(item))


def heart_rate_record(item: Any) -> Record:
    moment, offset = _instant(item, "timestamp")  # UTC in Oura's answers
    bpm = _number(item, "bpm")
    assert bpm is not None
    external_id = "hr-" + moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    fields = {"value": bpm, "unit": "bpm"}
    return Record("heart_rate", external_id, moment, offset, value=bpm, fields=fields, source_data=dict(item))


PARSERS: dict[str, Callable[[Any], Record | None]] = {
    "workout": workout_record,
    "sleep": sleep_record,
    "daily_activity": daily_activity_record,
    "daily_spo2": spo2_record,
    "heartrate": heart_rate_record,
}
