"""Oura (Cloud API v2): workouts, sleeps, heart rate, daily activity totals, SpO2, the night's
resting heart rate, HRV and breathing rate, body temperature deviation and VO2 max of an Oura ring.

Seven collections, each fetched (and failing) on its own: `workout`, `sleep` (sleeps, and the
night's resting heart rate, HRV and breathing rate from each long sleep), `daily_activity`,
`daily_spo2`, `heartrate`, `daily_readiness` (body temperature deviation) and `vO2_max`. A 403
(scope not granted, membership lapsed) or 404 of one is the engine's to record; the others go
on. The field-by-field reading, with its sources, is in docs/providers/oura.md.

Document collections are read in date chunks. Oura's date bounds are fuzzy (a date-only bound
means that day's midnight and daily documents are filtered on their 04:00 `timestamp`, so the
end day's activity is left out; `sleep` once looked start-exclusive), so every query is padded
by two days on each side while the chunk's deletion window stays exact: a document starting
inside the window is certainly in the answer if it still exists. Heart rate is a time series in
UTC with `next_token` paging; it is stored page by page and resumes mid-chunk.

Days: Oura files each document under its own `day` (a sleep under the day it counts toward,
which for an evening nap is the next day; daily activity under the day whose 04:00 starts it),
and so do the records made of them. The night's readings are timestamped when it ended
(`bedtime_end`); readiness and VO2 max at the document's own `timestamp`.

Push: one subscription per webhook data type and event (create, update, delete), made and
renewed with the application's client id and secret. An event names a document; it is fetched by
id (a 404 deletes the records made of it, a day's activity totals too). Events are signed:
`x-oura-signature` is the HMAC-SHA256 of `x-oura-timestamp` + body keyed with the client secret,
in hex of either case.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, timezone
from typing import Any
from urllib.parse import quote

import requests

from ..base import (
    AuthorizationFailed,
    Change,
    Collection,
    Notice,
    PermanentError,
    PushBatch,
    PushRefused,
    PushTopic,
    PushUnsupported,
    RateLimit,
    RawPage,
    Record,
    RefreshRefused,
    Subscribed,
    SyncContext,
    TransientError,
    Window,
)
from ..http import ProviderHttp, decode_json, oauth_error_code, raise_for_status, raise_for_token_status
from ..oauth import OAuth2CodeSource
from ..types import RECORD_TYPES

log = logging.getLogger(__name__)

CHUNK_DAYS = 30  # one query per collection and month of history
PAD_DAYS = 2  # query padding around a chunk, for Oura's fuzzy date bounds
REPULL_DAYS = 7  # sleeps and workouts appear (and change) days late: re-read the last week
HEART_RATE_OVERLAP = timedelta(hours=24)  # the ring uploads hours-old readings when the phone syncs
MAX_PAGES = 1000  # a provider that keeps returning next_token must not loop forever

# The night's readings taken from each long sleep (see NIGHT_READINGS).
NIGHTLY = ("resting_heart_rate", "heart_rate_variability", "respiratory_rate")
# Each Oura collection and the record types it yields (its documents' own type first), in fetch order.
COLLECTIONS = (
    Collection("workout", ("activities",)),
    Collection("sleep", ("sleeps", *NIGHTLY)),
    Collection("daily_activity", ("activity_summaries",)),
    Collection("daily_spo2", ("blood_oxygen",)),
    Collection("heartrate", ("heart_rate",)),
    Collection("daily_readiness", ("body_temperature",)),
    Collection("vO2_max", ("vo2_max",)),
)
# Webhook data types -> the collection (path) each names. Oura's OpenAPI spells VO2 max
# `vo2_max` for webhooks and `vO2_max` in paths; events are read in either spelling. Heart rate
# is not a webhook data type in the OpenAPI document (other sources list it): asked for, and left
# to polling if Oura refuses it.
WEBHOOK_TYPES = {
    "workout": "workout",
    "sleep": "sleep",
    "daily_activity": "daily_activity",
    "daily_spo2": "daily_spo2",
    "daily_readiness": "daily_readiness",
    "vo2_max": "vO2_max",
    "heartrate": "heartrate",
}
EVENTS = ("create", "update", "delete")
_TYPES_OF = {c.name: c.types for c in COLLECTIONS}
PUSH_TOPICS = tuple(
    PushTopic(f"{data_type}/{event}", _TYPES_OF[collection])
    for data_type, collection in WEBHOOK_TYPES.items()
    for event in EVENTS
)
# Time series samples that would bloat sourceData for little use.
BULKY = frozenset(
    {"met", "class_5_min", "heart_rate", "hrv", "movement_30_sec", "sleep_phase_5_min", "sleep_phase_30_sec"}
)
# Sleep periods that are not sleeps (PublicSleepType): a user-deleted sleep is a tombstone and
# `rest` a detection the user rejected. Left out, the chunk's window deletes a stored copy.
NOT_SLEEP = frozenset({"deleted", "rest"})
# `lowest_heart_rate` of a sleep period without heart-rate samples (recorded answers): no value.
NO_HEART_RATE = 255


class BadItem(ValueError):
    """A provider document that doesn't have the documented shape; the message names the field.
    `also`: record types of the same document that could not be read because of it."""

    def __init__(self, message: str, also: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.also = also


@dataclass(frozen=True)
class Skip:
    """One record of a document that could not be read, while the document's others could."""

    type: str
    reason: str


