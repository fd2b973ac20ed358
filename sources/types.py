"""The vocabulary of record types: the one list of what a plugin may yield and how it is filed.

Every stored type is served by some route: readings and periods by their own lists, daily
totals through the summaries of the type they total (`activity_summaries` answers
`/activities/summaries`). A plugin's declared `data_types` must come from here (a test checks
every plugin), so nothing is stored that no route serves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class RecordType:
    name: str  # as stored, and as plugins name it
    kind: Literal["reading", "period", "daily"]
    # The Data API path of its lists ("" for daily totals, served through `summary_of`'s summaries).
    route: str = ""
    # Which local day a record is filed under: the day it starts, or (sleeps) the day it ends.
    day_of: Literal["start", "end"] = "start"
    # Daily totals: the periodic type whose daily summaries they answer for their source.
    summary_of: str = ""


_TYPES = (
    RecordType("heart_rate", "reading", "heart_rate"),
    RecordType("blood_glucose", "reading", "blood_glucose"),
    RecordType("blood_oxygen", "reading", "blood_oxygen"),
    RecordType("blood_pressure", "reading", "blood_pressure"),
    RecordType("bmi", "reading", "bmi"),
    RecordType("body_fat", "reading", "body_fat"),
    RecordType("height", "reading", "height"),
    RecordType("weight", "reading", "weight"),
    RecordType("activities", "period", "activities"),
    RecordType("sleeps", "period", "sleeps", day_of="end"),
    RecordType("locations", "period", "locations"),
    RecordType("meals", "period", "food/meals"),
    RecordType("shifts", "period", "shifts"),
    RecordType("timeclocks", "period", "timeclocks"),
    # A provider's own totals of one local day (Oura daily_activity, Google Health daily
    # aggregates, Withings getactivity): steps, distance (m), calories (kcal, total),
    # activeCalories, duration (active s), sedentary/light/moderate/vigorous (s).
    RecordType("activity_summaries", "daily", summary_of="activities"),
)

RECORD_TYPES: dict[str, RecordType] = {t.name: t for t in _TYPES}
MEASUREMENTS: tuple[str, ...] = tuple(t.name for t in _TYPES if t.kind == "reading")
# URL path -> stored type
PERIODIC: dict[str, str] = {t.route: t.name for t in _TYPES if t.kind == "period"}


def daily_totals_of(kind: str) -> tuple[str, ...]:
    """The daily-totals types that answer `kind`'s daily summaries."""
    return tuple(t.name for t in _TYPES if t.summary_of == kind)
