"""Fitbit, through the Google Health API (v4).

Fitbit's own Web API and OAuth endpoints are switched off in 2026; Fitbit data is now read with
Google OAuth 2.0 from `health.googleapis.com/v4` (docs/providers/fitbit.md gives the source of
every field read here). Each data type is its own collection, so a refusal of one (403, 404)
leaves the others to sync:

- point types are read with `dataPoints:reconcile`, the one merged stream the Fitbit app shows
  (a session recorded by the watch and by a phone app is served once), newest first, paged with
  `pageToken`, filtered by time with an AIP-160 filter whose member depends on the record kind;
- daily types (a night's SpO2, resting heart rate, HRV, breathing rate, skin temperature, the
  day's VO2 max) are dated, not timed: filtered by `<type>.date`, filed under that date and
  placed at its local midnight in the user's zone;
- daily totals (steps, distance, calories, active minutes) come from `dataPoints:dailyRollUp`,
  Google's own per-civil-day aggregates, as `activity_summaries`.

Sync shape: per collection, time slices from its cursor (or the history depth) to now, oldest
first. A slice of an identifiable type (weight, exercise, sleep, ...) or of a daily type is one
page with a `Window`, so what the provider no longer returns disappears here on re-pull;
heart-rate samples have no ids and come in large numbers, so each API page is stored as it comes.
A collection's cursor moves only when a slice is complete, and each incremental sync re-reads a
week back (configurable), since points are edited and uploaded late.

Units stored: weight kg, height cm, body fat and SpO2 %, glucose mg/dL, heart rate bpm, HRV ms
(RMSSD), breathing rate breaths/min, temperature °C, VO2 max mL/kg/min, distance m, durations s
(sleep: minutes), energy kcal. BMI is derived from weight and the latest height. Sleep
efficiency is derived (asleep / in bed), since the Health API no longer provides one.

Push: the Health API's webhooks. The subscriber is made by the operator (it takes a Cloud
service account) with `endpointUri` PUBLIC_BASE_URL/hooks/fitbit and `endpointAuthorization.secret`
= SOURCE_FITBIT_PUSH_SECRET; the server answers its verification POSTs (201 with the secret, 401
without) and reads each notification's data type and intervals again, as a sync reads a slice.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, ClassVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import requests
from django.core.exceptions import ImproperlyConfigured

from ..base import (
    AuthorizationFailed,
    Change,
    Collection,
    Credentials,
    Notice,
    PermanentError,
    PushBatch,
    PushRefused,
    PushTopic,
    RateLimit,
    RawPage,
    Record,
    RefreshRefused,
    SyncContext,
    TransientError,
    Window,
)
from ..http import ProviderHttp, decode_json, oauth_error_code, raise_for_token_status
from ..oauth import OAuth2CodeSource

log = logging.getLogger(__name__)

SCOPE = "https://www.googleapis.com/auth/googlehealth."
ACTIVITY = SCOPE + "activity_and_fitness.readonly"
METRICS = SCOPE + "health_metrics_and_measurements.readonly"
SLEEP = SCOPE + "sleep.readonly"
PROFILE = SCOPE + "profile.readonly"
SETTINGS = SCOPE + "settings.readonly"

# The widest UTC offsets in use: a civil-time filter widened by this covers every instant.
MAX_OFFSET = timedelta(hours=14)
MIN_PUSH_SECRET = 16
MAX_NOTIFIED = 1000  # notifications read from one request (Google documents batches of 1-99)
NOTIFIED_SPAN_MAX = timedelta(days=31)  # a notified interval is read back this far at most
DAILY_TOTALS = "daily-totals"


class Malformed(ValueError):
    """An item that doesn't have the documented shape; it is skipped, with this reason (which
    names the field, never its value)."""


@dataclass(frozen=True)
class Stream:
    data_type: str  # kebab-case id used in URLs
    key: str  # camelCase payload key
    kind: str  # "sample" | "session" | "sleep" | "daily"
    scopes: tuple[str, ...]  # any one of them grants the type
    record_type: str
    slice_days: int
    page_size: int
    windowed: bool = True
    also: tuple[str, ...] = ()  # record types derived from the same points

    @property
    def member(self) -> str:
        """The filter member by record kind (discovery, `dataPoints.list` `filter`)."""
        snake = self.data_type.replace("-", "_")
        return {
            "sample": f"{snake}.sample_time.physical_time",
            "session": f"{snake}.interval.civil_start_time",  # sessions other than sleep: civil only
            "sleep": f"{snake}.interval.end_time",  # sleep: by its end (wake) time only
            "daily": f"{snake}.date",
        }[self.kind]


# Height before weight: BMI needs the latest height.
STREAMS = (
    Stream("height", "height", "sample", (METRICS,), "height", 90, 10000),
    Stream("weight", "weight", "sample", (METRICS,), "weight", 90, 10000, also=("bmi",)),
    Stream("body-fat", "bodyFat", "sample", (METRICS,), "body_fat", 90, 10000),
    Stream("daily-oxygen-saturation", "dailyOxygenSaturation", "daily", (METRICS,), "blood_oxygen", 90, 10000),
    Stream("blood-glucose", "bloodGlucose", "sample", (METRICS,), "blood_glucose", 90, 10000),
    Stream("heart-rate", "heartRate", "sample", (METRICS,), "heart_rate", 7, 10000, windowed=False),
    Stream("exercise", "exercise", "session", (ACTIVITY,), "activities", 30, 25),
    Stream("sleep", "sleep", "sleep", (SLEEP,), "sleeps", 30, 25),
    Stream("daily-resting-heart-rate", "dailyRestingHeartRate", "daily", (METRICS,), "resting_heart_rate", 90, 10000),
    Stream(
        "daily-heart-rate-variability",
        "dailyHeartRateVariability",
        "daily",
        (METRICS,),
        "heart_rate_variability",
        90,
        10000,
    ),
    Stream("daily-respiratory-rate", "dailyRespiratoryRate", "daily", (METRICS,), "respiratory_rate", 90, 10000),
    Stream(
        "daily-sleep-temperature-derivations",
        "dailySleepTemperatureDerivations",
        "daily",
        (METRICS,),
        "body_temperature",
        90,
        10000,
    ),
    # Public sources disagree on its scope (docs/providers/fitbit.md): either is enough to ask;
    # a refusal (403) fails this collection alone.
    Stream("daily-vo2-max", "dailyVo2Max", "daily", (ACTIVITY, METRICS), "vo2_max", 90, 10000),
)
STREAMS_BY_TYPE = {s.data_type: s for s in STREAMS}

# The daily totals: dailyRollUp per data type -> the key of its value in a DailyRollupDataPoint.
ROLLUPS = (
    ("steps", "steps"),
    ("distance", "distance"),
    ("total-calories", "totalCalories"),
    ("active-energy-burned", "activeEnergyBurned"),
    ("active-minutes", "activeMinutes"),
    ("sedentary-period", "sedentaryPeriod"),
)
# total-calories and active-minutes roll up at most 14 days per request (the rest 90).
ROLLUP_DAYS = 14


class FitbitSource(OAuth2CodeSource):
    slug = "fitbit"
    name = "Fitbit"
    data_types = (
        "activities",
        "sleeps",
        "heart_rate",
        "weight",
        "bmi",
        "body_fat",
        "height",
        "blood_oxygen",
        "blood_glucose",
        "resting_heart_rate",
        "heart_rate_variability",
        "respiratory_rate",
        "body_temperature",
        "vo2_max",
        "activity_summaries",
    )
    history_days = 365
    sync_interval = 3600
    default_authorize_url = "https://accounts.google.com/o/oauth2/v2/auth"
    default_token_url = "https://oauth2.googleapis.com/token"  # noqa: S105 - a URL, not a secret
    default_api_url = "https://health.googleapis.com"
    scopes = (ACTIVITY, METRICS, SLEEP, PROFILE, SETTINGS)
    supports_pkce = True
    client_auth = "body"
    # Google Health's defaults (its rate-limits page): 300 requests a minute per user; per
    # project 120,000 a minute and 86.4 M a day. Counted as rolling (not said otherwise; Google's
    # daily quotas turn at midnight Pacific time). A 429 names no limit: it is taken to be the
    # user's, the one a single connection can reach.
    rate_limits = (RateLimit(120_000, 60, rolling=True), RateLimit(86_400_000, 86400, rolling=True))
    user_rate_limits = (RateLimit(300, 60, rolling=True),)
    rate_limit_scope = "user"
    # offline: a refresh token; consent: a new one again on reconnect.
    extra_authorize_params: ClassVar[dict[str, str]] = {
        "access_type": "offline",
        "prompt": "consent",
        "include_granted_scopes": "true",
    }
    lookback_days = 7
    _zone_of_run: tuple[str, datetime, UserZone] | None = None
    push_by_operator = True
    # Which data types the operator's subscriber announces is not known here: none is counted as
    # covered, so polling keeps its interval (notifications only bring changes sooner).
    push_topics = (PushTopic("", ()),)

    def check_settings(self) -> None:
        secret = self.setting("PUSH_SECRET")
        if secret and len(secret) < MIN_PUSH_SECRET:
            raise ImproperlyConfigured(f"SOURCE_FITBIT_PUSH_SECRET must be at least {MIN_PUSH_SECRET} characters")

    # --- authorization -------------------------------------------------------------------
    def token_request(self, fields: dict[str, str], http: ProviderHttp) -> dict[str, Any]:
        """POST the token endpoint ourselves: the answer's HTTP status decides between a refusal
        (400/401: RefreshRefused) and a failure to retry (5xx, 429, a malformed body). The
        granted scopes may be fewer than those asked (users can untick them): that is accepted,
        and `collections` leaves out the data types not granted."""
        form = {**fields, "client_id": self.client_id, "client_secret": self.client_secret}
        if not form.get("code_verifier"):
            form.pop("code_verifier", None)
        response = http.request(
            "POST", self.token_url, data=form, headers={"Accept": "application/json"}, check=False, inspect=_token_reply
        )
        token = decode_json(response)
        if not isinstance(token, dict):
            raise TransientError("the Google token endpoint returned a body that is not an object")
        return dict(token)

    def refresh(self, credentials: dict[str, Any], http: ProviderHttp) -> Credentials:
        renewed = super().refresh(credentials, http)
        if not renewed.data.get("scope"):  # a refresh reply may omit the scope: keep what was granted
            renewed.data["scope"] = credentials.get("scope", "")
        return renewed

    def identify(self, token: dict[str, Any], http: ProviderHttp) -> str:
        try:
            body = http.get_json(
                f"{self.api_url}/v4/users/me/identity", headers={"Authorization": f"Bearer {token['access_token']}"}
            )
        except PermanentError:
            # e.g. 400 ACCOUNT_NOT_LINKED, 403 for a legacy Fitbit login: the user must act.
            raise AuthorizationFailed(
                "This Google account has no Fitbit data the Google Health API can share."
            ) from None
        user_id = body.get("healthUserId") if isinstance(body, dict) else None
        if not isinstance(user_id, str) or not user_id:
            raise TransientError("the Google Health identity reply has no healthUserId")
        return user_id

    # --- collections -----------------------------------------------------------------------
    def collections(self, ctx: SyncContext) -> Sequence[Collection]:
        """One per data type, in order (height before weight). A type whose scope the user
        unticked at consent is not asked for: Google would refuse it (403) on every run."""
        granted = _granted(ctx.credentials.get("scope"))
        found = []
        for stream in STREAMS:
            if not granted or granted.intersection(stream.scopes):
                found.append(Collection(stream.data_type, (stream.record_type, *stream.also)))
            else:
                log.info("fitbit connection %s: %s not granted, not fetched", ctx.connection_id, stream.data_type)
        if not granted or ACTIVITY in granted:
            found.append(Collection(DAILY_TOTALS, ("activity_summaries",)))
        return found

    def fetch_collection(self, ctx: SyncContext, collection: Collection) -> Iterator[RawPage]:
        """Raw pages of one collection. A 403/404 (or a 5xx past the retries) propagates: the
        engine records the collection's types as failed and goes on with the others."""
        if collection.name == DAILY_TOTALS:
            return self._fetch_daily_totals(ctx)
        stream = STREAMS_BY_TYPE[collection.name]
        if stream.kind == "daily":
            return self._fetch_daily_stream(ctx, stream)
        return self._fetch_stream(ctx, stream)

    def _fetch_stream(self, ctx: SyncContext, stream: Stream) -> Iterator[RawPage]:
        for start, end in _slices(self._since(ctx, stream), ctx.now, stream.slice_days):
            yield from self._slice(ctx, stream, start, end, {stream.data_type: _rfc3339(end)})

    def _slice(
        self, ctx: SyncContext, stream: Stream, start: datetime, end: datetime, cursor: dict[str, Any]
    ) -> Iterator[RawPage]:
        """The points of [start, end); `cursor` rides on the last page (none: a notified range)."""
        params = {"filter": _filter(stream, start, end), "pageSize": str(stream.page_size)}
        if not stream.windowed:
            # Stored page by page; the cursor rides on the slice's last page only.
            for points, last in _with_last(self._reconcile(ctx, stream, params)):
                yield RawPage(type=stream.data_type, payload={"dataPoints": points}, cursor=cursor if last else None)
        else:
            points = [point for page in self._reconcile(ctx, stream, params) for point in page]
            page_cursor: dict[str, Any] = dict(cursor)
            if stream.data_type == "height":
                height = _latest_height(points)
                if height is not None:
                    page_cursor["height_mm"] = height
            # BMI is derived from each weight when a height is known: the weights' window then
            # covers their BMIs too (a deleted weight takes its BMI along).
            known_height = _known_height(ctx.cursor)
            derived = stream.also if stream.data_type != "weight" or known_height else ()
            yield RawPage(
                type=stream.data_type,
                payload={"dataPoints": points},
                cursor=page_cursor,
                window=Window(stream.record_type, start, end, also=derived),
            )

    def _fetch_daily_stream(self, ctx: SyncContext, stream: Stream) -> Iterator[RawPage]:
        """A daily type: points dated in the user's zone, filtered by `<type>.date`."""
        zone = self._zone(ctx)
        for first, stop in _day_slices(self._since_day(ctx, stream.data_type, zone), zone.today(ctx.now), 90):
            yield self._days_of(ctx, stream, zone, first, stop, {stream.data_type: stop.isoformat()})

    def _days_of(
        self, ctx: SyncContext, stream: Stream, zone: UserZone, first: date, stop: date, cursor: dict[str, Any] | None
    ) -> RawPage:
        member = stream.member
        params = {
            "filter": f'{member} >= "{first.isoformat()}" AND {member} < "{stop.isoformat()}"',
            "pageSize": str(stream.page_size),
        }
        points = [point for page in self._reconcile(ctx, stream, params) for point in page]
        return RawPage(
            type=stream.data_type,
            payload={"dataPoints": points},
            cursor=cursor,
            window=Window(stream.record_type, zone.midnight(first)[0], zone.midnight(stop)[0]),
            context=zone.as_context(),
        )

    def _fetch_daily_totals(self, ctx: SyncContext) -> Iterator[RawPage]:
        """Google's own daily aggregates, one dailyRollUp per data type and 14-day slice; the
        slice is one page (a day's record draws on every type)."""
        zone = self._zone(ctx)
        for first, stop in _day_slices(self._since_day(ctx, DAILY_TOTALS, zone), zone.today(ctx.now), ROLLUP_DAYS):
            yield self._totals_of(ctx, zone, first, stop, {DAILY_TOTALS: stop.isoformat()})

    def _totals_of(
        self, ctx: SyncContext, zone: UserZone, first: date, stop: date, cursor: dict[str, Any] | None
    ) -> RawPage:
        rollups = {data_type: list(self._daily_rollup(ctx, data_type, first, stop)) for data_type, _ in ROLLUPS}
        return RawPage(
            type=DAILY_TOTALS,
            payload={"rollups": rollups},
            cursor=cursor,
            window=Window("activity_summaries", zone.midnight(first)[0], zone.midnight(stop)[0]),
            context=zone.as_context(),
        )

    # --- push ----------------------------------------------------------------------------
    def push_configured(self) -> bool:
        return bool(self.setting("PUSH_SECRET"))

    def push_read(self, *, headers: Mapping[str, str], body: bytes, now: datetime, max_age: int) -> PushBatch:
        """`Authorization` carries the subscriber's secret (with or without "Bearer "); the body
        is `{"type": "verification"}`, or one notification or an array of them:
        `{data: {healthUserId, dataType, operation: UPSERT|DELETE, intervals: [...]}}`."""
        secret = self.setting("PUSH_SECRET")
        given = headers.get("authorization", "").strip()
        given = given[7:].strip() if given.lower().startswith("bearer ") else given
        wanted = secret[7:].strip() if secret.lower().startswith("bearer ") else secret
        if not given or not hmac.compare_digest(given.encode("utf-8", "replace"), wanted.encode()):
            raise PushRefused("Authorization does not carry the subscriber's secret")
        try:
            parsed = json.loads(body)
        except ValueError:
            raise PushRefused("the notification is not JSON", 400) from None
        # No delivery id is documented, and a point changed twice is announced twice with the same
        # body (type, operation, interval): each receipt is its own delivery. A retry of one
        # answered already costs one more read of the interval (reads are idempotent).
        key = hashlib.sha256(body + b"@" + now.isoformat().encode()).hexdigest()
        if isinstance(parsed, dict) and parsed.get("type") == "verification":
            return PushBatch([], key, verification=True)
        items = parsed if isinstance(parsed, list) else [parsed]
        notices: list[Notice] = []
        for item in items[:MAX_NOTIFIED]:
            data = item.get("data", item) if isinstance(item, dict) else None
            user, kind = (data.get(k) if isinstance(data, dict) else None for k in ("healthUserId", "dataType"))
            if not isinstance(data, dict) or not isinstance(user, str) or not isinstance(kind, str) or not user:
                raise PushRefused("a notification lacks data.healthUserId or data.dataType", 400)
            operation = "delete" if data.get("operation") == "DELETE" else "update"
            for span in _notified_spans(data.get("intervals"), now):
                notices.append(Notice(user, Change(kind, span, operation)))
        return PushBatch(notices, key)

    def fetch_changed(self, ctx: SyncContext, change: Change) -> Iterator[RawPage]:
        """The notified data type over the notified interval, read as a sync reads a slice (so
        what is gone from it goes here too). Daily types and totals: the civil days it spans,
        and one more each side."""
        start, end = (_parse_time(part, "interval") for part in change.object_id.split("/"))
        stream = STREAMS_BY_TYPE.get(change.kind)
        if stream is None and change.kind not in dict(ROLLUPS):
            return
        if stream is not None and stream.kind != "daily":
            yield from self._slice(ctx, stream, start, max(end, start + timedelta(seconds=1)), {})
            return
        zone = self._zone(ctx)
        first = (start - MAX_OFFSET).date() - timedelta(days=1)
        stop = min((end + MAX_OFFSET).date() + timedelta(days=2), zone.today(ctx.now) + timedelta(days=1))
        for low, high in _day_slices(first, stop - timedelta(days=1), ROLLUP_DAYS):
            if stream is not None:
                yield self._days_of(ctx, stream, zone, low, high, None)
            else:
                yield self._totals_of(ctx, zone, low, high, None)

    def _since(self, ctx: SyncContext, stream: Stream) -> datetime:
        through = ctx.cursor.get(stream.data_type)
        if isinstance(through, str):
            try:
                return _parse_time(through, "cursor") - timedelta(days=self._days("LOOKBACK_DAYS", self.lookback_days))
            except Malformed:
                log.warning("fitbit connection %s: unreadable cursor for %s", ctx.connection_id, stream.data_type)
        return ctx.now - timedelta(days=self._days("HISTORY_DAYS", self.history_days))

    def _since_day(self, ctx: SyncContext, key: str, zone: UserZone) -> date:
        through = ctx.cursor.get(key)
        if isinstance(through, str):
            try:
                return date.fromisoformat(through) - timedelta(days=self._days("LOOKBACK_DAYS", self.lookback_days))
            except ValueError:
                log.warning("fitbit connection %s: unreadable cursor for %s", ctx.connection_id, key)
        return zone.today(ctx.now) - timedelta(days=self._days("HISTORY_DAYS", self.history_days))

    def _days(self, key: str, default: int) -> int:
        """SOURCE_FITBIT_HISTORY_DAYS (depth of the first sync), SOURCE_FITBIT_LOOKBACK_DAYS (how far
        an incremental sync re-reads, to see late uploads, edits and deletions)."""
        return self.int_setting(key, default)

    def _zone(self, ctx: SyncContext) -> UserZone:
        """The user's zone from their settings (IANA `timeZone`, else the current `utcOffset`),
        to place a civil day on the time line. Without the settings scope, or if Google refuses
        the settings, days are placed in UTC: the records keep their day, only the instant of
        their midnight is approximate."""
        cached = self._zone_of_run
        if cached is not None and cached[0] == ctx.connection_id and abs(ctx.now - cached[1]) < timedelta(hours=1):
            return cached[2]  # read once a run (each collection has its own context), not once a collection
        granted = _granted(ctx.credentials.get("scope"))
        if granted and SETTINGS not in granted:
            return UserZone(None, 0)
        try:
            body = ctx.http.get_json(f"{self.api_url}/v4/users/me/settings", headers=self.auth_headers(ctx.credentials))
        except PermanentError as exc:
            log.info("fitbit connection %s: settings unavailable (%s), days placed in UTC", ctx.connection_id, exc)
            zone = UserZone(None, 0)
        else:
            zone = UserZone.of(body)
        self._zone_of_run = (ctx.connection_id, ctx.now, zone)
        return zone

    def _reconcile(self, ctx: SyncContext, stream: Stream, params: dict[str, str]) -> Iterator[list[Any]]:
        """`dataPoints:reconcile`, page by page until `nextPageToken` is empty or absent."""
        url = f"{self.api_url}/v4/users/me/dataTypes/{stream.data_type}/dataPoints:reconcile"

        def page(token: str | None) -> tuple[list[Any], str]:
            query = {**params, "pageToken": token} if token else params
            body = ctx.http.get_json(url, params=query, headers=self.auth_headers(ctx.credentials))
            return _page_reply(body, "dataPoints")

        return _token_pages(page, stream.data_type)

    def _daily_rollup(self, ctx: SyncContext, data_type: str, first: date, stop: date) -> Iterator[Any]:
        """`dataPoints:dailyRollUp` over the civil days [first, stop), one window per day."""
        url = f"{self.api_url}/v4/users/me/dataTypes/{data_type}/dataPoints:dailyRollUp"
        request: dict[str, Any] = {
            "range": {"start": {"date": _date_object(first)}, "end": {"date": _date_object(stop)}},
            "windowSizeDays": 1,
        }

        def page(token: str | None) -> tuple[list[Any], str]:
            body = {**request, "pageToken": token} if token else request
            response = ctx.http.request(
                "POST", url, json=body, headers=self.auth_headers(ctx.credentials), inspect=decode_json
            )
            return _page_reply(response.json(), "rollupDataPoints")

        for rows in _token_pages(page, f"the {data_type} daily roll-up"):
            yield from rows

    # --- normalizing ---------------------------------------------------------------------
    def normalize(self, page: RawPage, ctx: SyncContext) -> list[Record]:
        if page.type == DAILY_TOTALS:
            return _daily_totals(page)
        stream = STREAMS_BY_TYPE[page.type]
        height_mm = _known_height(ctx.cursor)
        records: list[Record] = []
        for point in page.payload["dataPoints"]:
            try:
                records.extend(NORMALIZERS[stream.kind](stream, point, height_mm, page.context))
            except Malformed as exc:
                log.warning("fitbit connection %s: skipped a %s point: %s", ctx.connection_id, stream.data_type, exc)
                page.skipped(str(exc), type=stream.record_type)
        return records