class OuraSource(OAuth2CodeSource):
    slug = "oura"
    name = "Oura"
    data_types = (
        "activities",
        "sleeps",
        "heart_rate",
        "activity_summaries",
        "blood_oxygen",
        "resting_heart_rate",
        "heart_rate_variability",
        "respiratory_rate",
        "body_temperature",
        "vo2_max",
    )
    history_days = 365
    default_authorize_url = "https://cloud.ouraring.com/oauth/authorize"
    default_token_url = "https://api.ouraring.com/oauth/token"  # noqa: S105 - a URL, not a secret
    default_api_url = "https://api.ouraring.com"
    # The SpO2 scope is `spo2` in Oura's docs and `spo2Daily` in its OpenAPI; unknown scopes are
    # dropped at consent, so asking for both is harmless. `heart_health` covers VO2 max.
    scopes = ("personal", "daily", "heartrate", "workout", "spo2", "spo2Daily", "heart_health")
    supports_pkce = False  # not documented by Oura
    client_auth = "body"
    push_topics = PUSH_TOPICS
    # "5000 requests in a 5 minute period" (the API's 429 description); whether the period is
    # fixed or rolling is not said, so it is counted as rolling, which holds either way.
    rate_limits = (RateLimit(5000, 300, rolling=True),)

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
        return self.int_setting("HISTORY_DAYS", self.history_days)

    def collections(self, ctx: SyncContext) -> Sequence[Collection]:
        return COLLECTIONS

    def fetch_collection(self, ctx: SyncContext, collection: Collection) -> Iterator[RawPage]:
        """Pages of one collection. Errors propagate: a 403 or 404 fails this collection only."""
        today = ctx.now.astimezone(UTC).date()
        first_day = today - timedelta(days=self.history_depth())
        if collection.name == "heartrate":
            return self._heart_rate(ctx, datetime.combine(first_day, time(), UTC))
        return self._documents(ctx, collection, first_day, today)

    def _documents(self, ctx: SyncContext, part: Collection, first: date, today: date) -> Iterator[RawPage]:
        collection, (kind, *also) = part.name, part.types
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
            items = [item for page in self._pages(ctx, collection, params) for item in page[0]]
            # The records made of one document (a long sleep's readings) are complete for it too.
            window = Window(kind, _midnight(start), _midnight(end + timedelta(days=1)), also=tuple(also))
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

    # --- push (webhooks in: the OpenAPI document's Webhook Subscription Routes) ----------------
    def _app(self) -> dict[str, str]:
        return {"x-client-id": self.client_id, "x-client-secret": self.client_secret}

    def push_list(self, http: ProviderHttp) -> list[Subscribed]:
        response = http.request("GET", f"{self.api_url}/v2/webhook/subscription", headers=self._app(), check=False)
        _api_status(response)
        body = response.json()
        if not isinstance(body, list):
            raise TransientError("Oura listed its webhook subscriptions in an unexpected shape")
        return [_subscribed(item) for item in body if isinstance(item, dict) and item.get("id")]

    def push_subscribe(
        self, topic: PushTopic, *, callback_url: str, verify_token: str, http: ProviderHttp
    ) -> Subscribed:
        # Oura GETs the callback with the verification token before it answers.
        data_type, event = topic.key.split("/")
        body = {
            "callback_url": callback_url,
            "verification_token": verify_token,
            "event_type": event,
            "data_type": data_type,
        }
        url = f"{self.api_url}/v2/webhook/subscription"
        response = http.request("POST", url, json=body, headers=self._app(), check=False)
        if response.status_code == 422 and "data_type" in json.dumps(_json_or_none(response)):
            raise PushUnsupported(f"Oura takes no {data_type} subscriptions ({_detail(response)})")
        _api_status(response)
        made = response.json()
        if not isinstance(made, dict) or not made.get("id"):
            raise TransientError("Oura answered a webhook subscription without its id")
        return _subscribed(made)

    def push_renew(self, provider_id: str, http: ProviderHttp) -> datetime | None:
        url = f"{self.api_url}/v2/webhook/subscription/renew/{quote(provider_id, safe='')}"
        response = http.request("PUT", url, headers=self._app(), check=False)
        _api_status(response)
        renewed = response.json()
        return _subscribed(renewed).expires_at if isinstance(renewed, dict) else None

    def push_unsubscribe(self, provider_id: str, http: ProviderHttp) -> None:
        url = f"{self.api_url}/v2/webhook/subscription/{quote(provider_id, safe='')}"
        response = http.request("DELETE", url, headers=self._app(), check=False)
        if response.status_code not in (204, 403, 404):  # 403 and 404: an id Oura doesn't have
            _api_status(response)

    def push_challenge(self, query: Mapping[str, str]) -> tuple[str, dict[str, Any]] | None:
        token, challenge = query.get("verification_token", ""), query.get("challenge", "")
        if not token or not challenge:
            return None
        return token, {"challenge": challenge}

    def push_read(self, *, headers: Mapping[str, str], body: bytes, now: datetime, max_age: int) -> PushBatch:
        stamp, signature = headers.get("x-oura-timestamp", "").strip(), headers.get("x-oura-signature", "").strip()
        if not stamp or not signature:
            raise PushRefused("the notification is not signed (x-oura-signature, x-oura-timestamp)")
        expected = hmac.new(self.client_secret.encode(), stamp.encode() + body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected.encode(), signature.lower().encode("utf-8", "replace")):
            raise PushRefused("x-oura-signature does not match")
        sent = _sent_at(stamp)
        if sent is None or abs(now.timestamp() - sent) > max_age:
            raise PushRefused("x-oura-timestamp is unreadable or too old (a replay?)")
        try:
            event = json.loads(body)
        except ValueError:
            raise PushRefused("the notification is not JSON", 400) from None
        fields = {k: event.get(k) if isinstance(event, dict) else None for k in ("event_type", "data_type", "user_id")}
        object_id = event.get("object_id") if isinstance(event, dict) else None
        if not all(isinstance(v, str) and v for v in fields.values()) or not isinstance(object_id, str | None):
            raise PushRefused("the notification lacks event_type, data_type or user_id", 400)
        key = hashlib.sha256(stamp.encode() + b"." + body).hexdigest()
        kind = str(fields["data_type"])
        collection = WEBHOOK_TYPES.get(kind) or WEBHOOK_TYPES.get(kind.lower())
        if collection is None or fields["event_type"] not in EVENTS:
            return PushBatch([], key)  # a data type this source doesn't read
        change = Change(collection, object_id or "", str(fields["event_type"]))
        return PushBatch([Notice(str(fields["user_id"]), change)], key)

    def fetch_changed(self, ctx: SyncContext, change: Change) -> Iterator[RawPage]:
        collection = change.kind
        if collection == "heartrate":  # rows have no id: the last day is read again
            now = ctx.now.astimezone(UTC).replace(microsecond=0)
            params = {"start_datetime": (now - HEART_RATE_OVERLAP).isoformat(), "end_datetime": now.isoformat()}
            for items, _ in self._pages(ctx, "heartrate", params):
                yield RawPage(type="heartrate", payload=items)
            return
        if collection not in PARSERS or not change.object_id:
            return
        response = ctx.http.request(
            "GET",
            f"{self.api_url}/v2/usercollection/{collection}/{quote(change.object_id, safe='')}",
            headers=self.auth_headers(ctx.credentials),
            check=False,
            inspect=lambda r: None if r.status_code == 404 else _api_status(r),
        )
        document = None if response.status_code == 404 else response.json()
        if isinstance(document, dict) and document.get("id") != change.object_id:
            raise TransientError(f"Oura answered {collection} {change.object_id} with another document")
        if document is None or (collection == "sleep" and document.get("type") in NOT_SLEEP):
            # Gone (or a sleep the user deleted or rejected): the records made of it go too. A day's
            # activity totals are filed under their day; the engine finds them by the document id
            # their sourceData keeps (a day since made of another document stays).
            yield RawPage(type=collection, payload=[], gone=[(t, change.object_id) for t in _TYPES_OF[collection]])
            return
        yield RawPage(type=collection, payload=[document])

    # --- normalize -----------------------------------------------------------------------
    def normalize(self, page: RawPage, ctx: SyncContext) -> list[Record]:
        parse, kind = PARSERS[page.type]
        records: list[Record] = []
        for item in page.payload:
            try:
                read = parse(item)
            except BadItem as exc:
                for each in (kind, *exc.also):
                    page.skipped(f"{page.type}: {exc}", type=each)
                continue
            for result in read:
                if isinstance(result, Skip):
                    page.skipped(f"{page.type}: {result.reason}", type=result.type)
                else:
                    records.append(result)
        return records


