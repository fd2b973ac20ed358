"""A sync that is running when the user disconnects, or reconnects another account, stops at its
next page: nothing more is written, and the reconnected account's fresh start is kept."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from data_api.models import Notification, Record
from sources.base import AuthKind, Credentials, RawPage, SourcePlugin, SyncContext
from sources.base import Record as Normalized
from sources.models import Connection, ConnectionStatus, SyncOutcome
from sources.registry import plugin_classes
from sources.services import connection_disconnect, connection_store
from sources.sync import connection_sync
from tests.conftest import Persona
from tests.factories import make_connection

SLUG = "twopages"
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
