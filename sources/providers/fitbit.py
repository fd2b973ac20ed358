"""Fitbit, through the Google Health API (v4).

Fitbit's own Web API and OAuth endpoints are switched off in 2026; Fitbit data is now read with
Google OAuth 2.0 from `health.googleapis.com/v4`. Each data type is a collection of data points
listed newest first, paged with `pageToken`, and filtered by time with an AIP-160 filter whose
member depends on the kind of record (sample, session, sleep).

Sync shape: per data type, time slices from the type's cursor (or the history depth) to now,
oldest slice first. A slice of an identifiable type (weight, exercise, sleep, ...) is gathered
into one page with a `Window`, so a point deleted at the provider disappears here on re-pull;
heart-rate samples have no ids and come in large numbers, so each API page is stored as it comes.
A type's cursor moves only when a slice is complete (its pages arrive newest first), and each
incremental sync re-reads a week back (configurable), since points are edited and uploaded late.

Units stored: weight kg, height cm, body fat and SpO2 %, glucose mg/dL, heart rate bpm, distance
m, durations s (sleep: minutes). BMI is derived from weight and the latest known height. Sleep
efficiency is derived (asleep / in bed), since the Health API no longer provides one.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import requests

from ..base import (
    AuthorizationFailed,
    Credentials,
    PermanentError,
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


class Malformed(ValueError):
    """A data point that doesn't have the documented shape; it is skipped, with this reason."""


@dataclass(frozen=True)
class Stream:
    data_type: str  # kebab-case id used in URLs
    key: str  # camelCase payload key
    kind: str  # "sample" | "session" | "sleep"
    scope: str
    record_type: str
    slice_days: int
    page_size: int
    windowed: bool = True

    @property
    def member(self) -> str:
        """The filter member by record kind (civil time only, for exercise sessions)."""
        snake = self.data_type.replace("-", "_")
        return {
            "sample": f"{snake}.sample_time.physical_time",
            "session": f"{snake}.interval.civil_start_time",
            "sleep": f"{snake}.interval.end_time",
        }[self.kind]


