"""Compact time series: the readings of one connection, type and local day in one row.

A device's heart rate every minute is 1,440 readings a day, 99% of everything stored. As rows
each would cost a tuple header, a natural key and three index entries (about 680 bytes); here a
day of them is one `Series` row whose `payload` holds the readings column by column, compressed
(a few bytes each). The engine merges each page into the day rows it touches, the Data API
positions a list with the header columns and opens only the payloads of the page it serves.

Every promise of a record holds for a reading:
- a stable id: `series id << SLOT_BITS | slot`, the slot given once when the reading is first
  stored and never reused in its day;
- `createdAt` kept, `updatedAt` moved only when the reading's content changes (compared as
  canonical JSON, as the row store compares its hash);
- the natural key (connection, type, provider's id) across days: a reading whose local day
  changes (a corrected offset) moves to its new day with its createdAt (and a new id there);
- deletion of what a re-pulled window no longer holds, the day's rollup rewritten with it.

The payload (format 2) is zlib of, in order: the number of readings and the size of a JSON
part (two little-endian uint32); the JSON part (`f` the distinct `fields` objects without their
`value`, `p` the distinct (createdAt, updatedAt) pairs, `o` values no double holds exactly);
then columns, little-endian, one item a reading, sorted by (instant, slot): instants as epoch-ms
deltas (int64), slots (int32), offsets in minutes (int16), indexes into `f` (int32: times 2,
plus 1 where `fields` held `value` itself), indexes into `p` (int32), values (float64) and how
each was given (a byte: null, integer, number, boolean, other); last the provider ids and then
the source data as compact JSON texts, with where each ends (uint32). Opening a payload is a few
array copies; a page parses the JSON of its own readings only.
"""

from __future__ import annotations

import json
import struct
import sys
import zlib
from array import array
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from itertools import accumulate
from json import encoder
from typing import Any

from sources.types import SUMMARIZED, aggregate, finish

from .models import DayStat, Series

SLOT_BITS = 20
MAX_SLOTS = 1 << SLOT_BITS
FORMAT = b"\x02"
_HEAD = struct.Struct("<III")  # readings, bytes of the JSON part, bytes of the provider ids

# A reading in memory: a list indexed by these.
AT, SLOT, KEY, TZ, VALUE, FIELDS, SOURCE_DATA, CREATED, UPDATED = range(9)

_COMPACT = json.JSONEncoder(separators=(",", ":"), default=str)


def _item_encoder() -> Any:
    """`_COMPACT.encode` for one reading's source data, three times faster: the standard library's
    C encoder made once, where `encode` makes one per call (same output: ASCII, compact, `str`
    for what JSON can't hold). Without the C accelerator, `_COMPACT.encode` itself."""
    made = getattr(encoder, "c_make_encoder", None)
    if made is None:  # pragma: no cover - CPython always has it
        return _COMPACT.encode
    one = made(None, str, encoder.encode_basestring_ascii, None, ":", ",", False, False, True)
    return lambda value: "".join(one(value, 0))


_encode_item = _item_encoder()
_CANONICAL = json.JSONEncoder(separators=(",", ":"), sort_keys=True, default=str)


def reading_id(series_id: int, slot: int) -> int:
    return series_id << SLOT_BITS | slot


def split_id(reading: int) -> tuple[int, int]:
    return reading >> SLOT_BITS, reading & (MAX_SLOTS - 1)


# --- the payload ----------------------------------------------------------------------------


