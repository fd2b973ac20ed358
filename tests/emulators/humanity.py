"""An emulator of Humanity (API v2) for tests: the OAuth2 password grant with expiring access
tokens and rotating refresh tokens, the `/api/v2/` data endpoints with Humanity's envelope and
payload shapes, and the failures a client must survive (HTTP 401 / status 3, HTTP 429 / status
91 with Retry-After, status 99, 5xx, malformed JSON, slow answers, a request that hangs until
released, a role refused an endpoint with status 20 or HTTP 403).

Payloads follow Humanity's published examples (docs/providers/humanity.md cites each): a shift's
absolute instant is `start_date.timestamp` (Unix seconds) and `start_timestamp` is the account's
wall clock as text ("2017-06-08 16:48:25"); a clock time's instant is `in_timestamp` (Unix seconds
as text) with `out_timestamp` "0" while still clocked in, and its wall clock `start_timestamp`.
The account keeps a real time zone (`timezone`, an IANA name), so offsets follow daylight saving
time. Where public sources show a field written more than one way, `ShiftShape`/`ClockShape`
choose per item. `add_raw_shift`/`add_raw_timeclock` serve a documented example verbatim.

Everything is in memory and guarded by one lock; counters let tests assert what was called.
"""

from __future__ import annotations

import copy
import json
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from werkzeug.wrappers import Request, Response

from . import ServerThread

CLIENT_ID = "hum-app-1"
CLIENT_SECRET = "hum-secret-1"
USERNAME = "manager@acme.example"
PASSWORD = "correct horse battery"
EMPLOYEE_ID = "1001"
OTHER_EMPLOYEE_ID = "1002"
DEFAULT_TIMEZONE = "America/New_York"
# The v1 response-code table (platform.humanity.com/v1.0/docs/response-codes), still used by v2.
ERRORS = {
    3: "Invalid token key - Please re-authenticate",
    9: "Invalid parameters - Your request has an invalid parameter type",
    15: "Get Failed - Your GET request failed",
    20: "Incorrect Permissions - You don't have the proper permissions to access this",
    91: "Throttle exceeded - You have exceeded the max allowed requests. Try again later.",
    99: "Service Offline - This service is temporarily offline. Try again later.",
}
MODES = (
    "overview",
    "location",
    "schedule",
    "incomplete",
    "employees",
    "employee",
    "open",
    "openapproval",
    "confirm",
    "onnow",
    "late",
    "upcoming",
    "recent",
    "multiple",
)


@dataclass
class Fault:
    """Answer matching requests with a failure: skip the first `skip`, then fail `times` of
    them (None: every one from then on)."""

    path: str
    kind: str  # http500 | http429 | status91 | status3 | http401 | status20 | http403 | status99 | status15
    #            | malformed | slow | hang | redirect
    times: int | None = 1
    skip: int = 0
    retry_after: int | str | None = None  # the Retry-After header, as sent
    delay: float = 0.0
    seen: int = 0


@dataclass(frozen=True)
class ShiftShape:
    """How one shift is written, where public sources show more than one way."""

    id_as_number: bool = False  # "id": "3001" | 3001 (v2 shift tasks answer shiftId as a number)
    published: str = "number"  # number (1/0) | text ("1"/"0") | bool (true/false)
    clock: str = "12h"  # start_date.time "9:00am" (v1 examples) | "24h" "09:00" (an account setting)
    timestamp_as_text: bool = False  # start_date.timestamp 1796652000 | "1796652000"
    iso8601: bool = False  # start_date.iso8601 "2026-12-07T09:00:00-0500", as v1 date objects carry
    employees: str = "list"  # list of {id, name} | keyed (an object keyed by id) | none (null)


@dataclass(frozen=True)
class ClockShape:
    """How one clock time is written, where public sources show more than one way."""

    id_as_number: bool = False
    in_as_number: bool = False  # in_timestamp "1496929705" (v1 examples) | 1496929705
    open_out: str = "zero"  # while clocked in, out_timestamp "0" (v1 examples) | null | 0
    start_object: bool = True  # the `start` date object with `iso8601` and `timestamp`
    wall: bool = True  # start_timestamp / end_timestamp wall-clock text