# --- the user's zone -------------------------------------------------------------------------


@dataclass(frozen=True)
class UserZone:
    zone: ZoneInfo | None
    offset_minutes: int  # used when there is no IANA zone

    @classmethod
    def of(cls, settings: Any) -> UserZone:
        if not isinstance(settings, dict):
            return cls(None, 0)
        name = settings.get("timeZone")
        if isinstance(name, str) and name:
            try:
                return cls(ZoneInfo(name), 0)
            except (ZoneInfoNotFoundError, ValueError):
                log.info("fitbit: unknown time zone in the user's settings")
        try:
            return cls(None, _offset_minutes(settings.get("utcOffset"), "settings.utcOffset"))
        except Malformed:
            return cls(None, 0)

    @classmethod
    def from_context(cls, context: dict[str, Any]) -> UserZone:
        name = context.get("time_zone")
        offset = context.get("utc_offset_minutes")
        try:
            zone = ZoneInfo(name) if isinstance(name, str) and name else None
        except (ZoneInfoNotFoundError, ValueError):
            zone = None
        return cls(zone, offset if isinstance(offset, int) else 0)

    def as_context(self) -> dict[str, Any]:
        return {"time_zone": self.zone.key if self.zone else "", "utc_offset_minutes": self.offset_minutes}

    def midnight(self, day: date) -> tuple[datetime, int]:
        """The local midnight that starts `day`, as a UTC instant, and the offset then (minutes)."""
        if self.zone is not None:
            local = datetime.combine(day, time(), tzinfo=self.zone)
            offset = local.utcoffset() or timedelta()
            return local.astimezone(UTC), round(offset.total_seconds() / 60)
        start = datetime.combine(day, time(), tzinfo=UTC) - timedelta(minutes=self.offset_minutes)
        return start, self.offset_minutes

    def today(self, now: datetime) -> date:
        if self.zone is not None:
            return now.astimezone(self.zone).date()
        return (now.astimezone(UTC) + timedelta(minutes=self.offset_minutes)).date()


