"""What a page may do to stored records: an unreadable item never deletes its stored copy, and
text the database can't hold (U+0000) never blocks a connection."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from data_api.models import Record
from sources.base import AuthKind, RawPage, SourcePlugin, SyncContext, Window
from sources.base import Record as Normalized
from sources.models import SyncOutcome
from sources.registry import plugin_classes
from sources.sync import connection_sync
from tests.conftest import Persona
from tests.factories import make_connection

SLUG = "windowed"
T0 = datetime(2026, 3, 1, tzinfo=UTC)
provider: dict[str, Any] = {"items": []}  # what the "provider" answers


class Windowed(SourcePlugin):
    """One page: the complete list of weights in March 2026. Items are (id, value); a value of
    None is an item the plugin can't read."""

    slug = SLUG
    name = "Windowed"
    auth_kind = AuthKind.CREDENTIALS
    data_types = ("weight",)

    def fetch(self, ctx: SyncContext) -> Iterator[RawPage]:
        window = Window(type="weight", start=T0, end=T0 + timedelta(days=31))
        yield RawPage(type="weight", payload=list(provider["items"]), window=window)

    def normalize(self, page: RawPage, ctx: SyncContext) -> list[Normalized]:
        records = []
        for n, (item_id, value) in enumerate(page.payload):
            if value is None:
                page.skipped(f"item {item_id} unreadable")
                continue
            records.append(
                Normalized(
                    type="weight",
                    external_id=item_id,
                    start_time=T0 + timedelta(days=n),
                    tz_offset=0,
                    value=80.0,
                    fields={"value": 80.0, "unit": "kg", "note": value},
                    source_data={"id": item_id, "note": value},
                )
            )
        return records


@pytest.fixture(autouse=True)
def plugin() -> Iterator[None]:
    plugin_classes()[SLUG] = Windowed  # which plugins exist: test setup
    yield
    plugin_classes().pop(SLUG, None)
    provider["items"] = []


def stored(connection: Any) -> list[str]:
    return sorted(Record.objects.filter(connection=connection).values_list("external_id", flat=True))


@pytest.mark.django_db(transaction=True)
def test_it_never_deletes_a_record_because_its_item_was_unreadable(alice: Persona) -> None:
    connection = make_connection(alice.human, slug=SLUG)
    provider["items"] = [("a", "ok"), ("b", "ok")]
    assert connection_sync(connection_id=connection.pk).outcome == SyncOutcome.SUCCEEDED  # type: ignore[union-attr]
    assert stored(connection) == ["a", "b"]

    provider["items"] = [("a", "ok"), ("b", None)]  # b is still there, but can't be read this time
    connection_sync(connection_id=connection.pk)
    assert stored(connection) == ["a", "b"]

    provider["items"] = [("a", "ok")]  # now b is really gone from the complete list
    run = connection_sync(connection_id=connection.pk)
    assert stored(connection) == ["a"] and run is not None and run.counts["weight"]["deleted"] == 1


@pytest.mark.django_db(transaction=True)
def test_it_stores_text_with_a_nul_character_without_it(alice: Persona) -> None:
    connection = make_connection(alice.human, slug=SLUG)
    provider["items"] = [("a\x00", "Front\x00 desk")]
    run = connection_sync(connection_id=connection.pk)
    assert run is not None and run.outcome == SyncOutcome.SUCCEEDED, run.error
    record = Record.objects.get(connection=connection)
    assert record.external_id == "a" and record.data["note"] == "Front desk"
    assert record.source_data == {"id": "a", "note": "Front desk"}
    again = connection_sync(connection_id=connection.pk)
    assert again is not None  # unchanged: read again, nothing rewritten
    assert again.counts["weight"] == {"read": 1, "created": 0, "updated": 0, "deleted": 0, "unreadable": 0, "held": 0}
