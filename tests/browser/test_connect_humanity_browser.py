"""Humanity connected through the Connect form in a real browser, against the Humanity emulator,
with the live worker syncing the shifts."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from playwright.sync_api import Page

from data_api.models import Record
from sources.models import Connection, SyncOutcome, SyncRun
from tests.emulators.humanity import CLIENT_ID, CLIENT_SECRET, PASSWORD, USERNAME, HumanityEmulator
from tests.factories import make_application
from tests.humanity_helpers import humanity_settings, minute
from tests.live import LiveStack, start_stack, stop_stack, wait_until

from .conftest import HostSites, open_connect, session_token, wait_for_events

pytestmark = [pytest.mark.browser, pytest.mark.worker, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def humanity() -> Iterator[HumanityEmulator]:
    emulator = HumanityEmulator().start()
    try:
        yield emulator
    finally:
        emulator.stop()


@pytest.fixture(scope="module")
def humanity_stack(
    django_db_setup: None, humanity: HumanityEmulator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveStack]:
    """A live stack whose Humanity allowlist admits the emulator."""
    stack = start_stack(tmp_path_factory.mktemp("humanity-live"), humanity_settings(humanity))
    try:
        yield stack
    finally:
        stop_stack(stack)


def synced(connection_id: str) -> Any:
    return SyncRun.objects.filter(connection_id=connection_id, finished_at__isnull=False).first()


def test_it_connects_humanity_in_the_browser_and_syncs_its_shifts(
    page: Page, humanity_stack: LiveStack, humanity: HumanityEmulator, host_sites: HostSites
) -> None:
    start = minute(timezone.now()).replace(hour=14)
    humanity.add_shift("b-past", start - timedelta(days=2), title="Opening")
    humanity.add_shift("b-soon", start + timedelta(days=4), title="Closing", position="12")
    app = make_application("Browser app", origins=(host_sites.registered.origin,))
    token = session_token(humanity_stack, app, "browser-humanity-1")
    connect = open_connect(page, host_sites.registered, humanity_stack, token)

    connect.get_by_role("button", name="Humanity", exact=True).click()
    connect.get_by_label("Instance URL").fill(humanity.url)
    connect.get_by_label("Username").fill(USERNAME)
    connect.get_by_label("Password").fill(PASSWORD)
    connect.get_by_label("Client ID").fill(CLIENT_ID)
    connect.get_by_label("Client Secret").fill(CLIENT_SECRET)
    connect.get_by_role("button", name="Connect", exact=True).click()

    (connected,) = wait_for_events(page, 1)
    connection = Connection.objects.get(human__client_user_id="browser-humanity-1", source="humanity")
    assert connected["data"]["status"] == "CONNECTED_SOURCE"
    assert connected["data"]["sessionResults"]["connectedSources"] == [{"name": "Humanity", "id": connection.pk}]
    assert PASSWORD not in str(connection.credentials)

    run = wait_until(lambda: synced(connection.pk), timeout=60, message="the Humanity history sync")
    assert run.outcome == SyncOutcome.SUCCEEDED, run.error
    shifts = Record.objects.filter(connection=connection, type="shifts")
    assert {r.external_id for r in shifts} == {"b-past", "b-soon"}
    assert {r.data["title"] for r in shifts} == {"Opening", "Closing"}
