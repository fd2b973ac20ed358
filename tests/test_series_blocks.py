"""A day's payload in blocks: a page opens only the blocks it serves, and what it reads is what
was stored, across block boundaries, from payloads of the current format and of format 2."""

from __future__ import annotations

import json
import struct
import zlib
from array import array
from datetime import timedelta
from itertools import accumulate
from typing import Any

import pytest

from data_api import series
from sources.base import Record
from tests.conftest import Persona
from tests.data_api_helpers import T0, access_client, demo_connection, store, stored_records

pytestmark = pytest.mark.django_db

START = 1_700_000_000_000


def day(count: int, *, first_slot: int = 0, step: int = 31_000, start: int = START) -> list[list[Any]]:
    """`count` readings of one day, values and source data of every JSON type among them."""
    values: list[Any] = [72, 64.5, None, True, 2**60, "71"]
    return [
        [
            start + step * n,
            first_slot + n,
            f"hr-{first_slot + n}",
            -300 if n % 3 else 60,
            values[n % len(values)],
            {"value": values[n % len(values)], "unit": "bpm"} if n % 4 else {"unit": "bpm", "ctx": [n % 2]},
            {"n": first_slot + n, "text": "caf\u00e9 ,]}" if n % 5 == 0 else "x"},
            1_700_000_000_123 + n % 2,
            1_700_000_000_456 + n % 3,
        ]
        for n in range(count)
    ]


def format_2(readings: list[list[Any]]) -> bytes:
    """A payload as format 2 wrote it: one zlib stream of the header, the JSON part, the provider
    ids and every column (built here from that description, not by the code under test)."""
    readings = sorted(readings, key=lambda r: (r[0], r[1]))
    docs: list[Any] = []
    pairs: list[list[int]] = []
    refs, pair_refs, values, kinds, other = [], [], array("d"), bytearray(), {}
    for n, r in enumerate(readings):
        fields, value = r[5], r[4]
        has_value = "value" in fields and type(fields["value"]) is type(value) and fields["value"] == value
        rest = {k: v for k, v in fields.items() if k != "value"} if has_value else fields
        if rest not in docs:
            docs.append(rest)
        refs.append(docs.index(rest) * 2 + has_value)
        if [r[7], r[8]] not in pairs:
            pairs.append([r[7], r[8]])
        pair_refs.append(pairs.index([r[7], r[8]]))
        kind = {type(None): 0, int: 1, float: 2, bool: 3}.get(type(value), 4)
        if kind == 1 and abs(value) > 2**53:
            kind = 4
        kinds.append(kind)
        values.append(0.0 if kind in (0, 4) else float(value))
        if kind == 4:
            other[str(n)] = value
    meta = json.dumps({"f": docs, "p": pairs, "o": other}, separators=(",", ":")).encode()
    keys = json.dumps([r[2] for r in readings], separators=(",", ":")).encode()
    texts = [json.dumps(r[6], separators=(",", ":")).encode() for r in readings]
    times = [r[0] for r in readings]
    blob = b"".join(
        (
            struct.pack("<III", len(readings), len(meta), len(keys)),
            meta,
            keys,
            array("q", [b - a for a, b in zip([0, *times], times, strict=False)]).tobytes(),
            array("i", [r[1] for r in readings]).tobytes(),
            array("h", [r[3] for r in readings]).tobytes(),
            array("i", refs).tobytes(),
            array("i", pair_refs).tobytes(),
            values.tobytes(),
            bytes(kinds),
            array("I", list(accumulate(len(t) + 1 for t in texts))).tobytes(),
            b"[" + b",".join(texts) + b"]",
        )
    )
    return b"\x02" + zlib.compress(blob)


@pytest.mark.parametrize("count", [1, series.BLOCK - 1, series.BLOCK, series.BLOCK + 1, 3 * series.BLOCK + 17])
def test_a_day_in_blocks_reads_back_reading_by_reading_and_whole(count: int) -> None:
    readings = day(count)
    payload = series.encode(readings)
    assert payload[:1] == series.FORMAT
    assert series.decode(payload) == readings
    opened = series.Columns(payload)
    # One reading at a time, each from its own block, in any order.
    for n in [count - 1, 0, *range(count // 2, count, 7)]:
        assert opened.reading(n, readings[n][series.KEY]) == readings[n]
        assert json.loads(opened.item(n)) == readings[n][series.SOURCE_DATA]
        assert opened.stamps(n) == (readings[n][series.CREATED], readings[n][series.UPDATED])
    # The whole day's columns, as the write side reads them.
    whole = series.Columns(payload)
    assert whole.times == [r[series.AT] for r in readings]
    assert list(whole.slots) == [r[series.SLOT] for r in readings]
    assert list(whole.offsets) == [r[series.TZ] for r in readings]
    assert json.loads(whole.keys_json) == [r[series.KEY] for r in readings]
    assert json.loads(whole.text) == [r[series.SOURCE_DATA] for r in readings]
    assert [whole.item(n) for n in range(count)] == [opened.item(n) for n in range(count)]
    assert len(whole.ends) == len(whole.kinds) == len(whole.values) == len(whole.pair_refs) == count


def test_a_format_2_payload_still_opens_and_grows_into_the_current_format() -> None:
    readings = day(2 * series.BLOCK + 5)
    old = series.Columns(format_2(readings))
    assert old.readings() == readings
    assert [old.reading(n, r[series.KEY]) for n, r in enumerate(readings)] == readings
    assert old.readings() == series.Columns(series.encode(readings)).readings()
    later = day(40, first_slot=len(readings), start=readings[-1][series.AT] + 1)
    between = day(40, first_slot=len(readings), start=START + 15_000)
    for fresh in (later, between):
        grown = series.pack(series.Columns(format_2(readings)), [list(r) for r in fresh])
        assert grown.payload[:1] == series.FORMAT
        assert series.decode(grown.payload) == sorted(readings + fresh, key=lambda r: (r[0], r[1]))
        assert grown.count == len(readings) + len(fresh)


def test_pages_across_the_blocks_of_a_day_are_its_exact_order(alice: Persona) -> None:
    connection = demo_connection(alice.human)
    count = 2 * series.BLOCK + 40
    store(
        connection,
        [
            Record(
                type="heart_rate",
                external_id=f"hr-{n}",
                start_time=T0 + timedelta(seconds=30 * n),
                tz_offset=0,
                value=60 + n % 50,
                fields={"value": 60 + n % 50, "unit": "bpm"},
                source_data={"n": n, "text": "\u00e9" * (n % 3)},
            )
            for n in range(count)
        ],
    )
    expected = stored_records("heart_rate", human_id=alice.human.pk)
    assert len(expected) == count
    client = access_client(alice.human)
    for limit in (1, 37, series.BLOCK, 500):
        items: list[dict[str, Any]] = []
        for offset in range(0, count + limit, limit):
            response = client.get("/v1/human/heart_rate/readings", {"limit": limit, "offset": offset})
            assert response.status_code == 200 and response["X-Total-Count"] == str(count)
            items += response.json()
        assert [r["id"] for r in items] == [str(r.pk) for r in expected]
        assert [r["sourceData"] for r in items] == [r.source_data for r in expected]
        assert [r["value"] for r in items] == [r.value for r in expected]