# --- the wire format ---------------------------------------------------------------------


def _token_reply(response: requests.Response) -> None:
    raise_for_token_status(response, "Google")
    if response.status_code >= 400:
        # RFC 6749: invalid_grant is a dead or revoked token (reconnect); never echo the body.
        raise RefreshRefused(f"Google refused the grant ({oauth_error_code(response)})")


def _granted(scope: Any) -> set[str]:
    """The granted scopes, stored as oauthlib left them (a list) or as sent (space-separated)."""
    if isinstance(scope, list | tuple):
        return {str(s) for s in scope}
    return set(str(scope or "").split())


def _token_pages(page: Callable[[str | None], tuple[list[Any], str]], what: str) -> Iterator[list[Any]]:
    """Every page of a paged answer: `page(token)` returns a page's items and the next token
    (empty at the end). A token seen before would loop forever: a transient error instead."""
    seen: set[str] = set()
    token: str | None = None
    while True:
        items, token = page(token)
        yield items
        if not token:
            return
        if token in seen:
            raise TransientError(f"Google Health repeated a page token for {what}")
        seen.add(token)


def _page_reply(body: Any, key: str) -> tuple[list[Any], str]:
    """`{<key>[], nextPageToken}`; both may be absent (proto3 omits empty fields: a last page
    can be `{}`) and the token may be `""` (documented example)."""
    if not isinstance(body, dict):
        raise TransientError("Google Health returned a reply that is not an object")
    items = body.get(key) or []
    token = body.get("nextPageToken") or ""
    if not isinstance(items, list) or not isinstance(token, str):
        raise TransientError("Google Health returned a reply of an unexpected shape")
    return items, token