@dataclass
class Grant:
    username: str
    expires_at: float


@dataclass
class HumanityEmulator:
    timezone: str = DEFAULT_TIMEZONE  # the account's time zone
    token_lifetime: int = 3600
    refresh_delay: float = 0.0  # seconds a refresh grant takes (to make races overlap)
    calls: Counter[str] = field(default_factory=Counter)
    grants: Counter[str] = field(default_factory=Counter)  # grant_type -> successful grants
    refused_refresh_tokens: list[str] = field(default_factory=list)
    shifts: dict[str, dict[str, Any]] = field(default_factory=dict)
    timeclocks: dict[str, dict[str, Any]] = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)
    max_concurrent: int = 0
    # A developer-hub discussion reports GET /shifts answering every employee's shifts; set this
    # to answer so whatever the mode (the plugin must keep only its user's).
    ignore_mode: bool = False
    # Answer list endpoints as an object keyed "0", "1", ... (as PHP writes some arrays).
    data_as_object: bool = False
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)  # (path, params) of data calls

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        self.release = threading.Event()  # lets a hanging request go
        self.zone = ZoneInfo(self.timezone)
        self.access: dict[str, Grant] = {}
        self.refresh: dict[str, str] = {}  # refresh token -> username
        self.users = {USERNAME: {"password": PASSWORD, "id": EMPLOYEE_ID, "name": "Morgan Manager"}}
        self.names = {EMPLOYEE_ID: "Morgan Manager", OTHER_EMPLOYEE_ID: "Robin Other"}
        self.clients = {CLIENT_ID: CLIENT_SECRET}
        self.positions: dict[str, dict[str, Any]] = {
            "11": {"id": "11", "name": "Front Desk", "location": {"id": "21", "name": "Main St"}}
        }
        self.positions["12"] = {"id": "12", "name": "Kitchen", "location": {"id": "22", "name": "Harbour"}}
        self.locations: dict[str, dict[str, Any]] = {
            "21": {"id": "21", "name": "Main St"},
            "22": {"id": "22", "name": "Harbour"},
        }
        self.owners: dict[str, set[str]] = {}  # shift id -> ids of the employees it is for
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
        """The account's wall clock at an instant (naive)."""
        return moment.astimezone(self.zone).replace(tzinfo=None)

    def offset_minutes(self, moment: datetime) -> int:
        offset = moment.astimezone(self.zone).utcoffset()
        return int(offset.total_seconds() // 60) if offset is not None else 0

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
        shape: ShiftShape = ShiftShape(),
    ) -> dict[str, Any]:
        """A shift from `start` (an aware instant) lasting `hours`, written as GET /shifts
        writes it."""
        end = start + timedelta(hours=hours)
        people = [{"id": e, "name": self.names.get(e, e), "paidtime": hours} for e in employees]
        assigned: Any = people
        if shape.employees == "keyed":
            assigned = {p["id"]: p for p in people}
        elif shape.employees == "none" or not people:
            assigned = None
        flag: Any = {"number": int(published), "text": str(int(published)), "bool": published}[shape.published]
        shift = {
            "id": int(shift_id) if shape.id_as_number else shift_id,
            "title": title,
            "notes": "",
            "schedule": position,
            "schedule_name": self.positions[position]["name"],
            "schedule_location_id": self.positions[position]["location"]["id"],
            "location": "0",
            "working": "0",
            "start_date": self._date_object(start, shape),
            "end_date": self._date_object(end, shape),
            "start_timestamp": self.local(start).strftime("%Y-%m-%d %H:%M:%S"),
            "end_timestamp": self.local(end).strftime("%Y-%m-%d %H:%M:%S"),
            "employees": assigned,
            "published": flag,
            "confirmed": 1,
            "confirmed_end_timestamp": None,
            "paidtime": hours,
        }
        with self.lock:
            self.shifts[shift_id] = shift
            # Who the shift belongs to, also when it is written without `employees`.
            self.owners[shift_id] = {str(e) for e in employees}
        return shift

    def add_raw_shift(self, item: dict[str, Any]) -> dict[str, Any]:
        """Serve a shift exactly as given (a documented example)."""
        with self.lock:
            self.shifts[str(item["id"])] = item
            self.owners[str(item["id"])] = _people(item)
        return item

    def add_timeclock(
        self,
        clock_id: str,
        start: datetime,
        hours: float | None,
        *,
        shift: str | None = None,
        position: str | None = "11",
        employee: str = EMPLOYEE_ID,
        shape: ClockShape = ClockShape(),
    ) -> dict[str, Any]:
        """A clock time from `start` (an aware instant), `hours` long or still open (None),
        written as the timeclock examples write it."""
        end = start + timedelta(hours=hours) if hours is not None else None
        clock_in = int(start.timestamp())
        if end is not None:
            out: Any = str(int(end.timestamp()))
        else:
            out = {"zero": "0", "null": None, "number": 0}[shape.open_out]
        local_in = self.local(start)
        clock: dict[str, Any] = {
            "id": int(clock_id) if shape.id_as_number else clock_id,
            "status": "0",
            "schedule": {"id": position, "name": self.positions[position]["name"]} if position else None,
            "notes": None,
            "created": str(clock_in),
            "in_timestamp": clock_in if shape.in_as_number else str(clock_in),
            "out_timestamp": out,
            "break_time": "0",
            "shift": shift,
            "employee": {"id": employee, "name": self.names.get(employee, employee)},
            "in_time": {
                "time": _twelve_hour(local_in),
                "day": _formatted(local_in),
                "timestamp": local_in.strftime("%Y-%m-%d %H:%M:%S"),
            },
        }
        if shape.wall:
            clock["start_timestamp"] = local_in.strftime("%Y-%m-%d %H:%M:%S")
            clock["end_timestamp"] = self.local(end).strftime("%Y-%m-%d %H:%M:%S") if end else None
        if shape.start_object:
            clock["start"] = {
                "month": local_in.month,
                "day": local_in.day,
                "year": local_in.year,
                "weekday": local_in.strftime("%a"),
                "formatted": _formatted(local_in),
                "iso8601": local_in.strftime("%Y-%m-%dT%H:%M:%S") + _offset_text(self.offset_minutes(start)),
                "time": _twelve_hour(local_in),
                "timestamp": clock_in,
            }
        if hours is not None:
            whole = int(hours)
            clock["length"] = {"total_hours": f"{hours:.2f}", "hours": whole, "mins": round((hours - whole) * 60)}
        with self.lock:
            self.timeclocks[clock_id] = clock
        return clock

    def add_raw_timeclock(self, item: dict[str, Any]) -> dict[str, Any]:
        """Serve a clock time exactly as given (a documented example)."""
        with self.lock:
            self.timeclocks[str(item["id"])] = item
        return item

    def remove_shift(self, shift_id: str) -> None:
        with self.lock:
            del self.shifts[shift_id]
            self.owners.pop(shift_id, None)

    def _date_object(self, moment: datetime, shape: ShiftShape) -> dict[str, Any]:
        local = self.local(moment)
        clock = _twelve_hour(local) if shape.clock == "12h" else local.strftime("%H:%M")
        stamp = int(moment.timestamp())
        found: dict[str, Any] = {
            "date": local.strftime("%Y-%m-%d"),
            "time": clock,
            "formatted": _formatted(local),
            "timestamp": str(stamp) if shape.timestamp_as_text else stamp,
            "day": local.day,
            "month": local.month,
            "year": local.year,
            "weekday": local.strftime("%a"),
            "day_of_year": str(local.timetuple().tm_yday),
        }
        if shape.iso8601:
            found["iso8601"] = local.strftime("%Y-%m-%dT%H:%M:%S") + _offset_text(self.offset_minutes(moment))
        return found

    # --- HTTP ---------------------------------------------------------------------------------
    def wsgi(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        with self.lock:
            self.calls[request.path] += 1
            self._in_flight += 1 if request.path.startswith("/api/") else 0
            self.max_concurrent = max(self.max_concurrent, self._in_flight)
            if request.path.startswith("/api/"):
                params = {k: v for k, v in request.args.items() if k != "access_token"}
                self.requests.append((request.path, params))
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
            "http429": (429, _error(91)),
            "status91": (200, _error(91)),
            "status3": (200, _error(3)),
            "http401": (401, _error(3)),
            "status20": (200, _error(20)),
            "http403": (403, _error(20)),
            "status99": (200, _error(99)),
            "status15": (200, _error(15)),
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
        routes: dict[str, Callable[[Request, str], Response]] = {
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
            return _json(_error(3), 200)
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
        return ok({"id": user["id"], "name": user["name"], "email": username})

    def _range(self, request: Request) -> tuple[date, date] | Response:
        try:
            first = date.fromisoformat(request.args["start_date"])
            last = date.fromisoformat(request.args["end_date"])
        except (KeyError, ValueError):
            return _json(_error(9), 200)
        if last < first or (last - first).days > 31:
            return _json(_error(9), 200)
        return first, last

    def _shifts(self, request: Request, username: str) -> Response:
        mode = request.args.get("mode")
        if mode is not None and mode not in MODES:
            return _json(_error(9), 200)
        span = self._range(request)
        if isinstance(span, Response):
            return span
        first, last = span
        # mode defaults to "employee" per the reference; `employees` names the one employee.
        employee = request.args.get("employees") or self.users[username]["id"]
        everyone = self.ignore_mode or mode is None
        with self.lock:
            found = [
                copy.deepcopy(s)
                for key, s in self.shifts.items()
                if _within(_shift_day(s), first, last) and (everyone or employee in self.owners.get(key, set()))
            ]
        return self._list(sorted(found, key=_shift_key))

    def _timeclocks(self, request: Request, username: str) -> Response:
        span = self._range(request)
        if isinstance(span, Response):
            return span
        first, last = span
        employee = request.args.get("employee") or request.args.get("employee_id") or ""
        with self.lock:
            found = [
                copy.deepcopy(c)
                for c in self.timeclocks.values()
                if _within(self._clock_day(c), first, last)
                and (not employee or str(_obj(c.get("employee")).get("id")) == employee)
            ]
        return self._list(found)

    def _clock_day(self, clock: dict[str, Any]) -> date | None:
        wall = clock.get("start_timestamp")
        if isinstance(wall, str) and len(wall) >= 10:
            return date.fromisoformat(wall[:10])
        try:
            return self.local(datetime.fromtimestamp(int(clock["in_timestamp"]), UTC)).date()
        except (KeyError, TypeError, ValueError):
            return None

    def _list(self, items: list[dict[str, Any]]) -> Response:
        if self.data_as_object:
            return ok({str(i): item for i, item in enumerate(items)})
        return ok(items)


def _shift_day(shift: dict[str, Any]) -> date | None:
    day = _obj(shift.get("start_date")).get("date")
    wall = shift.get("start_timestamp")
    text = day if isinstance(day, str) else wall if isinstance(wall, str) else ""
    try:
        return date.fromisoformat(text[:10])
    except ValueError:
        return None


def _shift_key(shift: dict[str, Any]) -> int:
    try:
        return int(_obj(shift.get("start_date")).get("timestamp") or 0)
    except (TypeError, ValueError):
        return 0


def _people(shift: dict[str, Any]) -> set[str]:
    people = shift.get("employees")
    if isinstance(people, dict):
        people = list(people.values())
    return {str(p.get("id")) for p in people or [] if isinstance(p, dict)}


def _within(day: date | None, first: date, last: date) -> bool:
    return day is not None and first <= day <= last


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _twelve_hour(local: datetime) -> str:
    return local.strftime("%I:%M%p").lstrip("0").lower()  # "9:00am", as the v1 examples write it


def _formatted(local: datetime) -> str:
    return f"{local.strftime('%b')} {local.day}, {local.year}"  # "Jun 9, 2017"


def _offset_text(minutes: int) -> str:
    sign = "-" if minutes < 0 else "+"
    return f"{sign}{abs(minutes) // 60:02d}{abs(minutes) % 60:02d}"  # "+0300", as in the v1 examples


def _error(status: int) -> dict[str, Any]:
    return {"status": status, "error": ERRORS.get(status, "Error")}


def ok(data: Any) -> Response:
    return _json({"status": 1, "data": data}, 200)


def _json(body: Any, status: int, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body), status=status, headers=headers or {}, content_type="application/json")
