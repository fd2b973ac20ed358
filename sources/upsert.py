"""Set-based, idempotent writes of normalized records.

One statement per page: insert new records, update changed ones in place (keeping `id` and
`created_at`), leave identical ones untouched (so `updatedAt` only moves on a real change).
Changes are detected by a hash of the record's content. On PostgreSQL the page is streamed
with COPY into a temporary table first, then merged with `INSERT ... SELECT ... ON CONFLICT`.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from itertools import chain, repeat
from operator import add, attrgetter, floordiv, mul
from typing import Any

from django.db import connection as db
from django.db.models import QuerySet

from data_api import series
from data_api.models import Record as StoredRecord
from humanapi_project import sql

from .base import Readings, Record, day_of_ordinal
from .types import RECORD_TYPES, SERIES

COLUMNS = (
    "human_id",
    "connection_id",
    "source",
    "type",
    "external_id",
    "start_time",
    "end_time",
    "tz_offset",
    "local_day",
    "value",
    "data",
    "source_data",
    "content_hash",
)
_UPDATED = [c for c in COLUMNS if c not in ("human_id", "connection_id", "source", "type", "external_id")]
TABLE = "data_api_record"


@dataclass
class TypeCounts:
    read: int = 0  # items the provider sent, readable or not
    created: int = 0
    updated: int = 0
    deleted: int = 0
    unreadable: int = 0
    held: int = 0  # stored records kept although their window came back empty (see sync)

    def as_json(self) -> dict[str, int]:
        return {
            "read": self.read,
            "created": self.created,
            "updated": self.updated,
            "deleted": self.deleted,
            "unreadable": self.unreadable,
            "held": self.held,
        }


# One encoder for every record: json.dumps with options builds a new encoder per call. Sorted
# keys keep the content hash stable when a provider reorders a payload's keys.
_ENCODER = json.JSONEncoder(separators=(",", ":"), sort_keys=True, default=str)


def _dumps(value: Any) -> str:
    text = _ENCODER.encode(value)
    # PostgreSQL's jsonb can't hold U+0000; one such character from a provider would fail the
    # page on every retry. The check is cheap; the cleaning runs only when it's needed.
    return _ENCODER.encode(_without_nul(value)) if "\\u0000" in text else text


def stored_id(external_id: str) -> str:
    """A provider's id as the database holds it (text columns can't hold U+0000)."""
    return external_id.replace("\x00", "")


def _without_nul(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, dict):
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_without_nul(v) for v in value]
    return value


def _row(record: Record, human_id: str, connection_id: str, source: str) -> tuple[Any, ...]:
    data = _dumps(dict(record.fields))
    source_data = _dumps(dict(record.source_data))
    digest = hashlib.md5(
        "|".join(
            (
                record.start_time.isoformat(),
                record.end_time.isoformat() if record.end_time else "",
                str(record.tz_offset),
                repr(record.value),
                data,
                source_data,
            )
        ).encode(),
        usedforsecurity=False,
    ).hexdigest()
    return (
        human_id,
        connection_id,
        source,
        record.type,
        stored_id(record.external_id),
        record.start_time,
        record.end_time,
        record.tz_offset,
        record.local_day,
        record.value,
        data,
        source_data,
        digest,
    )


def _epoch_ms(moment: datetime) -> int:
    return round(moment.timestamp() * 1000)


_EPOCH_DAY = date(1970, 1, 1).toordinal()
# Series types filed under the local day a reading starts on: that day comes from the instant
# and the offset, in integers, with the instant's one conversion.
_BY_START = frozenset(kind for kind in SERIES if RECORD_TYPES[kind].day_of == "start")


def _series_batches(items: list[Record | Readings], now_ms: int) -> dict[tuple[str, date], series.Fresh]:
    """Records and runs of readings of series types as data_api.series writes them: by (type,
    local day), column by column. A page holds a day or two of one type's readings, each column
    made by a C-level map over the page rather than a list built per reading."""
    by_kind: dict[str, list[Record | Readings]] = {}
    for item in items:
        by_kind.setdefault(item.type, []).append(item)
    batches: dict[tuple[str, date], series.Fresh] = {}
    for kind, group in by_kind.items():
        runs = [item for item in group if isinstance(item, Readings)]
        singles = [item for item in group if isinstance(item, Record)]
        parts = [*runs, _as_run(kind, singles)] if singles else runs
        run = parts[0] if len(parts) == 1 else _joined(kind, parts)
        n = len(run)
        starts, offsets = run.start_times, run.tz_offsets
        seconds = list(map(datetime.timestamp, starts))
        if kind in _BY_START and None not in map(_TZINFO, starts) and all(r.day is None for r in singles):
            # Filed under the local day a reading starts on: from the instant and the offset, in
            # integers (whole minutes since the epoch, plus the offset, in whole days).
            ordinals = list(
                map(int, map(floordiv, map(add, map(floordiv, seconds, repeat(60)), offsets), repeat(1440)))
            )
            named = {o: day_of_ordinal(_EPOCH_DAY + o) for o in set(ordinals)}
            days = list(map(named.__getitem__, ordinals))
        else:  # as each record says (its own day, or the local day of its start or end)
            every = [*(r for part in runs for r in part.records()), *singles]
            days = list(map(_LOCAL_DAY, every))
        keys = run.external_ids
        if "\x00" in "".join(keys):
            keys = list(map(stored_id, keys))
        fields, source_data = run.fields, run.source_data
        columns = series.Fresh(
            times=list(map(round, map(mul, seconds, repeat(1000)))),
            slots=[0] * n,
            keys=keys,
            offsets=offsets,
            values=run.values,
            fields=fields if _all_dicts(fields) else [dict(f) for f in fields],  # type: ignore[arg-type]
            source_data=source_data if _all_dicts(source_data) else [dict(d) for d in source_data],
            created=[now_ms] * n,
            updated=[now_ms] * n,
        )
        distinct = set(days)
        if len(distinct) == 1:
            batches[(kind, days[0])] = columns
            continue
        at: dict[date, list[int]] = {day: [] for day in sorted(distinct)}
        for position, day in enumerate(days):
            at[day].append(position)
        for day, positions in at.items():
            batches[(kind, day)] = columns.pick(positions)
    return batches


def _as_run(kind: str, records: list[Record]) -> Readings:
    """Records of one type as a run of readings (their end times and days aside)."""
    return Readings(
        kind,
        list(map(_EXTERNAL_ID, records)),
        list(map(_START, records)),
        list(map(_TZ, records)),
        list(map(_VALUE, records)),
        list(map(_FIELDS, records)),
        list(map(_SOURCE_DATA, records)),
    )


def _joined(kind: str, runs: list[Readings]) -> Readings:
    """Runs of one type as one, in order."""
    columns = zip(*(run.columns() for run in runs), strict=True)
    return Readings(kind, *(list(chain.from_iterable(column)) for column in columns))


def _all_dicts(values: list[Any]) -> bool:
    return set(map(type, values)) <= {dict}


_START, _TZ = attrgetter("start_time"), attrgetter("tz_offset")
_TZINFO, _LOCAL_DAY, _EXTERNAL_ID = attrgetter("tzinfo"), attrgetter("local_day"), attrgetter("external_id")
_VALUE, _FIELDS, _SOURCE_DATA = attrgetter("value"), attrgetter("fields"), attrgetter("source_data")


@dataclass
class PageWritten:
    counts: dict[str, TypeCounts]
    oldest: date | None  # the earliest local day of the page's records


def upsert_records(
    records: Iterable[Record | Readings], *, human_id: str, connection_id: str, source: str, now: datetime
) -> dict[str, TypeCounts]:
    """Write a page; must run inside a transaction. Returns created/updated counts per type."""
    return upsert_page(records, human_id=human_id, connection_id=connection_id, source=source, now=now).counts


def upsert_page(
    records: Iterable[Record | Readings], *, human_id: str, connection_id: str, source: str, now: datetime
) -> PageWritten:
    """Write a page; must run inside a transaction. Readings of the types stored as series go
    to their day rows (data_api.series), the rest to the record table."""
    unique: dict[tuple[str, str], tuple[Any, ...]] = {}
    readings = []
    for item in records:  # the last copy of a duplicated id in one page wins
        if item.type in SERIES:
            readings.append(item)
            continue
        for record in item.records() if isinstance(item, Readings) else (item,):
            row = _row(record, human_id, connection_id, source)
            unique[(row[3], row[4])] = row  # (type, external_id as stored)
    batches = _series_batches(readings, _epoch_ms(now)) if readings else {}
    days = {row[8] for row in unique.values()}  # local_day
    days.update(day for _, day in batches)
    written = PageWritten(counts={}, oldest=min(days) if days else None)
    counts = written.counts
    if batches:
        found = series.write_days(batches, human_id=human_id, connection_id=connection_id, source=source)
        for kind, w in found.items():
            counts[kind] = TypeCounts(created=w.created, updated=w.updated)
    if not unique:
        return written
    rows = list(unique.values())
    if db.vendor == "postgresql":
        results = _upsert_postgresql(rows, now)
    else:
        results = [(kind, inserted, n) for (kind, inserted), n in Counter(_upsert_generic(rows, now)).items()]
    for kind, inserted, n in results:
        entry = counts.setdefault(kind, TypeCounts())
        if inserted:
            entry.created += n
        else:
            entry.updated += n
    return written


_CONFLICT = (
    "ON CONFLICT (connection_id, type, external_id) DO UPDATE SET "
    + ", ".join(f"{c} = EXCLUDED.{c}" for c in _UPDATED)
    + ", updated_at = EXCLUDED.updated_at "
    + f"WHERE {TABLE}.content_hash <> EXCLUDED.content_hash "
)


_FEW = 100
_ARRAY_TYPES = {
    "start_time": "timestamptz",
    "end_time": "timestamptz",
    "tz_offset": "smallint",
    "local_day": "date",
    "value": "float8",
    "data": "text",
    "source_data": "text",
}
# Sent in binary (%b): an array of JSON texts in the text format is escaped quote by quote.
_ARRAYS = ", ".join(f"%b::{_ARRAY_TYPES.get(c, 'varchar')}[]" for c in COLUMNS)
_FEW_ROWS = (
    f"INSERT INTO {TABLE} ({', '.join(COLUMNS)}, created_at, updated_at) "
    f"SELECT {', '.join(f'{c}::jsonb' if c in ('data', 'source_data') else c for c in COLUMNS)}, %s, %s "
    f"FROM unnest({_ARRAYS}) AS u({', '.join(COLUMNS)}) "
    f"{_CONFLICT}RETURNING type, (xmax = 0) AS inserted"
)


def _upsert_postgresql(rows: Sequence[tuple[Any, ...]], now: datetime) -> list[tuple[str, bool, int]]:
    """(type, inserted?, how many) of the rows written; rows left untouched are not counted."""
    cols = ", ".join(COLUMNS)
    if len(rows) <= _FEW:  # a few rows: one statement, cheaper than a staged COPY
        # Each column as one array parameter: the same statement text for every page, however
        # many rows, where one placeholder per value would make a new statement each time.
        columns = [list(column) for column in zip(*rows, strict=True)]
        value = COLUMNS.index("value")
        columns[value] = [None if v is None else float(v) for v in columns[value]]
        with sql.cursor() as cursor:
            cursor.execute(_FEW_ROWS, [now, now, *columns])
            return [(kind, inserted, n) for (kind, inserted), n in Counter(cursor.fetchall()).items()]
    with db.cursor() as cursor:
        cursor.execute(
            "CREATE TEMP TABLE IF NOT EXISTS record_stage ("
            "human_id varchar, connection_id varchar, source varchar, type varchar, external_id varchar,"
            " start_time timestamptz, end_time timestamptz, tz_offset smallint, local_day date,"
            " value double precision, data jsonb, source_data jsonb, content_hash varchar"
            ") ON COMMIT DELETE ROWS"
        )
        raw = cursor.cursor  # the psycopg cursor, for COPY
        with raw.copy(f"COPY record_stage ({cols}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        # Counted in the database: a page of minute readings returns a few rows, not thousands.
        cursor.execute(
            f"WITH written AS (INSERT INTO {TABLE} ({cols}, created_at, updated_at) "
            f"SELECT {cols}, %s, %s FROM record_stage {_CONFLICT}"
            "RETURNING type, (xmax = 0) AS inserted) "
            "SELECT type, inserted, count(*) FROM written GROUP BY type, inserted",
            [now, now],
        )
        written = [(kind, bool(inserted), int(n)) for kind, inserted, n in cursor.fetchall()]
        # Emptied now, not only at commit: a caller may write several pages in one transaction.
        # (DELETE on a temporary table is cheaper than TRUNCATE, which swaps its files.)
        cursor.execute("DELETE FROM record_stage")
    return written


def _upsert_generic(rows: Sequence[tuple[Any, ...]], now: datetime) -> list[tuple[str, bool]]:
    """SQLite (the one-machine demo): no xmax, so look up which keys exist first. Syncs of one
    connection never overlap (the engine's claim), so the look-up can't go stale in between."""
    cols = ", ".join(COLUMNS)
    placeholders = "(" + ", ".join(["%s"] * (len(COLUMNS) + 2)) + ")"
    result: list[tuple[str, bool]] = []
    with db.cursor() as cursor:
        for start in range(0, len(rows), 60):
            chunk = rows[start : start + 60]
            cursor.execute(
                f"SELECT type, external_id FROM {TABLE} WHERE connection_id = %s AND external_id IN ("
                + ", ".join(["%s"] * len(chunk))
                + ")",
                [chunk[0][1], *[row[4] for row in chunk]],
            )
            existing = set(cursor.fetchall())
            params: list[Any] = []
            for row in chunk:
                params.extend(row)
                params.extend([now, now])
            cursor.execute(
                f"INSERT INTO {TABLE} ({cols}, created_at, updated_at) VALUES "
                + ", ".join([placeholders] * len(chunk))
                + f" {_CONFLICT}RETURNING type, external_id",
                params,
            )
            result.extend((kind, (kind, ext) not in existing) for kind, ext in cursor.fetchall())
    return result


def delete_missing(*, connection_id: str, kind: str, start: datetime, end: datetime, seen: set[str]) -> int:
    """Delete records of a re-pulled window that the provider no longer returns."""
    if kind in SERIES:
        return series.delete_missing(
            connection_id=connection_id, kind=kind, start_ms=_epoch_ms(start), end_ms=_epoch_ms(end), seen=seen
        )
    stale = _in_window(connection_id, kind, start, end).exclude(external_id__in=seen)
    deleted, _ = stale.delete()
    return deleted


def count_in_window(*, connection_id: str, kind: str, start: datetime, end: datetime) -> int:
    if kind in SERIES:
        return series.count_in_window(
            connection_id=connection_id, kind=kind, start_ms=_epoch_ms(start), end_ms=_epoch_ms(end)
        )
    return _in_window(connection_id, kind, start, end).count()


def _in_window(connection_id: str, kind: str, start: datetime, end: datetime) -> QuerySet[StoredRecord]:
    return StoredRecord.objects.filter(
        connection_id=connection_id, type=kind, start_time__gte=start, start_time__lt=end
    )


# The tables the Data API plans its reads on. Their statistics must follow large writes: a
# first history sync turns an empty table into a large one, and until autovacuum's next
# naptime (and its thresholds) every read would be planned for the empty table.
ANALYZED_TABLES = (
    "data_api_record",
    "data_api_series",
    "data_api_daystat",
    "data_api_typeversion",
    "data_api_listcache",
)
_ANALYZE_LOCK = 7_340_101  # an advisory lock key of this project: one analyzing process at a time


def refresh_statistics(written: int, *, share: float = 0.1) -> bool:
    """After `written` rows were written to data_api_record: ANALYZE the Data API's tables when
    that is more than `share` of the rows the planner believes the table has (PostgreSQL only;
    the engine's own count, since the statistics views lag behind a busy backend). True if it
    analyzed."""
    if db.vendor != "postgresql" or written < 100:
        return False
    with db.cursor() as cursor:
        cursor.execute("SELECT reltuples FROM pg_class WHERE oid = %s::regclass", [TABLE])
        believed = max(0.0, float(cursor.fetchone()[0]))  # -1: never analyzed
        if written <= share * believed:
            return False
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [_ANALYZE_LOCK])
        if not cursor.fetchone()[0]:
            return False  # another process is at it
        try:
            for name in ANALYZED_TABLES:  # names of this module, never input
                cursor.execute(f"ANALYZE {name}")
        finally:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [_ANALYZE_LOCK])
    return True