# --- HTTP answers ----------------------------------------------------------------------------


def _api_status(response: requests.Response) -> None:
    """Oura's answers mapped to the engine's errors: 401 refresh, 429 wait, 5xx retry, and any
    other 4xx (403: scope not granted or membership lapsed; 404; 422) fails the collection."""
    if response.status_code >= 400:
        raise_for_status(response, detail=_detail(response))
    decode_json(response)  # a malformed body is retried like a 5xx


def _token_status(response: requests.Response) -> None:
    raise_for_token_status(response, "Oura")


def _detail(response: requests.Response) -> str:
    """Oura's own words: `{"detail": "..."}`, or a 422's `{"detail": [{"msg": ...}]}` (the
    messages only: `input` echoes what was sent)."""
    try:
        body = response.json()
    except ValueError:
        return "no details"
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, list):
        detail = "; ".join(str(d.get("msg")) for d in detail if isinstance(d, dict) and d.get("msg"))
    return str(detail)[:200] if detail else "no details"


def _json_or_none(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _subscribed(item: dict[str, Any]) -> Subscribed:
    """A WebhookSubscriptionModel: `{id, callback_url, event_type, data_type, expiration_time}`."""
    data_type = str(item.get("data_type") or "")
    data_type = "vo2_max" if data_type.lower() == "vo2_max" else data_type
    try:
        expires: datetime | None = datetime.fromisoformat(str(item.get("expiration_time")).replace("Z", "+00:00"))
    except ValueError:
        expires = None
    if expires is not None and expires.tzinfo is None:
        expires = expires.replace(tzinfo=UTC)
    topic = f"{data_type}/{item.get('event_type')}"
    return Subscribed(str(item["id"]), str(item.get("callback_url") or ""), topic, expires)


def _sent_at(stamp: str) -> float | None:
    """`x-oura-timestamp`: Unix seconds (as sample code reads it), milliseconds (as some
    clients send it), or ISO 8601; None if it is none of these."""
    if stamp.isascii() and stamp.isdigit() and len(stamp) <= 16:
        value = int(stamp)
        return value / 1000 if value > 10**11 else float(value)
    try:
        moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def _envelope(body: Any, collection: str) -> tuple[list[Any], str | None]:
    if not isinstance(body, dict) or not isinstance(body.get("data"), list):
        raise TransientError(f"Oura returned an unexpected body for {collection} (no data list)")
    token = body.get("next_token")  # heart rate answers may leave it out (TimeSeriesResponse)
    if token is not None and not isinstance(token, str):
        raise TransientError(f"Oura returned an unexpected next_token for {collection}")
    return body["data"], token or None


# --- documents -> records ---------------------------------------------------------------------


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(), UTC)