# Height before weight: BMI needs the latest height.
STREAMS = (
    Stream("height", "height", "sample", METRICS, "height", 90, 10000),
    Stream("weight", "weight", "sample", METRICS, "weight", 90, 10000),
    Stream("body-fat", "bodyFat", "sample", METRICS, "body_fat", 90, 10000),
    Stream("oxygen-saturation", "oxygenSaturation", "sample", METRICS, "blood_oxygen", 90, 10000),
    Stream("blood-glucose", "bloodGlucose", "sample", METRICS, "blood_glucose", 90, 10000),
    Stream("heart-rate", "heartRate", "sample", METRICS, "heart_rate", 7, 10000, windowed=False),
    Stream("exercise", "exercise", "session", ACTIVITY, "activities", 30, 25),
    Stream("sleep", "sleep", "sleep", SLEEP, "sleeps", 30, 25),
)
STREAMS_BY_TYPE = {s.data_type: s for s in STREAMS}


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
    )
    history_days = 365
    sync_interval = 3600
    default_authorize_url = "https://accounts.google.com/o/oauth2/v2/auth"
    default_token_url = "https://oauth2.googleapis.com/token"  # noqa: S105 - a URL, not a secret
    default_api_url = "https://health.googleapis.com"
    scopes = (ACTIVITY, METRICS, SLEEP, PROFILE, SETTINGS)
    supports_pkce = True
    client_auth = "body"
    # offline: a refresh token; consent: a new one again on reconnect.
    extra_authorize_params: ClassVar[dict[str, str]] = {
        "access_type": "offline",
        "prompt": "consent",
        "include_granted_scopes": "true",
    }
    lookback_days = 7

    # --- authorization -------------------------------------------------------------------
    def token_request(self, fields: dict[str, str], http: ProviderHttp) -> dict[str, Any]:
        """POST the token endpoint ourselves: the answer's HTTP status decides between a refusal
        (400/401: RefreshRefused) and a failure to retry (5xx, 429, a malformed body). The
        granted scopes may be fewer than those asked (users can untick them): that is accepted,
        and `fetch` skips the data types not granted."""
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

    # --- fetching ------------------------------------------------------------------------
    def fetch(self, ctx: SyncContext) -> Iterator[RawPage]:
        granted = _granted(ctx.credentials.get("scope"))
        for stream in STREAMS:
            if granted and stream.scope not in granted:
                log.info("fitbit connection %s: %s not granted, skipping", ctx.connection_id, stream.data_type)
                continue
            yield from self._fetch_stream(ctx, stream)

    def _fetch_stream(self, ctx: SyncContext, stream: Stream) -> Iterator[RawPage]:
        for start, end in _slices(self._since(ctx, stream), ctx.now, stream.slice_days):
            cursor = {stream.data_type: _rfc3339(end)}
            if not stream.windowed:
                # Stored page by page; the cursor rides on the slice's last page only.
                for points, last in _with_last(self._list(ctx, stream, start, end)):
                    yield RawPage(
                        type=stream.data_type, payload={"dataPoints": points}, cursor=cursor if last else None
                    )
                continue
            points = [point for page in self._list(ctx, stream, start, end) for point in page]
            page_cursor: dict[str, Any] = dict(cursor)
            if stream.data_type == "height":
                height = _latest_height(points)
                if height is not None:
                    page_cursor["height_mm"] = height
            # BMI is derived from each weight when a height is known: the weights' window then
            # covers their BMIs too (a deleted weight takes its BMI along).
            derived = ("bmi",) if stream.data_type == "weight" and _number(ctx.cursor.get("height_mm")) else ()
            yield RawPage(
                type=stream.data_type,
                payload={"dataPoints": points},
                cursor=page_cursor,
                window=Window(stream.record_type, start, end, also=derived),
            )

    def _since(self, ctx: SyncContext, stream: Stream) -> datetime:
        through = ctx.cursor.get(stream.data_type)
        if isinstance(through, str):
            try:
                return _parse_time(through) - timedelta(days=self._days("LOOKBACK_DAYS", self.lookback_days))
            except Malformed:
                log.warning("fitbit connection %s: unreadable cursor for %s", ctx.connection_id, stream.data_type)
        return ctx.now - timedelta(days=self._days("HISTORY_DAYS", self.history_days))

    def _days(self, key: str, default: int) -> int:
        """SOURCE_FITBIT_HISTORY_DAYS (depth of the first sync), SOURCE_FITBIT_LOOKBACK_DAYS (how far
        an incremental sync re-reads, to see late uploads, edits and deletions)."""
        raw = self.setting(key)
        return int(raw) if raw.isdigit() and int(raw) > 0 else default

    def _list(self, ctx: SyncContext, stream: Stream, start: datetime, end: datetime) -> Iterator[list[Any]]:
        url = f"{self.api_url}/v4/users/me/dataTypes/{stream.data_type}/dataPoints"
        params = {"filter": _filter(stream, start, end), "pageSize": str(stream.page_size)}
        seen_tokens: set[str] = set()
        while True:
            body = ctx.http.get_json(url, params=params, headers=self.auth_headers(ctx.credentials))
            points, next_token = _list_reply(body)
            yield points
            if not next_token:
                return
            if next_token in seen_tokens:
                raise TransientError(f"Google Health repeated a page token for {stream.data_type}")
            seen_tokens.add(next_token)
            params["pageToken"] = next_token

    # --- normalizing ---------------------------------------------------------------------
    def normalize(self, page: RawPage, ctx: SyncContext) -> list[Record]:
        stream = STREAMS_BY_TYPE[page.type]
        records: list[Record] = []
        height_mm = _latest_height(page.payload["dataPoints"]) if stream.data_type == "height" else None
        height_mm = height_mm or _number(ctx.cursor.get("height_mm"))
        for point in page.payload["dataPoints"]:
            try:
                records.extend(NORMALIZERS[stream.kind](stream, point, height_mm))
            except (Malformed, KeyError, TypeError, ValueError) as exc:
                log.warning("fitbit connection %s: skipped a %s point: %s", ctx.connection_id, stream.data_type, exc)
                page.skipped(str(exc))
        return records


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