def _filter(stream: Stream, start: datetime, end: datetime) -> str:
    if stream.kind == "session":
        # Sessions filter on civil (local) time only: widen to cover every offset; the window
        # stays the UTC one, so it never claims more than was fetched.
        low, high = _civil(start - MAX_OFFSET), _civil(end + MAX_OFFSET)
    elif stream.kind == "sleep":
        # Sleeps filter on their end (wake) time: a night begun in the window may end a day later.
        low, high = _rfc3339(start), _rfc3339(end + timedelta(days=1))
    else:
        low, high = _rfc3339(start), _rfc3339(end)
    return f'{stream.member} >= "{low}" AND {stream.member} < "{high}"'


def _notified_spans(intervals: Any, now: datetime) -> list[str]:
    """ "start/end" (RFC 3339) of each notified interval: `physicalTimeInterval`, else the civil
    ones widened by the widest offsets; none readable: the last two days. Capped at a month."""
    spans: list[str] = []
    for interval in intervals if isinstance(intervals, list) else []:
        physical = interval.get("physicalTimeInterval") if isinstance(interval, dict) else None
        civil = interval.get("civilIso8601TimeInterval") if isinstance(interval, dict) else None
        try:
            if isinstance(physical, dict):
                start, end = (
                    _parse_time(physical.get("startTime"), "start"),
                    _parse_time(physical.get("endTime"), "end"),
                )
            elif isinstance(civil, dict):
                low = datetime.fromisoformat(str(civil.get("startTime"))[:19]).replace(tzinfo=UTC)
                high = datetime.fromisoformat(str(civil.get("endTime"))[:19]).replace(tzinfo=UTC)
                start, end = low - MAX_OFFSET, high + MAX_OFFSET
            else:
                continue
        except (Malformed, ValueError):
            continue
        start = max(start, min(end, now) - NOTIFIED_SPAN_MAX)
        spans.append(f"{_rfc3339(start)}/{_rfc3339(max(start, end))}")
    return spans or [f"{_rfc3339(now - timedelta(days=2))}/{_rfc3339(now)}"]