def _object(item: Any) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise BadItem("the item is not an object")
    return item


def _text(item: dict[str, Any], key: str) -> str:
    value = item.get(key)
    if value is None:
        raise BadItem(f"{key} is missing")
    if not isinstance(value, str) or not value:
        raise BadItem(f"{key} is not a string")
    return value


def _number(item: dict[str, Any], key: str, *, required: bool = False) -> int | float | None:
    """A JSON number as sent (an integer stays an integer); None where it is null or absent,
    unless `required`."""
    value = item.get(key)
    if value is None:
        if required:
            raise BadItem(f"{key} is missing")
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadItem(f"{key} is not a number")
    return value


def _whole(item: dict[str, Any], key: str, *, required: bool = False) -> int | None:
    value = _number(item, key, required=required)
    return None if value is None else round(value)


def _instant(item: dict[str, Any], key: str) -> tuple[datetime, int]:
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


def _day(item: dict[str, Any], key: str = "day") -> date:
    try:
        return date.fromisoformat(_text(item, key))
    except ValueError:
        raise BadItem(f"{key} is not a date (YYYY-MM-DD)") from None


def _minutes(seconds: int | float | None) -> int | None:
    return None if seconds is None else round(seconds / 60)


def _raw(item: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in item.items() if k not in BULKY}