def encode(readings: Sequence[list[Any]]) -> bytes:
    ordered = sorted(readings, key=lambda r: (r[AT], r[SLOT]))
    count = len(ordered)
    field_index: dict[Any, int] = {}
    field_docs: list[Any] = []
    field_refs = array("i")
    pair_index: dict[tuple[int, int], int] = {}
    pair_refs = array("i")
    values, kinds, other = array("d"), bytearray(), {}
    for n, r in enumerate(ordered):
        fields, value = r[FIELDS], r[VALUE]
        # `value` is kept once where the fields repeat it exactly (same number, same type).
        has_value = "value" in fields and type(fields["value"]) is type(value) and fields["value"] == value
        rest = {k: v for k, v in fields.items() if k != "value"} if has_value else fields
        key = _dedupe_key(rest)
        if key not in field_index:
            field_index[key] = len(field_docs)
            field_docs.append(rest)
        field_refs.append(field_index[key] * 2 + has_value)
        pair = (r[CREATED], r[UPDATED])
        if pair not in pair_index:
            pair_index[pair] = len(pair_index)
        pair_refs.append(pair_index[pair])
        kind = _value_kind(value)
        kinds.append(kind)
        values.append(float(value) if kind in (_INT, _FLOAT, _BOOL) else 0.0)
        if kind == _OTHER:
            other[str(n)] = value
    times = [r[AT] for r in ordered]
    meta = _COMPACT.encode({"f": field_docs, "p": [list(p) for p in pair_index], "o": other}).encode()
    keys = _COMPACT.encode([r[KEY] for r in ordered]).encode()
    # The source data as one JSON array, with where each item ends (the encoder writes ASCII
    # only, so characters are bytes): a page slices out its own items.
    texts = [_encode_item(r[SOURCE_DATA]) for r in ordered]
    ends = list(accumulate((len(t) + 1 for t in texts), initial=0))[1:]
    blob = b"".join(
        (
            _HEAD.pack(count, len(meta), len(keys)),
            meta,
            keys,
            _bytes(array("q", [b - a for a, b in zip([0, *times], times, strict=False)])),
            _bytes(array("i", [r[SLOT] for r in ordered])),
            _bytes(array("h", [r[TZ] for r in ordered])),
            _bytes(field_refs),
            _bytes(pair_refs),
            _bytes(values),
            bytes(kinds),
            _bytes(array("I", ends)),
            f"[{','.join(texts)}]".encode(),
        )
    )
    return FORMAT + zlib.compress(blob, 6)


# How a reading's value was given: its JSON type comes back as it went in.
_NONE, _INT, _FLOAT, _BOOL, _OTHER = range(5)


def _value_kind(value: Any) -> int:
    kind = type(value)
    if value is None:
        return _NONE
    if kind is bool:
        return _BOOL
    if kind is int:
        return _INT if -(2**53) <= value <= 2**53 else _OTHER  # exact as a double, or kept aside
    return _FLOAT if kind is float else _OTHER


_LITTLE = sys.byteorder == "little"
# The widths the format needs (C's int is 32 bits wherever CPython runs; checked, not assumed).
if array("i").itemsize != 4 or array("I").itemsize != 4 or array("h").itemsize != 2:  # pragma: no cover
    raise ImportError("data_api.series needs 32-bit C ints")


def _bytes(values: array[Any]) -> bytes:
    """Little-endian, whatever the machine."""
    if not _LITTLE:
        values = array(values.typecode, values)
        values.byteswap()
    return values.tobytes()


def _array(typecode: str, blob: bytes, start: int, count: int) -> tuple[array[Any], int]:
    """`count` items of `typecode` from `blob` at `start`, and where the next column starts."""
    values = array(typecode)
    end = start + count * values.itemsize
    values.frombytes(blob[start:end])
    if not _LITTLE:
        values.byteswap()
    return values, end


def _dedupe_key(fields: dict[str, Any]) -> Any:
    """Equal for equal objects (1, 1.0 and True told apart by their types); their canonical
    JSON where a value can't be hashed."""
    key = (tuple(fields.items()), tuple(map(type, fields.values())))
    try:
        hash(key)
    except TypeError:
        return _CANONICAL.encode(fields)
    return key


