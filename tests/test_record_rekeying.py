"""Records stored under a provider's old keys are re-keyed by the migrations that came with the
new ones, so the next sync updates them in place and nothing is counted twice."""

from __future__ import annotations

import importlib
from datetime import UTC, datetime, timedelta

import pytest
from django.apps import apps
from django.db import connection as db
from django.utils import timezone

from data_api.models import Record
from sources.base import Record as Normalized
from sources.models import Connection
from tests.conftest import Persona
from tests.data_api_helpers import access_client, demo_connection, store, stored_records

T0 = datetime(2026, 1, 5, 3, 0, tzinfo=UTC)


def migrate(name: str) -> None:
    module = importlib.import_module(f"data_api.migrations.{name}")
    with db.cursor() as cursor:
        cursor.execute(module.POSTGRES)


def ids(connection_id: str, kind: str) -> list[str]:
    return sorted(Record.objects.filter(connection_id=connection_id, type=kind).values_list("external_id", flat=True))


def store_as_rows(connection: Connection, records: list[Normalized]) -> None:
    """Heart-rate readings as they were stored before day rows (one row each), for the
    migrations that came before that."""
    now = timezone.now()
    Record.objects.bulk_create(
        Record(
            human_id=connection.human_id,
            connection_id=connection.pk,
            source=connection.source,
            type=r.type,
            external_id=r.external_id,
            start_time=r.start_time,
            tz_offset=r.tz_offset,
            local_day=r.local_day,
            value=r.value,
            data=dict(r.fields),
            source_data=dict(r.source_data),
            content_hash="old",
            created_at=now,
            updated_at=now,
        )
        for r in records
    )


def move_to_day_rows() -> None:
    importlib.import_module("data_api.migrations.0007_series").move_readings(apps, None)


def reading_ids(connection_id: str) -> list[str]:
    return sorted(r.external_id for r in stored_records("heart_rate", connection_id=connection_id))


@pytest.mark.django_db
def test_it_rekeys_oura_heart_rate_and_daily_totals(alice: Persona) -> None:
    ring = demo_connection(alice.human, slug="oura")
    beat = {"bpm": 60, "source": "awake", "timestamp": "2026-01-05T03:00:00+00:00"}
    old_day = {"date": "2026-01-05", "steps": 9000, "calories": 2300.0}
    store_as_rows(ring, [Normalized("heart_rate", "hr-2026-01-05T03:00:00Z", T0, 0, value=60, source_data=beat)])
    store(
        ring,
        [
            # Oura's document id, stored from the 04:00 start of the activity day (UTC+1).
            Normalized("activity_summaries", "8f9a5221-639e", T0, 60, T0 + timedelta(days=1), fields=old_day),
        ],
    )
    migrate("0006_oura_record_ids")
    assert ids(ring.pk, "heart_rate") == ["hr-2026-01-05T03:00:00Z-awake"]
    move_to_day_rows()
    assert reading_ids(ring.pk) == ["hr-2026-01-05T03:00:00Z-awake"]
    day = Record.objects.get(connection=ring, type="activity_summaries")
    assert day.external_id == "2026-01-05" and day.local_day.isoformat() == "2026-01-05"
    assert day.start_time == datetime(2026, 1, 4, 23, 0, tzinfo=UTC)  # local midnight at +01:00

    # The next sync writes the same keys: one record each, and the day's steps counted once.
    store(ring, [Normalized("activity_summaries", "2026-01-05", day.start_time, 60, fields=old_day, day=day.local_day)])
    assert ids(ring.pk, "activity_summaries") == ["2026-01-05"]
    assert access_client(alice.human).get("/v1/human/activities/summary/2026-01-05").json()["steps"] == 9000


@pytest.mark.django_db
def test_it_keeps_one_of_two_old_oura_daily_documents_of_a_day(alice: Persona) -> None:
    ring = demo_connection(alice.human, slug="oura")
    fields = {"date": "2026-01-05", "steps": 9000}
    store(ring, [Normalized("activity_summaries", doc, T0, 0, fields=fields) for doc in ("doc-a", "doc-b")])
    migrate("0006_oura_record_ids")
    assert ids(ring.pk, "activity_summaries") == ["2026-01-05"]


@pytest.mark.django_db
def test_it_rekeys_fitbit_heart_rate_keeping_one_per_instant(alice: Persona) -> None:
    watch = demo_connection(alice.human, slug="fitbit")
    store_as_rows(
        watch,
        [
            Normalized("heart_rate", "2026-01-05T03:00:00Z/FITBIT/Charge 6", T0, 0, value=61),
            Normalized("heart_rate", "2026-01-05T03:00:00Z/GOOGLE_FIT/Pixel Watch", T0, 0, value=62),
            Normalized("heart_rate", "2026-01-05T03:01:00Z/FITBIT/Charge 6", T0 + timedelta(minutes=1), 0, value=63),
        ],
    )
    migrate("0005_fitbit_heart_rate_ids")
    assert ids(watch.pk, "heart_rate") == ["2026-01-05T03:00:00Z", "2026-01-05T03:01:00Z"]
    move_to_day_rows()
    assert reading_ids(watch.pk) == ["2026-01-05T03:00:00Z", "2026-01-05T03:01:00Z"]
