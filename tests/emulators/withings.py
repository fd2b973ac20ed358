"""An emulator of the Withings public Health Data API, for the `withings` source.

Built from Withings' API reference (developer.withings.com/api-reference: the `measuregrp_object`,
`measure_object`, `activity_object`, `workout_object`, `sleep_summary_object` schemas and the
"Response Status" table) and from replies published by public clients; the reading, with its
sources, is in docs/providers/withings.md.

OAuth: `/oauth2_user/authorize2` redirects back with `code` + `state` (or `error=access_denied`);
codes live 30 s and work once. `/v2/oauth2 action=requesttoken` answers HTTP 200 with the
`{"status", "body"}` envelope for every outcome: 3 h access tokens, and a new refresh token on
every refresh; the old one dies once the new access token is used (or after 8 h).

Data: RPC calls by POST form (or GET query), Bearer auth:
- `/measure getmeas`: `meastype` or `meastypes`, `category`, `startdate`/`enddate` (epoch,
  inclusive) or `lastupdate`, `offset`; body `updatetime`, `timezone`, `measuregrps` (newest
  first), `more` (0/1), `offset`. Groups keep `value`/`unit` encoding.
- `/v2/measure getactivity`, `/v2/measure getworkouts`, `/v2/sleep getsummary` (whose nights
  carry their vitals: `rr_average`, `rmssd_start_avg`/`rmssd_end_avg`, `core_body_temperature_*`,
  each only when asked for in `data_fields`): `startdateymd` +
  `enddateymd` (inclusive, on the row's `date`) or `lastupdate`, never both (observed: both
  together answer nothing); `data_fields` (only the fields asked for are sent); body `activities`
  or `series`, `more` (boolean), `offset`.

Errors as envelope statuses with HTTP 200: 401 invalid token, 403 insufficient scope (a service
whose scope the user did not grant), 503 invalid params, 601 too many requests past a per-minute
limit, 2554 for an unknown service or action. Faults (any status, HTTP 5xx, malformed JSON) can
be injected per path.

Notifications (developer.withings.com notification-subscribe and notification-content): `/notify`
with the user's token, `action=subscribe` (`callbackurl`, `appli`, `comment`; Withings first sends
a HEAD to the URL and answers status 293 "The callback URL is either unknown or invalid" unless it
gets a 2xx), `list`, `get`, `revoke`. Adding, changing or deleting data ("Notifications will be
send to your backend when health data are created, updated, deleted", keep-user-data-up-to-date) with
`add_measures`, `update_measures`, `delete_group`, `add_workout`, `add_sleep`, `add_activity`,
`update_series`, `update_activity`, `delete_activity`, `delete_series` POSTs a form (`userid`,
`appli`, and `startdate` + `enddate`, or `date` for a day's totals) to each subscription of that
category, the same whatever happened, retried while the answer is 400 or more; `unlink` (the user
removes the app) revokes the tokens and sends `appli=46`, `action=unlink`.

Where public sources disagree, switches send every shape: `userid_as_int` (the reference types
`userid` as an integer, replies send a string), `group_timezones` (a `timezone` in each measure
group, besides the body's), `sleep_efficiency` ("ratio" 0-1 as documented and observed, or
"percent" as in one published example).
"""

from __future__ import annotations

import copy
import json
import secrets
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import requests
from werkzeug.wrappers import Request, Response

from . import ServerThread, source_settings
from .push import Pusher

CLIENT_ID = "wi-client-1"
CLIENT_SECRET = "wi-secret-1"
USER_ID = 3021977
ALL_SCOPES = "user.info,user.metrics,user.activity,user.sleepevents"

