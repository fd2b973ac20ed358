"""An emulator of the Google Health API (v4) and Google OAuth 2.0, for the `fitbit` source.

Built from Google's own description of the API (the v4 discovery document, revision 20260527,
and developers.google.com/health) and from responses published by public clients; see
docs/providers/fitbit.md for the source of each shape. It never looks at the plugin.

OAuth: `/o/oauth2/v2/auth` redirects back with `code` + `state` (or `error=access_denied`);
`/token` takes form-encoded `authorization_code` (with PKCE S256) and `refresh_token` grants,
answers `expires_in: 3599`, never rotates refresh tokens, and refuses with RFC 6749
`invalid_grant`; `/revoke`.

Data (`/v4/users/me/...`): `identity`, `settings`; per data type `dataPoints` (list) and
`dataPoints:reconcile` (GET, AIP-160 filter with the member each record kind accepts and only
`>=` / `<`, newest first, opaque page tokens bound to their query, page-size caps) and
`dataPoints:dailyRollUp` (POST, civil-date range, 14- or 90-day caps). Daily types
(`daily-resting-heart-rate`, `daily-heart-rate-variability`, `daily-respiratory-rate`,
`daily-sleep-temperature-derivations`, `daily-vo2-max`, `daily-oxygen-saturation`) carry a
civil `date`, filter on `<type>.date` only and have no roll-ups. proto3 JSON: int64 as
strings, durations `"<n>s"`, empty fields omitted. Errors are google.rpc.Status bodies: 401 for
a dead token, 403 for an ungranted scope, 400 for a bad filter or range, 429 past a per-user
per-minute limit. Faults can be injected per path.

Webhooks (developers.google.com/health notifications; the v4 reference of projects.subscribers):
`subscribe(endpoint, secret)` stands for the subscriber the operator makes with a Cloud service
account: it sends the two verification POSTs `{"type": "verification"}`, one with `Authorization:
<secret>` (201 wanted) and one without (401 or 403 wanted), and keeps the subscriber only if both
are answered so. Then `add_sample`, `add_exercise`, `add_sleep`, `add_daily`, `update` and
`delete` POST an array of notifications `{data: {version, clientProvidedSubscriptionName,
healthUserId, dataType, operation: UPSERT|DELETE, intervals: [{physicalTimeInterval: {startTime,
endTime}}]}}` with that `Authorization`.

Where public sources disagree, a switch sends each shape (see `GoogleHealthEmulator` fields).
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import re
import secrets
import threading
import time
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from werkzeug.wrappers import Request, Response

from . import ServerThread, source_settings
from .push import Pusher

CLIENT_ID = "gh-client-1.apps.googleusercontent.com"
CLIENT_SECRET = "gh-secret-1"
HEALTH_USER_ID = "1173016576421350648"
LEGACY_USER_ID = "GGNJL9"

SCOPE = "https://www.googleapis.com/auth/googlehealth."
ACTIVITY_SCOPE = SCOPE + "activity_and_fitness.readonly"
METRICS_SCOPE = SCOPE + "health_metrics_and_measurements.readonly"
SLEEP_SCOPE = SCOPE + "sleep.readonly"
SETTINGS_SCOPE = SCOPE + "settings.readonly"

# data type (kebab-case, as in URLs) -> (payload key, record kind, scope). Discovery: DataPoint.
DATA_TYPES: dict[str, tuple[str, str, str]] = {
    "steps": ("steps", "interval", ACTIVITY_SCOPE),
    "distance": ("distance", "interval", ACTIVITY_SCOPE),
    "active-minutes": ("activeMinutes", "interval", ACTIVITY_SCOPE),
    "active-energy-burned": ("activeEnergyBurned", "interval", ACTIVITY_SCOPE),
    "sedentary-period": ("sedentaryPeriod", "interval", ACTIVITY_SCOPE),
    "activity-level": ("activityLevel", "interval", ACTIVITY_SCOPE),
    "total-calories": ("totalCalories", "rollup-only", ACTIVITY_SCOPE),
    "exercise": ("exercise", "session", ACTIVITY_SCOPE),
    "sleep": ("sleep", "sleep", SLEEP_SCOPE),
    "heart-rate": ("heartRate", "sample", METRICS_SCOPE),
    "weight": ("weight", "sample", METRICS_SCOPE),
    "body-fat": ("bodyFat", "sample", METRICS_SCOPE),
    "height": ("height", "sample", METRICS_SCOPE),
    "oxygen-saturation": ("oxygenSaturation", "sample", METRICS_SCOPE),
    "blood-glucose": ("bloodGlucose", "sample", METRICS_SCOPE),
    "daily-oxygen-saturation": ("dailyOxygenSaturation", "daily", METRICS_SCOPE),
    "daily-resting-heart-rate": ("dailyRestingHeartRate", "daily", METRICS_SCOPE),
    "daily-heart-rate-variability": ("dailyHeartRateVariability", "daily", METRICS_SCOPE),
    "daily-respiratory-rate": ("dailyRespiratoryRate", "daily", METRICS_SCOPE),
    "daily-sleep-temperature-derivations": ("dailySleepTemperatureDerivations", "daily", METRICS_SCOPE),
    # Its scope is disputed (see `GoogleHealthEmulator.vo2_max_scope`).
    "daily-vo2-max": ("dailyVo2Max", "daily", ACTIVITY_SCOPE),
}
# Types a point can be fetched by name ("get" in the data-types table): their points carry a name.
IDENTIFIABLE = {"exercise", "sleep", "weight", "body-fat", "height", "blood-glucose"}
# dailyRollUp: data type -> (key of its value in a DailyRollupDataPoint, maximum range in days).
ROLLUPS: dict[str, tuple[str, int]] = {
    "steps": ("steps", 90),
    "distance": ("distance", 90),
    "total-calories": ("totalCalories", 14),
    "active-energy-burned": ("activeEnergyBurned", 90),
    "active-minutes": ("activeMinutes", 14),
    "sedentary-period": ("sedentaryPeriod", 90),
    "heart-rate": ("heartRate", 14),
    "weight": ("weight", 90),
    "body-fat": ("bodyFat", 90),
    "blood-glucose": ("bloodGlucose", 90),
}
# int64 fields of the payloads (discovery `"format": "int64"`), sent as JSON strings by proto3.
INT64_FIELDS = {
    "count",
    "countSum",
    "millimeters",
    "millimetersSum",
    "beatsPerMinute",
    "heightMillimeters",
    "minutesAsleep",
    "minutesAwake",
    "minutesInSleepPeriod",
    "minutesToFallAsleep",
    "minutesAfterWakeUp",
    "minutes",
    "steps",
    "averageHeartRateBeatsPerMinute",
    "activeZoneMinutes",
    "activeMinutes",
    "activeMinutesSum",
    "nonRemHeartRateBeatsPerMinute",
}
PLATFORM_RANK = {"FITBIT": 0}  # which source's point a reconciled stream keeps (emulator's choice)
_CONDITION = re.compile(r'^\s*([a-z0-9_.]+)\s*(>=|<=|>|<|=)\s*"([^"]*)"\s*$')
_CIVIL = re.compile(r"^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}:\d{2})?$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass
class Fault:
    """Answer the next `times` requests whose path contains `path` with this instead."""

    path: str
    status: int
    body: str = ""
    retry_after: str | None = None
    times: int = 1


@dataclass
class GoogleHealthEmulator:
    access_lifetime: int = 3599
    rate_limit_per_minute: int = 300
    granted_scopes: list[str] | None = None  # None: whatever was asked
    deny_consent: bool = False
    account_linked: bool = True  # False: a Google account without a Google Health profile
    # The user's settings (GET /v4/users/me/settings): IANA zone and current offset.
    time_zone: str = "Europe/Berlin"
    utc_offset: str = "3600s"
    # --- shapes on which public sources disagree -----------------------------------------
    # Reconciled items: "observed" = `dataPointName`, no `dataSource` (discovery
    # ReconciledDataPoint; live answers in ansanloms/skills); "documented" = `name` and
    # `dataSource`, as the reconcile example of developers.google.com/health/endpoints.
    reconcile_shape: str = "observed"
    # A reconciled sleep came with its `summary.stagesSummary` listed twice (observed live).
    duplicate_reconciled_stages: bool = True
    # int64 fields: "string" (proto3 JSON, discovery, observed) or "number" (public clients
    # that type them as numbers).
    int64_as: str = "string"
    # The last page: "omit" (`{}` or no `nextPageToken`, observed) or "empty" (`"nextPageToken": ""`,
    # as the documented example).
    last_page: str = "omit"
    # Session intervals: civil times absent (observed for exercise and sleep) or present
    # (discovery SessionTimeInterval lists them as output-only fields).
    session_civil_times: bool = False
    # The scope daily-vo2-max needs: "activity" (Google's migration guide maps Fitbit's
    # cardio_fitness scope to activity_and_fitness; public clients list it there) or "metrics"
    # (other public clients list it under health_metrics_and_measurements).
    vo2_max_scope: str = "activity"
    calls: Counter[str] = field(default_factory=Counter)
    faults: list[Fault] = field(default_factory=list)
    points: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    # dailyRollUp values: data type -> civil date -> the rollup value object.
    daily: dict[str, dict[date, dict[str, Any]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        self.codes: dict[str, dict[str, Any]] = {}
        self.access: dict[str, dict[str, Any]] = {}
        self.refresh: dict[str, dict[str, Any]] = {}
        self.recent: deque[float] = deque()
        # (method and path, query or JSON body) of each data call
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.subscriber: dict[str, str] | None = None  # {endpoint, secret}
        self.pusher = Pusher(attempts=3, timeout=5.0)
        self.server = ServerThread(self.wsgi)

    # --- lifecycle and test controls ----------------------------------------------------------
    @property
    def url(self) -> str:
        return self.server.url

    def source_settings(self, history_days: int) -> dict[str, str]:
        """SOURCE_SETTINGS pointing the Fitbit source (the Google Health API) here."""
        return source_settings(
            "fitbit",
            client_id=CLIENT_ID,
            client_secret=CLIENT_SECRET,
            authorize_url=f"{self.url}/o/oauth2/v2/auth",
            token_url=f"{self.url}/token",
            api_url=self.url,
            history_days=history_days,
        )

    def start(self) -> GoogleHealthEmulator:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    def fail(self, path: str, status: int, **options: Any) -> Fault:
        fault = Fault(path, status, **options)
        with self.lock:
            self.faults.append(fault)
        return fault

    def expire_access_tokens(self) -> None:
        with self.lock:
            for grant in self.access.values():
                grant["expires_at"] = 0.0

    def revoke_refresh_tokens(self) -> None:
        """The user removed the app's access: every refresh token dies (`invalid_grant`)."""
        with self.lock:
            self.refresh.clear()
            self.access.clear()

    # --- data --------------------------------------------------------------------------------
    def add_point(self, data_type: str, point: dict[str, Any]) -> str:
        """Store a data point exactly as given (e.g. a documented example). Returns its id."""
        name = point.get("name") or point.get("dataPointName")
        point_id = str(name).rsplit("/", 1)[-1] if name else secrets.token_hex(6)
        stored = copy.deepcopy(point)
        if "dataPointName" in stored:  # stored in the list shape; reconcile derives its own
            stored["name"] = stored.pop("dataPointName")
        with self.lock:
            self.points.setdefault(data_type, {})[point_id] = stored
        return point_id

    def add_sample(
        self,
        data_type: str,
        at: datetime,
        value: float,
        *,
        offset_s: int = 3600,
        platform: str = "FITBIT",
        device: str = "Pixel Watch 3",
        extra: dict[str, Any] | None = None,
    ) -> str:
        field_name = {
            "heart-rate": "beatsPerMinute",
            "weight": "weightGrams",
            "body-fat": "percentage",
            "height": "heightMillimeters",
            "oxygen-saturation": "percentage",
            "blood-glucose": "bloodGlucoseMilligramsPerDeciliter",
        }[data_type]
        body: dict[str, Any] = {
            "sampleTime": {
                "physicalTime": _rfc3339(at),
                "utcOffset": f"{offset_s}s",
                "civilTime": _civil_object(at + timedelta(seconds=offset_s)),
            },
            field_name: str(round(value)) if field_name in INT64_FIELDS else value,
            **(extra or {}),
        }
        point: dict[str, Any] = {
            "dataSource": {
                "recordingMethod": "PASSIVELY_MEASURED",
                "device": {"displayName": device},
                "platform": platform,
            },
            DATA_TYPES[data_type][0]: body,
        }
        point_id = secrets.token_hex(6)
        if data_type in IDENTIFIABLE:  # heart-rate, oxygen-saturation points have no name
            point["name"] = _name(data_type, point_id)
        with self.lock:
            self.points.setdefault(data_type, {})[point_id] = point
        self._announce(data_type, point_id, "UPSERT")
        return point_id

    def add_exercise(
        self,
        start: datetime,
        minutes: int,
        *,
        kind: str = "RUNNING",
        distance_m: float | None = 5000.0,
        steps: int | None = 6000,
        kcal: float = 320.5,
        offset_s: int = 3600,
        platform: str = "FITBIT",
        point_id: str | None = None,
    ) -> str:
        """An exercise session (`point_id`: its id, else a new one), announced as an UPSERT."""
        end = start + timedelta(minutes=minutes)
        summary: dict[str, Any] = {"caloriesKcal": kcal, "averageHeartRateBeatsPerMinute": "141"}
        if distance_m is not None:
            summary["distanceMillimeters"] = distance_m * 1000
        if steps is not None:
            summary["steps"] = str(steps)
        body = {
            "interval": _interval(start, end, offset_s),
            "exerciseType": kind,
            "displayName": kind.title(),
            "activeDuration": f"{minutes * 60 - 60}s",
            "metricsSummary": summary,
            "exerciseMetadata": {},
            "createTime": _rfc3339(end),
            "updateTime": _rfc3339(end),
        }
        return self._add_named("exercise", body, platform=platform, point_id=point_id)

    def add_sleep(
        self,
        start: datetime,
        end: datetime,
        *,
        asleep: int,
        awake: int,
        wakeups: int = 2,
        main: bool = True,
        offset_s: int = 3600,
        end_offset_s: int | None = None,
        stages: dict[str, int] | None = None,
    ) -> str:
        """A STAGES sleep; `stages` are the minutes per stage type (default: all LIGHT)."""
        in_bed = round((end - start).total_seconds() / 60)
        per_stage = stages if stages is not None else {"LIGHT": asleep}
        body = {
            "interval": _interval(start, end, offset_s, end_offset_s),
            "type": "STAGES",
            "metadata": {"stagesStatus": "SUCCEEDED", "processed": True, "mainSleep": main, "nap": not main},
            "summary": {
                "minutesInSleepPeriod": str(in_bed),
                "minutesAfterWakeUp": "0",
                "minutesToFallAsleep": "0",
                "minutesAsleep": str(asleep),
                "minutesAwake": str(awake),
                "stagesSummary": [
                    {"type": "AWAKE", "minutes": str(awake), "count": str(wakeups)},
                    *({"type": kind, "minutes": str(minutes), "count": "3"} for kind, minutes in per_stage.items()),
                ],
            },
            "createTime": _rfc3339(end),
            "updateTime": _rfc3339(end),
        }
        return self._add_named("sleep", body)

    def add_daily(self, data_type: str, day: date, body: dict[str, Any]) -> str:
        """A point of a daily type (e.g. daily-oxygen-saturation), dated in the user's zone."""
        point = {
            "dataSource": {"recordingMethod": "DERIVED", "platform": "FITBIT"},
            DATA_TYPES[data_type][0]: {"date": _date_object(day), **body},
        }
        point_id = f"{data_type}-{day.isoformat()}"
        with self.lock:
            self.points.setdefault(data_type, {})[point_id] = point
        self._announce(data_type, point_id, "UPSERT")
        return point_id

    def set_rollup(self, data_type: str, day: date, value: dict[str, Any]) -> None:
        """What dailyRollUp answers for `data_type` on the civil day `day`."""
        with self.lock:
            self.daily.setdefault(data_type, {})[day] = value

    def _add_named(
        self, data_type: str, body: dict[str, Any], *, platform: str = "FITBIT", point_id: str | None = None
    ) -> str:
        point_id = point_id or str(secrets.randbelow(10**18) + 10**18)
        point = {
            "name": _name(data_type, point_id),
            "dataSource": {"recordingMethod": "DERIVED", "device": {"displayName": "Charge 6"}, "platform": platform},
            DATA_TYPES[data_type][0]: body,
        }
        with self.lock:
            self.points.setdefault(data_type, {})[point_id] = point
        self._announce(data_type, point_id, "UPSERT")
        return point_id

    def update(self, data_type: str, point_id: str, **changes: Any) -> None:
        with self.lock:
            self.points[data_type][point_id][DATA_TYPES[data_type][0]].update(changes)
        self._announce(data_type, point_id, "UPSERT")

    def delete(self, data_type: str, point_id: str) -> None:
        """The point removed, then announced (a notification never comes before the change)."""
        start, end = self._span(data_type, point_id)
        with self.lock:
            del self.points[data_type][point_id]
        self.notify(data_type, start, end, "DELETE")

    # --- webhooks ----------------------------------------------------------------------------
    def subscribe(self, endpoint: str, secret: str) -> bool:
        """The operator's subscriber: verified by two POSTs, kept if both are answered right."""
        body = json.dumps({"type": "verification"}).encode()
        ok = (201,)
        authorized = self.pusher.post(endpoint, body, lambda: {"Authorization": secret}, ok=ok)[-1].status
        bare = self.pusher.post(endpoint, body, dict, ok=(401, 403))[-1].status
        self.subscriber = {"endpoint": endpoint, "secret": secret} if authorized == 201 and bare in (401, 403) else None
        return self.subscriber is not None

    def notify(self, data_type: str, start: str, end: str, operation: str = "UPSERT") -> None:
        if self.subscriber is None:
            return
        data = {
            "version": "1",
            "clientProvidedSubscriptionName": "humanapi",
            "healthUserId": HEALTH_USER_ID,
            "dataType": data_type,
            "operation": operation,
            "intervals": [{"physicalTimeInterval": {"startTime": start, "endTime": end}}],
        }
        secret = self.subscriber["secret"]
        self.pusher.post(
            self.subscriber["endpoint"], json.dumps([{"data": data}]).encode(), lambda: {"Authorization": secret}
        )

    def _announce(self, data_type: str, point_id: str, operation: str) -> None:
        self.notify(data_type, *self._span(data_type, point_id), operation)

    def _span(self, data_type: str, point_id: str) -> tuple[str, str]:
        """The physical interval a notification of this point names."""
        with self.lock:
            body = copy.deepcopy(self.points[data_type][point_id].get(DATA_TYPES[data_type][0], {}))
        span = body.get("interval") or {}
        if isinstance(body.get("sampleTime"), dict):
            start = end = body["sampleTime"].get("physicalTime", "")
        elif isinstance(body.get("date"), dict):
            day = date(**{k: int(v) for k, v in body["date"].items()})
            start, end = (
                _rfc3339(datetime(day.year, day.month, day.day, tzinfo=UTC)),
                _rfc3339(datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)),
            )
        else:
            start, end = span.get("startTime", ""), span.get("endTime", "")
        return start, end

    def add_malformed(self, data_type: str) -> None:
        """A point whose times are not timestamps (a shape the connector must skip, not crash on)."""
        with self.lock:
            self.points.setdefault(data_type, {})["broken"] = {
                "name": _name(data_type, "broken"),
                DATA_TYPES[data_type][0]: {"interval": "yesterday", "sampleTime": {"physicalTime": "soon"}},
            }

    # --- HTTP --------------------------------------------------------------------------------
    def wsgi(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        response = self._fault(request) or self._route(request)
        return response(environ, start_response)

    def _fault(self, request: Request) -> Response | None:
        with self.lock:
            for fault in self.faults:
                if fault.times > 0 and fault.path in request.path:
                    fault.times -= 1
                    self.calls[f"fault {fault.status}"] += 1
                    headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
                    body = fault.body or json.dumps(_status_body(fault.status, "injected failure", "INJECTED"))
                    return Response(body, fault.status, headers, content_type="application/json")
        return None

    def _route(self, request: Request) -> Response:
        path, method = request.path, request.method
        if path == "/o/oauth2/v2/auth" and method == "GET":
            return self._authorize(request)
        if path == "/token" and method == "POST":
            return self._token(request)
        if path == "/revoke" and method == "POST":
            return self._revoke(request)
        if path == "/v4/users/me/identity" and method == "GET":
            return self._identity(request)
        if path == "/v4/users/me/settings" and method == "GET":
            return self._settings(request)
        match = re.fullmatch(r"/v4/users/([^/]+)/dataTypes/([a-z0-9-]+)/dataPoints(:[A-Za-z]+)?", path)
        if match:
            user, data_type, verb = match.group(1), match.group(2), match.group(3) or ""
            if (verb, method) in (("", "GET"), (":reconcile", "GET")):
                return self._points(request, user, data_type, reconcile=bool(verb))
            if (verb, method) == (":dailyRollUp", "POST"):
                return self._daily_rollup(request, user, data_type)
        return _error(404, "NOT_FOUND", "RESOURCE_NOT_FOUND", f"{path} not found")

    def _authorize(self, request: Request) -> Response:
        args = request.args
        self.calls["authorize"] += 1
        if args.get("client_id") != CLIENT_ID or args.get("response_type") != "code" or not args.get("redirect_uri"):
            return Response("Error 400: invalid_request", 400)
        redirect_uri = args["redirect_uri"]
        if self.deny_consent:
            query = {"error": "access_denied", "state": args.get("state", "")}
            return Response("", 302, {"Location": f"{redirect_uri}?{urlencode(query)}"})
        asked = args.get("scope", "").split()
        granted = [s for s in asked if self.granted_scopes is None or s in self.granted_scopes]
        code = "4/" + secrets.token_urlsafe(24)
        with self.lock:
            self.codes[code] = {
                "redirect_uri": redirect_uri,
                "challenge": args.get("code_challenge"),
                "scopes": granted,
                "offline": args.get("access_type") == "offline",
                "expires_at": time.time() + 600,
            }
        query = {"state": args.get("state", ""), "code": code, "scope": " ".join(granted)}
        return Response("", 302, {"Location": f"{redirect_uri}?{urlencode(query)}"})

    def _token(self, request: Request) -> Response:
        form = request.form
        grant_type = form.get("grant_type", "")
        self.calls[f"token {grant_type}"] += 1
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        if request.authorization and request.authorization.type == "basic":
            client_id, client_secret = request.authorization.username, request.authorization.password
        if client_id != CLIENT_ID or client_secret != CLIENT_SECRET:
            return _oauth_error(401, "invalid_client", "The OAuth client was not found.")
        with self.lock:
            if grant_type == "authorization_code":
                return self._code_grant(form)
            if grant_type == "refresh_token":
                return self._refresh_grant(form)
        return _oauth_error(400, "unsupported_grant_type", "Invalid grant_type: " + grant_type)

    def _code_grant(self, form: Any) -> Response:
        entry = self.codes.pop(form.get("code", ""), None)  # a code works once
        if entry is None or entry["expires_at"] < time.time() or entry["redirect_uri"] != form.get("redirect_uri"):
            return _oauth_error(400, "invalid_grant", "Bad Request")
        if entry["challenge"]:
            verifier = form.get("code_verifier", "")
            digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
            if digest != entry["challenge"]:
                return _oauth_error(400, "invalid_grant", "Invalid code verifier.")
        reply = self._issue_access(entry["scopes"])
        if entry["offline"]:
            refresh = "1//" + secrets.token_urlsafe(32)
            self.refresh[refresh] = {"scopes": entry["scopes"]}
            reply["refresh_token"] = refresh
        return _json(reply, 200)

    def _refresh_grant(self, form: Any) -> Response:
        entry = self.refresh.get(form.get("refresh_token", ""))
        if entry is None:
            return _oauth_error(400, "invalid_grant", "Token has been expired or revoked.")
        return _json(self._issue_access(entry["scopes"]), 200)  # Google keeps the refresh token

    def _issue_access(self, scopes: list[str]) -> dict[str, Any]:
        token = "ya29." + secrets.token_urlsafe(40)
        self.access[token] = {"scopes": scopes, "expires_at": time.time() + self.access_lifetime}
        return {
            "access_token": token,
            "expires_in": self.access_lifetime,
            "scope": " ".join(scopes),
            "token_type": "Bearer",
        }

    def _revoke(self, request: Request) -> Response:
        token = request.form.get("token", "")
        with self.lock:
            known = self.access.pop(token, None) or self.refresh.pop(token, None)
        return Response("", 200) if known else _oauth_error(400, "invalid_token", "Bad Request")

    def _grant_of(self, request: Request) -> dict[str, Any] | None:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            return None
        with self.lock:
            grant = self.access.get(header[7:])
        if grant is None or grant["expires_at"] <= time.time():
            return None
        return grant

    def _identity(self, request: Request) -> Response:
        self.calls["identity"] += 1
        if self._grant_of(request) is None:
            return _unauthenticated()
        if not self.account_linked:
            return _error(400, "FAILED_PRECONDITION", "ACCOUNT_NOT_LINKED", "The Google account is not linked.")
        body = {"name": "users/me/identity", "healthUserId": HEALTH_USER_ID, "legacyUserId": LEGACY_USER_ID}
        return _json(body, 200)

    def _settings(self, request: Request) -> Response:
        self.calls["settings"] += 1
        grant = self._grant_of(request)
        if grant is None:
            return _unauthenticated()
        if SETTINGS_SCOPE not in grant["scopes"]:
            return _insufficient_scope()
        if self._throttled():
            return _error(429, "RESOURCE_EXHAUSTED", "RATE_LIMIT_EXCEEDED", "Quota exceeded for quota metric.")
        body = {
            "name": f"users/{HEALTH_USER_ID}/settings",
            "timeZone": self.time_zone,
            "utcOffset": self.utc_offset,
            "distanceUnit": "DISTANCE_UNIT_KILOMETERS",
            "weightUnit": "WEIGHT_UNIT_KILOGRAMS",
            "languageLocale": "en_GB",
        }
        return _json({k: v for k, v in body.items() if v not in ("", None)}, 200)

    def _scope_of(self, data_type: str) -> str:
        if data_type == "daily-vo2-max":
            return METRICS_SCOPE if self.vo2_max_scope == "metrics" else ACTIVITY_SCOPE
        return DATA_TYPES[data_type][2]

    def _throttled(self) -> bool:
        now = time.monotonic()
        with self.lock:
            while self.recent and self.recent[0] < now - 60:
                self.recent.popleft()
            self.recent.append(now)
            return len(self.recent) > self.rate_limit_per_minute

    def _checked(self, request: Request, user: str, data_type: str) -> Response | None:
        """The answers every data call shares: token, user, type, scope, quota."""
        grant = self._grant_of(request)
        if grant is None:
            return _unauthenticated()
        if user != "me":  # "The `{user}` is the alias "me" currently" (discovery)
            return _error(400, "INVALID_ARGUMENT", "INVALID_USER", "Only users/me is supported.")
        if data_type not in DATA_TYPES:
            return _error(400, "INVALID_ARGUMENT", "INVALID_PARENT_DATA_TYPE_COLLECTION", f"Unknown {data_type}.")
        if self._scope_of(data_type) not in grant["scopes"]:
            return _insufficient_scope()
        if self._throttled():
            return _error(429, "RESOURCE_EXHAUSTED", "RATE_LIMIT_EXCEEDED", "Quota exceeded for quota metric.")
        return None

    def _points(self, request: Request, user: str, data_type: str, *, reconcile: bool) -> Response:
        verb = "reconcile" if reconcile else "list"
        self.calls[f"{verb} {data_type}"] += 1
        self.requests.append((f"GET {request.path}", dict(request.args)))
        refused = self._checked(request, user, data_type)
        if refused is not None:
            return refused
        kind = DATA_TYPES[data_type][1]
        if kind == "rollup-only":
            return _error(400, "INVALID_ARGUMENT", "UNSUPPORTED_DATA_TYPE_ACTION", f"{verb} is not supported.")
        family = request.args.get("dataSourceFamily", "")
        if reconcile and family and family not in FAMILIES:
            return _error(400, "INVALID_ARGUMENT", "INVALID_DATA_SOURCE_FAMILY", "Unknown data source family.")
        query = request.args.get("filter", "")
        conditions = _parse_filter(query, data_type)
        if isinstance(conditions, Response):
            return conditions
        cap = 25 if data_type in ("exercise", "sleep") else 10000
        try:
            size = min(int(request.args.get("pageSize") or (25 if cap == 25 else 1440)), cap)
        except ValueError:
            return _error(400, "INVALID_ARGUMENT", "INVALID_PAGE_SIZE", "Invalid page size.")
        binding = f"{verb}|{data_type}|{query}|{family}"
        offset = _decode_token(request.args.get("pageToken", ""), binding)
        if offset is None:
            return _error(400, "INVALID_ARGUMENT", "INVALID_PAGE_TOKEN", "Invalid page token.")
        with self.lock:
            stored = [copy.deepcopy(p) for p in self.points.get(data_type, {}).values()]
        matching = [p for p in stored if _matches(p, data_type, conditions)]
        if reconcile:
            matching = self._reconciled(matching, data_type, family)
        else:
            matching = [self._listed(p, data_type) for p in matching]
        # "Data points in the response will be ordered by the interval start time in descending order."
        matching.sort(key=lambda p: _sort_key(p, data_type), reverse=True)
        page = matching[offset : offset + size]
        body: dict[str, Any] = {}
        if page:
            body["dataPoints"] = page
        if offset + size < len(matching):
            body["nextPageToken"] = _encode_token(offset + size, binding)
        elif self.last_page == "empty":
            body["nextPageToken"] = ""
        return _json(self._int64(body), 200)

    def _listed(self, point: dict[str, Any], data_type: str) -> dict[str, Any]:
        self._civil_times(point, data_type)
        return point

    def _reconciled(self, points: list[dict[str, Any]], data_type: str, family: str) -> list[dict[str, Any]]:
        """One stream: of points at the same time from several sources, the Fitbit one (how
        Google merges is not documented; this is the emulator's choice)."""
        if family.endswith("/google-wearables"):
            points = [p for p in points if _platform(p) == "FITBIT"]
        points.sort(key=lambda p: PLATFORM_RANK.get(_platform(p), 9))
        seen: set[str] = set()
        merged = []
        for point in points:
            moment = _sort_key(point, data_type)
            if moment and moment in seen:
                continue
            seen.add(moment)
            self._civil_times(point, data_type)
            if self.reconcile_shape == "observed":
                point.pop("dataSource", None)
                if "name" in point:
                    point["dataPointName"] = point.pop("name")
            body = point.get(DATA_TYPES[data_type][0])
            if data_type == "sleep" and self.duplicate_reconciled_stages and isinstance(body, dict):
                summary = body.get("summary")
                if isinstance(summary, dict) and isinstance(summary.get("stagesSummary"), list):
                    summary["stagesSummary"] = summary["stagesSummary"] * 2
            merged.append(point)
        return merged

    def _civil_times(self, point: dict[str, Any], data_type: str) -> None:
        body = point.get(DATA_TYPES[data_type][0])
        interval = body.get("interval") if isinstance(body, dict) else None
        if not self.session_civil_times or DATA_TYPES[data_type][1] not in ("session", "sleep"):
            return
        if isinstance(interval, dict):
            try:
                interval["civilStartTime"] = _civil_object(_local(interval["startTime"], interval["startUtcOffset"]))
                interval["civilEndTime"] = _civil_object(_local(interval["endTime"], interval["endUtcOffset"]))
            except (KeyError, TypeError, ValueError):
                pass

    def _int64(self, body: dict[str, Any]) -> dict[str, Any]:
        if self.int64_as != "number":
            return body
        return _numbers(body)

    def _daily_rollup(self, request: Request, user: str, data_type: str) -> Response:
        self.calls[f"dailyRollUp {data_type}"] += 1
        try:
            payload = json.loads(request.get_data(as_text=True) or "{}")
        except ValueError:
            return _error(400, "INVALID_ARGUMENT", "INVALID_JSON", "Invalid JSON payload received.")
        self.requests.append((f"POST {request.path}", payload if isinstance(payload, dict) else {}))
        refused = self._checked(request, user, data_type)
        if refused is not None:
            return refused
        if data_type not in ROLLUPS:
            return _error(400, "INVALID_ARGUMENT", "UNSUPPORTED_DATA_TYPE_ACTION", "dailyRollUp is not supported.")
        key, max_days = ROLLUPS[data_type]
        if not isinstance(payload, dict):
            return _error(400, "INVALID_ARGUMENT", "INVALID_REQUEST", "The request must be an object.")
        span = payload.get("range")
        start = _civil_date(span.get("start")) if isinstance(span, dict) else None
        end = _civil_date(span.get("end")) if isinstance(span, dict) else None
        if start is None or end is None:
            return _error(400, "INVALID_ARGUMENT", "INVALID_RANGE", "range.start and range.end are required.")
        if start >= end:
            return _error(400, "INVALID_ARGUMENT", "INVALID_TIME_RANGE", "The range start must be before its end.")
        if (end - start).days > max_days:
            return _error(400, "INVALID_ARGUMENT", "INVALID_TIME_RANGE", f"The maximum range is {max_days} days.")
        window = payload.get("windowSizeDays", 1)
        if not isinstance(window, int) or window < 1:
            return _error(400, "INVALID_ARGUMENT", "INVALID_WINDOW_SIZE", "Invalid windowSizeDays.")
        with self.lock:
            values = dict(self.daily.get(data_type, {}))
        rows = []
        day = start
        while day < end:
            stop = min(day + timedelta(days=window), end)
            found = [values[d] for d in _days(day, stop) if d in values]
            if found:  # a window without data is left out
                row: dict[str, Any] = {
                    "civilStartTime": {"date": _date_object(day), "time": {}},
                    "civilEndTime": {"date": _date_object(stop), "time": {}},
                    key: copy.deepcopy(found[0]) if len(found) == 1 else _merge(found),
                }
                rows.append(row)
            day = stop
        rows.reverse()  # newest first, as observed
        size = payload.get("pageSize") or 1440
        binding = f"dailyRollUp|{data_type}|{start}|{end}|{window}"
        offset = _decode_token(str(payload.get("pageToken") or ""), binding)
        if offset is None or not isinstance(size, int) or size < 1:
            return _error(400, "INVALID_ARGUMENT", "INVALID_PAGE_TOKEN", "Invalid page token or size.")
        size = min(size, 10000)
        body: dict[str, Any] = {}
        if rows[offset : offset + size]:
            body["rollupDataPoints"] = rows[offset : offset + size]
        if offset + size < len(rows):
            body["nextPageToken"] = _encode_token(offset + size, binding)
        return _json(self._int64(body), 200)


FAMILIES = {
    "users/me/dataSourceFamilies/all-sources",
    "users/me/dataSourceFamilies/google-wearables",
    "users/me/dataSourceFamilies/google-sources",
}


# --- filters ---------------------------------------------------------------------------------


def _members(data_type: str) -> dict[str, str]:
    """The filter members a type accepts, and what each compares (discovery, `filter`)."""
    snake = data_type.replace("-", "_")
    kind = DATA_TYPES[data_type][1]
    if kind == "sample":
        return {f"{snake}.sample_time.physical_time": "instant", f"{snake}.sample_time.civil_time": "civil"}
    if kind == "interval":
        return {f"{snake}.interval.start_time": "instant", f"{snake}.interval.civil_start_time": "civil"}
    if kind == "session":  # sessions other than sleep and ECG: civil start time only
        return {f"{snake}.interval.civil_start_time": "civil"}
    if kind == "sleep":
        return {f"{snake}.interval.end_time": "instant", f"{snake}.interval.civil_end_time": "civil"}
    return {f"{snake}.date": "date"}


def _parse_filter(text: str, data_type: str) -> list[tuple[str, str, str]] | Response:
    conditions = []
    members = _members(data_type)
    for part in [p for p in re.split(r"\bAND\b", text) if p.strip()]:
        match = _CONDITION.match(part)
        if not match:
            return _filter_error("INVALID_DATA_POINT_FILTER_SYNTAX", "Invalid filter syntax.")
        member, op, literal = match.groups()
        if member.split(".", 1)[0] != data_type.replace("-", "_"):
            return _filter_error(
                "INVALID_DATA_POINT_FILTER_COLLECTION_MISMATCH", f"Member '{member}' is of another data type."
            )
        if member not in members:
            return _filter_error(
                "INVALID_DATA_POINT_FILTER_DATA_TYPE_MEMBER", f"Member '{member}' is not supported for filtering."
            )
        if op not in (">=", "<"):
            return _filter_error("INVALID_DATA_POINT_FILTER_OPERATOR", f"Operator '{op}' is not supported.")
        what = members[member]
        valid = (
            _instant(literal) is not None
            if what == "instant"
            else bool(_DATE.match(literal))
            if what == "date"
            else bool(_CIVIL.match(literal))
        )
        if not valid:
            return _filter_error("INVALID_DATA_POINT_FILTER_LITERAL", f"Invalid literal for '{member}'.")
        conditions.append((member, op, literal))
    return conditions


def _filter_error(reason: str, description: str) -> Response:
    body = _status_body(400, f"Invalid data point filter: {reason}.", "INVALID_DATA_POINT_FILTER")
    body["error"]["details"][0]["metadata"] = {"detailedReasons": reason}
    body["error"]["details"].append(
        {
            "@type": "type.googleapis.com/google.rpc.BadRequest",
            "fieldViolations": [{"field": "filter", "description": description}],
        }
    )
    return _json(body, 400)


def _member_value(point: dict[str, Any], data_type: str, member: str) -> str:
    """The point's value for a member: UTC instants as `...Z`, civil times as `YYYY-MM-DDTHH:MM:SS`."""
    body = point[DATA_TYPES[data_type][0]]
    if member.endswith("sample_time.physical_time"):
        return _normal_instant(body["sampleTime"]["physicalTime"])
    if member.endswith("sample_time.civil_time"):
        return _civil_text(_local(body["sampleTime"]["physicalTime"], body["sampleTime"].get("utcOffset", "0s")))
    if member.endswith("interval.start_time"):
        return _normal_instant(body["interval"]["startTime"])
    if member.endswith("interval.end_time"):
        return _normal_instant(body["interval"]["endTime"])
    if member.endswith("civil_start_time"):
        interval = body["interval"]
        return _civil_text(_local(interval["startTime"], interval.get("startUtcOffset", "0s")))
    if member.endswith("civil_end_time"):
        interval = body["interval"]
        return _civil_text(_local(interval["endTime"], interval.get("endUtcOffset", "0s")))
    found = _civil_date({"date": body["date"]})
    return found.isoformat() if found else ""


def _matches(point: dict[str, Any], data_type: str, conditions: list[tuple[str, str, str]]) -> bool:
    try:
        for member, op, literal in conditions:
            value = _member_value(point, data_type, member)
            bound = _normal_instant(literal) if _instant(literal) is not None else literal
            if len(bound) == 10 and len(value) > 10:  # a date literal against a date-time
                bound += "T00:00:00"
            if not {">=": value >= bound, "<": value < bound}[op]:
                return False
    except (KeyError, TypeError, ValueError, AttributeError):
        return True  # a malformed stored point is served as is, for the client to cope with
    return True


def _sort_key(point: dict[str, Any], data_type: str) -> str:
    body = point.get(DATA_TYPES[data_type][0])
    try:
        assert isinstance(body, dict)
        if "sampleTime" in body:
            return _normal_instant(body["sampleTime"]["physicalTime"])
        if "interval" in body:
            return _normal_instant(body["interval"]["startTime"])
        found = _civil_date({"date": body["date"]})
        return found.isoformat() if found else ""
    except (AssertionError, KeyError, TypeError, ValueError, AttributeError):
        return ""


def _encode_token(offset: int, binding: str) -> str:
    digest = hashlib.sha256(binding.encode()).hexdigest()[:16]
    return base64.urlsafe_b64encode(json.dumps({"o": offset, "q": digest}).encode()).decode()


def _decode_token(token: str, binding: str) -> int | None:
    """A page token only works with the query that produced it (discovery: "All other request
    fields need to be the same as in the initial request")."""
    if not token:
        return 0
    try:
        data = json.loads(base64.urlsafe_b64decode(token.encode()))
        if data["q"] != hashlib.sha256(binding.encode()).hexdigest()[:16]:
            return None
        return int(data["o"])
    except (ValueError, KeyError, TypeError):
        return None


# --- wire helpers ----------------------------------------------------------------------------


def _name(data_type: str, point_id: str) -> str:
    return f"users/{HEALTH_USER_ID}/dataTypes/{data_type}/dataPoints/{point_id}"


def _platform(point: dict[str, Any]) -> str:
    source = point.get("dataSource")
    return str(source.get("platform", "")) if isinstance(source, dict) else ""


def _interval(start: datetime, end: datetime, offset_s: int, end_offset_s: int | None = None) -> dict[str, Any]:
    return {
        "startTime": _rfc3339(start),
        "startUtcOffset": f"{offset_s}s",
        "endTime": _rfc3339(end),
        "endUtcOffset": f"{offset_s if end_offset_s is None else end_offset_s}s",
    }


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _instant(text: str) -> datetime | None:
    if "T" not in text or not (text.endswith("Z") or re.search(r"[+-]\d{2}:\d{2}$", text)):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def _normal_instant(text: str) -> str:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _local(instant: str, offset: str) -> datetime:
    moment = datetime.fromisoformat(instant.replace("Z", "+00:00")).astimezone(UTC).replace(tzinfo=None)
    return moment + timedelta(seconds=int(str(offset).rstrip("s").split(".")[0]))


def _civil_object(local: datetime) -> dict[str, Any]:
    """proto3 civil time: zero parts omitted (midnight is `time: {}`)."""
    time_part = {k: v for k, v in (("hours", local.hour), ("minutes", local.minute), ("seconds", local.second)) if v}
    return {"date": _date_object(local.date()), "time": time_part}


def _date_object(day: date) -> dict[str, int]:
    return {"year": day.year, "month": day.month, "day": day.day}


def _civil_text(local: datetime) -> str:
    return local.strftime("%Y-%m-%dT%H:%M:%S")


def _civil_date(civil: Any) -> date | None:
    try:
        parts = civil["date"]
        return date(int(parts["year"]), int(parts["month"]), int(parts["day"]))
    except (KeyError, TypeError, ValueError):
        return None


def _days(start: date, stop: date) -> Iterable[date]:
    day = start
    while day < stop:
        yield day
        day += timedelta(days=1)


def _merge(values: list[dict[str, Any]]) -> dict[str, Any]:
    """Several days in one window (windowSizeDays > 1): sums of the numeric leaves."""
    merged = copy.deepcopy(values[0])
    for value in values[1:]:
        for key, item in value.items():
            if isinstance(item, int | float) and isinstance(merged.get(key), int | float):
                merged[key] += item
            elif isinstance(item, str) and item.isdigit() and str(merged.get(key, "")).isdigit():
                merged[key] = str(int(merged[key]) + int(item))
    return merged


def _numbers(value: Any, key: str = "") -> Any:
    if isinstance(value, dict):
        return {k: _numbers(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_numbers(v, key) for v in value]
    if key in INT64_FIELDS and isinstance(value, str) and re.fullmatch(r"-?\d+", value):
        return int(value)
    return value


def _status_body(code: int, message: str, reason: str, domain: str = "health.googleapis.com") -> dict[str, Any]:
    status = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND"}.get(
        code, "RESOURCE_EXHAUSTED" if code == 429 else "UNAVAILABLE" if code >= 500 else "UNKNOWN"
    )
    return {
        "error": {
            "code": code,
            "message": message,
            "status": status,
            "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason, "domain": domain}],
        }
    }


def _error(code: int, status: str, reason: str, message: str) -> Response:
    body = _status_body(code, message, reason)
    body["error"]["status"] = status
    return _json(body, code)


def _unauthenticated() -> Response:
    """As observed for a bad access token (ansanloms/skills): no details."""
    message = (
        "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or "
        "other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project."
    )
    return _json({"error": {"code": 401, "message": message, "status": "UNAUTHENTICATED"}}, 401)


def _insufficient_scope() -> Response:
    """Google APIs' answer to a token without the method's scope."""
    body = _status_body(
        403, "Request had insufficient authentication scopes.", "ACCESS_TOKEN_SCOPE_INSUFFICIENT", "googleapis.com"
    )
    return _json(body, 403)


def _oauth_error(code: int, error: str, description: str) -> Response:
    return _json({"error": error, "error_description": description}, code)


def _json(body: Any, status: int) -> Response:
    return Response(json.dumps(body), status, {"Cache-Control": "no-store"}, content_type="application/json")


# --- published examples ----------------------------------------------------------------------
# Payloads as published (trimmed where their publisher trimmed them). Where no example was
# published, a payload is built from the discovery schema and says so.

# developers.google.com/health/endpoints, the sleep example (as quoted by ansanloms/skills
# google-health/SKILL.md, "公式ドキュメント掲載の例"; stages left out there).
DOCS_SLEEP: dict[str, Any] = {
    "name": "users/2515055256096816351/dataTypes/sleep/dataPoints/2724123844716220216",
    "dataSource": {"recordingMethod": "DERIVED", "device": {"displayName": "Charge 6"}, "platform": "FITBIT"},
    "sleep": {
        "interval": {
            "startTime": "2026-03-03T20:57:30Z",
            "startUtcOffset": "0s",
            "endTime": "2026-03-04T04:41:30Z",
            "endUtcOffset": "0s",
        },
        "type": "STAGES",
        "summary": {
            "minutesAsleep": "407",
            "minutesAwake": "57",
            "stagesSummary": [{"type": "DEEP", "minutes": "114", "count": "10"}],
        },
    },
}

# A live list answer (Pixel Watch 4, Japan), ansanloms/skills google-health/SKILL.md; the
# reconciled version of the same sleep has `dataPointName`, no `dataSource`, and its
# stagesSummary listed twice (see `GoogleHealthEmulator.reconcile_shape`).
OBSERVED_SLEEP: dict[str, Any] = {
    "name": "users/1173016576421350648/dataTypes/sleep/dataPoints/8808518358174752984",
    "dataSource": {"recordingMethod": "DERIVED", "device": {"displayName": "Pixel Watch 4"}, "platform": "FITBIT"},
    "sleep": {
        "interval": {
            "startTime": "2026-09-26T04:09:00Z",
            "startUtcOffset": "32400s",
            "endTime": "2026-09-26T08:23:00Z",
            "endUtcOffset": "32400s",
        },
        "type": "STAGES",
        "stages": [
            {
                "startTime": "2026-09-26T04:09:00Z",
                "startUtcOffset": "32400s",
                "endTime": "2026-09-26T04:15:00Z",
                "endUtcOffset": "32400s",
                "type": "AWAKE",
                "createTime": "2026-09-26T08:33:37.998943Z",
                "updateTime": "2026-09-26T08:33:37.998943Z",
            },
            {
                "startTime": "2026-09-26T04:15:00Z",
                "startUtcOffset": "32400s",
                "endTime": "2026-09-26T04:28:00Z",
                "endUtcOffset": "32400s",
                "type": "LIGHT",
                "createTime": "2026-09-26T08:33:37.998943Z",
                "updateTime": "2026-09-26T08:33:37.998943Z",
            },
        ],
        "metadata": {"stagesStatus": "SUCCEEDED", "processed": True, "mainSleep": True},
        "summary": {
            "minutesInSleepPeriod": "254",
            "minutesAfterWakeUp": "0",
            "minutesToFallAsleep": "0",
            "minutesAsleep": "248",
            "minutesAwake": "6",
            "stagesSummary": [
                {"type": "AWAKE", "minutes": "6", "count": "1"},
                {"type": "LIGHT", "minutes": "146", "count": "6"},
                {"type": "DEEP", "minutes": "48", "count": "3"},
                {"type": "REM", "minutes": "54", "count": "3"},
            ],
        },
        "createTime": "2026-09-26T08:33:36.038623Z",
        "updateTime": "2026-09-26T08:33:42.827423Z",
        "shortAwakenings": [
            {
                "startTime": "2026-09-26T04:16:00Z",
                "startUtcOffset": "32400s",
                "endTime": "2026-09-26T04:17:00Z",
                "endUtcOffset": "32400s",
                "type": "LIGHT",
            }
        ],
    },
}

# Live exercise answers (Pixel Watch 4, Japan), ansanloms/skills google-health/SKILL.md.
OBSERVED_EXERCISES: list[dict[str, Any]] = [
    {
        "name": "users/1173016576421350648/dataTypes/exercise/dataPoints/3326913505930631984",
        "dataSource": {
            "recordingMethod": "PASSIVELY_MEASURED",
            "device": {"formFactor": "WATCH", "displayName": "Pixel Watch 4"},
            "platform": "FITBIT",
        },
        "exercise": {
            "interval": {
                "startTime": "2026-09-25T00:33:29Z",
                "startUtcOffset": "32400s",
                "endTime": "2026-09-25T00:55:12Z",
                "endUtcOffset": "32400s",
            },
            "exerciseType": "CARDIO_WORKOUT",
            "metricsSummary": {
                "caloriesKcal": 202,
                "averageHeartRateBeatsPerMinute": "115",
                "activeZoneMinutes": "19",
                "heartRateZoneDurations": {
                    "lightTime": "300s",
                    "moderateTime": "900s",
                    "vigorousTime": "120s",
                    "peakTime": "0s",
                },
            },
            "exerciseMetadata": {},
            "displayName": "アクティビティ",
            "activeDuration": "1303s",
            "updateTime": "2026-09-25T02:17:18.107531Z",
            "createTime": "2026-09-25T02:17:18.107531Z",
        },
    },
    {
        "name": "users/1173016576421350648/dataTypes/exercise/dataPoints/7140869748721445965",
        "dataSource": {
            "recordingMethod": "ACTIVELY_MEASURED",
            "device": {"formFactor": "WATCH", "displayName": "Pixel Watch 4"},
            "platform": "FITBIT",
        },
        "exercise": {
            "interval": {
                "startTime": "2026-09-24T23:00:33Z",
                "startUtcOffset": "32400s",
                "endTime": "2026-09-24T23:58:24Z",
                "endUtcOffset": "32400s",
            },
            "exerciseType": "WEIGHTLIFTING",
            "metricsSummary": {
                "caloriesKcal": 440,
                "averageHeartRateBeatsPerMinute": "107",
                "activeZoneMinutes": "30",
                "heartRateZoneDurations": {
                    "lightTime": "1620s",
                    "moderateTime": "1860s",
                    "vigorousTime": "0s",
                    "peakTime": "0s",
                },
            },
            "exerciseMetadata": {},
            "displayName": "ウエイトリフティング",
            "activeDuration": "3471s",
            "exerciseEvents": [
                {"eventTime": "2026-09-24T23:00:33Z", "eventUtcOffset": "32400s", "exerciseEventType": "START"},
                {"eventTime": "2026-09-24T23:58:24Z", "eventUtcOffset": "32400s", "exerciseEventType": "STOP"},
            ],
            "updateTime": "2026-09-24T23:58:27.169277Z",
            "createTime": "2026-09-24T23:06:34.378717Z",
        },
    },
]

# Live heart-rate samples (Pixel Watch 4, Japan), ansanloms/skills google-health/SKILL.md.
OBSERVED_HEART_RATE: list[dict[str, Any]] = [
    {
        "dataSource": {
            "recordingMethod": "PASSIVELY_MEASURED",
            "device": {"displayName": "Pixel Watch 4"},
            "platform": "FITBIT",
        },
        "heartRate": {
            "sampleTime": {
                "physicalTime": "2026-09-25T10:04:59Z",
                "utcOffset": "32400s",
                "civilTime": {
                    "date": {"year": 2026, "month": 9, "day": 25},
                    "time": {"hours": 19, "minutes": 4, "seconds": 59},
                },
            },
            "beatsPerMinute": "49",
        },
    },
    {
        "dataSource": {
            "recordingMethod": "PASSIVELY_MEASURED",
            "device": {"displayName": "Pixel Watch 4"},
            "platform": "FITBIT",
        },
        "heartRate": {
            "sampleTime": {
                "physicalTime": "2026-09-25T10:04:57Z",
                "utcOffset": "32400s",
                "civilTime": {
                    "date": {"year": 2026, "month": 9, "day": 25},
                    "time": {"hours": 19, "minutes": 4, "seconds": 57},
                },
            },
            "beatsPerMinute": "50",
        },
    },
]

# Live dailyRollUp answers (Pixel Watch 4, Japan), ansanloms/skills google-health/SKILL.md:
# total-calories for 2026-09-19..25 (all published), steps for 2026-09-24..25 (as published).
OBSERVED_TOTAL_CALORIES = {
    date(2026, 9, 25): {"kcalSum": 3028.784634},
    date(2026, 9, 24): {"kcalSum": 2815.163479},
    date(2026, 9, 23): {"kcalSum": 2916.273316},
    date(2026, 9, 22): {"kcalSum": 3435.855093},
    date(2026, 9, 21): {"kcalSum": 2988.19035},
    date(2026, 9, 20): {"kcalSum": 2906.124745},
    date(2026, 9, 19): {"kcalSum": 3632.937836},
}
OBSERVED_STEPS = {date(2026, 9, 25): {"countSum": "9525"}, date(2026, 9, 24): {"countSum": "6859"}}
# No published answers for these roll-ups: values of our own, in the discovery's shapes
# (DistanceRollupValue, ActiveEnergyBurnedRollupValue, ActiveMinutesRollupValue,
# SedentaryPeriodRollupValue).
SCHEMA_DISTANCE = {date(2026, 9, 25): {"millimetersSum": "7412000"}}
SCHEMA_ACTIVE_ENERGY = {date(2026, 9, 25): {"kcalSum": 612.4}}
SCHEMA_ACTIVE_MINUTES = {
    date(2026, 9, 25): {
        "activeMinutesRollupByActivityLevel": [
            {"activityLevel": "LIGHT", "activeMinutesSum": "187"},
            {"activityLevel": "MODERATE", "activeMinutesSum": "23"},
            {"activityLevel": "VIGOROUS", "activeMinutesSum": "12"},
        ]
    }
}
SCHEMA_SEDENTARY = {date(2026, 9, 25): {"durationSum": "41400s"}}

# Daily types. No answer of these has been published; points in the discovery's shapes
# (DailyRestingHeartRate, DailyHeartRateVariability, DailyRespiratoryRate,
# DailySleepTemperatureDerivations, DailyVO2Max: `date` a google.type.Date of integers, int64
# fields as strings), with values inside the ranges a public client measured live over 30
# nights on a Pixel Watch 3 (ryanckelly/Foodlog, docs/health-data-discovery-pixel-watch.md).
_DERIVED = {"recordingMethod": "DERIVED", "platform": "FITBIT"}
SCHEMA_RESTING_HEART_RATE: list[dict[str, Any]] = [
    {
        "dataSource": _DERIVED,
        "dailyRestingHeartRate": {
            "date": {"year": 2026, "month": 9, "day": 26},
            "beatsPerMinute": "56",
            "dailyRestingHeartRateMetadata": {"calculationMethod": "WITH_SLEEP"},
        },
    },
    {
        "dataSource": _DERIVED,
        "dailyRestingHeartRate": {
            "date": {"year": 2026, "month": 9, "day": 25},
            "beatsPerMinute": "58",
            "dailyRestingHeartRateMetadata": {"calculationMethod": "ONLY_WITH_AWAKE_DATA"},
        },
    },
]
SCHEMA_HEART_RATE_VARIABILITY: list[dict[str, Any]] = [
    {
        "dataSource": _DERIVED,
        "dailyHeartRateVariability": {
            "date": {"year": 2026, "month": 9, "day": 26},
            "averageHeartRateVariabilityMilliseconds": 48.374,
            "deepSleepRootMeanSquareOfSuccessiveDifferencesMilliseconds": 46.91,
            "entropy": 3.104,
            "nonRemHeartRateBeatsPerMinute": "56",
        },
    },
    # "At least one of the following fields must be set": a night with no average RMSSD.
    {
        "dataSource": _DERIVED,
        "dailyHeartRateVariability": {
            "date": {"year": 2026, "month": 9, "day": 25},
            "entropy": 2.861,
            "nonRemHeartRateBeatsPerMinute": "61",
        },
    },
]
SCHEMA_RESPIRATORY_RATE: list[dict[str, Any]] = [
    {
        "dataSource": _DERIVED,
        "dailyRespiratoryRate": {"date": {"year": 2026, "month": 9, "day": 26}, "breathsPerMinute": 10.6},
    }
]
SCHEMA_SLEEP_TEMPERATURE: list[dict[str, Any]] = [
    {
        "dataSource": _DERIVED,
        "dailySleepTemperatureDerivations": {
            "date": {"year": 2026, "month": 9, "day": 26},
            "nightlyTemperatureCelsius": 33.41,
            "baselineTemperatureCelsius": 32.87,
            "relativeNightlyStddev30dCelsius": 0.31,
        },
    },
    # baselineTemperatureCelsius is optional (a new user has no 30 nights yet).
    {
        "dataSource": _DERIVED,
        "dailySleepTemperatureDerivations": {
            "date": {"year": 2026, "month": 9, "day": 25},
            "nightlyTemperatureCelsius": 32.64,
        },
    },
]
SCHEMA_VO2_MAX: list[dict[str, Any]] = [
    {
        "dataSource": _DERIVED,
        "dailyVo2Max": {
            "date": {"year": 2026, "month": 9, "day": 26},
            "vo2Max": 44.73,
            "cardioFitnessLevel": "GOOD",
            "vo2MaxCovariance": 1.9,
        },
    }
]
