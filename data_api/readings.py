"""Reads of the readings stored as compact time series (data_api.series).

A list is positioned from the day rows' headers alone, then only the payloads that hold the
page are opened. The order is the record lists' order, newest first by (instant, id), exact
also where day rows overlap in time (two sources, or a day whose offset changed): rows whose
spans overlap form one group, merged reading by reading; groups are disjoint, so counting
them is enough to find the one an offset falls in. Filters on the day and the source select
day rows; filters on createdAt/updatedAt are counted from each row's `stamps` (how many of its
readings carry each pair), so a total never needs a payload.

Cost: one statement, an index range over the Human's day rows of the type (365 a year of
history, a few dozen bytes each) positioned and counted in the database, which sends back only
the rows of the page's group (and the last row, for the total) with their payloads; of those,
only the blocks that hold the page are decompressed. The same whatever the offset.
"""

from __future__ import annotations

import json
import operator
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, TypeVar

from django.db import connection as db

from connect.models import Application, Human
from humanapi_project.sql import fetch

from .models import Series
from .records import Filters, Page, Window, tz_text
from .series import AT, CREATED, FIELDS, SLOT, SOURCE_DATA, TZ, UPDATED, Columns, reading_id, split_id

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
T = TypeVar("T")


def ms_text(ms: int) -> str:
    """Epoch milliseconds as iso_ms formats an instant (exact: no float on the way), in integers:
    a page formats one per reading."""
    days, rest = divmod(ms, 86_400_000)
    seconds, milli = divmod(rest, 1000)
    minutes, second = divmod(seconds, 60)
    hour, minute = divmod(minutes, 60)
    return f"{_day_text(days)}T{hour:02d}:{minute:02d}:{second:02d}.{milli:03d}Z"


@lru_cache(maxsize=1024)
def _day_text(days: int) -> str:
    return (_EPOCH + timedelta(days=days)).date().isoformat()


stamp_text = lru_cache(maxsize=4096)(ms_text)  # createdAt/updatedAt repeat across a page


def reading_json(human_id: str, source: str, series_id: int, r: Sequence[Any]) -> dict[str, Any]:
    """A reading as the Data API shows any record of a measurement."""
    return _shown(
        human_id,
        source,
        reading_id(series_id, r[SLOT]),
        r[AT],
        r[TZ],
        r[FIELDS],
        r[SOURCE_DATA],
        r[CREATED],
        r[UPDATED],
    )


_NO_VALUE = object()


def _shown(
    human_id: str,
    source: str,
    shown_id: int,
    at: int,
    tz: int,
    fields: dict[str, Any],
    source_data: Any,
    created: int,
    updated: int,
    value: Any = _NO_VALUE,
) -> dict[str, Any]:
    """A reading's body; `value`, where given, comes first among its fields."""
    body: dict[str, Any] = {
        "id": str(shown_id),
        "humanId": human_id,
        "source": source,
        "timestamp": ms_text(at),
        "tzOffset": tz_text(tz),
    }
    if value is not _NO_VALUE:
        body["value"] = value
    body.update(fields)
    body["sourceData"] = source_data
    body["createdAt"] = stamp_text(created)
    body["updatedAt"] = stamp_text(updated)
    return body


# --- filters ---------------------------------------------------------------------------------


def _ms(moment: datetime) -> float:
    return (moment - _EPOCH).total_seconds() * 1000


_OPS: dict[str, Callable[[float, float], bool]] = {">": operator.gt, "<": operator.lt}


def _stamp_test(filters: Filters) -> Callable[[int, int], bool] | None:
    """A test of (createdAt ms, updatedAt ms) for the filters on those times; None without any."""
    tests = [
        (0 if column == "created_at" else 1, _OPS[op], _ms(value))
        for column, op, value in filters.conditions()
        if column in ("created_at", "updated_at")
    ]
    if not tests:
        return None

    def test(created: int, updated: int) -> bool:
        pair = (created, updated)
        return all(op(pair[index], bound) for index, op, bound in tests)

    return test


# --- one Human's list --------------------------------------------------------------------------


