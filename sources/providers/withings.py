"""Withings: scales, blood pressure monitors, sleep analyzers and watches.

Withings speaks an RPC dialect over HTTP: one URL per service, the verb in `action`, form-encoded
POSTs, and every answer (token calls included) is HTTP 200 with an envelope `{"status", "body"}`
where a non-zero status is the error. The token endpoint is therefore not standard OAuth 2.0:
`token_request` is done here, and each refresh rotates the refresh token.

Sync shape:
- Measures (`/measure getmeas`): date-range slices, oldest first, all pages of a slice gathered,
  and offered once per record type with a `Window`, so a measure group deleted at Withings
  disappears here when its slice is re-read (incremental syncs re-read a week back).
- Workouts (`/v2/measure getworkouts`) and sleep summaries (`/v2/sleep getsummary`): by local
  day on the first sync, then by `lastupdate`, which returns what was created or changed since.
  Their cursor moves only with the last page, so an interrupted sync repeats, never skips.

Units stored: weight kg, height cm, fat %, blood pressure mmHg, heart rate bpm, SpO2 %, BMI
kg/m2 (from weight and the latest height), durations s (sleep: minutes), distance m. Offsets
come from the IANA `timezone` Withings gives with each row, at the row's instant.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import requests

from ..base import (
    PermanentError,
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

log = logging.getLogger(__name__)

# Envelope statuses [Withings API reference; python_withings_api].
AUTH_FAILED = frozenset({100, 101, 102, 200, 401, 214, 277, 2553, 2555})
TOO_MANY_REQUESTS = 601
TRANSIENT = frozenset({522, 524, 2554})

# meastype -> (record type, unit, stored scale); the real value is value * 10^unit.
WEIGHT, HEIGHT, FAT_RATIO, DIASTOLIC, SYSTOLIC, PULSE, SPO2 = 1, 4, 6, 9, 10, 11, 54
MEASTYPES = (WEIGHT, HEIGHT, FAT_RATIO, DIASTOLIC, SYSTOLIC, PULSE, SPO2)
MEASURE_RECORDS = ("weight", "height", "bmi", "body_fat", "blood_pressure", "heart_rate", "blood_oxygen")
WORKOUT_CATEGORIES = {1: "walking", 2: "running", 6: "cycling", 7: "swimming", 16: "weights"}
MEASURE_SLICE_DAYS = 90


class Malformed(ValueError):
    """A row that doesn't have the documented shape; it is skipped, with this reason."""


