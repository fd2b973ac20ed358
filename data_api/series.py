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
from operator import itemgetter
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
    """The payload of these readings, in any order."""
    return pack(None, list(readings)).payload


_ORDER = itemgetter(AT, SLOT)
_ABSENT = object()


@dataclass
class Packed:
    """A day's readings written out: the payload, what the row's header says of them, and what
    its rollup reads (the values and the `fields` column by column)."""

    payload: bytes
    count: int
    first_ms: int
    last_ms: int
    stamps: list[list[int]]
    values: array[float]
    kinds: bytes
    other: dict[str, Any]
    field_refs: Sequence[int]
    field_docs: list[Any]

    @property
    def created_ms(self) -> int:
        return min(c for c, _, _ in self.stamps)

    @property
    def updated_ms(self) -> int:
        return max(u for _, u, _ in self.stamps)

    def columns(self) -> dict[str, Any]:
        """HEADER_COLUMNS of the day row holding these readings."""
        return {
            "count": self.count,
            "first_ms": self.first_ms,
            "last_ms": self.last_ms,
            "created_ms": self.created_ms,
            "updated_ms": self.updated_ms,
            "stamps": self.stamps,
            "payload": self.payload,
        }

    def numbers(self, name: str) -> list[float]:
        """The numeric values of `fields[name]` (of the value column where `name` is empty)."""
        if not name and _NONE not in self.kinds and _OTHER not in self.kinds:
            return self.values.tolist()
        documented = [doc.get(name) for doc in self.field_docs]
        given = (
            (
                _value(self.values, self.kinds, self.other, n)
                if not name or (ref & 1 and name == "value")
                else documented[ref >> 1]
            )
            for n, ref in enumerate(self.field_refs)
        )
        return [float(v) for v in given if isinstance(v, int | float)]


