"""Daily summaries: the totals of one type per local day (Record.local_day, from tzOffset).

On PostgreSQL they are read from DayStat, a rollup kept per (human, type, local_day). Writes
only mark days stale (the trigger of migration 0003); a read learns in the same statement as
its page whether any day is stale, and only then recomputes the stale days, each from the
(human, type, local_day) index, and reads again. So a year of summaries costs one read of 365
small rows however many readings lie behind them. A recompute records the generation it saw
and its UPDATE only lands if the day has not changed since, so a write racing with it leaves
the day stale rather than wrong. SQLite (the demo) aggregates on the fly.

Several sources, one truth per day: rollups are kept per source, and each day's summary is
the one of the first source with data that day, in the Application's priority order (then the
order the Human connected them); totals are never added across sources. A source's own daily
totals (`activity_summaries`: Oura daily_activity, Google Health daily aggregates, Withings
getactivity) answer for that source's day before the sum of its activities.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from django.conf import settings
from django.db import connection as db
from django.db.models import F

from connect.models import Application, Human
from sources.models import Connection
from sources.types import SERIES, SUMMARIZED, Measure, aggregate, daily_totals_of, finish

from .models import DayStat, Record
from .records import Filters, Page, UtcText, Window, iso_ms

# The summary routes' kinds (the others in SUMMARIZED are daily totals that answer for one).
SUMMARY_KINDS = ("activities", "sleeps", "heart_rate")


def stored_types(kind: str) -> tuple[str, ...]:
    """The stored types whose rollups answer `kind`'s summaries, the one that wins for a source
    first: a source's own daily totals, then the sum of its records."""
    return (*daily_totals_of(kind), kind)


@dataclass(frozen=True)
class DaySummary:
    kind: str
    day: date
    count: int
    stats: dict[str, Any]
    created_at: datetime | str | None  # text when formatted by the database
    updated_at: datetime | str | None
    source: str = ""


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
        human_id,
        summary.kind,
        summary.day,
        summary.count,
        summary.stats,
        summary.created_at,
        summary.updated_at,
        summary.source,
    )


def day_json(
    human_id: str,
    kind: str,
    day: date,
    count: int,
    stats: dict[str, Any],
    created_at: datetime | str | None,
    updated_at: datetime | str | None,
    source: str,
) -> dict[str, Any]:
    """A summary as the Data API shows it (taking its parts, so a page of rollup rows needs no
    DaySummary per row)."""
    day_text = day.isoformat()
    return {
        "id": f"{kind}-{day_text.replace('-', '')}",  # summary_id, with the day formatted once
        "humanId": human_id,
        "date": day_text,
        "source": source,
        **stats,
        "count": count,
        "createdAt": iso_ms(created_at),
        "updatedAt": iso_ms(updated_at),
    }


# --- PostgreSQL: aggregate SQL ---------------------------------------------------------------


def _pg_aggregates(kind: str) -> str:
    """local_day, source, count, created, updated, then each measure of the stored type `kind`."""
    parts = ["local_day", "source", "count(*)", "min(created_at)", "max(updated_at)"]
    for measure in SUMMARIZED[kind]:
        # Field names are constants of this module, never input.
        expr = f"(data->>'{measure.field}')::float8" if measure.field else "value"
        if measure.agg == "p10":
            parts.append(f"percentile_disc(0.1) WITHIN GROUP (ORDER BY {expr})")
        else:
            parts.append(f"{measure.agg}({expr})")
    return ", ".join(parts)


def _summaries_from_rows(kind: str, rows: Iterable[Sequence[Any]]) -> list[DaySummary]:
    return [DaySummary(kind, row[0], int(row[2]), finish(kind, row[5:]), row[3], row[4], row[1]) for row in rows]


def refresh(human_id: str, kind: str) -> None:
    """Recompute the stale (day, source) rollups of one Human's stored type `kind`."""
    if kind in SERIES:
        return  # written with the readings themselves (data_api.series), never stale
    stale = {
        (day, source): generation
        for day, source, generation in DayStat.objects.filter(
            human_id=human_id, type=kind, generation__gt=F("done_generation")
        ).values_list("local_day", "source", "generation")
    }
    keys = sorted(stale)
    for start in range(0, len(keys), 500):
        chunk = keys[start : start + 500]
        with db.cursor() as cursor:
            cursor.execute(
                f"SELECT {_pg_aggregates(kind)} FROM data_api_record "
                "WHERE human_id = %s AND type = %s AND local_day = ANY(%s) GROUP BY local_day, source",
                [human_id, kind, sorted({day for day, _ in chunk})],
            )
            found = {(s.day, s.source): s for s in _summaries_from_rows(kind, cursor.fetchall())}
            _store(cursor, human_id, kind, [(key, stale[key], found.get(key)) for key in chunk])


