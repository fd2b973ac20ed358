"""A sync that is running when the user disconnects, or reconnects another account, stops at its
next page: nothing more is written, and the reconnected account's fresh start is kept. A token
refresh that races the disconnect never brings the connection back."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from django.db import connection as db
from django.utils import timezone

from connect.models import AuditEntry
from data_api.models import Notification, Record
from sources.base import AuthKind, Credentials, RawPage, SourcePlugin, SyncContext
from sources.base import Record as Normalized
from sources.http import ProviderHttp
from sources.models import Connection, ConnectionStatus, SyncOutcome
from sources.providers.oura import OuraSource
from sources.registry import get_plugin, plugin_classes
from sources.services import connection_disconnect, connection_store
from sources.sync import connection_sync
from tests.conftest import Persona
from tests.emulators.oura import OuraEmulator
from tests.factories import make_connection
from tests.live import wait_until

SLUG = "twopages"
CALLBACK = "http://127.0.0.1:8000/connect/oauth/callback"
between_pages: list[Callable[[], None]] = []  # what "the user" does while page 2 is being fetched


class TwoPages(SourcePlugin):
    slug = SLUG
    name = "Two Pages"
    auth_kind = AuthKind.CREDENTIALS
    data_types = ("weight",)

    def fetch(self, ctx: SyncContext) -> Iterator[RawPage]:
        yield RawPage(type="weight", payload=["w-1"], cursor={"page": 1})
        for action in between_pages:
            action()
        yield RawPage(type="weight", payload=["w-2"], cursor={"page": 2})

    def normalize(self, page: RawPage, ctx: SyncContext) -> list[Normalized]:
        at = datetime(2026, 3, 1, tzinfo=UTC)
        return [Normalized(type="weight", external_id=i, start_time=at, tz_offset=0, value=80.0) for i in page.payload]


@pytest.fixture(autouse=True)
def plugin(settings: Any) -> Iterator[None]:
    settings.SOURCES_ENABLED = []
    plugin_classes()[SLUG] = TwoPages  # which plugins exist: test setup
    yield
    plugin_classes().pop(SLUG, None)
    between_pages.clear()


@pytest.mark.django_db(transaction=True)
def test_it_stops_a_running_sync_when_the_user_disconnects(alice: Persona) -> None:
    connection = make_connection(alice.human, slug=SLUG)
    between_pages.append(lambda: connection_disconnect(connection=connection, actor="end_user", request=None))

    run = connection_sync(connection_id=connection.pk)

    assert run is not None and run.outcome == SyncOutcome.CANCELLED
    assert list(Record.objects.filter(connection=connection).values_list("external_id", flat=True)) == ["w-1"]
    stopped = Connection.objects.get(pk=connection.pk)
    assert stopped.status == ConnectionStatus.DISCONNECTED
    assert stopped.last_synced_at is None and stopped.sync_claim == ""
    assert not Notification.objects.filter(event_type="sync.failed").exists()


@pytest.mark.django_db(transaction=True)
def test_it_keeps_the_fresh_start_of_an_account_reconnected_during_a_sync(alice: Persona) -> None:
    connection = make_connection(alice.human, slug=SLUG)
    other_account = Credentials(data={"user": "someone-else"}, external_user_id="someone-else")
    between_pages.append(
        lambda: connection_store(human=alice.human, slug=SLUG, credentials=other_account, request=None)
    )

    run = connection_sync(connection_id=connection.pk)

    assert run is not None and run.outcome == SyncOutcome.CANCELLED
    fresh = Connection.objects.get(pk=connection.pk)
    assert fresh.external_user_id == "someone-else" and fresh.status == ConnectionStatus.ACTIVE
    assert fresh.cursor == {} and fresh.history_synced_at is None  # the new account's history is still to come
    between_pages.clear()
    again = connection_sync(connection_id=connection.pk)
    assert again is not None and again.outcome == SyncOutcome.SUCCEEDED and again.kind == "history"


# --- a disconnect racing a token refresh, with the Oura emulator over real HTTP ----------------


@pytest.fixture
def oura(settings: Any) -> Iterator[OuraEmulator]:
    emulator = OuraEmulator()
    emulator.start()
    settings.SOURCE_SETTINGS = emulator.source_settings(2)
    today = datetime.now(UTC).date()
    emulator.seed(today - timedelta(days=2), today)
    yield emulator
    emulator.stop()


def connect_oura(persona: Persona) -> Connection:
    plugin = get_plugin("oura")
    assert isinstance(plugin, OuraSource)
    url = plugin.authorization_url(redirect_uri=CALLBACK, state="s", code_challenge=None)
    consent = requests.get(url, allow_redirects=False, timeout=5)
    code = parse_qs(urlsplit(consent.headers["Location"]).query)["code"][0]
    credentials = plugin.exchange_code(code=code, redirect_uri=CALLBACK, code_verifier=None, http=ProviderHttp())
    stored = connection_store(human=persona.human, slug="oura", credentials=credentials, request=None)
    return Connection.objects.select_related("human__application").get(pk=stored.pk)


def user_disconnects(connection: Connection) -> None:
    """The user's click, on a thread (and database connection) of its own."""
    try:
        connection_disconnect(connection=connection, actor="end_user", request=None)
    finally:
        db.close()


