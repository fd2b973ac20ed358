"""The OAuth2 flow of Connect in a real browser: Oura connected through the Oura emulator, in a
popup opened from the Connect iframe of a client app's page, then after a denied consent, then
in the whole window when the browser blocks the popup. The live stack (gunicorn + a Celery
worker) talks to the emulator over real HTTP, and so does the browser."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from playwright.sync_api import Page, Request, expect

from connect.models import AuditEntry, OAuthState
from data_api.models import Record
from sources.models import Connection, SyncOutcome, SyncRun
from tests.data_api_helpers import stored_counts
from tests.emulators.oura import OuraEmulator
from tests.factories import make_application
from tests.live import LiveStack, start_stack, stop_stack, wait_until

from .conftest import HostSites, events, open_connect, session_token, wait_for_events

pytestmark = [pytest.mark.browser, pytest.mark.worker, pytest.mark.django_db(transaction=True)]

UNUSED_ORIGIN = "http://127.0.0.1:9"  # Connect opened top-level: no host page receives events
HISTORY_DAYS = 3  # a short first sync: a few documents per collection
# Stands in for the browser's popup blocker on the Connect page only (the host page and the
# provider are untouched): a blocked `window.open` returns null, which is what Connect checks.
BLOCK_POPUPS = """(() => {
  if (window.location.origin === %r && window.location.pathname === "/connect/") {
    window.open = function () { return null; };
  }
})();"""


@pytest.fixture(scope="module")
def oura() -> Iterator[OuraEmulator]:
    emulator = OuraEmulator().start()
    today = datetime.now(UTC).date()
    emulator.seed(today - timedelta(days=HISTORY_DAYS), today, hr_minutes=180)
    try:
        yield emulator
    finally:
        emulator.stop()


@pytest.fixture(scope="module")
def oura_stack(
    django_db_setup: None, oura: OuraEmulator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveStack]:
    """A live stack whose Oura source is the emulator (server and worker alike)."""
    settings = {
        **oura.source_settings(HISTORY_DAYS),
        "ALLOW_HTTP_PROVIDERS": "1",  # the emulator speaks plain HTTP on 127.0.0.1
    }
    stack = start_stack(tmp_path_factory.mktemp("oura-live"), settings)
    try:
        yield stack
    finally:
        stop_stack(stack)


@pytest.fixture
def deny_at_oura(oura: OuraEmulator) -> Iterator[OuraEmulator]:
    oura.deny = True
    try:
        yield oura
    finally:
        oura.deny = False


def requested_urls(page: Page) -> list[str]:
    """Every URL the page's browser context requests from now on (popups included)."""
    urls: list[str] = []

    def seen(request: Request) -> None:
        urls.append(request.url)

    page.context.on("request", seen)
    return urls


def authorize_visits(urls: list[str], oura: OuraEmulator) -> list[dict[str, list[str]]]:
    prefix = oura.url + "/oauth/authorize?"
    return [parse_qs(urlsplit(url).query) for url in urls if url.startswith(prefix)]


def finished_sync(connection: Connection) -> SyncRun:
    """Wait for the worker's first sync of `connection` (it must end before the test's flush)."""
    found: SyncRun = wait_until(
        lambda: SyncRun.objects.filter(connection=connection, finished_at__isnull=False).first(),
        timeout=60,
        message="the Oura history sync",
    )
    return found


def seeded(oura: OuraEmulator) -> Counter[str]:
    from tests.test_oura import expected

    return expected(oura)