def workout_record(raw: Any) -> Record:
    """A workout (PublicWorkout): local start/end with their offsets, kcal, metres, Oura's day.
    The end's offset may differ from the start's (both are instants); the start's is kept."""
    item = _object(raw)
    start, offset = _instant(item, "start_datetime")
    end, _ = _instant(item, "end_datetime")
    if end < start:
        raise BadItem("end_datetime is before start_datetime")
    fields = {
        "type": _text(item, "activity").lower(),
        "duration": round((end - start).total_seconds()),
        "distance": _number(item, "distance"),  # metres, null when not measured
        "steps": None,  # Oura counts steps per day (activity summaries), not per workout
        "calories": _number(item, "calories"),  # kcal, nullable
    }
    day = _day(item) if item.get("day") is not None else None
    return Record("activities", _text(item, "id"), start, offset, end, fields=fields, source_data=_raw(item), day=day)


def sleep_records(raw: Any) -> list[Record | Skip]:
    """A sleep period, and for a long sleep (the night) its resting heart rate, HRV and
    breathing rate. A period that can't be read takes the night's readings with it."""
    item = _object(raw)
    kind = item.get("type")
    if kind in NOT_SLEEP:
        return []
    try:
        sleep = sleep_record(item)
    except BadItem as exc:
        if kind == "long_sleep":  # the readings it states are lost with it
            exc.also = tuple(t for t, _, keys in NIGHT_READINGS if any(_stated(item, k) for k in keys))
        raise
    if kind != "long_sleep":
        # Naps carry the same fields, but the night's measures are those of its long sleep
        # (what Oura's app and readiness show); a nap's stay in its sourceData.
        return [sleep]
    read: list[Record | Skip] = [sleep]
    for kind_read, reading, _ in NIGHT_READINGS:
        try:
            found = reading(item)
        except BadItem as exc:
            read.append(Skip(kind_read, str(exc)))
            continue
        if found is not None:
            read.append(found)
    return read


def sleep_record(item: dict[str, Any]) -> Record:
    """A sleep period (PublicModifiedSleepModel): durations in seconds (served in minutes),
    filed under Oura's `day`, the day it counts toward (the morning after; for a sleep that
    ends after Oura's 18:00 day change, the next day)."""
    # Any type but `rest` and `deleted` (long_sleep, sleep, late_nap, or null, which the schema
    # allows) is a sleep; only the long sleep counts as the main one.
    start, offset = _instant(item, "bedtime_start")
    end, _ = _instant(item, "bedtime_end")
    if end < start:
        raise BadItem("bedtime_end is before bedtime_start")
    day = _day(item)
    phases = item.get("sleep_phase_5_min")
    fields = {
        "day": day.isoformat(),
        "mainSleep": item.get("type") == "long_sleep",
        "timeAsleep": _minutes(_number(item, "total_sleep_duration")),
        "timeAwake": _minutes(_number(item, "awake_time")),
        "timeInBed": _minutes(_number(item, "time_in_bed", required=True)),
        "timeToFallAsleep": _minutes(_number(item, "latency")),
        "efficiency": _number(item, "efficiency"),  # percent, 1-100
        "numberOfWakeups": _wakeups(phases) if isinstance(phases, str) else None,
        "deepSleep": _minutes(_number(item, "deep_sleep_duration")),
        "lightSleep": _minutes(_number(item, "light_sleep_duration")),
        "remSleep": _minutes(_number(item, "rem_sleep_duration")),
    }
    return Record("sleeps", _text(item, "id"), start, offset, end, fields=fields, source_data=_raw(item), day=day)


def _wakeups(phases: str) -> int:
    """Awake stretches (phase 4 of sleep_phase_5_min) between falling asleep and the final wake-up."""
    return len(re.findall("4+", phases.strip("4")))


