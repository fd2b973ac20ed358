"""An example client app: the server half of a Connect integration, Python standard library only.

What a real client app's server does, in three steps:
1. for the signed-in user, trade the app's client credentials for a short-lived session token
   (POST /v1/connect/token, type=session) and hand only that token to the page;
2. the page opens Connect with it (the drop-in client or the npm package);
3. afterwards, trade the same credentials for an access token (type=access) and read the user's
   data from /v1/human/... on the server side.

The client secret never reaches the browser. Run it with:

    HAPI_CLIENT_ID=... HAPI_CLIENT_SECRET=... python examples/client_app/server.py

Settings (environment): HAPI_BASE_URL (default http://127.0.0.1:8000), HAPI_CLIENT_ID,
HAPI_CLIENT_SECRET, EXAMPLE_PORT (default 8080), HAPI_CLIENT_SCRIPT (the Connect client script:
a URL, or a local file such as the npm package's build/humanapi-connect-client.js, then served by
this app; default HAPI_BASE_URL/connect/client.js).
"""

from __future__ import annotations

import html
import json
import os
import secrets
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from http import HTTPStatus
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from string import Template
from typing import Any

HERE = Path(__file__).resolve().parent
USER_COOKIE = "example_user"
LOCAL_CLIENT = "/vendor/connect-client.js"
STATIC = {"/app.js": ("app.js", "text/javascript; charset=utf-8"), "/style.css": ("style.css", "text/css")}


@dataclass(frozen=True)
class Config:
    base_url: str
    client_id: str
    client_secret: str
    port: int
    client_script: str

    def local_client(self) -> bool:
        """Whether the client script is a local file (the npm package's build) this app serves."""
        return not self.client_script.startswith(("http://", "https://"))

    def client_script_url(self) -> str:
        return LOCAL_CLIENT if self.local_client() else self.client_script

    @classmethod
    def from_env(cls) -> Config:
        base = os.environ.get("HAPI_BASE_URL", "http://127.0.0.1:8000").rstrip("/")
        client_id, client_secret = os.environ.get("HAPI_CLIENT_ID", ""), os.environ.get("HAPI_CLIENT_SECRET", "")
        if not client_id or not client_secret:
            sys.exit("Set HAPI_CLIENT_ID and HAPI_CLIENT_SECRET (from `manage.py create_application`).")
        return cls(
            base_url=base,
            client_id=client_id,
            client_secret=client_secret,
            port=int(os.environ.get("EXAMPLE_PORT", "8080")),
            client_script=os.environ.get("HAPI_CLIENT_SCRIPT", f"{base}/connect/client.js"),
        )


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class HumanApi:
    """The calls this app's server makes to the data server, with the credentials it keeps."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._access: dict[str, tuple[str, float]] = {}  # user -> (access token, expiry)
        self._lock = threading.Lock()

    def _call(self, method: str, path: str, body: dict[str, str] | None = None, bearer: str = "") -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.config.base_url + path, data=data, method=method)
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if bearer:
            request.add_header("Authorization", f"Bearer {bearer}")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            message = json.loads(exc.read() or b"{}").get("message", exc.reason)
            raise ApiError(exc.code, str(message)) from None

    def _token(self, kind: str, user: str, **extra: str) -> dict[str, Any]:
        body = {
            "client_id": self.config.client_id,
            "client_secret": self.config.client_secret,
            "client_user_id": user,
            "type": kind,
            **extra,
        }
        return dict(self._call("POST", "/v1/connect/token", body))

    def session_token(self, user: str) -> str:
        return str(self._token("session", user, client_user_email=f"{user}@example.com")["session_token"])

    def access_token(self, user: str) -> str:
        """A cached access token; a new one only when it is about to expire."""
        with self._lock:
            cached = self._access.get(user)
        if cached and cached[1] > time.monotonic() + 60:
            return cached[0]
        grant = self._token("access", user)
        with self._lock:
            self._access[user] = (grant["access_token"], time.monotonic() + float(grant["expires_in"]))
        return str(grant["access_token"])

    def read(self, user: str, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        return self._call("GET", f"/v1/human/{path}{query}", bearer=self.access_token(user))

    def summary(self, user: str) -> dict[str, Any]:
        """What the page shows: the user's sources and latest activities, or connected=False."""
        try:
            activities = self.read(user, "activities", limit="10")
        except ApiError as exc:
            if exc.status == HTTPStatus.NOT_FOUND:  # no source connected yet: no access token
                return {"connected": False, "sources": [], "activities": []}
            raise
        try:
            sources = self.read(user, "sources")
        except ApiError:
            sources = None  # a server without /sources still shows activities
        return {"connected": True, "sources": sources, "activities": activities}


