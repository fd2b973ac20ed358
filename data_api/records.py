"""Reading normalized records for the Data API: types, filters, JSON shape, pagination."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from functools import cache
from typing import Any, TypeVar
from urllib.parse import urlencode

from django.db import connection
from django.db.models import CharField, Func, Model, QuerySet
from django.http import QueryDict
from rest_framework.exceptions import ValidationError

from sources.types import MEASUREMENTS, PERIODIC

__all__ = ["MEASUREMENTS", "PERIODIC"]  # the vocabulary, as the Data API names its routes

from .models import Record

M = TypeVar("M", bound=Model)

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
# Where a list has no cached total, X-Total-Count counts at most this many rows past the page;
# beyond that it is a lower bound, said so by `X-Total-Count-Exact: false` (and no `last` link),
# so no page costs a count of the whole set.
COUNT_AHEAD = 10_000


def iso_ms(moment: datetime | str | None) -> str | None:
    """ISO-8601 UTC with milliseconds. Text is taken as formatted already (by utc_text)."""
    if moment is None or isinstance(moment, str):
        return moment
    if moment.utcoffset():
        moment = moment.astimezone(UTC)
    # isoformat is implemented in C; this runs three times per row of every list.
    return moment.isoformat(timespec="milliseconds")[:23] + "Z"


@cache  # offsets are a few hundred values at most; this runs once per row of every list
def tz_text(minutes: int) -> str:
    sign = "-" if minutes < 0 else "+"
    minutes = abs(minutes)
    return f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"


# The columns a list reads (no model instances: they cost more than the query on big pages).
ROW_COLUMNS = (
    "id",
    "human_id",
    "source",
    "type",
    "start_time",
    "end_time",
    "tz_offset",
    "data",
    "source_data",
    "created_at",
    "updated_at",
)


class UtcText(Func):
    """A timestamp formatted by PostgreSQL as iso_ms formats it: decoding thousands of
    timestamps into Python datetimes costs more than the query that reads them."""

    template = "to_char(%(expressions)s AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"
    output_field = CharField()


TIME_COLUMNS = ("start_time", "end_time", "created_at", "updated_at")


def rows_for_json(queryset: QuerySet[Record]) -> QuerySet[Record, tuple[Any, ...]]:
    """The queryset's rows as row_json takes them; times formatted by the database where it can."""
    if connection.vendor != "postgresql":
        return queryset.values_list(*ROW_COLUMNS)
    texts = {f"{name}_text": UtcText(name) for name in TIME_COLUMNS}
    names = [f"{name}_text" if name in TIME_COLUMNS else name for name in ROW_COLUMNS]
    return queryset.annotate(**texts).values_list(*names)


def _utc_text_sql(column: str) -> str:
    return UtcText.template % {"expressions": column}


# ROW_COLUMNS for hand-written SQL on PostgreSQL, times formatted as rows_for_json formats them.
ROW_SELECT_SQL = ", ".join(_utc_text_sql(name) if name in TIME_COLUMNS else name for name in ROW_COLUMNS)


def row_json(row: tuple[Any, ...]) -> dict[str, Any]:
    """A row of ROW_COLUMNS as the Data API shows it."""
    pk, human_id, source, kind, start, end, tz, data, source_data, created, updated = row
    body: dict[str, Any] = {"id": str(pk), "humanId": human_id, "source": source}
    if kind in MEASUREMENTS:
        body["timestamp"] = iso_ms(start)
    else:
        body["startTime"] = iso_ms(start)
        body["endTime"] = iso_ms(end)
    body["tzOffset"] = tz_text(tz)
    body.update(data)
    body["sourceData"] = source_data
    body["createdAt"] = iso_ms(created)
    body["updatedAt"] = iso_ms(updated)
    return body


def record_json(record: Record) -> dict[str, Any]:
    return row_json(tuple(getattr(record, name) for name in ROW_COLUMNS))


