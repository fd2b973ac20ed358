from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from django.utils import timezone

from data_api.models import Record, Series
from sources.base import SyncContext, as_records
from sources.http import ProviderHttp
from sources.models import Connection, SyncOutcome
from sources.providers.demo import DemoSource
from sources.registry import get_plugin
from sources.sync import connection_sync
from tests.conftest import Persona
from tests.data_api_helpers import stored_counts
from tests.factories import make_connection


def expected_records(connection: Connection) -> Counter[str]:
    plugin = get_plugin("demo")
    assert isinstance(plugin, DemoSource)
    ctx = SyncContext(
        connection_id=connection.pk,
        external_user_id="demouser",
        credentials={},
        cursor={},
        history=True,
        now=timezone.now(),
        http=ProviderHttp(),
        settings={},
    )
    return Counter(r.type for page in plugin.fetch(ctx) for r in as_records(plugin.normalize(page, ctx)))


@pytest.mark.django_db(transaction=True)
def test_it_stores_every_demo_record_once(alice: Persona, settings: object) -> None:
    connection = make_connection(alice.human)
    run = connection_sync(connection_id=connection.pk)
    assert run is not None and run.outcome == SyncOutcome.SUCCEEDED
    stored = stored_counts(connection=connection)
    assert stored == expected_records(connection)
    assert run.counts["activities"]["created"] == stored["activities"]

    again = connection_sync(connection_id=connection.pk)
    assert again is not None and again.kind == "incremental"
    assert stored_counts(connection=connection) == stored
    # Unchanged records are not rewritten: updatedAt only moves on a real change.
    assert all(c["updated"] == 0 for c in again.counts.values())


@pytest.mark.django_db(transaction=True)
def test_it_coalesces_a_sync_requested_while_one_runs(alice: Persona) -> None:
    connection = make_connection(alice.human)
    Connection.objects.filter(pk=connection.pk).update(sync_claimed_at=timezone.now(), sync_claim="other")
    assert connection_sync(connection_id=connection.pk) is None
    assert Connection.objects.get(pk=connection.pk).sync_requested is True
    assert not stored_counts(connection=connection)


@pytest.mark.django_db(transaction=True)
def test_it_keeps_the_planners_statistics_fresh_after_a_large_sync(alice: Persona, settings: Any) -> None:
    """Reads right after a first history sync must not be planned for an empty table."""
    from django.db import connection as db

    settings.DEMO_HISTORY_DAYS = 3
    settings.DEMO_HEART_RATE_INTERVAL_MINUTES = 1
    connection = make_connection(alice.human)
    run = connection_sync(connection_id=connection.pk)
    assert run is not None and run.counts["heart_rate"]["created"] > 2000
    with db.cursor() as cursor:
        cursor.execute("SELECT reltuples FROM pg_class WHERE relname = 'data_api_record'")
        believed = cursor.fetchone()[0]
        cursor.execute("SELECT reltuples FROM pg_class WHERE relname = 'data_api_series'")
        believed_days = cursor.fetchone()[0]
    # The planner knows the tables hold (at least) what this sync wrote, not that they are empty.
    assert believed >= Record.objects.count() * 0.9
    assert believed_days >= Series.objects.count() * 0.9 > 0


@pytest.mark.django_db(transaction=True)
def test_it_serves_the_nights_measures_and_sleep_stages(alice: Persona, settings: Any) -> None:
    from tests.data_api_helpers import access_client

    settings.DEMO_HISTORY_DAYS = 2
    connection_sync(connection_id=make_connection(alice.human).pk)
    client = access_client(alice.human)
    night = client.get("/v1/human/sleeps").json()[0]
    assert night["deepSleep"] + night["lightSleep"] + night["remSleep"] == night["timeAsleep"]
    for kind, unit in (
        ("resting_heart_rate", "bpm"),
        ("heart_rate_variability", "ms"),
        ("respiratory_rate", "breaths/min"),
        ("body_temperature", "°C"),
        ("vo2_max", "mL/kg/min"),
    ):
        latest = client.get(f"/v1/human/{kind}").json()
        assert latest["unit"] == unit and latest["timestamp"] == night["endTime"], kind
    temperature = client.get("/v1/human/body_temperature").json()
    assert abs(temperature["value"] - 36.4 - temperature["deviation"]) < 0.011
    summary = client.get(f"/v1/human/sleeps/summary/{night['day']}").json()
    assert summary["remSleep"] == night["remSleep"]


def test_a_night_is_served_once_it_is_over_with_its_measures() -> None:
    """Mid-sleep, the night in progress is not served (nor its resting rate, HRV, ...): a device
    reports a night when it ends. A minute after it ends, all of it is."""
    from datetime import date, datetime, timedelta

    from sources.base import RawPage, SyncContext
    from sources.http import ProviderHttp
    from sources.providers.demo import DemoGenerator, DemoSource

    day = date(2026, 3, 4)
    document = DemoGenerator("demouser", 60).day_document(day)
    ends = datetime.fromisoformat(document["sleep"]["end"].replace("Z", "+00:00"))

    def kinds_at(now: datetime) -> set[str]:
        ctx = SyncContext(
            connection_id="c",
            external_user_id="demouser",
            credentials={},
            cursor={},
            history=True,
            now=now,
            http=ProviderHttp(),
            settings={},
        )
        records = as_records(DemoSource({}).normalize(RawPage(type="day", payload=document), ctx))
        assert all((r.end_time or r.start_time) <= now for r in records)
        return {r.type for r in records}

    nightly = {"sleeps", "resting_heart_rate", "heart_rate_variability", "respiratory_rate", "body_temperature"}
    assert not nightly & kinds_at(ends - timedelta(hours=1))
    assert nightly <= kinds_at(ends + timedelta(minutes=1))
