"""An emulator of the Oura Cloud API v2 for tests, in the shapes of Oura's OpenAPI document and of
recorded real answers (docs/providers/oura.md names the sources).

OAuth2: `/oauth/authorize` (space-separated scopes, `error=access_denied` on denial) and
`/oauth/token` (body or Basic client auth; `expires_in` 86400; every refresh rotates the refresh
token and the old one dies; refusals are `{"error": "invalid_grant"}`).

Data: `/v2/usercollection/{type}` with `start_date`/`end_date` (heart rate: `start_datetime`/
`end_datetime`), `{"data": [...], "next_token": ...}` paging, and the single document
`/v2/usercollection/{type}/{id}`. Errors are FastAPI's `{"detail": ...}`: 401 on a bad token, 403
when the collection's scope wasn't granted (or `lapsed`: the membership expired), 404 for a
collection in `missing`, 422 with a validation list when start is after end, and 429 with the
documented rate-limit headers (`rate_limit`). Malformed dates answer an empty 200, as Oura does.
The data routes enforce "5000 requests in a 5 minute period" (the 429 description of the OpenAPI
document) for the whole application, over any 5 minutes in a row (`limit`: tests shrink it): past
it, 429 with `Retry-After` (until the oldest counted call leaves the window) and `X-RateLimit-Limit`,
`-Window`, `-Reset`, `-Tier`; a refused call is not counted.

Oura's date-window quirks sit behind `date_quirks`: a date-only end bound acts as that day's
midnight (so the end day's 04:00 `daily_activity` is dropped) and collections filtered on `day`
treat the end day as exclusive.

Collections served: `workout`, `sleep`, `daily_sleep`, `daily_activity`, `daily_spo2`, `heartrate`,
`daily_readiness` and `vO2_max` (scope `heart_health`, "Heart Health Data (VO2 Max, CVA)" at
consent).

Shapes where public sources differ, each a switch:
- `meta`: documents carry `meta: {updated_at, version}` (one published copy of the OpenAPI
  document) or not (recorded answers and the other published copies);
- `heart_rate_unix`: heart-rate rows carry `timestamp_unix` (ms; OpenAPI 1.29 and later) or not
  (OpenAPI 1.27/1.28 and recorded answers);
- `omit_null_next_token`: a last heart-rate page leaves `next_token` out (only `data` is required
  of a TimeSeriesResponse) instead of sending null.
Webhooks (the OpenAPI document's Webhook Subscription Routes, with recorded answers in tgrk/ex_oura's
cassettes): `/v2/webhook/subscription` with the application's `x-client-id` and `x-client-secret`
headers: POST `{callback_url, verification_token, event_type, data_type}` first GETs the callback
with `verification_token` and `challenge` and wants `{"challenge": ...}` back (else 400), then
answers 201 with `{id, callback_url, event_type, data_type, expiration_time}` (422 for a data type
it doesn't offer); GET lists them, GET/DELETE `/{id}` (204; 404 "No webhook id ... found."), PUT
`/renew/{id}` pushes the expiry back (404 "Subscription with id ... not found."). VO2 max is
`vo2_max` in webhooks (OpenAPI 1.29) and `vO2_max` in paths; both are taken. Heart rate takes
subscriptions only with `heartrate_webhooks` (not in the OpenAPI enum; other sources list it).
`put`, `change` and `remove` POST `{event_type, data_type, object_id, event_time, user_id}` to
every matching live subscription, with `x-oura-timestamp` (Unix seconds, or milliseconds with
`timestamp_ms`) and `x-oura-signature`, the HMAC-SHA256 of timestamp + body keyed with the client
secret in upper-case hex (Oura's sample code; lower case with `signature_upper` off), retried
while the answer is not 2xx. `seed` announces nothing.

The documents themselves are served as put, so a test can put any documented variant (e.g. a
`vo2_max` that is an integer, OpenAPI 1.29 and later, or a number or null, 1.27/1.28; a readiness
`temperature_deviation` that is null, or left out since 1.29 made it optional).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import time as clock
import uuid
from collections import deque
from datetime import UTC, date, datetime, time, timedelta, timezone
from typing import Any

from werkzeug.wrappers import Request, Response

from .oauth_code import AccessToken, OAuthCodeEmulator
from .push import Pusher

SCOPES = {
    "workout": ("workout",),
    "sleep": ("daily",),
    "daily_sleep": ("daily",),
    "daily_activity": ("daily",),
    "daily_spo2": ("spo2", "spo2Daily"),
    "heartrate": ("heartrate",),
    "daily_readiness": ("daily",),
    "vO2_max": ("heart_health",),
}
# Filtered on `timestamp` (daily documents stamped at the start of their day), others on `day`.
BY_TIMESTAMP = ("daily_activity", "daily_sleep", "daily_readiness")
IDS = uuid.UUID("6f1c2d7e-0a41-4d4e-9a55-3f0f2b6c9e10")  # namespace of the seeded documents' ids


def document_id(collection: str, day: date) -> str:
    """The id of the document `seed` writes for `collection` on `day` (Oura's ids are UUIDs)."""
    return str(uuid.uuid5(IDS, f"{collection}/{day.isoformat()}"))


class OuraEmulator(OAuthCodeEmulator):
    source_slug = "oura"
    client_id = "oura-client"
    client_secret = "oura-secret"
    access_ttl = 86400

    def __init__(self, page_size: int = 50, date_quirks: bool = True) -> None:
        super().__init__()
        self.page_size = page_size
        self.date_quirks = date_quirks
        self.meta = False
        self.heart_rate_unix = True
        self.omit_null_next_token = False
        self.missing: set[str] = set()  # collections answering 404
        self.lapsed = False  # the user's Oura membership expired: every collection answers 403
        self.user_id = "oura-user-7d3f"
        self.documents: dict[str, dict[str, dict[str, Any]]] = {c: {} for c in SCOPES if c != "heartrate"}
        self.versions: dict[tuple[str, str], tuple[int, str]] = {}  # (collection, id) -> (version, updated_at)
        self.heart_rate: list[dict[str, Any]] = []
        self.page_tokens: dict[str, int] = {}  # next_token -> offset
        self.limit = (5000, 300)  # requests per this many seconds in a row, per application
        self.served: deque[float] = deque()  # when the data calls still in the window were answered
        self.routes += [
            ("GET", re.compile(r"/v2/usercollection/personal_info"), "personal_info", self.limited(self.personal_info)),
            ("GET", re.compile(r"/v2/usercollection/(?P<collection>[a-zA-Z_0-9]+)"), "collection",
             self.limited(self.collection)),
            ("GET", re.compile(r"/v2/usercollection/(?P<collection>[a-zA-Z_0-9]+)/(?P<ident>[^/]+)"), "document",
             self.limited(self.document)),
            ("GET", re.compile(r"/v2/webhook/subscription"), "webhook_list", self.webhook_list),
            ("POST", re.compile(r"/v2/webhook/subscription"), "webhook_create", self.webhook_create),
            ("GET", re.compile(r"/v2/webhook/subscription/(?P<ident>[^/]+)"), "webhook_get", self.webhook_get),
            ("DELETE", re.compile(r"/v2/webhook/subscription/(?P<ident>[^/]+)"), "webhook_delete",
             self.webhook_delete),
            ("PUT", re.compile(r"/v2/webhook/subscription/renew/(?P<ident>[^/]+)"), "webhook_renew",
             self.webhook_renew),
        ]  # fmt: skip
        self.webhooks: dict[str, dict[str, Any]] = {}
        self.webhook_ttl = timedelta(days=90)
        self.heartrate_webhooks = False
        self.signature_upper = True
        self.timestamp_ms = False
        self.pusher = Pusher(attempts=3, timeout=10.0)

    # --- data, for tests --------------------------------------------------------------------------
    def seed(self, first: date, last: date, tz: str = "+02:00", hr_minutes: int = 60) -> None:
        """One workout, one night, one daily activity, SpO2 and readiness document per day in the
        documented shapes, a VO2 max estimate every seventh day, and a heart-rate sample every
        `hr_minutes` (UTC), never in the future."""
        offset = _tz(tz)
        now = datetime.now(UTC)
        day = first
        while day <= last:
            n = day.toordinal()
            self._store("workout", workout(day, datetime.combine(day, time(7, 0), offset), n))
            self._store("sleep", night(day, offset, n))
            self._store("daily_activity", daily_activity(day, offset, n))
            self._store("daily_spo2", spo2(day, 95.0 + n % 4))
            self._store("daily_readiness", readiness(day, round(((n % 9) - 4) * 0.07, 2), n))
            if n % 7 == 0:
                self._store("vO2_max", vo2_max(day, datetime.combine(day, time(18, 30), offset), 40 + n % 5))
            moment = datetime.combine(day, time(), UTC)
            while moment < datetime.combine(day + timedelta(days=1), time(), UTC) and moment <= now:
                bpm = 55 + (moment.hour * 7 + n) % 40
                self.heart_rate.append({"bpm": bpm, "source": "awake", "timestamp": moment.isoformat()})
                moment += timedelta(minutes=hr_minutes)
            day += timedelta(days=1)

    def _store(self, collection: str, document: dict[str, Any]) -> bool:
        """True if the document is new."""
        with self.lock:
            new = document["id"] not in self.documents[collection]
            self.documents[collection][document["id"]] = document
            self._touch(collection, document["id"])
        return new

    def put(self, collection: str, document: dict[str, Any]) -> None:
        new = self._store(collection, document)
        self.notify(collection, document["id"], "create" if new else "update")

    def change(self, collection: str, document_id: str, **changes: Any) -> None:
        with self.lock:
            self.documents[collection][document_id].update(changes)
            self._touch(collection, document_id)
        self.notify(collection, document_id, "update")

    def remove(self, collection: str, document_id: str) -> None:
        with self.lock:
            del self.documents[collection][document_id]
        self.notify(collection, document_id, "delete")

    # --- webhooks ----------------------------------------------------------------------------------
    def notify(self, collection: str, object_id: str, event_type: str) -> None:
        """POST the event to every live subscription for this data type and event."""
        now = datetime.now(UTC)
        with self.lock:
            matching = [
                w
                for w in self.webhooks.values()
                if _path_of(w["data_type"]) == collection and w["event_type"] == event_type and w["expires"] > now
            ]
        for webhook in matching:
            event = {
                "event_type": event_type,
                "data_type": webhook["data_type"],
                "object_id": object_id,
                "event_time": now.isoformat(),
                "user_id": self.user_id,
            }
            self.send(webhook["callback_url"], json.dumps(event).encode())

    def send(self, url: str, body: bytes, headers: dict[str, str] | None = None) -> list[Any]:
        """One notification as Oura delivers it (a test may pass its own, forged, headers)."""
        return self.pusher.post(url, body, lambda: headers if headers is not None else self.signature(body))

    def signature(self, body: bytes, at: float | None = None, secret: str | None = None) -> dict[str, str]:
        moment = clock.time() if at is None else at
        stamp = str(int(moment * 1000)) if self.timestamp_ms else str(int(moment))
        digest = hmac.new((secret or self.client_secret).encode(), stamp.encode() + body, hashlib.sha256).hexdigest()
        return {"x-oura-timestamp": stamp, "x-oura-signature": digest.upper() if self.signature_upper else digest}

    def _app_refusal(self, request: Request) -> Response | None:
        client = (request.headers.get("x-client-id"), request.headers.get("x-client-secret"))
        return None if client == (self.client_id, self.client_secret) else self.json({"detail": "Unauthorized"}, 401)

    def _model(self, webhook: dict[str, Any]) -> dict[str, Any]:
        keys = ("id", "callback_url", "event_type", "data_type")
        return {**{k: webhook[k] for k in keys}, "expiration_time": webhook["expires"].isoformat()}

    def webhook_list(self, request: Request) -> Response:
        return self._app_refusal(request) or self.json([self._model(w) for w in self.webhooks.values()])

    def webhook_get(self, request: Request, ident: str) -> Response:
        refusal = self._app_refusal(request)
        if refusal is not None:
            return refusal
        found = self.webhooks.get(ident)
        return self.json(self._model(found)) if found else self.json({"detail": "Forbidden"}, 403)

    def webhook_create(self, request: Request) -> Response:
        refusal = self._app_refusal(request)
        if refusal is not None:
            return refusal
        body = request.get_json(silent=True) or {}
        offered = set(WEBHOOK_DATA_TYPES) | ({"heartrate"} if self.heartrate_webhooks else set())
        for key, allowed in (("data_type", offered), ("event_type", {"create", "update", "delete"})):
            if body.get(key) not in allowed:
                detail = [{"type": "enum", "loc": ["body", key], "msg": f"Invalid {key} value"}]
                return self.json({"detail": detail}, 422)
        if not body.get("callback_url") or not body.get("verification_token"):
            return self.json({"detail": [{"type": "missing", "loc": ["body"], "msg": "Field required"}]}, 422)
        challenge = secrets.token_urlsafe(12)
        params = {"verification_token": str(body["verification_token"]), "challenge": challenge}
        answer = self.pusher.verify(str(body["callback_url"]), params, timeout=10.0)
        if not isinstance(answer, dict) or answer.get("challenge") != challenge:
            return self.json({"detail": "Callback URL verification failed"}, 400)
        ident = str(uuid.uuid4())
        self.webhooks[ident] = {
            "id": ident,
            "callback_url": str(body["callback_url"]),
            "event_type": body["event_type"],
            "data_type": body["data_type"],
            "expires": datetime.now(UTC) + self.webhook_ttl,
        }
        return self.json(self._model(self.webhooks[ident]), 201)

    def webhook_delete(self, request: Request, ident: str) -> Response:
        refusal = self._app_refusal(request)
        if refusal is not None:
            return refusal
        if self.webhooks.pop(ident, None) is None:
            return self.json({"detail": f"No webhook id {ident} found."}, 404)
        return Response(status=204)

    def webhook_renew(self, request: Request, ident: str) -> Response:
        refusal = self._app_refusal(request)
        if refusal is not None:
            return refusal
        found = self.webhooks.get(ident)
        if found is None:
            return self.json({"detail": f"Subscription with id {ident} not found."}, 404)
        found["expires"] = datetime.now(UTC) + self.webhook_ttl
        return self.json(self._model(found))

    def forget_page_tokens(self) -> None:
        with self.lock:
            self.page_tokens.clear()

    def limited(self, handler: Any) -> Any:
        """Count a data call against the application's limit; 429 past it (called under the lock)."""

        def wrapped(request: Request, **kwargs: Any) -> Response:
            count, seconds = self.limit
            now = clock.time()
            while self.served and self.served[0] <= now - seconds:
                self.served.popleft()
            if len(self.served) >= count:
                self.calls["429"] += 1
                wait = max(1, int(self.served[0] + seconds - now + 0.999))
                headers = {
                    "Retry-After": str(wait),
                    "X-RateLimit-Limit": str(count),
                    "X-RateLimit-Window": str(seconds),
                    "X-RateLimit-Reset": str(int(now) + wait),
                    "X-RateLimit-Tier": "application",
                }
                return self.json({"detail": "Too Many Requests"}, 429, headers)
            self.served.append(now)
            return handler(request, **kwargs)

        return wrapped

    def rate_limit(self, retry_after: int, *, times: int = 1, skip: int = 0) -> None:
        """Answer the next data calls 429 with the headers Oura documents for it."""
        reset = int(datetime.now(UTC).timestamp()) + retry_after
        headers = {
            "Retry-After": str(retry_after),
            "X-RateLimit-Limit": "5000",
            "X-RateLimit-Window": "300",
            "X-RateLimit-Reset": str(reset),
            "X-RateLimit-Tier": "token",
        }
        self.fail("collection", 429, times=times, skip=skip, headers=headers, body='{"detail": "Too Many Requests"}')

    def _touch(self, collection: str, ident: str) -> None:
        version, _ = self.versions.get((collection, ident), (0, ""))
        self.versions[(collection, ident)] = (version + 1, datetime.now(UTC).isoformat())

    # --- OAuth shapes ----------------------------------------------------------------------------
    def token_body(self, access: str, token: AccessToken, *, first: bool) -> dict[str, Any]:
        return {
            "token_type": "bearer",
            "access_token": access,
            "expires_in": self.access_ttl,
            "refresh_token": token.refresh_token,
        }

    def refused(self, what: str) -> Response:
        if what == "client":
            return self.json({"error": "invalid_client"}, 401)
        return self.json({"error": "invalid_grant", "error_description": f"Invalid {what}"}, 400)

    # --- the API ----------------------------------------------------------------------------------
    def personal_info(self, request: Request) -> Response:
        token = self.bearer(request)
        if token is None:
            return self.json({"detail": "Unauthorized"}, 401)
        info: dict[str, Any] = {"id": token.grant.user_id, "age": 41, "weight": 72.5, "height": 1.78}
        info["biological_sex"] = "female"
        info["email"] = "oura-user@example.com" if "email" in token.grant.scopes else None
        return self.json(info)

    def _refusal(self, request: Request, collection: str) -> Response | None:
        token = self.bearer(request)
        if token is None:
            return self.json({"detail": "Unauthorized"}, 401)
        if collection not in SCOPES or collection in self.missing:
            return self.json({"detail": "Not Found"}, 404)
        if self.lapsed or not set(SCOPES[collection]) & set(token.grant.scopes):
            return self.json({"detail": "Forbidden"}, 403)
        return None

    def collection(self, request: Request, collection: str) -> Response:
        refusal = self._refusal(request, collection)
        if refusal is not None:
            return refusal
        rows = self.heart_rate_rows(request) if collection == "heartrate" else self.document_rows(request, collection)
        if isinstance(rows, Response):
            return rows
        return self.page(request, rows, time_series=collection == "heartrate")

    def document(self, request: Request, collection: str, ident: str) -> Response:
        refusal = self._refusal(request, collection)
        if refusal is not None:
            return refusal
        found = self.documents.get(collection, {}).get(ident)
        if found is None:
            return self.json({"detail": "Document not found."}, 404)
        return self.json(self.shaped(collection, found))

    def page(self, request: Request, rows: list[dict[str, Any]], *, time_series: bool) -> Response:
        offset = 0
        if request.args.get("next_token"):
            if request.args["next_token"] not in self.page_tokens:
                return self.json({"detail": "Invalid next_token"}, 400)
            offset = self.page_tokens[request.args["next_token"]]
        chunk = rows[offset : offset + self.page_size]
        next_token = None
        if offset + self.page_size < len(rows):
            next_token = secrets.token_urlsafe(12)
            self.page_tokens[next_token] = offset + self.page_size
        body: dict[str, Any] = {"data": chunk, "next_token": next_token}
        if time_series and next_token is None and self.omit_null_next_token:
            del body["next_token"]
        return self.json(body)

    def shaped(self, collection: str, document: dict[str, Any]) -> dict[str, Any]:
        if not self.meta:
            return document
        version, updated_at = self.versions.get((collection, document["id"]), (1, datetime.now(UTC).isoformat()))
        return {**document, "meta": {"updated_at": updated_at, "version": version}}

    def document_rows(self, request: Request, collection: str) -> list[dict[str, Any]] | Response:
        try:
            start = _bound(request.args.get("start_date"), date.today() - timedelta(days=1))
            end = _bound(request.args.get("end_date"), date.today())
        except ValueError:
            return []  # Oura answers malformed dates with an empty 200
        if start > end:
            detail = [
                {
                    "type": "value_error",
                    "loc": ["query", "start_date"],
                    "msg": "Start date must be before end date",
                    "input": request.args.get("start_date"),
                }
            ]
            return self.json({"detail": detail}, 422)
        rows = [d for d in self.documents[collection].values() if self._in_range(collection, d, start, end)]
        rows.sort(key=lambda d: (str(d.get("day")), str(d.get("timestamp") or d.get("bedtime_start") or "")))
        return [self.shaped(collection, d) for d in rows]

    def _in_range(self, collection: str, document: dict[str, Any], start: datetime, end: datetime) -> bool:
        if collection in BY_TIMESTAMP:
            # Compared on local wall time; with the quirks a date-only end bound means that day's 00:00.
            stamp = datetime.fromisoformat(document["timestamp"]).replace(tzinfo=None)
            upper = end if self.date_quirks else end + timedelta(days=1)
            return start <= stamp <= upper if self.date_quirks else start <= stamp < upper
        day = datetime.combine(date.fromisoformat(document["day"]), time())
        return start <= day < end if self.date_quirks else start <= day <= end

    def heart_rate_rows(self, request: Request) -> list[dict[str, Any]] | Response:
        try:
            start = _instant(request.args.get("start_datetime"), datetime.now(UTC) - timedelta(days=1))
            end = _instant(request.args.get("end_datetime"), datetime.now(UTC))
        except ValueError:
            return []
        rows = [r for r in self.heart_rate if start <= _stamp(r) <= end]
        rows.sort(key=_stamp)
        return [self.heart_rate_row(r) for r in rows]

    def heart_rate_row(self, row: dict[str, Any]) -> dict[str, Any]:
        if not self.heart_rate_unix or "timestamp_unix" in row:
            return row
        return {**row, "timestamp_unix": round(_stamp(row).timestamp() * 1000)}


# Webhook data types (OpenAPI 1.29 `ExtApiV2DataType`, the ones this emulator serves; `vO2_max` as
# other sources spell it) -> the collection's path.
WEBHOOK_DATA_TYPES = {
    "workout": "workout",
    "sleep": "sleep",
    "daily_sleep": "daily_sleep",
    "daily_activity": "daily_activity",
    "daily_spo2": "daily_spo2",
    "daily_readiness": "daily_readiness",
    "vo2_max": "vO2_max",
    "vO2_max": "vO2_max",
}


def _path_of(data_type: str) -> str:
    return WEBHOOK_DATA_TYPES.get(data_type, data_type)


def _stamp(row: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(row["timestamp"].replace("Z", "+00:00"))


def _tz(text: str) -> timezone:
    sign = -1 if text.startswith("-") else 1
    hours, minutes = (int(p) for p in text[1:].split(":"))
    return timezone(sign * timedelta(hours=hours, minutes=minutes))


def _bound(raw: str | None, default: date) -> datetime:
    if not raw:
        return datetime.combine(default, time())
    if "T" in raw:
        return datetime.fromisoformat(raw).replace(tzinfo=None)
    return datetime.combine(date.fromisoformat(raw), time())


def _instant(raw: str | None, default: datetime) -> datetime:
    if not raw:
        return default
    moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _millis(moment: datetime) -> str:
    """Sample timestamps carry milliseconds (`2024-10-10T01:01:59.000+02:00`), document ones don't."""
    return moment.isoformat(timespec="milliseconds")


# --- documents in the documented shapes (seeded values, consistent like real ones) ----------------


def workout(day: date, start: datetime, n: int) -> dict[str, Any]:
    """PublicWorkout: kcal (float, nullable), metres (float, nullable), local start/end."""
    minutes = 30 + n % 20
    running = n % 2 == 0
    return {
        "id": document_id("workout", day),
        "activity": "running" if running else "walking",
        "calories": round(minutes * (10.5 if running else 4.25), 3),
        "day": day.isoformat(),
        "distance": float(minutes * (170 if running else 80)),
        "end_datetime": (start + timedelta(minutes=minutes)).isoformat(),
        "intensity": "moderate" if running else "easy",
        "label": None,
        "source": "confirmed",
        "start_datetime": start.isoformat(),
    }


def night(day: date, offset: timezone, n: int) -> dict[str, Any]:
    """PublicModifiedSleepModel, a long sleep from 23:00 the evening before `day` (its day). Its
    `lowest_heart_rate` (52, the 30-second minimum) is below the lowest 5-minute sample (57), as
    the OpenAPI note on that field allows."""
    bedtime = datetime.combine(day - timedelta(days=1), time(23, 0), offset)
    in_bed = 8 * 3600
    deep, rem = 5400, 5400
    light = 16200 - (n % 4) * 300
    asleep = deep + light + rem
    # 96 five-minute epochs: awake at the start, two awakenings in the night, awake at the end.
    phases = "44" + "1122" * 7 + "4" + "2233" * 7 + "44" + "2323" * 7 + "2" * 6 + "4"
    return {
        "id": document_id("sleep", day),
        "average_breath": 14.5,
        "average_heart_rate": 58.25,
        "average_hrv": 42,
        "awake_time": in_bed - asleep,
        "bedtime_end": (bedtime + timedelta(seconds=in_bed)).isoformat(),
        "bedtime_start": bedtime.isoformat(),
        "day": day.isoformat(),
        "deep_sleep_duration": deep,
        "efficiency": round(100 * asleep / in_bed),
        "heart_rate": {"interval": 300.0, "items": [None, 61.0, 58.0, 57.0], "timestamp": _millis(bedtime)},
        "hrv": {"interval": 300.0, "items": [None, 35.0, 41.0, 44.0], "timestamp": _millis(bedtime)},
        "latency": 600,
        "light_sleep_duration": light,
        "low_battery_alert": False,
        "lowest_heart_rate": 52,
        "movement_30_sec": "1" * (in_bed // 30),
        "period": 0,
        "readiness": {
            "contributors": {
                "activity_balance": 85,
                "body_temperature": 98,
                "hrv_balance": 76,
                "previous_day_activity": 90,
                "previous_night": 80,
                "recovery_index": 70,
                "resting_heart_rate": 88,
                "sleep_balance": 82,
            },
            "score": 82,
            "temperature_deviation": -0.1,
            "temperature_trend_deviation": 0.05,
        },
        "readiness_score_delta": 0,
        "rem_sleep_duration": rem,
        "restless_periods": 240,
        "sleep_phase_5_min": phases,
        "sleep_score_delta": 0,
        "sleep_algorithm_version": "v2",
        "time_in_bed": in_bed,
        "total_sleep_duration": asleep,
        "type": "long_sleep",
    }


def daily_activity(day: date, offset: timezone, n: int) -> dict[str, Any]:
    """PublicDailyActivity: the 24 hours from 04:00 local time; times in seconds summing to a day."""
    start = datetime.combine(day, time(4, 0), offset)
    high, medium, low = 600 + (n % 3) * 60, 1800, 7200
    resting, non_wear = 28800, 0
    sedentary = 86400 - high - medium - low - resting - non_wear
    return {
        "id": document_id("daily_activity", day),
        "class_5_min": "1" * 96 + "2" * 120 + "3" * 48 + "4" * 18 + "5" * 6,
        "score": 81,
        "active_calories": 420 + n % 50,
        "average_met_minutes": 1.5625,
        "contributors": {
            "meet_daily_targets": 85,
            "move_every_hour": 100,
            "recovery_time": 100,
            "stay_active": 77,
            "training_frequency": 100,
            "training_volume": 98,
        },
        "equivalent_walking_distance": 7200 + (n % 7) * 400,
        "high_activity_met_minutes": 90,
        "high_activity_time": high,
        "inactivity_alerts": 0,
        "low_activity_met_minutes": 180,
        "low_activity_time": low,
        "medium_activity_met_minutes": 160,
        "medium_activity_time": medium,
        "met": {"interval": 60.0, "items": [0.9] * 1440, "timestamp": _millis(start)},
        "meters_to_target": 1200,
        "non_wear_time": non_wear,
        "resting_time": resting,
        "sedentary_met_minutes": 12,
        "sedentary_time": sedentary,
        "steps": 6000 + (n % 7) * 500,
        "target_calories": 500,
        "target_meters": 9000,
        "total_calories": 2300 + n % 50,
        "day": day.isoformat(),
        "timestamp": start.isoformat(),
    }


def spo2(day: date, average: float | None, bdi: int | None = 6) -> dict[str, Any]:
    """PublicDailySpO2: the night's average in percent; `spo2_percentage` is null without a reading."""
    return {
        "id": document_id("daily_spo2", day),
        "day": day.isoformat(),
        "spo2_percentage": None if average is None else {"average": average},
        "breathing_disturbance_index": bdi,
    }


def readiness(day: date, deviation: float | None, n: int = 0) -> dict[str, Any]:
    """PublicDailyReadiness as recorded: `timestamp` is the day's 00:00 at +00:00 whatever the
    user's zone; the deviations are °C against the person's baseline (null until one exists)."""
    return {
        "id": document_id("daily_readiness", day),
        "contributors": {
            "activity_balance": 90,
            "body_temperature": 97 if deviation is not None and abs(deviation) < 0.3 else 80,
            "hrv_balance": 85,
            "previous_day_activity": 88,
            "previous_night": 80,
            "recovery_index": 70 + n % 20,
            "resting_heart_rate": 90,
            "sleep_balance": 92,
        },
        "day": day.isoformat(),
        "score": 80 + n % 10,
        "temperature_deviation": deviation,
        "temperature_trend_deviation": None if deviation is None else round(deviation / 2, 2),
        "timestamp": f"{day.isoformat()}T00:00:00+00:00",
    }


def vo2_max(day: date, made: datetime, value: int | float | None) -> dict[str, Any]:
    """PublicVO2Max: an estimate in mL/kg/min, with the local time it was made."""
    return {"id": document_id("vO2_max", day), "day": day.isoformat(), "timestamp": made.isoformat(), "vo2_max": value}