def waiting_for_a_row_lock() -> bool:
    try:
        with db.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
            row = cursor.fetchone()
        return bool(row and row[0])
    finally:
        db.close()


def connection_actions(connection: Connection) -> list[str]:
    entries = AuditEntry.objects.filter(details__connection_id=connection.pk).order_by("id")
    return list(entries.values_list("action", flat=True))


@pytest.mark.django_db(transaction=True)
def test_a_disconnect_while_a_refused_refresh_is_out_wins(alice: Persona, oura: OuraEmulator) -> None:
    """The run starts with a refresh; while Oura considers it, the user disconnects (and waits
    for the refresh's row lock); then Oura refuses the grant (400 invalid_grant). The refusal
    is judged under the lock, before the disconnect: the connection ends disconnected, with no
    credentials, not `reauth_required`."""
    connection = connect_oura(alice)
    Connection.objects.filter(pk=connection.pk).update(token_expires_at=timezone.now())
    oura.revoke_everything()  # the refresh token is dead: invalid_grant
    disconnect = threading.Thread(target=user_disconnects, args=(connection,))

    def while_the_refresh_is_out() -> None:
        disconnect.start()
        wait_until(waiting_for_a_row_lock, timeout=10, interval=0.05, message="the disconnect to wait for the lock")

    oura.on_next_call["token"] = while_the_refresh_is_out
    run = connection_sync(connection_id=connection.pk)
    disconnect.join(timeout=10)

    assert run is not None and run.outcome == SyncOutcome.REAUTH_REQUIRED
    assert oura.calls["token"] == 2  # the code exchange, then the refused refresh
    final = Connection.objects.get(pk=connection.pk)
    assert final.status == ConnectionStatus.DISCONNECTED
    assert final.credentials_sealed == "" and final.token_expires_at is None
    assert connection_actions(connection)[-1] == "connection.disconnected"


@pytest.mark.django_db(transaction=True)
def test_a_token_refused_after_a_disconnect_stops_the_run_without_a_refresh(alice: Persona, oura: OuraEmulator) -> None:
    """The user disconnects while a page is being fetched, and Oura answers it 401: the run
    stops (cancelled); no refresh is tried, nothing is marked, no failure is reported."""
    connection = connect_oura(alice)

    def during_the_first_page() -> None:
        user_disconnects(connection)
        oura.revoke_access_tokens()

    oura.on_next_call["collection"] = during_the_first_page
    run = connection_sync(connection_id=connection.pk)

    assert run is not None and run.outcome == SyncOutcome.CANCELLED
    assert oura.calls["token"] == 1  # only the code exchange
    final = Connection.objects.get(pk=connection.pk)
    assert final.status == ConnectionStatus.DISCONNECTED and final.credentials_sealed == ""
    assert connection_actions(connection) == ["connection.connected", "connection.disconnected"]
    assert not Notification.objects.filter(event_type__in=["sync.failed", "source.reauth_required"]).exists()
