"""Daily summaries: the totals of one type per local day (Record.local_day, from tzOffset).

On PostgreSQL they are read from DayStat, a rollup kept per (human, type, local_day). Writes
only mark days stale (the trigger of migration 0003); a read learns in the same statement as
its page whether any day is stale, and only then recomputes the stale days, each from the
(human, type, local_day) index, and reads again. So a year of summaries costs one read of 365
small rows however many readings lie behind them. A recompute records the generation it saw
and its UPDATE only lands if the day has not changed since, so a write racing with it leaves
the day stale rather than wrong. A `source` filter (and SQLite) aggregates on the fly.
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from django.db import connection as db
from django.db.models import F

from connect.models import Human

from .models import DayStat, Record
from .records import Filters, Page, UtcText, Window, iso_ms


@dataclass(frozen=True)
class Measure:
    name: str  # the summary's field
    agg: str  # sum | min | max | avg | p10 (the 10th percentile, a resting rate)
    field: str  # the record's data key; "" for the value column
    digits: int  # 0: an integer


SUMMARIZED: dict[str, tuple[Measure, ...]] = {
    "activities": (
        Measure("steps", "sum", "steps", 0),
        Measure("distance", "sum", "distance", 1),
        Measure("calories", "sum", "calories", 1),
        Measure("duration", "sum", "duration", 0),
    ),
    "sleeps": (
        Measure("timeAsleep", "sum", "timeAsleep", 0),
        Measure("timeAwake", "sum", "timeAwake", 0),
        Measure("timeInBed", "sum", "timeInBed", 0),
        Measure("numberOfWakeups", "sum", "numberOfWakeups", 0),
    ),
    "heart_rate": (
        Measure("min", "min", "", 0),
        Measure("max", "max", "", 0),
        Measure("avg", "avg", "", 1),
        Measure("restingHeartRate", "p10", "", 0),
    ),
}


@dataclass(frozen=True)
class DaySummary:
    kind: str
    day: date
    count: int
    stats: dict[str, Any]
    created_at: datetime | str | None  # text when formatted by the database
    updated_at: datetime | str | None


def summary_id(kind: str, day: date) -> str:
    # isoformat is C code; a strftime format costs more, once per row of a year of summaries.
    return f"{kind}-{day.isoformat().replace('-', '')}"


def day_of_summary_id(kind: str, ref: str) -> date | None:
    match = re.fullmatch(rf"{re.escape(kind)}-(\d{{8}})", ref)
    if not match:
        return None
    try:
        return datetime.strptime(match.group(1), "%Y%m%d").date()
    except ValueError:
        return None


def summary_json(human_id: str, summary: DaySummary) -> dict[str, Any]:
    return day_json(
        human_id, summary.kind, summary.day, summary.count, summary.stats, summary.created_at, summary.updated_at
    )


def day_json(
    human_id: str,
    kind: str,
    day: date,
    count: int,
    stats: dict[str, Any],
    created_at: datetime | str | None,
    updated_at: datetime | str | None,
) -> dict[str, Any]:
    """A summary as the Data API shows it (taking its parts, so a page of rollup rows needs no
    DaySummary per row)."""
    day_text = day.isoformat()
    return {
        "id": f"{kind}-{day_text.replace('-', '')}",  # summary_id, with the day formatted once
        "humanId": human_id,
        "date": day_text,
        **stats,
        "count": count,
        "createdAt": iso_ms(created_at),
        "updatedAt": iso_ms(updated_at),
    }


def finish(kind: str, values: Sequence[Any]) -> dict[str, Any]:
    """The summary's fields from its aggregates, in SUMMARIZED order."""
    stats: dict[str, Any] = {}
    for measure, value in zip(SUMMARIZED[kind], values, strict=True):
        if value is None:
            stats[measure.name] = None
        else:
            stats[measure.name] = round(float(value)) if measure.digits == 0 else round(float(value), measure.digits)
    if kind == "sleeps":
        in_bed = stats.get("timeInBed") or 0
        stats["efficiency"] = round(100 * (stats.get("timeAsleep") or 0) / in_bed) if in_bed else None
    if kind == "heart_rate":
        stats["unit"] = "bpm"
    return stats


# --- PostgreSQL: aggregate SQL ---------------------------------------------------------------