def _groups(
    headers: Iterable[tuple[int, int, int, int, Any, int]], test: Callable[[int, int], bool] | None
) -> list[tuple[list[int], int, int]]:
    """Headers (id, first ms, last ms, count, stamps, readings before) sorted newest last-instant
    first, as groups of overlapping rows: (ids, readings that pass the filters, readings before
    the group)."""
    groups: list[tuple[list[int], int, int]] = []
    floor: int | None = None
    for series_id, first, last, count, stamps, before in headers:
        matched = count if test is None else sum(n for c, u, n in stamps if test(c, u))
        if not matched:
            continue
        if floor is not None and last >= floor:
            ids, total, at = groups[-1]
            ids.append(series_id)
            groups[-1] = (ids, total + matched, at)
            floor = min(floor, first)
        else:
            groups.append(([series_id], matched, before))
            floor = first
    return groups


def _covering(groups: Sequence[tuple[T, int]], window: Window) -> tuple[list[T], int]:
    """Of groups in list order with their sizes, the ones that hold the window's items, and how
    many items of the first of them come before the window."""
    chosen: list[T] = []
    position = skip = 0
    for group, n in groups:
        if position + n > window.offset and position < window.offset + window.limit:
            if not chosen:
                skip = window.offset - position
            chosen.append(group)
        position += n
    return chosen, skip


# The Human's day rows of a type, newest last instant first, each with the readings of the
# rows before it, and the payloads of the rows the page most likely needs in the same round
# trip: those whose readings, counted in this order, overlap [offset, offset + limit). (Exact
# for rows that don't overlap in time and without filters on times; any other row the page
# needs is fetched afterwards.) Only the rows the caller needs come back: with a filter on
# times every row (its readings are counted from `stamps`); otherwise the page's rows, the last
# row (the total is its position plus its count) and every row of a span of overlapping rows,
# which comes back whole (a row overlaps the rows before it when it ends at or after the
# earliest start among them; the row before it then starts that span, or is in it).
_HEADERS = """
SELECT id, first_ms, last_ms, count, {stamps}, source,
       CASE WHEN before < %s AND before + count > %s THEN payload END, before
FROM (
    SELECT id, first_ms, last_ms, count, stamps, source, payload,
           coalesce(sum(count) OVER w, 0) AS before, min(first_ms) OVER w AS floor,
           lead(last_ms) OVER w AS next_last
    FROM data_api_series WHERE human_id = %s AND type = %s{conditions}
    WINDOW w AS (ORDER BY last_ms DESC, id DESC ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
) rows
WHERE %s OR (before < %s AND before + count > %s) OR next_last IS NULL
   OR last_ms >= floor OR next_last >= first_ms OR next_last >= floor
ORDER BY last_ms DESC, id DESC
"""


def _headers(
    human_id: str, kind: str, filters: Filters, window: Window, *, with_stamps: bool
) -> tuple[list[tuple[int, int, int, int, Any, int]], dict[int, tuple[str, Any]]]:
    """(id, first ms, last ms, count, stamps or None, readings of the rows before it) of the day
    rows the day and source filters select that the page needs (see _HEADERS), and (source,
    payload) of the ones likely on it. Plain SQL, one round trip, no row past the page's sent
    back where the rows don't overlap."""
    conditions, params = filters.days_and_source().sql()
    sql = _HEADERS.format(stamps="stamps" if with_stamps else "NULL", conditions=conditions)
    end, start = window.offset + window.limit, window.offset
    rows = fetch(sql, [end, start, human_id, kind, *params, with_stamps, end, start])
    headers = [
        (i, f, la, n, json.loads(st) if isinstance(st, str) else st, int(before))
        for i, f, la, n, st, _, _, before in rows
    ]
    return headers, {row[0]: (row[5], row[6]) for row in rows if row[6] is not None}


