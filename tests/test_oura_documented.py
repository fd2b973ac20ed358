"""Oura's documented payloads, served by the emulator over HTTP, synced through the real engine,
and the stored and served records checked field by field against values worked out by hand from
the documentation (docs/providers/oura.md).

The documents are those of recorded real answers (tgrk/ex_oura, test/fixture/vcr_cassettes:
multiple_daily_activity, multiple_sleep, multiple_workout, multiple_daily_sp02,
multiple_heart_rate), with their ids replaced and their long sample arrays shortened where they are
not read (a long sleep's 5-minute heart rate is read, and kept whole); the variants the OpenAPI
document allows but no recording shows are marked so. The night's readings, readiness and VO2 max
are checked in tests/test_oura_nightly.py.
Units (OpenAPI, PublicDailyActivity, PublicModifiedSleepModel, PublicWorkout, PublicDailySpO2,
PublicHeartRateRow): durations in seconds, distances in metres, energy in kcal, SpO2 in percent,
heart-rate timestamps in UTC, the other timestamps local with their offset.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from django.utils import timezone

from data_api.models import Record
from data_api.records import record_json
from sources.http import ProviderHttp
from sources.models import Connection, SyncOutcome, SyncRun
from sources.registry import get_plugin
from sources.services import connection_store
from sources.sync import connection_sync
from tests.conftest import Persona
from tests.data_api_helpers import access_client, stored_records
from tests.emulators.oura import OuraEmulator

pytestmark = pytest.mark.django_db(transaction=True)

CALLBACK = "http://127.0.0.1:8000/connect/oauth/callback"
EARLIEST = date(2024, 10, 1)  # every example below is later


# --- documented payloads ------------------------------------------------------------------------

# daily_activity of 2024-11-11 in Central European Time (UTC+01:00). The activity day starts at
# 04:00 local time (`timestamp`); the times add up to the day: 2460 + 4860 + 18060 + 38100 +
# 22860 + 60 = 86400 s.
DAILY_ACTIVITY: dict[str, Any] = {
    "id": "a6f0c1de-3b0e-4c55-9d0f-6f1e2a7b8c01",
    "class_5_min": (
        "1111111111111111111111111111111111111111111112211111224433223333223443222232222232222323334445555553433454"
        "3332234322223343333333111113442222232322222332222222233333432333232222222332232323223222223332222233432222"
        "2222222222223322223222323222222222223322322222222222223333111111111111111121"
    ),
    "score": 95,
    "active_calories": 1153,
    "average_met_minutes": 1.875,
    "contributors": {
        "meet_daily_targets": 100,
        "move_every_hour": 100,
        "recovery_time": 100,
        "stay_active": 65,
        "training_frequency": 100,
        "training_volume": 100,
    },
    "equivalent_walking_distance": 17850,
    "high_activity_met_minutes": 417,
    "high_activity_time": 2460,
    "inactivity_alerts": 0,
    "low_activity_met_minutes": 181,
    "low_activity_time": 18060,
    "medium_activity_met_minutes": 260,
    "medium_activity_time": 4860,
    "met": {"interval": 60.0, "items": [0.9, 0.9, 0.9, 1.2], "timestamp": "2024-11-11T04:00:00.000+01:00"},
    "meters_to_target": -3500,
    "non_wear_time": 60,
    "resting_time": 22860,
    "sedentary_met_minutes": 13,
    "sedentary_time": 38100,
    "steps": 15185,
    "target_calories": 950,
    "target_meters": 17000,
    "total_calories": 3502,
    "day": "2024-11-11",
    "timestamp": "2024-11-11T04:00:00+01:00",
}

HEART_RATE_5_MIN: list[float | None] = [
    *(76.0, 77.0, 76.0, 78.0, 81.0, 82.0, 82.0, 79.0, 78.0, 77.0, 75.0, 75.0, 76.0, 75.0, 73.0, 74.0),
    *(71.0, 71.0, 71.0, 72.0, 73.0, 74.0, 74.0, 75.0, 71.0, 71.0, 71.0, 71.0, 71.0, None, 70.0, 72.0),
    *(73.0, 72.0, 71.0, 70.0, 68.0, 69.0, 68.0, 69.0, 68.0, 71.0, 70.0, 70.0, 71.0, 69.0, 69.0, 70.0),
    *(69.0, 71.0, 69.0, None, None, 65.0, 71.0, 71.0, 72.0, 73.0, 73.0, 68.0, 74.0, 70.0, 69.0, 68.0),
    *(67.0, 68.0, 67.0, 66.0, 66.0, 67.0, 67.0, 65.0, 65.0, 65.0, 64.0, 64.0, 65.0, 64.0, 66.0, 63.0),
    *(63.0, 64.0, 63.0, 63.0, 65.0, 67.0, 65.0, 65.0, 61.0, 60.0, 63.0, 67.0, 67.0, 67.0, 65.0, 64.0),
]

# The main night of 2024-10-10 (CEST, UTC+02:00): 01:01:59 to 09:04:12 = 28933 s in bed;
# 3060 deep + 17160 light + 3000 REM = 23220 s asleep; 28933 - 23220 = 5713 s awake.
LONG_SLEEP: dict[str, Any] = {
    "id": "b1d2e3f4-0001-4a5b-8c6d-7e8f9a0b1c2d",
    "average_breath": 14.5,
    "average_heart_rate": 71.25,
    "average_hrv": 38,
    "awake_time": 5713,
    "bedtime_end": "2024-10-10T09:04:12+02:00",
    "bedtime_start": "2024-10-10T01:01:59+02:00",
    "day": "2024-10-10",
    "deep_sleep_duration": 3060,
    "efficiency": 80,
    # The recorded 96 five-minute samples: the lowest is 60.0 (the 90th), as `lowest_heart_rate`.
    "heart_rate": {"interval": 300.0, "items": HEART_RATE_5_MIN, "timestamp": "2024-10-10T01:01:59.000+02:00"},
    "hrv": {"interval": 300.0, "items": [12.0, 9.0, None, 32.0], "timestamp": "2024-10-10T01:01:59.000+02:00"},
    "latency": 930,
    "light_sleep_duration": 17160,
    "low_battery_alert": False,
    "lowest_heart_rate": 60,
    "movement_30_sec": "111211111111211111112212111111221111",
    "period": 0,
    "readiness": {
        "contributors": {
            "activity_balance": 91,
            "body_temperature": 100,
            "hrv_balance": 64,
            "previous_day_activity": 91,
            "previous_night": 58,
            "recovery_index": 23,
            "resting_heart_rate": 88,
            "sleep_balance": 78,
        },
        "score": 71,
        "temperature_deviation": -0.05,
        "temperature_trend_deviation": -0.03,
    },
    "readiness_score_delta": 0,
    "rem_sleep_duration": 3000,
    "restless_periods": 283,
    "sleep_phase_5_min": (
        "4244211121444444221111222211344211222222333423422222222222234422222222223323322222222222233444224"
    ),
    "sleep_score_delta": 0,
    "sleep_algorithm_version": "v2",
    "time_in_bed": 28933,
    "total_sleep_duration": 23220,
    "type": "long_sleep",
}


def sleep(ident: str, **changes: Any) -> dict[str, Any]:
    item = copy.deepcopy(LONG_SLEEP)
    item["id"] = ident
    item.update(changes)
    return item


# A short sleep in the evening of 2024-10-10 (22:37:30 to 22:53:31 CEST) that Oura counts toward
# 2024-10-11: it ended after the 18:00 day change. No heart-rate samples, `lowest_heart_rate` 255.
EVENING_SLEEP = sleep(
    "b1d2e3f4-0002-4a5b-8c6d-7e8f9a0b1c2d",
    average_breath=14.875,
    average_heart_rate=74.75,
    average_hrv=None,
    awake_time=931,
    bedtime_end="2024-10-10T22:53:31+02:00",
    bedtime_start="2024-10-10T22:37:30+02:00",
    day="2024-10-11",
    deep_sleep_duration=0,
    efficiency=3,
    heart_rate=None,
    hrv=None,
    latency=0,
    light_sleep_duration=30,
    lowest_heart_rate=255,
    readiness_score_delta=None,
    rem_sleep_duration=0,
    restless_periods=1,
    sleep_phase_5_min="4444",
    sleep_score_delta=None,
    time_in_bed=961,
    total_sleep_duration=30,
    type="sleep",
)

# A detection the user rejected (`rest`): 2024-10-13 17:39:01 to 19:24:32 CEST, day 2024-10-14.
REJECTED = sleep(
    "b1d2e3f4-0003-4a5b-8c6d-7e8f9a0b1c2d",
    awake_time=1921,
    bedtime_end="2024-10-13T19:24:32+02:00",
    bedtime_start="2024-10-13T17:39:01+02:00",
    day="2024-10-14",
    sleep_phase_5_min="4444222242224222122224",
    time_in_bed=6331,
    total_sleep_duration=4410,
    type="rest",
)

# Types the schema names (PublicSleepType) but no recording shows: a sleep the user deleted, a
# late nap (ended after 18:00, counts toward the next day) and a period of no type (nullable).
DELETED = sleep("b1d2e3f4-0004-4a5b-8c6d-7e8f9a0b1c2d", type="deleted")
LATE_NAP = sleep(
    "b1d2e3f4-0005-4a5b-8c6d-7e8f9a0b1c2d",
    bedtime_start="2024-10-12T18:30:00+02:00",
    bedtime_end="2024-10-12T19:20:00+02:00",
    day="2024-10-13",
    time_in_bed=3000,
    total_sleep_duration=2400,
    awake_time=600,
    latency=300,
    efficiency=80,
    sleep_phase_5_min="4422224222",
    type="late_nap",
)
UNTYPED = sleep(
    "b1d2e3f4-0006-4a5b-8c6d-7e8f9a0b1c2d",
    bedtime_start="2024-10-15T23:10:00+02:00",
    bedtime_end="2024-10-16T06:40:00+02:00",
    day="2024-10-16",
    time_in_bed=27000,
    total_sleep_duration=None,  # nullable: not reported
    awake_time=None,
    latency=None,
    efficiency=None,
    type=None,
)


def workout(
    ident: str, start: str, end: str, day: str, calories: float | None, distance: float | None
) -> dict[str, Any]:
    return {
        "id": ident,
        "activity": "walking",
        "calories": calories,
        "day": day,
        "distance": distance,
        "end_datetime": end,
        "intensity": "easy",
        "label": None,
        "source": "confirmed",
        "start_datetime": start,
    }


WORKOUTS: list[dict[str, Any]] = [
    # 09:07 to 09:18 CEST = 07:07Z to 07:18Z, 660 s; no distance measured.
    workout(
        "c0ffee00-0001-4d3e-9f10-aa0000000001",
        "2024-10-09T09:07:00+02:00",
        "2024-10-09T09:18:00+02:00",
        "2024-10-09",
        21.967,
        None,
    ),
    # Both ends in UTC: 16:49Z to 17:33Z, 2640 s.
    workout(
        "c0ffee00-0002-4d3e-9f10-aa0000000002",
        "2024-10-09T16:49:00+00:00",
        "2024-10-09T17:33:00+00:00",
        "2024-10-09",
        87.868,
        269.87872314453125,
    ),
    # The start local (18:45 CEST = 16:45Z), the end in UTC (16:57Z): 720 s.
    workout(
        "c0ffee00-0003-4d3e-9f10-aa0000000003",
        "2024-10-15T18:45:00+02:00",
        "2024-10-15T16:57:00+00:00",
        "2024-10-15",
        23.964,
        301.8489074707031,
    ),
]

SPO2: list[dict[str, Any]] = [
    {
        "id": "d00d0000-0001-4e5f-8a9b-000000000001",
        "day": "2024-11-11",
        "spo2_percentage": {"average": 98.072},
        "breathing_disturbance_index": 15,
    },
    {
        "id": "d00d0000-0002-4e5f-8a9b-000000000002",
        "day": "2024-11-12",
        "spo2_percentage": {"average": 96.153},
        "breathing_disturbance_index": 6,
    },
    # The schema's null: a night without a reading (no example recorded).
    {
        "id": "d00d0000-0003-4e5f-8a9b-000000000003",
        "day": "2024-11-13",
        "spo2_percentage": None,
        "breathing_disturbance_index": None,
    },
]

# Heart rate, UTC; two sources sampled the same second (an `awake` and a `workout` reading).
HEART_RATE: list[dict[str, Any]] = [
    {"bpm": 91, "source": "awake", "timestamp": "2024-12-13T12:31:21+00:00"},
    {"bpm": 92, "source": "awake", "timestamp": "2024-12-13T18:47:08+00:00"},
    {"bpm": 107, "source": "workout", "timestamp": "2024-12-13T18:47:08+00:00"},
    {"bpm": 89, "source": "rest", "timestamp": "2024-12-13T14:34:31+00:00"},
]


# daily_readiness of 2024-11-11 as recorded (multiple_daily_readiness), and a VO2 max estimate in
# the recorded shape (multiple_vo2_max) moved to a day inside this file's history.
READINESS: dict[str, Any] = {
    "id": "e1e2e3e4-0001-4f00-9a00-000000000001",
    "contributors": {
        "activity_balance": 94,
        "body_temperature": 97,
        "hrv_balance": 95,
        "previous_day_activity": 91,
        "previous_night": 77,
        "recovery_index": 64,
        "resting_heart_rate": 92,
        "sleep_balance": 92,
    },
    "day": "2024-11-11",
    "score": 86,
    "temperature_deviation": 0.1,
    "temperature_trend_deviation": 0.13,
    "timestamp": "2024-11-11T00:00:00+00:00",
}
VO2_MAX: dict[str, Any] = {
    "id": "f1f2f3f4-0001-4f00-9a00-000000000001",
    "day": "2024-11-11",
    "timestamp": "2024-11-11T14:15:22Z",
    "vo2_max": 62,
}


# --- set-up -------------------------------------------------------------------------------------


@pytest.fixture
def oura(settings: Any) -> Iterator[OuraEmulator]:
    emulator = OuraEmulator(page_size=2)
    emulator.start()
    settings.SOURCE_SETTINGS = emulator.source_settings((timezone.now().date() - EARLIEST).days)
    yield emulator
    emulator.stop()


def connect_and_sync(emulator: OuraEmulator, persona: Persona) -> tuple[Connection, SyncRun]:
    plugin = get_plugin("oura")
    assert plugin is not None
    url = plugin.authorization_url(redirect_uri=CALLBACK, state="s", code_challenge=None)  # type: ignore[attr-defined]
    consent = requests.get(url, allow_redirects=False, timeout=5)
    code = parse_qs(urlsplit(consent.headers["Location"]).query)["code"][0]
    credentials = plugin.exchange_code(  # type: ignore[attr-defined]
        code=code, redirect_uri=CALLBACK, code_verifier=None, http=ProviderHttp()
    )
    connection = connection_store(human=persona.human, slug="oura", credentials=credentials, request=None)
    run = connection_sync(connection_id=connection.pk, http=ProviderHttp(sleep=lambda s: None))
    assert run is not None
    return connection, run


def stored(connection: Connection, kind: str) -> dict[str, Record]:
    return {r.external_id: r for r in stored_records(kind, connection=connection)}


# --- daily activity -----------------------------------------------------------------------------


def test_a_documented_daily_activity_is_that_days_totals_from_local_midnight(
    oura: OuraEmulator, alice: Persona
) -> None:
    oura.put("daily_activity", copy.deepcopy(DAILY_ACTIVITY))
    connection, run = connect_and_sync(oura, alice)

    assert run.outcome == SyncOutcome.SUCCEEDED, run.error
    (record,) = stored(connection, "activity_summaries").values()
    assert record.external_id == "2024-11-11"  # one per day
    assert record.local_day == date(2024, 11, 11)
    assert record.start_time == datetime(2024, 11, 10, 23, 0, tzinfo=UTC)  # 00:00 at +01:00
    assert record.end_time == datetime(2024, 11, 11, 23, 0, tzinfo=UTC)
    assert record.tz_offset == 60
    assert record.data == {
        "date": "2024-11-11",
        "steps": 15185,
        "distance": 17850,  # equivalent_walking_distance, m
        "calories": 3502,  # total_calories, kcal
        "activeCalories": 1153,
        "duration": 25380,  # 2460 high + 4860 medium + 18060 low, s
        "sedentary": 38100,
        "light": 18060,
        "moderate": 4860,
        "vigorous": 2460,
    }
    assert isinstance(record.data["steps"], int)
    assert "met" not in record.source_data and record.source_data["resting_time"] == 22860

    summary = access_client(alice.human).get("/v1/human/activities/summary/2024-11-11", {"source": "oura"}).json()
    assert (summary["date"], summary["source"]) == ("2024-11-11", "oura")
    assert (summary["steps"], summary["distance"], summary["calories"]) == (15185, 17850.0, 3502.0)
    assert (summary["activeCalories"], summary["duration"], summary["vigorous"]) == (1153.0, 25380, 2460)


@pytest.mark.parametrize(
    ("timestamp", "start", "offset"),
    [
        # The sandbox writes milliseconds; New York in November is UTC-05:00.
        pytest.param("2024-11-12T04:00:00.000-05:00", datetime(2024, 11, 12, 5, 0, tzinfo=UTC), -300, id="ms-west"),
        # Kathmandu, UTC+05:45: local midnight is 18:15Z the day before.
        pytest.param("2024-11-12T04:00:00+05:45", datetime(2024, 11, 11, 18, 15, tzinfo=UTC), 345, id="quarter-east"),
    ],
)
def test_each_daily_activity_starts_at_the_local_midnight_of_its_own_offset(
    oura: OuraEmulator, alice: Persona, timestamp: str, start: datetime, offset: int
) -> None:
    oura.put("daily_activity", {**copy.deepcopy(DAILY_ACTIVITY), "day": "2024-11-12", "timestamp": timestamp})
    connection, run = connect_and_sync(oura, alice)

    assert run.outcome == SyncOutcome.SUCCEEDED, run.error
    record = stored(connection, "activity_summaries")["2024-11-12"]
    assert (record.start_time, record.tz_offset, record.local_day) == (start, offset, date(2024, 11, 12))


# --- sleeps -------------------------------------------------------------------------------------


def test_a_documented_night_is_stored_in_minutes_under_its_day(oura: OuraEmulator, alice: Persona) -> None:
    oura.put("sleep", copy.deepcopy(LONG_SLEEP))
    connection, run = connect_and_sync(oura, alice)

    assert run.outcome == SyncOutcome.SUCCEEDED, run.error
    record = stored(connection, "sleeps")[LONG_SLEEP["id"]]
    body = record_json(record)
    assert body["startTime"] == "2024-10-09T23:01:59.000Z"  # 01:01:59 CEST
    assert body["endTime"] == "2024-10-10T07:04:12.000Z"
    assert body["tzOffset"] == "+02:00"
    assert record.local_day == date(2024, 10, 10)
    assert record.data == {
        "day": "2024-10-10",
        "mainSleep": True,  # long_sleep
        "timeAsleep": 387,  # 23220 s
        "timeAwake": 95,  # 5713 s = 95.2 min
        "timeInBed": 482,  # 28933 s = 482.2 min
        "timeToFallAsleep": 16,  # 930 s = 15.5 min
        "efficiency": 80,
        "numberOfWakeups": 7,  # awake runs between the first and last sleep epochs
        "deepSleep": 51,  # 3060 s
        "lightSleep": 286,  # 17160 s
        "remSleep": 50,  # 3000 s
    }
    assert "sleep_phase_5_min" not in body["sourceData"] and body["sourceData"]["lowest_heart_rate"] == 60


def test_a_sleep_is_filed_under_ouras_day_not_the_day_it_ends(oura: OuraEmulator, alice: Persona) -> None:
    for item in (LONG_SLEEP, EVENING_SLEEP, LATE_NAP):
        oura.put("sleep", copy.deepcopy(item))
    connection, run = connect_and_sync(oura, alice)

    assert run.outcome == SyncOutcome.SUCCEEDED, run.error
    sleeps = stored(connection, "sleeps")
    evening = sleeps[EVENING_SLEEP["id"]]
    # Ended 22:53:31 CEST on 2024-10-10; Oura counts it toward 2024-10-11.
    assert evening.local_day == date(2024, 10, 11) and evening.data["day"] == "2024-10-11"
    assert evening.end_time == datetime(2024, 10, 10, 20, 53, 31, tzinfo=UTC)
    assert evening.data["mainSleep"] is False
    assert (evening.data["timeInBed"], evening.data["timeAsleep"], evening.data["timeAwake"]) == (16, 0, 16)
    assert evening.data["numberOfWakeups"] == 0 and evening.data["efficiency"] == 3
    late = sleeps[LATE_NAP["id"]]  # ended 19:20 CEST on 2024-10-12
    assert late.local_day == date(2024, 10, 13) and late.data["day"] == "2024-10-13"
    assert late.data["mainSleep"] is False and late.data["numberOfWakeups"] == 1

    client = access_client(alice.human)
    on_the_11th = client.get("/v1/human/sleeps/daily/2024-10-11").json()
    assert [s["startTime"] for s in on_the_11th] == ["2024-10-10T20:37:30.000Z"]
    assert client.get("/v1/human/sleeps/daily/2024-10-10").json()[0]["startTime"] == "2024-10-09T23:01:59.000Z"
    assert len(client.get("/v1/human/sleeps/daily/2024-10-10").json()) == 1
    assert client.get("/v1/human/sleeps/summary/2024-10-11").json()["timeInBed"] == 16


def test_rejected_and_deleted_sleeps_are_not_sleeps_and_an_untyped_one_is(oura: OuraEmulator, alice: Persona) -> None:
    for item in (REJECTED, DELETED, UNTYPED):
        oura.put("sleep", copy.deepcopy(item))
    connection, run = connect_and_sync(oura, alice)

    assert run.outcome == SyncOutcome.SUCCEEDED, run.error
    assert set(stored(connection, "sleeps")) == {UNTYPED["id"]}
    untyped = stored(connection, "sleeps")[UNTYPED["id"]]
    assert untyped.local_day == date(2024, 10, 16) and untyped.data["mainSleep"] is False
    assert untyped.data["timeInBed"] == 450  # 27000 s
    assert untyped.data["timeAsleep"] is None and untyped.data["timeAwake"] is None
    assert untyped.data["efficiency"] is None and untyped.data["timeToFallAsleep"] is None
    # Its stages are the recorded night's (copied), in minutes.
    assert (untyped.data["deepSleep"], untyped.data["lightSleep"], untyped.data["remSleep"]) == (51, 286, 50)


def test_a_sleep_turned_into_a_tombstone_is_deleted(oura: OuraEmulator, alice: Persona) -> None:
    oura.put("sleep", copy.deepcopy(LONG_SLEEP))
    oura.put("sleep", copy.deepcopy(EVENING_SLEEP))
    connection, _ = connect_and_sync(oura, alice)
    oura.change("sleep", EVENING_SLEEP["id"], type="deleted")
    Connection.objects.filter(pk=connection.pk).update(cursor={})  # read the history again

    run = connection_sync(connection_id=connection.pk, http=ProviderHttp(sleep=lambda s: None))

    assert run is not None and run.counts["sleeps"]["deleted"] == 1
    assert set(stored(connection, "sleeps")) == {LONG_SLEEP["id"]}


# --- workouts -----------------------------------------------------------------------------------


def test_documented_workouts_keep_their_instants_whatever_offset_each_end_has(
    oura: OuraEmulator, alice: Persona
) -> None:
    for item in WORKOUTS:
        oura.put("workout", copy.deepcopy(item))
    connection, run = connect_and_sync(oura, alice)

    assert run.outcome == SyncOutcome.SUCCEEDED, run.error
    workouts = {k: record_json(r) for k, r in stored(connection, "activities").items()}
    morning, utc, mixed = (workouts[w["id"]] for w in WORKOUTS)
    assert (morning["startTime"], morning["endTime"], morning["tzOffset"]) == (
        "2024-10-09T07:07:00.000Z",
        "2024-10-09T07:18:00.000Z",
        "+02:00",
    )
    assert (morning["duration"], morning["distance"], morning["calories"], morning["steps"]) == (
        660,
        None,
        21.967,
        None,
    )
    assert morning["type"] == "walking"
    assert (utc["startTime"], utc["tzOffset"], utc["duration"]) == ("2024-10-09T16:49:00.000Z", "+00:00", 2640)
    assert utc["distance"] == 269.87872314453125 and utc["calories"] == 87.868
    assert (mixed["startTime"], mixed["endTime"]) == ("2024-10-15T16:45:00.000Z", "2024-10-15T16:57:00.000Z")
    assert (mixed["duration"], mixed["tzOffset"]) == (720, "+02:00")
    assert mixed["sourceData"]["intensity"] == "easy" and mixed["sourceData"]["source"] == "confirmed"
    days = {r.external_id: r.local_day for r in stored(connection, "activities").values()}
    assert days == {
        WORKOUTS[0]["id"]: date(2024, 10, 9),
        WORKOUTS[1]["id"]: date(2024, 10, 9),
        WORKOUTS[2]["id"]: date(2024, 10, 15),
    }


# --- SpO2 ---------------------------------------------------------------------------------------


def test_documented_spo2_averages_are_readings_of_their_day(oura: OuraEmulator, alice: Persona) -> None:
    for item in SPO2:
        oura.put("daily_spo2", copy.deepcopy(item))
    connection, run = connect_and_sync(oura, alice)

    assert run.outcome == SyncOutcome.SUCCEEDED, run.error
    readings = stored(connection, "blood_oxygen")
    assert set(readings) == {SPO2[0]["id"], SPO2[1]["id"]}  # the null one is no reading
    first = readings[SPO2[0]["id"]]
    assert (first.value, first.data) == (98.072, {"value": 98.072, "unit": "%"})
    assert (first.local_day, first.start_time, first.tz_offset) == (
        date(2024, 11, 11),
        datetime(2024, 11, 11, tzinfo=UTC),
        0,
    )
    assert first.source_data["breathing_disturbance_index"] == 15
    served = access_client(alice.human).get("/v1/human/blood_oxygen/readings/daily/2024-11-12").json()
    assert [(r["value"], r["unit"]) for r in served] == [(96.153, "%")]


# --- heart rate ---------------------------------------------------------------------------------


def test_documented_heart_rate_samples_are_utc_readings_one_per_source(oura: OuraEmulator, alice: Persona) -> None:
    oura.heart_rate = copy.deepcopy(HEART_RATE)
    connection, run = connect_and_sync(oura, alice)

    assert run.outcome == SyncOutcome.SUCCEEDED, run.error
    readings = {
        (record_json(r)["timestamp"], r.value, r.source_data["source"])
        for r in stored(connection, "heart_rate").values()
    }
    assert readings == {
        ("2024-12-13T12:31:21.000Z", 91.0, "awake"),
        ("2024-12-13T14:34:31.000Z", 89.0, "rest"),
        ("2024-12-13T18:47:08.000Z", 92.0, "awake"),  # the same second, two sources: both kept
        ("2024-12-13T18:47:08.000Z", 107.0, "workout"),
    }
    assert {r.tz_offset for r in stored(connection, "heart_rate").values()} == {0}
    served = access_client(alice.human).get("/v1/human/heart_rate/readings/daily/2024-12-13").json()
    assert sorted(r["value"] for r in served) == [89, 91, 92, 107] and {r["unit"] for r in served} == {"bpm"}


# --- shapes the sources disagree on -------------------------------------------------------------


@pytest.mark.parametrize(
    ("meta", "heart_rate_unix", "omit_null_next_token"),
    [
        pytest.param(False, False, False, id="as-recorded"),
        pytest.param(False, True, False, id="timestamp_unix"),
        pytest.param(True, True, False, id="with-meta"),
        pytest.param(False, True, True, id="no-next_token"),
    ],
)
def test_every_published_shape_reads_the_same(
    oura: OuraEmulator, alice: Persona, meta: bool, heart_rate_unix: bool, omit_null_next_token: bool
) -> None:
    oura.meta, oura.heart_rate_unix, oura.omit_null_next_token = meta, heart_rate_unix, omit_null_next_token
    oura.put("daily_activity", copy.deepcopy(DAILY_ACTIVITY))
    oura.put("sleep", copy.deepcopy(LONG_SLEEP))
    oura.put("workout", copy.deepcopy(WORKOUTS[0]))
    oura.put("daily_spo2", copy.deepcopy(SPO2[0]))
    oura.put("daily_readiness", copy.deepcopy(READINESS))
    oura.put("vO2_max", copy.deepcopy(VO2_MAX))
    oura.heart_rate = copy.deepcopy(HEART_RATE)
    connection, run = connect_and_sync(oura, alice)

    assert run.outcome == SyncOutcome.SUCCEEDED, run.error
    assert stored(connection, "body_temperature")[READINESS["id"]].data["deviation"] == 0.1
    assert stored(connection, "vo2_max")[VO2_MAX["id"]].value == 62
    assert stored(connection, "resting_heart_rate")[LONG_SLEEP["id"]].value == 60
    summary = stored(connection, "activity_summaries")["2024-11-11"]
    assert (summary.data["steps"], summary.start_time) == (15185, datetime(2024, 11, 10, 23, 0, tzinfo=UTC))
    assert stored(connection, "sleeps")[LONG_SLEEP["id"]].data["timeAsleep"] == 387
    assert stored(connection, "activities")[WORKOUTS[0]["id"]].data["duration"] == 660
    assert stored(connection, "blood_oxygen")[SPO2[0]["id"]].value == 98.072
    beats = stored(connection, "heart_rate")
    assert len(beats) == 4
    assert ("timestamp_unix" in beats["hr-2024-12-13T18:47:08Z-workout"].source_data) is heart_rate_unix
    if heart_rate_unix:
        assert beats["hr-2024-12-13T18:47:08Z-workout"].source_data["timestamp_unix"] == 1734115628000
    assert ("meta" in summary.source_data) is meta