def _with_last(pages: Iterator[list[Any]]) -> Iterator[tuple[list[Any], bool]]:
    """Each page, and whether it is the last, without reading further ahead than one page."""
    previous: list[Any] | None = None
    for page in pages:
        if previous is not None:
            yield previous, False
        previous = page
    if previous is not None:
        yield previous, True


def _slices(start: datetime, end: datetime, days: int) -> Iterator[tuple[datetime, datetime]]:
    while start < end:
        stop = min(end, start + timedelta(days=days))
        if end - stop < timedelta(minutes=5):  # no sliver of a slice at the end
            stop = end
        yield start, stop
        start = stop


def _day_slices(first: date, today: date, days: int) -> Iterator[tuple[date, date]]:
    """[first, stop) civil-day slices through today."""
    while first <= today:
        stop = min(today + timedelta(days=1), first + timedelta(days=days))
        yield first, stop
        first = stop


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _civil(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")


def _date_object(day: date) -> dict[str, int]:
    return {"year": day.year, "month": day.month, "day": day.day}


_FRACTION = re.compile(r"\.(\d{1,9})")


def _parse_time(raw: Any, name: str) -> datetime:
    """An RFC 3339 instant (`Z` or an offset; fractions up to nanoseconds)."""
    if raw is None:
        raise Malformed(f"{name} is missing")
    if not isinstance(raw, str):
        raise Malformed(f"{name} is not an RFC 3339 timestamp")
    text = _FRACTION.sub(lambda m: "." + m.group(1)[:6].ljust(6, "0"), raw.replace("Z", "+00:00"), count=1)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise Malformed(f"{name} is not an RFC 3339 timestamp") from None
    if moment.tzinfo is None:
        raise Malformed(f"{name} has no UTC offset")
    return moment.astimezone(UTC)


def _offset_minutes(raw: Any, name: str) -> int:
    """A proto3 duration such as `"-25200s"` as minutes east of UTC; absent means UTC (old
    points may lack their offsets, which then "default to zero", discovery)."""
    if raw is None:
        return 0
    match = re.fullmatch(r"(-?\d+)(?:\.\d+)?s", str(raw))
    if not match or abs(int(match.group(1))) > 18 * 3600:
        raise Malformed(f"{name} is not a UTC offset")
    return int(match.group(1)) // 60


def _seconds(raw: Any, name: str) -> float | None:
    """A proto3 duration (`"1303s"`, `"0.5s"`) in seconds."""
    if raw is None:
        return None
    match = re.fullmatch(r"(\d+(?:\.\d+)?)s", str(raw))
    if not match:
        raise Malformed(f"{name} is not a duration")
    return float(match.group(1))


def _number(raw: Any, name: str) -> float | None:
    """proto3 JSON: int64 fields arrive as strings, doubles as numbers; both are accepted."""
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        raise Malformed(f"{name} is not a number")
    try:
        return float(raw)
    except ValueError:
        raise Malformed(f"{name} is not a number") from None


def _required(raw: Any, name: str) -> float:
    value = _number(raw, name)
    if value is None:
        raise Malformed(f"{name} is missing")
    return value


def _object(raw: Any, name: str, *, optional: bool = False) -> dict[str, Any]:
    if raw is None and optional:
        return {}
    if not isinstance(raw, dict):
        raise Malformed(f"{name} is {'not an object' if raw is not None else 'missing'}")
    return raw


def _body(stream: Stream, point: Any) -> dict[str, Any]:
    if not isinstance(point, dict):
        raise Malformed("a data point is not an object")
    return _object(point.get(stream.key), stream.key)


def _point_id(point: dict[str, Any]) -> str:
    """The name of an identifiable point: `name` (list) or `dataPointName` (reconcile)."""
    name = point.get("name") or point.get("dataPointName")
    if not isinstance(name, str) or not name:
        raise Malformed("dataPointName is missing")
    return name.rsplit("/", 1)[-1]


def _civil_date(raw: Any, name: str) -> date:
    """A google.type.Date `{year, month, day}` (ints; strings accepted)."""
    parts = _object(raw, name)
    try:
        return date(int(parts["year"]), int(parts["month"]), int(parts["day"]))
    except (KeyError, TypeError, ValueError):
        raise Malformed(f"{name} is not a date") from None


def _known_height(cursor: dict[str, Any]) -> float | None:
    value = cursor.get("height_mm")
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) and value > 0 else None


