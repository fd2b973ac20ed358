"""Readings stored as compact time series (heart rate): every promise a record makes, kept.

Each test reads what a client of the Data API or the Application API would read, and checks it
against an order, a count or a filter worked out here from what was stored."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from django.db import transaction
from django.test import Client

from data_api import series
from data_api.models import DayStat, Series
from sources.base import Readings, Record
from sources.models import Connection
from sources.types import SERIES, SUMMARIZED, aggregate, finish
from sources.upsert import count_in_window, delete_missing
from tests.app_client import app_call
from tests.conftest import Persona
from tests.data_api_helpers import T0, access_client, demo_connection, store, stored_records
from tests.factories import make_human

pytestmark = pytest.mark.django_db


def beat(n: int, at: datetime, bpm: float, tz: int = 0, key: str = "") -> Record:
    return Record(
        type="heart_rate",
        external_id=key or f"hr-{n}",
        start_time=at,
        tz_offset=tz,
        value=bpm,
        fields={"value": bpm, "unit": "bpm"},
        source_data={"bpm": bpm, "n": n},
    )


def every_page(client: Client, path: str, limit: int, **params: Any) -> tuple[list[dict[str, Any]], set[str]]:
    """Every item of a list, page by page, and the totals the pages announced."""
    items: list[dict[str, Any]] = []
    totals: set[str] = set()
    offset = 0
    while True:
        response = client.get(path, {**params, "limit": limit, "offset": offset})
        assert response.status_code == 200, response.content[:300]
        totals.add(response["X-Total-Count"])
        page = response.json()
        items += page
        if 'rel="next"' not in response.get("Link", ""):
            return items, totals
        offset += limit


def test_heart_rate_is_a_series_type_and_a_day_is_one_row(alice: Persona) -> None:
    assert "heart_rate" in SERIES
    connection = demo_connection(alice.human)
    store(connection, [beat(n, T0 + timedelta(minutes=n), 60 + n % 40) for n in range(1440)])
    rows = list(Series.objects.filter(connection=connection))
    # 12:00 UTC + 1,440 minutes: two local days (tz 0), so two rows, one reading per minute.
    assert sorted(r.count for r in rows) == [720, 720]
    per_reading = sum(len(bytes(r.payload)) for r in rows) / 1440
    assert per_reading < 16, f"{per_reading:.1f} bytes a reading"


def test_ids_are_stable_and_updated_at_moves_only_on_change(alice: Persona) -> None:
    connection = demo_connection(alice.human)
    store(connection, [beat(n, T0 + timedelta(minutes=n), 70) for n in range(10)])
    client = access_client(alice.human)
    first = {r["id"]: r for r in client.get("/v1/human/heart_rate/readings").json()}
    assert len(first) == 10

    # The same page again, with one reading changed and one new.
    with transaction.atomic():
        from django.utils import timezone

        from sources.upsert import upsert_records

        later = timezone.now() + timedelta(seconds=5)
        counts = upsert_records(
            [beat(n, T0 + timedelta(minutes=n), 99 if n == 3 else 70) for n in range(11)],
            human_id=alice.human.pk,
            connection_id=connection.pk,
            source=connection.source,
            now=later,
        )
    assert (counts["heart_rate"].created, counts["heart_rate"].updated) == (1, 1)
    second = {r["id"]: r for r in client.get("/v1/human/heart_rate/readings").json()}
    assert set(first) < set(second) and len(second) == 11
    for rid, before in first.items():
        after = second[rid]
        assert after["createdAt"] == before["createdAt"]
        if after["sourceData"]["n"] == 3:
            assert after["value"] == 99 and after["updatedAt"] > before["updatedAt"]
        else:
            assert after == before


def test_pages_are_the_exact_order_across_days_sources_and_offset_changes(alice: Persona) -> None:
    demo = demo_connection(alice.human)
    other = demo_connection(alice.human, slug="oura")
    # Demo: 3 days every 7 minutes at +02:00, then the offset changes to -05:00 (a flight), so
    # two local days overlap in time. Oura: every 5 minutes at 00:00, some at Demo's instants.
    store(demo, [beat(n, T0 + timedelta(minutes=7 * n), 60 + n % 30, tz=120) for n in range(600)])
    store(demo, [beat(1000 + n, T0 + timedelta(minutes=7 * 600 + 3 * n), 80, tz=-300) for n in range(300)])
    store(other, [beat(n, T0 + timedelta(minutes=5 * n), 50 + n % 20) for n in range(900)])
    expected = [str(r.pk) for r in stored_records("heart_rate", human_id=alice.human.pk)]
    assert len(expected) == 1800
    client = access_client(alice.human)
    items, totals = every_page(client, "/v1/human/heart_rate/readings", 137)
    assert totals == {"1800"}
    assert [r["id"] for r in items] == expected
    stamps = [(r["timestamp"], int(r["id"])) for r in items]
    assert stamps == sorted(stamps, reverse=True)
    # A deep page on its own is the same slice.
    deep = client.get("/v1/human/heart_rate/readings", {"limit": 50, "offset": 1333}).json()
    assert [r["id"] for r in deep] == expected[1333:1383]
    past = client.get("/v1/human/heart_rate/readings", {"limit": 50, "offset": 5000})
    assert past.json() == [] and past["X-Total-Count"] == "1800"


def test_every_filter_selects_what_it_says(alice: Persona) -> None:
    from django.utils import timezone

    from sources.upsert import upsert_records

    demo = demo_connection(alice.human)
    other = demo_connection(alice.human, slug="oura")
    store(demo, [beat(n, T0 + timedelta(minutes=30 * n), 60, tz=-300) for n in range(200)])
    store(other, [beat(n, T0 + timedelta(minutes=45 * n), 55) for n in range(100)])
    later = timezone.now() + timedelta(minutes=1)
    with transaction.atomic():  # 20 readings change a minute later
        upsert_records(
            [beat(n, T0 + timedelta(minutes=30 * n), 61, tz=-300) for n in range(50, 70)],
            human_id=alice.human.pk,
            connection_id=demo.pk,
            source="demo",
            now=later,
        )
    everything = stored_records("heart_rate", human_id=alice.human.pk)
    client = access_client(alice.human)
    cut = later - timedelta(seconds=1)
    text = cut.strftime("%Y%m%dT%H%M%SZ")
    day = everything[100].local_day
    cases: list[tuple[dict[str, str], list[Any]]] = [
        ({"source": "oura"}, [r for r in everything if r.source == "oura"]),
        ({"updated_since": text}, [r for r in everything if r.updated_at > cut.replace(microsecond=0)]),
        ({"updated_before": text}, [r for r in everything if r.updated_at < cut.replace(microsecond=0)]),
        ({"created_since": text}, []),
        (
            {"start_date": day.isoformat(), "end_date": (day + timedelta(days=1)).isoformat(), "source": "demo"},
            [r for r in everything if day <= r.local_day <= day + timedelta(days=1) and r.source == "demo"],
        ),
    ]
    for params, expected in cases:
        items, totals = every_page(client, "/v1/human/heart_rate/readings", 23, **params)
        assert totals == {str(len(expected))}, params
        assert [r["id"] for r in items] == [str(r.pk) for r in expected], params
    assert len(cases[1][1]) == 20
    daily, totals = every_page(client, f"/v1/human/heart_rate/readings/daily/{day.isoformat()}", 10)
    assert [r["id"] for r in daily] == [str(r.pk) for r in everything if r.local_day == day]
    assert totals == {str(len(daily))} and len(daily) > 10


def test_one_reading_by_id_and_the_latest(alice: Persona, charlie: Persona) -> None:
    connection = demo_connection(alice.human)
    store(connection, [beat(n, T0 + timedelta(minutes=n), 60 + n) for n in range(5)])
    client = access_client(alice.human)
    listed = client.get("/v1/human/heart_rate/readings").json()
    for item in listed:
        assert client.get(f"/v1/human/heart_rate/readings/{item['id']}").json() == item
    assert client.get("/v1/human/heart_rate").json() == listed[0]
    assert listed[0]["value"] == 64 and listed[0]["timestamp"] == "2026-03-01T12:04:00.000Z"
    missing = [str(int(listed[0]["id"]) + 1), "12ab", "9" * 19, str(series.reading_id(10**9, 0))]
    for ref in missing:
        assert client.get(f"/v1/human/heart_rate/readings/{ref}").status_code == 404, ref
    # Another tenant's user can't read it, nor can another type's route.
    assert access_client(charlie.human).get(f"/v1/human/heart_rate/readings/{listed[0]['id']}").status_code == 404
    assert client.get(f"/v1/human/blood_oxygen/readings/{listed[0]['id']}").status_code == 404


def test_a_repulled_window_deletes_what_is_gone_and_the_summary_follows(alice: Persona) -> None:
    connection = demo_connection(alice.human)
    store(connection, [beat(n, T0 + timedelta(minutes=10 * n), 50 + n) for n in range(100)])
    client = access_client(alice.human)
    day = "2026-03-01"
    before = client.get(f"/v1/human/heart_rate/summaries/{day}").json()
    assert before["count"] == 72 and before["max"] == 121
    start, end = T0 + timedelta(hours=6), T0 + timedelta(hours=20)  # minutes 360..1199: n 36..119
    kept = {f"hr-{n}" for n in range(36, 100) if n % 2 == 0}
    with transaction.atomic():
        assert count_in_window(connection_id=connection.pk, kind="heart_rate", start=start, end=end) == 64
        deleted = delete_missing(connection_id=connection.pk, kind="heart_rate", start=start, end=end, seen=kept)
    assert deleted == 32
    left = stored_records("heart_rate", connection_id=connection.pk)
    assert len(left) == 68
    assert all(r.external_id in kept or r.start_time < start for r in left)
    after = client.get(f"/v1/human/heart_rate/summaries/{day}").json()
    assert after["count"] == 72 - 18 and after["max"] == 120
    # Everything of the second day gone: its row and its summary too.
    with transaction.atomic():
        delete_missing(
            connection_id=connection.pk,
            kind="heart_rate",
            start=datetime(2026, 3, 2, tzinfo=UTC),
            end=datetime(2026, 3, 3, tzinfo=UTC),
            seen=set(),
        )
    assert not Series.objects.filter(connection=connection, local_day="2026-03-02").exists()
    assert client.get("/v1/human/heart_rate/summaries/2026-03-02").status_code == 404
    assert DayStat.objects.get(human=alice.human, type="heart_rate", local_day="2026-03-02").count == 0


def test_a_reading_whose_day_moves_is_moved_not_copied(alice: Persona) -> None:
    connection = demo_connection(alice.human)
    at = datetime(2026, 3, 1, 23, 30, tzinfo=UTC)
    store(connection, [beat(1, at, 70), beat(2, at - timedelta(hours=2), 71)])
    created = stored_records("heart_rate", connection_id=connection.pk)[0].created_at
    # The provider corrects the offset: 23:30 UTC at +01:00 is the next local day.
    store(connection, [beat(1, at, 70, tz=60)])
    stored = stored_records("heart_rate", connection_id=connection.pk)
    assert [(r.external_id, r.local_day.isoformat()) for r in stored] == [
        ("hr-1", "2026-03-02"),
        ("hr-2", "2026-03-01"),
    ]
    assert stored[0].created_at == created and stored[0].updated_at > created
    summaries = access_client(alice.human).get("/v1/human/heart_rate/summaries").json()
    assert [(s["date"], s["count"]) for s in summaries] == [("2026-03-02", 1), ("2026-03-01", 1)]


def test_the_batch_feed_orders_by_update_across_users_and_pulls_incrementally(
    client: Client, alice: Persona, charlie: Persona
) -> None:
    from django.utils import timezone

    from sources.upsert import upsert_records

    bob = make_human(alice.app, "alice-user-2", "u2@example.com")
    mine = demo_connection(alice.human)
    bobs = demo_connection(bob)
    store(mine, [beat(n, T0 + timedelta(minutes=n), 60) for n in range(300)])
    store(bobs, [beat(n, T0 + timedelta(minutes=2 * n), 65) for n in range(300)])
    store(demo_connection(charlie.human), [beat(n, T0 + timedelta(minutes=n), 90) for n in range(50)])
    pulled, totals = [], set()
    offset = 0
    while True:
        response = app_call(client, alice, "GET", f"users/heart_rates?limit=77&offset={offset}")
        assert response.status_code == 200
        totals.add(response["X-Total-Count"])
        pulled += response.json()
        if 'rel="next"' not in response.get("Link", ""):
            break
        offset += 77
    assert totals == {"600"} and len({r["id"] for r in pulled}) == 600
    assert {r["humanId"] for r in pulled} == {alice.human.pk, bob.pk}
    order = [(r["updatedAt"], int(r["id"])) for r in pulled]
    assert order == sorted(order)

    last_seen = pulled[-1]["updatedAt"]
    later = timezone.now() + timedelta(seconds=3)
    with transaction.atomic():
        upsert_records(
            [beat(n, T0 + timedelta(minutes=2 * n), 120) for n in (5, 6, 250)],
            human_id=bob.pk,
            connection_id=bobs.pk,
            source="demo",
            now=later,
        )
    changed = app_call(client, alice, "GET", f"users/heart_rates?updated_since={last_seen}").json()
    assert [(r["sourceData"]["n"], r["value"], r["humanId"]) for r in changed] == [
        (5, 120, bob.pk),
        (6, 120, bob.pk),
        (250, 120, bob.pk),
    ]


def test_readings_of_the_old_row_store_move_to_day_rows(alice: Persona) -> None:
    """The migration that introduced day rows moves readings stored one row each, keeping
    their content and times, and rebuilds their daily summaries."""
    import importlib

    from django.apps import apps
    from django.utils import timezone

    from data_api.models import Record as StoredRecord

    migration = importlib.import_module("data_api.migrations.0007_series")
    connection = demo_connection(alice.human)
    created = timezone.now() - timedelta(days=3)
    StoredRecord.objects.bulk_create(
        StoredRecord(
            human_id=alice.human.pk,
            connection_id=connection.pk,
            source="demo",
            type="heart_rate",
            external_id=f"hr-{n}",
            start_time=T0 + timedelta(minutes=n),
            tz_offset=0,
            local_day=(T0 + timedelta(minutes=n)).date(),
            value=60 + n,
            data={"value": 60 + n, "unit": "bpm"},
            source_data={"bpm": 60 + n, "n": n},
            content_hash="x",
            created_at=created,
            updated_at=created,
        )
        for n in range(30)
    )
    migration.move_readings(apps, None)
    assert not StoredRecord.objects.filter(type="heart_rate").exists()
    stored = stored_records("heart_rate", connection_id=connection.pk)
    assert [r.external_id for r in stored] == [f"hr-{n}" for n in reversed(range(30))]
    assert {r.created_at.replace(microsecond=0) for r in stored} == {created.replace(microsecond=0)}
    client = access_client(alice.human)
    assert client.get("/v1/human/heart_rate/readings/daily/2026-03-01")["X-Total-Count"] == "30"
    summary = client.get("/v1/human/heart_rate/summaries/2026-03-01").json()
    assert (summary["count"], summary["min"], summary["max"]) == (30, 60, 89)
    # Stored again by a sync, they are the same readings: nothing created, nothing changed.
    with transaction.atomic():
        from sources.upsert import upsert_records

        counts = upsert_records(
            [beat(n, T0 + timedelta(minutes=n), 60 + n) for n in range(30)],
            human_id=alice.human.pk,
            connection_id=connection.pk,
            source="demo",
            now=timezone.now(),
        )
    assert (counts["heart_rate"].created, counts["heart_rate"].updated) == (0, 0)


def test_erasing_a_user_erases_their_day_rows(client: Client, alice: Persona) -> None:
    connection = demo_connection(alice.human)
    store(connection, [beat(n, T0 + timedelta(minutes=n), 60) for n in range(100)])
    response = app_call(client, alice, "DELETE", f"users/{alice.human.pk}")
    assert response.status_code in (200, 204), response.content
    assert not Series.objects.filter(human_id=alice.human.pk).exists()
    assert not Connection.objects.filter(pk=connection.pk).exists()


def test_a_payload_gives_back_exactly_what_was_stored() -> None:
    """Every JSON type of a value and of the source data comes back as it went in: an integer
    stays an integer, a boolean a boolean, text with any character stays that text."""
    odd = [
        (None, {"unit": "bpm"}),
        (True, {"value": True}),
        (72, {"value": 72, "unit": "bpm"}),
        (72.0, {"value": 72.0, "unit": "bpm"}),
        (2**60, {"value": 2**60}),
        (64.5, {"value": 64, "unit": "bpm"}),  # fields that disagree with the value are kept as given
        ("71", {"value": "71"}),
    ]
    readings = [
        [
            1_700_000_000_000 + 60_000 * n,
            n,
            f"id-{n}\n\u00e9\x00",
            -300 if n % 2 else 330,
            value,
            fields,
            {"text": 'caf\u00e9 \U0001f600 \x00 "quoted" ,]}', "n": n, "nested": [1, {"a": None}]},
            1_700_000_000_123,
            1_700_000_000_456 + n,
        ]
        for n, (value, fields) in enumerate(odd)
    ]
    payload = series.encode(readings)
    back = series.decode(payload)
    assert back == readings
    for got, want in zip(back, readings, strict=True):
        assert [type(v) for v in got] == [type(v) for v in want]
        assert type(got[series.FIELDS].get("value")) is type(want[series.FIELDS].get("value"))
    opened = series.Columns(payload)
    assert [opened.source_data(n) for n in range(len(opened))] == [r[series.SOURCE_DATA] for r in readings]
    # What a rollup reads comes from the columns, unparsed: the same numbers as from the readings.
    packed = series.pack(None, [list(r) for r in readings])
    for name in ("", "value", "unit", "absent"):
        given = (r[series.VALUE] if not name else r[series.FIELDS].get(name) for r in readings)
        assert packed.numbers(name) == [float(v) for v in given if isinstance(v, int | float)]
    # A day grown from what it stored, at its end or between its readings: the same payload.
    for stored, fresh in ((readings[:4], readings[4:]), (readings[::2], readings[1::2]), (readings[3:], readings[:3])):
        grown = series.pack(series.Columns(series.encode(stored)), [list(r) for r in fresh])
        assert series.decode(grown.payload) == readings
        assert (grown.count, grown.stamps) == (packed.count, packed.stamps)
        assert grown.numbers("") == packed.numbers("") and grown.numbers("value") == packed.numbers("value")


def test_readings_handed_over_as_columns_are_stored_as_the_records_they_mean(alice: Persona) -> None:
    """A plugin's `Readings` (its samples column by column) and the records its `records()` makes
    store the same: the same readings on the same local days, across midnight and an offset
    change, ids with a NUL, mixed in one page with records of the same type and a type kept in
    the record table."""
    at = datetime(2026, 3, 7, 23, 50, tzinfo=UTC)
    n = 30
    run = Readings(
        "heart_rate",
        [f"hr-{k}" + ("\x00" if k == 3 else "") for k in range(n)],
        [at + timedelta(minutes=k) for k in range(n)],
        [0] * 15 + [120] * 15,  # the device moved east halfway
        [60 + k % 7 for k in range(n)],
        [{"value": 60 + k % 7, "unit": "bpm"} for k in range(n)],
        [{"bpm": 60 + k % 7, "n": k} for k in range(n)],
    )
    weights = Readings("weight", ["w-1"], [at], [0], [70.5], [{"value": 70.5, "unit": "kg"}], [{"kg": 70.5}])
    single = beat(99, at - timedelta(hours=3), 55)
    as_columns, as_records = demo_connection(alice.human), demo_connection(alice.human, slug="oura")
    store(as_columns, [run, single, weights])  # type: ignore[list-item]
    store(as_records, [*run.records(), single, *weights.records()])

    def stored(connection: Connection, kind: str) -> list[tuple[Any, ...]]:
        return sorted(
            (r.external_id, r.start_time, r.tz_offset, r.local_day, r.value, r.data, r.source_data)
            for r in stored_records(kind, connection_id=connection.pk)
        )

    for kind in ("heart_rate", "weight"):
        assert stored(as_columns, kind) == stored(as_records, kind)
    # Each on the local day `Record.local_day` gives it (its own arithmetic, not the engine's).
    filed = {(r.external_id.replace("\x00", ""), r.local_day) for r in [*run.records(), single]}
    assert {(r[0], r[3]) for r in stored(as_columns, "heart_rate")} == filed
    assert {day for _, day in filed} == {date(2026, 3, 7), date(2026, 3, 8)}
    with pytest.raises(ValueError, match="different lengths"):
        Readings("heart_rate", ["a"], [at], [0, 0], [1], [{}], [{}])


@pytest.mark.parametrize(
    "columns",
    [
        {"unit": ["bpm"] * 4},  # the usual: a unit beside each number
        {"unit": ["bpm", "bpm", "%", "bpm"]},
        {"flag": [True, False, None, True]},
        {"n": [1, 1.0, True, 0]},  # equal numbers of three types
        {"x": [1.5, float("inf"), -0.0, 2.0]},
        {"s": ["a", "\u00e9", '"', "\x00 \U0001f600"], "k": [1, 2, 3, 2**70]},
        {},
    ],
)
def test_readings_alike_are_written_column_by_column_exactly(columns: dict[str, list[Any]]) -> None:
    """Readings whose fields and source data have the same keys (a provider's list of samples)
    are packed column by column: every value comes back with its type, and the source data's
    text is the one each document alone would have."""
    values: list[Any] = [72, 72, 72.0, True]
    readings = [
        [
            1_700_000_000_000 + 60_000 * n,
            n,
            f"id-{n}",
            -300,
            values[n],
            {"value": values[n], **{key: column[n] for key, column in columns.items()}},
            {key: column[n] for key, column in columns.items()},
            1_700_000_000_123,
            1_700_000_000_123,
        ]
        for n in range(4)
    ]
    back = series.decode(series.encode(readings))
    assert repr(back) == repr(readings)  # repr tells 1, 1.0 and True apart, and -0.0 from 0.0
    documents = [r[series.SOURCE_DATA] for r in readings]
    assert series._encode_items(documents) == [series._encode_item(d) for d in documents]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_any_sequence_of_pages_agrees_with_a_plain_model(alice: Persona, seed: int) -> None:
    """Pages in any order (readings added at a day's end or between its readings, changed,
    moved to another day by a corrected offset, dropped from a re-pulled window), checked
    against a dict of what the provider last said: contents, ids, stamps, counts and rollups."""
    import random

    from sources.upsert import upsert_records

    rng = random.Random(seed)
    connection = demo_connection(alice.human)
    model: dict[str, tuple[datetime, int, float]] = {}  # provider id: (instant, offset, value)
    first_seen: dict[str, datetime] = {}
    changed_at: dict[str, datetime] = {}
    ids: dict[str, tuple[int, date]] = {}
    instants = {k: T0 + timedelta(minutes=37 * k + rng.randrange(30)) for k in range(150)}  # about 4 days
    for step in range(30):
        now = T0 + timedelta(days=30, seconds=step)
        page: dict[str, tuple[datetime, int, float]] = {}
        if step % 7 == 6:  # a re-pulled window: what the provider no longer has goes
            start = T0 + timedelta(hours=rng.randrange(80))
            end = start + timedelta(hours=rng.randrange(1, 30))
            seen = {f"hr-{k}" for k in model if rng.random() < 0.7}
            with transaction.atomic():
                delete_missing(connection_id=connection.pk, kind="heart_rate", start=start, end=end, seen=seen)
            for key in [k for k, (at, _, _) in model.items() if start <= at < end and k not in seen]:
                del model[key], first_seen[key]  # stored again later: a new reading, a new id
                ids.pop(key, None)
            continue
        for k in rng.sample(range(150), rng.randint(1, 60)):
            key = f"hr-{k}"
            at, tz, value = model.get(key, (instants[k], 0, 60.0))
            if key not in model or rng.random() < 0.15:
                value = float(rng.choice([55, 60, 61, 72, 88])) + rng.choice([0, 0.5])
            if rng.random() < 0.05:
                tz = rng.choice([-300, 0, 60, 330])
            page[key] = (at, tz, value)
        with transaction.atomic():
            upsert_records(
                [
                    Record(
                        type="heart_rate",
                        external_id=key,
                        start_time=at,
                        tz_offset=tz,
                        value=value,
                        fields={"value": value, "unit": "bpm"},
                        source_data={"k": key, "v": value},
                    )
                    for key, (at, tz, value) in page.items()
                ],
                human_id=alice.human.pk,
                connection_id=connection.pk,
                source=connection.source,
                now=now,
            )
        for key, reading in page.items():
            if model.get(key) != reading:
                changed_at[key] = now
            first_seen.setdefault(key, now)
            model[key] = reading
        stored = {r.external_id: r for r in stored_records("heart_rate", connection_id=connection.pk)}
        assert set(stored) == set(model), f"step {step}"
        for key, (at, tz, value) in model.items():
            r = stored[key]
            assert (r.start_time, r.tz_offset, r.value, r.source_data) == (at, tz, value, {"k": key, "v": value})
            assert r.local_day == (at + timedelta(minutes=tz)).date()
            assert r.created_at == first_seen[key] and r.updated_at == changed_at[key]
            if key in ids and ids[key][1] == r.local_day:
                assert ids[key][0] == r.pk, f"{key} changed id without changing day"
            ids[key] = (r.pk, r.local_day)
        assert len({r.pk for r in stored.values()}) == len(stored)
        days: dict[date, list[float]] = defaultdict(list)
        for at, tz, value in model.values():
            days[(at + timedelta(minutes=tz)).date()].append(value)
        rollups = {s.local_day: s for s in DayStat.objects.filter(human=alice.human, type="heart_rate") if s.count}
        assert set(rollups) == set(days)
        for day, values in days.items():
            stat = rollups[day]
            assert stat.count == len(values)
            assert stat.stats == finish("heart_rate", [aggregate(m, values) for m in SUMMARIZED["heart_rate"]])
        rows = Series.objects.filter(connection=connection)
        assert sum(row.count for row in rows) == len(model)
        for row in rows:
            times = series.Columns(row.payload).times
            assert times == sorted(times) and (row.first_ms, row.last_ms) == (times[0], times[-1])
