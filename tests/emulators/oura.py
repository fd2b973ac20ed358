"""An emulator of the Oura Cloud API v2 for tests.

OAuth2: `/oauth/authorize` (space-separated scopes, `error=access_denied` on denial) and
`/oauth/token` (body or Basic client auth; `expires_in` 86400; every refresh rotates the refresh
token and the old one dies; refusals are `{"error": "invalid_grant"}`). Data:
`/v2/usercollection/{type}` with `start_date`/`end_date` (heart rate: `start_datetime`/
`end_datetime`), `{"data": [...], "next_token": ...}` paging, 401 on a bad token, 403 when the
collection's scope wasn't granted, `{"detail": ...}` errors, and Oura's date-window quirks behind
`date_quirks`: a date-only end bound acts as midnight (the end day's 04:00 `daily_activity` is
dropped) and document collections treat the end day as exclusive. Malformed dates answer an
empty 200, as Oura does.
"""

from __future__ import annotations

import re
import secrets
from datetime import UTC, date, datetime, time, timedelta, timezone
from typing import Any

from werkzeug.wrappers import Request, Response

from .oauth_code import AccessToken, OAuthCodeEmulator

SCOPES = {
    "workout": ("workout",),
    "sleep": ("daily",),
    "daily_sleep": ("daily",),
    "daily_activity": ("daily",),
    "daily_spo2": ("spo2", "spo2Daily"),
    "heartrate": ("heartrate",),
}
BY_TIMESTAMP = ("daily_activity", "daily_sleep")  # filtered on `timestamp`, others on `day`


class OuraEmulator(OAuthCodeEmulator):
    client_id = "oura-client"
    client_secret = "oura-secret"
    access_ttl = 86400

    def __init__(self, page_size: int = 50, date_quirks: bool = True) -> None:
        super().__init__()
        self.page_size = page_size
        self.date_quirks = date_quirks
        self.user_id = "oura-user-7d3f"
        self.documents: dict[str, dict[str, dict[str, Any]]] = {c: {} for c in SCOPES if c != "heartrate"}
        self.heart_rate: list[dict[str, Any]] = []
        self.page_tokens: dict[str, int] = {}  # next_token -> offset
        self.routes += [
            ("GET", _path(r"/v2/usercollection/personal_info"), "personal_info", self.personal_info),
            ("GET", _path(r"/v2/usercollection/(?P<collection>[a-z_0-9]+)"), "collection", self.collection),
        ]

    # --- data, for tests --------------------------------------------------------------------------
    def seed(self, first: date, last: date, tz: str = "+02:00", hr_minutes: int = 60) -> None:
        """One workout, one night, one daily activity and SpO2 document per day, and a heart-rate
        sample every `hr_minutes` (UTC), never in the future."""
        offset = _tz(tz)
        now = datetime.now(UTC)
        day = first
        while day <= last:
            n = day.toordinal()
            local = datetime.combine(day, time(7, 0), offset)
            self.put("workout", _workout(day, local, n))
            self.put("sleep", _sleep(day, offset, n))
            self.put("daily_activity", _daily_activity(day, offset, n))
            self.put("daily_spo2", {"id": f"sp-{day}", "day": day.isoformat(), "spo2_percentage": {"average": 96.0}})
            moment = datetime.combine(day, time(), UTC)
            while moment < datetime.combine(day + timedelta(days=1), time(), UTC) and moment <= now:
                bpm = 55 + (moment.hour * 7 + n) % 40
                stamp = moment.isoformat()
                self.heart_rate.append({"bpm": bpm, "source": "awake", "timestamp": stamp})
                moment += timedelta(minutes=hr_minutes)
            day += timedelta(days=1)

    def put(self, collection: str, document: dict[str, Any]) -> None:
        with self.lock:
            self.documents[collection][document["id"]] = document

    def change(self, collection: str, document_id: str, **changes: Any) -> None:
        with self.lock:
            self.documents[collection][document_id].update(changes)

    def remove(self, collection: str, document_id: str) -> None:
        with self.lock:
            del self.documents[collection][document_id]

    def forget_page_tokens(self) -> None:
        with self.lock:
            self.page_tokens.clear()

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
            return self.json({"detail": "Invalid or expired token"}, 401)
        info = {"id": token.grant.user_id, "age": 41, "weight": 72.5, "height": 1.78, "biological_sex": "female"}
        return self.json(info)

    def collection(self, request: Request, collection: str) -> Response:
        token = self.bearer(request)
        if token is None:
            return self.json({"detail": "Invalid or expired token"}, 401)
        if collection not in SCOPES:
            return self.json({"detail": "Not Found"}, 404)
        if not set(SCOPES[collection]) & set(token.grant.scopes):
            return self.json({"detail": "Missing scope for this data type"}, 403)
        rows = self.heart_rate_rows(request) if collection == "heartrate" else self.document_rows(request, collection)
        if isinstance(rows, Response):
            return rows
        return self.page(request, rows)

    def page(self, request: Request, rows: list[dict[str, Any]]) -> Response:
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
        return self.json({"data": chunk, "next_token": next_token})

    def document_rows(self, request: Request, collection: str) -> list[dict[str, Any]] | Response:
        try:
            start = _bound(request.args.get("start_date"), date.today() - timedelta(days=1))
            end = _bound(request.args.get("end_date"), date.today())
        except ValueError:
            return []  # Oura answers malformed dates with an empty 200
        if start > end:
            detail = [{"type": "value_error", "loc": ["query"], "msg": "Start date must be before end date"}]
            return self.json({"detail": detail}, 422)
        rows = [d for d in self.documents[collection].values() if self._in_range(collection, d, start, end)]
        return sorted(rows, key=lambda d: (d["day"], d["id"]))

    def _in_range(self, collection: str, document: dict[str, Any], start: datetime, end: datetime) -> bool:
        if collection in BY_TIMESTAMP:
            # Compared on local wall time; a date-only end bound means that day's 00:00.
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
        rows = [r for r in self.heart_rate if start <= datetime.fromisoformat(r["timestamp"]) <= end]
        return sorted(rows, key=lambda r: r["timestamp"])