def _latest_height(points: list[Any]) -> float | None:
    latest: tuple[datetime, float] | None = None
    for point in points:
        try:
            body = _body(STREAMS_BY_TYPE["height"], point)
            at = _parse_time(_object(body.get("sampleTime"), "sampleTime").get("physicalTime"), "physicalTime")
            millimeters = _required(body.get("heightMillimeters"), "heightMillimeters")
        except Malformed:
            continue
        if latest is None or at > latest[0]:
            latest = (at, millimeters)
    return latest[1] if latest else None


# (value field, unit, scale, digits) per sample type; the API's units are fixed and metric.
SAMPLE_VALUES: dict[str, tuple[str, str, float, int]] = {
    "height": ("heightMillimeters", "cm", 0.1, 1),
    "weight": ("weightGrams", "kg", 0.001, 3),
    "body-fat": ("percentage", "%", 1.0, 2),
    "blood-glucose": ("bloodGlucoseMilligramsPerDeciliter", "mg/dL", 1.0, 1),
    "heart-rate": ("beatsPerMinute", "bpm", 1.0, 0),
}


def _sample(stream: Stream, point: Any, height_mm: float | None, context: dict[str, Any]) -> list[Record]:
    body = _body(stream, point)
    sample_time = _object(body.get("sampleTime"), f"{stream.key}.sampleTime")
    at = _parse_time(sample_time.get("physicalTime"), f"{stream.key}.sampleTime.physicalTime")
    tz = _offset_minutes(sample_time.get("utcOffset"), f"{stream.key}.sampleTime.utcOffset")
    field, unit, scale, digits = SAMPLE_VALUES[stream.data_type]
    raw = _required(body.get(field), f"{stream.key}.{field}")
    value: float = round(raw * scale, digits) if digits else round(raw * scale)
    # Heart-rate points are not identifiable; in the one reconciled stream their time is unique.
    external_id = _rfc3339(at) if stream.data_type == "heart-rate" else _point_id(point)
    records = [
        Record(
            type=stream.record_type,
            external_id=external_id,
            start_time=at,
            tz_offset=tz,
            value=value,
            fields={"value": value, "unit": unit},
            source_data=point,
        )
    ]
    if stream.data_type == "weight" and height_mm:
        bmi = round(raw / 1000 / (height_mm / 1000) ** 2, 1)
        records.append(
            Record(
                type="bmi",
                external_id=external_id,
                start_time=at,
                tz_offset=tz,
                value=bmi,
                fields={"value": bmi, "unit": "kg/m2"},
                source_data=point,
            )
        )
    return records