class WithingsSource(OAuth2CodeSource):
    slug = "withings"
    name = "Withings"
    data_types = (
        "weight",
        "height",
        "bmi",
        "body_fat",
        "blood_pressure",
        "heart_rate",
        "blood_oxygen",
        "activities",
        "sleeps",
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
        user_id = token.get("userid")
        if user_id in (None, ""):
            raise RefreshRefused("the Withings token reply has no userid")
        return str(user_id)

    # --- fetching ------------------------------------------------------------------------
    def fetch(self, ctx: SyncContext) -> Iterator[RawPage]:
        yield from self._fetch_measures(ctx)
        yield from self._fetch_series(ctx, "workouts", "/v2/measure", "getworkouts", WORKOUT_FIELDS)
        yield from self._fetch_series(ctx, "sleep", "/v2/sleep", "getsummary", SLEEP_FIELDS)

    def _days(self, key: str, default: int) -> int:
        """SOURCE_WITHINGS_HISTORY_DAYS (depth of the first sync), SOURCE_WITHINGS_LOOKBACK_DAYS
        (how far an incremental sync re-reads measures, to see edits and deletions)."""
        raw = self.setting(key)
        return int(raw) if raw.isdigit() and int(raw) > 0 else default

    def _history_start(self, ctx: SyncContext) -> datetime:
        return ctx.now - timedelta(days=self._days("HISTORY_DAYS", self.history_days))

    def _fetch_measures(self, ctx: SyncContext) -> Iterator[RawPage]:
        through = ctx.cursor.get("measures_through")
        if isinstance(through, int):
            start = datetime.fromtimestamp(through, UTC) - timedelta(
                days=self._days("LOOKBACK_DAYS", self.lookback_days)
            )
        else:
            start = self._history_start(ctx)
        while start < ctx.now:
            end = min(ctx.now, start + timedelta(days=MEASURE_SLICE_DAYS))
            params = {
                "action": "getmeas",
                "meastypes": ",".join(str(t) for t in MEASTYPES),
                "category": "1",  # real measures, not goals
                "startdate": str(int(start.timestamp())),
                "enddate": str(int(end.timestamp()) - 1),  # inclusive at Withings; windows are half-open
            }
            bodies = list(self._pages(ctx, "/measure", params))
            zones = [b["timezone"] for b in bodies if isinstance(b.get("timezone"), str)]
            payload: dict[str, Any] = {
                "measuregrps": [g for b in bodies for g in _rows(b, "measuregrps")],
                "timezone": zones[0] if zones else "UTC",
            }
            cursor: dict[str, Any] = {"measures_through": int(end.timestamp())}
            height = _latest_height(payload["measuregrps"])
            if height is not None:
                cursor["height_m"] = height
            known_height = height or ctx.cursor.get("height_m")
            for index, kind in enumerate(MEASURE_RECORDS):
                last = index == len(MEASURE_RECORDS) - 1
                # One fetch, one complete window per record type: a vanished group is deleted.
                # Without a known height no BMI can be computed, so none may be taken as deleted.
                complete = kind != "bmi" or bool(known_height)
                yield RawPage(
                    type="measures",
                    payload=payload,
                    cursor=cursor if last else None,
                    window=Window(kind, start, end) if complete else None,
                    context={"record_type": kind},
                )
            start = end

    def _fetch_series(self, ctx: SyncContext, name: str, path: str, action: str, data_fields: str) -> Iterator[RawPage]:
        key = f"{name}_lastupdate"
        started = int(ctx.now.timestamp())
        params = {"action": action, "data_fields": data_fields}
        if isinstance(ctx.cursor.get(key), int):
            params["lastupdate"] = str(ctx.cursor[key])
        else:
            first = self._history_start(ctx).date() - timedelta(days=1)  # rows are keyed by local day
            params["startdateymd"] = first.isoformat()
            params["enddateymd"] = (ctx.now.date() + timedelta(days=1)).isoformat()
        pages = self._pages(ctx, path, params)
        for body, last in _with_last(pages):
            yield RawPage(type=name, payload=body, cursor={key: started} if last else None)

    def _pages(self, ctx: SyncContext, path: str, params: dict[str, str]) -> Iterator[dict[str, Any]]:
        """Every page of one call, following `more` / `offset`."""
        form = dict(params)
        offsets: set[int] = set()
        while True:
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
            if not isinstance(offset, int) or offset in offsets:
                raise TransientError(f"Withings {path} {form['action']} returned a bad offset")
            offsets.add(offset)
            form["offset"] = str(offset)

    # --- normalizing ---------------------------------------------------------------------
    def normalize(self, page: RawPage, ctx: SyncContext) -> list[Record]:
        if page.type == "measures":
            rows, convert = page.payload["measuregrps"], _measure_converter(page, ctx)
        elif page.type == "workouts":
            rows, convert = _series(page.payload), _workout
        else:
            rows, convert = _series(page.payload), _sleep
        records: list[Record] = []
        for row in rows:
            try:
                records.extend(convert(row))
            except (Malformed, KeyError, TypeError, ValueError) as exc:
                log.warning("withings connection %s: skipped a %s row: %s", ctx.connection_id, page.type, exc)
                page.skipped(str(exc))
        return records


WORKOUT_FIELDS = "calories,steps,distance,elevation,hr_average,hr_min,hr_max,intensity,pause_duration"
SLEEP_FIELDS = (
    "total_timeinbed,total_sleep_time,asleepduration,lightsleepduration,deepsleepduration,remsleepduration,"
    "wakeupduration,wakeupcount,sleep_efficiency,sleep_latency,hr_average,sleep_score"
)


# --- envelope statuses -----------------------------------------------------------------------


def _envelope(response: requests.Response) -> tuple[int, str]:
    payload = decode_json(response)
    if not isinstance(payload, dict) or not isinstance(payload.get("status"), int):
        raise TransientError("Withings returned a reply without an envelope status")
    # Withings' own error text names the problem; it never echoes tokens.
    return payload["status"], str(payload.get("error", ""))[:200]


def _token_status(response: requests.Response) -> None:
    status, error = _envelope(response)
    if status == 0:
        return
    if status == TOO_MANY_REQUESTS:
        raise RateLimited("Withings token endpoint: too many requests")
    if status in TRANSIENT:
        raise TransientError(f"Withings token endpoint answered status {status}")
    # 503 "invalid code" / "invalid refresh_token", and the auth-failure family.
    raise RefreshRefused(f"Withings refused the grant (status {status}: {error})")


def _api_status(response: requests.Response) -> None:
    status, error = _envelope(response)
    if status == 0:
        return
    if status in AUTH_FAILED:
        raise TokenRejected(f"Withings rejected the access token (status {status})")
    if status == TOO_MANY_REQUESTS:
        raise RateLimited("Withings: too many requests (status 601)")
    if status in TRANSIENT:
        raise TransientError(f"Withings answered status {status}")
    raise PermanentError(f"Withings answered status {status}: {error}")


def _with_last(pages: Iterator[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], bool]]:
    previous: dict[str, Any] | None = None
    for page in pages:
        if previous is not None:
            yield previous, False
        previous = page
    if previous is not None:
        yield previous, True