class Columns:
    """A payload opened: its columns as arrays, each reading built only when asked for (its
    provider id and source data are JSON texts, parsed one by one)."""

    __slots__ = (
        "count",
        "ends",
        "field_docs",
        "field_refs",
        "keys_json",
        "kinds",
        "offsets",
        "other",
        "pair_refs",
        "pairs",
        "slots",
        "text",
        "times",
        "values",
    )

    def __init__(self, payload: bytes | memoryview) -> None:
        raw = bytes(payload)
        if raw[:1] != FORMAT:
            raise ValueError(f"unknown series payload format {raw[:1]!r}")
        blob = zlib.decompress(raw[1:])
        count, meta_size, keys_size = _HEAD.unpack_from(blob)
        start = _HEAD.size + meta_size
        meta = json.loads(blob[_HEAD.size : start])
        self.keys_json = blob[start : start + keys_size]
        start += keys_size
        self.count = count
        self.field_docs, self.pairs, self.other = meta["f"], meta["p"], meta["o"]
        deltas, start = _array("q", blob, start, count)
        self.times = list(accumulate(deltas))
        self.slots, start = _array("i", blob, start, count)
        self.offsets, start = _array("h", blob, start, count)
        self.field_refs, start = _array("i", blob, start, count)
        self.pair_refs, start = _array("i", blob, start, count)
        self.values, start = _array("d", blob, start, count)
        self.kinds = blob[start : start + count]
        self.ends, start = _array("I", blob, start + count, count)
        self.text = blob[start:]

    def __len__(self) -> int:
        return self.count

    def stamps(self, n: int) -> tuple[int, int]:
        created, updated = self.pairs[self.pair_refs[n]]
        return created, updated

    def value(self, n: int) -> Any:
        kind = self.kinds[n]
        if kind == _FLOAT:
            return self.values[n]
        if kind == _INT:
            return int(self.values[n])
        if kind == _NONE:
            return None
        return bool(self.values[n]) if kind == _BOOL else self.other[str(n)]

    def source_data(self, n: int) -> Any:
        """One reading's source data: its item of the array, parsed alone."""
        return json.loads(self.text[(self.ends[n - 1] if n else 0) + 1 : self.ends[n]])

    def reading(self, n: int, key: str = "", source_data: Any = None) -> list[Any]:
        """Reading `n`; its provider id is given by `readings` (reads have no use for it)."""
        ref, value = self.field_refs[n], self.value(n)
        rest = self.field_docs[ref >> 1]
        fields = {"value": value, **rest} if ref & 1 else dict(rest)
        created, updated = self.stamps(n)
        if source_data is None:
            source_data = self.source_data(n)
        return [self.times[n], self.slots[n], key, self.offsets[n], value, fields, source_data, created, updated]

    def readings(self) -> list[list[Any]]:
        """Every reading, with its provider id (the arrays of ids and source data parsed whole)."""
        keys, documents = json.loads(self.keys_json), json.loads(self.text)
        return [self.reading(n, keys[n], documents[n]) for n in range(self.count)]


def decode(payload: bytes | memoryview) -> list[list[Any]]:
    """The readings of a payload, sorted by (instant, slot)."""
    return Columns(payload).readings()


def content(r: Sequence[Any]) -> tuple[Any, ...]:
    """What a change is judged on: everything but the slot and the stamps."""
    return (r[AT], r[TZ], r[VALUE], _CANONICAL.encode(r[FIELDS]), _CANONICAL.encode(r[SOURCE_DATA]))


# The columns a day row's readings decide (see `header`), rewritten with them.
HEADER_COLUMNS = ("count", "first_ms", "last_ms", "created_ms", "updated_ms", "stamps", "payload")


def header(readings: Sequence[list[Any]]) -> dict[str, Any]:
    """HEADER_COLUMNS of a day row holding these readings (at least one)."""
    stamps = Counter((r[CREATED], r[UPDATED]) for r in readings)
    return {
        "count": len(readings),
        "first_ms": min(r[AT] for r in readings),
        "last_ms": max(r[AT] for r in readings),
        "created_ms": min(r[CREATED] for r in readings),
        "updated_ms": max(r[UPDATED] for r in readings),
        "stamps": [[c, u, n] for (c, u), n in sorted(stamps.items())],
        "payload": encode(readings),
    }


# --- one day row in memory -------------------------------------------------------------------


@dataclass
class Day:
    kind: str
    day: date
    row: Series | None
    readings: dict[str, list[Any]] = field(default_factory=dict)  # by provider id
    next_slot: int = 0
    dirty: bool = False

    def header(self, human_id: str, connection_id: str, source: str) -> Series:
        row = self.row or Series(
            human_id=human_id, connection_id=connection_id, source=source, type=self.kind, local_day=self.day
        )
        for name, value in header(list(self.readings.values())).items():
            setattr(row, name, value)
        row.next_slot = self.next_slot
        return row