_COMPACT = re.compile(r"^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$")


def parse_instant(name: str, raw: str) -> datetime:
    """`YYYYMMDDTHHmmssZ` (Human API's form) or ISO-8601; naive means UTC."""
    match = _COMPACT.match(raw)
    try:
        if match:
            year, month, day, hour, minute, second = (int(g) for g in match.groups())
            return datetime(year, month, day, hour, minute, second, tzinfo=UTC)
        parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise ValidationError({name: f"not a date-time: {raw!r} (use YYYYMMDDTHHmmssZ or ISO-8601)"}) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def parse_day(name: str, raw: str) -> date:
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise ValidationError({name: f"not a day: {raw!r} (use YYYY-MM-DD)"}) from None


def parse_int(name: str, raw: str | None, default: int, minimum: int, maximum: int | None = None) -> int:
    if raw is None or raw == "":
        return default
    if not re.fullmatch(r"\d{1,12}", raw):
        raise ValidationError({name: f"must be a whole number, got {raw!r}"})
    value = int(raw)
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
        raise ValidationError({name: f"must be {bound}, got {value}"})
    return value


@dataclass(frozen=True)
class Filters:
    """The query parameters that narrow a list, parsed and checked once."""

    first_day: date | None = None
    last_day: date | None = None
    created_since: datetime | None = None
    updated_since: datetime | None = None
    created_before: datetime | None = None
    updated_before: datetime | None = None
    source: str | None = None

    @classmethod
    def parse(cls, params: QueryDict) -> Filters:
        first, last = _day_range(params)
        instants = {name: params.get(name) for name in _INSTANT_FILTERS}
        source = params.get("source")
        if source is not None and not re.fullmatch(r"[a-z0-9_-]{1,64}", source):
            raise ValidationError({"source": f"not a source slug: {source!r}"})
        return cls(
            first_day=first,
            last_day=last,
            source=source,
            **{name: parse_instant(name, raw) for name, raw in instants.items() if raw},
        )

    def on_day(self, day: date) -> Filters:
        """These filters, narrowed to one local day (the `daily/{day}` routes)."""
        first = max(day, self.first_day) if self.first_day else day
        last = min(day, self.last_day) if self.last_day else day
        return replace(self, first_day=first, last_day=last)

    def days_and_source(self) -> Filters:
        """Only the filters on the local day and the source (what selects day rows and daily
        rollups; the filters on times apply to what is in them)."""
        return Filters(first_day=self.first_day, last_day=self.last_day, source=self.source)

    @property
    def key(self) -> str:
        """Identifies the filtered set (for cached totals)."""
        return hashlib.sha256(repr(self).encode()).hexdigest()[:32]

    def conditions(self) -> list[tuple[str, str, Any]]:
        """(column, operator, value) of every filter that is set: the one definition that both
        `sql` and `apply` are built from, so they always select the same rows."""
        return [
            (column, op, getattr(self, name)) for name, column, op in _CONDITIONS if getattr(self, name) is not None
        ]

    def sql(self) -> tuple[str, list[Any]]:
        """The conditions as SQL (`" AND ..."` each) on data_api_record, or (days_and_source) on
        data_api_series or data_api_daystat, for the hand-written reads."""
        conditions = self.conditions()
        return "".join(f" AND {column} {op} %s" for column, op, _ in conditions), [v for _, _, v in conditions]

    def apply(self, queryset: QuerySet[M]) -> QuerySet[M]:
        for column, op, value in self.conditions():
            queryset = queryset.filter(**{f"{column}{_LOOKUPS[op]}": value})
        return queryset


# (attribute, column, operator)
_CONDITIONS = (
    ("first_day", "local_day", ">="),
    ("last_day", "local_day", "<="),
    ("created_since", "created_at", ">"),
    ("updated_since", "updated_at", ">"),
    ("created_before", "created_at", "<"),
    ("updated_before", "updated_at", "<"),
    ("source", "source", "="),
)
_LOOKUPS = {">=": "__gte", "<=": "__lte", ">": "__gt", "<": "__lt", "=": ""}
_INSTANT_FILTERS = ("created_since", "updated_since", "created_before", "updated_before")


