"""Reads of the Data API: lists of records, single records, profile, sources.

Lists on PostgreSQL never COUNT nor OFFSET through a large set per request. Each (human, type)
has a data version (TypeVersion, bumped by a trigger on every write). For one version and one
set of filters, one pass over the list's index stores its total and an anchor, the
(start_time, id) key of every ANCHOR_EVERY-th row (ListCache, ListAnchor). A page at offset O
then seeks to anchor O // ANCHOR_EVERY and skips fewer than ANCHOR_EVERY rows.

How the cost grows with data: a page is two index look-ups plus `limit` + (O mod
ANCHOR_EVERY) rows, the same at 1 million rows as at 10 million (the index depth grows by
log N). The first read after a change pays one ordered pass over the filtered set (about 1 s
per million rows on a 2-core machine, so linear in N) and writes N / ANCHOR_EVERY anchors;
every later read of that version is free of it. Frequent writes to a huge list therefore
cost one such pass per write that is followed by a read. On SQLite (the one-machine demo)
lists COUNT and OFFSET, which is fine at its scale.

Bounds: a filter on createdAt/updatedAt is usually new with every request (an incremental
pull), so a first page of such a list (offset below ANCHOR_EVERY) that has no cache is read
directly, with a total counted no further than COUNT_AHEAD rows past the page, and caches
nothing: no pass, and no other list's cache pushed out. A pass for a deeper page of such a list
is counted per Human (RATE_LIMIT_DATA_LIST_PASSES), so a stream of new time filters at deep
offsets gets a 429. (Other filters have few values, or select a few days.)
"""

from __future__ import annotations

import json
from typing import Any

from django.db import connection as db
from django.db import transaction
from django.db.models import QuerySet

from connect import ratelimit
from connect.models import Human
from sources.models import Connection, ConnectionStatus, SyncOutcome, SyncRun
from sources.registry import get_plugin
from sources.types import SERIES

from . import readings
from .models import Record
from .records import (
    MEASUREMENTS,
    ROW_SELECT_SQL,
    Filters,
    Page,
    Window,
    bounded_total,
    counter,
    iso_ms,
    row_json,
    rows_for_json,
)
from .summaries import latest_summary

ANCHOR_EVERY = 250


def records_of(human: Human, kind: str) -> QuerySet[Record]:
    return Record.objects.filter(human_id=human.pk, type=kind)


def record_page(*, human: Human, kind: str, filters: Filters, window: Window) -> Page:
    """One page of a list, newest first (tie-break: id, descending)."""
    if kind in SERIES:
        return readings.reading_page(human=human, kind=kind, filters=filters, window=window)
    if db.vendor != "postgresql":
        queryset = filters.apply(records_of(human, kind))
        total = queryset.count()
        rows = rows_for_json(queryset.order_by("-start_time", "-id"))[window.offset : window.offset + window.limit]
        return Page([row_json(r) for r in rows], total, window.limit, window.offset)
    for _ in range(2):
        found = _cached_page(human.pk, kind, filters, window)
        if found is not None:
            return found
        if _on_times(filters):
            if window.offset < ANCHOR_EVERY:
                return _direct_page(filters.apply(records_of(human, kind)), window)
            ratelimit.enforce(ratelimit.hit(ratelimit.limit("data-passes"), human.pk))
        if not _recompute(human.pk, kind, filters, filters.apply(records_of(human, kind))):
            return Page([], 0, window.limit, window.offset)
    raise RuntimeError("list cache did not settle")  # pragma: no cover - two versions in a row


def _on_times(filters: Filters) -> bool:
    return any(
        value is not None
        for value in (filters.created_since, filters.updated_since, filters.created_before, filters.updated_before)
    )


def _direct_page(queryset: QuerySet[Record], window: Window) -> Page:
    """A page read without the list cache; its total bounded (records.bounded_total)."""
    rows = rows_for_json(queryset.order_by("-start_time", "-id"))[window.offset : window.offset + window.limit]
    items = [row_json(r) for r in rows]
    total, exact = bounded_total(window, len(items), counter(queryset))
    return Page(items, total, window.limit, window.offset, exact)