def reading_page(*, human: Human, kind: str, filters: Filters, window: Window) -> Page:
    test = _stamp_test(filters)
    headers, payloads = _headers(human.pk, kind, filters, window, with_stamps=test is not None)
    if test is not None:  # every row: the readings of each counted from its stamps
        groups = _groups(headers, test)
        total = sum(n for _, n, _ in groups)
        chosen, skip = _covering([(ids, n) for ids, n, _ in groups], window)
    else:  # whole spans, each at its place in the list
        total = headers[-1][5] + headers[-1][3] if headers else 0
        end = window.offset + window.limit
        spans = [(ids, at) for ids, n, at in _groups(headers, None) if at < end and at + n > window.offset]
        chosen, skip = [ids for ids, _ in spans], window.offset - spans[0][1] if spans else 0
    wanted = [series_id for ids in chosen for series_id in ids]
    missing = [series_id for series_id in wanted if series_id not in payloads]
    if missing:
        if db.vendor == "postgresql":
            rows: Iterable[tuple[int, str, Any]] = fetch(
                f"SELECT id, source, payload FROM {Series._meta.db_table} WHERE id = ANY(%s)", [missing]
            )
        else:
            rows = Series.objects.filter(pk__in=missing).values_list("id", "source", "payload")
        payloads.update({series_id: (source, payload) for series_id, source, payload in rows})
    opened = {series_id: (payloads[series_id][0], Columns(payloads[series_id][1])) for series_id in wanted}
    picked: list[tuple[int, int]] = []  # (row id, reading index), in list order
    for ids in chosen:
        ordered, skipped = _newest_first(ids, opened, test, skip, window.limit - len(picked))
        picked.extend(ordered)
        skip -= skipped
        if len(picked) >= window.limit:
            break
    return Page(_rendered(human.pk, picked[: window.limit], opened), total, window.limit, window.offset)


def _rendered(human_id: str, picked: list[tuple[int, int]], opened: dict[int, tuple[str, Columns]]) -> list[Any]:
    """The picked readings as reading_json shows them, built from their blocks' columns (no
    reading in between)."""
    items = []
    for (series_id, n), document in zip(picked, _source_data(picked, opened), strict=True):
        source, columns = opened[series_id]
        block = columns.block(n)
        k = n - block.start
        ref = block.field_refs[k]
        created, updated = columns.pairs[block.pair_refs[k]]
        items.append(
            _shown(
                human_id,
                source,
                reading_id(series_id, block.slots[k]),
                block.times[k],
                block.offsets[k],
                columns.field_docs[ref >> 1],
                document,
                created,
                updated,
                block.value(k, columns.other) if ref & 1 else _NO_VALUE,
            )
        )
    return items


def _source_data(picked: list[tuple[int, int]], opened: dict[int, tuple[str, Columns]]) -> list[Any]:
    """The source data of the picked readings, in their order, parsed as one JSON array: a run
    of readings that follow each other in one block (a page of one day row, newest first) is
    one slice of its text, reversed once parsed."""
    pieces: list[bytes] = []
    runs: list[int] = []  # the length of each piece's run; negative: newest first
    at = 0
    while at < len(picked):
        series_id, n = picked[at]
        block = opened[series_id][1].block(n)
        lowest = n
        while (
            at + 1 < len(picked)
            and picked[at + 1][0] == series_id
            and picked[at + 1][1] == lowest - 1
            and lowest > block.start
        ):
            at += 1
            lowest -= 1
        pieces.append(block.items(lowest - block.start, n - block.start))
        runs.append(lowest - n - 1 if lowest < n else 1)
        at += 1
    parsed = json.loads(f"[{b','.join(pieces).decode()}]")  # as text: it is UTF-8, no need to look
    if len(runs) == len(picked):
        return parsed
    documents: list[Any] = []
    start = 0
    for run in runs:
        if run > 0:
            documents.extend(parsed[start : start + run])
        else:
            documents.extend(reversed(parsed[start : start - run]))
        start += abs(run)
    return documents


