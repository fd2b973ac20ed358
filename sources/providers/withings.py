"""Withings: scales, blood pressure monitors, sleep analyzers and watches.

Withings speaks an RPC dialect over HTTP: one URL per service, the verb in `action`, form-encoded
POSTs, and every answer (token calls included) is HTTP 200 with an envelope `{"status", "body"}`
where a non-zero status is the error. The token endpoint is therefore not standard OAuth 2.0:
`token_request` is done here, and each refresh rotates the refresh token. The field-by-field
reading, with its sources, is in docs/providers/withings.md.

Four collections, each fetched (and failing) on its own:
- `measures` (`/measure getmeas`): date-range slices, oldest first, each slice one page with a
  `Window`, so a measure group deleted at Withings disappears here when its slice is re-read
  (incremental syncs re-read a week back). Incremental syncs first ask for what was created or
  changed since the last run (`lastupdate`), so an edit or a late manual entry of any date is seen.
- `workouts` (`/v2/measure getworkouts`), `sleep` (`/v2/sleep getsummary`) and `activity`
  (`/v2/measure getactivity`, the daily totals): by local day on the first sync, then by
  `lastupdate`. Each call's pages are gathered into one page whose cursor moves only once all
  of them were read, so an interrupted sync repeats, never skips. A night's summary also gives
  its own readings: average respiratory rate, RMSSD averages at the start and the end of the
  night, and the average core body temperature.

Units stored: weight kg, height cm, fat %, blood pressure mmHg, heart rate bpm, SpO2 %, BMI
kg/m2 (from weight and the latest height), body temperature °C, VO2 max mL/kg/min, respiratory
rate breaths/min, RMSSD ms, distance m, durations s (sleeps and their stages: minutes). Offsets
come from the IANA `timezone` Withings gives with each row (measure groups: the group's own,
else the answer's), at the row's instant.

Push: Withings notifies per user (`/notify action=subscribe`, with the user's token, one `appli`
category at a time); a notification (a form POST: `userid`, `appli`, `startdate`/`enddate` or
`date`) is unsigned, so the callback URL carries a secret of this server's. Withings sends one
when data is created, updated or deleted, and says which span, not which of the three: measures
(getmeas by `startdate`/`enddate`) and daily totals (getactivity by the days the span touches) are
read again over the span as complete windows, so what is gone from it is deleted at once.
Workouts and sleeps are read since the collection's `lastupdate` cursor, as an incremental sync
would (their days map onto instants only roughly: no window). `appli` 46 with `action=unlink`
(or `delete`) is a withdrawn access, believed when Withings refuses the token.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qs
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import requests

from ..base import (
    DEAUTHORIZE,
    Change,
    Collection,
    Notice,
    PermanentError,
    PushBatch,
    PushRefused,
    PushTopic,
    RateLimit,
    RateLimited,
    RawPage,
    Record,
    RefreshRefused,
    SyncContext,
    TokenRejected,
    TransientError,
    Window,
)
from ..http import ProviderHttp, decode_json
from ..oauth import OAuth2CodeSource
from ..types import RECORD_TYPES

log = logging.getLogger(__name__)

# --- envelope statuses (developer.withings.com/api-reference, "Response Status") ------------------
SUCCESS = 0
AUTH_FAILED = frozenset({100, 101, 102, 200, 401})  # the access token: refresh and retry
TOO_MANY_REQUESTS = 601
TIMEOUT, BAD_STATE = 522, 524
NOT_IMPLEMENTED = 2554
# "Unauthorized: you are not allowed to call this service" (214, 277, 2553, 2555) and the
# observed 403 "insufficient_scope" (a scope the user did not grant): permanent for the
# collection, not a token problem.
UNAUTHORIZED = frozenset({214, 277, 403, 2553, 2555})
# "An error occurred" (Withings' own failure; it asks to retry, then to contact it).
ERROR_OCCURRED_RANGES = (
    (215, 215), (219, 219), (222, 222), (224, 224), (226, 226), (231, 233), (237, 237), (253, 253),
    (255, 259), (268, 270), (273, 274), (278, 282), (289, 289), (291, 292), (296, 296), (298, 298),
    (305, 320), (322, 322), (370, 375), (383, 383), (391, 391), (402, 402), (516, 521), (525, 531),
    (533, 533), (602, 602), (700, 700), (1051, 1054), (2551, 2552), (2556, 2559), (3000, 3016),
    (3020, 3024), (5000, 5006), (6000, 6000), (6010, 6011), (9000, 9000), (10000, 10000),
)  # fmt: skip

# --- notifications (developer.withings.com, notification-content) -------------------------------
# `appli` categories subscribed, and the collections each one's notifications make us read again:
# 1 weight and body composition, 2 temperature, 4 blood pressure, heart rate and SpO2, 16 activity
# (daily totals and workouts), 44 sleep; 46 user events (`action` delete, unlink or update).
APPLI_COLLECTIONS: dict[int, tuple[str, ...]] = {
    1: ("measures",),
    2: ("measures",),
    4: ("measures",),
    16: ("workouts", "activity"),
    44: ("sleep",),
}
USER_EVENT = 46
NOTIFY_APPLIS = (*APPLI_COLLECTIONS, USER_EVENT)
# The operation of a change whose span is known (sources.push.SPAN): created, updated or deleted
# in it, Withings doesn't say which; every window re-read for it is certain, an empty one too.
SPAN = "span"
# A notified span longer than this is not re-read as a whole (what changed is read since the
# `lastupdate` cursor instead; deletions then wait for the reconciliation).
MAX_SPAN = timedelta(days=31)
# IANA zones run from UTC-12 to UTC+14: a local day starts within these of its UTC midnight.
WEST, EAST = timedelta(hours=12), timedelta(hours=14)

# --- measure types (getmeas `meastype`); the real value is value * 10^unit ------------------------
WEIGHT, HEIGHT, FAT_RATIO, DIASTOLIC, SYSTOLIC, PULSE, SPO2 = 1, 4, 6, 9, 10, 11, 54
# 71 "Body Temperature (celsius)" (a thermometer's reading); 123 VO2 max, "ml/min/kg". Not read:
# 12 "Temperature" (the reference says no more; not shown to be a body's), 73 "Skin Temperature"
# (the skin's surface, some degrees below the body's: not a body temperature).
BODY_TEMPERATURE, VO2_MAX = 71, 123
MEASTYPES = (WEIGHT, HEIGHT, FAT_RATIO, DIASTOLIC, SYSTOLIC, PULSE, SPO2, BODY_TEMPERATURE, VO2_MAX)
RECORD_OF_MEASTYPE: dict[object, str] = {
    WEIGHT: "weight",
    HEIGHT: "height",
    FAT_RATIO: "body_fat",
    DIASTOLIC: "blood_pressure",
    SYSTOLIC: "blood_pressure",
    PULSE: "heart_rate",
    SPO2: "blood_oxygen",
    BODY_TEMPERATURE: "body_temperature",
    VO2_MAX: "vo2_max",
}
MEASURE_RECORDS = (
    "weight",
    "height",
    "bmi",
    "body_fat",
    "blood_pressure",
    "heart_rate",
    "blood_oxygen",
    "body_temperature",
    "vo2_max",
)
# Readings of a night, from its sleep summary (body temperature also comes from getmeas).
NIGHTLY_RECORDS = ("respiratory_rate", "heart_rate_variability", "body_temperature")
REAL_MEASURES, USER_GOALS = 1, 2  # getmeas `category`

# Workout `category` codes (workout_object) -> activity type, in the words other sources use.
WORKOUT_CATEGORIES = {
    1: "walking", 2: "running", 3: "hiking", 4: "skating", 5: "bmx", 6: "cycling", 7: "swimming",
    8: "surfing", 9: "kitesurfing", 10: "windsurfing", 11: "bodyboard", 12: "tennis",
    13: "table_tennis", 14: "squash", 15: "badminton", 16: "weight_training", 17: "fitness",
    18: "elliptical", 19: "pilates", 20: "basketball", 21: "soccer", 22: "football", 23: "rugby",
    24: "volleyball", 25: "water_polo", 26: "horse_riding", 27: "golf", 28: "yoga", 29: "dancing",
    30: "boxing", 31: "fencing", 32: "wrestling", 33: "martial_arts", 34: "skiing",
    35: "snowboarding", 36: "other", 128: "other", 187: "rowing", 188: "zumba", 191: "baseball",
    192: "handball", 193: "hockey", 194: "ice_hockey", 195: "climbing", 196: "ice_skating",
    272: "multi_sport", 306: "walking", 307: "running", 308: "cycling", 455: "paddleboarding",
    456: "padel", 490: "beach_volleyball", 491: "stair_stepper", 494: "kayaking", 495: "canoeing",
    496: "sailing", 498: "running", 499: "snowshoeing", 510: "pickleball", 521: "triathlon",
    523: "cycling", 524: "cycling", 525: "cycling", 526: "cycling", 530: "cross_country_skiing",
    546: "crossfit", 547: "cycling", 550: "hiit", 551: "meditation", 552: "stretching",
    559: "walking", 566: "nordic_walking",
}  # fmt: skip

MEASURE_SLICE_DAYS = 90
CLOCK_MARGIN = timedelta(minutes=10)  # `lastupdate` cursors lag our clock, against skew with Withings'
MAX_PAGES = 1000  # a provider that keeps answering `more` must not loop forever

WORKOUT_FIELDS = (
    "calories,manual_calories,steps,distance,manual_distance,elevation,hr_average,hr_min,hr_max,"
    "intensity,pause_duration"
)
SLEEP_FIELDS = (
    "total_timeinbed,total_sleep_time,asleepduration,lightsleepduration,deepsleepduration,remsleepduration,"
    "wakeupduration,wakeupcount,sleep_efficiency,sleep_latency,wakeup_latency,waso,hr_average,sleep_score,"
    "rr_average,rr_min,rr_max,chest_movement_rate_wellness_average,chest_movement_rate_wellness_min,"
    "chest_movement_rate_wellness_max,rmssd_start_avg,rmssd_end_avg,"
    "core_body_temperature_avg,core_body_temperature_min,core_body_temperature_max,core_body_temperature_status"
)
ACTIVITY_FIELDS = "steps,distance,elevation,soft,moderate,intense,active,calories,totalcalories,hr_average"


class Malformed(ValueError):
    """A row that doesn't have the documented shape; it is skipped, with this reason."""


