"""Helpers of the Data API tests: records written through the engine's own upsert, and a
client holding an access token."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import transaction
from django.test import Client
from django.utils import timezone

from connect.models import Human, Token, TokenKind
from sources.base import Record
from sources.models import Connection
from sources.upsert import upsert_records
from tests.factories import make_connection

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def store(connection: Connection, records: Iterable[Record]) -> None:
    with transaction.atomic():
        upsert_records(
            list(records),
            human_id=connection.human_id,
            connection_id=connection.pk,
            source=connection.source,
            now=timezone.now(),
        )


def reading(kind: str, n: int, at: datetime, value: float, tz: int = 0, unit: str = "bpm") -> Record:
    return Record(
        type=kind,
        external_id=f"{kind}-{n}",
        start_time=at,
        tz_offset=tz,
        value=value,
        fields={"value": value, "unit": unit},
        source_data={"n": n},
    )


def activity(n: int, start: datetime, minutes: int, steps: int, tz: int = 0, **extra: Any) -> Record:
    return Record(
        type="activities",
        external_id=f"act-{n}",
        start_time=start,
        end_time=start + timedelta(minutes=minutes),
        tz_offset=tz,
        fields={
            "type": "walking",
            "duration": minutes * 60,
            "distance": steps * 0.75,
            "steps": steps,
            "calories": minutes * 4.5,
            **extra,
        },
        source_data={"n": n},
    )


def sleep(n: int, start: datetime, in_bed: int, awake: int, tz: int = 0) -> Record:
    return Record(
        type="sleeps",
        external_id=f"sleep-{n}",
        start_time=start,
        end_time=start + timedelta(minutes=in_bed),
        tz_offset=tz,
        fields={
            "day": (start + timedelta(minutes=in_bed + tz)).date().isoformat(),
            "mainSleep": True,
            "timeAsleep": in_bed - awake,
            "timeAwake": awake,
            "timeInBed": in_bed,
            "efficiency": round(100 * (in_bed - awake) / in_bed),
            "numberOfWakeups": 2,
        },
        source_data={"n": n},
    )


def access_client(human: Human) -> Client:
    _, value = Token.mint(kind=TokenKind.ACCESS, human=human, ttl=3600)
    return Client(headers={"Authorization": f"Bearer {value}"})


def demo_connection(human: Human, slug: str = "demo") -> Connection:
    return make_connection(human, slug=slug)