def _load(rows: Iterable[Series]) -> dict[tuple[str, date], Day]:
    days = {}
    for row in rows:
        readings = {r[KEY]: r for r in decode(row.payload)}
        days[(row.type, row.local_day)] = Day(row.type, row.local_day, row, readings, row.next_slot)
    return days


# --- writes (the engine's) -------------------------------------------------------------------


@dataclass
class Written:
    created: int = 0
    updated: int = 0


def write(
    items: Iterable[tuple[str, str, int, int, date, float | None, dict[str, Any], dict[str, Any]]],
    *,
    human_id: str,
    connection_id: str,
    source: str,
    now_ms: int,
) -> dict[str, Written]:
    """Merge readings (type, provider id, epoch ms, offset, local day, value, fields, source
    data) into their day rows; must run inside a transaction. The last copy of a duplicated id
    wins. Returns what was created and updated per type."""
    incoming: dict[tuple[str, date], dict[str, tuple[Any, ...]]] = defaultdict(dict)
    for item in items:
        incoming[(item[0], item[4])][item[1]] = item
    if not incoming:
        return {}
    wanted: dict[str, set[date]] = defaultdict(set)
    for kind, day in incoming:
        # A reading's day may have moved by one (a corrected offset): its old day is looked in.
        wanted[kind].update((day - timedelta(days=1), day, day + timedelta(days=1)))
    days: dict[tuple[str, date], Day] = {}
    for kind, dates in wanted.items():
        rows = Series.objects.select_for_update().filter(
            connection_id=connection_id, type=kind, local_day__in=sorted(dates)
        )
        days.update(_load(rows.order_by("local_day")))
    written: dict[str, Written] = defaultdict(Written)
    for (kind, day), batch in incoming.items():
        target = days.setdefault((kind, day), Day(kind, day, None))
        counts = written[kind]
        for key, (_, _, at, tz, _, value, fields, source_data) in batch.items():
            new = [at, 0, key, tz, value, _plain(fields), _plain(source_data), now_ms, now_ms]
            old = target.readings.get(key)
            if old is None:
                old = _take_from_neighbour(days, kind, day, key)
                if old is not None:  # moved days: same reading, new home
                    new[CREATED] = old[CREATED]
                    new[SLOT] = _next_slot(target)
                    target.readings[key] = new
                    target.dirty = True
                    counts.updated += 1
                    continue
                new[SLOT] = _next_slot(target)
                target.readings[key] = new
                target.dirty = True
                counts.created += 1
            elif content(old) != content(new):
                new[SLOT], new[CREATED] = old[SLOT], old[CREATED]
                target.readings[key] = new
                target.dirty = True
                counts.updated += 1
    _save([d for d in days.values() if d.dirty], human_id, connection_id, source)
    return dict(written)


def _plain(mapping: Any) -> dict[str, Any]:
    return mapping if type(mapping) is dict else dict(mapping)


def _take_from_neighbour(days: dict[tuple[str, date], Day], kind: str, day: date, key: str) -> list[Any] | None:
    for other in (day - timedelta(days=1), day + timedelta(days=1)):
        neighbour = days.get((kind, other))
        if neighbour is not None and key in neighbour.readings:
            neighbour.dirty = True
            return neighbour.readings.pop(key)
    return None


def _next_slot(day: Day) -> int:
    if day.next_slot >= MAX_SLOTS:
        raise OverflowError(f"{day.kind} {day.day}: more than {MAX_SLOTS} readings ever stored in one day")
    day.next_slot += 1
    return day.next_slot - 1