@dataclass(frozen=True)
class _Series:
    """A v2 service read by local day, then by `lastupdate`."""

    path: str
    action: str
    data_fields: str
    rows: str  # the body's list
    record_type: str


SERIES = {
    "workouts": _Series("/v2/measure", "getworkouts", WORKOUT_FIELDS, "series", "activities"),
    "sleep": _Series("/v2/sleep", "getsummary", SLEEP_FIELDS, "series", "sleeps"),
    "activity": _Series("/v2/measure", "getactivity", ACTIVITY_FIELDS, "activities", "activity_summaries"),
}


class WithingsSource(OAuth2CodeSource):
    slug = "withings"
    name = "Withings"
    data_types = (
        *MEASURE_RECORDS,
        "activities",
        "sleeps",
        "respiratory_rate",
        "heart_rate_variability",
        "activity_summaries",
    )
    history_days = 365
    sync_interval = 3600
    default_authorize_url = "https://account.withings.com/oauth2_user/authorize2"
    default_token_url = "https://wbsapi.withings.net/v2/oauth2"  # noqa: S105 - a URL, not a secret
    default_api_url = "https://wbsapi.withings.net"
    scopes = ("user.info", "user.metrics", "user.activity", "user.sleepevents")
    scope_separator = ","
    supports_pkce = False  # not documented by Withings
    client_auth = "body"
    lookback_days = 7
    # 120 requests a minute for the whole application (the notification overview); fixed or
    # rolling is not said, so it is counted as rolling. Status 601 says it was exceeded.
    rate_limits = (RateLimit(120, 60, rolling=True),)
    push_per_user = True
    push_topics = (PushTopic("", data_types),)  # every type is announced (the categories above)

    # --- authorization -------------------------------------------------------------------
    def token_request(self, fields: dict[str, str], http: ProviderHttp) -> dict[str, Any]:
        """`action=requesttoken`, client credentials in the body; the token is in `body`."""
        form = {"action": "requesttoken", "client_id": self.client_id, "client_secret": self.client_secret, **fields}
        form.pop("code_verifier", None)
        response = http.request("POST", self.token_url, data=form, inspect=_token_status)
        body = decode_json(response)["body"]
        if not isinstance(body, dict) or not body.get("access_token"):
            raise TransientError("the Withings token reply has no access token")
        return dict(body)

    def identify(self, token: dict[str, Any], http: ProviderHttp) -> str:
        # An integer in the reference, a string in observed replies: kept as text either way.
        user_id = token.get("userid")
        if user_id in (None, "") or isinstance(user_id, bool):
            raise RefreshRefused("the Withings token reply has no userid")
        return str(user_id)

    # --- fetching ------------------------------------------------------------------------
    def collections(self, ctx: SyncContext) -> Sequence[Collection]:
        return (
            Collection("measures", MEASURE_RECORDS),
            Collection("workouts", ("activities",)),
            Collection("sleep", ("sleeps", *NIGHTLY_RECORDS)),
            Collection("activity", ("activity_summaries",)),
        )

    def fetch_collection(self, ctx: SyncContext, collection: Collection) -> Iterator[RawPage]:
        if collection.name == "measures":
            return self._fetch_measures(ctx)
        return self._fetch_series(ctx, collection.name, SERIES[collection.name])

    def _history_start(self, ctx: SyncContext) -> datetime:
        """SOURCE_WITHINGS_HISTORY_DAYS: the depth of the first sync."""
        return ctx.now - timedelta(days=self.int_setting("HISTORY_DAYS", self.history_days))

    def _fetch_measures(self, ctx: SyncContext) -> Iterator[RawPage]:
        started = int((ctx.now - CLOCK_MARGIN).timestamp())
        through = ctx.cursor.get("measures_through")
        if isinstance(through, int):
            changed_since = ctx.cursor.get("measures_lastupdate")
            if isinstance(changed_since, int):
                # Created or changed since the last run, whatever their date (an edit, a manual
                # entry dated weeks back). No window: this is not a complete list of anything.
                bodies = list(self._pages(ctx, "/measure", {**_GETMEAS, "lastupdate": str(changed_since)}))
                yield RawPage(type="measures", payload=_merge_measures(bodies))
            # SOURCE_WITHINGS_LOOKBACK_DAYS: how far back an incremental sync re-reads, to see deletions.
            lookback = timedelta(days=self.int_setting("LOOKBACK_DAYS", self.lookback_days))
            start = datetime.fromtimestamp(through, UTC) - lookback
        else:
            start = self._history_start(ctx)
        height = ctx.cursor.get("height_m")
        if not isinstance(height, int | float):
            # A BMI needs a height, often entered once at signup (or after the weights): all
            # heights first, whatever their date, so every weight of the history has its BMI.
            heights = list(self._pages(ctx, "/measure", {**_GETMEAS, "meastypes": str(HEIGHT)}))
            height = _latest_height([g for b in heights for g in _rows(b, "measuregrps")])
        while start < ctx.now:
            end = min(ctx.now, start + timedelta(days=MEASURE_SLICE_DAYS))
            params = {
                **_GETMEAS,
                "startdate": str(int(start.timestamp())),
                "enddate": str(int(end.timestamp()) - 1),  # inclusive at Withings; windows are half-open
            }
            payload = _merge_measures(list(self._pages(ctx, "/measure", params)))
            cursor: dict[str, Any] = {"measures_through": int(end.timestamp())}
            if end >= ctx.now:
                cursor["measures_lastupdate"] = started
            height = _latest_height(payload["measuregrps"]) or height
            if height:
                cursor["height_m"] = payload["height_m"] = height
            if isinstance(payload.get("timezone"), str):
                cursor["timezone"] = payload["timezone"]  # the user's current zone, for rows without one
            # One complete window for every measure type. Without a known height no BMI can be
            # computed, so none may be taken as deleted. Body temperatures are left out: the
            # nights' core temperatures (from getsummary) share the type, and this answer
            # doesn't hold them.
            others = [k for k in MEASURE_RECORDS if k not in ("weight", "body_temperature") and (k != "bmi" or height)]
            yield RawPage(
                type="measures",
                payload=payload,
                cursor=cursor,
                window=Window("weight", start, end, also=tuple(others)),
            )
            start = end

    def _fetch_series(self, ctx: SyncContext, name: str, series: _Series) -> Iterator[RawPage]:
        key = f"{name}_lastupdate"
        started = int((ctx.now - CLOCK_MARGIN).timestamp())
        params = {"action": series.action, "data_fields": series.data_fields}
        if isinstance(ctx.cursor.get(key), int):
            params["lastupdate"] = str(ctx.cursor[key])  # never together with the day range
        else:
            # Rows are keyed by the user's local day: a day more on each side covers every zone.
            params["startdateymd"] = (self._history_start(ctx).date() - timedelta(days=1)).isoformat()
            params["enddateymd"] = (ctx.now.date() + timedelta(days=1)).isoformat()
        rows: list[Any] = []
        for body in self._pages(ctx, series.path, params):
            rows.extend(_rows(body, series.rows))
        yield RawPage(type=name, payload={series.rows: rows}, cursor={key: started})

    def _pages(self, ctx: SyncContext, path: str, params: dict[str, str]) -> Iterator[dict[str, Any]]:
        """Every page of one call, following `more` (0/1 in getmeas, a boolean in v2) / `offset`."""
        form = dict(params)
        offsets: set[int] = set()
        for _ in range(MAX_PAGES):
            response = ctx.http.request(
                "POST",
                f"{self.api_url}{path}",
                data=form,
                headers=self.auth_headers(ctx.credentials),
                inspect=_api_status,
            )
            body = decode_json(response).get("body")
            if not isinstance(body, dict):
                raise TransientError(f"Withings {path} {form['action']} returned no body object")
            yield body
            if not body.get("more"):
                return
            offset = body.get("offset")
            if isinstance(offset, bool) or not isinstance(offset, int) or offset in offsets:
                raise TransientError(f"Withings {path} {form['action']} returned a bad offset")
            offsets.add(offset)
            form["offset"] = str(offset)
        raise TransientError(f"Withings {path} {form['action']} kept answering more=true")

    # --- push ----------------------------------------------------------------------------
    def push_subscribe_user(self, ctx: SyncContext, callback_url: str) -> None:
        """Withings first sends a HEAD to the callback, which must answer 2xx (else status 293)."""
        for appli in NOTIFY_APPLIS:
            form = {"action": "subscribe", "callbackurl": callback_url, "appli": str(appli), "comment": "HumanAPI"}
            ctx.http.request(
                "POST",
                f"{self.api_url}/notify",
                data=form,
                headers=self.auth_headers(ctx.credentials),
                inspect=_api_status,
            )

    def push_read(self, *, headers: Mapping[str, str], body: bytes, now: datetime, max_age: int) -> PushBatch:
        """A form-encoded POST: `userid`, `appli`, `startdate`/`enddate` or `date`, and for some
        categories `deviceid` and `action`. Unsigned (the engine checked the callback's secret)."""
        fields = {k: v[-1] for k, v in parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True).items()}
        userid, appli = fields.get("userid", "").strip(), fields.get("appli", "").strip()
        if not (userid.isascii() and userid.isdigit() and appli.isascii() and appli.isdigit()):
            raise PushRefused("the notification lacks userid or appli", 400)
        # No delivery id, and a deletion's notification is the very body of the creation's (same
        # category, same span): each receipt is its own delivery. A retry Withings sends when our
        # answer was lost costs one more read, nothing else (reads are idempotent).
        key = hashlib.sha256(body + b"@" + now.isoformat().encode()).hexdigest()
        if int(appli) == USER_EVENT:
            if fields.get("action") in ("unlink", "delete"):
                return PushBatch([Notice(userid, Change("user", userid, DEAUTHORIZE))], key)
            return PushBatch([], key)
        span = _notified_span(fields)
        if span is None:  # no readable span: what changed since the cursor
            changes = [Change(name, "", "update") for name in APPLI_COLLECTIONS.get(int(appli), ())]
        else:
            changes = [Change(name, f"{span[0]}/{span[1]}", SPAN) for name in APPLI_COLLECTIONS.get(int(appli), ())]
        return PushBatch([Notice(userid, change) for change in changes], key)

    def fetch_changed(self, ctx: SyncContext, change: Change) -> Iterator[RawPage]:
        """Measures and daily totals: the notified span read again as complete windows (what is
        gone from it goes here too). Otherwise what changed since the collection's `lastupdate`
        (nothing before the history sync has read it: that sync will)."""
        span = _span_of(change)
        if span is not None and change.kind == "measures":
            yield self._measures_in(ctx, *span)
            return
        if span is not None and change.kind == "activity":
            yield self._activity_in(ctx, *span)
            return
        started = int((ctx.now - CLOCK_MARGIN).timestamp())
        if change.kind == "measures":
            since = ctx.cursor.get("measures_lastupdate")
            if isinstance(since, int):
                bodies = list(self._pages(ctx, "/measure", {**_GETMEAS, "lastupdate": str(since)}))
                yield RawPage(type="measures", payload=_merge_measures(bodies), cursor={"measures_lastupdate": started})
        elif change.kind in SERIES and isinstance(ctx.cursor.get(f"{change.kind}_lastupdate"), int):
            yield from self._fetch_series(ctx, change.kind, SERIES[change.kind])

    def _measures_in(self, ctx: SyncContext, start: datetime, end: datetime) -> RawPage:
        """getmeas over [start, end] (both inclusive at Withings, whole seconds): one complete
        window for the same measure types as a sync's slice."""
        params = {**_GETMEAS, "startdate": str(int(start.timestamp())), "enddate": str(int(end.timestamp()))}
        payload = _merge_measures(list(self._pages(ctx, "/measure", params)))
        height = _latest_height(payload["measuregrps"]) or ctx.cursor.get("height_m")
        if isinstance(height, int | float) and height > 0:
            payload["height_m"] = height
        else:
            height = None
        others = [k for k in MEASURE_RECORDS if k not in ("weight", "body_temperature") and (k != "bmi" or height)]
        window = Window("weight", start, end + timedelta(seconds=1), also=tuple(others))
        return RawPage(type="measures", payload=payload, window=window)

    def _activity_in(self, ctx: SyncContext, start: datetime, end: datetime) -> RawPage:
        """getactivity over the local days the span touches in any zone, two more before and one
        after. Rows are keyed by day and stored from their local midnight, which is within
        WEST/EAST of that day's UTC midnight: the window is the instants where only the days
        asked for can start, so it is complete."""
        first = (start - WEST).date() - timedelta(days=2)
        last = (end + EAST).date() + timedelta(days=1)
        series = SERIES["activity"]
        params = {
            "action": series.action,
            "data_fields": series.data_fields,
            "startdateymd": first.isoformat(),
            "enddateymd": last.isoformat(),
        }
        rows: list[Any] = []
        for body in self._pages(ctx, series.path, params):
            rows.extend(_rows(body, series.rows))
        low = datetime.combine(first, time(), UTC) + WEST
        high = datetime.combine(last + timedelta(days=1), time(), UTC) - EAST
        return RawPage(type="activity", payload={series.rows: rows}, window=Window(series.record_type, low, high))

    def authorized(self, ctx: SyncContext) -> bool:
        try:
            next(self._pages(ctx, "/measure", {**_GETMEAS, "lastupdate": str(int(ctx.now.timestamp()))}))
        except TokenRejected:
            return False
        return True

    # --- normalizing ---------------------------------------------------------------------
    def normalize(self, page: RawPage, ctx: SyncContext) -> list[Record]:
        if page.type == "measures":
            return _normalize_measures(page, ctx)
        if page.type == "workouts":
            return _normalize_rows(page, ctx, "series", "activities", _workout)
        if page.type == "sleep":
            return _normalize_sleeps(page, ctx)
        return _normalize_rows(page, ctx, "activities", "activity_summaries", _activity_summary)


