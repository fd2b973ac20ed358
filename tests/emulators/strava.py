"""An emulator of the Strava API v3 for tests.

OAuth2: `/oauth/authorize` (comma-separated scopes; the granted ones echoed as `scope` on the
redirect; `error=access_denied`) and `/oauth/token` (client id and secret as form fields;
`expires_at` + `expires_in` 21600, `athlete` on the code exchange only; a refresh returns the
same access token while it has more than an hour left; the refresh token rotates unless
`rotate_refresh` is off, and a rotated one dies at once; refusals in Strava's `Fault` shape).
API under `/api/v3`: `/athlete`, `/athlete/activities` (`before`/`after` epoch seconds,
`page`/`per_page` capped at 200, ascending when `after` is given), 401 `Fault`s for a bad token
or a missing scope, "Only Me" activities only with `activity:read_all`, and the per-application
rate limit: `X-RateLimit-*` and `X-ReadRateLimit-*` on every answer, 429 past the limit.
"""

from __future__ import annotations

import re
import secrets
import time
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock
from typing import Any

from werkzeug.wrappers import Request, Response

from .oauth_code import AccessToken, OAuthCodeEmulator


def fault(resource: str, field: str, code: str, message: str = "Bad Request") -> dict[str, Any]:
    return {"message": message, "errors": [{"resource": resource, "field": field, "code": code}]}


class StravaEmulator(OAuthCodeEmulator):
    client_id = "12345"
    client_secret = "strava-secret"
    scope_separator = ","
    access_ttl = 21600

    def __init__(self) -> None:
        super().__init__()
        self.user_id = "987654321"
        self.rotate_refresh = True
        self.limit = (200, 2000)  # overall: 15 minutes, day
        self.read_limit = (100, 1000)  # "non-upload" (every read)
        self.usage = [0, 0]
        self.activities: dict[int, dict[str, Any]] = {}
        self.routes += [
            ("GET", re.compile(r"/api/v3/athlete"), "athlete", self.rated(self.athlete)),
            ("GET", re.compile(r"/api/v3/athlete/activities"), "activities", self.rated(self.list_activities)),
        ]

    # --- data, for tests --------------------------------------------------------------------------
    def seed(self, first: date, last: date, utc_offset: int = -28800) -> None:
        """One activity a day at 07:30 local time (UTC-08:00 unless told), every fifth one private."""
        day = first
        while day <= last:
            n = day.toordinal()
            start = datetime.combine(day, clock(7, 30), UTC) - timedelta(seconds=utc_offset)
            if start <= datetime.now(UTC):
                self.put(activity(10_000_000_000 + n, start, utc_offset, ("Run", "Ride", "Walk")[n % 3], n % 5 == 0))
            day += timedelta(days=1)

    def put(self, item: dict[str, Any]) -> None:
        with self.lock:
            self.activities[item["id"]] = item

    def change(self, activity_id: int, **changes: Any) -> None:
        with self.lock:
            self.activities[activity_id].update(changes)

    def remove(self, activity_id: int) -> None:
        with self.lock:
            del self.activities[activity_id]

    # --- OAuth shapes ----------------------------------------------------------------------------
    def redirect_extras(self, granted: tuple[str, ...]) -> dict[str, str]:
        return {"scope": ",".join(granted)}

    def token_body(self, access: str, token: AccessToken, *, first: bool) -> dict[str, Any]:
        body: dict[str, Any] = {
            "token_type": "Bearer",
            "expires_at": int(token.expires_at),
            "expires_in": int(token.expires_at - time.time()),
            "refresh_token": token.refresh_token,
            "access_token": access,
        }
        if first:
            body["athlete"] = self.athlete_summary(token.grant.user_id)
        return body

    def refused(self, what: str) -> Response:
        where = {
            "client": ("Application", "client_id"),
            "code": ("AuthorizationCode", "code"),
            "refresh_token": ("RefreshToken", "refresh_token"),
        }.get(what, ("Application", what))
        return self.json(fault(where[0], where[1], "invalid"), 400)

    def refresh_grant(self, refresh_token: str) -> Response:
        grant = self.refresh.get(refresh_token)
        if grant is None:
            return self.refused("refresh_token")
        current = [(a, t) for a, t in self.access.items() if t.refresh_token == refresh_token]
        live = [(a, t) for a, t in current if t.expires_at - time.time() > 3600]
        if live:
            access, token = live[0]  # more than an hour left: the same access token
        else:
            access, token = self.issue(grant, refresh_token)
            self.grants["refresh_token"] += 1
        if self.rotate_refresh:
            del self.refresh[refresh_token]  # the old one dies at once
            token.refresh_token = "rt-" + secrets.token_hex(8)
            self.refresh[token.refresh_token] = grant
        return self.json(self.token_body(access, token, first=False))

    # --- the API ----------------------------------------------------------------------------------
    def rated(self, handler: Any) -> Any:
        """Count the call against the app's limits, answer 429 past them, and report usage."""

        def wrapped(request: Request, **kwargs: Any) -> Response:
            self.usage[0] += 1
            self.usage[1] += 1
            limits = [min(a, b) for a, b in zip(self.limit, self.read_limit, strict=True)]
            if self.usage[0] > limits[0] or self.usage[1] > limits[1]:
                self.calls["429"] += 1
                response = self.json(fault("Application", "rate limit", "exceeded", "Rate Limit Exceeded"), 429)
            else:
                response = handler(request, **kwargs)
            usage = f"{self.usage[0]},{self.usage[1]}"
            response.headers["X-RateLimit-Limit"] = f"{self.limit[0]},{self.limit[1]}"
            response.headers["X-RateLimit-Usage"] = usage
            response.headers["X-ReadRateLimit-Limit"] = f"{self.read_limit[0]},{self.read_limit[1]}"
            response.headers["X-ReadRateLimit-Usage"] = usage
            return response

        return wrapped

    def athlete_summary(self, user_id: str) -> dict[str, Any]:
        return {"id": int(user_id), "username": "kim", "firstname": "Kim", "lastname": "Runner", "premium": False}

    def athlete(self, request: Request) -> Response:
        token = self.bearer(request)
        if token is None:
            return self.json(fault("Athlete", "access_token", "invalid", "Authorization Error"), 401)
        return self.json(self.athlete_summary(token.grant.user_id))

    def list_activities(self, request: Request) -> Response:
        token = self.bearer(request)
        if token is None:
            return self.json(fault("Athlete", "access_token", "invalid", "Authorization Error"), 401)
        scopes = set(token.grant.scopes)
        if not scopes & {"activity:read", "activity:read_all"}:
            body = fault("AccessToken", "activity:read_permission", "missing", "Authorization Error")
            return self.json(body, 401)
        args = request.args
        after, before = args.get("after", type=int), args.get("before", type=int)
        for name, value in (("after", after), ("before", before)):
            if value is not None and value > 10**11:  # milliseconds instead of seconds
                return self.json(fault("Activity", name, "future"), 400)
        page = max(1, args.get("page", 1, type=int))
        per_page = min(200, max(1, args.get("per_page", 30, type=int)))
        rows = [
            a
            for a in self.activities.values()
            if (after is None or _epoch(a) > after)
            and (before is None or _epoch(a) < before)
            and ("activity:read_all" in scopes or not a.get("private"))
        ]
        rows.sort(key=_epoch, reverse=after is None)
        return self.json(rows[(page - 1) * per_page : page * per_page])


