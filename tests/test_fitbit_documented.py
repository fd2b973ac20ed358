"""Google Health's published example payloads (and, where none is published, payloads built from
the v4 discovery schema), served by the emulator over HTTP, synced through the real engine, and
checked field by field against values worked out by hand (docs/providers/fitbit.md says where
each fact comes from).

The hand computations:
- instants are the payload's RFC 3339 UTC times; the offset is the `...UtcOffset` duration
  (`"32400s"` = +09:00 = 540 minutes);
- a sleep belongs to the civil date of its END (`endTime` + `endUtcOffset`);
- units are fixed and metric: weight g -> kg (/1000), height mm -> cm (/10), distance mm -> m
  (/1000), durations `"<n>s"` -> s, active minutes -> s (x60);
- a daily roll-up's day is its `civilStartTime.date`; its record starts at that day's local
  midnight in the user's zone (settings `timeZone`), as a UTC instant.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from data_api.models import Record
from sources.http import ProviderHttp
from sources.models import Connection, SyncOutcome
from tests.data_api_helpers import access_client, stored_counts, stored_records
from tests.emulators.google_health import (
    ACTIVITY_SCOPE,
    DOCS_SLEEP,
    METRICS_SCOPE,
    OBSERVED_EXERCISES,
    OBSERVED_HEART_RATE,
    OBSERVED_SLEEP,
    OBSERVED_STEPS,
    OBSERVED_TOTAL_CALORIES,
    SCHEMA_ACTIVE_ENERGY,
    SCHEMA_ACTIVE_MINUTES,
    SCHEMA_DISTANCE,
    SCHEMA_SEDENTARY,
    SETTINGS_SCOPE,
    SLEEP_SCOPE,
    GoogleHealthEmulator,
)
from tests.factories import Persona
from tests.test_fitbit import connect, sync

pytestmark = pytest.mark.django_db(transaction=True)

# The examples are of 2026: the history reaches back to them, however late the tests run.
EARLIEST = date(2026, 3, 1)


@pytest.fixture
def google(settings: Any) -> Iterator[GoogleHealthEmulator]:
    emulator = GoogleHealthEmulator(rate_limit_per_minute=100_000).start()
    # A long history, with the per-user limit lifted here as in the emulator.
    days = (datetime.now(UTC).date() - EARLIEST).days + 2
    settings.SOURCE_SETTINGS = {**emulator.source_settings(days), "SOURCE_FITBIT_USER_RATE_LIMITS": "off"}
    settings.PROVIDER_RETRY_ATTEMPTS = 3
    settings.PROVIDER_RETRY_MAX_WAIT = 5
    yield emulator
    emulator.stop()


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def one(connection: Connection, kind: str, external_id: str) -> Record:
    return Record.objects.get(connection=connection, type=kind, external_id=external_id)


def served(persona: Persona, route: str) -> Any:
    answer = access_client(persona.human).get(f"/v1/human/{route}")
    assert answer.status_code == 200, answer.content
    return answer.json()


def data_paths(google: GoogleHealthEmulator) -> set[str]:
    return {path.rsplit("/", 1)[-1] for path, _ in google.requests}


# --- sleep -----------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", ["observed", "documented"])
@pytest.mark.parametrize("int64_as", ["string", "number"])
def test_the_documented_sleep_belongs_to_the_morning_it_ends(
    alice: Persona, google: GoogleHealthEmulator, shape: str, int64_as: str
) -> None:
    google.reconcile_shape, google.int64_as = shape, int64_as
    google.granted_scopes = [SLEEP_SCOPE]
    google.add_point("sleep", DOCS_SLEEP)
    connection = connect(alice.human)

    run = sync(connection)

    assert run.outcome == SyncOutcome.SUCCEEDED
    sleep = one(connection, "sleeps", "2724123844716220216")
    # 20:57:30Z on 3 March to 04:41:30Z on 4 March, offsets "0s": 7 h 44 min = 464 min in bed.
    assert (sleep.start_time, sleep.end_time, sleep.tz_offset) == (
        utc("2026-03-03T20:57:30Z"),
        utc("2026-03-04T04:41:30Z"),
        0,
    )
    assert sleep.local_day == date(2026, 3, 4)  # the wake day, not the day it began
    assert sleep.data == {
        "day": "2026-03-04",
        "mainSleep": True,  # no metadata: not a nap
        "timeAsleep": 407,
        "timeAwake": 57,
        "timeInBed": 464,  # no minutesInSleepPeriod in the example: the interval
        "efficiency": 88,  # 100 * 407 / 464 = 87.7
        "numberOfWakeups": None,  # the (trimmed) stages summary has no AWAKE entry
        "deepSleep": 114,  # its one stage entry, DEEP 114 min
        "lightSleep": None,  # not listed in the trimmed example: unknown, not zero
        "remSleep": None,
    }
    [item] = served(alice, "sleeps/daily/2026-03-04")
    assert (item["day"], item["timeAsleep"], item["startTime"]) == ("2026-03-04", 407, "2026-03-03T20:57:30.000Z")
    assert served(alice, "sleeps/daily/2026-03-03") == []
    assert data_paths(google) == {"dataPoints:reconcile"}


@pytest.mark.parametrize("duplicated", [True, False])
@pytest.mark.parametrize("civil_times", [False, True])
def test_an_observed_sleep_is_read_once_whatever_the_reconciled_shape(
    alice: Persona, google: GoogleHealthEmulator, duplicated: bool, civil_times: bool
) -> None:
    google.duplicate_reconciled_stages, google.session_civil_times = duplicated, civil_times
    google.granted_scopes = [SLEEP_SCOPE]
    google.add_point("sleep", OBSERVED_SLEEP)
    connection = connect(alice.human)

    sync(connection)

    sleep = one(connection, "sleeps", "8808518358174752984")
    # 04:09Z-08:23Z at +09:00 is 13:09-17:23 on 26 September in Japan.
    assert (sleep.start_time, sleep.end_time, sleep.tz_offset) == (
        utc("2026-09-26T04:09:00Z"),
        utc("2026-09-26T08:23:00Z"),
        540,
    )
    assert sleep.local_day == date(2026, 9, 26)
    assert sleep.data == {
        "day": "2026-09-26",
        "mainSleep": True,
        "timeAsleep": 248,
        "timeAwake": 6,
        "timeInBed": 254,
        "efficiency": 98,  # 100 * 248 / 254 = 97.6
        "numberOfWakeups": 1,  # one AWAKE segment, even when the summary lists it twice
        "deepSleep": 48,  # stagesSummary DEEP, LIGHT, REM minutes (first entry of each)
        "lightSleep": 146,
        "remSleep": 54,
    }


def test_a_sleep_across_a_time_zone_change_is_filed_by_its_end_offset(
    alice: Persona, google: GoogleHealthEmulator
) -> None:
    # Built from the discovery's SessionTimeInterval: each end has its own offset. A night
    # flight from New York (-05:00) landing in Europe (+01:00).
    google.granted_scopes = [SLEEP_SCOPE]
    point = copy.deepcopy(OBSERVED_SLEEP)
    point["name"] = "users/1173016576421350648/dataTypes/sleep/dataPoints/5550001"
    point["sleep"]["interval"] = {
        "startTime": "2026-03-10T02:00:00Z",  # 21:00 on 9 March in New York
        "startUtcOffset": "-18000s",
        "endTime": "2026-03-10T04:30:00Z",  # 05:30 on 10 March in Europe (23:30 on the 9th in New York)
        "endUtcOffset": "3600s",
    }
    google.add_point("sleep", point)
    connection = connect(alice.human)

    sync(connection)

    sleep = one(connection, "sleeps", "5550001")
    assert sleep.tz_offset == -300 and sleep.local_day == date(2026, 3, 10)
    assert sleep.data["day"] == "2026-03-10"


@pytest.mark.parametrize(("nap", "main"), [(True, False), (False, True)])
def test_without_main_sleep_a_nap_is_not_the_main_sleep(
    alice: Persona, google: GoogleHealthEmulator, nap: bool, main: bool
) -> None:
    # The discovery's SleepMetadata has `nap` but no `mainSleep` (seen only in live answers).
    google.granted_scopes = [SLEEP_SCOPE]
    point = copy.deepcopy(OBSERVED_SLEEP)
    point["sleep"]["metadata"] = {"nap": nap, "processed": True, "stagesStatus": "REJECTED_NAP"}
    google.add_point("sleep", point)
    connection = connect(alice.human)

    sync(connection)

    assert one(connection, "sleeps", "8808518358174752984").data["mainSleep"] is main


# --- exercise --------------------------------------------------------------------------------


def test_observed_exercises_in_documented_units(alice: Persona, google: GoogleHealthEmulator) -> None:
    google.granted_scopes = [ACTIVITY_SCOPE]
    for point in OBSERVED_EXERCISES:
        google.add_point("exercise", point)
    # No published example with a distance: one from the discovery's MetricsSummary
    # (distanceMillimeters a double, steps an int64 string).
    run = copy.deepcopy(OBSERVED_EXERCISES[0])
    run["name"] = "users/1173016576421350648/dataTypes/exercise/dataPoints/4242"
    run["exercise"]["exerciseType"] = "RUNNING"
    run["exercise"]["interval"] = {
        "startTime": "2026-09-23T21:40:00Z",
        "startUtcOffset": "32400s",
        "endTime": "2026-09-23T22:12:00Z",
        "endUtcOffset": "32400s",
    }
    run["exercise"]["activeDuration"] = "1860s"
    run["exercise"]["metricsSummary"] = {"caloriesKcal": 330.5, "distanceMillimeters": 5012400.0, "steps": "6100"}
    google.add_point("exercise", run)
    connection = connect(alice.human)

    sync(connection)

    cardio = one(connection, "activities", "3326913505930631984")
    assert (cardio.start_time, cardio.end_time, cardio.tz_offset) == (
        utc("2026-09-25T00:33:29Z"),
        utc("2026-09-25T00:55:12Z"),
        540,
    )
    assert cardio.local_day == date(2026, 9, 25)  # 09:33 in Japan
    assert cardio.data == {
        "type": "cardio_workout",  # an exerciseType the discovery's enum does not list yet
        "duration": 1303,  # activeDuration "1303s"
        "distance": None,
        "steps": None,
        "calories": 202.0,
    }
    lifting = one(connection, "activities", "7140869748721445965")
    # 23:00:33Z on the 24th is 08:00:33 on 25 September in Japan.
    assert lifting.local_day == date(2026, 9, 25) and lifting.data["type"] == "weightlifting"
    assert lifting.data["duration"] == 3471 and lifting.data["calories"] == 440.0
    running = one(connection, "activities", "4242")
    assert running.local_day == date(2026, 9, 24)  # 06:40 on the 24th in Japan
    assert running.data == {"type": "running", "duration": 1860, "distance": 5012.4, "steps": 6100, "calories": 330.5}
    [item] = [
        a for a in served(alice, "activities/daily/2026-09-24") if a["sourceData"]["dataPointName"].endswith("/4242")
    ]
    assert (item["distance"], item["steps"], item["tzOffset"]) == (5012.4, 6100, "+09:00")


@pytest.mark.parametrize("last_page", ["omit", "empty"])
def test_sessions_are_paged_until_the_page_token_is_empty(
    alice: Persona, google: GoogleHealthEmulator, last_page: str
) -> None:
    google.last_page = last_page
    google.granted_scopes = [ACTIVITY_SCOPE]
    start = datetime(2026, 9, 20, 6, 0, tzinfo=UTC)
    ids = {google.add_exercise(start + timedelta(hours=3 * n), 20, kind="WALKING") for n in range(30)}
    connection = connect(alice.human)

    sync(connection)

    assert (
        set(Record.objects.filter(connection=connection, type="activities").values_list("external_id", flat=True))
        == ids
    )
    tokens = [q.get("pageToken") for path, q in google.requests if "/exercise/" in path]
    assert sum(1 for t in tokens if t) >= 1 and all(
        q["pageSize"] == "25" for p, q in google.requests if "/exercise/" in p
    )


# --- measurements ----------------------------------------------------------------------------


def test_observed_heart_rate_samples(alice: Persona, google: GoogleHealthEmulator) -> None:
    google.granted_scopes = [METRICS_SCOPE]
    for point in OBSERVED_HEART_RATE:
        google.add_point("heart-rate", point)
    connection = connect(alice.human)

    sync(connection)

    beats = {r.external_id: r for r in stored_records("heart_rate", connection=connection)}
    assert set(beats) == {"2026-09-25T10:04:59Z", "2026-09-25T10:04:57Z"}
    first = beats["2026-09-25T10:04:59Z"]
    assert (first.start_time, first.tz_offset, first.value, first.data) == (
        utc("2026-09-25T10:04:59Z"),
        540,
        49,
        {"value": 49, "unit": "bpm"},  # beatsPerMinute "49" (int64 as a string)
    )
    assert beats["2026-09-25T10:04:57Z"].value == 50 and first.local_day == date(2026, 9, 25)


def test_body_measurements_in_metric_units(alice: Persona, google: GoogleHealthEmulator) -> None:
    # No published examples: points in the discovery's shapes (Weight.weightGrams double,
    # Height.heightMillimeters int64, BodyFat.percentage, BloodGlucose mg/dL, DailyOxygenSaturation).
    google.granted_scopes = [METRICS_SCOPE, SETTINGS_SCOPE]
    google.time_zone, google.utc_offset = "Asia/Tokyo", "32400s"
    at = datetime(2026, 9, 25, 22, 14, tzinfo=UTC)  # 07:14 on 26 September in Japan
    ids = {
        "height": google.add_sample("height", datetime(2026, 9, 1, 8, 0, tzinfo=UTC), 1780, offset_s=32400),
        "weight": google.add_sample("weight", at, 72500.0, offset_s=32400),
        "fat": google.add_sample("body-fat", at, 18.5, offset_s=32400),
        "glucose": google.add_sample(
            "blood-glucose", at, 92.0, offset_s=32400, extra={"mealType": "BREAKFAST", "specimen": "CAPILLARY_BLOOD"}
        ),
    }
    google.add_daily(
        "daily-oxygen-saturation",
        date(2026, 9, 26),
        {"averagePercentage": 95.8, "lowerBoundPercentage": 93.1, "upperBoundPercentage": 98.0},
    )
    connection = connect(alice.human)

    sync(connection)

    weight = one(connection, "weight", ids["weight"])
    assert (weight.start_time, weight.tz_offset, weight.local_day) == (at, 540, date(2026, 9, 26))
    assert weight.data == {"value": 72.5, "unit": "kg"}  # 72500 g
    assert one(connection, "height", ids["height"]).data == {"value": 178.0, "unit": "cm"}  # "1780" mm
    assert one(connection, "bmi", ids["weight"]).data == {"value": 22.9, "unit": "kg/m2"}  # 72.5 / 1.78^2 = 22.88
    assert one(connection, "body_fat", ids["fat"]).data == {"value": 18.5, "unit": "%"}
    assert one(connection, "blood_glucose", ids["glucose"]).data == {"value": 92.0, "unit": "mg/dL"}
    spo2 = one(connection, "blood_oxygen", "2026-09-26")
    # The night's average, on its date; placed at that day's midnight in Tokyo (15:00Z the day before).
    assert (spo2.value, spo2.data, spo2.local_day) == (95.8, {"value": 95.8, "unit": "%"}, date(2026, 9, 26))
    assert (spo2.start_time, spo2.tz_offset) == (utc("2026-09-25T15:00:00Z"), 540)
    [reading] = served(alice, "blood_oxygen/readings/daily/2026-09-26")
    assert (reading["value"], reading["unit"]) == (95.8, "%")


def test_the_reconciled_stream_holds_a_reading_recorded_by_two_sources_once(
    alice: Persona, google: GoogleHealthEmulator
) -> None:
    google.granted_scopes = [METRICS_SCOPE]
    at = datetime(2026, 9, 25, 22, 14, tzinfo=UTC)
    google.add_sample("weight", at, 72500.0, platform="FITBIT", device="Aria Air")
    google.add_sample("weight", at, 72400.0, platform="HEALTH_CONNECT", device="Scale app")
    connection = connect(alice.human)

    sync(connection)

    assert [r.value for r in Record.objects.filter(connection=connection, type="weight")] == [72.5]
    assert data_paths(google) <= {"dataPoints:reconcile", "settings"}


# --- daily totals ----------------------------------------------------------------------------


def seed_rollups(google: GoogleHealthEmulator) -> None:
    for data_type, values in (
        ("total-calories", OBSERVED_TOTAL_CALORIES),
        ("steps", OBSERVED_STEPS),
        ("distance", SCHEMA_DISTANCE),
        ("active-energy-burned", SCHEMA_ACTIVE_ENERGY),
        ("active-minutes", SCHEMA_ACTIVE_MINUTES),
        ("sedentary-period", SCHEMA_SEDENTARY),
    ):
        for day, value in values.items():
            google.set_rollup(data_type, day, value)


@pytest.mark.parametrize("int64_as", ["string", "number"])
def test_daily_totals_are_googles_own_roll_ups_per_civil_day(
    alice: Persona, google: GoogleHealthEmulator, int64_as: str
) -> None:
    google.int64_as = int64_as
    google.granted_scopes = [ACTIVITY_SCOPE, SETTINGS_SCOPE]
    google.time_zone, google.utc_offset = "Asia/Tokyo", "32400s"
    seed_rollups(google)
    connection = connect(alice.human)

    run = sync(connection)

    assert run.outcome == SyncOutcome.SUCCEEDED
    days = {r.external_id: r for r in Record.objects.filter(connection=connection, type="activity_summaries")}
    assert sorted(days) == [f"2026-09-{d}" for d in range(19, 26)]  # every day total-calories answered for
    full = days["2026-09-25"]
    # Midnight of 25 September in Tokyo (+09:00) is 15:00Z on the 24th.
    assert (full.start_time, full.end_time, full.tz_offset, full.local_day) == (
        utc("2026-09-24T15:00:00Z"),
        utc("2026-09-25T15:00:00Z"),
        540,
        date(2026, 9, 25),
    )
    assert full.data == {
        "date": "2026-09-25",
        "steps": 9525,
        "distance": 7412.0,  # 7412000 mm
        "calories": 3028.8,  # kcalSum 3028.784634: the day's total
        "activeCalories": 612.4,
        "duration": 13320,  # (187 + 23 + 12) min
        "sedentary": 41400,  # "41400s"
        "light": 11220,
        "moderate": 1380,
        "vigorous": 720,
    }
    assert days["2026-09-24"].data == {
        "date": "2026-09-24",
        "steps": 6859,
        "distance": None,
        "calories": 2815.2,
        "activeCalories": None,
        "duration": None,
        "sedentary": None,
        "light": None,
        "moderate": None,
        "vigorous": None,
    }
    assert days["2026-09-19"].data["calories"] == 3632.9 and days["2026-09-19"].data["steps"] is None
    summary = served(alice, "activities/summaries/2026-09-25")
    assert (summary["date"], summary["steps"], summary["distance"], summary["calories"]) == (
        "2026-09-25",
        9525,
        7412.0,
        3028.8,
    )
    assert summary["source"] == "fitbit"
    # Each request: one civil-day window, a range within the 14-day cap of total-calories and
    # active-minutes, dates as JSON integers.
    bodies = [body for path, body in google.requests if path.endswith(":dailyRollUp")]
    assert bodies and all(body["windowSizeDays"] == 1 for body in bodies)
    for body in bodies:
        start, end = (date(**body["range"][edge]["date"]) for edge in ("start", "end"))
        assert 0 < (end - start).days <= 14
    rolled = {
        path.split("/dataTypes/")[1].split("/")[0] for path, _ in google.requests if path.endswith(":dailyRollUp")
    }
    assert rolled == {
        "steps",
        "distance",
        "total-calories",
        "active-energy-burned",
        "active-minutes",
        "sedentary-period",
    }


def test_without_the_settings_scope_daily_totals_are_placed_in_utc(
    alice: Persona, google: GoogleHealthEmulator
) -> None:
    google.granted_scopes = [ACTIVITY_SCOPE]
    seed_rollups(google)
    connection = connect(alice.human)

    sync(connection)

    day = one(connection, "activity_summaries", "2026-09-25")
    assert (day.start_time, day.tz_offset, day.local_day) == (utc("2026-09-25T00:00:00Z"), 0, date(2026, 9, 25))
    assert google.calls["settings"] == 0


def test_an_unreadable_day_is_counted_and_the_others_are_kept(alice: Persona, google: GoogleHealthEmulator) -> None:
    google.granted_scopes = [ACTIVITY_SCOPE]
    seed_rollups(google)
    google.set_rollup("steps", date(2026, 9, 23), {"countSum": "many"})
    connection = connect(alice.human)

    run = sync(connection)

    assert run.outcome == SyncOutcome.PARTIAL
    assert run.counts["activity_summaries"]["unreadable"] == 1
    assert run.unreadable["activity_summaries"] == ["daily totals of a day: steps.countSum is not a number"]
    stored = set(
        Record.objects.filter(connection=connection, type="activity_summaries").values_list("external_id", flat=True)
    )
    assert "2026-09-23" not in stored and {"2026-09-22", "2026-09-24", "2026-09-25"} <= stored


# --- errors ----------------------------------------------------------------------------------


def test_a_refused_collection_leaves_the_others_to_sync(alice: Persona, google: GoogleHealthEmulator) -> None:
    google.granted_scopes = [METRICS_SCOPE, SLEEP_SCOPE]
    google.vo2_max_scope = "metrics"  # VO2 max, asked under either scope, is granted here
    google.add_point("sleep", DOCS_SLEEP)
    at = datetime(2026, 9, 25, 22, 14, tzinfo=UTC)
    google.add_sample("weight", at, 72500.0)
    for point in OBSERVED_HEART_RATE:
        google.add_point("heart-rate", point)
    denied = (
        '{"error": {"code": 403, "message": "Request had insufficient authentication scopes.", '
        '"status": "PERMISSION_DENIED", "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", '
        '"reason": "ACCESS_TOKEN_SCOPE_INSUFFICIENT", "domain": "googleapis.com"}]}}'
    )
    google.fail("/dataTypes/heart-rate/", 403, body=denied, times=1000)
    google.fail("/dataTypes/blood-glucose/", 404, times=1000)
    connection = connect(alice.human)

    run = sync(connection, ProviderHttp(sleep=lambda _: None))

    assert run.outcome == SyncOutcome.PARTIAL
    assert set(run.failures) == {"heart_rate", "blood_glucose"}
    assert "403" in run.failures["heart_rate"] and "404" in run.failures["blood_glucose"]
    kinds = set(stored_counts(connection=connection))
    assert {"sleeps", "weight"} <= kinds and "heart_rate" not in kinds

    google.faults.clear()
    again = sync(connection)
    assert again.outcome == SyncOutcome.SUCCEEDED
    assert len(stored_records("heart_rate", connection=connection)) == 2