# --- rows --------------------------------------------------------------------------------------


def _rows(body: dict[str, Any], key: str) -> list[Any]:
    rows = body.get(key) or []
    if not isinstance(rows, list):
        raise TransientError(f"Withings returned a {key} that is not a list")
    return rows


def _series(body: dict[str, Any]) -> list[Any]:
    return _rows(body, "series")


def _int(raw: Any, name: str) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        raise Malformed(f"{name} is missing")
    try:
        return int(raw)
    except ValueError:
        raise Malformed(f"{name} is not a number: {raw!r}") from None


def _number(raw: Any) -> float | None:
    if raw is None or isinstance(raw, bool):
        return None
    if not isinstance(raw, int | float):
        raise Malformed(f"not a number: {raw!r}")
    return float(raw)


def _instant(raw: Any, name: str) -> datetime:
    return datetime.fromtimestamp(_int(raw, name), UTC)


def _offset(zone: Any, at: datetime) -> int:
    """Minutes east of UTC in the row's IANA zone at that instant (DST included)."""
    try:
        offset = at.astimezone(ZoneInfo(str(zone))).utcoffset()
    except (ZoneInfoNotFoundError, ValueError):
        raise Malformed(f"unknown time zone {zone!r}") from None
    return int(offset.total_seconds() // 60) if offset is not None else 0


def _measures(group: dict[str, Any]) -> dict[int, float]:
    """A group's measures by type, as real values (`value * 10^unit`)."""
    out: dict[int, float] = {}
    for measure in group.get("measures") or []:
        if not isinstance(measure, dict):
            raise Malformed("a measure is not an object")
        out[_int(measure.get("type"), "type")] = _int(measure.get("value"), "value") * 10.0 ** _int(
            measure.get("unit"), "unit"
        )
    return out


def _latest_height(groups: list[Any]) -> float | None:
    latest: tuple[int, float] | None = None
    for group in groups:
        try:
            height = _measures(group).get(HEIGHT)
            at = _int(group.get("date"), "date")
        except (Malformed, AttributeError):
            continue
        if height is not None and (latest is None or at > latest[0]):
            latest = (at, height)
    return latest[1] if latest else None


def _measure_converter(page: RawPage, ctx: SyncContext) -> Callable[[Any], list[Record]]:
    kind = page.context["record_type"]
    zone = page.payload.get("timezone", "UTC")
    height = _latest_height(page.payload["measuregrps"]) or ctx.cursor.get("height_m")

    def convert(group: Any) -> list[Record]:
        if not isinstance(group, dict):
            raise Malformed("a measure group is not an object")
        return [r for r in _group_records(group, zone, height) if r.type == kind]

    return convert


def _group_records(group: dict[str, Any], zone: str, height_m: float | None) -> list[Record]:
    at = _instant(group.get("date"), "date")
    grpid = str(_int(group.get("grpid"), "grpid"))
    tz = _offset(zone, at)
    values = _measures(group)
    source = {k: group.get(k) for k in ("grpid", "attrib", "date", "modified", "category", "model", "measures")}

    def reading(kind: str, value: float, unit: str) -> Record:
        return Record(
            type=kind,
            external_id=grpid,
            start_time=at,
            tz_offset=tz,
            value=value,
            fields={"value": value, "unit": unit},
            source_data=source,
        )

    records = []
    if WEIGHT in values:
        records.append(reading("weight", round(values[WEIGHT], 3), "kg"))
        if height_m:
            records.append(reading("bmi", round(values[WEIGHT] / height_m**2, 1), "kg/m2"))
    if HEIGHT in values:
        records.append(reading("height", round(values[HEIGHT] * 100, 1), "cm"))
    if FAT_RATIO in values:
        records.append(reading("body_fat", round(values[FAT_RATIO], 2), "%"))
    if SPO2 in values:
        records.append(reading("blood_oxygen", round(values[SPO2], 1), "%"))
    if PULSE in values:
        records.append(reading("heart_rate", round(values[PULSE]), "bpm"))
    if SYSTOLIC in values and DIASTOLIC in values:
        systolic, diastolic = round(values[SYSTOLIC]), round(values[DIASTOLIC])
        records.append(
            Record(
                type="blood_pressure",
                external_id=grpid,
                start_time=at,
                tz_offset=tz,
                value=systolic,
                fields={"systolic": systolic, "diastolic": diastolic, "unit": "mmHg"},
                source_data=source,
            )
        )
    return records


def _period(row: Any) -> tuple[str, datetime, datetime, int, dict[str, Any]]:
    if not isinstance(row, dict):
        raise Malformed("a row is not an object")
    start, end = _instant(row.get("startdate"), "startdate"), _instant(row.get("enddate"), "enddate")
    if end < start:
        raise Malformed("ends before it starts")
    data = row.get("data") or {}
    if not isinstance(data, dict):
        raise Malformed("data is not an object")
    return str(_int(row.get("id"), "id")), start, end, _offset(row.get("timezone", "UTC"), start), data


def _workout(row: Any) -> list[Record]:
    external_id, start, end, tz, data = _period(row)
    pause = _number(data.get("pause_duration")) or 0
    distance, steps = _number(data.get("distance")), _number(data.get("steps"))
    category = _int(row.get("category"), "category")
    fields = {
        "type": WORKOUT_CATEGORIES.get(category, "other"),
        "duration": round((end - start).total_seconds() - pause),
        "distance": round(distance, 1) if distance is not None else None,
        "steps": round(steps) if steps is not None else None,
        "calories": _number(data.get("calories")),
    }
    return [
        Record(
            type="activities",
            external_id=external_id,
            start_time=start,
            end_time=end,
            tz_offset=tz,
            fields=fields,
            source_data=row,
        )
    ]


def _minutes(seconds: float | None) -> int | None:
    return round(seconds / 60) if seconds is not None else None


def _sleep(row: Any) -> list[Record]:
    external_id, start, end, tz, data = _period(row)
    in_bed = _number(data.get("total_timeinbed"))
    asleep = _number(data.get("total_sleep_time"))
    asleep = asleep if asleep is not None else _number(data.get("asleepduration"))
    efficiency = _number(data.get("sleep_efficiency"))  # a 0-1 ratio at Withings
    wakeups = _number(data.get("wakeupcount"))
    day = row.get("date")
    day = day if isinstance(day, str) else (end + timedelta(minutes=tz)).date().isoformat()
    date.fromisoformat(day)  # a day that isn't one makes the row malformed (ValueError)
    fields = {
        "day": day,
        # Withings keeps one sleep per night; naps are not tracked apart.
        "mainSleep": True,
        "timeAsleep": _minutes(asleep),
        "timeAwake": _minutes(_number(data.get("wakeupduration"))),
        "timeInBed": _minutes(in_bed if in_bed is not None else (end - start).total_seconds()),
        "efficiency": round(efficiency * 100) if efficiency is not None else None,
        "numberOfWakeups": round(wakeups) if wakeups is not None else None,
    }
    return [
        Record(
            type="sleeps",
            external_id=external_id,
            start_time=start,
            end_time=end,
            tz_offset=tz,
            fields=fields,
            source_data=row,
        )
    ]