# The scope each data service needs (API reference, OAuth2 scopes).
SERVICE_SCOPES = {
    ("/measure", "getmeas"): "user.metrics",
    ("/v2/measure", "getactivity"): "user.activity",
    ("/v2/measure", "getworkouts"): "user.activity",
    ("/v2/sleep", "getsummary"): "user.sleepevents",
}
# Fields of an activity row sent whatever `data_fields` asks (the rest only when asked for).
ACTIVITY_META = ("date", "timezone", "deviceid", "hash_deviceid", "brand", "is_tracker", "modified", "model", "modelid")
# What getsummary sends without `data_fields` (observed: python-withings sleep_summary_no_datafields).
SLEEP_DEFAULT_FIELDS = (
    "wakeupduration",
    "wakeupcount",
    "durationtosleep",
    "remsleepduration",
    "durationtowakeup",
    "total_timeinbed",
    "total_sleep_time",
    "sleep_efficiency",
    "sleep_latency",
    "wakeup_latency",
    "waso",
    "nb_rem_episodes",
    "out_of_bed_count",
    "lightsleepduration",
    "deepsleepduration",
)
INVALID_TOKEN = "XRequestID: Not provided invalid_token: The access token provided is invalid"
INSUFFICIENT_SCOPE = (
    "XRequestID: [Not provided] - Insufficient_scope: The request requires higher privileges than provided by the "
    "access token"
)


@dataclass
class Fault:
    """Answer the next `times` requests whose path contains `path` (and whose action is `action`,
    if given) with envelope `status`, or HTTP `http`, or the raw `body`."""

    path: str
    status: int | None = None
    http: int | None = None
    body: str | None = None
    action: str | None = None
    times: int = 1


