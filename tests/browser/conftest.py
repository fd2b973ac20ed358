"""Browser fixtures: one headless Chromium for the session, and host pages (a client app's web
page) on their own 127.0.0.1 ports that load the real `humanapi-connect-client` from npm."""

from __future__ import annotations

import html
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any
from urllib.parse import urlencode

import pytest
import requests
from playwright.sync_api import Browser, FrameLocator, Page, sync_playwright
from werkzeug.wrappers import Request, Response

from connect.services import CreatedApplication
from tests.emulators import ServerThread
from tests.live import LiveStack

HERE = Path(__file__).resolve().parent
CHROMIUM = "/usr/bin/chromium"
CLIENT_BUNDLE = HERE / "node_modules" / "humanapi-connect-client" / "build" / "humanapi-connect-client.js"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


class HostSite:
    """A client app's web server: `/host?token=...&base=...` is a page with the Connect button."""

    def __init__(self) -> None:
        self.template = Template((HERE / "host.html").read_text())
        self.server = ServerThread(self.wsgi)

    @property
    def origin(self) -> str:
        return self.server.url

    def page_url(self, token: str, base_url: str) -> str:
        return f"{self.origin}/host?" + urlencode({"token": token, "base": base_url})

    def wsgi(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        if request.path == "/humanapi-connect-client.js":
            response = Response(CLIENT_BUNDLE.read_bytes(), content_type="text/javascript; charset=utf-8")
        elif request.path == "/host":
            page = self.template.substitute(
                token=html.escape(request.args.get("token", "")),
                base_url=html.escape(request.args.get("base", "") + "/connect/"),
            )
            response = Response(page, content_type="text/html; charset=utf-8")
        else:
            response = Response("not found", status=404)
        return response(environ, start_response)


@dataclass
class HostSites:
    registered: HostSite  # an origin the test Applications allow
    stranger: HostSite  # an origin no Application allows


@pytest.fixture(scope="session")
def host_sites() -> Iterator[HostSites]:
    if not CLIENT_BUNDLE.is_file():
        pytest.fail(f"{CLIENT_BUNDLE} is missing: run `npm ci` in tests/browser (scripts/test does)")
    sites = HostSites(HostSite(), HostSite())
    for site in (sites.registered, sites.stranger):
        site.server.start()
    try:
        yield sites
    finally:
        for site in (sites.registered, sites.stranger):
            site.server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One headless Chromium per test module, closed when the module is done: Playwright's sync
    API allows only one running instance per thread, so modules can't hold theirs at once."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium package (scripts/test does, as root)")
    # Playwright's sync API keeps an asyncio loop marked as running on this thread, which makes
    # Django refuse every ORM call the tests make. The tests are plain sync code, so the guard
    # is lifted while the browser is up, and only then.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "1"
    try:
        with sync_playwright() as playwright:
            instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                yield instance
            finally:
                instance.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(15_000)
    try:
        yield context.new_page()
    finally:
        context.close()


# --- helpers the tests share ----------------------------------------------------------------


def session_token(stack: LiveStack, app: CreatedApplication, user: str, kind: str = "session") -> str:
    body = {
        "client_id": app.application.client_id,
        "client_secret": app.client_secret,
        "type": kind,
        "client_user_id": user,
        "client_user_email": f"{user}@example.com",
    }
    response = requests.post(stack.url("/v1/connect/token"), json=body, timeout=10)
    assert response.status_code == 200, response.text
    return str(response.json()["session_token" if kind == "session" else "id_token"])


def open_connect(page: Page, site: HostSite, stack: LiveStack, token: str) -> FrameLocator:
    """Open the host page, click its Connect button, and return the Connect iframe."""
    page.goto(site.page_url(token, stack.base_url))
    page.get_by_role("button", name="Connect health data").click()
    page.wait_for_selector("#human-api")
    return page.frame_locator("#human-api")


def events(page: Page) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = page.evaluate("window.events")
    return found


def wait_for_events(page: Page, count: int) -> list[dict[str, Any]]:
    page.wait_for_function(f"window.events.length >= {count}")
    return events(page)