def _pg_aggregates(kind: str) -> str:
    parts = ["local_day", "count(*)", "min(created_at)", "max(updated_at)"]
    for measure in SUMMARIZED[kind]:
        # Field names are constants of this module, never input.
        expr = f"(data->>'{measure.field}')::float8" if measure.field else "value"
        if measure.agg == "p10":
            parts.append(f"percentile_disc(0.1) WITHIN GROUP (ORDER BY {expr})")
        else:
            parts.append(f"{measure.agg}({expr})")
    return ", ".join(parts)


def _summaries_from_rows(kind: str, rows: Iterable[Sequence[Any]]) -> list[DaySummary]:
    return [DaySummary(kind, row[0], int(row[1]), finish(kind, row[4:]), row[2], row[3]) for row in rows]


def refresh(human_id: str, kind: str) -> None:
    """Recompute the stale days of one (human, type)."""
    stale = dict(
        DayStat.objects.filter(human_id=human_id, type=kind, generation__gt=F("done_generation")).values_list(
            "local_day", "generation"
        )
    )
    days = sorted(stale)
    for start in range(0, len(days), 500):
        chunk = days[start : start + 500]
        with db.cursor() as cursor:
            cursor.execute(
                f"SELECT {_pg_aggregates(kind)} FROM data_api_record "
                "WHERE human_id = %s AND type = %s AND local_day = ANY(%s) GROUP BY local_day",
                [human_id, kind, chunk],
            )
            found = {s.day: s for s in _summaries_from_rows(kind, cursor.fetchall())}
            _store(cursor, human_id, kind, [(day, stale[day], found.get(day)) for day in chunk])


def _store(cursor: Any, human_id: str, kind: str, days: list[tuple[date, int, DaySummary | None]]) -> None:
    values, params = [], []
    for day, generation, summary in days:
        values.append("(%s::date, %s::bigint, %s::int, %s::jsonb, %s::timestamptz, %s::timestamptz)")
        if summary is None:  # every record of the day was deleted
            params.extend([day, generation, 0, "{}", None, None])
        else:
            stats = json.dumps(summary.stats)
            params.extend([day, generation, summary.count, stats, summary.created_at, summary.updated_at])
    cursor.execute(
        "UPDATE data_api_daystat d SET count = v.count, stats = v.stats, created_at = v.created,"
        " updated_at = v.updated, done_generation = v.generation"
        f" FROM (VALUES {', '.join(values)}) AS v(day, generation, count, stats, created, updated)"
        " WHERE d.human_id = %s AND d.type = %s AND d.local_day = v.day AND d.generation = v.generation",
        [*params, human_id, kind],
    )


# --- on the fly (a source filter; SQLite) ------------------------------------------------------


def _on_the_fly(human_id: str, kind: str, filters: Filters) -> list[DaySummary]:
    scope = Filters(first_day=filters.first_day, last_day=filters.last_day, source=filters.source)
    queryset = scope.apply(Record.objects.filter(human_id=human_id, type=kind))
    if db.vendor == "postgresql":
        sql, params = queryset.values("local_day", "value", "data", "created_at", "updated_at").query.sql_with_params()
        with db.cursor() as cursor:
            cursor.execute(f"SELECT {_pg_aggregates(kind)} FROM ({sql}) r GROUP BY local_day", params)
            summaries = _summaries_from_rows(kind, cursor.fetchall())
    else:
        rows = queryset.values_list("local_day", "value", "data", "created_at", "updated_at")
        summaries = _aggregate_in_python(kind, rows)
    summaries = [s for s in summaries if _matches(s, filters)]
    return sorted(summaries, key=lambda s: s.day, reverse=True)


def _aggregate_in_python(kind: str, rows: Iterable[tuple[date, Any, Any, datetime, datetime]]) -> list[DaySummary]:
    by_day: dict[date, list[tuple[Any, Any, datetime, datetime]]] = defaultdict(list)
    for day, value, data, created, updated in rows:
        by_day[day].append((value, data, created, updated))
    out = []
    for day, items in by_day.items():
        aggregates = [_python_aggregate(m, items) for m in SUMMARIZED[kind]]
        created = min(i[2] for i in items)
        updated = max(i[3] for i in items)
        out.append(DaySummary(kind, day, len(items), finish(kind, aggregates), created, updated))
    return out


def _python_aggregate(measure: Measure, items: list[tuple[Any, Any, datetime, datetime]]) -> float | None:
    raw = [item[0] if not measure.field else (item[1] or {}).get(measure.field) for item in items]
    values = sorted(float(v) for v in raw if v is not None)
    if not values:
        return None
    if measure.agg == "sum":
        return sum(values)
    if measure.agg == "min":
        return values[0]
    if measure.agg == "max":
        return values[-1]
    if measure.agg == "avg":
        return sum(values) / len(values)
    # percentile_disc(0.1): the first value whose cumulative share reaches 10%.
    return values[max(0, math.ceil(0.1 * len(values)) - 1)]