def _store(
    cursor: Any, human_id: str, kind: str, rollups: list[tuple[tuple[date, str], int, DaySummary | None]]
) -> None:
    values, params = [], []
    for (day, source), generation, summary in rollups:
        values.append("(%s::date, %s, %s::bigint, %s::int, %s::jsonb, %s::timestamptz, %s::timestamptz)")
        if summary is None:  # every record of the day was deleted
            params.extend([day, source, generation, 0, "{}", None, None])
        else:
            stats = json.dumps(summary.stats)
            params.extend([day, source, generation, summary.count, stats, summary.created_at, summary.updated_at])
    cursor.execute(
        "UPDATE data_api_daystat d SET count = v.count, stats = v.stats, created_at = v.created,"
        " updated_at = v.updated, done_generation = v.generation"
        f" FROM (VALUES {', '.join(values)}) AS v(day, source, generation, count, stats, created, updated)"
        " WHERE d.human_id = %s AND d.type = %s AND d.local_day = v.day AND d.source = v.source"
        " AND d.generation = v.generation",
        [*params, human_id, kind],
    )


def refresh_stale(application: Application, kinds: Sequence[str]) -> None:
    """Recompute every stale rollup of these types, for every Human of `application`."""
    scope = DayStat.objects.filter(type__in=kinds, generation__gt=F("done_generation"), human__application=application)
    for human_id, kind in scope.values_list("human_id", "type").distinct():
        refresh(human_id, kind)


# --- choosing one source per day ----------------------------------------------------------------


# One row per (Human, day): the rollup of the first source in priority order (named sources
# first, then the order the Human connected them), its own daily totals before its records'
# sums. Conditions on the day and the source narrow what may answer; conditions on times
# (created/updated since/before) apply to the answer, outside.
_CHOSEN = """
SELECT DISTINCT ON (d.human_id, d.local_day)
    d.human_id, d.local_day, d.source, d.count, d.stats, d.created_at, d.updated_at
FROM data_api_daystat d
LEFT JOIN sources_connection conn ON conn.human_id = d.human_id AND conn.source = d.source
WHERE {scope} AND d.type = ANY(%s) AND d.count > 0{narrow}
ORDER BY d.human_id, d.local_day DESC,
    array_position(
        (SELECT coalesce(nullif(string_to_array(a.source_priority, ','), '{{}}'), %s::text[])
         FROM connect_application a WHERE a.id = %s),
        d.source::text
    ) NULLS LAST,
    conn.connected_at NULLS LAST,
    d.source,
    array_position(%s::text[], d.type::text)
"""

_DAY_FILTERS = ("local_day", "source")


def _chosen_sql(
    scope: str, scope_params: list[Any], kind: str, filters: Filters, application_id: int
) -> tuple[str, str, list[Any]]:
    """(the chosen rollups as a subquery, the conditions on the answer, their params)."""
    conditions = filters.conditions()
    narrow = [(c, op, v) for c, op, v in conditions if c in _DAY_FILTERS]
    answer = [(c, op, v) for c, op, v in conditions if c not in _DAY_FILTERS]
    types = list(stored_types(kind))
    sql = _CHOSEN.format(scope=scope, narrow="".join(f" AND d.{c} {op} %s" for c, op, _ in narrow))
    params = [*scope_params, types, *[v for _, _, v in narrow], list(settings.SOURCE_PRIORITY), application_id, types]
    where = " AND ".join(f"c.{c} {op} %s" for c, op, _ in answer) or "true"
    return sql, where, [*params, *[v for _, _, v in answer]]


_TIMES = f"{UtcText.template % {'expressions': 'c.created_at'}}, {UtcText.template % {'expressions': 'c.updated_at'}}"

