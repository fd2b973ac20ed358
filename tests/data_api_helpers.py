"""Helpers of the Data API tests: records written through the engine's own upsert, and a
client holding an access token."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from django.db import transaction
from django.test import Client
from django.utils import timezone

from connect.models import Human, Token, TokenKind
from data_api import series
from data_api.models import Record as StoredRecord
from data_api.models import Series
from sources.base import Record
from sources.models import Connection
from sources.types import SERIES
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


@dataclass(frozen=True)
class Stored:
    """A stored record as the tests look at it, whichever store holds its type."""

    pk: int
    human_id: str
    connection_id: str
    source: str
    type: str
    external_id: str
    start_time: datetime
    tz_offset: int
    local_day: date
    value: float | None
    data: dict[str, Any]
    source_data: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    end_time: datetime | None = None

    @property
    def id(self) -> int:
        return self.pk


def _from_ms(ms: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)


def stored_records(kind: str, **where: Any) -> list[Stored]:
    """Every stored record of `kind` matching `where` (human_id, connection_id, source), newest
    first (by instant, then id), read from the record table or the day rows of a series type."""
    if kind not in SERIES:
        rows = StoredRecord.objects.filter(type=kind, **where).order_by("-start_time", "-id")
        return [
            Stored(
                r.pk,
                r.human_id,
                r.connection_id,
                r.source,
                r.type,
                r.external_id,
                r.start_time,
                r.tz_offset,
                r.local_day,
                r.value,
                r.data,
                r.source_data,
                r.created_at,
                r.updated_at,
                r.end_time,
            )
            for r in rows
        ]
    out = []
    for row in Series.objects.filter(type=kind, **where):
        for r in series.decode(row.payload):
            out.append(
                Stored(
                    series.reading_id(row.pk, r[series.SLOT]),
                    row.human_id,
                    row.connection_id,
                    row.source,
                    kind,
                    r[series.KEY],
                    _from_ms(r[series.AT]),
                    r[series.TZ],
                    row.local_day,
                    r[series.VALUE],
                    r[series.FIELDS],
                    r[series.SOURCE_DATA],
                    _from_ms(r[series.CREATED]),
                    _from_ms(r[series.UPDATED]),
                )
            )
    return sorted(out, key=lambda s: (s.start_time, s.pk), reverse=True)


def stored_counts(**where: Any) -> Counter[str]:
    """How many records of each type are stored for `where` (human_id/human, connection_id/
    connection), in both stores."""
    counts = Counter(StoredRecord.objects.filter(**where).values_list("type", flat=True))
    for kind, n in Series.objects.filter(**where).values_list("type", "count"):
        counts[kind] += n
    return counts