def _notified_span(fields: Mapping[str, str]) -> tuple[int, int] | None:
    """The span a notification names, as (first, last) epoch seconds, both inclusive:
    `startdate`/`enddate`, else `date` (a local day, YYYY-MM-DD: every instant it can be in any
    zone; or an epoch). None when absent, unreadable, reversed or longer than MAX_SPAN."""
    start, end = (fields.get(k, "").strip() for k in ("startdate", "enddate"))
    if _epoch(start) is not None and _epoch(end) is not None:
        first, last = int(start), int(end)
    else:
        raw = fields.get("date", "").strip()
        if _epoch(raw) is not None:
            first = last = int(raw)
        else:
            try:
                day = date.fromisoformat(raw) if len(raw) == 10 else None
            except ValueError:
                day = None
            if day is None or not 1970 < day.year < 2100:
                return None
            midnight = datetime.combine(day, time(), UTC)
            first, last = int((midnight - EAST).timestamp()), int((midnight + timedelta(days=1) + WEST).timestamp()) - 1
    if last < first or last - first > MAX_SPAN.total_seconds():
        return None
    return first, last


def _epoch(raw: str) -> int | None:
    """Epoch seconds written as ASCII digits, before 2100 (no date of this century's data is later)."""
    return int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 10 and int(raw) < 4102444800 else None