# The cached total, the anchor at or before the offset, and the page after it, in one round
# trip. The anchor's row comparison lets the (human, type, start_time, id) index seek straight
# to it; past the end there is no anchor, so no rows, and still the total. No row at all: the
# cache is missing or of an older version.
_PAGE = f"""
WITH position AS (
    SELECT c.total, a.start_time, a.record_id
    FROM data_api_listcache c
    JOIN data_api_typeversion v ON v.human_id = c.human_id AND v.type = c.type AND v.version = c.version
    LEFT JOIN data_api_listanchor a ON a.cache_id = c.id AND a.ordinal = %s
    WHERE c.human_id = %s AND c.type = %s AND c.filter_key = %s
)
SELECT position.total, page.*
FROM position LEFT JOIN LATERAL (
    SELECT {ROW_SELECT_SQL} FROM data_api_record
    WHERE human_id = %s AND type = %s{{filters}}
      AND (start_time, id) <= (position.start_time, position.record_id)
    ORDER BY start_time DESC, id DESC
    OFFSET %s LIMIT %s
) page ON true
"""


def _cached_page(human_id: str, kind: str, filters: Filters, window: Window) -> Page | None:
    ordinal = window.offset // ANCHOR_EVERY
    conditions, params = filters.sql()
    skip = window.offset - ordinal * ANCHOR_EVERY
    with db.cursor() as cursor:
        cursor.execute(
            _PAGE.format(filters=conditions),
            [ordinal, human_id, kind, filters.key, human_id, kind, *params, skip, window.limit],
        )
        rows = cursor.fetchall()
    if not rows:
        return None
    total = int(rows[0][0])
    rows = [row for row in rows if row[1] is not None]
    # The connection hands jsonb over as text (Django's JSONField decodes it); one decode of
    # the whole page costs a fraction of two per row.
    documents = json.loads(f"[{','.join(text for row in rows for text in (row[8], row[9]))}]")
    items = [row_json((*row[1:8], documents[2 * n], documents[2 * n + 1], *row[10:])) for n, row in enumerate(rows)]
    return Page(items, total, window.limit, window.offset)


_ANCHORS = """
WITH current AS (SELECT version FROM data_api_typeversion WHERE human_id = %s AND type = %s),
ranked AS (
    SELECT start_time, id,
           row_number() OVER w AS rn,
           lead(id) OVER w IS NULL AS is_last
    FROM ({rows}) listed
    WINDOW w AS (ORDER BY start_time DESC, id DESC)
),
picked AS MATERIALIZED (SELECT * FROM ranked WHERE (rn - 1) %% {every} = 0 OR is_last),
stored AS (
    INSERT INTO data_api_listanchor (cache_id, ordinal, start_time, record_id)
    SELECT %s, (rn - 1) / {every}, start_time, id FROM picked WHERE (rn - 1) %% {every} = 0
)
UPDATE data_api_listcache
SET version = (SELECT version FROM current), total = COALESCE((SELECT max(rn) FROM picked), 0), computed_at = now()
WHERE id = %s
"""


