"""Connect in a real browser, opened by the real `humanapi-connect-client` from a client app's
page on another origin, against the live server and worker."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import Page, expect

from connect.models import Token
from data_api.models import Record
from humanapi_project import crypto
from sources.models import Connection, ConnectionStatus, SyncOutcome, SyncRun
from tests.factories import make_application, make_connection, make_human
from tests.live import ROOT, LiveStack, wait_until

from .conftest import HostSites, events, open_connect, session_token, wait_for_events

pytestmark = [pytest.mark.browser, pytest.mark.worker, pytest.mark.django_db(transaction=True)]

ARTIFACTS = ROOT / "artifacts"


def demo_pair(connection: Connection) -> dict[str, str]:
    return {"name": "Demo", "id": connection.pk}


def test_it_connects_demo_and_tells_the_host_page(page: Page, live_stack: LiveStack, host_sites: HostSites) -> None:
    app = make_application("Browser app", origins=(host_sites.registered.origin,))
    token = session_token(live_stack, app, "browser-user-1")
    connect = open_connect(page, host_sites.registered, live_stack, token)

    connect.get_by_role("button", name="Demo", exact=True).click()
    connect.get_by_label("Username").fill("demouser")
    connect.get_by_label("Password").fill("password")
    connect.get_by_role("button", name="Connect", exact=True).click()

    (connected,) = wait_for_events(page, 1)
    connection = Connection.objects.get(human__client_user_id="browser-user-1")
    assert connected["name"] == "connect"
    assert connected["data"]["type"] == "hapi-connect-connect-source"
    assert connected["data"]["status"] == "CONNECTED_SOURCE"
    assert connected["data"]["sessionResults"]["connectedSources"] == [demo_pair(connection)]
    assert connected["data"]["currentConnections"] == [demo_pair(connection)]
    # The live worker syncs the new connection (and must be done before the database is flushed).
    run = wait_until(lambda: SyncRun.objects.filter(connection=connection, finished_at__isnull=False).first())
    assert run.outcome == SyncOutcome.SUCCEEDED and Record.objects.filter(connection=connection).exists()

    connect.get_by_role("button", name="Disconnect Demo").click()
    disconnected = wait_for_events(page, 2)[1]
    assert disconnected["name"] == "disconnect"
    assert disconnected["data"]["status"] == "DISCONNECTED_SOURCE"
    assert disconnected["data"]["sessionResults"]["disconnectedSources"] == [demo_pair(connection)]
    assert disconnected["data"]["currentConnections"] == []
    assert Connection.objects.get(pk=connection.pk).status == ConnectionStatus.DISCONNECTED

    connect.get_by_role("button", name="Close").click()
    closed = wait_for_events(page, 3)[2]
    assert closed["name"] == "close" and closed["data"]["status"] == "SUCCESS"
    assert closed["data"]["sessionResults"]["disconnectedSources"] == [demo_pair(connection)]
    expect(page.locator("#human-api")).to_have_count(0)
    # Every message came from the Connect origin, addressed to this page.
    assert {m["origin"] for m in page.evaluate("window.messages")} == {live_stack.base_url}


def test_it_shows_wrong_credentials_and_sends_no_event(
    page: Page, live_stack: LiveStack, host_sites: HostSites
) -> None:
    app = make_application("Browser app", origins=(host_sites.registered.origin,))
    token = session_token(live_stack, app, "browser-user-2")
    connect = open_connect(page, host_sites.registered, live_stack, token)

    connect.get_by_role("button", name="Demo", exact=True).click()
    connect.get_by_label("Username").fill("demouser")
    connect.get_by_label("Password").fill("guess")
    connect.get_by_role("button", name="Connect", exact=True).click()

    expect(connect.get_by_role("alert").filter(has_text="Wrong username or password")).to_be_visible()
    assert events(page) == [] and page.evaluate("window.messages") == []
    assert not Connection.objects.filter(human__client_user_id="browser-user-2").exists()


@pytest.mark.parametrize(
    ("problem", "status", "message"),
    [
        ("expired", "SESSION_TOKEN_EXPIRED", re.compile("expired", re.I)),
        ("bogus", "SESSION_TOKEN_INVALID", re.compile("not valid|invalid", re.I)),
    ],
)
def test_it_explains_an_unusable_token_and_still_closes(
    page: Page, live_stack: LiveStack, host_sites: HostSites, problem: str, status: str, message: re.Pattern[str]
) -> None:
    app = make_application("Browser app", origins=(host_sites.registered.origin,))
    token = session_token(live_stack, app, "browser-user-3")
    if problem == "expired":
        Token.objects.filter(token_hash=crypto.token_hash(token)).update(expires_at=timezone.now() - timedelta(1))
    else:
        token = "bogus-" + token[::-1]
    connect = open_connect(page, host_sites.registered, live_stack, token)

    expect(connect.get_by_text(message).first).to_be_visible()
    expect(connect.get_by_role("button", name="Demo", exact=True)).to_have_count(0)
    connect.get_by_role("button", name="Close").click()

    (closed,) = wait_for_events(page, 1)
    assert closed["name"] == "close"
    assert closed["data"]["type"] == "hapi-connect-close"
    assert closed["data"]["status"] == status
    assert closed["data"]["sessionResults"] == {
        "connectedSources": [],
        "disconnectedSources": [],
        "requestedSources": [],
    }
    assert closed["data"]["currentConnections"] == []
    expect(page.locator("#human-api")).to_have_count(0)


def test_it_reopens_with_an_id_token_and_shows_the_connection(
    page: Page, live_stack: LiveStack, host_sites: HostSites
) -> None:
    app = make_application("Browser app", origins=(host_sites.registered.origin,))
    make_connection(make_human(app, "browser-user-4", "browser-user-4@example.com"))
    token = session_token(live_stack, app, "browser-user-4", kind="id")

    connect = open_connect(page, host_sites.registered, live_stack, token)

    expect(connect.get_by_role("button", name="Disconnect Demo")).to_be_visible()
    assert events(page) == []


def test_it_cannot_be_framed_by_an_unregistered_origin(
    page: Page, live_stack: LiveStack, host_sites: HostSites
) -> None:
    app = make_application("Browser app", origins=(host_sites.registered.origin,))
    token = session_token(live_stack, app, "browser-user-5")

    open_connect(page, host_sites.stranger, live_stack, token)

    frame = page.locator("#human-api").element_handle().content_frame()
    assert frame is not None
    frame.wait_for_load_state()
    page.wait_for_timeout(1000)  # time for a framed page to load and talk, were it allowed to
    # Chromium replaces a frame that CSP frame-ancestors refuses with its own error page.
    assert frame.url.startswith("chrome-error://"), frame.url
    assert frame.get_by_role("button", name="Close").count() == 0
    assert page.evaluate("window.messages") == [] and events(page) == []


def test_it_filters_sources_with_the_search_box(page: Page, live_stack: LiveStack, host_sites: HostSites) -> None:
    app = make_application("Browser app", origins=(host_sites.registered.origin,))
    token = session_token(live_stack, app, "browser-user-6")
    connect = open_connect(page, host_sites.registered, live_stack, token)
    demo = connect.get_by_role("button", name="Demo", exact=True)
    search = connect.get_by_role("searchbox", name="Search sources")
    expect(demo).to_be_visible()

    sources = connect.get_by_role("list", name="Sources").get_by_role("button")
    offered = sources.count()
    search.fill("dem")
    expect(demo).to_be_visible()
    expect(sources).to_have_count(1)  # only the sources whose name matches
    search.fill("no-such-source")
    expect(demo).to_have_count(0)
    expect(connect.get_by_text(re.compile("No source matches"))).to_be_visible()
    search.fill("")
    expect(sources).to_have_count(offered)


@pytest.mark.parametrize(("name", "width", "height"), [("desktop", 1280, 800), ("phone", 375, 740)])
def test_it_fits_desktop_and_phone_screens(
    page: Page, live_stack: LiveStack, name: str, width: int, height: int
) -> None:
    app = make_application("Browser app")
    token = session_token(live_stack, app, "browser-user-7")
    page.set_viewport_size({"width": width, "height": height})

    page.goto(live_stack.url(f"/connect/?token={token}&mode=auth"))

    expect(page.get_by_role("button", name="Demo", exact=True)).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= width  # no sideways scrolling
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"connect-{name}.png"), full_page=True)
    page.get_by_role("button", name="Demo", exact=True).click()
    expect(page.get_by_label("Password")).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    page.screenshot(path=str(ARTIFACTS / f"connect-{name}-demo-form.png"), full_page=True)
    assert all((ARTIFACTS / f"connect-{name}{suffix}.png").stat().st_size > 1000 for suffix in ("", "-demo-form"))