def pack(stored: Columns | None, fresh: list[list[Any]]) -> Packed:
    """The payload of a day: the readings already `stored` in it (left as they are, not parsed)
    and the `fresh` ones (sorted here), in (instant, slot) order."""
    fresh.sort(key=_ORDER)
    field_docs: list[Any] = list(stored.field_docs) if stored else []
    field_index = {_dedupe_key(doc): n for n, doc in enumerate(field_docs)}
    pairs: list[tuple[int, int]] = [(c, u) for c, u in stored.pairs] if stored else []
    pair_index = {pair: n for n, pair in enumerate(pairs)}
    base = stored.count if stored else 0
    field_refs, pair_refs, values, kinds, other = [], [], array("d"), bytearray(), {}
    kind_of = _KIND_OF
    for n, r in enumerate(fresh, base):
        fields, value = r[FIELDS], r[VALUE]
        # `value` is kept once where the fields repeat it exactly (same number, same type).
        given = fields.get("value", _ABSENT)
        if given is not _ABSENT and type(given) is type(value) and given == value:
            rest, has_value = {k: v for k, v in fields.items() if k != "value"}, 1
        else:
            rest, has_value = fields, 0
        key = _dedupe_key(rest)
        ref = field_index.get(key)
        if ref is None:
            ref = field_index[key] = len(field_docs)
            field_docs.append(rest)
        field_refs.append(ref * 2 + has_value)
        pair = (r[CREATED], r[UPDATED])
        ref = pair_index.get(pair)
        if ref is None:
            ref = pair_index[pair] = len(pairs)
            pairs.append(pair)
        pair_refs.append(ref)
        kind = kind_of.get(type(value), _OTHER)
        if kind == _INT and not -_EXACT <= value <= _EXACT:
            kind = _OTHER  # no double holds it exactly: kept aside
        kinds.append(kind)
        if kind == _OTHER:
            other[str(n)] = value
            values.append(0.0)
        else:
            values.append(value or 0.0)
    texts = [_encode_item(r[SOURCE_DATA]) for r in fresh]
    times = [r[AT] for r in fresh]
    slots = [r[SLOT] for r in fresh]
    offsets = [r[TZ] for r in fresh]
    keys = [r[KEY] for r in fresh]
    if stored is None or not stored.count:
        items = f"[{','.join(texts)}]".encode()
        ends = list(accumulate((len(t) + 1 for t in texts), initial=0))[1:]
        keys_json = _COMPACT.encode(keys).encode()
    else:
        in_order = not fresh or (stored.times[-1], stored.slots[-1]) < (times[0], slots[0])
        # The stored columns as they are, then the new readings'.
        joined_times = stored.times + times
        joined_slots = [*stored.slots, *slots]
        offsets = [*stored.offsets, *offsets]
        field_refs = [*stored.field_refs, *field_refs]
        pair_refs = [*stored.pair_refs, *pair_refs]
        values = stored.values + values
        kinds = bytearray(stored.kinds) + kinds
        other = {**stored.other, **other}
        if in_order:  # the usual case, a day growing at its end: nothing to reorder
            times, slots = joined_times, joined_slots
            items = stored.text[:-1] + f",{','.join(texts)}]".encode() if fresh else stored.text
            last = stored.ends[-1]
            ends = [*stored.ends, *(last + e for e in accumulate(len(t) + 1 for t in texts))]
            keys_json = stored.keys_json[:-1] + b"," + _COMPACT.encode(keys).encode()[1:] if fresh else stored.keys_json
        else:  # interleaved: every column put in order
            order = sorted(range(len(joined_times)), key=lambda n: (joined_times[n], joined_slots[n]))
            every = [stored.item(n) for n in range(base)] + [t.encode() for t in texts]
            keys_all = json.loads(stored.keys_json) + keys
            times, slots = [joined_times[n] for n in order], [joined_slots[n] for n in order]
            offsets = [offsets[n] for n in order]
            field_refs, pair_refs = [field_refs[n] for n in order], [pair_refs[n] for n in order]
            values, kinds = array("d", [values[n] for n in order]), bytearray(kinds[n] for n in order)
            at = {old: new for new, old in enumerate(order)}
            other = {str(at[int(n)]): v for n, v in other.items()}
            chosen = [every[n] for n in order]
            items = b"[" + b",".join(chosen) + b"]"
            ends = list(accumulate((len(t) + 1 for t in chosen), initial=0))[1:]
            keys_json = _COMPACT.encode([keys_all[n] for n in order]).encode()
    count = len(times)
    meta = _COMPACT.encode({"f": field_docs, "p": [list(p) for p in pairs], "o": other}).encode()
    blob = b"".join(
        (
            _HEAD.pack(count, len(meta), len(keys_json)),
            meta,
            keys_json,
            _bytes(array("q", [b - a for a, b in zip([0, *times], times, strict=False)])),
            _bytes(array("i", slots)),
            _bytes(array("h", offsets)),
            _bytes(array("i", field_refs)),
            _bytes(array("i", pair_refs)),
            _bytes(values),
            bytes(kinds),
            _bytes(array("I", ends)),
            items,
        )
    )
    stamps = Counter(pair_refs)
    return Packed(
        payload=FORMAT + zlib.compress(blob, 6),
        count=count,
        first_ms=times[0],
        last_ms=times[-1],
        stamps=sorted([*pairs[ref], n] for ref, n in stamps.items()),
        values=values,
        kinds=bytes(kinds),
        other=other,
        field_refs=field_refs,
        field_docs=field_docs,
    )


# How a reading's value was given: its JSON type comes back as it went in.
_NONE, _INT, _FLOAT, _BOOL, _OTHER = range(5)


def _value(values: array[float], kinds: bytes, other: dict[str, Any], n: int) -> Any:
    kind = kinds[n]
    if kind == _FLOAT:
        return values[n]
    if kind == _INT:
        return int(values[n])
    if kind == _NONE:
        return None
    return bool(values[n]) if kind == _BOOL else other[str(n)]


_KIND_OF = {int: _INT, float: _FLOAT, bool: _BOOL, type(None): _NONE}
_EXACT = 2**53  # integers up to this hold exactly in a double


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
        return _value(self.values, self.kinds, self.other, n)

    def item(self, n: int) -> bytes:
        """Reading `n`'s source data as stored: one item of the JSON array."""
        return self.text[(self.ends[n - 1] if n else 0) + 1 : self.ends[n]]

    def source_data(self, n: int) -> Any:
        """One reading's source data: its item of the array, parsed alone."""
        return json.loads(self.item(n))

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


# The columns a day row's readings decide (see `Packed.columns`), rewritten with them.
HEADER_COLUMNS = ("count", "first_ms", "last_ms", "created_ms", "updated_ms", "stamps", "payload")


