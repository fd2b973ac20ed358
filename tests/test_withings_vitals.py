"""Withings' nightly vitals (respiratory rate, HRV, core body temperature), its thermometer's
body temperature and VO2 max, served by the emulator over HTTP, synced through the engine, and
checked field by field against values worked out by hand from the API reference.

Payloads: python-withings' captured getsummary reply (a Sleep Analyzer night with `rr_*`), and,
where no published reply carries a field, rows in the reference's documented shape
(`sleep_summary_object`, `measuregrp_object`), as listed in docs/providers/withings.md.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from connect.models import Human
from data_api.models import Record
from sources.http import ProviderHttp
from sources.models import Connection, SyncOutcome
from sources.services import connection_store
from sources.sync import connection_sync
from tests.data_api_helpers import stored_counts
from tests.emulators.withings import WithingsEmulator
from tests.factories import Persona
from tests.test_withings import REDIRECT_URI, consent, plugin
from tests.test_withings_documented import EXTERNAL_NIGHT, at, one, served

# python-withings tests/fixtures/sleep_summary.json, its first night as captured: a Sleep Analyzer
# (model 32) in Paris, 22:30:53 on 17 April to 04:32:53 on 18 April 2021 (CEST, +2 h).
ANALYZER_NIGHT = {
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
        "hr_min": 70,
        "hr_max": 120,
        "rr_average": 14,
        "rr_min": 10,
        "rr_max": 20,
        "breathing_disturbances_intensity": 9,
        "snoring": 1080,
        "snoringepisodecount": 18,
        "sleep_score": 37,
        "apnea_hypopnea_index": 9,
    },
    "created": 1620237476,
    "modified": 1620237476,
}
# The reference's HRV averages (`rmssd_start_avg`, `rmssd_end_avg`: numbers), as they would come
# with that night. No published reply carries them.
HRV = {"rmssd_start_avg": 48.25, "rmssd_end_avg": 61.0}
# A night in New York across the change to summer time, in the reference's shape, with the fields
# only the reference documents: the respiration rate under its `chest_movement_rate_wellness_*`
# name (no `rr_*`), both HRV averages, the core body temperature. 23:00 EST on 13 March (04:00
# UTC, -5 h) to 07:00 EDT on 14 March 2021 (11:00 UTC, -4 h): 7 hours in bed.
DST_NIGHT = {
    "id": 3100200300,
    "timezone": "America/New_York",
    "model": 32,
    "model_id": 63,
    "startdate": 1615694400,
    "enddate": 1615719600,
    "date": "2021-03-14",
    "created": 1615720000,
    "modified": 1615720000,
    "completed": True,
    "data": {
        "total_timeinbed": 25200,
        "total_sleep_time": 23400,
        "lightsleepduration": 12600,
        "deepsleepduration": 5400,
        "remsleepduration": 5400,
        "wakeupduration": 1800,
        "wakeupcount": 2,
        "hr_average": 57,
        "hr_min": 46,
        "hr_max": 81,
        "chest_movement_rate_wellness_average": 15,
        "chest_movement_rate_wellness_min": 12,
        "chest_movement_rate_wellness_max": 19,
        "rmssd_start_avg": 41.6,
        "rmssd_end_avg": 55.25,
        "core_body_temperature_avg": 36.58,
        "core_body_temperature_min": 36.31,
        "core_body_temperature_max": 36.87,
        "core_body_temperature_status": "elevated",
    },
}
# A Thermo reading, in the measuregrp_object shape; body temperature (71) in thousandths of a
# degree as observed (jlobbes/ba-thesis app/withings/README.md: "unit -3"), with the skin
# temperature (73) the thermometer also reports. 2023-07-27 22:30:00 UTC is 00:30 on 28 July in
# Amsterdam (CEST, +2 h).
THERMO = {
    "grpid": 4716601234,
    "attrib": 0,
    "date": 1690497000,
    "created": 1690497100,
    "modified": 1690497100,
    "category": 1,
    "deviceid": "5b1c0e3f7d2a4c6e8f901a2b3c4d5e6f70819a2b",
    "hash_deviceid": "5b1c0e3f7d2a4c6e8f901a2b3c4d5e6f70819a2b",
    "measures": [
        {"value": 37150, "type": 71, "unit": -3, "algo": 0, "fm": 3},
        {"value": 34950, "type": 73, "unit": -3, "algo": 0, "fm": 3},
    ],
    "modelid": 70,
    "model": "Thermo",
    "comment": None,
}
# A VO2 max (type 123, "ml/min/kg"), in the measuregrp_object shape; no published reply carries
# one. 2023-06-03 09:41:27 UTC, 11:41:27 in Amsterdam.
VO2 = {
    "grpid": 4512345678,
    "attrib": 0,
    "date": 1685785287,
    "created": 1685785300,
    "modified": 1685785300,
    "category": 1,
    "deviceid": "c57e2809f962b56b9c98c428e0240e16dba37d2f",
    "hash_deviceid": "c57e2809f962b56b9c98c428e0240e16dba37d2f",
    "measures": [{"value": 4230, "type": 123, "unit": -2, "algo": 0, "fm": 3}],
    "modelid": None,
    "model": None,
    "comment": None,
}


@pytest.fixture
def withings(settings: Any) -> Iterator[WithingsEmulator]:
    emulator = WithingsEmulator(page_size=3, timezone="Europe/Amsterdam").start()
    # History back to the examples.
    settings.SOURCE_SETTINGS = emulator.source_settings((date.today() - date(2021, 1, 1)).days)
    settings.PROVIDER_RETRY_ATTEMPTS = 3
    settings.PROVIDER_RETRY_MAX_WAIT = 5
    yield emulator
    emulator.stop()


def connect(human: Human) -> Connection:
    credentials = plugin().exchange_code(
        code=consent(), redirect_uri=REDIRECT_URI, code_verifier=None, http=ProviderHttp()
    )
    return connection_store(human=human, slug="withings", credentials=credentials, request=None)


def synced(connection: Connection, outcome: SyncOutcome = SyncOutcome.SUCCEEDED) -> Any:
    run = connection_sync(connection_id=connection.pk)
    assert run is not None and run.outcome == outcome, (run and run.error, run and run.unreadable)
    return run


def with_data(row: dict[str, Any], **data: Any) -> dict[str, Any]:
    return {**row, "data": {**row["data"], **data}}


@pytest.mark.django_db(transaction=True)
def test_a_nights_respiratory_rate_is_a_reading_at_its_end_filed_under_withings_date(
    alice: Persona, withings: WithingsEmulator
) -> None:
    withings.add_sleep_row(ANALYZER_NIGHT)

    connection = connect(alice.human)
    synced(connection)

    rate = one(connection, "respiratory_rate", "sleep-2081804182")
    # The end of the night, 1618713173 = 2021-04-18 02:32:53 UTC, 04:32:53 in Paris (+2 h).
    assert (rate.start_time, rate.tz_offset, rate.local_day) == (at("2021-04-18T02:32:53"), 120, date(2021, 4, 18))
    # rr_average, rr_min, rr_max: breaths per minute.
    assert (rate.value, rate.data) == (14.0, {"value": 14.0, "unit": "breaths/min", "min": 10.0, "max": 20.0})
    assert rate.source_data["data"] == {"rr_average": 14, "rr_min": 10, "rr_max": 20}
    [listed] = served(alice.human, "respiratory_rate/readings/daily/2021-04-18")
    assert (listed["timestamp"], listed["tzOffset"], listed["value"], listed["unit"]) == (
        "2021-04-18T02:32:53.000Z",
        "+02:00",
        14.0,
        "breaths/min",
    )
    # hr_min is the night's lowest rate, hr_average its mean: neither is a resting heart rate.
    assert "resting_heart_rate" not in plugin().data_types
    kept = stored_counts(connection=connection)
    assert not kept["resting_heart_rate"] and not kept["heart_rate"]
    [asked] = [r for r in withings.requests if r["action"] == "getsummary"]
    assert {"rr_average", "rr_min", "rr_max"} <= set(asked["data_fields"].split(","))


@pytest.mark.django_db(transaction=True)
def test_hrv_is_two_rmssd_readings_in_ms_one_at_each_end_of_the_night(
    alice: Persona, withings: WithingsEmulator
) -> None:
    withings.add_sleep_row(with_data(ANALYZER_NIGHT, **HRV))
    withings.add_sleep_row(DST_NIGHT)

    connection = connect(alice.human)
    synced(connection)

    start = one(connection, "heart_rate_variability", "sleep-2081804182-start")
    end = one(connection, "heart_rate_variability", "sleep-2081804182-end")
    # The start average at the night's start (2021-04-17 20:30:53 UTC), the end one at its end;
    # both filed under the morning Withings gives (18 April), not the evening the night began.
    assert (start.start_time, start.tz_offset, start.local_day) == (at("2021-04-17T20:30:53"), 120, date(2021, 4, 18))
    assert start.data == {"value": 48.2, "unit": "ms", "period": "sleepStart"}  # 48.25, to 0.1 ms
    assert (end.start_time, end.local_day) == (at("2021-04-18T02:32:53"), date(2021, 4, 18))
    assert end.data == {"value": 61.0, "unit": "ms", "period": "sleepEnd"}
    # Across the change to summer time: -5 h at 23:00, -4 h at 07:00, each at its own instant.
    dst_start = one(connection, "heart_rate_variability", "sleep-3100200300-start")
    dst_end = one(connection, "heart_rate_variability", "sleep-3100200300-end")
    assert (dst_start.start_time, dst_start.tz_offset, dst_start.value) == (at("2021-03-14T04:00:00"), -300, 41.6)
    assert (dst_end.start_time, dst_end.tz_offset, dst_end.value) == (at("2021-03-14T11:00:00"), -240, 55.2)
    assert {r["period"] for r in served(alice.human, "heart_rate_variability/readings/daily/2021-03-14")} == {
        "sleepStart",
        "sleepEnd",
    }
    # SDNN (sleep get's `sdnn_1`, intraday's `sdnn1`) is another measure: never asked for.
    [asked] = [r for r in withings.requests if r["action"] == "getsummary"]
    fields = set(asked["data_fields"].split(","))
    assert {"rmssd_start_avg", "rmssd_end_avg"} <= fields and not {"sdnn_1", "sdnn1"} & fields


@pytest.mark.django_db(transaction=True)
def test_the_respiration_rate_under_its_other_documented_name_and_the_night_in_its_zone(
    alice: Persona, withings: WithingsEmulator
) -> None:
    withings.add_sleep_row(DST_NIGHT)

    connection = connect(alice.human)
    synced(connection)

    sleep = one(connection, "sleeps", 3100200300)
    assert (sleep.tz_offset, sleep.local_day) == (-300, date(2021, 3, 14))  # the offset at its start
    assert (sleep.data["timeInBed"], sleep.data["timeAsleep"], sleep.data["timeAwake"]) == (420, 390, 30)
    assert (sleep.data["deepSleep"], sleep.data["lightSleep"], sleep.data["remSleep"]) == (90, 210, 90)
    rate = one(connection, "respiratory_rate", "sleep-3100200300")
    # chest_movement_rate_wellness_*: "respiration rate (breaths per minute)"; at 07:00 EDT.
    assert (rate.start_time, rate.tz_offset, rate.local_day) == (at("2021-03-14T11:00:00"), -240, date(2021, 3, 14))
    assert rate.data == {"value": 15.0, "unit": "breaths/min", "min": 12.0, "max": 19.0}


@pytest.mark.django_db(transaction=True)
def test_body_temperature_from_the_thermometer_and_from_the_night(alice: Persona, withings: WithingsEmulator) -> None:
    withings.add_group(THERMO)
    withings.add_sleep_row(DST_NIGHT)

    connection = connect(alice.human)
    synced(connection)

    thermo = one(connection, "body_temperature", 4716601234)
    # 37150 * 10^-3 °C, taken at 00:30 on 28 July in Amsterdam.
    assert (thermo.start_time, thermo.tz_offset, thermo.local_day) == (
        at("2023-07-27T22:30:00"),
        120,
        date(2023, 7, 28),
    )
    assert (thermo.value, thermo.data) == (37.15, {"value": 37.15, "unit": "°C", "deviation": None})
    # The skin temperature (73, 34.95 °C) is the skin's surface, not the body's: not asked for.
    assert Record.objects.filter(connection=connection, type="body_temperature").count() == 2
    for call in (r for r in withings.requests if r["action"] == "getmeas"):
        assert not {"12", "73"} & set(call["meastypes"].split(","))
    night = one(connection, "body_temperature", "sleep-3100200300")
    # The night's average core temperature, at its end (07:00 EDT), under Withings' date.
    assert (night.start_time, night.tz_offset, night.local_day) == (at("2021-03-14T11:00:00"), -240, date(2021, 3, 14))
    assert night.data == {
        "value": 36.58,
        "unit": "°C",
        "deviation": None,  # 'elevated' says how it compares with the usual, in no number
        "min": 36.31,
        "max": 36.87,
        "status": "elevated",
    }
    [listed] = served(alice.human, "body_temperature/readings/daily/2023-07-28")
    assert (listed["value"], listed["deviation"], listed["unit"], listed["tzOffset"]) == (37.15, None, "°C", "+02:00")


@pytest.mark.django_db(transaction=True)
def test_vo2_max_is_read_from_its_measure_type(alice: Persona, withings: WithingsEmulator) -> None:
    withings.add_group(VO2)

    connection = connect(alice.human)
    synced(connection)

    vo2 = one(connection, "vo2_max", 4512345678)
    # 4230 * 10^-2 ml/min/kg, at 11:41:27 in Amsterdam.
    assert (vo2.start_time, vo2.tz_offset, vo2.local_day) == (at("2023-06-03T09:41:27"), 120, date(2023, 6, 3))
    assert (vo2.value, vo2.data) == (42.3, {"value": 42.3, "unit": "mL/kg/min"})
    [listed] = served(alice.human, "vo2_max/readings")
    assert (listed["timestamp"], listed["value"], listed["unit"]) == ("2023-06-03T09:41:27.000Z", 42.3, "mL/kg/min")


@pytest.mark.django_db(transaction=True)
def test_a_night_without_vitals_gives_none_and_an_unreadable_field_costs_only_its_reading(
    alice: Persona, withings: WithingsEmulator
) -> None:
    withings.add_sleep_row(EXTERNAL_NIGHT)  # a night from an external source: no vitals at all
    # Zeros are no measurement; a rate sent as text can't be read, the rest of the night can.
    withings.add_sleep_row(with_data(DST_NIGHT, chest_movement_rate_wellness_average="15", rmssd_start_avg=0))

    connection = connect(alice.human)
    run = synced(connection, SyncOutcome.PARTIAL)

    assert run.counts["respiratory_rate"]["unreadable"] == 1
    assert "chest_movement_rate_wellness_average is not a number" in run.unreadable["respiratory_rate"][0]
    kinds = sorted(Record.objects.filter(connection=connection).values_list("type", "external_id"))
    assert kinds == [
        ("body_temperature", "sleep-3100200300"),
        ("heart_rate_variability", "sleep-3100200300-end"),
        ("sleeps", "3100200300"),
        ("sleeps", "555000111"),
    ]


@pytest.mark.django_db(transaction=True)
def test_re_reading_the_measures_never_deletes_the_nights_temperatures(
    alice: Persona, withings: WithingsEmulator
) -> None:
    now = datetime.now(UTC)
    night = withings.add_sleep(now - timedelta(days=2, hours=8), now - timedelta(days=2), asleep_s=25000, awake_s=900)
    withings.sleeps[night]["modified"] = int((now - timedelta(days=1)).timestamp())  # analysed yesterday
    thermo = withings.add_measures(now - timedelta(days=1), {71: (36800, -3)})
    connection = connect(alice.human)
    synced(connection)
    kept = {f"sleep-{night}", str(thermo)}

    for _ in range(3):  # incremental syncs re-read the last week of measures as a complete window
        run = synced(connection)
        assert run.counts.get("body_temperature", {}).get("deleted", 0) == 0

    temperatures = Record.objects.filter(connection=connection, type="body_temperature")
    assert set(temperatures.values_list("external_id", flat=True)) == kept