def _night_reading(item: dict[str, Any], kind: str, value: int | float, read_from: str) -> Record:
    """A measure of the night a long sleep describes: at its end (`bedtime_end`, with that
    moment's offset), filed under the sleep's `day`, one per sleep period (its id)."""
    moment, offset = _instant(item, "bedtime_end")
    day = _day(item)
    source = {k: item.get(k) for k in ("id", "day", "type", "bedtime_start", "bedtime_end", read_from)}
    fields = {"value": value, "unit": RECORD_TYPES[kind].unit}
    return Record(kind, _text(item, "id"), moment, offset, value=value, fields=fields, source_data=source, day=day)


def resting_heart_rate(item: dict[str, Any]) -> Record | None:
    """The night's resting heart rate as Oura's app shows it: the lowest of the sleep's 5-minute
    heart-rate samples (`heart_rate.items`, bpm). `lowest_heart_rate` is the lowest 30-second
    value, which the OpenAPI document says differs from the app's; it is read only when the
    period has no samples, and 255 there means no value."""
    samples = item.get("heart_rate")
    values: list[int | float] = []
    if samples is not None:
        if not isinstance(samples, dict) or not isinstance(samples.get("items"), list):
            raise BadItem("heart_rate is not a sample object with items")
        for value in samples["items"]:
            if value is None:
                continue  # a 5-minute slot without a reading
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise BadItem("heart_rate.items holds something other than numbers")
            values.append(value)
    if values:
        return _night_reading(item, "resting_heart_rate", min(values), "lowest_heart_rate")
    lowest = _number(item, "lowest_heart_rate")
    if lowest is None or lowest == NO_HEART_RATE:
        return None  # no heart rate measured that night: no reading
    return _night_reading(item, "resting_heart_rate", lowest, "lowest_heart_rate")


def heart_rate_variability(item: dict[str, Any]) -> Record | None:
    """The night's average HRV (`average_hrv`): RMSSD in milliseconds, per Oura's help center.
    Null when not measured: no reading."""
    value = _number(item, "average_hrv")
    return None if value is None else _night_reading(item, "heart_rate_variability", value, "average_hrv")


def respiratory_rate(item: dict[str, Any]) -> Record | None:
    """The night's average breathing rate (`average_breath`), breaths per minute; null: no reading."""
    value = _number(item, "average_breath")
    return None if value is None else _night_reading(item, "respiratory_rate", value, "average_breath")


def daily_activity_record(raw: Any) -> Record:
    """Oura's own totals of one day (PublicDailyActivity): the activity day runs from 04:00 local
    time (`timestamp`), filed under `day` and stored from that day's local midnight."""
    item = _object(raw)
    day = _day(item)
    _, offset = _instant(item, "timestamp")
    midnight = datetime.combine(day, time(), timezone(timedelta(minutes=offset))).astimezone(UTC)
    low, medium, high = (_whole(item, f"{k}_activity_time") for k in ("low", "medium", "high"))
    parts = [p for p in (low, medium, high) if p is not None]
    fields = {
        "date": day.isoformat(),
        "steps": _whole(item, "steps", required=True),
        # Oura's "equivalent walking distance": the day's energy expenditure as metres walked.
        # Oura reports no measured distance per day.
        "distance": _number(item, "equivalent_walking_distance"),
        "calories": _number(item, "total_calories"),  # kcal, the day's total burn
        "activeCalories": _number(item, "active_calories"),  # kcal
        "duration": sum(parts) if parts else None,  # seconds of low, medium or high activity
        "sedentary": _whole(item, "sedentary_time"),
        "light": low,
        "moderate": medium,
        "vigorous": high,
    }
    return Record(
        "activity_summaries",
        day.isoformat(),  # one per day
        midnight,
        offset,
        midnight + timedelta(days=1),
        fields=fields,
        source_data=_raw(item),
        day=day,
    )


def spo2_record(raw: Any) -> Record | None:
    """The night's average SpO2 (PublicDailySpO2), in percent, filed under Oura's `day`. It has
    no time of day and no offset: it is stored at that day's midnight UTC."""
    item = _object(raw)
    aggregate = item.get("spo2_percentage")
    if aggregate is None or (isinstance(aggregate, dict) and aggregate.get("average") is None):
        return None  # no reading that night (spo2_percentage is nullable: rings without the sensor)
    if not isinstance(aggregate, dict):
        raise BadItem("spo2_percentage is not an object")
    average = _number(aggregate, "average", required=True)
    day = _day(item)
    fields = {"value": average, "unit": "%"}
    return Record(
        "blood_oxygen",
        _text(item, "id"),
        _midnight(day),
        0,
        value=average,
        fields=fields,
        source_data=_raw(item),
        day=day,
    )