class Handler(BaseHTTPRequestHandler):
    api: HumanApi  # set by serve()

    def do_GET(self) -> None:
        path = urllib.parse.urlsplit(self.path).path
        if path == "/":
            self.page()
        elif path == "/api/data":
            self.data()
        elif path == LOCAL_CLIENT and self.api.config.local_client():
            self.send(HTTPStatus.OK, Path(self.api.config.client_script).read_bytes(), STATIC["/app.js"][1])
        elif path in STATIC:
            name, kind = STATIC[path]
            self.send(HTTPStatus.OK, (HERE / name).read_bytes(), kind)
        else:
            self.send(HTTPStatus.NOT_FOUND, b"Not found", "text/plain")

    def user(self) -> tuple[str, bool]:
        """This app's own user id. A real app knows who is signed in; here, a cookie stands in."""
        cookie = SimpleCookie(self.headers.get("Cookie", ""))
        if USER_COOKIE in cookie and cookie[USER_COOKIE].value.startswith("example-"):
            return cookie[USER_COOKIE].value, False
        return f"example-{secrets.token_hex(6)}", True

    def page(self) -> None:
        user, new = self.user()
        config = self.api.config
        try:
            token = self.api.session_token(user)
        except (ApiError, OSError) as exc:
            self.send(HTTPStatus.BAD_GATEWAY, f"Could not get a session token: {exc}".encode(), "text/plain")
            return
        body = Template((HERE / "index.html").read_text()).substitute(
            user=html.escape(user),
            session_token=html.escape(token),
            connect_url=html.escape(f"{config.base_url}/connect/"),
            client_script=html.escape(config.client_script_url()),
        )
        headers = {"Content-Security-Policy": self.policy()}
        if new:
            headers["Set-Cookie"] = f"{USER_COOKIE}={user}; Path=/; HttpOnly; SameSite=Lax; Max-Age=2592000"
        self.send(HTTPStatus.OK, body.encode(), "text/html; charset=utf-8", headers)

    def policy(self) -> str:
        """The page runs only its own script and the Connect client, and frames only Connect."""
        config = self.api.config
        script = urllib.parse.urlsplit(config.client_script)
        script_src = "'self'" if config.local_client() else f"'self' {script.scheme}://{script.netloc}"
        connect = config.base_url
        return (
            f"default-src 'self'; script-src {script_src}; "
            f"frame-src {connect}; img-src 'self' {connect} data:; style-src 'self'; base-uri 'none'"
        )

    def data(self) -> None:
        user, new = self.user()
        if new:
            self.send_json(HTTPStatus.OK, {"connected": False, "sources": [], "activities": []})
            return
        try:
            self.send_json(HTTPStatus.OK, self.api.summary(user))
        except ApiError as exc:
            self.send_json(HTTPStatus.BAD_GATEWAY, {"error": f"The data server said {exc.status}: {exc}"})
        except OSError as exc:
            self.send_json(HTTPStatus.BAD_GATEWAY, {"error": f"The data server could not be reached: {exc}"})

    def send_json(self, status: HTTPStatus, body: Any) -> None:
        self.send(status, json.dumps(body).encode(), "application/json")

    def send(self, status: HTTPStatus, body: bytes, kind: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        # Only the method and path: a query string is no place for secrets, but logs last.
        path = urllib.parse.urlsplit(getattr(self, "path", "")).path
        sys.stderr.write(f"{getattr(self, 'command', '-')} {path} {' '.join(str(a) for a in args[1:])}\n")


def serve(config: Config) -> None:
    Handler.api = HumanApi(config)
    server = ThreadingHTTPServer(("127.0.0.1", config.port), Handler)
    print(f"Example client app on http://127.0.0.1:{config.port}/ using {config.base_url}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    serve(Config.from_env())