@dataclass(frozen=True)
class DailyValue:
    """The value of a daily type: its field, unit and the decimals kept (0: an integer)."""

    field: str
    unit: str
    digits: int = 2


# The API's units are fixed and metric (discovery field descriptions).
DAILY_VALUES: dict[str, DailyValue] = {
    "daily-oxygen-saturation": DailyValue("averagePercentage", "%"),
    "daily-resting-heart-rate": DailyValue("beatsPerMinute", "bpm", 0),
    "daily-heart-rate-variability": DailyValue("averageHeartRateVariabilityMilliseconds", "ms"),
    "daily-respiratory-rate": DailyValue("breathsPerMinute", "breaths/min"),
    "daily-sleep-temperature-derivations": DailyValue("nightlyTemperatureCelsius", "°C"),
    "daily-vo2-max": DailyValue("vo2Max", "mL/kg/min"),
}


def _daily_reading(stream: Stream, point: Any, height_mm: float | None, context: dict[str, Any]) -> list[Record]:
    """A daily type: one value per civil `date` (in the user's zone). The nightly ones (SpO2,
    HRV, breathing rate, skin temperature) are dated on the day their night ends, as Fitbit's
    own daily values were; Google gives a date, not a time, so each is placed at its date's
    local midnight and filed under that date (`day`)."""
    body = _body(stream, point)
    day = _civil_date(body.get("date"), f"{stream.key}.date")
    spec = DAILY_VALUES[stream.data_type]
    name = f"{stream.key}.{spec.field}"
    value: float | None
    if stream.data_type == "daily-sleep-temperature-derivations":
        # The night's mean WRIST SKIN temperature: some degrees below the body's, so no body
        # temperature (`value` None). What it tells is its difference from the user's
        # baseline (the median of the last 30 nights).
        nightly = _required(body.get(spec.field), name)
        baseline = _number(body.get("baselineTemperatureCelsius"), f"{stream.key}.baselineTemperatureCelsius")
        if baseline is None:
            # Not unreadable: the baseline is optional (a new wearer has no 30 nights yet),
            # and without it the night says nothing this type can hold.
            return []
        value = None
        fields: dict[str, Any] = {"value": None, "unit": spec.unit, "deviation": round(nightly - baseline, 2)}
    else:
        if stream.data_type == "daily-heart-rate-variability" and body.get(spec.field) is None:
            # Not unreadable: the discovery lets a day carry only entropy, a non-REM heart
            # rate or the deep-sleep RMSSD ("at least one of ... must be set"). Without the
            # night's average RMSSD it is no heart_rate_variability reading.
            return []
        raw = _required(body.get(spec.field), name)
        value = round(raw, spec.digits) if spec.digits else round(raw)
        fields = {"value": value, "unit": spec.unit}
    start, offset = UserZone.from_context(context).midnight(day)
    return [
        Record(
            type=stream.record_type,
            external_id=day.isoformat(),
            start_time=start,
            tz_offset=offset,
            value=value,
            fields=fields,
            source_data=point,
            day=day,
        )
    ]


def _interval(body: dict[str, Any], key: str) -> tuple[datetime, datetime, int, int]:
    interval = _object(body.get("interval"), f"{key}.interval")
    start = _parse_time(interval.get("startTime"), f"{key}.interval.startTime")
    end = _parse_time(interval.get("endTime"), f"{key}.interval.endTime")
    if end < start:
        raise Malformed(f"{key}.interval ends before it starts")
    start_tz = _offset_minutes(interval.get("startUtcOffset"), f"{key}.interval.startUtcOffset")
    end_tz = _offset_minutes(
        interval.get("endUtcOffset", interval.get("startUtcOffset")), f"{key}.interval.endUtcOffset"
    )
    return start, end, start_tz, end_tz


def _session(stream: Stream, point: Any, height_mm: float | None, context: dict[str, Any]) -> list[Record]:
    body = _body(stream, point)
    start, end, tz, _ = _interval(body, stream.key)
    summary = _object(body.get("metricsSummary"), "exercise.metricsSummary", optional=True)
    active = _seconds(body.get("activeDuration"), "exercise.activeDuration")
    distance_mm = _number(summary.get("distanceMillimeters"), "metricsSummary.distanceMillimeters")
    steps = _number(summary.get("steps"), "metricsSummary.steps")
    kind = body.get("exerciseType")
    known = isinstance(kind, str) and kind and kind != "EXERCISE_TYPE_UNSPECIFIED"
    fields = {
        "type": str(kind).lower() if known else "other",
        "duration": round(active if active is not None else (end - start).total_seconds()),
        "distance": round(distance_mm / 1000, 1) if distance_mm is not None else None,
        "steps": round(steps) if steps is not None else None,
        "calories": _number(summary.get("caloriesKcal"), "metricsSummary.caloriesKcal"),
    }
    return [
        Record(
            type=stream.record_type,
            external_id=_point_id(point),
            start_time=start,
            end_time=end,
            tz_offset=tz,
            fields=fields,
            source_data=point,
        )
    ]


def _sleep(stream: Stream, point: Any, height_mm: float | None, context: dict[str, Any]) -> list[Record]:
    body = _body(stream, point)
    start, end, tz, end_tz = _interval(body, stream.key)
    summary = _object(body.get("summary"), "sleep.summary", optional=True)
    metadata = _object(body.get("metadata"), "sleep.metadata", optional=True)
    in_bed = _number(summary.get("minutesInSleepPeriod"), "summary.minutesInSleepPeriod")
    in_bed = in_bed if in_bed is not None else round((end - start).total_seconds() / 60)
    asleep = _number(summary.get("minutesAsleep"), "summary.minutesAsleep")
    awake = _number(summary.get("minutesAwake"), "summary.minutesAwake")
    main = metadata.get("mainSleep")
    # A sleep belongs to the day its user woke up: the civil date of its end, in the offset
    # at its end (sleeps are filtered and keyed by their end time).
    day = (end + timedelta(minutes=end_tz)).date()
    fields = {
        "day": day.isoformat(),
        "mainSleep": bool(main) if main is not None else not bool(metadata.get("nap")),
        "timeAsleep": round(asleep) if asleep is not None else None,
        "timeAwake": round(awake) if awake is not None else None,
        "timeInBed": round(in_bed),
        "efficiency": round(100 * asleep / in_bed) if asleep is not None and in_bed else None,
        "numberOfWakeups": _wakeups(summary),
        **_stage_minutes(summary),
    }
    return [
        Record(
            type=stream.record_type,
            external_id=_point_id(point),
            start_time=start,
            end_time=end,
            tz_offset=tz,
            fields=fields,
            source_data=point,
            day=day,
        )
    ]


