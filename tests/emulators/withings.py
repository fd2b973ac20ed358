"""An emulator of the Withings public Health Data API, for the `withings` source.

OAuth: `/oauth2_user/authorize2` redirects back with `code` + `state` (or `error=access_denied`);
codes live 30 s and work once. `/v2/oauth2 action=requesttoken` answers HTTP 200 with the
`{"status", "body"}` envelope for every outcome: 3 h access tokens, and a new refresh token on
every refresh; the old one dies once the new access token is used (or after 8 h). Data: RPC calls
(`/measure getmeas`, `/v2/measure getworkouts`, `/v2/sleep getsummary`) by POST form or GET
query, Bearer auth, `value`/`unit` encoding, `more`/`offset` paging, `startdate`/`enddate`,
`startdateymd`/`enddateymd` or `lastupdate`, IANA `timezone`s. Errors as envelope statuses with
HTTP 200 (401 invalid token, 503 invalid params, 601 too many requests past a per-minute limit);
faults (any status, HTTP 5xx, malformed JSON) can be injected per path.
"""

from __future__ import annotations

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

from werkzeug.wrappers import Request, Response

from . import ServerThread

CLIENT_ID = "wi-client-1"
CLIENT_SECRET = "wi-secret-1"
USER_ID = 3021977


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
    timezone: str = "Europe/Paris"
    deny_consent: bool = False
    calls: Counter[str] = field(default_factory=Counter)
    faults: list[Fault] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        self.codes: dict[str, dict[str, Any]] = {}
        self.access: dict[str, dict[str, Any]] = {}
        self.refresh: dict[str, dict[str, Any]] = {}
        self.groups: dict[int, dict[str, Any]] = {}
        self.workouts: dict[int, dict[str, Any]] = {}
        self.sleeps: dict[int, dict[str, Any]] = {}
        self.recent: deque[float] = deque()
        self._next_id = 1000
        self.server = ServerThread(self.wsgi)

    # --- lifecycle and test controls ----------------------------------------------------------
    @property
    def url(self) -> str:
        return self.server.url

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

    # --- data --------------------------------------------------------------------------------
    def _id(self) -> int:
        self._next_id += 1
        return self._next_id

    def add_measures(self, at: datetime, measures: dict[int, tuple[int, int]], *, attrib: int = 0) -> int:
        """One measure group: {meastype: (value, unit)}, the real value being value * 10^unit."""
        with self.lock:
            grpid = self._id()
            now = int(time.time())
            self.groups[grpid] = {
                "grpid": grpid,
                "attrib": attrib,
                "date": int(at.timestamp()),
                "created": now,
                "modified": now,
                "category": 1,
                "deviceid": "a1b2c3",
                "hash_deviceid": "a1b2c3",
                "model": "Body+",
                "modelid": 5,
                "measures": [{"value": v, "type": t, "unit": u, "algo": 0, "fm": 3} for t, (v, u) in measures.items()],
                "comment": None,
            }
        return grpid

    def update_measures(self, grpid: int, measures: dict[int, tuple[int, int]]) -> None:
        with self.lock:
            group = self.groups[grpid]
            group["measures"] = [{"value": v, "type": t, "unit": u} for t, (v, u) in measures.items()]
            group["modified"] = int(time.time())

    def delete_group(self, grpid: int) -> None:
        with self.lock:
            del self.groups[grpid]

    def _local_day(self, moment: datetime) -> str:
        return moment.astimezone(ZoneInfo(self.timezone)).date().isoformat()

    def add_workout(
        self, start: datetime, minutes: int, *, category: int = 2, distance: float = 5000.0, steps: int = 6400
    ) -> int:
        end = start + timedelta(minutes=minutes)
        data = {
            "calories": 345.5,
            "steps": steps,
            "distance": distance,
            "elevation": 12,
            "hr_average": 142,
            "hr_min": 98,
            "hr_max": 171,
            "intensity": 60,
            "pause_duration": 120,
        }
        return self._add_series(self.workouts, start, end, category=category, data=data)

    def add_sleep(self, start: datetime, end: datetime, *, asleep_s: int, awake_s: int, wakeups: int = 3) -> int:
        in_bed = int((end - start).total_seconds())
        data = {
            "total_timeinbed": in_bed,
            "total_sleep_time": asleep_s,
            "wakeupduration": awake_s,
            "wakeupcount": wakeups,
            "sleep_efficiency": round(asleep_s / in_bed, 2),
            "lightsleepduration": asleep_s // 2,
            "deepsleepduration": asleep_s // 4,
            "remsleepduration": asleep_s // 4,
            "sleep_score": 81,
        }
        return self._add_series(self.sleeps, start, end, model=32, data=data)

    def _add_series(self, table: dict[int, dict[str, Any]], start: datetime, end: datetime, **row: Any) -> int:
        with self.lock:
            row_id = self._id()
            table[row_id] = {
                "id": row_id,
                "startdate": int(start.timestamp()),
                "enddate": int(end.timestamp()),
                "date": self._local_day(end if table is self.sleeps else start),
                "timezone": self.timezone,
                "deviceid": "d4e5f6",
                "modified": int(time.time()),
                **row,
            }
        return row_id

    def update_series(self, kind: str, row_id: int, **data: Any) -> None:
        with self.lock:
            row = (self.workouts if kind == "workouts" else self.sleeps)[row_id]
            row["data"].update(data)
            row["modified"] = int(time.time())

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
        routes = {
            ("/measure", "getmeas"): self._getmeas,
            ("/v2/measure", "getworkouts"): self._getworkouts,
            ("/v2/sleep", "getsummary"): self._getsummary,
        }
        handler = routes.get((path, action))
        if handler is None:
            return _envelope(2554, {}, "Not implemented")
        self.calls[action] += 1
        user = self._user_of(request)
        if user is None:
            return _envelope(401, {}, "XRequestID: Not provided invalid_token: The access token provided is invalid")
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
        code = secrets.token_hex(20)
        with self.lock:
            self.codes[code] = {
                "redirect_uri": redirect_uri,
                "scope": args.get("scope", ""),
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
        self.access[access] = {"expires_at": time.time() + self.access_lifetime, "replaces": replaces}
        self.refresh[refresh] = {"scope": scope, "dies_at": time.time() + 365 * 86400}
        return {
            "userid": str(USER_ID),
            "access_token": access,
            "refresh_token": refresh,
            "expires_in": self.access_lifetime,
            "scope": scope,
            "csrf_token": secrets.token_hex(8),
            "token_type": "Bearer",
        }

    def _user_of(self, request: Request) -> int | None:
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
        return USER_ID

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
        wanted = {int(t) for t in values.get("meastypes", "").split(",") if t.strip()}
        with self.lock:
            groups = [json.loads(json.dumps(g)) for g in self.groups.values()]
        if "lastupdate" in values:
            groups = [g for g in groups if g["modified"] >= int(values["lastupdate"])]
        elif "startdate" in values and "enddate" in values:
            low, high = int(values["startdate"]), int(values["enddate"])
            groups = [g for g in groups if low <= g["date"] <= high]
        else:
            return _envelope(503, {}, "Invalid Params: startdate/enddate or lastupdate required")
        if values.get("category"):
            groups = [g for g in groups if g["category"] == int(values["category"])]
        for group in groups:
            if wanted:
                group["measures"] = [m for m in group["measures"] if m["type"] in wanted]
        groups = [g for g in groups if g["measures"]]
        groups.sort(key=lambda g: (g["date"], g["grpid"]), reverse=True)
        page, more, offset = self._page(groups, request)
        body = {"updatetime": int(time.time()), "timezone": self.timezone, "measuregrps": page, "more": int(more)}
        if more:
            body["offset"] = offset
        return _envelope(0, body)

    def _series(self, request: Request, table: dict[int, dict[str, Any]]) -> Response:
        values = request.values
        fields = {f for f in values.get("data_fields", "").split(",") if f}
        with self.lock:
            rows = [json.loads(json.dumps(r)) for r in table.values()]
        if "lastupdate" in values:
            rows = [r for r in rows if r["modified"] >= int(values["lastupdate"])]
        elif "startdateymd" in values and "enddateymd" in values:
            try:
                low, high = date.fromisoformat(values["startdateymd"]), date.fromisoformat(values["enddateymd"])
            except ValueError:
                return _envelope(503, {}, "Invalid Params: startdateymd")
            rows = [r for r in rows if low <= date.fromisoformat(r["date"]) <= high]
        else:
            return _envelope(503, {}, "Invalid Params: a date range or lastupdate is required")
        for row in rows:  # v2 services return only the data fields asked for
            row["data"] = {k: v for k, v in row["data"].items() if k in fields}
        rows.sort(key=lambda r: r["startdate"])
        page, more, offset = self._page(rows, request)
        return _envelope(0, {"series": page, "more": more, "offset": offset})

    def _getworkouts(self, request: Request) -> Response:
        return self._series(request, self.workouts)

    def _getsummary(self, request: Request) -> Response:
        return self._series(request, self.sleeps)


def _envelope(status: int, body: dict[str, Any], error: str | None = None) -> Response:
    payload: dict[str, Any] = {"status": status, "body": body}
    if error is not None:
        payload["error"] = error
    return Response(json.dumps(payload), 200, content_type="application/json")