def _day_range(params: QueryDict) -> tuple[date | None, date | None]:
    start, end = params.get("start_date"), params.get("end_date")
    if (start is None) != (end is None):
        raise ValidationError({"start_date" if start is None else "end_date": "start_date and end_date go together"})
    if start is None or end is None:
        return None, None
    first, last = parse_day("start_date", start), parse_day("end_date", end)
    if first > last:
        raise ValidationError({"end_date": "end_date is before start_date"})
    return first, last


def apply_filters(queryset: QuerySet[Record], params: QueryDict) -> QuerySet[Record]:
    return Filters.parse(params).apply(queryset)


@dataclass(frozen=True)
class Window:
    """Which slice of a list: `limit` items from `offset`."""

    limit: int
    offset: int

    @classmethod
    def parse(cls, params: QueryDict) -> Window:
        limit = parse_int("limit", params.get("limit"), DEFAULT_LIMIT, 1, MAX_LIMIT)
        return cls(limit, parse_int("offset", params.get("offset"), 0, 0))


@dataclass
class Page:
    items: list[dict[str, Any]]
    total: int
    limit: int
    offset: int
    exact: bool = True  # False: `total` is a lower bound (see COUNT_AHEAD)

    def headers(self, path: str, params: QueryDict) -> dict[str, str]:
        links = []

        def url(offset: int) -> str:
            query = {k: v for k, v in params.items() if k not in ("offset", "access_token")}
            query["offset"] = str(offset)
            query["limit"] = str(self.limit)
            return f"{path}?{urlencode(query)}"

        last_offset = max(0, (self.total - 1) // self.limit * self.limit) if self.total else 0
        if self.offset + self.limit < self.total:
            links.append(f'<{url(self.offset + self.limit)}>; rel="next"')
        if self.offset > 0:
            links.append(f'<{url(max(0, self.offset - self.limit))}>; rel="prev"')
        if self.total and self.offset != last_offset and self.exact:
            links.append(f'<{url(last_offset)}>; rel="last"')
        if self.offset != 0:
            links.append(f'<{url(0)}>; rel="first"')
        headers = {"X-Total-Count": str(self.total)}
        if not self.exact:
            headers["X-Total-Count-Exact"] = "false"
        if links:
            headers["Link"] = ", ".join(links)
        return headers


def bounded_total(window: Window, found: int, count: Callable[[int, int], int]) -> tuple[int, bool]:
    """(X-Total-Count, exact) of a page of `found` items, never counting more rows than the page
    skipped plus COUNT_AHEAD. `count(start, most)` counts the list's rows from `start`, at most
    `most` of them (order does not matter to it)."""
    if found < window.limit and (found or window.offset == 0):
        return window.offset + found, True  # the list ends on this page
    if not found:  # past the end: the rows before the offset, which the page has walked already
        return count(0, window.offset), True
    start = window.offset + window.limit
    ahead = count(start, COUNT_AHEAD + 1)
    return start + ahead, ahead <= COUNT_AHEAD


def counter(queryset: QuerySet[Any]) -> Callable[[int, int], int]:
    """bounded_total's `count` for a queryset (without its order, which changes no count)."""
    unordered = queryset.order_by()
    return lambda start, most: unordered[start : start + most].count()


def paginate(queryset: QuerySet[Record], params: QueryDict) -> Page:
    """The simple way: COUNT and OFFSET (SQLite, and small sets)."""
    window = Window.parse(params)
    total = queryset.count()
    rows = rows_for_json(queryset.order_by("-start_time", "-id"))
    items = [row_json(r) for r in rows[window.offset : window.offset + window.limit]]
    return Page(items, total, window.limit, window.offset)