def _stage_entries(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """`summary.stagesSummary` by stage type. A reconciled sleep may list it twice: the first
    entry of each type is the one."""
    stages = summary.get("stagesSummary")
    entries: dict[str, dict[str, Any]] = {}
    for stage in stages if isinstance(stages, list) else []:
        if isinstance(stage, dict) and isinstance(stage.get("type"), str):
            entries.setdefault(stage["type"], stage)
    return entries


def _wakeups(summary: dict[str, Any]) -> int | None:
    """The AWAKE segments."""
    awake = _stage_entries(summary).get("AWAKE")
    count = _number(awake.get("count"), "stagesSummary.count") if awake else None
    return round(count) if count is not None else None


# Sleep stage (discovery SleepStageType) -> the field of its minutes.
STAGE_FIELDS = {"DEEP": "deepSleep", "LIGHT": "lightSleep", "REM": "remSleep"}


def _stage_minutes(summary: dict[str, Any]) -> dict[str, int | None]:
    """Minutes in deep, light and REM sleep from `summary.stagesSummary[].minutes`. A stage
    the summary has no entry for is unknown (None): a CLASSIC sleep has only AWAKE, RESTLESS
    and ASLEEP. An entry without `minutes` had none (proto3 leaves zeros out)."""
    entries = _stage_entries(summary)
    found: dict[str, int | None] = {}
    for stage, name in STAGE_FIELDS.items():
        entry = entries.get(stage)
        minutes = _number(entry.get("minutes"), "stagesSummary.minutes") if entry is not None else None
        found[name] = None if entry is None else round(minutes or 0)
    return found


NORMALIZERS: dict[str, Callable[[Stream, Any, float | None, dict[str, Any]], list[Record]]] = {
    "sample": _sample,
    "daily": _daily_reading,
    "session": _session,
    "sleep": _sleep,
}


# --- daily totals ----------------------------------------------------------------------------


def _daily_totals(page: RawPage) -> list[Record]:
    """One `activity_summaries` record per civil day any roll-up answered for."""
    zone = UserZone.from_context(page.context)
    days: dict[date, dict[str, Any]] = {}
    for data_type, key in ROLLUPS:
        for row in page.payload["rollups"].get(data_type, []):
            try:
                start = _object(row, "rollupDataPoint").get("civilStartTime")
                day = _civil_date(_object(start, "civilStartTime").get("date"), "civilStartTime.date")
            except Malformed as exc:
                page.skipped(f"{data_type} roll-up: {exc}", type="activity_summaries")
                continue
            days.setdefault(day, {})[data_type] = row.get(key)
    records = []
    for day, values in sorted(days.items()):
        try:
            fields = _day_fields(day, values)
        except Malformed as exc:
            page.skipped(f"daily totals of a day: {exc}", type="activity_summaries")
            continue
        start, offset = zone.midnight(day)
        records.append(
            Record(
                type="activity_summaries",
                external_id=day.isoformat(),
                start_time=start,
                tz_offset=offset,
                end_time=start + timedelta(days=1),
                fields=fields,
                source_data={data_type: values.get(data_type) for data_type, _ in ROLLUPS},
                day=day,
            )
        )
    return records


def _day_fields(day: date, values: dict[str, Any]) -> dict[str, Any]:
    steps = _number(_object(values.get("steps"), "steps", optional=True).get("countSum"), "steps.countSum")
    distance = _number(
        _object(values.get("distance"), "distance", optional=True).get("millimetersSum"), "distance.millimetersSum"
    )
    total = _number(
        _object(values.get("total-calories"), "totalCalories", optional=True).get("kcalSum"), "totalCalories.kcalSum"
    )
    active_kcal = _number(
        _object(values.get("active-energy-burned"), "activeEnergyBurned", optional=True).get("kcalSum"),
        "activeEnergyBurned.kcalSum",
    )
    sedentary = _seconds(
        _object(values.get("sedentary-period"), "sedentaryPeriod", optional=True).get("durationSum"),
        "sedentaryPeriod.durationSum",
    )
    levels = _active_minutes(values.get("active-minutes"))
    return {
        "date": day.isoformat(),
        "steps": round(steps) if steps is not None else None,
        "distance": round(distance / 1000, 3) if distance is not None else None,
        "calories": round(total, 1) if total is not None else None,
        "activeCalories": round(active_kcal, 1) if active_kcal is not None else None,
        "duration": sum(levels.values()) if levels is not None else None,
        "sedentary": round(sedentary) if sedentary is not None else None,
        "light": levels["LIGHT"] if levels is not None else None,
        "moderate": levels["MODERATE"] if levels is not None else None,
        "vigorous": levels["VIGOROUS"] if levels is not None else None,
    }


def _active_minutes(value: Any) -> dict[str, int] | None:
    """activeMinutes.activeMinutesRollupByActivityLevel[{activityLevel, activeMinutesSum}] as
    seconds per level; a level the day has no entry for had none."""
    if value is None:
        return None
    entries = _object(value, "activeMinutes").get("activeMinutesRollupByActivityLevel") or []
    if not isinstance(entries, list):
        raise Malformed("activeMinutes.activeMinutesRollupByActivityLevel is not a list")
    levels = {"LIGHT": 0, "MODERATE": 0, "VIGOROUS": 0}
    for entry in entries:
        entry = _object(entry, "activeMinutesRollupByActivityLevel[]")
        level = entry.get("activityLevel")
        minutes = _number(entry.get("activeMinutesSum"), "activeMinutesSum") or 0
        if level in levels:
            levels[str(level)] += round(minutes * 60)
    return levels