def _recompute(human_id: str, kind: str, filters: Filters, queryset: QuerySet[Record]) -> bool:
    """Store the total and anchors of a list for the current version. False if the Human never
    had a record of this type (nothing to cache)."""
    rows_sql, rows_params = queryset.values("start_time", "id").query.sql_with_params()
    with transaction.atomic(), db.cursor() as cursor:
        cursor.execute("SELECT version FROM data_api_typeversion WHERE human_id = %s AND type = %s", [human_id, kind])
        if cursor.fetchone() is None:
            return False
        # The upsert locks the cache row: concurrent readers of a stale list wait for one pass.
        cursor.execute(
            "INSERT INTO data_api_listcache (human_id, type, filter_key, version, total) VALUES (%s, %s, %s, 0, 0) "
            "ON CONFLICT (human_id, type, filter_key) DO UPDATE SET filter_key = EXCLUDED.filter_key "
            "RETURNING id, version = (SELECT version FROM data_api_typeversion WHERE human_id = %s AND type = %s)",
            [human_id, kind, filters.key, human_id, kind],
        )
        cache_id, fresh = cursor.fetchone()
        if fresh:
            return True  # another reader computed it while this one waited
        cursor.execute("DELETE FROM data_api_listanchor WHERE cache_id = %s", [cache_id])
        # One statement, so the version and the rows come from one snapshot.
        cursor.execute(
            _ANCHORS.format(rows=rows_sql, every=ANCHOR_EVERY),
            [human_id, kind, *rows_params, cache_id, cache_id],
        )
        _forget_stale_lists(cursor, human_id, kind, cache_id)
    return True


# Filtered lists cached per (human, type) at most: each distinct filter (an `updated_since`
# value, say) gets its own cache, so without a bound a caller could grow the tables at will.
MAX_CACHED_LISTS = 16


def _forget_stale_lists(cursor: Any, human_id: str, kind: str, keep: int) -> None:
    """Drop caches of other filters that are of an older version, or beyond the
    MAX_CACHED_LISTS most recently computed; ones being recomputed are skipped."""
    cursor.execute(
        "WITH ranked AS ("
        "  SELECT c.id, c.version <> v.version AS stale,"
        "         row_number() OVER (ORDER BY c.computed_at DESC NULLS LAST, c.id DESC) AS rank"
        "  FROM data_api_listcache c JOIN data_api_typeversion v ON v.human_id = c.human_id AND v.type = c.type"
        "  WHERE c.human_id = %s AND c.type = %s AND c.id <> %s"
        "), doomed AS ("
        "  SELECT c.id FROM data_api_listcache c JOIN ranked r ON r.id = c.id"
        "  WHERE r.stale OR r.rank >= %s FOR UPDATE OF c SKIP LOCKED"
        "), anchors AS (DELETE FROM data_api_listanchor WHERE cache_id IN (SELECT id FROM doomed))"
        " DELETE FROM data_api_listcache WHERE id IN (SELECT id FROM doomed)",
        [human_id, kind, keep, MAX_CACHED_LISTS],
    )


def record_detail(*, human: Human, kind: str, record_id: str) -> dict[str, Any] | None:
    """One record of this Human and type; None for another Human's id or a malformed one."""
    if not (record_id.isascii() and record_id.isdigit()) or len(record_id) > 18:
        return None  # ids are ASCII digits: "²" passes isdigit() but not int()
    if kind in SERIES:
        return readings.reading_detail(human=human, kind=kind, record_id=record_id)
    row = rows_for_json(records_of(human, kind).filter(pk=int(record_id))).first()
    return row_json(row) if row else None


def latest_reading(*, human: Human, kind: str) -> dict[str, Any]:
    if kind in SERIES:
        return readings.latest(human=human, kind=kind)
    row = rows_for_json(records_of(human, kind).order_by("-start_time", "-id")).first()
    return row_json(row) if row else {}


def profile_json(human: Human) -> dict[str, Any]:
    return {
        "humanId": human.pk,
        "email": human.email,
        "createdAt": iso_ms(human.created_at),
        "updatedAt": iso_ms(human.updated_at),
        "defaultTimeZone": human.default_time_zone or "UTC",
    }


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _latest_records(human: Human, kinds: list[str]) -> dict[str, dict[str, Any]]:
    """The newest record of each of `kinds` (types of the record table), by type: on PostgreSQL
    in one round trip, each type's newest found by the list index."""
    if db.vendor != "postgresql":
        return {kind: found for kind in kinds if (found := latest_reading(human=human, kind=kind))}
    with db.cursor() as cursor:
        cursor.execute(
            f"SELECT {ROW_SELECT_SQL} FROM unnest(%s::varchar[]) AS wanted(kind) CROSS JOIN LATERAL ("
            "SELECT * FROM data_api_record r WHERE r.human_id = %s AND r.type = wanted.kind "
            "ORDER BY r.start_time DESC, r.id DESC LIMIT 1) newest",
            [kinds, human.pk],
        )
        rows = cursor.fetchall()
    # jsonb comes over as text (Django's JSONField decodes it): `data` and `source_data` decoded here.
    return {row[3]: row_json((*row[:7], json.loads(row[7]), json.loads(row[8]), *row[9:])) for row in rows}