def readiness_records(raw: Any) -> list[Record | Skip]:
    """Body temperature from the day's readiness (PublicDailyReadiness): `temperature_deviation`,
    the previous night's average skin temperature against the person's baseline, in °C. Oura
    gives no absolute temperature, so `value` is null. Stored at the document's `timestamp`
    (recorded as that day's 00:00 at +00:00), filed under `day`."""
    item = _object(raw)
    deviation = _number(item, "temperature_deviation")
    if deviation is None:
        # Null (or left out, OpenAPI 1.29 and later) until a baseline exists or when the night
        # wasn't measured: Oura states no deviation, so there is no reading.
        return []
    moment, offset = _instant(item, "timestamp")
    fields = {"value": None, "unit": RECORD_TYPES["body_temperature"].unit, "deviation": deviation}
    record = Record(
        "body_temperature",
        _text(item, "id"),
        moment,
        offset,
        value=None,
        fields=fields,
        source_data=_raw(item),
        day=_day(item),
    )
    return [record]


def vo2_max_records(raw: Any) -> list[Record | Skip]:
    """A VO2 max estimate (PublicVO2Max, Cardio Capacity), mL/kg/min, at `timestamp` (when it
    was made), filed under `day`."""
    item = _object(raw)
    if "vo2_max" not in item:
        raise BadItem("vo2_max is missing")
    value = _number(item, "vo2_max")
    if value is None:
        return []  # nullable in OpenAPI 1.27/1.28: no estimate
    moment, offset = _instant(item, "timestamp")
    fields = {"value": value, "unit": RECORD_TYPES["vo2_max"].unit}
    record = Record(
        "vo2_max", _text(item, "id"), moment, offset, value=value, fields=fields, source_data=_raw(item), day=_day(item)
    )
    return [record]


def heart_rate_record(raw: Any) -> Record:
    """One heart-rate sample (PublicHeartRateRow): `timestamp` in UTC, `bpm`, `source`. Samples
    of different sources may share an instant (an `awake` and a `workout` one): both are kept."""
    item = _object(raw)
    moment, offset = _instant(item, "timestamp")
    bpm = _number(item, "bpm", required=True)
    source = item.get("source") if isinstance(item.get("source"), str) else ""
    external_id = "hr-" + moment.strftime("%Y-%m-%dT%H:%M:%SZ") + (f"-{source}" if source else "")
    fields = {"value": bpm, "unit": "bpm"}
    return Record("heart_rate", external_id, moment, offset, value=bpm, fields=fields, source_data=dict(item))


# Each reading of a long sleep: its record type, its reader, and the sleep fields it is read from.
NIGHT_READINGS: tuple[tuple[str, Callable[[dict[str, Any]], Record | None], tuple[str, ...]], ...] = (
    ("resting_heart_rate", resting_heart_rate, ("heart_rate", "lowest_heart_rate")),
    ("heart_rate_variability", heart_rate_variability, ("average_hrv",)),
    ("respiratory_rate", respiratory_rate, ("average_breath",)),
)


def _stated(item: dict[str, Any], key: str) -> bool:
    value = item.get(key)
    return value is not None and not (key == "lowest_heart_rate" and value == NO_HEART_RATE)


def _one(parse: Callable[[Any], Record | None]) -> Callable[[Any], list[Record | Skip]]:
    def read(raw: Any) -> list[Record | Skip]:
        record = parse(raw)
        return [] if record is None else [record]

    return read


# Collection -> (its documents' reader, the record type a document that can't be read counts as).
PARSERS: dict[str, tuple[Callable[[Any], list[Record | Skip]], str]] = {
    "workout": (_one(workout_record), "activities"),
    "sleep": (sleep_records, "sleeps"),
    "daily_activity": (_one(daily_activity_record), "activity_summaries"),
    "daily_spo2": (_one(spo2_record), "blood_oxygen"),
    "heartrate": (_one(heart_rate_record), "heart_rate"),
    "daily_readiness": (readiness_records, "body_temperature"),
    "vO2_max": (vo2_max_records, "vo2_max"),
}