def header(readings: Sequence[list[Any]]) -> dict[str, Any]:
    """HEADER_COLUMNS of a day row holding these readings (at least one)."""
    return pack(None, list(readings)).columns()


# --- one day row in memory -------------------------------------------------------------------


@dataclass
class Day:
    """A day row being written. Its stored readings stay packed while readings are only added
    (the usual sync: new minutes at the end of a day); the day is opened, every reading parsed
    into `opened` by provider id, only when one of them changes, moves or goes."""

    kind: str
    day: date
    row: Series | None
    stored: Columns | None = None
    fresh: list[list[Any]] = field(default_factory=list)
    opened: dict[str, list[Any]] | None = None
    next_slot: int = 0
    dirty: bool = False
    _keys: set[str] | None = None

    def has(self, key: str) -> bool:
        if self.opened is not None:
            return key in self.opened
        if self._keys is None:
            self._keys = set(json.loads(self.stored.keys_json)) if self.stored else set()
        return key in self._keys

    def open(self) -> dict[str, list[Any]]:
        if self.opened is None:
            self.opened = {r[KEY]: r for r in (self.stored.readings() if self.stored else ())}
            self.opened.update((r[KEY], r) for r in self.fresh)
            self.stored, self.fresh, self._keys = None, [], None
        return self.opened

    def add(self, reading: list[Any]) -> None:
        """A reading new to this day: given the next slot."""
        if self.next_slot >= MAX_SLOTS:
            raise OverflowError(f"{self.kind} {self.day}: more than {MAX_SLOTS} readings ever stored in one day")
        reading[SLOT] = self.next_slot
        self.next_slot += 1
        self.dirty = True
        if self.opened is not None:
            self.opened[reading[KEY]] = reading
            return
        self.has(reading[KEY])  # the stored keys, read before this one joins them
        assert self._keys is not None
        self._keys.add(reading[KEY])
        self.fresh.append(reading)

    def empty(self) -> bool:
        if self.opened is not None:
            return not self.opened
        return not self.fresh and not (self.stored and self.stored.count)

    def pack(self) -> Packed:
        if self.opened is not None:
            return pack(None, list(self.opened.values()))
        return pack(self.stored, self.fresh)


def _load(rows: Iterable[Series]) -> dict[tuple[str, date], Day]:
    return {
        (row.type, row.local_day): Day(row.type, row.local_day, row, Columns(row.payload), next_slot=row.next_slot)
        for row in rows
    }


# --- writes (the engine's) -------------------------------------------------------------------


@dataclass
class Written:
    created: int = 0
    updated: int = 0


def write(
    items: Iterable[tuple[str, date, list[Any]]],
    *,
    human_id: str,
    connection_id: str,
    source: str,
) -> dict[str, Written]:
    """Merge readings, each (type, local day, reading), into their day rows; must run inside a
    transaction. A reading's stamps are the time of this write. The last copy of a duplicated
    provider id wins. Returns what was created and updated per type."""
    incoming: dict[tuple[str, date], dict[str, list[Any]]] = defaultdict(dict)
    for kind, day, reading in items:
        incoming[(kind, day)][reading[KEY]] = reading
    if not incoming:
        return {}
    wanted: dict[str, set[date]] = defaultdict(set)
    for kind, day in incoming:
        # A reading's day may have moved by one (a corrected offset): its old day is looked in.
        wanted[kind].update((day - _ONE_DAY, day, day + _ONE_DAY))
    days: dict[tuple[str, date], Day] = {}
    for kind, dates in wanted.items():
        rows = Series.objects.select_for_update().filter(
            connection_id=connection_id, type=kind, local_day__in=sorted(dates)
        )
        days.update(_load(rows.order_by("local_day")))
    written: dict[str, Written] = defaultdict(Written)
    for (kind, day), batch in incoming.items():
        target = days.setdefault((kind, day), Day(kind, day, None))
        neighbours = [d for d in (days.get((kind, day - _ONE_DAY)), days.get((kind, day + _ONE_DAY))) if d]
        counts = written[kind]
        for key, new in batch.items():
            if target.has(key):
                old = target.open()[key]
                if content(old) != content(new):
                    new[SLOT], new[CREATED] = old[SLOT], old[CREATED]
                    target.opened[key] = new  # type: ignore[index]
                    target.dirty = True
                    counts.updated += 1
                continue
            for moved in neighbours:
                if moved.has(key):  # moved days: the same reading, a new home (and id) there
                    new[CREATED] = moved.open().pop(key)[CREATED]
                    moved.dirty = True
                    counts.updated += 1
                    break
            else:
                counts.created += 1
            target.add(new)
    _save([d for d in days.values() if d.dirty], human_id, connection_id, source)
    return dict(written)