# Whether any rollup of the Human's types is stale (the partial index of stale days answers
# it), and the page, in one round trip: the common case, nothing stale, needs no other.
_ROLLUP_PAGE = f"""
SELECT stale.found, page.*
FROM (
    SELECT EXISTS (
        SELECT 1 FROM data_api_daystat
        WHERE human_id = %s AND type = ANY(%s) AND generation > done_generation
    ) AS found
) stale LEFT JOIN LATERAL (
    SELECT c.local_day, c.source, c.count, c.stats, {_TIMES}
    FROM ({{chosen}}) c WHERE {{where}}
    ORDER BY c.local_day DESC OFFSET %s LIMIT %s
) page ON true
"""


def _rollup_page(human: Human, kind: str, filters: Filters, window: Window) -> tuple[bool, list[tuple[Any, ...]]]:
    chosen, where, params = _chosen_sql("d.human_id = %s", [human.pk], kind, filters, human.application_id)
    with db.cursor() as cursor:
        cursor.execute(
            _ROLLUP_PAGE.format(chosen=chosen, where=where),
            [human.pk, list(stored_types(kind)), *params, window.offset, window.limit],
        )
        found = cursor.fetchall()
    return bool(found[0][0]), [row[1:] for row in found if row[1] is not None]


def _rollup_count(human: Human, kind: str, filters: Filters) -> int:
    chosen, where, params = _chosen_sql("d.human_id = %s", [human.pk], kind, filters, human.application_id)
    with db.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM ({chosen}) c WHERE {where}", params)
        return int(cursor.fetchone()[0])


# --- on the fly (SQLite, the one-machine demo) ---------------------------------------------------


def _on_the_fly(humans: Sequence[Human], kind: str, filters: Filters) -> list[tuple[str, DaySummary]]:
    """(human id, summary) of every chosen day, newest day first: what the rollups give, from
    the records themselves."""
    scope = filters.days_and_source()
    chosen: list[tuple[str, DaySummary]] = []
    for human in humans:
        candidates: list[tuple[str, DaySummary]] = []
        for stored in stored_types(kind):
            if stored in SERIES:  # their rollups are written with them (data_api.series)
                candidates.extend((stored, s) for s in _series_rollups(human, stored, scope))
                continue
            queryset = scope.apply(Record.objects.filter(human_id=human.pk, type=stored))
            rows = queryset.values_list("local_day", "source", "value", "data", "created_at", "updated_at")
            candidates.extend((stored, s) for s in _aggregate_in_python(stored, rows))
        rank = _source_rank(human)
        types = stored_types(kind)
        best: dict[date, tuple[Any, ...]] = {}
        for stored, summary in candidates:
            key = (*rank(summary.source), types.index(stored))
            if summary.day not in best or key < best[summary.day][0]:
                best[summary.day] = (key, summary)
        for _, summary in best.values():
            answer = DaySummary(
                kind, summary.day, summary.count, summary.stats, summary.created_at, summary.updated_at, summary.source
            )
            if _matches(answer, filters):
                chosen.append((human.pk, answer))
    return sorted(chosen, key=lambda item: item[1].day, reverse=True)


def _series_rollups(human: Human, kind: str, scope: Filters) -> list[DaySummary]:
    rows = scope.apply(DayStat.objects.filter(human_id=human.pk, type=kind, count__gt=0))
    return [
        DaySummary(kind, day, count, stats, created, updated, source)
        for day, source, count, stats, created, updated in rows.values_list(
            "local_day", "source", "count", "stats", "created_at", "updated_at"
        )
    ]


def _source_rank(human: Human) -> Any:
    priority = human.application.summary_priority
    connected = dict(Connection.objects.filter(human=human).values_list("source", "connected_at"))
    latest = max(connected.values(), default=None)

    def rank(source: str) -> tuple[Any, ...]:
        named = priority.index(source) if source in priority else len(priority)
        when = connected.get(source)
        return (named, when is None, when or latest, source)

    return rank


def _aggregate_in_python(kind: str, rows: Iterable[tuple[date, str, Any, Any, datetime, datetime]]) -> list[DaySummary]:
    by_day: dict[tuple[date, str], list[tuple[Any, Any, datetime, datetime]]] = defaultdict(list)
    for day, source, value, data, created, updated in rows:
        by_day[(day, source)].append((value, data, created, updated))
    out = []
    for (day, source), items in by_day.items():
        aggregates = [_python_aggregate(m, items) for m in SUMMARIZED[kind]]
        created = min(i[2] for i in items)
        updated = max(i[3] for i in items)
        out.append(DaySummary(kind, day, len(items), finish(kind, aggregates), created, updated, source))
    return out


