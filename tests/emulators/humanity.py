"""An emulator of Humanity (API v2) for tests: the OAuth2 password grant with expiring access
tokens and rotating refresh tokens, the `/api/v2/` data endpoints with Humanity's envelope and
payload shapes, and the failures a client must survive (HTTP 401 / status 3, HTTP 429 / status
91 with Retry-After, 5xx, malformed JSON, slow answers, a request that hangs until released).

Everything is in memory and guarded by one lock; counters let tests assert what was called.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from werkzeug.wrappers import Request, Response

from . import ServerThread

CLIENT_ID = "hum-app-1"
CLIENT_SECRET = "hum-secret-1"
USERNAME = "manager@acme.example"
PASSWORD = "correct horse battery"
EMPLOYEE_ID = "1001"


@dataclass
class Fault:
    """Answer matching requests with a failure: skip the first `skip`, then fail `times` of
    them (None: every one from then on)."""

    path: str
    kind: str  # http500 | http429 | status91 | status3 | http401 | malformed | slow | hang | redirect
    times: int | None = 1
    skip: int = 0
    retry_after: int | None = None
    delay: float = 0.0
    seen: int = 0


@dataclass
class Grant:
    username: str
    expires_at: float


@dataclass
class HumanityEmulator:
    tz_offset_minutes: int = -300  # the account's local time zone (UTC-05:00)
    token_lifetime: int = 3600
    refresh_delay: float = 0.0  # seconds a refresh grant takes (to make races overlap)
    calls: Counter[str] = field(default_factory=Counter)
    grants: Counter[str] = field(default_factory=Counter)  # grant_type -> successful grants
    refused_refresh_tokens: list[str] = field(default_factory=list)
    shifts: dict[str, dict[str, Any]] = field(default_factory=dict)
    timeclocks: dict[str, dict[str, Any]] = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)
    max_concurrent: int = 0

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        self.release = threading.Event()  # lets a hanging request go
        self.access: dict[str, Grant] = {}
        self.refresh: dict[str, str] = {}  # refresh token -> username
        self.users = {USERNAME: {"password": PASSWORD, "id": EMPLOYEE_ID, "name": "Morgan Manager"}}
        self.clients = {CLIENT_ID: CLIENT_SECRET}
        self.positions = {"11": {"id": "11", "name": "Front Desk", "location": {"id": "21", "name": "Main St"}}}
        self.positions["12"] = {"id": "12", "name": "Kitchen", "location": {"id": "22", "name": "Harbour"}}
        self.locations = {"21": {"id": "21", "name": "Main St"}, "22": {"id": "22", "name": "Harbour"}}
        self._in_flight = 0
        self.server = ServerThread(self.wsgi)

    # --- lifecycle ----------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return self.server.url

    def start(self) -> HumanityEmulator:
        self.server.start()
        return self

    def stop(self) -> None:
        self.release.set()
        self.server.stop()

    # --- test controls ------------------------------------------------------------------------
    def fail(self, path: str, kind: str, **options: Any) -> Fault:
        fault = Fault(path=path, kind=kind, **options)
        with self.lock:
            self.faults.append(fault)
        return fault

    def expire_access_tokens(self) -> None:
        """The provider forgets every access token (as after a password change or expiry)."""
        with self.lock:
            self.access.clear()

    def revoke_refresh_tokens(self) -> None:
        with self.lock:
            self.refresh.clear()

    def local(self, moment: datetime) -> datetime:
        return moment.astimezone(UTC).replace(tzinfo=None) + timedelta(minutes=self.tz_offset_minutes)

    def add_shift(
        self,
        shift_id: str,
        start: datetime,
        hours: float = 8,
        *,
        title: str = "Opening",
        position: str = "11",
        published: bool = True,
        employees: Iterable[str] = (EMPLOYEE_ID,),
    ) -> dict[str, Any]:
        end = start + timedelta(hours=hours)
        shift = {
            "id": shift_id,
            "title": title,
            "notes": "",
            "schedule": position,
            "schedule_name": self.positions[position]["name"],
            "schedule_location_id": self.positions[position]["location"]["id"],
            "start_date": self._date_object(start),
            "end_date": self._date_object(end),
            "start_timestamp": str(int(start.timestamp())),
            "end_timestamp": str(int(end.timestamp())),
            "employees": [
                {"id": e, "name": self.users[USERNAME]["name"] if e == EMPLOYEE_ID else e} for e in employees
            ],
            "published": 1 if published else 0,
            "confirmed": 1,
            "paidtime": str(hours),
        }
        with self.lock:
            self.shifts[shift_id] = shift
        return shift

    def add_timeclock(
        self, clock_id: str, start: datetime, hours: float | None, *, shift: str | None = None, position: str = "11"
    ) -> dict[str, Any]:
        out = int((start + timedelta(hours=hours)).timestamp()) if hours is not None else None
        clock = {
            "id": clock_id,
            "employee": {"id": EMPLOYEE_ID, "name": self.users[USERNAME]["name"]},
            "schedule": {"id": position, "name": self.positions[position]["name"]},
            "in_timestamp": str(int(start.timestamp())),
            "out_timestamp": str(out) if out is not None else None,
            "length": {"total_hours": hours},
            "shift": shift,
            "notes": "",
        }
        with self.lock:
            self.timeclocks[clock_id] = clock
        return clock

    def remove_shift(self, shift_id: str) -> None:
        with self.lock:
            del self.shifts[shift_id]

    def _date_object(self, moment: datetime) -> dict[str, Any]:
        local = self.local(moment)
        return {
            "date": local.strftime("%Y-%m-%d"),
            "time": local.strftime("%I:%M%p").lstrip("0").lower(),
            "formatted": local.strftime("%b %d, %Y").replace(" 0", " "),
            "timestamp": int(moment.timestamp()),
            "day": local.day,
            "month": local.month,
            "year": local.year,
            "weekday": local.strftime("%a"),
        }

    # --- HTTP ---------------------------------------------------------------------------------
    def wsgi(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        with self.lock:
            self.calls[request.path] += 1
            self._in_flight += 1 if request.path.startswith("/api/") else 0
            self.max_concurrent = max(self.max_concurrent, self._in_flight)
        try:
            response = self._fault(request) or self._route(request)
        finally:
            with self.lock:
                self._in_flight -= 1 if request.path.startswith("/api/") else 0
        return response(environ, start_response)

    def _fault(self, request: Request) -> Response | None:
        with self.lock:
            fault = next((f for f in self.faults if f.path == request.path and self._due(f)), None)
        if fault is None:
            return None
        if fault.kind == "slow":
            time.sleep(fault.delay)
            return None
        if fault.kind == "hang":
            self.release.wait(timeout=60)
            return None
        headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
        answers = {
            "http500": (500, {"status": 0, "error": "Internal error"}),
            "http429": (429, {"status": 91, "error": "You have exceeded the max allowed requests"}),
            "status91": (200, {"status": 91, "error": "You have exceeded the max allowed requests"}),
            "status3": (200, {"status": 3, "error": "Invalid token"}),
            "http401": (401, {"status": 3, "error": "Invalid token"}),
        }
        if fault.kind == "malformed":
            return Response('{"status": 1, "data": [', status=200, content_type="application/json")
        if fault.kind == "redirect":
            return Response("", status=302, headers={"Location": "http://10.0.0.1/"})
        status, body = answers[fault.kind]
        return _json(body, status, headers)

    def _due(self, fault: Fault) -> bool:
        fault.seen += 1
        if fault.seen <= fault.skip:
            return False
        return fault.times is None or fault.seen - fault.skip <= fault.times

    def _route(self, request: Request) -> Response:
        if request.path == "/oauth2/token.php":
            return self._token(request)
        routes = {
            "/api/v2/me": self._me,
            "/api/v2/shifts": self._shifts,
            "/api/v2/timeclocks": self._timeclocks,
            "/api/v2/positions": lambda r, u: ok(list(self.positions.values())),
            "/api/v2/locations": lambda r, u: ok(list(self.locations.values())),
        }
        handler = routes.get(request.path)
        if handler is None:
            return _json({"status": 15, "error": "Unknown method"}, 404)
        username = self._user_of(request)
        if username is None:
            return _json({"status": 3, "error": "Invalid or expired token"}, 200)
        return handler(request, username)

    def _user_of(self, request: Request) -> str | None:
        token = request.args.get("access_token", "")
        auth = request.headers.get("Authorization", "")
        if not token and auth.lower().startswith("bearer "):
            token = auth[7:]
        with self.lock:
            grant = self.access.get(token)
        if grant is None or grant.expires_at < time.time():
            return None
        return grant.username

    # --- OAuth2 ---------------------------------------------------------------------------------
    def _token(self, request: Request) -> Response:
        if request.method != "POST":
            return _json({"error": "invalid_request"}, 405)
        form = request.form
        if self.clients.get(form.get("client_id", "")) != form.get("client_secret"):
            return _json({"error": "invalid_client", "error_description": "The client credentials are invalid"}, 401)
        grant_type = form.get("grant_type")
        if grant_type == "password":
            user = self.users.get(form.get("username", ""))
            if user is None or user["password"] != form.get("password"):
                return _json({"error": "invalid_grant", "error_description": "Invalid username and password"}, 400)
            return self._issue(form["username"], "password")
        if grant_type == "refresh_token":
            if self.refresh_delay:
                time.sleep(self.refresh_delay)
            with self.lock:
                username = self.refresh.pop(form.get("refresh_token", ""), None)
                if username is None:
                    self.refused_refresh_tokens.append(form.get("refresh_token", ""))
            if username is None:
                return _json({"error": "invalid_grant", "error_description": "Invalid refresh token"}, 400)
            return self._issue(username, "refresh_token")
        return _json({"error": "unsupported_grant_type"}, 400)

    def _issue(self, username: str, grant_type: str) -> Response:
        access, refresh = secrets.token_hex(20), secrets.token_hex(20)
        with self.lock:
            self.access[access] = Grant(username, time.time() + self.token_lifetime)
            self.refresh[refresh] = username
            self.grants[grant_type] += 1
        body = {
            "access_token": access,
            "expires_in": self.token_lifetime,
            "token_type": "bearer",
            "scope": None,
            "refresh_token": refresh,
        }
        return _json(body, 200)

    # --- data -----------------------------------------------------------------------------------
    def _me(self, request: Request, username: str) -> Response:
        user = self.users[username]
        return ok({"id": user["id"], "name": user["name"], "email": username, "role": "Manager"})

    def _range(self, request: Request) -> tuple[date, date] | Response:
        try:
            first = date.fromisoformat(request.args["start_date"])
            last = date.fromisoformat(request.args["end_date"])
        except (KeyError, ValueError):
            return _json({"status": 15, "error": "start_date and end_date (YYYY-MM-DD) are required"}, 200)
        if last < first or (last - first).days > 31:
            return _json({"status": 15, "error": "the date range may span at most a month"}, 200)
        return first, last

    def _shifts(self, request: Request, username: str) -> Response:
        if request.args.get("mode") not in ("employee", "overview", "schedule", "manage"):
            return _json({"status": 15, "error": "mode is required"}, 200)
        span = self._range(request)
        if isinstance(span, Response):
            return span
        first, last = span
        employee = self.users[username]["id"]
        with self.lock:
            found = [
                json.loads(json.dumps(s))
                for s in self.shifts.values()
                if first.isoformat() <= s["start_date"]["date"] <= last.isoformat()
                and any(e["id"] == employee for e in s["employees"])
            ]
        return ok(sorted(found, key=lambda s: int(s["start_timestamp"])))

    def _timeclocks(self, request: Request, username: str) -> Response:
        span = self._range(request)
        if isinstance(span, Response):
            return span
        first, last = span
        employee = request.args.get("employee", "")
        with self.lock:
            found = [
                dict(c)
                for c in self.timeclocks.values()
                if first <= self.local(datetime.fromtimestamp(int(c["in_timestamp"]), UTC)).date() <= last
                and (not employee or c["employee"]["id"] == employee)
            ]
        return ok(found)


def ok(data: Any) -> Response:
    return _json({"status": 1, "data": data}, 200)


def _json(body: Any, status: int, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body), status=status, headers=headers or {}, content_type="application/json")