def _list_reply(body: Any) -> tuple[list[Any], str]:
    """`{dataPoints[], nextPageToken}`; both may be absent (a last page can be `{}`)."""
    if not isinstance(body, dict):
        raise TransientError("Google Health returned a list reply that is not an object")
    points = body.get("dataPoints", [])
    token = body.get("nextPageToken", "")
    if not isinstance(points, list) or not isinstance(token, str):
        raise TransientError("Google Health returned a list reply of an unexpected shape")
    return points, token


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
        yield start, stop
        start = stop


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _civil(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")


_FRACTION = re.compile(r"\.(\d{1,9})")


def _parse_time(raw: Any) -> datetime:
    if not isinstance(raw, str):
        raise Malformed(f"not a timestamp: {raw!r}")
    text = _FRACTION.sub(lambda m: "." + m.group(1)[:6].ljust(6, "0"), raw.replace("Z", "+00:00"), count=1)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise Malformed(f"not a timestamp: {raw!r}") from None
    if moment.tzinfo is None:
        raise Malformed(f"timestamp without offset: {raw!r}")
    return moment.astimezone(UTC)


def _offset_minutes(raw: Any) -> int:
    """A proto3 duration such as `"-25200s"` as minutes east of UTC; absent means UTC."""
    if raw is None:
        return 0
    match = re.fullmatch(r"(-?\d+)(?:\.\d+)?s", str(raw))
    if not match or abs(int(match.group(1))) > 18 * 3600:
        raise Malformed(f"not a UTC offset: {raw!r}")
    return int(match.group(1)) // 60


def _seconds(raw: Any) -> float | None:
    if raw is None:
        return None
    match = re.fullmatch(r"(\d+(?:\.\d+)?)s", str(raw))
    if not match:
        raise Malformed(f"not a duration: {raw!r}")
    return float(match.group(1))


def _number(raw: Any) -> float | None:
    """proto3 JSON: int64 fields arrive as strings, doubles as numbers."""
    if raw is None or isinstance(raw, bool):
        return None
    try:
        return float(raw)
    except (TypeError, ValueError):
        raise Malformed(f"not a number: {raw!r}") from None


def _required(raw: Any, name: str) -> float:
    value = _number(raw)
    if value is None:
        raise Malformed(f"{name} is missing")
    return value


def _body(stream: Stream, point: Any) -> dict[str, Any]:
    if not isinstance(point, dict) or not isinstance(point.get(stream.key), dict):
        raise Malformed(f"no {stream.key!r} object")
    body: dict[str, Any] = point[stream.key]
    return body


def _point_id(point: dict[str, Any]) -> str:
    name = point.get("name") or point.get("dataPointName")
    if not isinstance(name, str) or not name:
        raise Malformed("no name")
    return name.rsplit("/", 1)[-1]


def _latest_height(points: list[Any]) -> float | None:
    latest: tuple[datetime, float] | None = None
    for point in points:
        try:
            body = _body(STREAMS_BY_TYPE["height"], point)
            at = _parse_time(body["sampleTime"]["physicalTime"])
            millimeters = _required(body.get("heightMillimeters"), "heightMillimeters")
        except (Malformed, KeyError, TypeError):
            continue
        if latest is None or at > latest[0]:
            latest = (at, millimeters)
    return latest[1] if latest else None


# (value field, unit, scale) per sample type; the API's units are fixed and metric.
SAMPLE_VALUES: dict[str, tuple[str, str, float, int]] = {
    "height": ("heightMillimeters", "cm", 0.1, 1),
    "weight": ("weightGrams", "kg", 0.001, 3),
    "body-fat": ("percentage", "%", 1.0, 2),
    "oxygen-saturation": ("percentage", "%", 1.0, 2),
    "blood-glucose": ("bloodGlucoseMilligramsPerDeciliter", "mg/dL", 1.0, 1),
    "heart-rate": ("beatsPerMinute", "bpm", 1.0, 0),
}


def _sample(stream: Stream, point: Any, height_mm: float | None) -> list[Record]:
    body = _body(stream, point)
    sample_time = body.get("sampleTime")
    if not isinstance(sample_time, dict):
        raise Malformed("no sampleTime")
    at = _parse_time(sample_time.get("physicalTime"))
    tz = _offset_minutes(sample_time.get("utcOffset"))
    field, unit, scale, digits = SAMPLE_VALUES[stream.data_type]
    raw = _required(body.get(field), field)
    value: float = round(raw * scale, digits) if digits else round(raw * scale)
    # Heart-rate points have no name.
    external_id = _sample_key(point, at) if stream.data_type == "heart-rate" else _point_id(point)
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


def _sample_key(point: dict[str, Any], at: datetime) -> str:
    """Heart-rate points have no name: key them on time and data source."""
    source = point.get("dataSource") if isinstance(point.get("dataSource"), dict) else {}
    assert isinstance(source, dict)
    device = source.get("device") if isinstance(source.get("device"), dict) else {}
    assert isinstance(device, dict)
    parts = (_rfc3339(at), str(source.get("platform", "")), str(device.get("displayName", "")))
    return "/".join(parts)[:255]


def _interval(body: dict[str, Any]) -> tuple[datetime, datetime, int]:
    interval = body.get("interval")
    if not isinstance(interval, dict):
        raise Malformed("no interval")
    start, end = _parse_time(interval.get("startTime")), _parse_time(interval.get("endTime"))
    if end < start:
        raise Malformed("interval ends before it starts")
    return start, end, _offset_minutes(interval.get("startUtcOffset"))


def _session(stream: Stream, point: Any, height_mm: float | None) -> list[Record]:
    body = _body(stream, point)
    start, end, tz = _interval(body)
    summary = body.get("metricsSummary") or {}
    if not isinstance(summary, dict):
        raise Malformed("metricsSummary is not an object")
    active = _seconds(body.get("activeDuration"))
    distance_mm = _number(summary.get("distanceMillimeters"))
    steps = _number(summary.get("steps"))
    kind = body.get("exerciseType")
    fields = {
        "type": str(kind).lower() if isinstance(kind, str) and kind else "other",
        "duration": round(active if active is not None else (end - start).total_seconds()),
        "distance": round(distance_mm / 1000, 1) if distance_mm is not None else None,
        "steps": round(steps) if steps is not None else None,
        "calories": _number(summary.get("caloriesKcal")),
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


def _sleep(stream: Stream, point: Any, height_mm: float | None) -> list[Record]:
    body = _body(stream, point)
    start, end, tz = _interval(body)
    interval = body["interval"]
    end_tz = _offset_minutes(interval.get("endUtcOffset", interval.get("startUtcOffset")))
    summary = body.get("summary") or {}
    metadata = body.get("metadata") or {}
    if not isinstance(summary, dict) or not isinstance(metadata, dict):
        raise Malformed("summary or metadata is not an object")
    in_bed = _number(summary.get("minutesInSleepPeriod"))
    in_bed = in_bed if in_bed is not None else round((end - start).total_seconds() / 60)
    asleep = _number(summary.get("minutesAsleep"))
    awake = _number(summary.get("minutesAwake"))
    main = metadata.get("mainSleep")
    fields = {
        # Sleeps belong to the day their user woke up, in the user's local time.
        "day": (end + timedelta(minutes=end_tz)).date().isoformat(),
        "mainSleep": bool(main) if main is not None else not bool(metadata.get("nap")),
        "timeAsleep": round(asleep) if asleep is not None else None,
        "timeAwake": round(awake) if awake is not None else None,
        "timeInBed": round(in_bed),
        "efficiency": round(100 * asleep / in_bed) if asleep is not None and in_bed else None,
        "numberOfWakeups": _wakeups(summary),
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


def _wakeups(summary: dict[str, Any]) -> int | None:
    for stage in summary.get("stagesSummary") or []:
        if isinstance(stage, dict) and stage.get("type") == "AWAKE":
            count = _number(stage.get("count"))
            return round(count) if count is not None else None
    return None


NORMALIZERS: dict[str, Callable[[Stream, Any, float | None], list[Record]]] = {
    "sample": _sample,
    "session": _session,
    "sleep": _sleep,
}
