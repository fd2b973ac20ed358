"""Reading normalized records for the Data API: types, filters, JSON shape, pagination."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import urlencode

from django.db.models import QuerySet
from django.http import QueryDict
from rest_framework.exceptions import ValidationError

from .models import Record

MEASUREMENTS = ("heart_rate", "blood_glucose", "blood_oxygen", "blood_pressure", "bmi", "body_fat", "height", "weight")
# URL path -> stored type
PERIODIC = {
    "activities": "activities",
    "sleeps": "sleeps",
    "locations": "locations",
    "food/meals": "meals",
    "shifts": "shifts",
    "timeclocks": "timeclocks",
}

DEFAULT_LIMIT = 50
MAX_LIMIT = 500


def iso_ms(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def tz_text(minutes: int) -> str:
    sign = "-" if minutes < 0 else "+"
    minutes = abs(minutes)
    return f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def record_json(record: Record) -> dict[str, Any]:
    body: dict[str, Any] = {"id": str(record.pk), "humanId": record.human_id, "source": record.source}
    if record.type in MEASUREMENTS:
        body["timestamp"] = iso_ms(record.start_time)
        body["tzOffset"] = tz_text(record.tz_offset)
    else:
        body["startTime"] = iso_ms(record.start_time)
        body["endTime"] = iso_ms(record.end_time)
        body["tzOffset"] = tz_text(record.tz_offset)
    body.update(record.data)
    body["sourceData"] = record.source_data
    body["createdAt"] = iso_ms(record.created_at)
    body["updatedAt"] = iso_ms(record.updated_at)
    return body


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


def apply_filters(queryset: QuerySet[Record], params: QueryDict) -> QuerySet[Record]:
    start, end = params.get("start_date"), params.get("end_date")
    if (start is None) != (end is None):
        raise ValidationError({"start_date" if start is None else "end_date": "start_date and end_date go together"})
    if start is not None and end is not None:
        first, last = parse_day("start_date", start), parse_day("end_date", end)
        if first > last:
            raise ValidationError({"end_date": "end_date is before start_date"})
        queryset = queryset.filter(local_day__gte=first, local_day__lte=last)
    for name, lookup in (
        ("created_since", "created_at__gt"),
        ("updated_since", "updated_at__gt"),
        ("created_before", "created_at__lt"),
        ("updated_before", "updated_at__lt"),
    ):
        raw = params.get(name)
        if raw:
            queryset = queryset.filter(**{lookup: parse_instant(name, raw)})
    source = params.get("source")
    if source is not None:
        if not re.fullmatch(r"[a-z0-9_-]{1,64}", source):
            raise ValidationError({"source": f"not a source slug: {source!r}"})
        queryset = queryset.filter(source=source)
    return queryset


@dataclass
class Page:
    items: list[dict[str, Any]]
    total: int
    limit: int
    offset: int

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
        if self.total and self.offset != last_offset:
            links.append(f'<{url(last_offset)}>; rel="last"')
        if self.offset != 0:
            links.append(f'<{url(0)}>; rel="first"')
        headers = {"X-Total-Count": str(self.total)}
        if links:
            headers["Link"] = ", ".join(links)
        return headers


def paginate(queryset: QuerySet[Record], params: QueryDict) -> Page:
    limit = parse_int("limit", params.get("limit"), DEFAULT_LIMIT, 1, MAX_LIMIT)
    offset = parse_int("offset", params.get("offset"), 0, 0)
    total = queryset.count()
    rows = queryset.order_by("-start_time", "-id")[offset : offset + limit]
    return Page([record_json(r) for r in rows], total, limit, offset)
