"""Withings' documented and published payloads, served by the emulator over HTTP, synced through
the engine, and checked field by field against values worked out by hand.

The payloads are the API reference's schema examples (developer.withings.com/api-reference) and
replies published by public clients (python-withings' test fixtures, captured from the API), as
listed in docs/providers/withings.md. Expected values are computed here from the reference's
rules: value * 10^unit, epoch seconds, the row's IANA `timezone`, the day Withings gives in `date`.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from typing import Any

import pytest

from connect.models import Human
from data_api.models import Record
from sources.http import ProviderHttp
from sources.models import Connection, SyncOutcome
from sources.services import connection_store
from sources.sync import connection_sync
from tests.data_api_helpers import access_client, stored_records
from tests.emulators.withings import WithingsEmulator
from tests.factories import Persona
from tests.test_withings import REDIRECT_URI, consent, plugin

# --- getmeas -------------------------------------------------------------------------------------
# API reference, measuregrp_object / measure_object examples (its `category` example is a
# timestamp, a slip of the page: 1 is "real measures").
REFERENCE_GROUP = {
    "grpid": 12,
    "attrib": 1,
    "date": 1594245600,
    "created": 1594246600,
    "modified": 1594257200,
    "category": 1,
    "deviceid": "892359876fd8805ac45bab078c4828692f0276b1",
    "hash_deviceid": "892359876fd8805ac45bab078c4828692f0276b1",
    "measures": [{"value": 65750, "type": 1, "unit": -3, "algo": 3425, "position": 1}],
    "model": "Body Cardio",
    "model_id": 6,
    "comment": "A measurement comment",
}
# python-withings tests/fixtures/measurement_list.json: a height and a weight typed in by hand
# (attrib 2, no device), and a BPM Connect reading with its values in hundredths (unit -2).
MANUAL_HEIGHT = {
    "grpid": 2726375354,
    "attrib": 2,
    "date": 1620237216,
    "created": 1620237217,
    "modified": 1620237217,
    "category": 1,
    "deviceid": None,
    "hash_deviceid": None,
    "measures": [{"value": 1600, "type": 4, "unit": -3, "algo": 0, "fm": 128}],
    "modelid": None,
    "model": None,
    "comment": None,
}
MANUAL_WEIGHT = {
    **MANUAL_HEIGHT,
    "grpid": 2726375351,
    "measures": [{"value": 56300, "type": 1, "unit": -3, "algo": 0, "fm": 128}],
}
BPM_CONNECT = {
    "grpid": 2726388728,
    "attrib": 17,
    "date": 1620039631,
    "created": 1620237692,
    "modified": 1620237692,
    "category": 1,
    "deviceid": "91a7e556c2022ef54dca6e07a853c3193734d148",
    "hash_deviceid": "91a7e556c2022ef54dca6e07a853c3193734d148",
    "measures": [
        {"value": 10600, "type": 9, "unit": -2, "algo": 0, "fm": 128},
        {"value": 14300, "type": 10, "unit": -2, "algo": 0, "fm": 128},
        {"value": 8200, "type": 11, "unit": -2, "algo": 0, "fm": 128},
    ],
    "modelid": 45,
    "model": "BPM Connect",
    "comment": None,
}
# cjoshmartin/api-oauth2-python tests/sample_weight_data.py: a scale's weight, fat mass and fat ratio.
SCALE_WITH_FAT = {
    "grpid": 3415696183,
    "attrib": 0,
    "date": 1645943416,
    "created": 1646027958,
    "modified": 1646027958,
    "category": 1,
    "deviceid": "c57e2809f962b56b9c98c428e0240e16dba37d2f",
    "hash_deviceid": "c57e2809f962b56b9c98c428e0240e16dba37d2f",
    "measures": [
        {"algo": 0, "fm": 131, "type": 1, "unit": -3, "value": 110100},
        {"algo": 0, "fm": 131, "type": 8, "unit": -2, "value": 1730},
        {"type": 6, "unit": -3, "value": 15713},
    ],
    "comment": None,
}

# --- getworkouts ---------------------------------------------------------------------------------
# API reference, workout_object examples (category 36 "Other"; the page gives no `data` example).
REFERENCE_WORKOUT = {
    "id": 12345,
    "category": 36,
    "timezone": "Europe/Paris",
    "model": 59,
    "attrib": 0,
    "startdate": 1594245600,
    "enddate": 1594257200,
    "date": "2020-07-09",
    "modified": 1594257200,
    "deviceid": "892359876fd8805ac45bab078c4828692f0276b1",
    "data": {},
}
# python-withings tests/fixtures/workouts.json: a walk synced from Google Fit, with a pause and
# typed-in values, and one with nothing but a null.
WALK = {
    "id": 3661300277,
    "category": 1,
    "timezone": "Europe/Amsterdam",
    "model": 1055,
    "attrib": 0,
    "startdate": 1693336011,
    "enddate": 1693336513,
    "date": "2023-08-29",
    "deviceid": None,
    "data": {
        "calories": 47,
        "intensity": 30,
        "manual_distance": 60,
        "manual_calories": 70,
        "hr_average": 80,
        "hr_min": 70,
        "hr_max": 80,
        "pause_duration": 80,
        "steps": 779,
        "distance": 680,
        "elevation": 10,
        "algo_pause_duration": None,
        "spo2_average": 15,
    },
    "modified": 1693481873,
}
BARE_WALK = {
    "id": 3661300290,
    "category": 1,
    "timezone": "Europe/Amsterdam",
    "model": 1055,
    "attrib": 0,
    "startdate": 1693469307,
    "enddate": 1693469924,
    "date": "2023-08-31",
    "deviceid": None,
    "data": {"algo_pause_duration": None},
    "modified": 1693481873,
}

# --- getsummary ----------------------------------------------------------------------------------
# python-withings tests/fixtures/sleep_summary_no_datafields.json / sleep_summary.json: two nights
# on a Sleep Analyzer (model 32), efficiency as a 0-1 ratio.
NIGHT_1 = {
    "id": 2081804182,
    "timezone": "Europe/Paris",
    "model": 32,
    "model_id": 63,
    "hash_deviceid": "201d0b9a0556d6b755166b2cf8d22d3bdf0487ee",
    "startdate": 1618691453,
    "enddate": 1618713173,
    "date": "2021-04-18",
    "data": {
        "wakeupduration": 3060,
        "wakeupcount": 1,
        "durationtosleep": 540,
        "remsleepduration": 2400,
        "durationtowakeup": 1140,
        "total_timeinbed": 21720,
        "total_sleep_time": 18660,
        "sleep_efficiency": 0.86,
        "sleep_latency": 540,
        "wakeup_latency": 1140,
        "waso": 1380,
        "nb_rem_episodes": 1,
        "out_of_bed_count": 0,
        "lightsleepduration": 10440,
        "deepsleepduration": 5820,
        "hr_average": 103,
        "sleep_score": 37,
    },
    "created": 1620237476,
    "modified": 1620237476,
}
NIGHT_2 = {
    **NIGHT_1,
    "id": 2081804265,
    "startdate": 1618605055,
    "enddate": 1618636975,
    "date": "2021-04-17",
    "data": {
        "wakeupduration": 4500,
        "wakeupcount": 4,
        "total_timeinbed": 31920,
        "total_sleep_time": 27420,
        "sleep_efficiency": 0.86,
        "sleep_latency": 1080,
        "lightsleepduration": 17880,
        "deepsleepduration": 5400,
        "remsleepduration": 4140,
    },
    "created": 1620237480,
    "modified": 1620237479,
}
# api-evangelist/withings examples/withings-sleep-summary-example.json: efficiency as a percentage.
PERCENT_NIGHT = {
    "id": 987654321,
    "timezone": "Europe/Paris",
    "model": 63,
    "model_id": 60,
    "startdate": 1589932800,
    "enddate": 1589961600,
    "date": "2020-05-20",
    "created": 1589961700,
    "modified": 1589961700,
    "data": {
        "sleep_efficiency": 85,
        "sleep_latency": 12,
        "total_sleep_time": 25200,
        "total_timeinbed": 28800,
        "wakeupcount": 2,
        "deepsleepduration": 5400,
        "lightsleepduration": 10800,
        "remsleepduration": 7200,
        "wakeupduration": 1800,
    },
}
# The reference: a night from an external source has `asleepduration` and null stages; the
# `timezone` may be null (metriport's reading of the replies). A night in Tokyo, 23:00-08:30.
EXTERNAL_NIGHT = {
    "id": 555000111,
    "timezone": None,
    "model": 16,
    "startdate": 1618927200,
    "enddate": 1618961400,
    "date": "2021-04-21",
    "created": 1618962000,
    "modified": 1618962000,
    "data": {
        "asleepduration": 30600,
        "lightsleepduration": None,
        "deepsleepduration": None,
        "remsleepduration": None,
        "total_timeinbed": 34200,
    },
}

# --- getactivity ---------------------------------------------------------------------------------
# python-withings tests/fixtures/activity.json: two days counted by a phone (Google Fit: brand 18,
# no Withings tracker, no device id).
PHONE_DAY_1 = {
    "steps": 1209,
    "distance": 1028.559,
    "elevation": 0,
    "soft": 1864,
    "moderate": 292,
    "intense": 0,
    "active": 292,
    "calories": 85.497,
    "totalcalories": 2303.788,
    "hr_average": 80,
    "hr_min": 70,
    "hr_max": 80,
    "deviceid": None,
    "hash_deviceid": None,
    "timezone": "Europe/Amsterdam",
    "date": "2023-10-20",
    "modified": 1697884856,
    "brand": 18,
    "modelid": 1055,
    "model": "GoogleFit tracker",
    "is_tracker": False,
}
PHONE_DAY_2 = {
    **PHONE_DAY_1,
    "steps": 1155,
    "distance": 1020.121,
    "soft": 1516,
    "moderate": 287,
    "intense": 420,
    "active": 707,
    "calories": 134.132,
    "totalcalories": 2357.149,
    "date": "2023-10-21",
    "modified": 1697887349,
}
# API reference, activity_object examples.
REFERENCE_DAY = {
    "date": "2020-06-24",
    "timezone": "Europe/Paris",
    "deviceid": "892359876fd8805ac45bab078c4828692f0276b1",
    "hash_deviceid": "892359876fd8805ac45bab078c4828692f0276b1",
    "brand": 18,
    "is_tracker": True,
    "modified": 1594257200,
    "model": "Pulse HR",
    "modelid": 59,
    "steps": 6200,
    "distance": 3000,
    "elevation": 100,
    "soft": 800,
    "moderate": 1000,
    "intense": 700,
    "active": 2300,
    "calories": 1200,
    "totalcalories": 3500,
    "hr_average": 80,
    "hr_min": 70,
    "hr_max": 80,
}


@pytest.fixture
def withings(settings: Any) -> Iterator[WithingsEmulator]:
    emulator = WithingsEmulator(page_size=3, timezone="Europe/Amsterdam").start()
    # History back to the examples.
    settings.SOURCE_SETTINGS = emulator.source_settings((date.today() - date(2020, 1, 1)).days)
    settings.PROVIDER_RETRY_ATTEMPTS = 3
    settings.PROVIDER_RETRY_MAX_WAIT = 5
    yield emulator
    emulator.stop()


def connect_and_sync(human: Human) -> Connection:
    credentials = plugin().exchange_code(
        code=consent(), redirect_uri=REDIRECT_URI, code_verifier=None, http=ProviderHttp()
    )
    connection = connection_store(human=human, slug="withings", credentials=credentials, request=None)
    run = connection_sync(connection_id=connection.pk)
    assert run is not None and run.outcome == SyncOutcome.SUCCEEDED, (run and run.error, run and run.unreadable)
    return connection


def one(connection: Connection, kind: str, external_id: int | str) -> Any:
    """The stored record of this type and provider id (whichever store holds the type)."""
    [found] = [r for r in stored_records(kind, connection=connection) if r.external_id == str(external_id)]
    return found


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def served(human: Human, path: str, **params: Any) -> Any:
    response = access_client(human).get(f"/v1/human/{path}", params)
    assert response.status_code == 200, response.content
    return response.json()


@pytest.mark.django_db(transaction=True)
def test_measure_groups_read_value_times_ten_to_the_unit_in_the_zone_of_the_answer(
    alice: Persona, withings: WithingsEmulator
) -> None:
    for group in (REFERENCE_GROUP, MANUAL_HEIGHT, MANUAL_WEIGHT, BPM_CONNECT, SCALE_WITH_FAT):
        withings.add_group(group)

    connection = connect_and_sync(alice.human)

    # 1594245600 = 2020-07-08 22:00:00 UTC = 00:00 on 9 July in Amsterdam (CEST, +2 h).
    weight = one(connection, "weight", 12)
    assert (weight.start_time, weight.tz_offset, weight.local_day) == (at("2020-07-08T22:00:00"), 120, date(2020, 7, 9))
    assert (weight.value, weight.data) == (65.75, {"value": 65.75, "unit": "kg"})  # 65750 * 10^-3
    assert weight.source_data["attrib"] == 1 and weight.source_data["grpid"] == 12
    # The latest height (1600 * 10^-3 = 1.6 m, typed in on 2021-05-05) gives every weight its BMI.
    assert one(connection, "bmi", 12).data == {"value": 25.7, "unit": "kg/m2"}  # 65.75 / 1.6^2 = 25.68
    height = one(connection, "height", 2726375354)
    assert (height.start_time, height.tz_offset) == (at("2021-05-05T17:53:36"), 120)
    assert height.data == {"value": 160.0, "unit": "cm"}
    assert one(connection, "weight", 2726375351).data == {"value": 56.3, "unit": "kg"}
    assert one(connection, "bmi", 2726375351).data == {"value": 22.0, "unit": "kg/m2"}  # 56.3 / 2.56 = 21.99
    # A BPM Connect reading in hundredths: 14300 * 10^-2 = 143 over 10600 * 10^-2 = 106, pulse 82.
    pressure = one(connection, "blood_pressure", 2726388728)
    assert (pressure.start_time, pressure.tz_offset) == (at("2021-05-03T11:00:31"), 120)
    assert pressure.data == {"systolic": 143, "diastolic": 106, "unit": "mmHg"} and pressure.value == 143
    assert one(connection, "heart_rate", 2726388728).data == {"value": 82, "unit": "bpm"}
    # 2022-02-27 06:30:16 UTC is winter time in Amsterdam (+1 h); fat ratio 15713 * 10^-3 %.
    scale = one(connection, "weight", 3415696183)
    assert (scale.tz_offset, scale.data) == (60, {"value": 110.1, "unit": "kg"})
    assert one(connection, "body_fat", 3415696183).data == {"value": 15.71, "unit": "%"}
    assert one(connection, "bmi", 3415696183).data == {"value": 43.0, "unit": "kg/m2"}
    assert not Record.objects.filter(connection=connection, type="blood_oxygen").exists()
    [reading] = served(alice.human, "blood_pressure/readings")
    assert (reading["systolic"], reading["diastolic"], reading["tzOffset"]) == (143, 106, "+02:00")
    assert reading["timestamp"] == "2021-05-03T11:00:31.000Z"


@pytest.mark.django_db(transaction=True)
def test_a_measure_group_with_its_own_timezone_is_read_in_it(alice: Persona, withings: WithingsEmulator) -> None:
    withings.group_timezones = True  # observed: a `timezone` per group, besides the answer's
    withings.add_group({**BPM_CONNECT, "timezone": "America/New_York"})  # measured while travelling
    withings.add_group(MANUAL_HEIGHT)  # no zone of its own: the answer's (Europe/Amsterdam)

    connection = connect_and_sync(alice.human)

    pressure = one(connection, "blood_pressure", 2726388728)
    # 2021-05-03 11:00:31 UTC is 07:00:31 in New York (EDT, -4 h), not 13:00:31 in Amsterdam.
    assert (pressure.tz_offset, pressure.local_day) == (-240, date(2021, 5, 3))
    assert one(connection, "height", 2726375354).tz_offset == 120


@pytest.mark.django_db(transaction=True)
def test_workouts_are_epoch_seconds_in_their_zone_filed_under_withings_date(
    alice: Persona, withings: WithingsEmulator
) -> None:
    for row in (REFERENCE_WORKOUT, WALK, BARE_WALK):
        withings.add_workout_row(row)

    connection = connect_and_sync(alice.human)

    walk = one(connection, "activities", 3661300277)
    # 1693336011 = 2023-08-29 19:06:51 UTC, 21:06:51 in Amsterdam; 502 s long, 80 s of them paused.
    assert (walk.start_time, walk.end_time) == (at("2023-08-29T19:06:51"), at("2023-08-29T19:15:13"))
    assert (walk.tz_offset, walk.local_day) == (120, date(2023, 8, 29))
    # The measured distance and the active kcal; the typed-in values are left in sourceData.
    assert walk.data == {"type": "walking", "duration": 422, "distance": 680.0, "steps": 779, "calories": 47.0}
    bare = one(connection, "activities", 3661300290)
    assert bare.data == {"type": "walking", "duration": 617, "distance": None, "steps": None, "calories": None}
    other = one(connection, "activities", 12345)
    # 2020-07-08 22:00 UTC is midnight in Paris: filed under 9 July, as Withings' `date` says.
    assert (other.tz_offset, other.local_day, other.data["type"], other.data["duration"]) == (
        120,
        date(2020, 7, 9),
        "other",
        11600,
    )
    [listed] = served(alice.human, "activities/daily/2023-08-29")
    assert (listed["startTime"], listed["tzOffset"], listed["steps"]) == ("2023-08-29T19:06:51.000Z", "+02:00", 779)


@pytest.mark.django_db(transaction=True)
def test_sleeps_are_filed_under_withings_date_with_seconds_turned_to_minutes(
    alice: Persona, withings: WithingsEmulator
) -> None:
    for row in (NIGHT_1, NIGHT_2, EXTERNAL_NIGHT):
        withings.add_sleep_row(row)

    connection = connect_and_sync(alice.human)

    night = one(connection, "sleeps", 2081804182)
    # 22:30:53 on 17 April to 04:32:53 on 18 April, Paris time (CEST).
    assert (night.start_time, night.end_time) == (at("2021-04-17T20:30:53"), at("2021-04-18T02:32:53"))
    assert (night.tz_offset, night.local_day) == (120, date(2021, 4, 18))
    assert night.data == {
        "day": "2021-04-18",
        "mainSleep": True,
        "timeAsleep": 311,  # 18660 s
        "timeAwake": 51,  # 3060 s
        "timeInBed": 362,  # 21720 s
        "efficiency": 86,  # 0.86
        "numberOfWakeups": 1,
        "deepSleep": 97,  # 5820 s
        "lightSleep": 174,  # 10440 s
        "remSleep": 40,  # 2400 s
    }
    assert one(connection, "sleeps", 2081804265).data == {
        "day": "2021-04-17",
        "mainSleep": True,
        "timeAsleep": 457,  # 27420 s
        "timeAwake": 75,  # 4500 s
        "timeInBed": 532,  # 31920 s
        "efficiency": 86,
        "numberOfWakeups": 4,
        "deepSleep": 90,  # 5400 s
        "lightSleep": 298,  # 17880 s
        "remSleep": 69,  # 4140 s
    }
    # No zone given: offset 0; ends 2021-04-20 23:30 UTC, yet Withings files it under the 21st.
    external = one(connection, "sleeps", 555000111)
    assert (external.tz_offset, external.local_day, external.data["day"]) == (0, date(2021, 4, 21), "2021-04-21")
    assert (external.data["timeAsleep"], external.data["timeInBed"]) == (510, 570)  # asleepduration 30600 s
    # Its stages are null: unknown, not zero minutes.
    assert (external.data["deepSleep"], external.data["lightSleep"], external.data["remSleep"]) == (None, None, None)
    assert [s["day"] for s in served(alice.human, "sleeps/daily/2021-04-21")] == ["2021-04-21"]
    summary = served(alice.human, "sleeps/summary/2021-04-18")
    assert (summary["timeAsleep"], summary["timeInBed"], summary["source"]) == (311, 362, "withings")
    [listed] = served(alice.human, "sleeps/daily/2021-04-18")
    assert (listed["deepSleep"], listed["lightSleep"], listed["remSleep"], listed["timeAwake"]) == (97, 174, 40, 51)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("shape", ["ratio", "percent"])
def test_sleep_efficiency_is_read_as_a_ratio_or_a_percentage(
    alice: Persona, withings: WithingsEmulator, shape: str
) -> None:
    withings.sleep_efficiency = shape  # the emulator sends NIGHT_1's 0.86 as 86 when "percent"
    withings.add_sleep_row(NIGHT_1)
    withings.add_sleep_row(PERCENT_NIGHT)  # 85, as published

    connection = connect_and_sync(alice.human)

    assert one(connection, "sleeps", 2081804182).data["efficiency"] == 86
    published = one(connection, "sleeps", 987654321)
    # 2020-05-20 00:00-08:00 UTC: 02:00-10:00 in Paris; 25200 s asleep of 28800 s in bed.
    assert (published.local_day, published.tz_offset) == (date(2020, 5, 20), 120)
    assert (published.data["efficiency"], published.data["timeAsleep"], published.data["timeInBed"]) == (85, 420, 480)


@pytest.mark.django_db(transaction=True)
def test_daily_activity_is_a_total_of_the_local_day(alice: Persona, withings: WithingsEmulator) -> None:
    for row in (PHONE_DAY_1, PHONE_DAY_2, REFERENCE_DAY):
        withings.add_activity_row(row)
    # A day on which Europe/Paris leaves summer time (25 hours long): its midnight is still +2 h.
    withings.add_activity_row({**REFERENCE_DAY, "date": "2023-10-29"})

    connection = connect_and_sync(alice.human)

    day = one(connection, "activity_summaries", "2023-10-20")
    # Midnight in Amsterdam (CEST, +2 h) as a UTC instant, for one day.
    assert (day.start_time, day.end_time) == (at("2023-10-19T22:00:00"), at("2023-10-20T22:00:00"))
    assert (day.tz_offset, day.local_day) == (120, date(2023, 10, 20))
    assert day.data == {
        "date": "2023-10-20",
        "steps": 1209,
        "distance": 1028.559,  # metres
        "calories": 2303.788,  # totalcalories: active + passive
        "activeCalories": 85.497,  # calories: active only
        "duration": 1864 + 292 + 0,  # soft + moderate + intense, seconds
        "sedentary": None,
        "light": 1864,
        "moderate": 292,
        "vigorous": 0,
    }
    assert day.source_data["brand"] == 18 and day.source_data["is_tracker"] is False
    second = one(connection, "activity_summaries", "2023-10-21").data
    assert (second["steps"], second["calories"], second["activeCalories"], second["duration"]) == (
        1155,
        2357.149,
        134.132,
        1516 + 287 + 420,
    )
    reference = one(connection, "activity_summaries", "2020-06-24")
    assert (reference.start_time, reference.tz_offset) == (at("2020-06-23T22:00:00"), 120)
    assert (reference.data["calories"], reference.data["activeCalories"], reference.data["duration"]) == (
        3500.0,
        1200.0,
        2500,
    )
    dst = one(connection, "activity_summaries", "2023-10-29")
    assert (dst.start_time, dst.tz_offset, dst.local_day) == (at("2023-10-28T22:00:00"), 120, date(2023, 10, 29))
    summary = served(alice.human, "activities/summary/2023-10-20", source="withings")
    assert (summary["date"], summary["steps"], summary["source"]) == ("2023-10-20", 1209, "withings")
    assert (summary["calories"], summary["activeCalories"], summary["duration"]) == (2303.8, 85.5, 2156)
    assert (summary["distance"], summary["light"], summary["moderate"], summary["vigorous"]) == (1028.6, 1864, 292, 0)
