"""Strava's published example payloads, served by the emulator over HTTP, synced through the real
engine, and checked field by field against values worked out by hand from the documentation
(docs/providers/strava.md says where each fact comes from).

The hand computations, for each example:
- the UTC start is `start_date`; the offset is `start_date_local` (wall clock, written with a
  `Z`) minus `start_date`, never the "(GMT-08:00)" label, which is the zone's standard offset;
- the local day is the date of `start_date_local`;
- the record spans `elapsed_time` on the wall clock; `duration` is `moving_time`;
- `calories` are the DetailedActivity's `calories` (kcal), never `kilojoules` (work, rides).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from data_api.models import Record
from sources.models import Connection, SyncOutcome
from tests.conftest import Persona
from tests.data_api_helpers import access_client
from tests.emulators.strava import (
    HIDDEN_START_RUN,
    REAL_WALK_SUMMARY,
    STRAVALIB_MANUAL_HIKE,
    STRAVALIB_RUN,
    SWAGGER_DETAIL_EXAMPLE,
    SWAGGER_LIST_EXAMPLE,
    StravaEmulator,
)
from tests.test_strava import connect, sync

pytestmark = pytest.mark.django_db(transaction=True)


def emulator_settings(emulator: StravaEmulator, **extra: str) -> dict[str, str]:
    return {
        "SOURCE_STRAVA_CLIENT_ID": emulator.client_id,
        "SOURCE_STRAVA_CLIENT_SECRET": emulator.client_secret,
        "SOURCE_STRAVA_AUTHORIZE_URL": emulator.url + "/oauth/authorize",
        "SOURCE_STRAVA_TOKEN_URL": emulator.url + "/oauth/token",
        "SOURCE_STRAVA_API_URL": emulator.url + "/api/v3",
        "SOURCE_STRAVA_HISTORY_DAYS": "5000",  # the examples go back to 2013
        **{f"SOURCE_STRAVA_{k}": v for k, v in extra.items()},
    }


@pytest.fixture
def strava(settings: Any) -> Iterator[StravaEmulator]:
    emulator = StravaEmulator().start()
    settings.SOURCE_SETTINGS = emulator_settings(emulator)
    settings.PROVIDER_RETRY_MAX_WAIT = 5
    yield emulator
    emulator.stop()


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def stored(connection: Connection, activity_id: int) -> Record:
    return Record.objects.get(connection=connection, type="activities", external_id=str(activity_id))


def served(persona: Persona, activity_id: int, day: str) -> dict[str, Any]:
    """The activity as the Data API serves it on its local day's route."""
    answer = access_client(persona.human).get(f"/v1/human/activities/daily/{day}")
    assert answer.status_code == 200
    found = [a for a in answer.json() if a["sourceData"]["id"] == activity_id]
    assert len(found) == 1, f"activity {activity_id} is not served on {day}"
    return found[0]


def test_the_list_example_reads_offsets_from_the_local_clock_and_kilojoules_are_not_calories(
    alice: Persona, strava: StravaEmulator, settings: Any
) -> None:
    settings.SOURCE_SETTINGS = emulator_settings(strava, DETAILS_PER_RUN="0")  # the list alone
    for item in SWAGGER_LIST_EXAMPLE:
        strava.put(item)
    connection = connect(alice, strava)

    run = sync(connection)

    assert run.outcome == SyncOutcome.SUCCEEDED
    assert strava.calls["activity"] == 0
    # "Happy Friday": 12:15:09Z, local 05:15:09 -> UTC-7 (May, PDT) although labelled GMT-08:00.
    friday = stored(connection, 154504250376823)
    assert friday.start_time == utc("2018-05-02T12:15:09")
    assert friday.end_time == utc("2018-05-02T13:30:09")  # + elapsed_time 4,500 s
    assert friday.tz_offset == -420
    assert friday.local_day.isoformat() == "2018-05-02"
    assert friday.data == {
        "type": "cycling",  # sport_type MountainBikeRide (type Ride)
        "duration": 4500,  # moving_time
        "distance": 24931.4,
        "steps": None,
        "calories": None,  # kilojoules 788.7 is work done, not energy burned
    }
    assert friday.source_data["kilojoules"] == 788.7
    assert friday.source_data["upload_id"] == 987654321234567891234  # wider than 64 bits, kept
    body = served(alice, 154504250376823, "2018-05-02")
    assert (body["startTime"], body["endTime"], body["tzOffset"]) == (
        "2018-05-02T12:15:09.000Z",
        "2018-05-02T13:30:09.000Z",
        "-07:00",
    )
    assert (body["type"], body["duration"], body["distance"], body["calories"]) == ("cycling", 4500, 24931.4, None)
    # "Bondcliff": 12:35:51Z, local 05:35:51, 5,400 s.
    bondcliff = stored(connection, 1234567809)
    assert (bondcliff.start_time, bondcliff.end_time) == (utc("2018-04-30T12:35:51"), utc("2018-04-30T14:05:51"))
    assert bondcliff.tz_offset == -420 and bondcliff.local_day.isoformat() == "2018-04-30"
    assert bondcliff.data["duration"] == 5400 and bondcliff.data["calories"] is None