@dataclass
class WithingsEmulator:
    page_size: int = 2
    access_lifetime: int = 10800
    rate_limit_per_minute: int = 120
    timezone: str = "Europe/Paris"  # the user's zone: getmeas' body `timezone`, and new rows'
    deny_consent: bool = False
    granted_scopes: str | None = None  # what the user grants; None: everything asked for
    userid_as_int: bool = False
    group_timezones: bool = False
    sleep_efficiency: str = "ratio"  # ratio | percent
    calls: Counter[str] = field(default_factory=Counter)
    faults: list[Fault] = field(default_factory=list)
    requests: list[dict[str, str]] = field(default_factory=list)  # every data call's parameters

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        self.codes: dict[str, dict[str, Any]] = {}
        self.access: dict[str, dict[str, Any]] = {}
        self.refresh: dict[str, dict[str, Any]] = {}
        self.groups: dict[int, dict[str, Any]] = {}
        self.workouts: dict[int, dict[str, Any]] = {}
        self.sleeps: dict[int, dict[str, Any]] = {}
        self.activities: dict[str, dict[str, Any]] = {}
        self.recent: deque[float] = deque()
        self._next_id = 1000
        self.subscriptions: list[dict[str, Any]] = []  # {callbackurl, appli, comment}
        self.pusher = Pusher(attempts=3, timeout=2.0)
        self.server = ServerThread(self.wsgi)

    # --- lifecycle and test controls ----------------------------------------------------------
    @property
    def url(self) -> str:
        return self.server.url

    def source_settings(self, history_days: int) -> dict[str, str]:
        """SOURCE_SETTINGS pointing the Withings source here."""
        return source_settings(
            "withings",
            client_id=CLIENT_ID,
            client_secret=CLIENT_SECRET,
            authorize_url=f"{self.url}/oauth2_user/authorize2",
            token_url=f"{self.url}/v2/oauth2",
            api_url=self.url,
            history_days=history_days,
        )

    def start(self) -> WithingsEmulator:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    def fail(self, path: str, **options: Any) -> Fault:
        fault = Fault(path, **options)
        with self.lock:
            self.faults.append(fault)
        return fault

    def expire_access_tokens(self) -> None:
        with self.lock:
            for grant in self.access.values():
                grant["expires_at"] = 0.0

    def revoke_refresh_tokens(self) -> None:
        with self.lock:
            self.refresh.clear()
            self.access.clear()

    def refresh_token_valid(self, token: str) -> bool:
        with self.lock:
            entry = self.refresh.get(token)
            return entry is not None and entry["dies_at"] > time.time()

    # --- data: rows exactly as given (a documented or published example) ----------------------
    def add_group(self, group: dict[str, Any]) -> int:
        """One `measuregrp_object` as given."""
        with self.lock:
            self.groups[int(group["grpid"])] = copy.deepcopy(group)
        return int(group["grpid"])

    def add_workout_row(self, row: dict[str, Any]) -> int:
        """One `workout_object` as given."""
        with self.lock:
            self.workouts[int(row["id"])] = copy.deepcopy(row)
        return int(row["id"])

    def add_sleep_row(self, row: dict[str, Any]) -> int:
        """One `sleep_summary_object` as given."""
        with self.lock:
            self.sleeps[int(row["id"])] = copy.deepcopy(row)
        return int(row["id"])

    def add_activity_row(self, row: dict[str, Any]) -> str:
        """One `activity_object` (a day's totals) as given."""
        with self.lock:
            self.activities[str(row["date"])] = copy.deepcopy(row)
        return str(row["date"])

    # --- data: rows built in the documented shape ---------------------------------------------
    def _id(self) -> int:
        self._next_id += 1
        return self._next_id

    def add_measures(
        self,
        at: datetime,
        measures: dict[int, tuple[int, int]],
        *,
        attrib: int = 0,
        category: int = 1,
        timezone: str | None = None,
    ) -> int:
        """One measure group: {meastype: (value, unit)}, the real value being value * 10^unit.
        `timezone` is the group's own (sent when `group_timezones` is on)."""
        now = int(time.time())
        with self.lock:
            grpid = self._id()
        group = {
            "grpid": grpid,
            "attrib": attrib,
            "date": int(at.timestamp()),
            "created": now,
            "modified": now,
            "category": category,
            "deviceid": "a1b2c3",
            "hash_deviceid": "a1b2c3",
            "measures": [{"value": v, "type": t, "unit": u, "algo": 0, "fm": 3} for t, (v, u) in measures.items()],
            "modelid": 5,
            "model": "Body+",
            "comment": None,
        }
        if timezone is not None:
            group["timezone"] = timezone
        self.add_group(group)
        self._announce_group(group)
        return grpid

    def update_measures(self, grpid: int, measures: dict[int, tuple[int, int]]) -> None:
        """Editing a measure updates its group: same `grpid`, new `modified`."""
        with self.lock:
            group = self.groups[grpid]
            group["measures"] = [{"value": v, "type": t, "unit": u} for t, (v, u) in measures.items()]
            group["modified"] = int(time.time())
        self._announce_group(group)

    def delete_group(self, grpid: int) -> None:
        with self.lock:
            group = self.groups.pop(grpid)
        self._announce_group(group)

    # --- notifications ---------------------------------------------------------------------------
    def notify(self, appli: int, **fields: Any) -> None:
        """POST a notification to every subscription of category `appli` (none: nothing)."""
        with self.lock:
            urls = [s["callbackurl"] for s in self.subscriptions if s["appli"] == appli]
        body = urlencode({"userid": str(USER_ID), "appli": str(appli), **{k: str(v) for k, v in fields.items()}})
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        for url in urls:
            self.pusher.post(url, body.encode(), lambda: form, ok=tuple(range(200, 400)))

    def unlink(self) -> None:
        """The user removes the application at Withings: its tokens die, and Withings says so."""
        self.revoke_refresh_tokens()
        now = int(time.time())
        self.notify(46, action="unlink", date=now)

    def _announce_group(self, group: dict[str, Any]) -> None:
        types = {m.get("type") for m in group.get("measures", [])}
        appli = 4 if types & {9, 10, 11, 54} else 2 if types & {12, 71, 73} else 1
        self.notify(appli, startdate=group["date"], enddate=group["date"])

    def _announce_row(self, kind: str, row: dict[str, Any]) -> None:
        if kind == "activity":
            self.notify(16, date=row["date"])
        else:
            self.notify(16 if kind == "workouts" else 44, startdate=row["startdate"], enddate=row["enddate"])

    def _notify_route(self, request: Request, action: str) -> Response:
        if self._grant_of(request) is None:
            return _envelope(401, {}, INVALID_TOKEN)
        values = request.values
        appli = int(values.get("appli") or 1) if (values.get("appli") or "1").isdigit() else -1
        url = values.get("callbackurl", "")
        if action == "subscribe":
            if not url or appli < 0:
                return _envelope(503, {}, "Invalid Params")
            try:
                reachable = 200 <= requests.head(url, timeout=5).status_code < 300
            except requests.RequestException:
                reachable = False
            if not reachable:
                return _envelope(293, {}, f"The callback URL '{url}' is either unknown or invalid")
            with self.lock:
                self.subscriptions = [s for s in self.subscriptions if (s["callbackurl"], s["appli"]) != (url, appli)]
                self.subscriptions.append({"callbackurl": url, "appli": appli, "comment": values.get("comment", "")})
            return _envelope(0, {})
        if action == "list":
            with self.lock:
                profiles = [{**s, "expires": 2147483647} for s in self.subscriptions if s["appli"] == appli]
            return _envelope(0, {"profiles": profiles})
        if action == "revoke":
            with self.lock:
                kept = [s for s in self.subscriptions if (s["callbackurl"], s["appli"]) != (url, appli)]
                found, self.subscriptions = len(kept) != len(self.subscriptions), kept
            return _envelope(0, {}) if found else _envelope(294, {}, "No such subscription")
        return _envelope(2554, {}, "Not implemented")

    def _local_day(self, moment: datetime) -> str:
        return moment.astimezone(ZoneInfo(self.timezone)).date().isoformat()

    def add_workout(
        self,
        start: datetime,
        minutes: int,
        *,
        category: int = 2,
        distance: float = 5000.0,
        steps: int = 6400,
        row_id: int | None = None,
    ) -> int:
        """A workout (`row_id`: its id, else the next one), announced in category 16."""
        end = start + timedelta(minutes=minutes)
        data = {
            "calories": 345.5,
            "manual_calories": 0,
            "steps": steps,
            "distance": distance,
            "manual_distance": 0,
            "elevation": 12,
            "hr_average": 142,
            "hr_min": 98,
            "hr_max": 171,
            "intensity": 60,
            "pause_duration": 120,
        }
        if row_id is None:
            with self.lock:
                row_id = self._id()
        self.add_workout_row(
            {
                "id": row_id,
                "category": category,
                "timezone": self.timezone,
                "model": 93,
                "attrib": 0,
                "startdate": int(start.timestamp()),
                "enddate": int(end.timestamp()),
                "date": self._local_day(start),
                "deviceid": "d4e5f6",
                "data": data,
                "modified": int(time.time()),
            }
        )
        self._announce_row("workouts", self.workouts[row_id])
        return row_id

    def add_sleep(
        self, start: datetime, end: datetime, *, asleep_s: int, awake_s: int, wakeups: int = 3, **values: Any
    ) -> int:
        """A night on a Sleep Analyzer, with the summary's vitals (`rr_*` breaths/min,
        `rmssd_*` ms, `core_body_temperature_*` °C); `values` override or add data fields."""
        in_bed = int((end - start).total_seconds())
        data = {
            "total_timeinbed": in_bed,
            "total_sleep_time": asleep_s,
            "wakeupduration": awake_s,
            "wakeupcount": wakeups,
            "sleep_efficiency": round(asleep_s / in_bed, 2),
            "sleep_latency": 600,
            "lightsleepduration": asleep_s // 2,
            "deepsleepduration": asleep_s // 4,
            "remsleepduration": asleep_s - asleep_s // 2 - asleep_s // 4,
            "sleep_score": 81,
            "hr_average": 58,
            "hr_min": 49,
            "hr_max": 77,
            "rr_average": 14,
            "rr_min": 11,
            "rr_max": 19,
            "rmssd_start_avg": 38.5,
            "rmssd_end_avg": 51.2,
            "core_body_temperature_avg": 36.62,
            "core_body_temperature_min": 36.21,
            "core_body_temperature_max": 36.94,
            "core_body_temperature_status": "usual",
            **values,
        }
        row_id = self._id()
        now = int(time.time())
        self.add_sleep_row(
            {
                "id": row_id,
                "timezone": self.timezone,
                "model": 32,
                "model_id": 63,
                "hash_deviceid": "d4e5f6",
                "startdate": int(start.timestamp()),
                "enddate": int(end.timestamp()),
                "date": self._local_day(end),  # the day the night ends on (observed)
                "data": data,
                "created": now,
                "modified": now,
            }
        )
        self._announce_row("sleep", self.sleeps[row_id])
        return row_id

    def add_activity(self, day: date, **values: Any) -> str:
        """A day's totals (steps, distance m, soft/moderate/intense/active s, calories (active
        kcal), totalcalories (kcal), ...) from the user's tracker."""
        row = {
            "date": day.isoformat(),
            "timezone": self.timezone,
            "deviceid": "d4e5f6",
            "hash_deviceid": "d4e5f6",
            "brand": 1,
            "is_tracker": True,
            "modified": int(time.time()),
            "model": "ScanWatch",
            "modelid": 93,
            "steps": 8543,
            "distance": 6234.5,
            "elevation": 25.0,
            "soft": 2340,
            "moderate": 1200,
            "intense": 600,
            "active": 1800,
            "calories": 312.5,
            "totalcalories": 2150.0,
            "hr_average": 72,
            "hr_min": 55,
            "hr_max": 145,
            **values,
        }
        self.add_activity_row(row)
        self._announce_row("activity", row)
        return row["date"]

    def update_series(self, kind: str, row_id: int, **data: Any) -> None:
        with self.lock:
            row = (self.workouts if kind == "workouts" else self.sleeps)[row_id]
            row["data"].update(data)
            row["modified"] = int(time.time())
        self._announce_row(kind, row)

    def update_activity(self, day: date, **values: Any) -> None:
        with self.lock:
            row = self.activities[day.isoformat()]
            row.update(values)
            row["modified"] = int(time.time())
        self._announce_row("activity", row)

    def delete_activity(self, day: date) -> None:
        """A day's totals removed at Withings: notified as a change is, in the same category,
        with the day."""
        with self.lock:
            row = self.activities.pop(day.isoformat())
        self._announce_row("activity", row)

    def delete_series(self, kind: str, row_id: int) -> None:
        """A workout (`workouts`) or a night (`sleep`) deleted, announced with its span."""
        with self.lock:
            row = (self.workouts if kind == "workouts" else self.sleeps).pop(row_id)
        self._announce_row(kind, row)

    # --- HTTP --------------------------------------------------------------------------------
    def wsgi(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        response = self._fault(request) or self._route(request)
        return response(environ, start_response)

    def _fault(self, request: Request) -> Response | None:
        action = request.values.get("action")
        with self.lock:
            for fault in self.faults:
                if fault.times > 0 and fault.path in request.path and fault.action in (None, action):
                    fault.times -= 1
                    self.calls[f"fault {fault.status or fault.http or 'body'}"] += 1
                    if fault.body is not None:
                        return Response(fault.body, 200, content_type="application/json")
                    if fault.http is not None:
                        return Response("<html>Service Unavailable</html>", fault.http, content_type="text/html")
                    return _envelope(fault.status or 0, {}, "Injected failure")
        return None

    def _route(self, request: Request) -> Response:
        path, action = request.path, request.values.get("action", "")
        if path == "/oauth2_user/authorize2" and request.method == "GET":
            return self._authorize(request)
        if path == "/v2/oauth2" and request.method == "POST" and action == "requesttoken":
            return self._token(request)
        if path == "/notify":
            self.calls[f"notify {action}"] += 1
            return self._notify_route(request, action)
        routes = {
            ("/measure", "getmeas"): self._getmeas,
            ("/v2/measure", "getactivity"): self._getactivity,
            ("/v2/measure", "getworkouts"): self._getworkouts,
            ("/v2/sleep", "getsummary"): self._getsummary,
        }
        handler = routes.get((path, action))
        if handler is None:
            return _envelope(2554, {}, "Not implemented")
        self.calls[action] += 1
        with self.lock:
            self.requests.append({"path": path, **request.values.to_dict()})
        grant = self._grant_of(request)
        if grant is None:
            return _envelope(401, {}, INVALID_TOKEN)
        if SERVICE_SCOPES[(path, action)] not in grant["scope"].split(","):
            return _envelope(403, {}, INSUFFICIENT_SCOPE)
        if self._throttled():
            return _envelope(601, {}, "Too Many Requests")
        return handler(request)

    def _authorize(self, request: Request) -> Response:
        args = request.args
        self.calls["authorize"] += 1
        if args.get("client_id") != CLIENT_ID or not args.get("state") or not args.get("redirect_uri"):
            return Response("Invalid Params", 400)
        redirect_uri = args["redirect_uri"]
        if self.deny_consent:
            query = {"error": "access_denied", "state": args["state"]}
            return Response("", 302, {"Location": f"{redirect_uri}?{urlencode(query)}"})
        asked = [s for s in args.get("scope", "").split(",") if s]
        granted = asked if self.granted_scopes is None else [s for s in asked if s in self.granted_scopes.split(",")]
        code = secrets.token_hex(20)
        with self.lock:
            self.codes[code] = {
                "redirect_uri": redirect_uri,
                "scope": ",".join(granted),
                "expires_at": time.time() + 30,
            }
        return Response("", 302, {"Location": f"{redirect_uri}?{urlencode({'code': code, 'state': args['state']})}"})

    def _token(self, request: Request) -> Response:
        form = request.form
        grant_type = form.get("grant_type", "")
        self.calls[f"requesttoken {grant_type}"] += 1
        if form.get("client_id") != CLIENT_ID or form.get("client_secret") != CLIENT_SECRET:
            return _envelope(503, {}, "Invalid Params: invalid client_id")
        with self.lock:
            if grant_type == "authorization_code":
                entry = self.codes.pop(form.get("code", ""), None)
                if (
                    entry is None
                    or entry["expires_at"] < time.time()
                    or entry["redirect_uri"] != form.get("redirect_uri")
                ):
                    return _envelope(503, {}, "Invalid Params: invalid code")
                return _envelope(0, self._issue(entry["scope"], None))
            if grant_type == "refresh_token":
                old = form.get("refresh_token", "")
                entry = self.refresh.get(old)
                if entry is None or entry["dies_at"] <= time.time():
                    return _envelope(503, {}, "Invalid Params: invalid refresh_token")
                entry["dies_at"] = min(entry["dies_at"], time.time() + 8 * 3600)  # the old one lives 8 h more
                return _envelope(0, self._issue(entry["scope"], old))
        return _envelope(503, {}, "Invalid Params: invalid grant_type")

    def _issue(self, scope: str, replaces: str | None) -> dict[str, Any]:
        access, refresh = secrets.token_hex(20), secrets.token_hex(20)
        self.access[access] = {"expires_at": time.time() + self.access_lifetime, "replaces": replaces, "scope": scope}
        self.refresh[refresh] = {"scope": scope, "dies_at": time.time() + 365 * 86400}
        return {
            "userid": USER_ID if self.userid_as_int else str(USER_ID),
            "access_token": access,
            "refresh_token": refresh,
            "expires_in": self.access_lifetime,
            "scope": scope,
            "csrf_token": secrets.token_hex(8),
            "token_type": "Bearer",
        }

    def _grant_of(self, request: Request) -> dict[str, Any] | None:
        header = request.headers.get("Authorization", "")
        token = header[7:] if header.startswith("Bearer ") else request.values.get("access_token", "")
        with self.lock:
            grant = self.access.get(token)
            if grant is None or grant["expires_at"] <= time.time():
                return None
            # Using the new access token ends the refresh token it replaced.
            if grant["replaces"]:
                self.refresh.pop(grant["replaces"], None)
                grant["replaces"] = None
        return grant

    def _throttled(self) -> bool:
        now = time.monotonic()
        with self.lock:
            while self.recent and self.recent[0] < now - 60:
                self.recent.popleft()
            self.recent.append(now)
            return len(self.recent) > self.rate_limit_per_minute

    def _page(self, rows: list[dict[str, Any]], request: Request) -> tuple[list[dict[str, Any]], bool, int]:
        offset = int(request.values.get("offset") or 0)
        page = rows[offset : offset + self.page_size]
        more = offset + self.page_size < len(rows)
        return page, more, offset + len(page)

    def _getmeas(self, request: Request) -> Response:
        values = request.values
        try:
            if values.get("meastype"):
                wanted = {int(values["meastype"])}
            else:
                wanted = {int(t) for t in values.get("meastypes", "").split(",") if t.strip()}
            with self.lock:
                groups = [copy.deepcopy(g) for g in self.groups.values()]
            # Every date parameter is optional; `lastupdate` is used instead of a range.
            if values.get("lastupdate"):
                groups = [g for g in groups if g["modified"] >= int(values["lastupdate"])]
            else:
                if values.get("startdate"):
                    groups = [g for g in groups if g["date"] >= int(values["startdate"])]
                if values.get("enddate"):
                    groups = [g for g in groups if g["date"] <= int(values["enddate"])]
            if values.get("category"):
                groups = [g for g in groups if g.get("category") == int(values["category"])]
        except ValueError:
            return _envelope(503, {}, "Invalid Params")
        for group in groups:
            if wanted:
                group["measures"] = [m for m in group["measures"] if m.get("type") in wanted]
            if self.group_timezones:
                group.setdefault("timezone", self.timezone)
            else:
                group.pop("timezone", None)
        groups = [g for g in groups if g["measures"]]
        groups.sort(key=lambda g: (g["date"], g["grpid"]), reverse=True)
        page, more, offset = self._page(groups, request)
        body: dict[str, Any] = {
            "updatetime": int(time.time()),
            "timezone": self.timezone,
            "measuregrps": page,
            "more": int(more),
        }
        if more:
            body["offset"] = offset
        return _envelope(0, body)

    def _v2(self, request: Request, rows: list[dict[str, Any]]) -> list[dict[str, Any]] | Response:
        """Rows by `startdateymd`..`enddateymd` (on their `date`) or by `lastupdate`."""
        values = request.values
        by_day = "startdateymd" in values or "enddateymd" in values
        if "lastupdate" in values and by_day:
            return []  # observed: both together answer nothing (the reference says never both)
        try:
            if "lastupdate" in values:
                return [r for r in rows if r.get("modified", 0) >= int(values["lastupdate"])]
            if by_day:
                low, high = date.fromisoformat(values["startdateymd"]), date.fromisoformat(values["enddateymd"])
                return [r for r in rows if _in_days(r.get("date"), low, high)]
        except (KeyError, ValueError):
            pass
        return _envelope(503, {}, "Invalid Params: startdateymd/enddateymd or lastupdate")

    def _series(self, request: Request, table: dict[Any, dict[str, Any]], default: tuple[str, ...]) -> Response:
        with self.lock:
            all_rows = [copy.deepcopy(r) for r in table.values()]
        rows = self._v2(request, all_rows)
        if isinstance(rows, Response):
            return rows
        asked = {f for f in request.values.get("data_fields", "").split(",") if f} or set(default)
        for row in rows:  # v2 services return only the data fields asked for
            if isinstance(row.get("data"), dict):
                row["data"] = {k: v for k, v in row["data"].items() if k in asked}
                if table is self.sleeps and self.sleep_efficiency == "percent":
                    ratio = row["data"].get("sleep_efficiency")
                    if isinstance(ratio, int | float) and ratio <= 1:
                        row["data"]["sleep_efficiency"] = round(ratio * 100)
        rows.sort(key=lambda r: r.get("startdate", 0))
        page, more, offset = self._page(rows, request)
        return _envelope(0, {"series": page, "more": more, "offset": offset})

    def _getworkouts(self, request: Request) -> Response:
        return self._series(request, self.workouts, ())

    def _getsummary(self, request: Request) -> Response:
        return self._series(request, self.sleeps, SLEEP_DEFAULT_FIELDS)

    def _getactivity(self, request: Request) -> Response:
        with self.lock:
            all_rows = [copy.deepcopy(r) for r in self.activities.values()]
        rows = self._v2(request, all_rows)
        if isinstance(rows, Response):
            return rows
        # Only the totals asked for (`totalcalories` too: the reference leaves its note out, but
        # lists it among the data fields).
        kept = set(ACTIVITY_META) | {f for f in request.values.get("data_fields", "").split(",") if f}
        rows = [{k: v for k, v in row.items() if k in kept} for row in rows]
        rows.sort(key=lambda r: r["date"])
        page, more, offset = self._page(rows, request)
        return _envelope(0, {"activities": page, "more": more, "offset": offset})


def _in_days(raw: Any, low: date, high: date) -> bool:
    try:
        return low <= date.fromisoformat(raw) <= high
    except (TypeError, ValueError):
        return True  # a row a test broke on purpose is still served, for the plugin to judge


def _envelope(status: int, body: dict[str, Any], error: str | None = None) -> Response:
    payload: dict[str, Any] = {"status": status, "body": body}
    if error is not None:
        payload["error"] = error
    return Response(json.dumps(payload), 200, content_type="application/json")