def access_token(stack: LiveStack, app: Any, user: str) -> str:
    body = {
        "client_id": app.application.client_id,
        "client_secret": app.client_secret,
        "type": "access",
        "client_user_id": user,
    }
    response = requests.post(stack.url("/v1/connect/token"), json=body, timeout=10)
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def test_it_connects_oura_in_a_popup_tells_the_host_and_syncs(
    page: Page, oura_stack: LiveStack, oura: OuraEmulator, host_sites: HostSites
) -> None:
    app = make_application("Browser app", origins=(host_sites.registered.origin,))
    token = session_token(oura_stack, app, "oauth-user-1")
    connect = open_connect(page, host_sites.registered, oura_stack, token)
    urls = requested_urls(page)
    codes_before = oura.grants["authorization_code"]

    with page.expect_popup() as opened:
        connect.get_by_role("button", name="Oura", exact=True).click()
    popup = opened.value

    expect(connect.get_by_role("button", name="Disconnect Oura")).to_be_visible()
    expect(connect.get_by_role("status")).to_contain_text("Oura is connected")
    wait_until(popup.is_closed, timeout=10, message="the sign-in popup to close")
    (visit,) = authorize_visits(urls, oura)
    assert visit["redirect_uri"] == [oura_stack.url("/connect/oauth/callback")]
    assert visit["client_id"] == [oura.client_id] and visit["state"][0]
    assert oura.grants["authorization_code"] == codes_before + 1

    (connected,) = wait_for_events(page, 1)
    connection = Connection.objects.get(human__client_user_id="oauth-user-1", source="oura")
    assert connection.external_user_id == oura.user_id
    assert connected["name"] == "connect"
    assert connected["data"]["type"] == "hapi-connect-connect-source"
    assert connected["data"]["status"] == "CONNECTED_SOURCE"
    assert connected["data"]["sessionResults"]["connectedSources"] == [{"name": "Oura", "id": connection.pk}]
    assert connected["data"]["currentConnections"] == [{"name": "Oura", "id": connection.pk}]
    assert {m["origin"] for m in page.evaluate("window.messages")} == {oura_stack.base_url}

    run = finished_sync(connection)
    assert run.outcome == SyncOutcome.SUCCEEDED, run.error
    stored = stored_counts(connection=connection)
    assert stored == seeded(oura)
    answer = requests.get(
        oura_stack.url("/v1/human/sleeps"),
        headers={"Authorization": f"Bearer {access_token(oura_stack, app, 'oauth-user-1')}"},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    assert len(answer.json()) == len(oura.documents["sleep"])


def test_it_explains_a_denied_consent_and_connects_nothing(
    page: Page, oura_stack: LiveStack, deny_at_oura: OuraEmulator, host_sites: HostSites
) -> None:
    app = make_application("Browser app", origins=(host_sites.registered.origin,))
    token = session_token(oura_stack, app, "oauth-user-2")
    connect = open_connect(page, host_sites.registered, oura_stack, token)
    urls = requested_urls(page)

    with page.expect_popup() as opened:
        connect.get_by_role("button", name="Oura", exact=True).click()
    popup = opened.value

    expect(connect.get_by_role("alert").filter(has_text="You did not allow access to Oura")).to_be_visible()
    wait_until(popup.is_closed, timeout=10, message="the sign-in popup to close")
    assert len(authorize_visits(urls, deny_at_oura)) == 1
    expect(connect.get_by_role("button", name="Disconnect Oura")).to_have_count(0)
    expect(connect.get_by_role("button", name="Oura", exact=True)).to_be_visible()
    assert events(page) == [] and page.evaluate("window.messages") == []
    assert not Connection.objects.filter(human__client_user_id="oauth-user-2").exists()
    state = OAuthState.objects.get(human__client_user_id="oauth-user-2")
    assert state.used_at is not None  # the denial spent the state: the link can't be replayed
    assert AuditEntry.objects.filter(action="oauth.denied", human_id=state.human_id).exists()


def test_it_falls_back_to_the_whole_window_when_the_popup_is_blocked(
    page: Page, oura_stack: LiveStack, oura: OuraEmulator
) -> None:
    app = make_application("Browser app", origins=(UNUSED_ORIGIN,))
    token = session_token(oura_stack, app, "oauth-user-3")
    page.add_init_script(BLOCK_POPUPS % oura_stack.base_url)
    urls = requested_urls(page)
    page.goto(oura_stack.url(f"/connect/?token={token}"))

    connect_popups: list[Page] = []
    page.on("popup", lambda popup: connect_popups.append(popup))
    page.get_by_role("button", name="Oura", exact=True).click()

    expect(page.get_by_role("button", name="Disconnect Oura")).to_be_visible()
    expect(page.get_by_role("status")).to_contain_text("Oura is connected")
    back = urlsplit(page.url)
    assert (back.path, parse_qs(back.query).get("mode")) == ("/connect/", ["auth"])
    assert "oauth_result" not in back.query  # shown once, then dropped from the address
    (visit,) = authorize_visits(urls, oura)
    assert visit["redirect_uri"] == [oura_stack.url("/connect/oauth/callback")]
    assert connect_popups == []
    start = [u for u in urls if "/connect/oauth/oura/start" in u]
    assert len(start) == 1 and "redirect=1" in start[0]

    connection = Connection.objects.get(human__client_user_id="oauth-user-3", source="oura")
    run = finished_sync(connection)
    assert run.outcome == SyncOutcome.SUCCEEDED, run.error
    assert Record.objects.filter(connection=connection, type="sleeps").count() == len(oura.documents["sleep"])


def test_it_connects_in_a_popup_from_connect_opened_top_level(
    page: Page, oura_stack: LiveStack, oura: OuraEmulator
) -> None:
    app = make_application("Browser app", origins=(UNUSED_ORIGIN,))
    token = session_token(oura_stack, app, "oauth-user-4")
    page.goto(oura_stack.url(f"/connect/?token={token}"))

    with page.expect_popup() as opened:
        page.get_by_role("button", name="Oura", exact=True).click()

    expect(page.get_by_role("button", name="Disconnect Oura")).to_be_visible()
    expect(page.get_by_role("status")).to_contain_text("Oura is connected")
    wait_until(opened.value.is_closed, timeout=10, message="the sign-in popup to close")
    connection = Connection.objects.get(human__client_user_id="oauth-user-4", source="oura")
    assert finished_sync(connection).outcome == SyncOutcome.SUCCEEDED


# Stands in for a provider page that severs the link to the opener (its own
# Cross-Origin-Opener-Policy): the callback page finds no `window.opener` to report to.
SEVER_OPENER = """(() => {
  if (window.location.pathname === "/connect/oauth/callback") { window.opener = null; }
})();"""


def test_it_recognises_a_connection_when_the_popup_could_not_report_back(
    page: Page, oura_stack: LiveStack, oura: OuraEmulator, host_sites: HostSites
) -> None:
    app = make_application("Browser app", origins=(host_sites.registered.origin,))
    token = session_token(oura_stack, app, "oauth-user-5")
    page.context.add_init_script(SEVER_OPENER)
    connect = open_connect(page, host_sites.registered, oura_stack, token)

    with page.expect_popup() as opened:
        connect.get_by_role("button", name="Oura", exact=True).click()
    popup = opened.value
    wait_until(
        lambda: Connection.objects.filter(human__client_user_id="oauth-user-5", source="oura").exists(),
        timeout=20,
        message="the callback to store the connection",
    )
    if not popup.is_closed():
        popup.close()  # the user closes the window that could not close itself

    expect(connect.get_by_role("button", name="Disconnect Oura")).to_be_visible()
    expect(connect.get_by_role("status")).to_contain_text("Oura is connected")
    (connected,) = wait_for_events(page, 1)
    connection = Connection.objects.get(human__client_user_id="oauth-user-5", source="oura")
    assert connected["data"]["status"] == "CONNECTED_SOURCE"
    assert connected["data"]["sessionResults"]["connectedSources"] == [{"name": "Oura", "id": connection.pk}]
    assert finished_sync(connection).outcome == SyncOutcome.SUCCEEDED
