"""A generic OAuth2 authorization-code provider (RFC 6749 + RFC 7636 PKCE S256) for tests.

- `GET /oauth/authorize?response_type=code&client_id=&redirect_uri=&state=[&code_challenge=
  &code_challenge_method=S256]` answers with a redirect back to `redirect_uri` carrying
  `code` and `state`, or `error=access_denied` and `state` when the test set `deny_next`.
- `POST /oauth/token` checks client authentication (HTTP Basic or body), then either
  `grant_type=authorization_code` (the code is single use, `redirect_uri` must match the one
  of the authorize request, the PKCE verifier must hash to the challenge) or
  `grant_type=refresh_token` (refresh tokens rotate; a spent one is refused). Refusals are
  JSON `{"error": "invalid_grant" | "invalid_client" | ...}` with status 400 or 401, as RFC 6749 §5.2.
- `GET /api/me` with a Bearer access token: `{"user_id": ...}`.

State is in memory, guarded by one lock; `grants` counts what was granted.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from werkzeug.wrappers import Request, Response

from . import ServerThread

CLIENT_ID = "emu-client-1"
CLIENT_SECRET = "emu-secret-1"
USER_ID = "emu-user-42"


def s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


@dataclass
class PendingCode:
    redirect_uri: str
    challenge: str
    used: bool = False


@dataclass
class OAuthProviderEmulator:
    require_pkce: bool = True
    deny_next: bool = False
    user_id: str = USER_ID
    codes: dict[str, PendingCode] = field(default_factory=dict)
    access_tokens: set[str] = field(default_factory=set)
    refresh_tokens: dict[str, bool] = field(default_factory=dict)  # token -> still valid
    grants: Counter[str] = field(default_factory=Counter)
    refusals: list[str] = field(default_factory=list)
    authorize_requests: list[dict[str, str]] = field(default_factory=list)
    # What token answers say of the lifetime (a test may send a hostile one).
    expires_in: Any = 3600
    lock: threading.Lock = field(default_factory=threading.Lock)

    # --- WSGI ----------------------------------------------------------------------------
    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        routes = {"/oauth/authorize": self.authorize, "/oauth/token": self.token, "/api/me": self.me}
        handler = routes.get(request.path)
        response = handler(request) if handler else _json({"error": "not_found"}, 404)
        return response(environ, start_response)

    def authorize(self, request: Request) -> Response:
        args = request.args
        self.authorize_requests.append(dict(args))
        if args.get("client_id") != CLIENT_ID or args.get("response_type") != "code":
            return _json({"error": "invalid_request"}, 400)
        redirect_uri, state = args.get("redirect_uri", ""), args.get("state", "")
        if not redirect_uri or not state:
            return _json({"error": "invalid_request"}, 400)
        challenge = args.get("code_challenge", "")
        if self.require_pkce and (not challenge or args.get("code_challenge_method") != "S256"):
            return _back(redirect_uri, {"error": "invalid_request", "state": state})
        with self.lock:
            if self.deny_next:
                self.deny_next = False
                return _back(redirect_uri, {"error": "access_denied", "state": state})
            code = secrets.token_urlsafe(16)
            self.codes[code] = PendingCode(redirect_uri=redirect_uri, challenge=challenge)
        return _back(redirect_uri, {"code": code, "state": state})

    def token(self, request: Request) -> Response:
        if request.method != "POST":
            return _json({"error": "invalid_request"}, 405)
        form = request.form
        if not self._client_ok(request):
            return self._refuse("invalid_client", 401)
        grant = form.get("grant_type", "")
        with self.lock:
            if grant == "authorization_code":
                return self._code_grant(form.get("code", ""), form.get("redirect_uri", ""), form.get("code_verifier"))
            if grant == "refresh_token":
                return self._refresh_grant(form.get("refresh_token", ""))
        return self._refuse("unsupported_grant_type", 400)

    def me(self, request: Request) -> Response:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer ") or header[7:] not in self.access_tokens:
            return _json({"error": "invalid_token"}, 401)
        return _json({"user_id": self.user_id})

    # --- grants --------------------------------------------------------------------------
    def _client_ok(self, request: Request) -> bool:
        auth = request.authorization
        if auth is not None and auth.type == "basic":
            return auth.username == CLIENT_ID and auth.password == CLIENT_SECRET
        return request.form.get("client_id") == CLIENT_ID and request.form.get("client_secret") == CLIENT_SECRET

    def _code_grant(self, code: str, redirect_uri: str, verifier: str | None) -> Response:
        pending = self.codes.get(code)
        if pending is None or pending.used:
            return self._refuse("invalid_grant", 400)
        pending.used = True  # single use, even when the rest of the request is wrong
        if redirect_uri != pending.redirect_uri:
            return self._refuse("invalid_grant", 400)
        if pending.challenge and (not verifier or s256(verifier) != pending.challenge):
            return self._refuse("invalid_grant", 400)
        self.grants["authorization_code"] += 1
        return _json(self._issue())

    def _refresh_grant(self, refresh_token: str) -> Response:
        if not self.refresh_tokens.get(refresh_token):
            return self._refuse("invalid_grant", 400)
        self.refresh_tokens[refresh_token] = False  # rotation: the old one is spent
        self.grants["refresh_token"] += 1
        return _json(self._issue())

    def _issue(self) -> dict[str, Any]:
        access, refresh = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        self.access_tokens.add(access)
        self.refresh_tokens[refresh] = True
        return {
            "access_token": access,
            "refresh_token": refresh,
            "token_type": "Bearer",
            "expires_in": self.expires_in,
            "scope": "activity",
            "user_id": self.user_id,
        }

    def _refuse(self, error: str, status: int) -> Response:
        self.refusals.append(error)
        return _json({"error": error}, status)


def _json(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body), status=status, content_type="application/json")


def _back(redirect_uri: str, params: dict[str, str]) -> Response:
    separator = "&" if "?" in redirect_uri else "?"
    return Response("", status=302, headers={"Location": redirect_uri + separator + urlencode(params)})


def start_provider(**options: Any) -> tuple[OAuthProviderEmulator, ServerThread]:
    emulator = OAuthProviderEmulator(**options)
    server = ServerThread(emulator)
    server.start()
    return emulator, server