def test_the_detail_example_gives_calories_and_moving_time_is_the_duration(
    alice: Persona, strava: StravaEmulator
) -> None:
    strava.put(SWAGGER_DETAIL_EXAMPLE)
    connection = connect(alice, strava)

    run = sync(connection)

    assert run.outcome == SyncOutcome.SUCCEEDED
    assert strava.calls["activity"] == 1  # its detail, once
    # Stored from the list, then (an old activity: after the recent ones) from its detail.
    assert (run.counts["activities"]["created"], run.counts["activities"]["updated"]) == (1, 1)
    record = stored(connection, 12345678987654321)
    # 14:52:54Z, local 06:52:54 -> UTC-8 (February, PST); elapsed 4,410 s; moving 4,207 s.
    assert record.start_time == utc("2018-02-16T14:52:54")
    assert record.end_time == utc("2018-02-16T16:06:24")
    assert record.tz_offset == -480
    assert record.data == {
        "type": "cycling",
        "duration": 4207,  # moving_time, not elapsed_time 4,410
        "distance": 28099.0,
        "steps": None,
        "calories": 870.2,  # the detail's kcal, not kilojoules 780.5
    }
    assert record.source_data["calories"] == 870.2 and record.source_data["kilojoules"] == 780.5
    # The detail, less its long and personal parts (laps, efforts, splits, photos, kudosers...).
    assert record.source_data["resource_state"] == 3
    assert not {"laps", "segment_efforts", "splits_metric", "description", "highlighted_kudosers"} & set(
        record.source_data
    )
    assert record.source_data["map"] == {"id": "a1410355832", "resource_state": 3}
    body = served(alice, 12345678987654321, "2018-02-16")
    assert (body["tzOffset"], body["duration"], body["calories"]) == ("-08:00", 4207, 870.2)


def test_an_older_payload_without_sport_type_or_utc_offset(alice: Persona, strava: StravaEmulator) -> None:
    strava.put(STRAVALIB_RUN)
    connection = connect(alice, strava)

    sync(connection)

    record = stored(connection, 99895560)
    # 19:36:41Z, local 11:36:41 -> UTC-8; elapsed 3,140 s; moving 2,892 s; type Run.
    assert record.start_time == utc("2013-12-12T19:36:41")
    assert record.end_time == utc("2013-12-12T20:29:01")
    assert record.tz_offset == -480
    assert record.local_day.isoformat() == "2013-12-12"
    assert record.data == {"type": "running", "duration": 2892, "distance": 5781.1, "steps": None, "calories": 537.9}


def test_a_manual_activity_is_filed_on_its_local_start_day(alice: Persona, strava: StravaEmulator) -> None:
    strava.put(STRAVALIB_MANUAL_HIKE)
    connection = connect(alice, strava)

    sync(connection)

    record = stored(connection, 96089609)
    # 16:00Z, local 08:00 -> UTC-8; 38,700 s (10 h 45 min) ends 02:45Z the next UTC day.
    assert record.start_time == utc("2013-11-17T16:00:00")
    assert record.end_time == utc("2013-11-18T02:45:00")
    assert record.tz_offset == -480
    assert record.data == {
        "type": "hiking",
        "duration": 38700,
        "distance": 22530.8,
        "steps": None,
        "calories": 2084.438266172827,
    }
    assert served(alice, 96089609, "2013-11-17")["endTime"] == "2013-11-18T02:45:00.000Z"
    assert access_client(alice.human).get("/v1/human/activities/daily/2013-11-18").json() == []


