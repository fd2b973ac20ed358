"""Fitbit's nightly and daily vitals through the Google Health API (resting heart rate, HRV,
breathing rate, skin temperature, VO2 max) and the stages of a sleep: payloads in the discovery
document's shapes (no answer of these daily types has been published) and the published sleep
answers, served by the emulator over HTTP, synced through the real engine, and checked field by
field against values worked out by hand (docs/providers/fitbit.md gives each source).

The hand computations:
- a daily point is dated, not timed: `date` {year, month, day} is the user's civil date, the
  morning the night it describes ends on (Fitbit: "the data returned usually reflects a sleep
  period that began the day before"). It is filed under that date and placed at that date's
  midnight in the user's zone (settings `timeZone`): 26 September in Asia/Tokyo (+09:00)
  starts at 15:00Z on the 25th;
- the API's units are fixed: bpm, ms (RMSSD), breaths per minute, °C, mL/kg/min;
- the temperature's deviation is the night's skin temperature minus the user's baseline; the
  skin temperature itself is no body temperature (Google: wrist skin, "For clinical or
  diagnostic internal organ temperature ... use core-body-temperature").
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from datetime import UTC, date, datetime
from typing import Any

import pytest

from data_api.models import Record
from sources.http import ProviderHttp
from sources.models import Connection, SyncOutcome
from tests.data_api_helpers import access_client
from tests.emulators.google_health import (
    ACTIVITY_SCOPE,
    DOCS_SLEEP,
    METRICS_SCOPE,
    OBSERVED_SLEEP,
    SCHEMA_HEART_RATE_VARIABILITY,
    SCHEMA_RESPIRATORY_RATE,
    SCHEMA_RESTING_HEART_RATE,
    SCHEMA_SLEEP_TEMPERATURE,
    SCHEMA_VO2_MAX,
    SETTINGS_SCOPE,
    SLEEP_SCOPE,
    GoogleHealthEmulator,
)
from tests.factories import Persona
from tests.test_fitbit import connect, sync

pytestmark = pytest.mark.django_db(transaction=True)

EARLIEST = date(2026, 3, 1)
MIDNIGHT_26_TOKYO = datetime(2026, 9, 25, 15, 0, tzinfo=UTC)  # 00:00 on 26 September at +09:00
# Every scope a daily vital may need (VO2 max's is disputed), and the settings (the user's zone).
VITALS = [ACTIVITY_SCOPE, METRICS_SCOPE, SETTINGS_SCOPE]


@pytest.fixture
def google(settings: Any) -> Iterator[GoogleHealthEmulator]:
    emulator = GoogleHealthEmulator(rate_limit_per_minute=100_000, time_zone="Asia/Tokyo", utc_offset="32400s")
    emulator.start()
    # A long history, with the per-user limit lifted here as in the emulator.
    days = (datetime.now(UTC).date() - EARLIEST).days + 2
    settings.SOURCE_SETTINGS = {**emulator.source_settings(days), "SOURCE_FITBIT_USER_RATE_LIMITS": "off"}
    settings.PROVIDER_RETRY_ATTEMPTS = 3
    settings.PROVIDER_RETRY_MAX_WAIT = 5
    yield emulator
    emulator.stop()


def one(connection: Connection, kind: str, external_id: str) -> Record:
    return Record.objects.get(connection=connection, type=kind, external_id=external_id)


def ids(connection: Connection, kind: str) -> set[str]:
    return set(Record.objects.filter(connection=connection, type=kind).values_list("external_id", flat=True))


def served(persona: Persona, route: str) -> Any:
    answer = access_client(persona.human).get(f"/v1/human/{route}")
    assert answer.status_code == 200, answer.content
    return answer.json()


def filters(google: GoogleHealthEmulator, data_type: str) -> list[str]:
    return [q["filter"] for path, q in google.requests if f"/dataTypes/{data_type}/dataPoints:reconcile" in path]


def add(google: GoogleHealthEmulator, data_type: str, points: list[dict[str, Any]]) -> None:
    for point in points:
        google.add_point(data_type, point)


# --- resting heart rate ------------------------------------------------------------------------


@pytest.mark.parametrize("int64_as", ["string", "number"])
@pytest.mark.parametrize("shape", ["observed", "documented"])
def test_resting_heart_rate_is_filed_under_its_date(
    alice: Persona, google: GoogleHealthEmulator, int64_as: str, shape: str
) -> None:
    google.int64_as, google.reconcile_shape = int64_as, shape
    google.granted_scopes = VITALS
    add(google, "daily-resting-heart-rate", SCHEMA_RESTING_HEART_RATE)
    connection = connect(alice.human)

    run = sync(connection)

    assert run.outcome == SyncOutcome.SUCCEEDED
    assert ids(connection, "resting_heart_rate") == {"2026-09-26", "2026-09-25"}
    rest = one(connection, "resting_heart_rate", "2026-09-26")
    # beatsPerMinute "56" (int64, as a string or a number); the date's midnight in Tokyo.
    assert (rest.value, rest.data) == (56, {"value": 56, "unit": "bpm"})
    assert (rest.start_time, rest.tz_offset, rest.local_day) == (MIDNIGHT_26_TOKYO, 540, date(2026, 9, 26))
    assert one(connection, "resting_heart_rate", "2026-09-25").value == 58
    [reading] = served(alice, "resting_heart_rate/readings/daily/2026-09-26")
    assert (reading["value"], reading["unit"], reading["timestamp"], reading["tzOffset"]) == (
        56,
        "bpm",
        "2026-09-25T15:00:00.000Z",
        "+09:00",
    )
    # Daily types are filtered by their civil date, the only member they accept.
    assert filters(google, "daily-resting-heart-rate") and all(
        f.startswith('daily_resting_heart_rate.date >= "') for f in filters(google, "daily-resting-heart-rate")
    )


def test_an_unreadable_resting_heart_rate_is_counted_and_the_others_kept(
    alice: Persona, google: GoogleHealthEmulator
) -> None:
    google.granted_scopes = VITALS
    add(google, "daily-resting-heart-rate", SCHEMA_RESTING_HEART_RATE)
    broken = copy.deepcopy(SCHEMA_RESTING_HEART_RATE[0])
    broken["dailyRestingHeartRate"]["date"] = {"year": 2026, "month": 9, "day": 24}
    broken["dailyRestingHeartRate"]["beatsPerMinute"] = "fast"
    google.add_point("daily-resting-heart-rate", broken)
    connection = connect(alice.human)

    run = sync(connection)

    assert run.outcome == SyncOutcome.PARTIAL
    assert run.unreadable["resting_heart_rate"] == ["dailyRestingHeartRate.beatsPerMinute is not a number"]
    assert ids(connection, "resting_heart_rate") == {"2026-09-26", "2026-09-25"}


# --- heart rate variability --------------------------------------------------------------------


def test_heart_rate_variability_is_the_nights_average_rmssd(alice: Persona, google: GoogleHealthEmulator) -> None:
    google.granted_scopes = VITALS
    add(google, "daily-heart-rate-variability", SCHEMA_HEART_RATE_VARIABILITY)
    connection = connect(alice.human)

    run = sync(connection)

    # The night of the 25th has no average RMSSD (only entropy and a non-REM heart rate): it
    # is no HRV reading, and nothing unreadable either.
    assert run.outcome == SyncOutcome.SUCCEEDED
    assert ids(connection, "heart_rate_variability") == {"2026-09-26"}
    hrv = one(connection, "heart_rate_variability", "2026-09-26")
    # averageHeartRateVariabilityMilliseconds 48.374, not the deep-sleep RMSSD (46.91).
    assert (hrv.value, hrv.data) == (48.37, {"value": 48.37, "unit": "ms"})
    assert (hrv.start_time, hrv.tz_offset, hrv.local_day) == (MIDNIGHT_26_TOKYO, 540, date(2026, 9, 26))
    [reading] = served(alice, "heart_rate_variability/readings/daily/2026-09-26")
    assert (reading["value"], reading["unit"]) == (48.37, "ms")


# --- respiratory rate --------------------------------------------------------------------------


def test_respiratory_rate_is_the_main_sleeps_average(alice: Persona, google: GoogleHealthEmulator) -> None:
    google.granted_scopes = VITALS
    add(google, "daily-respiratory-rate", SCHEMA_RESPIRATORY_RATE)
    connection = connect(alice.human)

    sync(connection)

    breathing = one(connection, "respiratory_rate", "2026-09-26")
    assert (breathing.value, breathing.data) == (10.6, {"value": 10.6, "unit": "breaths/min"})
    assert (breathing.start_time, breathing.local_day) == (MIDNIGHT_26_TOKYO, date(2026, 9, 26))
    [reading] = served(alice, "respiratory_rate/readings/daily/2026-09-26")
    assert (reading["value"], reading["unit"]) == (10.6, "breaths/min")


# --- body temperature --------------------------------------------------------------------------


def test_the_nights_skin_temperature_is_a_deviation_from_the_baseline(
    alice: Persona, google: GoogleHealthEmulator
) -> None:
    google.granted_scopes = VITALS
    add(google, "daily-sleep-temperature-derivations", SCHEMA_SLEEP_TEMPERATURE)
    connection = connect(alice.human)

    run = sync(connection)

    assert run.outcome == SyncOutcome.SUCCEEDED
    # The night of the 25th has no baseline yet: no deviation, and a wrist skin temperature is
    # no body temperature, so no reading (and nothing unreadable).
    assert ids(connection, "body_temperature") == {"2026-09-26"}
    night = one(connection, "body_temperature", "2026-09-26")
    # nightlyTemperatureCelsius 33.41 - baselineTemperatureCelsius 32.87 = +0.54; the skin's
    # 33.41 °C is not stored as the body's temperature.
    assert (night.value, night.data) == (None, {"value": None, "unit": "°C", "deviation": 0.54})
    assert (night.start_time, night.tz_offset, night.local_day) == (MIDNIGHT_26_TOKYO, 540, date(2026, 9, 26))
    [reading] = served(alice, "body_temperature/readings/daily/2026-09-26")
    assert (reading["value"], reading["deviation"], reading["unit"]) == (None, 0.54, "°C")


# --- VO2 max -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("needed", "granted"), [("activity", ACTIVITY_SCOPE), ("metrics", METRICS_SCOPE)])
def test_vo2_max_is_read_under_either_disputed_scope(
    alice: Persona, google: GoogleHealthEmulator, needed: str, granted: str
) -> None:
    google.vo2_max_scope = needed
    google.granted_scopes = [granted, SETTINGS_SCOPE]
    add(google, "daily-vo2-max", SCHEMA_VO2_MAX)
    connection = connect(alice.human)

    run = sync(connection)

    assert run.outcome == SyncOutcome.SUCCEEDED
    fitness = one(connection, "vo2_max", "2026-09-26")
    assert (fitness.value, fitness.data) == (44.73, {"value": 44.73, "unit": "mL/kg/min"})
    assert (fitness.start_time, fitness.local_day) == (MIDNIGHT_26_TOKYO, date(2026, 9, 26))
    [reading] = served(alice, "vo2_max/readings/daily/2026-09-26")
    assert (reading["value"], reading["unit"]) == (44.73, "mL/kg/min")


def test_vo2_max_refused_for_its_scope_fails_alone(alice: Persona, google: GoogleHealthEmulator) -> None:
    # Google wants the metrics scope for VO2 max here; the user granted only activity.
    google.vo2_max_scope = "metrics"
    google.granted_scopes = [ACTIVITY_SCOPE, SETTINGS_SCOPE]
    add(google, "daily-vo2-max", SCHEMA_VO2_MAX)
    google.add_exercise(datetime(2026, 9, 20, 6, 0, tzinfo=UTC), 30)
    connection = connect(alice.human)

    run = sync(connection, ProviderHttp(sleep=lambda _: None))

    assert run.outcome == SyncOutcome.PARTIAL
    assert set(run.failures) == {"vo2_max"} and "403" in run.failures["vo2_max"]
    assert ids(connection, "activities") and not ids(connection, "vo2_max")


def test_a_missing_vital_fails_alone(alice: Persona, google: GoogleHealthEmulator) -> None:
    add(google, "daily-resting-heart-rate", SCHEMA_RESTING_HEART_RATE)
    add(google, "daily-sleep-temperature-derivations", SCHEMA_SLEEP_TEMPERATURE)
    google.fail("/dataTypes/daily-respiratory-rate/", 404, times=1000)
    connection = connect(alice.human)

    run = sync(connection, ProviderHttp(sleep=lambda _: None))

    assert run.outcome == SyncOutcome.PARTIAL
    assert set(run.failures) == {"respiratory_rate"} and "404" in run.failures["respiratory_rate"]
    assert ids(connection, "resting_heart_rate") == {"2026-09-26", "2026-09-25"}
    assert ids(connection, "body_temperature") == {"2026-09-26"}

    google.faults.clear()
    add(google, "daily-respiratory-rate", SCHEMA_RESPIRATORY_RATE)
    again = sync(connection)
    assert again.outcome == SyncOutcome.SUCCEEDED and ids(connection, "respiratory_rate") == {"2026-09-26"}


# --- sleep stages ------------------------------------------------------------------------------


@pytest.mark.parametrize("duplicated", [True, False])
def test_a_sleeps_stage_minutes_come_from_its_stages_summary(
    alice: Persona, google: GoogleHealthEmulator, duplicated: bool
) -> None:
    google.duplicate_reconciled_stages = duplicated
    google.granted_scopes = [SLEEP_SCOPE]
    google.add_point("sleep", OBSERVED_SLEEP)
    connection = connect(alice.human)

    sync(connection)

    sleep = one(connection, "sleeps", "8808518358174752984")
    # stagesSummary: AWAKE 6, LIGHT 146, DEEP 48, REM 54 (first entry of each type).
    assert {k: sleep.data[k] for k in ("deepSleep", "lightSleep", "remSleep", "timeAwake", "timeAsleep")} == {
        "deepSleep": 48,
        "lightSleep": 146,
        "remSleep": 54,
        "timeAwake": 6,
        "timeAsleep": 248,  # = 146 + 48 + 54
    }
    [item] = served(alice, "sleeps/daily/2026-09-26")
    assert (item["deepSleep"], item["lightSleep"], item["remSleep"]) == (48, 146, 54)


def test_a_classic_sleep_has_no_stage_minutes(alice: Persona, google: GoogleHealthEmulator) -> None:
    # The discovery's SleepType CLASSIC: "3 stages types: AWAKE, RESTLESS and ASLEEP".
    google.granted_scopes = [SLEEP_SCOPE]
    point = copy.deepcopy(OBSERVED_SLEEP)
    point["name"] = "users/1173016576421350648/dataTypes/sleep/dataPoints/6600001"
    body = point["sleep"]
    body["type"] = "CLASSIC"
    del body["stages"], body["shortAwakenings"]
    body["summary"]["stagesSummary"] = [
        {"type": "AWAKE", "minutes": "6", "count": "1"},
        {"type": "RESTLESS", "minutes": "21", "count": "4"},
        {"type": "ASLEEP", "minutes": "227", "count": "5"},
    ]
    google.add_point("sleep", point)
    connection = connect(alice.human)

    sync(connection)

    data = one(connection, "sleeps", "6600001").data
    assert (data["deepSleep"], data["lightSleep"], data["remSleep"]) == (None, None, None)
    assert (data["timeAwake"], data["numberOfWakeups"]) == (6, 1)


def test_the_documented_sleeps_trimmed_stages(alice: Persona, google: GoogleHealthEmulator) -> None:
    # The documented example lists only its DEEP stage: the others are unknown, not zero.
    google.granted_scopes = [SLEEP_SCOPE]
    google.add_point("sleep", DOCS_SLEEP)
    connection = connect(alice.human)

    sync(connection)

    data = one(connection, "sleeps", "2724123844716220216").data
    assert (data["deepSleep"], data["lightSleep"], data["remSleep"]) == (114, None, None)