def _newest_first(
    ids: list[int],
    opened: dict[int, tuple[str, Columns]],
    test: Callable[[int, int], bool] | None,
    skip: int,
    most: int,
) -> tuple[list[tuple[int, int]], int]:
    """Up to `most` readings of a group of day rows, newest first by (instant, id), after the
    first `skip` of them; and how many were skipped."""
    if len(ids) == 1 and test is None:
        # One row alone in its span: its payload's order (instant, then slot, as ids go) reversed.
        count = len(opened[ids[0]][1])
        skipped = min(skip, count)
        return [(ids[0], count - 1 - n) for n in range(skipped, min(skipped + most, count))], skipped
    found = []
    for series_id in ids:
        columns = opened[series_id][1]
        times, slots, refs, pairs = columns.times, columns.slots, columns.pair_refs, columns.pairs
        for n in range(len(columns)):
            if test is None or test(*pairs[refs[n]]):
                found.append((times[n], reading_id(series_id, slots[n]), series_id, n))
    found.sort(reverse=True)
    skipped = min(skip, len(found))
    return [(series_id, n) for _, _, series_id, n in found[skipped : skipped + most]], skipped


def reading_detail(*, human: Human, kind: str, record_id: str) -> dict[str, Any] | None:
    if not (record_id.isascii() and record_id.isdigit()) or len(record_id) > 18:
        return None
    series_id, slot = split_id(int(record_id))
    row = Series.objects.filter(pk=series_id, human_id=human.pk, type=kind).values_list("source", "payload").first()
    if row is None:
        return None
    columns = Columns(row[1])
    for n, found in enumerate(columns.slots):
        if found == slot:
            return reading_json(human.pk, row[0], series_id, columns.reading(n))
    return None


def latest(*, human: Human, kind: str) -> dict[str, Any]:
    rows = Series.objects.filter(human_id=human.pk, type=kind)
    newest = rows.order_by("-last_ms").values_list("last_ms", flat=True).first()
    if newest is None:
        return {}
    best: tuple[int, int, int, str, list[Any]] | None = None
    for series_id, source, payload in rows.filter(last_ms=newest).values_list("id", "source", "payload"):
        columns = Columns(payload)
        r = columns.reading(len(columns) - 1)
        candidate = (r[AT], reading_id(series_id, r[SLOT]), series_id, source, r)
        if best is None or candidate[:2] > best[:2]:
            best = candidate
    assert best is not None
    return reading_json(human.pk, best[3], best[2], best[4])


# --- every Human of an Application (the batch feed) ----------------------------------------------


def app_reading_page(*, application: Application, kind: str, filters: Filters, window: Window) -> Page:
    """Readings of every Human of the Application, oldest change first: ordered by (updatedAt,
    id). Within a day row the readings of one updatedAt follow each other by slot, so groups of
    (updatedAt, row) are counted from `stamps` and only the payloads of the page are opened."""
    test = _stamp_test(filters)
    rows = filters.days_and_source().apply(Series.objects.filter(human__application=application, type=kind))
    since = filters.updated_since
    if since is not None:  # rows whose newest reading is older can't have any
        rows = rows.filter(updated_ms__gt=int(_ms(since)))
    counts: dict[tuple[int, int], int] = defaultdict(int)
    for series_id, stamps in rows.values_list("id", "stamps"):
        for created, updated, n in stamps:
            if test is None or test(created, updated):
                counts[(updated, series_id)] += n
    total = sum(counts.values())
    wanted, skip = _covering([(key, counts[key]) for key in sorted(counts)], window)
    items: list[dict[str, Any]] = []
    if wanted:
        opened = {
            series_id: (human_id, source, Columns(payload))
            for series_id, human_id, source, payload in Series.objects.filter(
                pk__in={series_id for _, series_id in wanted}
            ).values_list("id", "human_id", "source", "payload")
        }
        ordered: list[tuple[int, int]] = []
        for updated, series_id in wanted:
            columns = opened[series_id][2]
            group = []
            slots, refs, pairs = columns.slots, columns.pair_refs, columns.pairs
            for n in range(len(columns)):
                created, changed = pairs[refs[n]]
                if changed == updated and (test is None or test(created, changed)):
                    group.append((slots[n], n))
            group.sort()
            ordered.extend((series_id, n) for _, n in group)
        for series_id, n in ordered[skip : skip + window.limit]:
            human_id, source, columns = opened[series_id]
            items.append(reading_json(human_id, source, series_id, columns.reading(n)))
    return Page(items, total, window.limit, window.offset)
