"""An emulator of the Google Health API (v4) and Google OAuth 2.0, for the `fitbit` source.

OAuth: `/o/oauth2/v2/auth` redirects back with `code` + `state` (or `error=access_denied`);
`/token` takes form-encoded `authorization_code` (with PKCE S256) and `refresh_token` grants,
answers `expires_in: 3599`, never rotates refresh tokens, and refuses with RFC 6749
`invalid_grant`; `/revoke`. Data: `/v4/users/me/identity` and the `dataPoints` list of each data
type, with the AIP-160 filter member each record kind accepts (400 + ErrorInfo otherwise),
newest first, opaque page tokens, page-size caps (25 for exercise and sleep), proto3 JSON
(int64 as strings, durations `"<n>s"`), google.rpc.Status errors, 401 for a dead token, 403 for
an ungranted scope, 429 past a per-user per-minute limit. Faults can be injected per path.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from werkzeug.wrappers import Request, Response

from . import ServerThread

CLIENT_ID = "gh-client-1.apps.googleusercontent.com"
CLIENT_SECRET = "gh-secret-1"
HEALTH_USER_ID = "hu-4f2a9c"
LEGACY_USER_ID = "GGNJL9"

SCOPE = "https://www.googleapis.com/auth/googlehealth."
SCOPE_OF = {
    "exercise": SCOPE + "activity_and_fitness.readonly",
    "sleep": SCOPE + "sleep.readonly",
}
METRICS_SCOPE = SCOPE + "health_metrics_and_measurements.readonly"
KEYS = {
    "exercise": "exercise",
    "sleep": "sleep",
    "heart-rate": "heartRate",
    "weight": "weight",
    "body-fat": "bodyFat",
    "height": "height",
    "oxygen-saturation": "oxygenSaturation",
    "blood-glucose": "bloodGlucose",
}
SAMPLE_TYPES = ("heart-rate", "weight", "body-fat", "height", "oxygen-saturation", "blood-glucose")
_CONDITION = re.compile(r'^\s*([a-z_.]+)\s*(>=|<=|>|<)\s*"([^"]+)"\s*$')


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
    calls: Counter[str] = field(default_factory=Counter)
    faults: list[Fault] = field(default_factory=list)
    points: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        self.codes: dict[str, dict[str, Any]] = {}
        self.access: dict[str, dict[str, Any]] = {}
        self.refresh: dict[str, dict[str, Any]] = {}
        self.recent: deque[float] = deque()
        self.requests: list[tuple[str, dict[str, str]]] = []  # (path, query) of data calls
        self.server = ServerThread(self.wsgi)

    # --- lifecycle and test controls ----------------------------------------------------------
    @property
    def url(self) -> str:
        return self.server.url

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
    def add_sample(
        self,
        data_type: str,
        at: datetime,
        value: float,
        *,
        offset_s: int = 3600,
        platform: str = "FITBIT",
        device: str = "Pixel Watch 3",
    ) -> str:
        field_name = {
            "heart-rate": "beatsPerMinute",
            "weight": "weightGrams",
            "body-fat": "percentage",
            "height": "heightMillimeters",
            "oxygen-saturation": "percentage",
            "blood-glucose": "bloodGlucoseMilligramsPerDeciliter",
        }[data_type]
        int64 = data_type in ("heart-rate", "height")
        body: dict[str, Any] = {
            "sampleTime": {
                "physicalTime": _rfc3339(at),
                "utcOffset": f"{offset_s}s",
                "civilTime": _civil_object(at + timedelta(seconds=offset_s)),
            },
            field_name: str(round(value)) if int64 else value,
        }
        point_id = secrets.token_hex(6)
        point: dict[str, Any] = {
            "dataSource": {
                "platform": platform,
                "recordingMethod": "PASSIVELY_MEASURED",
                "device": {"displayName": device},
            },
            KEYS[data_type]: body,
        }
        if data_type != "heart-rate":  # heart-rate points are not identifiable
            point["name"] = f"users/{HEALTH_USER_ID}/dataTypes/{data_type}/dataPoints/{point_id}"
        with self.lock:
            self.points.setdefault(data_type, {})[point_id] = point
        return point_id

    def add_exercise(
        self,
        start: datetime,
        minutes: int,
        *,
        kind: str = "RUNNING",
        distance_m: float = 5000.0,
        steps: int = 6000,
        kcal: float = 320.5,
        offset_s: int = 3600,
    ) -> str:
        end = start + timedelta(minutes=minutes)
        body = {
            "interval": {
                "startTime": _rfc3339(start),
                "startUtcOffset": f"{offset_s}s",
                "endTime": _rfc3339(end),
                "endUtcOffset": f"{offset_s}s",
                "civilStartTime": _civil_object(start + timedelta(seconds=offset_s)),
                "civilEndTime": _civil_object(end + timedelta(seconds=offset_s)),
            },
            "exerciseType": kind,
            "displayName": kind.title(),
            "activeDuration": f"{minutes * 60 - 60}s",
            "metricsSummary": {
                "caloriesKcal": kcal,
                "distanceMillimeters": distance_m * 1000,
                "steps": str(steps),
                "averageHeartRateBeatsPerMinute": "141",
            },
            "exerciseMetadata": {"hasGps": False},
            "updateTime": _rfc3339(datetime.now(UTC)),
        }
        return self._add_named("exercise", body)

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
    ) -> str:
        in_bed = round((end - start).total_seconds() / 60)
        body = {
            # Sleep intervals come without civil times.
            "interval": {
                "startTime": _rfc3339(start),
                "startUtcOffset": f"{offset_s}s",
                "endTime": _rfc3339(end),
                "endUtcOffset": f"{offset_s}s",
            },
            "type": "STAGES",
            "summary": {
                "minutesAsleep": str(asleep),
                "minutesAwake": str(awake),
                "minutesInSleepPeriod": str(in_bed),
                "stagesSummary": [
                    {"type": "AWAKE", "minutes": str(awake), "count": str(wakeups)},
                    {"type": "LIGHT", "minutes": str(asleep), "count": "9"},
                ],
            },
            "metadata": {"nap": not main, "mainSleep": main, "processed": True},
        }
        return self._add_named("sleep", body)

    def _add_named(self, data_type: str, body: dict[str, Any]) -> str:
        point_id = secrets.token_hex(6)
        point = {
            "name": f"users/{HEALTH_USER_ID}/dataTypes/{data_type}/dataPoints/{point_id}",
            "dataSource": {"platform": "FITBIT", "recordingMethod": "DERIVED", "device": {"displayName": "Charge 6"}},
            KEYS[data_type]: body,
        }
        with self.lock:
            self.points.setdefault(data_type, {})[point_id] = point
        return point_id

    def update(self, data_type: str, point_id: str, **changes: Any) -> None:
        with self.lock:
            self.points[data_type][point_id][KEYS[data_type]].update(changes)

    def delete(self, data_type: str, point_id: str) -> None:
        with self.lock:
            del self.points[data_type][point_id]

    def add_malformed(self, data_type: str) -> None:
        """A point without its payload object (a shape the connector must skip, not crash on)."""
        with self.lock:
            self.points.setdefault(data_type, {})["broken"] = {
                "name": f"users/{HEALTH_USER_ID}/dataTypes/{data_type}/dataPoints/broken",
                KEYS[data_type]: {"interval": "yesterday", "sampleTime": {"physicalTime": "soon"}},
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
        path = request.path
        if path == "/o/oauth2/v2/auth" and request.method == "GET":
            return self._authorize(request)
        if path == "/token" and request.method == "POST":
            return self._token(request)
        if path == "/revoke" and request.method == "POST":
            return self._revoke(request)
        if path == "/v4/users/me/identity" and request.method == "GET":
            return self._identity(request)
        match = re.fullmatch(r"/v4/users/([^/]+)/dataTypes/([a-z-]+)/dataPoints", path)
        if match and request.method == "GET":
            return self._list(request, match.group(1), match.group(2))
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
        return _json({"name": "users/me/identity", "healthUserId": HEALTH_USER_ID, "legacyUserId": LEGACY_USER_ID}, 200)

    def _throttled(self) -> bool:
        now = time.monotonic()
        with self.lock:
            while self.recent and self.recent[0] < now - 60:
                self.recent.popleft()
            self.recent.append(now)
            return len(self.recent) > self.rate_limit_per_minute

    def _list(self, request: Request, user: str, data_type: str) -> Response:
        self.calls[f"list {data_type}"] += 1
        self.requests.append((request.path, dict(request.args)))
        grant = self._grant_of(request)
        if grant is None:
            return _unauthenticated()
        if user != "me":
            return _error(400, "INVALID_ARGUMENT", "INVALID_USER", "only users/me is supported")
        if data_type not in KEYS:
            return _error(400, "INVALID_ARGUMENT", "INVALID_PARENT_DATA_TYPE_COLLECTION", f"unknown {data_type}")
        if SCOPE_OF.get(data_type, METRICS_SCOPE) not in grant["scopes"]:
            return _error(403, "PERMISSION_DENIED", "ACCESS_TOKEN_SCOPE_INSUFFICIENT", "scope not granted")
        if self._throttled():
            return _error(429, "RESOURCE_EXHAUSTED", "RATE_LIMIT_EXCEEDED", "Quota exceeded for quota metric")
        conditions = _parse_filter(request.args.get("filter", ""), data_type)
        if isinstance(conditions, Response):
            return conditions
        cap = 25 if data_type in ("exercise", "sleep") else 10000
        size = min(int(request.args.get("pageSize") or (25 if cap == 25 else 1440)), cap)
        offset = _decode_token(request.args.get("pageToken", ""))
        if offset is None:
            return _error(400, "INVALID_ARGUMENT", "INVALID_PAGE_TOKEN", "Invalid page token")
        with self.lock:
            matching = [p for p in self.points.get(data_type, {}).values() if _matches(p, data_type, conditions)]
        matching.sort(key=lambda p: _sort_key(p, data_type), reverse=True)  # newest first
        page = matching[offset : offset + size]
        body: dict[str, Any] = {}
        if page:
            body["dataPoints"] = page
        if offset + size < len(matching):
            body["nextPageToken"] = base64.urlsafe_b64encode(json.dumps({"o": offset + size}).encode()).decode()
        return _json(body, 200)


# --- filters ---------------------------------------------------------------------------------


def _members(data_type: str) -> tuple[str, ...]:
    snake = data_type.replace("-", "_")
    if data_type == "exercise":
        return (f"{snake}.interval.civil_start_time",)
    if data_type == "sleep":
        return (f"{snake}.interval.end_time", f"{snake}.interval.civil_end_time")
    return (f"{snake}.sample_time.physical_time",)


def _parse_filter(text: str, data_type: str) -> list[tuple[str, str, str]] | Response:
    conditions = []
    for part in [p for p in re.split(r"\bAND\b", text) if p.strip()]:
        match = _CONDITION.match(part)
        if not match:
            return _error(400, "INVALID_ARGUMENT", "INVALID_DATA_POINT_FILTER_SYNTAX", "Invalid filter syntax.")
        member, op, literal = match.groups()
        if member.split(".", 1)[0] != data_type.replace("-", "_"):
            return _error(400, "INVALID_ARGUMENT", "INVALID_DATA_POINT_FILTER_COLLECTION_MISMATCH", member)
        if member not in _members(data_type):
            return _error(400, "INVALID_ARGUMENT", "INVALID_DATA_POINT_FILTER_DATA_TYPE_MEMBER", member)
        conditions.append((member, op, literal))
    return conditions


def _member_value(point: dict[str, Any], data_type: str, member: str) -> str:
    body = point[KEYS[data_type]]
    if member.endswith("sample_time.physical_time"):
        return _normal_instant(body["sampleTime"]["physicalTime"])
    if member.endswith("interval.end_time"):
        return _normal_instant(body["interval"]["endTime"])
    if member.endswith("civil_start_time"):
        return _civil_text(body["interval"]["civilStartTime"])
    # civil_end_time of a sleep: computed, since sleep points carry no civil fields
    end = datetime.fromisoformat(body["interval"]["endTime"].replace("Z", "+00:00"))
    offset = int(body["interval"]["endUtcOffset"].rstrip("s"))
    return (end + timedelta(seconds=offset)).strftime("%Y-%m-%dT%H:%M:%S")


def _matches(point: dict[str, Any], data_type: str, conditions: list[tuple[str, str, str]]) -> bool:
    try:
        for member, op, literal in conditions:
            value = _member_value(point, data_type, member)
            bound = _normal_instant(literal) if literal.endswith("Z") else literal
            if not {">=": value >= bound, ">": value > bound, "<": value < bound, "<=": value <= bound}[op]:
                return False
    except (KeyError, TypeError, ValueError, AttributeError):
        return True  # a malformed stored point is served as is, for the client to cope with
    return True


def _sort_key(point: dict[str, Any], data_type: str) -> str:
    try:
        return _member_value(point, data_type, _members(data_type)[0])
    except (KeyError, TypeError, ValueError, AttributeError):
        return ""


def _decode_token(token: str) -> int | None:
    if not token:
        return 0
    try:
        return int(json.loads(base64.urlsafe_b64decode(token.encode()))["o"])
    except (ValueError, KeyError, TypeError):
        return None


# --- wire helpers ----------------------------------------------------------------------------


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _normal_instant(text: str) -> str:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _civil_object(local: datetime) -> dict[str, Any]:
    """proto3 civil time: zero parts omitted (midnight is `time: {}`)."""
    date_part = {"year": local.year, "month": local.month, "day": local.day}
    time_part = {k: v for k, v in (("hours", local.hour), ("minutes", local.minute), ("seconds", local.second)) if v}
    return {"date": date_part, "time": time_part}


def _civil_text(civil: dict[str, Any]) -> str:
    d, t = civil["date"], civil.get("time", {})
    return (
        f"{d['year']:04d}-{d['month']:02d}-{d['day']:02d}"
        f"T{t.get('hours', 0):02d}:{t.get('minutes', 0):02d}:{t.get('seconds', 0):02d}"
    )


def _status_body(code: int, message: str, reason: str) -> dict[str, Any]:
    status = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND"}.get(
        code, "RESOURCE_EXHAUSTED" if code == 429 else "UNAVAILABLE" if code >= 500 else "UNKNOWN"
    )
    return {
        "error": {
            "code": code,
            "message": message,
            "status": status,
            "details": [
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": reason,
                    "domain": "health.googleapis.com",
                }
            ],
        }
    }


def _error(code: int, status: str, reason: str, message: str) -> Response:
    body = _status_body(code, message, reason)
    body["error"]["status"] = status
    return _json(body, code)


def _unauthenticated() -> Response:
    return _error(401, "UNAUTHENTICATED", "ACCESS_TOKEN_EXPIRED", "Request had invalid authentication credentials.")


def _oauth_error(code: int, error: str, description: str) -> Response:
    return _json({"error": error, "error_description": description}, code)


def _json(body: Any, status: int) -> Response:
    return Response(json.dumps(body), status, {"Cache-Control": "no-store"}, content_type="application/json")