def _epoch(item: dict[str, Any]) -> int:
    return int(datetime.fromisoformat(item["start_date"].replace("Z", "+00:00")).timestamp())


def activity(activity_id: int, start: datetime, utc_offset: int, sport: str, private: bool) -> dict[str, Any]:
    n = activity_id % 1000
    elapsed = 1800 + n * 7
    speed = {"Run": 3.1, "Ride": 7.5, "Walk": 1.4}[sport]
    local = start + timedelta(seconds=utc_offset)
    item: dict[str, Any] = {
        "id": activity_id,
        "resource_state": 2,
        "name": f"Morning {sport}",
        "sport_type": sport,
        "type": sport,
        "start_date": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "start_date_local": local.strftime("%Y-%m-%dT%H:%M:%SZ"),  # local wall time, suffixed Z
        "timezone": "(GMT-08:00) America/Los_Angeles",
        "utc_offset": float(utc_offset),
        "elapsed_time": elapsed,
        "moving_time": elapsed - 120,
        "distance": round(speed * (elapsed - 120), 1),
        "average_speed": speed,
        "total_elevation_gain": 42.0,
        "has_heartrate": True,
        "average_heartrate": 141.3,
        "max_heartrate": 172.0,
        "manual": False,
        "private": private,
        "trainer": False,
        "device_name": "Garmin Forerunner 255",
    }
    if sport == "Ride":
        item["kilojoules"] = 480.5
    return item
