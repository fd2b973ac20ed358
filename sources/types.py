"""The vocabulary of record types: the one list of what a plugin may yield and how it is filed.

Every stored type is served by some route: readings and periods by their own lists, daily
totals through the summaries of the type they total (`activity_summaries` answers
`/activities/summaries`). A plugin's declared `data_types` must come from here (a test checks
every plugin), so nothing is stored that no route serves.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal


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
    # The Application API's batch routes (`/users/{batch}`), in Human API's plural names.
    batch: tuple[str, ...] = ()
    # The OpenAPI schema of one record, and of its daily summary where it has summaries.
    schema: str = "Reading"
    summary_schema: str = ""
    # Readings: the unit every source's values are converted to.
    unit: str = ""
    # Where its records live: "rows", one row each (data_api_record); "series", the readings
    # of one connection and local day in one compressed row (data_api_series), for types a
    # device sends every minute or more often.
    storage: Literal["rows", "series"] = "rows"


_TYPES = (
    RecordType(
        "heart_rate",
        "reading",
        "heart_rate",
        batch=("heart_rates",),
        summary_schema="HeartRateSummary",
        unit="bpm",
        storage="series",
    ),
    RecordType("blood_glucose", "reading", "blood_glucose", batch=("blood_glucoses",), unit="mg/dL"),
    RecordType("blood_oxygen", "reading", "blood_oxygen", batch=("blood_oxygens",), unit="%"),
    RecordType(
        "blood_pressure",
        "reading",
        "blood_pressure",
        batch=("blood_pressures",),
        schema="BloodPressureReading",
        unit="mmHg",
    ),
    RecordType("bmi", "reading", "bmi", batch=("bmis",), unit="kg/m2"),
    RecordType("body_fat", "reading", "body_fat", batch=("body_fats",), unit="%"),
    RecordType("height", "reading", "height", batch=("heights",), unit="cm"),
    RecordType("weight", "reading", "weight", batch=("weights",), unit="kg"),
    # The heart's rate at rest, as the source determines it (once a day, or a night).
    RecordType("resting_heart_rate", "reading", "resting_heart_rate", batch=("resting_heart_rates",), unit="bpm"),
    # RMSSD, in milliseconds (a night's or a day's average as the source gives it).
    RecordType(
        "heart_rate_variability",
        "reading",
        "heart_rate_variability",
        batch=("heart_rate_variabilities",),
        unit="ms",
    ),
    RecordType("respiratory_rate", "reading", "respiratory_rate", batch=("respiratory_rates",), unit="breaths/min"),
    # `value` the measured temperature where the source measures one (null otherwise), and
    # `deviation` from the person's own baseline where the source gives it; both in °C.
    RecordType(
        "body_temperature",
        "reading",
        "body_temperature",
        batch=("body_temperatures",),
        schema="TemperatureReading",
        unit="°C",
    ),
    RecordType("vo2_max", "reading", "vo2_max", batch=("vo2_maxes",), unit="mL/kg/min"),
    RecordType(
        "activities", "period", "activities", batch=("activities",), schema="Activity", summary_schema="ActivitySummary"
    ),
    RecordType(
        "sleeps", "period", "sleeps", day_of="end", batch=("sleeps",), schema="Sleep", summary_schema="SleepSummary"
    ),
    RecordType("locations", "period", "locations", batch=("locations",), schema="Location"),
    RecordType("meals", "period", "food/meals", batch=("meals", "food/meals"), schema="Meal"),
    RecordType("shifts", "period", "shifts", batch=("shifts",), schema="Shift"),
    RecordType("timeclocks", "period", "timeclocks", batch=("timeclocks",), schema="Timeclock"),
    # A provider's own totals of one local day (Oura daily_activity, Google Health daily
    # aggregates, Withings getactivity): steps, distance (m), calories (kcal, total),
    # activeCalories, duration (active s), sedentary/light/moderate/vigorous (s). Served as
    # that source's `/activities/summaries` for the day.
    RecordType("activity_summaries", "daily", summary_of="activities"),
)

RECORD_TYPES: dict[str, RecordType] = {t.name: t for t in _TYPES}
# Sleep stages, on every sleep whose source tells them: minutes in each (None where unknown).
SLEEP_STAGES = ("deepSleep", "lightSleep", "remSleep", "timeAwake")
MEASUREMENTS: tuple[str, ...] = tuple(t.name for t in _TYPES if t.kind == "reading")
# Types stored as compact time series (see data_api.series).
SERIES: frozenset[str] = frozenset(t.name for t in _TYPES if t.storage == "series")
# URL path -> stored type
PERIODIC: dict[str, str] = {t.route: t.name for t in _TYPES if t.kind == "period"}
# Batch route -> stored type
BATCH_TYPES: dict[str, str] = {route: t.name for t in _TYPES for route in t.batch}
# Types with daily summaries (`/{route}/summaries`): route -> stored type
SUMMARIZED_ROUTES: dict[str, str] = {t.route: t.name for t in _TYPES if t.summary_schema}


def daily_totals_of(kind: str) -> tuple[str, ...]:
    """The daily-totals types that answer `kind`'s daily summaries."""
    return tuple(t.name for t in _TYPES if t.summary_of == kind)


# --- daily summaries: what each summarized type's day is made of ----------------------------


@dataclass(frozen=True)
class Measure:
    name: str  # the summary's field
    agg: str  # sum | min | max | avg | p10 (the 10th percentile, a resting rate)
    field: str  # the record's data key; "" for the value column
    digits: int  # 0: an integer


ACTIVITY_MEASURES = (
    Measure("steps", "sum", "steps", 0),
    Measure("distance", "sum", "distance", 1),
    Measure("calories", "sum", "calories", 1),
    Measure("activeCalories", "sum", "activeCalories", 1),
    Measure("duration", "sum", "duration", 0),
    Measure("sedentary", "sum", "sedentary", 0),
    Measure("light", "sum", "light", 0),
    Measure("moderate", "sum", "moderate", 0),
    Measure("vigorous", "sum", "vigorous", 0),
)

# Stored type -> the measures of its daily rollup. A summary route's kind and the daily totals
# that answer for it share their measures, so a day reads the same whichever answered.
SUMMARIZED: dict[str, tuple[Measure, ...]] = {
    "activities": ACTIVITY_MEASURES,
    "activity_summaries": ACTIVITY_MEASURES,
    "sleeps": (
        Measure("timeAsleep", "sum", "timeAsleep", 0),
        Measure("timeAwake", "sum", "timeAwake", 0),
        Measure("timeInBed", "sum", "timeInBed", 0),
        Measure("numberOfWakeups", "sum", "numberOfWakeups", 0),
        Measure("deepSleep", "sum", "deepSleep", 0),
        Measure("lightSleep", "sum", "lightSleep", 0),
        Measure("remSleep", "sum", "remSleep", 0),
    ),
    "heart_rate": (
        Measure("min", "min", "", 0),
        Measure("max", "max", "", 0),
        Measure("avg", "avg", "", 1),
        Measure("restingHeartRate", "p10", "", 0),
    ),
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


def aggregate(measure: Measure, values: list[float]) -> float | None:
    """One measure of a day from its values (None where no record had one)."""
    if not values:
        return None
    if measure.agg == "sum":
        return sum(values)
    if measure.agg == "min":
        return min(values)
    if measure.agg == "max":
        return max(values)
    if measure.agg == "avg":
        return sum(values) / len(values)
    # percentile_disc(0.1): the first value whose cumulative share reaches 10%.
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.1 * len(ordered)) - 1)]
