"""The drop-in client (/connect/client.js) in headless Chromium, hosted by the example client app
(examples/client_app) on its own origin, against the live stack (gunicorn + a Celery worker).
The `browser` and `page` fixtures (Debian's chromium) come from tests/browser/conftest.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from playwright.sync_api import FrameLocator, Page, expect

from sources.models import Connection, SyncRun
from tests.browser.conftest import CLIENT_BUNDLE
from tests.live import ROOT, LiveStack, free_port, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.worker, pytest.mark.django_db(transaction=True)]

ARTIFACTS = ROOT / "artifacts"

# Records every event the page's HumanConnect emits, in order.
RECORD_EVENTS = """() => {
  window.__events = [];
  ["connect", "disconnect", "close", "error"].forEach(function (name) {
    HumanConnect.on(name, function (payload) { window.__events.push([name, payload]); });
  });
}"""


@dataclass
class ExampleApp:
    url: str
    process: subprocess.Popen[bytes]
    log: Path


@contextmanager
def running_example(stack: LiveStack, tmp_path: Path, client_script: Path | None = None) -> Iterator[ExampleApp]:
    """The example client app, registered as an Application whose origin is its own."""
    port = free_port()
    origin = f"http://127.0.0.1:{port}"
    credentials = json.loads(stack.manage("create_application", "--name", "Example app", "--origin", origin))
    log = tmp_path / "example.log"
    env = {
        **os.environ,
        "HAPI_BASE_URL": stack.base_url,
        "HAPI_CLIENT_ID": credentials["client_id"],
        "HAPI_CLIENT_SECRET": credentials["client_secret"],
        "EXAMPLE_PORT": str(port),
        **({"HAPI_CLIENT_SCRIPT": str(client_script)} if client_script else {}),
    }
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "examples" / "client_app" / "server.py")],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until(lambda: _answers(origin + "/app.js"), timeout=15, message="the example app to start")
        yield ExampleApp(url=origin + "/", process=process, log=log)
    finally:
        process.terminate()
        process.wait(timeout=10)
        _let_syncs_finish()


def _let_syncs_finish(timeout: float = 30) -> None:
    """Test teardown empties the tables; a sync the worker is still writing would collide with
    it, so wait (a bounded time) for every connection's sync to have finished."""

    def quiet() -> bool:
        connections = Connection.objects.all()
        unfinished = SyncRun.objects.filter(finished_at__isnull=True).exists()
        return not unfinished and all(c.sync_runs.exists() for c in connections)

    with suppress(AssertionError):  # the test's own result says more than this would
        wait_until(quiet, timeout=timeout, message="the syncs to finish")


@pytest.fixture
def example_app(live_stack: LiveStack, tmp_path: Path) -> Iterator[ExampleApp]:
    with running_example(live_stack, tmp_path) as app:
        yield app


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.ConnectionError:
        return False


def open_connect(page: Page, example_app: ExampleApp) -> FrameLocator:
    page.goto(example_app.url)
    page.wait_for_load_state("load")
    page.evaluate(RECORD_EVENTS)
    page.get_by_role("button", name="Connect health data").click()
    expect(page.locator("#human-api")).to_be_visible()
    expect(page.locator("#human-api-connect-modal-overlay")).to_be_attached()
    connect = page.frame_locator("#human-api")
    expect(connect.get_by_role("button", name="Demo", exact=True)).to_be_visible()
    return connect


def events(page: Page) -> list[list[Any]]:
    return list(page.evaluate("window.__events"))


def test_it_opens_connect_and_relays_connect_and_close_events(
    page: Page, example_app: ExampleApp, live_stack: LiveStack
) -> None:
    connect = open_connect(page, example_app)
    src = page.locator("#human-api").get_attribute("src") or ""
    assert src.startswith(live_stack.url("/connect/?token=")) and src.endswith("&mode=auth")

    connect.get_by_role("button", name="Demo", exact=True).click()
    username = connect.get_by_label("Username")
    expect(username).to_be_focused()
    # Escape goes back to the list, onto the source that was open.
    page.keyboard.press("Escape")
    expect(connect.get_by_role("button", name="Demo", exact=True)).to_be_focused()
    connect.get_by_role("button", name="Demo", exact=True).click()

    username.fill("demouser")
    connect.get_by_label("Password").fill("wrong")
    connect.get_by_role("button", name="Connect", exact=True).click()
    expect(connect.get_by_role("alert")).to_contain_text("Wrong username or password")
    assert events(page) == []

    connect.get_by_label("Password").fill("password")
    connect.get_by_role("button", name="Connect", exact=True).click()
    expect(connect.get_by_role("button", name="Disconnect Demo")).to_be_visible()
    expect(connect.get_by_role("status")).to_contain_text("Demo is connected")
    wait_until(lambda: events(page), timeout=10, message="the connect event")
    [(name, payload)] = events(page)
    assert name == "connect"
    assert payload["status"] == "CONNECTED_SOURCE"
    [connected] = payload["sessionResults"]["connectedSources"]
    assert connected["name"] == "Demo" and connected["id"]
    assert payload["currentConnections"] == [connected]

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "connect-1280.png"))

    connect.get_by_role("button", name="Close").click()
    expect(page.locator("#human-api")).to_have_count(0)
    expect(page.locator("#human-api-connect-modal-overlay")).to_have_count(0)
    assert [name for name, _ in events(page)] == ["connect", "close"]
    close = events(page)[1][1]
    assert close["status"] == "SUCCESS" and close["sessionResults"]["connectedSources"] == [connected]
    expect(page.get_by_role("button", name="Connect health data")).to_be_focused()

    # The example's server exchanged for an access token and read the synced activities.
    expect(page.locator("#activities tr").first).to_be_visible(timeout=60000)