def _span_of(change: Change) -> tuple[datetime, datetime] | None:
    """The (first, last) instants of a change made by `push_read` with a span."""
    if change.operation != SPAN:
        return None
    first, _, last = change.object_id.partition("/")
    if _epoch(first) is None or _epoch(last) is None:
        return None
    return datetime.fromtimestamp(int(first), UTC), datetime.fromtimestamp(int(last), UTC)


_GETMEAS = {
    "action": "getmeas",
    "meastypes": ",".join(str(t) for t in MEASTYPES),
    "category": str(REAL_MEASURES),  # real measures, not the user's goals
}


# --- envelope statuses -----------------------------------------------------------------------


def _envelope(response: requests.Response) -> tuple[int, str]:
    payload = decode_json(response)
    status = payload.get("status") if isinstance(payload, dict) else None
    if isinstance(status, bool) or not isinstance(status, int):
        raise TransientError("Withings returned a reply without an envelope status")
    # Withings' own error text names the problem; it never echoes tokens.
    return status, str(payload.get("error") or "")[:200]


def _error_occurred(status: int) -> bool:
    return any(low <= status <= high for low, high in ERROR_OCCURRED_RANGES)


def _token_status(response: requests.Response) -> None:
    status, error = _envelope(response)
    if status == SUCCESS:
        return
    if status == TOO_MANY_REQUESTS:
        raise RateLimited("Withings token endpoint: too many requests (status 601)")
    if status in (TIMEOUT, BAD_STATE) or _error_occurred(status):
        raise TransientError(f"Withings token endpoint answered status {status}")
    if status == NOT_IMPLEMENTED:  # a wrong endpoint or action: ours to fix, not the user's
        raise PermanentError(f"Withings token endpoint answered status {status} (not implemented)")
    # 503 "Invalid Params: invalid code" / "invalid refresh_token", and the auth-failure family.
    raise RefreshRefused(f"Withings refused the grant (status {status}: {error})")