def _python_aggregate(measure: Measure, items: list[tuple[Any, Any, datetime, datetime]]) -> float | None:
    raw = [item[0] if not measure.field else (item[1] or {}).get(measure.field) for item in items]
    return aggregate(measure, [float(v) for v in raw if v is not None])


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


def summary_page(*, human: Human, kind: str, filters: Filters, window: Window) -> Page:
    """Daily summaries, newest day first, one source answering for each day."""
    if db.vendor != "postgresql":
        summaries = [s for _, s in _on_the_fly([human], kind, filters)]
        chosen = summaries[window.offset : window.offset + window.limit]
        return Page([summary_json(human.pk, s) for s in chosen], len(summaries), window.limit, window.offset)
    stale, rows = _rollup_page(human, kind, filters, window)
    if stale:
        for stored in stored_types(kind):
            refresh(human.pk, stored)
        _, rows = _rollup_page(human, kind, filters, window)
    # The connection hands jsonb over as text (Django's JSONField decodes it); one decode of
    # the whole page costs a fraction of one per day.
    stats = json.loads(f"[{','.join(row[3] for row in rows)}]")
    items = [
        day_json(human.pk, kind, day, count, day_stats, created, updated, source)
        for (day, source, count, _, created, updated), day_stats in zip(rows, stats, strict=True)
    ]
    # A short page that is not past the end tells the total without counting.
    short = len(items) < window.limit and (items or window.offset == 0)
    total = window.offset + len(items) if short else _rollup_count(human, kind, filters)
    return Page(items, total, window.limit, window.offset)


def summary_of_day(*, human: Human, kind: str, day: date) -> dict[str, Any] | None:
    page = summary_page(human=human, kind=kind, filters=Filters(first_day=day, last_day=day), window=Window(1, 0))
    return page.items[0] if page.items else None


def latest_summary(*, human: Human, kind: str) -> dict[str, Any] | None:
    page = summary_page(human=human, kind=kind, filters=Filters(), window=Window(1, 0))
    return page.items[0] if page.items else None


# --- every Human of an Application (the batch feed) ----------------------------------------------


def app_summary_page(*, application: Application, kind: str, filters: Filters, window: Window) -> Page:
    """The chosen daily summaries of every Human of the Application, oldest change first (a
    client pulls incrementally with `updated_since`), each with its `humanId`."""
    if db.vendor != "postgresql":
        humans = list(Human.objects.filter(application=application).select_related("application"))
        found = sorted(_on_the_fly(humans, kind, filters), key=lambda hs: (hs[1].updated_at, hs[0], hs[1].day))
        chosen = found[window.offset : window.offset + window.limit]
        return Page([summary_json(h, s) for h, s in chosen], len(found), window.limit, window.offset)
    refresh_stale(application, stored_types(kind))
    scope = "d.human_id IN (SELECT h.id FROM connect_human h WHERE h.application_id = %s)"
    chosen_sql, where, params = _chosen_sql(scope, [application.pk], kind, filters, application.pk)
    with db.cursor() as cursor:
        # The total comes with the page, from the same choice of every day (counting apart
        # would make that choice, a sort of all the days, a second time).
        cursor.execute(
            f"SELECT count(*) OVER (), c.human_id, c.local_day, c.source, c.count, c.stats, {_TIMES} "
            f"FROM ({chosen_sql}) c WHERE {where} ORDER BY c.updated_at, c.human_id, c.local_day OFFSET %s LIMIT %s",
            [*params, window.offset, window.limit],
        )
        rows = cursor.fetchall()
        if rows:
            total = int(rows[0][0])
        else:
            cursor.execute(f"SELECT count(*) FROM ({chosen_sql}) c WHERE {where}", params)
            total = int(cursor.fetchone()[0])
    items = [
        day_json(
            human_id, kind, day, count, json.loads(stats) if isinstance(stats, str) else stats, created, updated, source
        )
        for _, human_id, day, source, count, stats, created, updated in rows
    ]
    return Page(items, total, window.limit, window.offset)