def human_summary(human: Human) -> dict[str, Any]:
    """`/`: who, the latest reading of each measurement, the last daily summaries."""
    body: dict[str, Any] = {"humanId": human.pk, "email": human.email}
    newest = _latest_records(human, [kind for kind in MEASUREMENTS if kind not in SERIES])
    for kind in MEASUREMENTS:
        found = readings.latest(human=human, kind=kind) if kind in SERIES else newest.get(kind)
        body[camel(kind)] = found or None
    body["activitySummary"] = latest_summary(human=human, kind="activities")
    body["sleepSummary"] = latest_summary(human=human, kind="sleeps")
    body["updatedAt"] = iso_ms(human.updated_at)
    return body


# --- sources ---------------------------------------------------------------------------------


def connections_of(human: Human) -> list[Connection]:
    """The Human's sources that are not disconnected, oldest first."""
    return list(
        Connection.objects.filter(human=human).exclude(status=ConnectionStatus.DISCONNECTED).order_by("connected_at")
    )


def connection_json(connection: Connection, last_run: SyncRun | None = None) -> dict[str, Any]:
    """A connection as `/sources` shows it (also the Application API's view of a connection).
    `last_run` may be passed by callers that loaded it already; else it is looked up."""
    run = last_run or connection.sync_runs.order_by("-started_at", "-id").first()
    plugin = get_plugin(connection.source)
    return {
        "id": connection.pk,
        "source": connection.source,
        "sourceName": plugin.name if plugin else connection.source,
        "connectedSince": iso_ms(connection.connected_at),
        "supportedDataTypes": list(plugin.data_types) if plugin else [],
        "historySync": {
            "status": _history_status(connection, run),
            "oldestDate": connection.oldest_date.isoformat() if connection.oldest_date else None,
        },
        "syncStatus": {
            "status": _sync_status(connection, run),
            "details": (run.error if run else "") or None,
            "synchedAt": iso_ms(connection.last_synced_at),
            "unreadable": _unreadable(run),
            "failedTypes": sorted(run.failures) if run else [],
        },
    }


def _unreadable(run: SyncRun | None) -> dict[str, int]:
    """How many items of each type the last run could not read."""
    if run is None:
        return {}
    return {kind: c["unreadable"] for kind, c in sorted(run.counts.items()) if c.get("unreadable")}


def _history_status(connection: Connection, run: SyncRun | None) -> str:
    if connection.history_synced_at is not None:
        return "completed"
    if run is None:
        return "pending"
    return "failed" if run.outcome in (SyncOutcome.FAILED, SyncOutcome.REAUTH_REQUIRED) else "in_progress"


def _sync_status(connection: Connection, run: SyncRun | None) -> str:
    """One of pending, syncing, ok, partial, retrying, failed, reauth_required, disconnected."""
    if connection.status != ConnectionStatus.ACTIVE:
        return str(connection.status)
    if run is None:
        return "pending"
    return {
        SyncOutcome.RUNNING: "syncing",
        SyncOutcome.SUCCEEDED: "ok",
        SyncOutcome.PARTIAL: "partial",
        SyncOutcome.RETRYING: "retrying",
        SyncOutcome.FAILED: "failed",
        SyncOutcome.REAUTH_REQUIRED: "reauth_required",
    }.get(SyncOutcome(run.outcome), "pending")