def _api_status(response: requests.Response) -> None:
    status, error = _envelope(response)
    if status == SUCCESS:
        return
    if status in AUTH_FAILED:
        raise TokenRejected(f"Withings rejected the access token (status {status})")
    if status == TOO_MANY_REQUESTS:
        raise RateLimited("Withings: too many requests (status 601)")
    if status in (TIMEOUT, BAD_STATE) or _error_occurred(status):
        raise TransientError(f"Withings answered status {status}")
    # Unauthorized / insufficient scope, invalid params, not implemented, anything unknown.
    raise PermanentError(f"Withings answered status {status}: {error}")


# --- values ------------------------------------------------------------------------------------


def _rows(body: dict[str, Any], key: str) -> list[Any]:
    rows = body.get(key) or []
    if not isinstance(rows, list):
        raise TransientError(f"Withings returned a {key} that is not a list")
    return rows


def _int(raw: Any, name: str) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        raise Malformed(f"{name} is missing")
    try:
        number = float(raw)
    except ValueError:
        raise Malformed(f"{name} is not a number") from None
    if not number.is_integer():
        raise Malformed(f"{name} is not an integer")
    return int(number)


def _number(row: dict[str, Any], name: str) -> float | None:
    """An optional number: absent or null is None (v2 services send only what was asked for)."""
    raw = row.get(name)
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise Malformed(f"{name} is not a number")
    return float(raw)


def _instant(raw: Any, name: str) -> datetime:
    return datetime.fromtimestamp(_int(raw, name), UTC)


def _zone(raw: Any) -> ZoneInfo | None:
    if raw is None or raw == "":
        return None
    try:
        return ZoneInfo(str(raw))
    except (ZoneInfoNotFoundError, ValueError):
        raise Malformed(f"timezone {str(raw)[:40]!r} is not an IANA time zone") from None