def test_a_real_summary_with_a_float_offset_an_evening_start_and_a_long_pause(
    alice: Persona, strava: StravaEmulator
) -> None:
    strava.put(REAL_WALK_SUMMARY)
    connection = connect(alice, strava)

    sync(connection)

    record = stored(connection, 7529252548)
    # 02:10:32Z on the 26th is 19:10:32 on the 25th locally (UTC-7, July, PDT).
    assert record.start_time == utc("2022-07-26T02:10:32")
    assert record.end_time == utc("2022-07-26T03:45:34")  # + elapsed 5,702 s
    assert record.tz_offset == -420
    assert record.local_day.isoformat() == "2022-07-25"
    assert record.data == {
        "type": "walking",
        "duration": 2141,  # moving; the walk stood still for over an hour
        "distance": 3055.1,
        "steps": None,
        "calories": None,  # its detail has none
    }
    assert served(alice, 7529252548, "2022-07-25")["tzOffset"] == "-07:00"
    assert access_client(alice.human).get("/v1/human/activities/daily/2022-07-26").json() == []


def test_a_hidden_start_time_keeps_the_local_day(alice: Persona, strava: StravaEmulator) -> None:
    hidden = {**HIDDEN_START_RUN, "start_date": "2024-07-02T00:00:01Z", "start_date_local": "2024-07-02T00:00:01Z"}
    strava.put(hidden)
    connection = connect(alice, strava)

    sync(connection)

    record = stored(connection, 11801234567)
    # Only the local day is real. The start stays the instant Strava lists it by (so the
    # trailing window deletes it only when Strava drops it); the offset is utc_offset (+2 h).
    assert record.start_time == utc("2024-07-02T00:00:01")
    assert record.end_time == utc("2024-07-02T00:52:01")  # + elapsed 3,120 s
    assert record.tz_offset == 120
    assert record.local_day.isoformat() == "2024-07-02"
    assert served(alice, 11801234567, "2024-07-02")["tzOffset"] == "+02:00"
    assert record.data["duration"] == 3000


def test_a_hidden_start_west_of_utc_is_still_filed_on_its_local_day(alice: Persona, strava: StravaEmulator) -> None:
    hidden = {
        **HIDDEN_START_RUN,
        "id": 11801234568,
        "start_date": "2024-07-02T00:00:01Z",
        "start_date_local": "2024-07-02T00:00:01Z",
        "timezone": "(GMT-08:00) America/Los_Angeles",
    }
    del hidden["utc_offset"]  # the zone's offset on that day: UTC-7 (PDT)
    strava.put(hidden)
    connection = connect(alice, strava)

    sync(connection)

    record = stored(connection, 11801234568)
    assert record.start_time == utc("2024-07-02T00:00:01")
    assert record.tz_offset == -420
    assert record.local_day.isoformat() == "2024-07-02"  # not 2024-07-01 (start + offset)


@pytest.mark.parametrize(
    "variant",
    [
        pytest.param({}, id="utc_offset-int"),
        pytest.param({"utc_offset": -25200.0}, id="utc_offset-float"),
        pytest.param({"utc_offset": None}, id="no-utc_offset"),
        pytest.param({"sport_type": None}, id="type-only"),
        pytest.param({"timezone": "America/Los_Angeles"}, id="bare-zone-name"),
        pytest.param({"start_date_local": None}, id="no-start_date_local"),
    ],
)
def test_every_documented_shape_of_the_list_item_reads_the_same(
    alice: Persona, strava: StravaEmulator, settings: Any, variant: dict[str, Any]
) -> None:
    settings.SOURCE_SETTINGS = emulator_settings(strava, DETAILS_PER_RUN="0")
    item = copy.deepcopy(SWAGGER_LIST_EXAMPLE[0])
    for key, value in variant.items():
        if value is None:
            del item[key]
        else:
            item[key] = value
    strava.put(item)
    connection = connect(alice, strava)

    sync(connection)

    record = stored(connection, 154504250376823)
    assert (record.start_time, record.end_time) == (utc("2018-05-02T12:15:09"), utc("2018-05-02T13:30:09"))
    assert record.tz_offset == -420 and record.local_day.isoformat() == "2018-05-02"
    assert record.data["type"] == "cycling" and record.data["duration"] == 4500


def test_an_unreadable_item_is_counted_and_named(alice: Persona, strava: StravaEmulator) -> None:
    strava.put(SWAGGER_DETAIL_EXAMPLE)
    broken = copy.deepcopy(SWAGGER_LIST_EXAMPLE[1])
    broken["start_date_local"] = "2018-04-29T05:35:51Z"  # a day off start_date: not a time zone
    strava.put(broken)
    connection = connect(alice, strava)

    run = sync(connection)

    assert run.outcome == SyncOutcome.PARTIAL
    assert run.counts["activities"]["unreadable"] == 1
    assert "start_date_local is more than 14 hours from start_date" in str(run.unreadable)
    assert not Record.objects.filter(external_id="1234567809").exists()
    assert stored(connection, 12345678987654321).data["calories"] == 870.2