def _matches(summary: DaySummary, filters: Filters) -> bool:
    # Summaries aggregated on the fly carry datetimes, never text.
    created = summary.created_at if isinstance(summary.created_at, datetime) else None
    updated = summary.updated_at if isinstance(summary.updated_at, datetime) else None
    return not (
        (filters.created_since and created and created <= filters.created_since)
        or (filters.created_before and created and created >= filters.created_before)
        or (filters.updated_since and updated and updated <= filters.updated_since)
        or (filters.updated_before and updated and updated >= filters.updated_before)
    )


# --- reads ---------------------------------------------------------------------------------------


def _uses_rollup(filters: Filters) -> bool:
    return db.vendor == "postgresql" and filters.source is None


def summary_page(*, human: Human, kind: str, filters: Filters, window: Window) -> Page:
    """Daily summaries, newest day first."""
    if not _uses_rollup(filters):
        summaries = _on_the_fly(human.pk, kind, filters)
        chosen = summaries[window.offset : window.offset + window.limit]
        return Page([summary_json(human.pk, s) for s in chosen], len(summaries), window.limit, window.offset)
    conditions, params = _rollup_conditions(human.pk, kind, filters)
    stale, rows = _rollup_page(conditions, params, window)
    if stale:
        refresh(human.pk, kind)
        _, rows = _rollup_page(conditions, params, window)
    # The connection hands jsonb over as text (Django's JSONField decodes it); one decode of
    # the whole page costs a fraction of one per day.
    stats = json.loads(f"[{','.join(row[2] for row in rows)}]")
    items = [
        day_json(human.pk, kind, day, count, day_stats, created, updated)
        for (day, count, _, created, updated), day_stats in zip(rows, stats, strict=True)
    ]
    # A short page that is not past the end tells the total without counting.
    short = len(items) < window.limit and (items or window.offset == 0)
    total = window.offset + len(items) if short else _rollup_count(conditions, params)
    return Page(items, total, window.limit, window.offset)


def _rollup_conditions(human_id: str, kind: str, filters: Filters) -> tuple[str, list[Any]]:
    # DayStat names its day and times as Record does; a source filter never reaches the rollup.
    conditions, params = filters.sql()
    return f"human_id = %s AND type = %s AND count > 0{conditions}", [human_id, kind, *params]


_DAY_COLUMNS = f"local_day, count, stats, {UtcText.template % {'expressions': 'created_at'}}, " + (
    UtcText.template % {"expressions": "updated_at"}
)

# Whether any day of the (human, type) is stale (the partial index of stale days answers it),
# and the page, in one round trip: the common case, nothing stale, needs no other.
_ROLLUP_PAGE = f"""
SELECT stale.found, page.*
FROM (
    SELECT EXISTS (
        SELECT 1 FROM data_api_daystat WHERE human_id = %s AND type = %s AND generation > done_generation
    ) AS found
) stale LEFT JOIN LATERAL (
    SELECT {_DAY_COLUMNS} FROM data_api_daystat WHERE {{conditions}}
    ORDER BY local_day DESC OFFSET %s LIMIT %s
) page ON true
"""


def _rollup_page(conditions: str, params: list[Any], window: Window) -> tuple[bool, list[tuple[Any, ...]]]:
    human_id, kind = params[:2]
    with db.cursor() as cursor:
        cursor.execute(
            _ROLLUP_PAGE.format(conditions=conditions), [human_id, kind, *params, window.offset, window.limit]
        )
        found = cursor.fetchall()
    return bool(found[0][0]), [row[1:] for row in found if row[1] is not None]


def _rollup_count(conditions: str, params: list[Any]) -> int:
    with db.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM data_api_daystat WHERE {conditions}", params)
        return int(cursor.fetchone()[0])


def summary_of_day(*, human: Human, kind: str, day: date) -> dict[str, Any] | None:
    page = summary_page(human=human, kind=kind, filters=Filters(first_day=day, last_day=day), window=Window(1, 0))
    return page.items[0] if page.items else None


def latest_summary(*, human: Human, kind: str) -> dict[str, Any] | None:
    page = summary_page(human=human, kind=kind, filters=Filters(), window=Window(1, 0))
    return page.items[0] if page.items else None
