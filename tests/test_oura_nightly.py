"""The night's measures, body temperature and VO2 max of an Oura ring: documented payloads served
by the emulator over HTTP, synced through the real engine, and the stored and served readings
checked field by field against values worked out by hand from the documentation
(docs/providers/oura.md, "Readings of the night, temperature, VO2 max").

Where each value comes from (OpenAPI PublicModifiedSleepModel, PublicDailyReadiness,
PublicVO2Max; Oura's help center for the units and the app's definitions):
- resting heart rate: the lowest of a long sleep's 5-minute `heart_rate` samples, bpm (the
  OpenAPI note: `lowest_heart_rate` is a 30-second value that differs from the app's, which shows
  the minimum of the 5-minute samples); `lowest_heart_rate` only when there are no samples;
- heart-rate variability: `average_hrv`, RMSSD in ms;
- respiratory rate: `average_breath`, breaths per minute;
  all three of the long sleep only, at `bedtime_end`, filed under the sleep's `day`;
- body temperature: no measured value; `deviation` = daily_readiness `temperature_deviation`, °C,
  at the document's `timestamp`, filed under `day`;
- VO2 max: `vo2_max`, mL/kg/min, at `timestamp`, filed under `day`.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from datetime import UTC, date, datetime
from typing import Any

import pytest
from django.utils import timezone

from data_api.records import record_json
from sources.http import ProviderHttp
from sources.models import Connection, SyncOutcome
from sources.sync import connection_sync
from tests.conftest import Persona
from tests.data_api_helpers import access_client
from tests.emulators.oura import OuraEmulator
from tests.test_oura_documented import EVENING_SLEEP, LONG_SLEEP, connect_and_sync, sleep, stored

pytestmark = pytest.mark.django_db(transaction=True)

NIGHT = ("resting_heart_rate", "heart_rate_variability", "respiratory_rate")

# The nap of 2024-10-10, 12:47:30 to 13:43:30 CEST, as recorded (multiple_sleep): it has heart
# rate, HRV and breathing values of its own, but it is not the night.
NAP = sleep(
    "b1d2e3f4-0007-4a5b-8c6d-7e8f9a0b1c2d",
    average_breath=15.375,
    average_heart_rate=72.875,
    average_hrv=23,
    awake_time=780,
    bedtime_end="2024-10-10T13:43:30+02:00",
    bedtime_start="2024-10-10T12:47:30+02:00",
    day="2024-10-10",
    deep_sleep_duration=270,
    efficiency=77,
    heart_rate={
        "interval": 300.0,
        "items": [74.0, 74.0, 75.0, 75.0, 73.0, 72.0, None, None, None, None, None],
        "timestamp": "2024-10-10T12:47:30.000+02:00",
    },
    hrv=None,
    latency=300,
    light_sleep_duration=2310,
    lowest_heart_rate=72,
    period=1,
    readiness_score_delta=5,
    rem_sleep_duration=0,
    restless_periods=9,
    sleep_phase_5_min="422442222224",
    sleep_score_delta=6,
    time_in_bed=3360,
    total_sleep_duration=2580,
    type="sleep",
)

# daily_readiness of 2024-11-11 and 2024-11-12 as recorded (multiple_daily_readiness): a user in
# Central European Time, yet every `timestamp` is the day's 00:00 at +00:00.
READINESS: list[dict[str, Any]] = [
    {
        "id": "93b2a8ec-0001-49bf-84f5-d06a77873f25",
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
    },
    {
        "id": "d90a1159-0002-49e4-b668-78ebf7463f8a",
        "contributors": {
            "activity_balance": 93,
            "body_temperature": 95,
            "hrv_balance": 90,
            "previous_day_activity": 70,
            "previous_night": 93,
            "recovery_index": 71,
            "resting_heart_rate": 93,
            "sleep_balance": 97,
        },
        "day": "2024-11-12",
        "score": 87,
        "temperature_deviation": -0.29,
        "temperature_trend_deviation": -0.03,
        "timestamp": "2024-11-12T00:00:00+00:00",
    },
]

# The VO2 max document of the recorded answer (multiple_vo2_max), in OpenAPI 1.29's shape: an
# integer, and a `timestamp` in UTC written with `Z`.
VO2_MAX: dict[str, Any] = {
    "id": "7c4d1981-ad05-4f24-b2c7-9ac826936555",
    "day": "2023-09-17",
    "timestamp": "2023-09-17T14:15:22Z",
    "vo2_max": 62,
}


@pytest.fixture
def ring(settings: Any) -> Iterator[OuraEmulator]:
    """The emulator, with a history reaching back to 2024-10-01."""
    yield from _ring(settings, date(2024, 10, 1))


@pytest.fixture
def long_ring(settings: Any) -> Iterator[OuraEmulator]:
    """The emulator, with a history reaching back to the recorded VO2 max of 2023-09-17."""
    yield from _ring(settings, date(2023, 9, 1))


def _ring(settings: Any, earliest: date) -> Iterator[OuraEmulator]:
    emulator = OuraEmulator(page_size=10)
    emulator.start()
    settings.SOURCE_SETTINGS = emulator.source_settings((timezone.now().date() - earliest).days)
    settings.PROVIDER_RETRY_ATTEMPTS = 1
    yield emulator
    emulator.stop()


def served(persona: Persona, kind: str, day: str) -> list[dict[str, Any]]:
    answer = access_client(persona.human).get(f"/v1/human/{kind}/readings/daily/{day}")
    assert answer.status_code == 200, answer.content
    return list(answer.json())


# --- sleep stages -------------------------------------------------------------------------------


def test_each_sleep_has_its_stages_in_minutes(ring: OuraEmulator, alice: Persona) -> None:
    for item in (LONG_SLEEP, NAP, EVENING_SLEEP):
        ring.put("sleep", copy.deepcopy(item))
    connection, run = connect_and_sync(ring, alice)

    assert run.outcome == SyncOutcome.SUCCEEDED, run.error
    stages = {
        ident: tuple(r.data[k] for k in ("deepSleep", "lightSleep", "remSleep", "timeAwake"))
        for ident, r in stored(connection, "sleeps").items()
    }
    assert stages == {
        # 3060 s, 17160 s, 3000 s, 5713 s (95.2 min)
        LONG_SLEEP["id"]: (51, 286, 50, 95),
        # 270 s = 4.5 min and 2310 s = 38.5 min, rounded half to even; 0 s; 780 s
        NAP["id"]: (4, 38, 0, 13),
        # 0 s, 30 s = 0.5 min (to even: 0), 0 s, 931 s = 15.5 min (to even: 16)
        EVENING_SLEEP["id"]: (0, 0, 0, 16),
    }
    night = access_client(alice.human).get("/v1/human/sleeps/daily/2024-10-10").json()
    long_one = next(s for s in night if s["mainSleep"])
    assert (long_one["deepSleep"], long_one["lightSleep"], long_one["remSleep"]) == (51, 286, 50)


def test_unknown_stages_are_none(ring: OuraEmulator, alice: Persona) -> None:
    ring.put(
        "sleep",
        sleep(
            "b1d2e3f4-0008-4a5b-8c6d-7e8f9a0b1c2d",
            deep_sleep_duration=None,
            light_sleep_duration=None,
            rem_sleep_duration=None,
            awake_time=None,
        ),
    )
    connection, run = connect_and_sync(ring, alice)

    assert run.outcome == SyncOutcome.SUCCEEDED, run.error
    (record,) = stored(connection, "sleeps").values()
    assert [record.data[k] for k in ("deepSleep", "lightSleep", "remSleep", "timeAwake")] == [None] * 4


# --- the night's readings -----------------------------------------------------------------------


def test_the_long_sleep_gives_the_nights_readings_at_its_end(ring: OuraEmulator, alice: Persona) -> None:
    for item in (LONG_SLEEP, NAP, EVENING_SLEEP):
        ring.put("sleep", copy.deepcopy(item))
    connection, run = connect_and_sync(ring, alice)

    assert run.outcome == SyncOutcome.SUCCEEDED, run.error
    expected = {
        "resting_heart_rate": (60, "bpm"),  # the lowest of the 96 five-minute samples
        "heart_rate_variability": (38, "ms"),  # average_hrv
        "respiratory_rate": (14.5, "breaths/min"),  # average_breath
    }
    for kind, (value, unit) in expected.items():
        readings = stored(connection, kind)
        assert set(readings) == {LONG_SLEEP["id"]}, kind  # the naps give none
        (record,) = readings.values()
        assert (record.value, record.data) == (value, {"value": value, "unit": unit})
        # bedtime_end 2024-10-10T09:04:12+02:00, the sleep's day 2024-10-10
        assert record.start_time == datetime(2024, 10, 10, 7, 4, 12, tzinfo=UTC)
        assert (record.tz_offset, record.local_day) == (120, date(2024, 10, 10))
        (body,) = served(alice, kind, "2024-10-10")
        assert (body["timestamp"], body["tzOffset"], body["value"], body["unit"]) == (
            "2024-10-10T07:04:12.000Z",
            "+02:00",
            value,
            unit,
        )
    assert stored(connection, "resting_heart_rate")[LONG_SLEEP["id"]].source_data["lowest_heart_rate"] == 60
    assert run.counts["resting_heart_rate"]["created"] == 1


def test_resting_heart_rate_is_the_lowest_5_minute_sample_not_the_30_second_minimum(
    ring: OuraEmulator, alice: Persona
) -> None:
    # The OpenAPI note: lowest_heart_rate (30-second samples) differs from the app, which shows the
    # minimum of the 5-minute samples. Here the 30-second minimum is 57; the 5-minute one is 60.
    ring.put("sleep", sleep(LONG_SLEEP["id"], lowest_heart_rate=57))
    # A long sleep without samples: lowest_heart_rate (58) is all there is.
    ring.put(
        "sleep",
        sleep(
            "b1d2e3f4-0009-4a5b-8c6d-7e8f9a0b1c2d",
            bedtime_start="2024-10-11T00:40:02+02:00",
            bedtime_end="2024-10-11T09:13:39+02:00",
            day="2024-10-11",
            heart_rate=None,
            lowest_heart_rate=58,
        ),
    )
    # A long sleep without samples whose lowest_heart_rate is 255, the recorded "none".
    ring.put(
        "sleep",
        sleep(
            "b1d2e3f4-0010-4a5b-8c6d-7e8f9a0b1c2d",
            bedtime_start="2024-10-12T03:17:00+02:00",
            bedtime_end="2024-10-12T12:41:05+02:00",
            day="2024-10-12",
            heart_rate=None,
            lowest_heart_rate=255,
        ),
    )
    connection, run = connect_and_sync(ring, alice)

    assert run.outcome == SyncOutcome.SUCCEEDED, run.error
    values = {ident: r.value for ident, r in stored(connection, "resting_heart_rate").items()}
    assert values == {LONG_SLEEP["id"]: 60, "b1d2e3f4-0009-4a5b-8c6d-7e8f9a0b1c2d": 58}
    assert not run.unreadable


def test_a_night_without_hrv_or_breathing_values_has_no_such_readings(ring: OuraEmulator, alice: Persona) -> None:
    ring.put("sleep", sleep(LONG_SLEEP["id"], average_hrv=None, average_breath=None))
    connection, run = connect_and_sync(ring, alice)

    assert run.outcome == SyncOutcome.SUCCEEDED, run.error
    assert not stored(connection, "heart_rate_variability") and not stored(connection, "respiratory_rate")
    assert set(stored(connection, "resting_heart_rate")) == {LONG_SLEEP["id"]}


def test_a_malformed_value_is_unreadable_alone_and_a_malformed_night_takes_its_readings(
    ring: OuraEmulator, alice: Persona
) -> None:
    ring.put("sleep", sleep(LONG_SLEEP["id"], average_hrv="38"))
    ring.put(
        "sleep",
        sleep(
            "b1d2e3f4-0011-4a5b-8c6d-7e8f9a0b1c2d",
            day="2024-10-11",
            bedtime_start="2024-10-11T00:40:02+02:00",
            bedtime_end="soon",
        ),
    )
    connection, run = connect_and_sync(ring, alice)

    assert run.outcome == SyncOutcome.PARTIAL
    assert run.unreadable == {
        "heart_rate_variability": [
            "sleep: average_hrv is not a number",
            "sleep: bedtime_end is not an ISO 8601 timestamp",
        ],
        "resting_heart_rate": ["sleep: bedtime_end is not an ISO 8601 timestamp"],
        "respiratory_rate": ["sleep: bedtime_end is not an ISO 8601 timestamp"],
        "sleeps": ["sleep: bedtime_end is not an ISO 8601 timestamp"],
    }
    assert set(stored(connection, "sleeps")) == {LONG_SLEEP["id"]}
    assert set(stored(connection, "resting_heart_rate")) == {LONG_SLEEP["id"]}
    assert not stored(connection, "heart_rate_variability")


def test_a_night_turned_into_a_tombstone_loses_its_readings(ring: OuraEmulator, alice: Persona) -> None:
    ring.put("sleep", copy.deepcopy(LONG_SLEEP))
    ring.put("sleep", sleep("b1d2e3f4-0012-4a5b-8c6d-7e8f9a0b1c2d", day="2024-10-11"))
    connection, _ = connect_and_sync(ring, alice)
    assert len(stored(connection, "heart_rate_variability")) == 2
    ring.change("sleep", LONG_SLEEP["id"], type="deleted")
    Connection.objects.filter(pk=connection.pk).update(cursor={})  # read the history again

    run = connection_sync(connection_id=connection.pk, http=ProviderHttp(sleep=lambda s: None))

    assert run is not None
    for kind in ("sleeps", *NIGHT):
        assert run.counts[kind]["deleted"] == 1, kind
        assert set(stored(connection, kind)) == {"b1d2e3f4-0012-4a5b-8c6d-7e8f9a0b1c2d"}, kind


# --- body temperature ---------------------------------------------------------------------------


def test_readiness_gives_the_nights_temperature_deviation_and_no_temperature(
    ring: OuraEmulator, alice: Persona
) -> None:
    for item in READINESS:
        ring.put("daily_readiness", copy.deepcopy(item))
    connection, run = connect_and_sync(ring, alice)

    assert run.outcome == SyncOutcome.SUCCEEDED, run.error
    readings = stored(connection, "body_temperature")
    first, second = (readings[item["id"]] for item in READINESS)
    assert (first.value, first.data) == (None, {"value": None, "unit": "°C", "deviation": 0.1})
    assert (first.start_time, first.tz_offset, first.local_day) == (
        datetime(2024, 11, 11, tzinfo=UTC),
        0,
        date(2024, 11, 11),
    )
    assert second.data["deviation"] == -0.29 and second.local_day == date(2024, 11, 12)
    assert first.source_data["temperature_trend_deviation"] == 0.13
    assert first.source_data["contributors"]["body_temperature"] == 97  # a score, not a temperature
    (body,) = served(alice, "body_temperature", "2024-11-12")
    assert (body["value"], body["deviation"], body["unit"], body["timestamp"], body["tzOffset"]) == (
        None,
        -0.29,
        "°C",
        "2024-11-12T00:00:00.000Z",
        "+00:00",
    )


@pytest.mark.parametrize(
    "shape",
    [
        pytest.param({"temperature_deviation": None}, id="null"),  # OpenAPI 1.27/1.28: required, nullable
        pytest.param("absent", id="absent"),  # OpenAPI 1.29 and later: optional
    ],
)
def test_a_readiness_without_a_deviation_is_no_reading(
    ring: OuraEmulator, alice: Persona, shape: dict[str, Any] | str
) -> None:
    item = copy.deepcopy(READINESS[0])
    if shape == "absent":
        del item["temperature_deviation"], item["temperature_trend_deviation"]
    else:
        assert isinstance(shape, dict)
        item.update(shape)
    ring.put("daily_readiness", item)
    ring.put("daily_readiness", copy.deepcopy(READINESS[1]))
    connection, run = connect_and_sync(ring, alice)

    assert run.outcome == SyncOutcome.SUCCEEDED, run.error
    assert set(stored(connection, "body_temperature")) == {READINESS[1]["id"]}
    assert not run.unreadable


def test_a_readiness_that_cant_be_dated_is_unreadable(ring: OuraEmulator, alice: Persona) -> None:
    ring.put("daily_readiness", {**copy.deepcopy(READINESS[0]), "timestamp": "2024-11-11T00:00:00"})
    connection, run = connect_and_sync(ring, alice)

    assert run.outcome == SyncOutcome.PARTIAL
    assert run.unreadable == {"body_temperature": ["daily_readiness: timestamp has no UTC offset"]}
    assert not stored(connection, "body_temperature")


# --- VO2 max ------------------------------------------------------------------------------------


def test_the_recorded_vo2_max_estimate_is_a_reading_of_its_day(long_ring: OuraEmulator, alice: Persona) -> None:
    long_ring.put("vO2_max", copy.deepcopy(VO2_MAX))
    connection, run = connect_and_sync(long_ring, alice)

    assert run.outcome == SyncOutcome.SUCCEEDED, run.error
    (record,) = stored(connection, "vo2_max").values()
    assert (record.external_id, record.value, record.data) == (
        VO2_MAX["id"],
        62,
        {"value": 62, "unit": "mL/kg/min"},
    )
    assert (record.start_time, record.tz_offset, record.local_day) == (
        datetime(2023, 9, 17, 14, 15, 22, tzinfo=UTC),
        0,
        date(2023, 9, 17),
    )
    assert record_json(record)["timestamp"] == "2023-09-17T14:15:22.000Z"
    (body,) = served(alice, "vo2_max", "2023-09-17")
    assert (body["value"], body["unit"]) == (62, "mL/kg/min")


def vo2(ident: str, day: str, value: float | None) -> dict[str, Any]:
    return {"id": ident, "day": day, "timestamp": f"{day}T18:20:00+01:00", "vo2_max": value}


def test_vo2_max_in_the_older_schemas_shapes(ring: OuraEmulator, alice: Persona) -> None:
    # OpenAPI 1.27/1.28 (VO2MaxModel): a number or null; a local timestamp with its offset.
    ring.put(
        "vO2_max",
        {"id": "vo2-0001", "day": "2024-11-11", "timestamp": "2024-11-11T18:20:00+01:00", "vo2_max": 41.5},
    )
    ring.put(
        "vO2_max", {"id": "vo2-0002", "day": "2024-11-12", "timestamp": "2024-11-12T18:20:00+01:00", "vo2_max": None}
    )
    connection, run = connect_and_sync(ring, alice)

    assert run.outcome == SyncOutcome.SUCCEEDED, run.error
    (record,) = stored(connection, "vo2_max").values()
    assert (record.external_id, record.value, record.data["unit"]) == ("vo2-0001", 41.5, "mL/kg/min")
    assert (record.start_time, record.tz_offset, record.local_day) == (
        datetime(2024, 11, 11, 17, 20, tzinfo=UTC),
        60,
        date(2024, 11, 11),
    )
    assert not run.unreadable


# --- each new collection fails alone ------------------------------------------------------------


def test_vo2_max_without_the_heart_health_scope_fails_alone(ring: OuraEmulator, alice: Persona) -> None:
    ring.unticked = {"heart_health"}
    ring.put(
        "vO2_max", {"id": "vo2-0001", "day": "2024-11-11", "timestamp": "2024-11-11T18:20:00+01:00", "vo2_max": 44}
    )
    ring.put("daily_readiness", copy.deepcopy(READINESS[0]))
    ring.put("sleep", copy.deepcopy(LONG_SLEEP))
    connection, run = connect_and_sync(ring, alice)

    assert run.outcome == SyncOutcome.PARTIAL
    assert set(run.failures) == {"vo2_max"} and "403" in run.failures["vo2_max"]
    assert "vO2_max" not in Connection.objects.get(pk=connection.pk).cursor  # retried next run
    assert len(stored(connection, "body_temperature")) == 1
    assert all(len(stored(connection, kind)) == 1 for kind in NIGHT)


def test_a_missing_readiness_collection_fails_body_temperature_alone(ring: OuraEmulator, alice: Persona) -> None:
    ring.missing = {"daily_readiness"}
    ring.put("sleep", copy.deepcopy(LONG_SLEEP))
    connection, run = connect_and_sync(ring, alice)

    assert run.outcome == SyncOutcome.PARTIAL
    assert set(run.failures) == {"body_temperature"} and "404" in run.failures["body_temperature"]
    assert all(len(stored(connection, kind)) == 1 for kind in NIGHT)