def _offset(zone: ZoneInfo | None, at: datetime) -> int:
    """Minutes east of UTC in the row's zone at that instant (DST included); 0 without a zone."""
    if zone is None:
        return 0
    offset = at.astimezone(zone).utcoffset()
    return int(offset.total_seconds() // 60) if offset is not None else 0


def _day(row: dict[str, Any], name: str = "date") -> date | None:
    raw = row.get(name)
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise Malformed(f"{name} is not a YYYY-MM-DD day")
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise Malformed(f"{name} is not a YYYY-MM-DD day") from None


# --- measures ----------------------------------------------------------------------------------


def _merge_measures(bodies: list[dict[str, Any]]) -> dict[str, Any]:
    zones = [b["timezone"] for b in bodies if isinstance(b.get("timezone"), str) and b["timezone"]]
    groups = [g for b in bodies for g in _rows(b, "measuregrps")]
    return {"measuregrps": groups, "timezone": zones[0] if zones else None}


def _real(measure: Any) -> tuple[int, float]:
    """(meastype, value * 10^unit), exact in decimal: 75232 and -3 are 75.232."""
    if not isinstance(measure, dict):
        raise Malformed("a measure is not an object")
    kind = _int(measure.get("type"), "measures[].type")
    try:
        value = Decimal(_int(measure.get("value"), "measures[].value"))
        return kind, float(value.scaleb(_int(measure.get("unit"), "measures[].unit")))
    except InvalidOperation:
        raise Malformed("measures[].unit is out of range") from None


def _latest_height(groups: list[Any]) -> float | None:
    latest: tuple[int, float] | None = None
    for group in groups:
        if not isinstance(group, dict) or group.get("category", REAL_MEASURES) != REAL_MEASURES:
            continue
        for measure in group.get("measures") or []:
            try:
                kind, value = _real(measure)
                at = _int(group.get("date"), "date")
            except Malformed:
                continue
            if kind == HEIGHT and value > 0 and (latest is None or at > latest[0]):
                latest = (at, value)
    return latest[1] if latest else None


def _kinds_of(group: Any) -> list[str]:
    """The record types a group would give, as far as it can be read (for counting it unreadable)."""
    kinds: list[str] = []
    measures = group.get("measures") if isinstance(group, dict) else None
    for measure in measures if isinstance(measures, list) else []:
        kind = RECORD_OF_MEASTYPE.get(measure.get("type")) if isinstance(measure, dict) else None
        if kind and kind not in kinds:
            kinds.append(kind)
    return kinds or ["weight"]


def _normalize_measures(page: RawPage, ctx: SyncContext) -> list[Record]:
    groups = page.payload["measuregrps"]
    default_zone = page.payload.get("timezone")
    # The slice's own latest height, else the latest known (all heights are read first).
    height = _latest_height(groups) or page.payload.get("height_m") or ctx.cursor.get("height_m")
    records: list[Record] = []
    for group in groups:
        if isinstance(group, dict) and group.get("category") == USER_GOALS:
            continue  # the user's objectives (asked for category 1 only): not measurements
        try:
            if not isinstance(group, dict):
                raise Malformed("a measure group is not an object")
            records.extend(_group_records(page, group, default_zone, height))
        except Malformed as exc:
            for kind in _kinds_of(group):
                _skip(page, ctx, kind, f"measure group: {exc}")
    return records


def _group_records(page: RawPage, group: dict[str, Any], default_zone: Any, height_m: Any) -> list[Record]:
    at = _instant(group.get("date"), "date")
    grpid = str(_int(group.get("grpid"), "grpid"))
    # The group's own zone where it has one (observed), else the answer's (documented).
    zone = _zone(group.get("timezone") or default_zone)
    tz = _offset(zone, at)
    values: dict[int, float] = {}
    raw = group.get("measures")
    if not isinstance(raw, list):
        raise Malformed("measures is not a list")
    for measure in raw:
        try:
            kind, value = _real(measure)
        except Malformed as exc:
            wanted = measure.get("type") if isinstance(measure, dict) else None
            if wanted in RECORD_OF_MEASTYPE or not isinstance(wanted, int):  # not one of the types read: ignored
                page.skipped(f"measure group {grpid}: {exc}", type=RECORD_OF_MEASTYPE.get(wanted, "weight"))
            continue
        values.setdefault(kind, value)  # the first of a type (segmental types repeat by position)
    source: dict[str, Any] = {
        k: group.get(k)
        for k in ("grpid", "attrib", "date", "created", "modified", "category", "model", "timezone", "measures")
        if k in group
    }

    def reading(kind: str, value: float, unit: str, **extra: Any) -> Record:
        fields = {"value": value, "unit": unit, **extra}
        return Record(kind, grpid, at, tz, value=value, fields=fields, source_data=source)

    records = []
    if WEIGHT in values:
        records.append(reading("weight", round(values[WEIGHT], 3), "kg"))
        if isinstance(height_m, int | float) and height_m > 0:
            records.append(reading("bmi", round(values[WEIGHT] / height_m**2, 1), "kg/m2"))
    if HEIGHT in values:
        records.append(reading("height", round(values[HEIGHT] * 100, 1), "cm"))
    if FAT_RATIO in values:
        records.append(reading("body_fat", round(values[FAT_RATIO], 2), "%"))
    if SPO2 in values:
        records.append(reading("blood_oxygen", round(values[SPO2], 1), "%"))
    if PULSE in values:
        records.append(reading("heart_rate", round(values[PULSE]), "bpm"))
    if BODY_TEMPERATURE in values:
        # A measured temperature; Withings gives no baseline, so no deviation from it.
        records.append(reading("body_temperature", round(values[BODY_TEMPERATURE], 2), "°C", deviation=None))
    if VO2_MAX in values:
        records.append(reading("vo2_max", round(values[VO2_MAX], 1), "mL/kg/min"))  # ml/min/kg, the same
    if SYSTOLIC in values and DIASTOLIC in values:
        systolic, diastolic = round(values[SYSTOLIC]), round(values[DIASTOLIC])
        fields = {"systolic": systolic, "diastolic": diastolic, "unit": "mmHg"}
        records.append(Record("blood_pressure", grpid, at, tz, value=systolic, fields=fields, source_data=source))
    elif SYSTOLIC in values or DIASTOLIC in values:
        missing = "systolic (10)" if SYSTOLIC not in values else "diastolic (9)"
        page.skipped(f"blood pressure group {grpid} has no {missing} measure", type="blood_pressure")
    return records


def _skip(page: RawPage, ctx: SyncContext, kind: str, reason: str) -> None:
    log.warning("withings connection %s: skipped a %s item: %s", ctx.connection_id, kind, reason)
    page.skipped(reason, type=kind)


# --- workouts, sleeps, daily activity ----------------------------------------------------------


def _normalize_rows(page: RawPage, ctx: SyncContext, key: str, kind: str, convert: Any) -> list[Record]:
    records: list[Record] = []
    for row in page.payload[key]:
        try:
            if not isinstance(row, dict):
                raise Malformed("a row is not an object")
            records.append(convert(row, ctx))
        except Malformed as exc:
            _skip(page, ctx, kind, str(exc))
    return records


@dataclass
class _Period:
    external_id: str
    start: datetime
    end: datetime
    tz: int
    day: date | None
    data: dict[str, Any] = field(default_factory=dict)


def _period(row: dict[str, Any]) -> _Period:
    start, end = _instant(row.get("startdate"), "startdate"), _instant(row.get("enddate"), "enddate")
    if end < start:
        raise Malformed("enddate is before startdate")
    data = row.get("data")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise Malformed("data is not an object")
    external_id = str(_int(row.get("id"), "id"))
    return _Period(external_id, start, end, _offset(_zone(row.get("timezone")), start), _day(row), data)


def _workout(row: dict[str, Any], ctx: SyncContext) -> Record:
    period = _period(row)
    data = period.data
    category = _int(row.get("category"), "category")
    pause = _number(data, "pause_duration") or 0
    # The documented measures; a value the user typed in (0 when none was) only where there is none.
    distance = _first(_number(data, "distance"), _number(data, "manual_distance"))
    calories = _first(_number(data, "calories"), _number(data, "manual_calories"))  # active kcal
    steps = _number(data, "steps")
    fields = {
        "type": WORKOUT_CATEGORIES.get(category, "other"),
        "duration": max(0, round((period.end - period.start).total_seconds() - pause)),
        "distance": round(distance, 1) if distance is not None else None,
        "steps": round(steps) if steps is not None else None,
        "calories": calories,
    }
    return Record(
        type="activities",
        external_id=period.external_id,
        start_time=period.start,
        end_time=period.end,
        tz_offset=period.tz,
        fields=fields,
        source_data=row,
        day=period.day,  # Withings' `date`: the day it files the workout under
    )


def _first(measured: float | None, typed: float | None) -> float | None:
    return measured if measured is not None else (typed or None)


def _minutes(seconds: float | None) -> int | None:
    return round(seconds / 60) if seconds is not None else None


def _normalize_sleeps(page: RawPage, ctx: SyncContext) -> list[Record]:
    records: list[Record] = []
    readings: list[Record] = []
    for row in page.payload["series"]:
        try:
            if not isinstance(row, dict):
                raise Malformed("a row is not an object")
            sleep = _sleep(row, ctx)
        except Malformed as exc:
            # The night's own readings can't be placed either: each one it holds is unreadable too.
            for kind in ("sleeps", *_nightly_kinds(row)):
                _skip(page, ctx, kind, str(exc))
            continue
        records.append(sleep)
        readings.extend(_nightly_readings(page, ctx, row, sleep))
    # Withings flags no nap: of the sessions it files under one day, the longest is the main one.
    longest: dict[date | None, Record] = {}
    for record in records:
        best = longest.get(record.day)
        if best is None or _length(record) > _length(best):
            longest[record.day] = record
    main = {id(r) for r in longest.values()}
    return [replace(r, fields={**r.fields, "mainSleep": id(r) in main}) for r in records] + readings


def _length(record: Record) -> float:
    return ((record.end_time or record.start_time) - record.start_time).total_seconds()


def _sleep(row: dict[str, Any], ctx: SyncContext) -> Record:
    period = _period(row)
    data = period.data
    in_bed = _number(data, "total_timeinbed")
    asleep = _number(data, "total_sleep_time")
    if asleep is None:  # a night from an external source: no stages, `asleepduration` instead
        asleep = _number(data, "asleepduration")
    if asleep is None:
        stages = [_number(data, f) for f in ("lightsleepduration", "deepsleepduration", "remsleepduration")]
        asleep = sum(s for s in stages if s is not None) if any(s is not None for s in stages) else None
    efficiency = _number(data, "sleep_efficiency")
    if efficiency is not None:
        # A 0-1 ratio in the reference and in observed replies; a percentage in one published example.
        efficiency = round(efficiency * 100 if efficiency <= 1 else efficiency)
    wakeups = _number(data, "wakeupcount")
    # The day Withings files the night under (the morning it ends); derived only if absent.
    day = period.day or (period.end + timedelta(minutes=period.tz)).date()
    fields = {
        "day": day.isoformat(),
        "mainSleep": True,
        "timeAsleep": _minutes(asleep),
        "timeAwake": _minutes(_number(data, "wakeupduration")),
        "timeInBed": _minutes(in_bed if in_bed is not None else (period.end - period.start).total_seconds()),
        "efficiency": efficiency,
        "numberOfWakeups": round(wakeups) if wakeups is not None else None,
        # Seconds in each stage; null for a night from an external source (it has none).
        "deepSleep": _minutes(_number(data, "deepsleepduration")),
        "lightSleep": _minutes(_number(data, "lightsleepduration")),
        "remSleep": _minutes(_number(data, "remsleepduration")),
    }
    return Record(
        type="sleeps",
        external_id=period.external_id,
        start_time=period.start,
        end_time=period.end,
        tz_offset=period.tz,
        fields=fields,
        source_data=row,
        day=day,
    )


# A night's readings: (record type, the summary's data fields one reading is read from).
NIGHTLY_ITEMS = (
    ("respiratory_rate", ("rr_average", "chest_movement_rate_wellness_average")),
    ("heart_rate_variability", ("rmssd_start_avg",)),
    ("heart_rate_variability", ("rmssd_end_avg",)),
    ("body_temperature", ("core_body_temperature_avg",)),
)
SOURCE_KEYS = ("id", "startdate", "enddate", "date", "timezone", "model", "model_id", "modified")


def _nightly_kinds(row: Any) -> list[str]:
    """The type of each nightly reading a sleep row holds a value for (for counting it unreadable)."""
    data = row.get("data") if isinstance(row, dict) else None
    if not isinstance(data, dict):
        return []
    return [kind for kind, names in NIGHTLY_ITEMS if any(data.get(n) is not None for n in names)]


def _nightly_readings(page: RawPage, ctx: SyncContext, row: dict[str, Any], sleep: Record) -> list[Record]:
    """A night's respiratory rate, HRV and core body temperature, from its summary; each is
    filed under the night's day (Withings' `date`) and timestamped at the end of the night,
    except the HRV averaged over its start, which is timestamped at its start. One unreadable
    field costs only its reading."""
    data = row.get("data") or {}
    zone = _zone(row.get("timezone"))  # already read once for the sleep
    start, end = sleep.start_time, sleep.end_time or sleep.start_time
    meta = {k: row[k] for k in SOURCE_KEYS if k in row}
    readings: list[Record] = []

    def reading(kind: str, suffix: str, at: datetime, value: float, names: tuple[str, ...], **extra: Any) -> None:
        fields = {"value": value, "unit": RECORD_TYPES[kind].unit, **extra}
        source = {**meta, "data": {n: data[n] for n in names if n in data}}
        readings.append(
            Record(
                type=kind,
                external_id=f"sleep-{sleep.external_id}{suffix}",  # apart from getmeas' grpids
                start_time=at,
                tz_offset=_offset(zone, at),
                value=value,
                fields=fields,
                source_data=source,
                day=sleep.day,
            )
        )

    try:
        # `rr_*`, else the same measure under its other documented name,
        # `chest_movement_rate_wellness_*` ("respiration rate (breaths per minute)").
        for prefix in ("rr_", "chest_movement_rate_wellness_"):
            names = (f"{prefix}average", f"{prefix}min", f"{prefix}max")
            rate = _measured(data, names[0])
            if rate is not None:
                low, high = _measured(data, names[1]), _measured(data, names[2])
                reading("respiratory_rate", "", end, rate, names, min=low, max=high)
                break
    except Malformed as exc:
        _skip(page, ctx, "respiratory_rate", f"sleep {sleep.external_id}: {exc}")
    for name, suffix, at, part in (
        ("rmssd_start_avg", "-start", start, "sleepStart"),
        ("rmssd_end_avg", "-end", end, "sleepEnd"),
    ):
        try:
            rmssd = _measured(data, name)
            if rmssd is not None:
                reading("heart_rate_variability", suffix, at, round(rmssd, 1), (name,), period=part)
        except Malformed as exc:
            _skip(page, ctx, "heart_rate_variability", f"sleep {sleep.external_id}: {exc}")
    try:
        names = ("core_body_temperature_avg", "core_body_temperature_min", "core_body_temperature_max")
        average = _measured(data, names[0])
        if average is not None:
            status = data.get("core_body_temperature_status")
            reading(
                "body_temperature",
                "",
                end,
                round(average, 2),
                (*names, "core_body_temperature_status"),
                deviation=None,  # Withings gives a status against the usual ('elevated'), no number
                min=_measured(data, names[1]),
                max=_measured(data, names[2]),
                status=status if isinstance(status, str) else None,
            )
    except Malformed as exc:
        _skip(page, ctx, "body_temperature", f"sleep {sleep.external_id}: {exc}")
    return readings


def _measured(data: dict[str, Any], name: str) -> float | None:
    """A vital sign of the night: absent, null or 0 is no measurement (no one breathes 0 times
    a minute; Withings sends 0 where it has no heart rate, as public clients read it)."""
    value = _number(data, name)
    if value is not None and value < 0:
        raise Malformed(f"{name} is negative")
    return value or None


def _activity_summary(row: dict[str, Any], ctx: SyncContext) -> Record:
    day = _day(row)
    if day is None:
        raise Malformed("date is missing")
    # The row's zone; a row without one takes the user's zone from getmeas, else UTC.
    zone = _zone(row.get("timezone") or ctx.cursor.get("timezone"))
    midnight = datetime.combine(day, time(), tzinfo=zone or UTC)
    start = midnight.astimezone(UTC)
    steps = _number(row, "steps")
    soft, moderate, intense = (_number(row, k) for k in ("soft", "moderate", "intense"))
    parts = [p for p in (soft, moderate, intense) if p is not None]
    fields = {
        "date": day.isoformat(),
        "steps": round(steps) if steps is not None else None,
        "distance": _number(row, "distance"),  # metres
        "calories": _number(row, "totalcalories"),  # kcal, active + passive: the day's total
        "activeCalories": _number(row, "calories"),  # kcal, active only
        "duration": round(sum(parts)) if parts else None,  # seconds of soft, moderate or intense activity
        "sedentary": None,  # not reported
        "light": _round(soft),
        "moderate": _round(moderate),
        "vigorous": _round(intense),
    }
    return Record(
        type="activity_summaries",
        external_id=day.isoformat(),  # one row per day at Withings
        start_time=start,
        end_time=start + timedelta(days=1),
        tz_offset=_offset(zone, start),
        fields=fields,
        source_data=row,
        day=day,
    )


def _round(value: float | None) -> int | None:
    return round(value) if value is not None else None