def test_it_ignores_messages_forged_by_another_frame_or_window(
    page: Page, example_app: ExampleApp, live_stack: LiveStack
) -> None:
    connect = open_connect(page, example_app)
    forged = {
        "type": "hapi-connect-connect-source",
        "status": "CONNECTED_SOURCE",
        "sessionResults": {"connectedSources": [{"name": "Forged", "id": "x"}]},
    }
    # 1. the host page's own window, and 2. a same-origin child frame of the host page.
    page.evaluate("(data) => window.postMessage(data, '*')", forged)
    page.evaluate(
        """() => {
          const frame = document.createElement('iframe');
          frame.name = 'intruder';
          document.body.appendChild(frame);
        }"""
    )
    intruder_window = page.frame(name="intruder")
    assert intruder_window is not None
    intruder_window.evaluate("(data) => parent.postMessage(data, '*')", forged)
    intruder_window.evaluate("() => parent.postMessage({type: 'hapi-connect-close', status: 'SUCCESS'}, '*')")
    # 3. a frame on Connect's own origin that is not the Connect iframe: a real Connect page
    # (with a bad token, so any origin may frame it) whose Close posts to the host.
    page.evaluate(
        """(url) => {
          const frame = document.createElement('iframe');
          frame.id = 'same-origin-intruder';
          frame.src = url;
          document.body.appendChild(frame);
        }""",
        live_stack.url("/connect/?token=forged"),
    )
    intruder = page.frame_locator("#same-origin-intruder")
    expect(intruder.get_by_role("alert")).to_contain_text("not valid")
    intruder.get_by_role("button", name="Close").dispatch_event("click")  # it sits under the overlay
    page.wait_for_timeout(500)
    assert events(page) == []
    expect(page.locator("#human-api")).to_be_visible()

    # The real Connect frame is still heard.
    connect.get_by_role("button", name="Close").click()
    expect(page.locator("#human-api")).to_have_count(0)
    assert [name for name, _ in events(page)] == ["close"]


def test_it_handles_the_oauth_result_only_from_its_own_origin(page: Page, example_app: ExampleApp) -> None:
    connect = open_connect(page, example_app)
    frame = page.frame(url=lambda url: "/connect/?token=" in url)
    assert frame is not None
    denied = {"type": "hapi-oauth-result", "ok": False, "slug": "demo", "message": "Access was denied."}
    # From the host page (another origin): ignored.
    page.evaluate("(data) => document.getElementById('human-api').contentWindow.postMessage(data, '*')", denied)
    page.wait_for_timeout(300)
    expect(connect.get_by_text("Access was denied.")).to_have_count(0)
    # From Connect's own origin, as the OAuth callback page posts it: shown as an error.
    frame.evaluate("(data) => window.postMessage(data, window.location.origin)", denied)
    expect(connect.get_by_role("alert")).to_contain_text("Access was denied.")
    assert events(page) == []


def test_it_fits_a_phone_screen(page: Page, example_app: ExampleApp) -> None:
    page.set_viewport_size({"width": 375, "height": 740})
    connect = open_connect(page, example_app)
    box = page.locator("#human-api").bounding_box()
    assert box is not None and box["x"] == 0 and box["width"] == 375
    frame = page.frame(url=lambda url: "/connect/?token=" in url)
    assert frame is not None
    assert frame.evaluate("document.documentElement.scrollWidth") <= 375
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "connect-375.png"))
    connect.get_by_role("button", name="Demo", exact=True).click()
    connect.get_by_label("Username").fill("demouser")
    connect.get_by_label("Password").fill("wrong")
    connect.get_by_role("button", name="Connect", exact=True).click()
    expect(connect.get_by_role("alert")).to_contain_text("Wrong username or password")
    expect(connect.get_by_label("Password")).to_be_focused()
    page.screenshot(path=str(ARTIFACTS / "connect-375-form-error.png"))
    connect.get_by_label("Password").fill("password")
    connect.get_by_label("Password").press("Enter")
    expect(connect.get_by_role("button", name="Disconnect Demo")).to_be_visible()
    assert frame.evaluate("document.documentElement.scrollWidth") <= 375
    page.screenshot(path=str(ARTIFACTS / "connect-375-connected.png"))


def test_it_runs_the_example_with_the_npm_client_too(page: Page, live_stack: LiveStack, tmp_path: Path) -> None:
    with running_example(live_stack, tmp_path, client_script=CLIENT_BUNDLE) as example:
        connect = open_connect(page, example)
        assert page.locator('script[src="/vendor/connect-client.js"]').count() == 1
        connect.get_by_role("button", name="Demo", exact=True).click()
        connect.get_by_label("Username").fill("demouser")
        connect.get_by_label("Password").fill("password")
        connect.get_by_role("button", name="Connect", exact=True).click()
        wait_until(lambda: events(page), timeout=10, message="the connect event")
        connect.get_by_role("button", name="Close").click()
        expect(page.locator("#human-api")).to_have_count(0)
        assert [name for name, _ in events(page)] == ["connect", "close"]