_ONE_DAY = timedelta(days=1)


def _save(dirty: list[Day], human_id: str, connection_id: str, source: str) -> None:
    """Write the changed day rows and their rollups, in the caller's transaction."""
    if not dirty:
        return
    emptied = [d.row.pk for d in dirty if d.empty() and d.row is not None]
    if emptied:
        Series.objects.filter(pk__in=emptied).delete()
    packed: dict[tuple[str, date], Packed] = {}
    created = []
    for d in dirty:
        if d.empty():
            continue
        p = packed[(d.kind, d.day)] = d.pack()
        if d.row is None:
            created.append(
                Series(
                    human_id=human_id,
                    connection_id=connection_id,
                    source=source,
                    type=d.kind,
                    local_day=d.day,
                    next_slot=d.next_slot,
                    **p.columns(),
                )
            )
        else:
            Series.objects.filter(pk=d.row.pk).update(next_slot=d.next_slot, **p.columns())
    Series.objects.bulk_create(created)
    _roll_up(human_id, connection_id, source, {(d.kind, d.day) for d in dirty}, packed)


def _roll_up(
    human_id: str,
    connection_id: str,
    source: str,
    touched: set[tuple[str, date]],
    fresh: dict[tuple[str, date], Packed],
) -> None:
    """Rewrite the daily rollups (DayStat) of the touched days of summarized types, from every
    connection of this source (a Human may have linked one source twice)."""
    touched = {(kind, day) for kind, day in touched if kind in SUMMARIZED}
    if not touched:
        return
    by_day: dict[tuple[str, date], list[Packed]] = {key: [p] for key, p in fresh.items()}
    others = Series.objects.filter(
        human_id=human_id,
        source=source,
        type__in=sorted({kind for kind, _ in touched}),
        local_day__in=sorted({day for _, day in touched}),
    ).exclude(connection_id=connection_id)
    for row in others:
        if (row.type, row.local_day) in touched:
            by_day.setdefault((row.type, row.local_day), []).append(pack(Columns(row.payload), []))
    stats = [_day_stat(human_id, source, kind, day, by_day.get((kind, day), [])) for kind, day in sorted(touched)]
    DayStat.objects.bulk_create(
        stats,
        update_conflicts=True,
        unique_fields=["human", "type", "local_day", "source"],
        update_fields=["count", "stats", "created_at", "updated_at", "generation", "done_generation"],
    )


def day_stat(human_id: str, source: str, kind: str, day: date, readings: list[list[Any]]) -> DayStat:
    """The rollup of one day of a summarized type, from its readings."""
    return _day_stat(human_id, source, kind, day, [pack(None, list(readings))] if readings else [])


def _day_stat(human_id: str, source: str, kind: str, day: date, parts: list[Packed]) -> DayStat:
    row = DayStat(human_id=human_id, type=kind, local_day=day, source=source, generation=1, done_generation=1)
    if not parts:
        row.count, row.stats, row.created_at, row.updated_at = 0, {}, None, None
        return row
    values = [aggregate(m, [v for p in parts for v in p.numbers(m.field)]) for m in SUMMARIZED[kind]]
    row.count = sum(p.count for p in parts)
    row.stats = finish(kind, values)
    row.created_at = datetime.fromtimestamp(min(p.created_ms for p in parts) / 1000, UTC)
    row.updated_at = datetime.fromtimestamp(max(p.updated_ms for p in parts) / 1000, UTC)
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
    deleted = 0
    days = _load(rows)
    for day in days.values():
        stored = day.stored
        assert stored is not None
        keys = json.loads(stored.keys_json)
        if all(k in seen for n, k in enumerate(keys) if start_ms <= stored.times[n] < end_ms):
            continue  # nothing gone: left packed
        readings = day.open()
        gone = [k for k, r in readings.items() if start_ms <= r[AT] < end_ms and k not in seen]
        for key in gone:
            del readings[key]
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
            total += sum(1 for at in Columns(row.payload).times if start_ms <= at < end_ms)
    return total