def _save(dirty: list[Day], human_id: str, connection_id: str, source: str) -> None:
    """Write the changed day rows and their rollups, in the caller's transaction."""
    if not dirty:
        return
    emptied = [d.row.pk for d in dirty if not d.readings and d.row is not None]
    if emptied:
        Series.objects.filter(pk__in=emptied).delete()
    kept = [d for d in dirty if d.readings]
    headers = [d.header(human_id, connection_id, source) for d in kept]
    Series.objects.bulk_create([h for h in headers if h.pk is None])
    Series.objects.bulk_update([h for h in headers if h.pk is not None], [*HEADER_COLUMNS, "next_slot"])
    touched = {(d.kind, d.day) for d in dirty}
    _roll_up(human_id, connection_id, source, touched, {(d.kind, d.day): d for d in kept})


def _roll_up(
    human_id: str, connection_id: str, source: str, touched: set[tuple[str, date]], fresh: dict[tuple[str, date], Day]
) -> None:
    """Rewrite the daily rollups (DayStat) of the touched days of summarized types, from every
    connection of this source (a Human may have linked one source twice)."""
    touched = {(kind, day) for kind, day in touched if kind in SUMMARIZED}
    if not touched:
        return
    by_day: dict[tuple[str, date], list[list[Any]]] = {key: list(d.readings.values()) for key, d in fresh.items()}
    others = Series.objects.filter(
        human_id=human_id,
        source=source,
        type__in=sorted({kind for kind, _ in touched}),
        local_day__in=sorted({day for _, day in touched}),
    ).exclude(connection_id=connection_id)
    for row in others:
        if (row.type, row.local_day) in touched:
            by_day.setdefault((row.type, row.local_day), []).extend(decode(row.payload))
    stats = []
    for kind, day in sorted(touched):
        readings = by_day.get((kind, day), [])
        stats.append(day_stat(human_id, source, kind, day, readings))
    DayStat.objects.bulk_create(
        stats,
        update_conflicts=True,
        unique_fields=["human", "type", "local_day", "source"],
        update_fields=["count", "stats", "created_at", "updated_at", "generation", "done_generation"],
    )


def day_stat(human_id: str, source: str, kind: str, day: date, readings: list[list[Any]]) -> DayStat:
    row = DayStat(human_id=human_id, type=kind, local_day=day, source=source, generation=1, done_generation=1)
    if not readings:
        row.count, row.stats, row.created_at, row.updated_at = 0, {}, None, None
        return row
    values = []
    for measure in SUMMARIZED[kind]:
        raw = [r[VALUE] if not measure.field else r[FIELDS].get(measure.field) for r in readings]
        values.append(aggregate(measure, [float(v) for v in raw if isinstance(v, int | float)]))
    row.count = len(readings)
    row.stats = finish(kind, values)
    row.created_at = datetime.fromtimestamp(min(r[CREATED] for r in readings) / 1000, UTC)
    row.updated_at = datetime.fromtimestamp(max(r[UPDATED] for r in readings) / 1000, UTC)
    return row


def _overlapping(connection_id: str, kind: str, start_ms: int, end_ms: int) -> Any:
    return Series.objects.filter(
        connection_id=connection_id, type=kind, first_ms__lt=end_ms, last_ms__gte=start_ms
    ).order_by("local_day")


def delete_missing(*, connection_id: str, kind: str, start_ms: int, end_ms: int, seen: set[str]) -> int:
    """Delete the readings of [start, end) whose provider ids are not in `seen`; must run inside
    a transaction. Returns how many."""
    rows = list(_overlapping(connection_id, kind, start_ms, end_ms).select_for_update())
    if not rows:
        return 0
    days = _load(rows)
    deleted = 0
    for day in days.values():
        gone = [k for k, r in day.readings.items() if start_ms <= r[AT] < end_ms and k not in seen]
        for key in gone:
            del day.readings[key]
        if gone:
            day.dirty = True
            deleted += len(gone)
    first = rows[0]
    _save([d for d in days.values() if d.dirty], first.human_id, connection_id, first.source)
    return deleted


def count_in_window(*, connection_id: str, kind: str, start_ms: int, end_ms: int) -> int:
    total = 0
    for row in _overlapping(connection_id, kind, start_ms, end_ms):
        if start_ms <= row.first_ms and row.last_ms < end_ms:
            total += row.count
        else:
            total += sum(1 for r in decode(row.payload) if start_ms <= r[AT] < end_ms)
    return total
