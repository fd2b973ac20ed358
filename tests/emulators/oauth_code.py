"""The OAuth2 authorization-code parts shared by the Oura and Strava emulators: an authorize
endpoint that redirects with a code (or `error=access_denied`), single-use codes bound to their
redirect URI, expiring access tokens, refresh tokens that die once rotated, fault injection per
route, and call counters. Each provider's emulator adds its own token and error shapes."""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from werkzeug.wrappers import Request, Response

from . import ServerThread, source_settings

Handler = Callable[..., Response]


@dataclass
class Fault:
    """Answer a route with a failure: let the first `skip` calls through, then fail `times`."""

    route: str
    status: int
    times: int = 1
    skip: int = 0
    body: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Grant:
    user_id: str
    scopes: tuple[str, ...]


@dataclass
class AccessToken:
    grant: Grant
    expires_at: float
    refresh_token: str


class OAuthCodeEmulator:
    source_slug = ""  # the source whose settings `source_settings` gives
    api_path = ""  # where the API lives under the emulator's URL
    client_id = "client-1"
    client_secret = "secret-1"
    scope_separator = " "
    access_ttl = 3600

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: Counter[str] = Counter()
        self.log: list[tuple[str, dict[str, str]]] = []  # (route, query) of every API call
        self.grants: Counter[str] = Counter()  # grant_type -> tokens issued
        self.faults: list[Fault] = []
        # route -> what happens the next time it is called, before it answers (once): a test
        # makes a race happen at a known moment (the user disconnects while a refresh is out).
        self.on_next_call: dict[str, Callable[[], None]] = {}
        self.user_id = "user-1"  # who is logged in at the authorize page
        self.deny = False  # the user clicks "Deny"
        self.unticked: set[str] = set()  # scopes the user unticks at consent
        self.codes: dict[str, tuple[Grant, str]] = {}
        self.access: dict[str, AccessToken] = {}
        self.refresh: dict[str, Grant] = {}
        self.routes: list[tuple[str, re.Pattern[str], str, Handler]] = [
            ("GET", re.compile(r"/oauth/authorize"), "authorize", self.authorize),
            ("POST", re.compile(r"/oauth/token"), "token", self.token),
        ]
        self.server = ServerThread(self.wsgi)

    # --- lifecycle --------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return self.server.url

    def source_settings(self, history_days: int, **extra: str) -> dict[str, str]:
        """SOURCE_SETTINGS for the source this emulator stands for (`source_slug`)."""
        return source_settings(
            self.source_slug,
            client_id=self.client_id,
            client_secret=self.client_secret,
            authorize_url=self.url + "/oauth/authorize",
            token_url=self.url + "/oauth/token",
            api_url=self.url + self.api_path,
            history_days=history_days,
            **extra,
        )

    def start(self) -> OAuthCodeEmulator:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    def fail(self, route: str, status: int, **kwargs: Any) -> None:
        with self.lock:
            self.faults.append(Fault(route, status, **kwargs))

    # --- tokens, for tests ------------------------------------------------------------------------
    def issue(self, grant: Grant, refresh_token: str | None = None) -> tuple[str, AccessToken]:
        access = "at-" + secrets.token_hex(8)
        refresh = refresh_token or "rt-" + secrets.token_hex(8)
        token = AccessToken(grant, time.time() + self.access_ttl, refresh)
        self.access[access] = token
        self.refresh[refresh] = grant
        return access, token

    def revoke_access_tokens(self) -> None:
        """Every access token now answers 401 (e.g. the provider invalidated them early)."""
        with self.lock:
            self.access.clear()

    def revoke_everything(self) -> None:
        """The user removed the app: access and refresh tokens are dead."""
        with self.lock:
            self.access.clear()
            self.refresh.clear()

    def bearer(self, request: Request) -> AccessToken | None:
        header = request.headers.get("Authorization", "")
        token = self.access.get(header[7:]) if header.startswith("Bearer ") else None
        return token if token is not None and token.expires_at > time.time() else None

    # --- WSGI -------------------------------------------------------------------------------------
    def wsgi(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        request = Request(environ)
        return self.dispatch(request)(environ, start_response)

    def dispatch(self, request: Request) -> Response:
        for method, pattern, name, handler in self.routes:
            match = pattern.fullmatch(request.path)
            if match and request.method == method:
                hook = self.on_next_call.pop(name, None)
                if hook is not None:
                    hook()
                with self.lock:
                    self.calls[name] += 1
                    self.log.append((name, dict(request.args)))
                    fault = self._fault(name)
                    if fault is not None:
                        return Response(fault.body or json.dumps({"message": "fault"}), fault.status, fault.headers)
                    return handler(request, **match.groupdict())
        return self.json({"message": "Not Found"}, 404)

    def _fault(self, name: str) -> Fault | None:
        """The fault due for this call. Each fault counts calls from when it was added, so
        `fail(r, 429)` then `fail(r, 502, skip=1)` fail the next two calls in that order."""
        due = None
        for fault in list(self.faults):
            if fault.route != name:
                continue
            if fault.skip:
                fault.skip -= 1
            elif due is None:
                due = fault
                fault.times -= 1
                if fault.times <= 0:
                    self.faults.remove(fault)
        return due

    @staticmethod
    def json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
        return Response(json.dumps(body), status, headers, content_type="application/json")

    # --- the authorize page ------------------------------------------------------------------------
    def authorize(self, request: Request) -> Response:
        args = request.args
        redirect_uri = args.get("redirect_uri", "")
        if args.get("client_id") != self.client_id or not redirect_uri or args.get("response_type") != "code":
            return self.json({"message": "Bad Request"}, 400)
        if self.deny:
            return self.redirect(redirect_uri, error="access_denied", state=args.get("state", ""))
        requested = [s for s in re.split(r"[ ,]", args.get("scope", "")) if s]
        granted = tuple(s for s in requested if s not in self.unticked)
        code = "code-" + secrets.token_hex(8)
        self.codes[code] = (Grant(self.user_id, granted), redirect_uri)
        return self.redirect(redirect_uri, code=code, state=args.get("state", ""), **self.redirect_extras(granted))

    def redirect_extras(self, granted: tuple[str, ...]) -> dict[str, str]:
        return {}

    @staticmethod
    def redirect(uri: str, **params: str) -> Response:
        joiner = "&" if "?" in uri else "?"
        return Response("", 302, {"Location": uri + joiner + urlencode(params)})

    # --- the token endpoint -------------------------------------------------------------------------
    def client_ok(self, request: Request) -> bool:
        form = request.values
        client = (form.get("client_id"), form.get("client_secret"))
        if request.authorization is not None and request.authorization.type == "basic":
            client = (request.authorization.username, request.authorization.password)
        return client == (self.client_id, self.client_secret)

    def token(self, request: Request) -> Response:
        if not self.client_ok(request):
            return self.refused("client")
        form = request.values
        grant_type = form.get("grant_type")
        if grant_type == "authorization_code":
            entry = self.codes.pop(form.get("code", ""), None)  # codes are single-use
            if entry is None or (form.get("redirect_uri") and form.get("redirect_uri") != entry[1]):
                return self.refused("code")
            access, token = self.issue(entry[0])
            self.grants[grant_type] += 1
            return self.json(self.token_body(access, token, first=True))
        if grant_type == "refresh_token":
            return self.refresh_grant(form.get("refresh_token", ""))
        return self.refused("grant_type")

    def refresh_grant(self, refresh_token: str) -> Response:
        grant = self.refresh.pop(refresh_token, None)  # the old refresh token dies once used
        if grant is None:
            return self.refused("refresh_token")
        access, token = self.issue(grant)
        self.grants["refresh_token"] += 1
        return self.json(self.token_body(access, token, first=False))

    def token_body(self, access: str, token: AccessToken, *, first: bool) -> dict[str, Any]:
        raise NotImplementedError

    def refused(self, what: str) -> Response:
        raise NotImplementedError