def _path(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


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


def _workout(day: date, start: datetime, n: int) -> dict[str, Any]:
    minutes = 30 + n % 20
    running = n % 2 == 0
    return {
        "id": f"wo-{day}",
        "activity": "running" if running else "walking",
        "calories": float(10 * minutes if running else 4 * minutes),
        "day": day.isoformat(),
        "distance": float(minutes * (170 if running else 80)),
        "end_datetime": (start + timedelta(minutes=minutes)).isoformat(),
        "intensity": "moderate",
        "label": None,
        "source": "autodetected",
        "start_datetime": start.isoformat(),
    }


def _sleep(day: date, offset: timezone, n: int) -> dict[str, Any]:
    bedtime = datetime.combine(day - timedelta(days=1), time(23, 0), offset)
    in_bed = 8 * 3600
    awake = 1800 + (n % 4) * 300
    return {
        "id": f"sl-{day}",
        "type": "long_sleep",
        "day": day.isoformat(),
        "bedtime_start": bedtime.isoformat(),
        "bedtime_end": (bedtime + timedelta(seconds=in_bed)).isoformat(),
        "time_in_bed": in_bed,
        "total_sleep_duration": in_bed - awake,
        "awake_time": awake,
        "deep_sleep_duration": 5400,
        "light_sleep_duration": 12600,
        "rem_sleep_duration": in_bed - awake - 18000,
        "latency": 600,
        "efficiency": round(100 * (in_bed - awake) / in_bed),
        "average_heart_rate": 52.5,
        "lowest_heart_rate": 46,
        "average_hrv": 48,
        "sleep_phase_5_min": "44" + "2233" * 10 + "4" + "1122" * 10 + "44" + "2323" * 10 + "444",
        "heart_rate": {"interval": 300.0, "items": [None, 55.0, 54.0], "timestamp": bedtime.isoformat()},
    }


def _daily_activity(day: date, offset: timezone, n: int) -> dict[str, Any]:
    return {
        "id": f"da-{day}",
        "day": day.isoformat(),
        "timestamp": datetime.combine(day, time(4, 0), offset).isoformat(),
        "steps": 6000 + (n % 7) * 500,
        "active_calories": 350,
        "total_calories": 2300,
        "target_calories": 500,
        "equivalent_walking_distance": 7200,
        "high_activity_time": 600,
        "medium_activity_time": 1800,
        "low_activity_time": 7200,
        "sedentary_time": 30000,
        "resting_time": 28000,
        "non_wear_time": 0,
        "score": 81,
        "met": {"interval": 60.0, "items": [1.0, 1.2], "timestamp": datetime.combine(day, time(4), offset).isoformat()},
    }
