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
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from itertools import accumulate
from json import encoder
from operator import itemgetter
from typing import Any

from django.db import connection as db
from psycopg.types.json import Jsonb

from humanapi_project import sql
from humanapi_project.sql import fetch
from sources.types import SUMMARIZED, aggregate, finish

from .models import DayStat, Series

SLOT_BITS = 20
MAX_SLOTS = 1 << SLOT_BITS
FORMAT = b"\x02"
_TABLE = Series._meta.db_table
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
    field_refs = _field_refs(fresh, field_docs, field_index)
    # (createdAt, updatedAt) pairs: usually one for a whole write.
    stamped = list(zip(map(_CREATED, fresh), map(_UPDATED, fresh), strict=True))
    for pair in dict.fromkeys(stamped):
        if pair not in pair_index:
            pair_index[pair] = len(pairs)
            pairs.append(pair)
    pair_refs = list(map(pair_index.__getitem__, stamped))
    values, kinds, other = _values(list(map(_VALUE, fresh)), base)
    texts = list(map(_encode_item, map(_SOURCE_DATA, fresh)))
    times = list(map(_AT, fresh))
    slots = list(map(_SLOT, fresh))
    offsets = list(map(_TZ, fresh))
    keys = list(map(_KEY, fresh))
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
        payload=FORMAT + zlib.compress(blob, _LEVEL),
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


# zlib's fastest level: a third of level 6's time for 10% more bytes (about 14 bytes a reading
# against 12.6 on a day of minute-level heart rate).
_LEVEL = 1

_AT, _SLOT, _KEY, _TZ, _VALUE = itemgetter(AT), itemgetter(SLOT), itemgetter(KEY), itemgetter(TZ), itemgetter(VALUE)
_FIELDS, _SOURCE_DATA = itemgetter(FIELDS), itemgetter(SOURCE_DATA)
_CREATED, _UPDATED = itemgetter(CREATED), itemgetter(UPDATED)


def _field_refs(fresh: list[list[Any]], field_docs: list[Any], field_index: dict[Any, int]) -> list[int]:
    """Each reading's `fields` as an index into `field_docs` (times 2, plus 1 where they held the
    reading's value itself, kept once in the value column), new documents appended."""
    refs = []
    seen: dict[Any, int] = {}  # the same fields with the same value: the same reference
    for r in fresh:
        fields, value = r[FIELDS], r[VALUE]
        try:
            probe: Any = (tuple(fields.items()), tuple(map(type, fields.values())), value, type(value))
            ref = seen.get(probe)
        except TypeError:  # an unhashable value in the fields
            probe = ref = None
        if ref is None:
            # `value` is kept once where the fields repeat it exactly (same number, same type).
            given = fields.get("value", _ABSENT)
            if given is not _ABSENT and type(given) is type(value) and given == value:
                rest, has_value = {k: v for k, v in fields.items() if k != "value"}, 1
            else:
                rest, has_value = fields, 0
            key = _dedupe_key(rest)
            doc = field_index.get(key)
            if doc is None:
                doc = field_index[key] = len(field_docs)
                field_docs.append(rest)
            ref = doc * 2 + has_value
            if probe is not None:
                seen[probe] = ref
        refs.append(ref)
    return refs


def _values(given: list[Any], base: int) -> tuple[array[float], bytearray, dict[str, Any]]:
    """The value column, how each value was given, and the values no double holds (by their
    position in the day, counted from `base`)."""
    types = set(map(type, given))
    if types <= _NUMBERS and (not given or (min(given) >= -_EXACT and max(given) <= _EXACT)):
        return array("d", given), bytearray(map(_KIND_OF.__getitem__, map(type, given))), {}
    values, kinds, other = array("d"), bytearray(), {}
    for n, value in enumerate(given, base):
        kind = _KIND_OF.get(type(value), _OTHER)
        if kind == _INT and not -_EXACT <= value <= _EXACT:
            kind = _OTHER  # no double holds it exactly: kept aside
        kinds.append(kind)
        if kind == _OTHER:
            other[str(n)] = value
            values.append(0.0)
        else:
            values.append(value or 0.0)
    return values, kinds, other


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
_NUMBERS = frozenset((int, float))
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
        """One reading's source data: its item of the array, parsed alone (as text: given bytes,
        json.loads would first look for which UTF it is in; it is UTF-8)."""
        return json.loads(self.item(n).decode())

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
    pk: int | None  # its row's id; None for a day not stored yet
    stored: Columns | None = None
    fresh: list[list[Any]] = field(default_factory=list)
    opened: dict[str, list[Any]] | None = None
    next_slot: int = 0
    dirty: bool = False
    _keys: set[str] | None = None

    def keys(self) -> AbstractSet[str]:
        """The provider ids of the readings in this day."""
        if self.opened is not None:
            return self.opened.keys()
        if self._keys is None:
            self._keys = set(json.loads(self.stored.keys_json)) if self.stored else set()
        return self._keys

    def has(self, key: str) -> bool:
        return key in self.keys()

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

    def extend(self, readings: Sequence[list[Any]]) -> None:
        """Readings new to this day (none of their ids is in it): given the next slots."""
        first = self.next_slot
        if first + len(readings) > MAX_SLOTS:
            raise OverflowError(f"{self.kind} {self.day}: more than {MAX_SLOTS} readings ever stored in one day")
        for slot, reading in enumerate(readings, first):
            reading[SLOT] = slot
        self.next_slot = first + len(readings)
        self.dirty = True
        if self.opened is not None:
            self.opened.update((r[KEY], r) for r in readings)
            return
        keys = self.keys()
        assert isinstance(keys, set)
        keys.update(r[KEY] for r in readings)
        self.fresh.extend(readings)

    def empty(self) -> bool:
        if self.opened is not None:
            return not self.opened
        return not self.fresh and not (self.stored and self.stored.count)

    def pack(self) -> Packed:
        if self.opened is not None:
            return pack(None, list(self.opened.values()))
        return pack(self.stored, self.fresh)


def _load(rows: Iterable[tuple[int, str, date, int, bytes]]) -> dict[tuple[str, date], Day]:
    """Days from their rows' (id, type, local_day, next_slot, payload)."""
    return {(kind, day): Day(kind, day, pk, Columns(payload), next_slot=slot) for pk, kind, day, slot, payload in rows}


_LOADED = ("pk", "type", "local_day", "next_slot", "payload")


def _locked_days(connection_id: str, kind: str, dates: list[date]) -> dict[tuple[str, date], Day]:
    """These days of a connection's type, their rows locked for the caller's transaction."""
    if db.vendor == "postgresql":
        return _load(
            fetch(
                f"SELECT id, type, local_day, next_slot, payload FROM {_TABLE}"
                " WHERE connection_id = %s AND type = %s AND local_day = ANY(%s) ORDER BY local_day FOR UPDATE",
                (connection_id, kind, dates),
            )
        )
    rows = Series.objects.select_for_update().filter(connection_id=connection_id, type=kind, local_day__in=dates)
    return _load(rows.order_by("local_day").values_list(*_LOADED))


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
        days.update(_locked_days(connection_id, kind, sorted(dates)))
    written: dict[str, Written] = defaultdict(Written)
    for (kind, day), batch in incoming.items():
        target = days.setdefault((kind, day), Day(kind, day, None))
        neighbours = [d for d in (days.get((kind, day - _ONE_DAY)), days.get((kind, day + _ONE_DAY))) if d]
        counts = written[kind]
        if not any(batch.keys() & d.keys() for d in (target, *neighbours)):
            target.extend(list(batch.values()))  # the usual page: every reading new
            counts.created += len(batch)
            continue
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
    emptied = [d.pk for d in dirty if d.empty() and d.pk is not None]
    if emptied:
        Series.objects.filter(pk__in=emptied).delete()
    packed: dict[tuple[str, date], Packed] = {}
    created: list[Day] = []
    changed: list[Day] = []
    for d in dirty:
        if d.empty():
            continue
        packed[(d.kind, d.day)] = d.pack()
        (created if d.pk is None else changed).append(d)
    if db.vendor == "postgresql":
        _save_postgresql(created, changed, packed, (human_id, connection_id, source))
    else:
        for d in changed:
            assert d.pk is not None
            Series.objects.filter(pk=d.pk).update(next_slot=d.next_slot, **packed[(d.kind, d.day)].columns())
        Series.objects.bulk_create(
            Series(
                human_id=human_id,
                connection_id=connection_id,
                source=source,
                type=d.kind,
                local_day=d.day,
                next_slot=d.next_slot,
                **packed[(d.kind, d.day)].columns(),
            )
            for d in created
        )
    _roll_up(human_id, connection_id, source, {(d.kind, d.day) for d in dirty}, packed)


_INSERT = (
    f"INSERT INTO {_TABLE} (human_id, connection_id, source, type, local_day, next_slot, count, first_ms,"
    " last_ms, created_ms, updated_ms, stamps, payload)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb, %b)"
)
_UPDATE = (
    f"UPDATE {_TABLE} SET next_slot = %s, count = %s, first_ms = %s, last_ms = %s, created_ms = %s,"
    " updated_ms = %s, stamps = %s::jsonb, payload = %b WHERE id = %s"
)


def _save_postgresql(
    created: list[Day], changed: list[Day], packed: dict[tuple[str, date], Packed], owner: tuple[str, str, str]
) -> None:
    """The day rows written with their payloads sent as binary parameters (the ORM's cursor
    writes bytes into the statement's text, as hex: twice the size, and a fifth of the time of
    a history sync's page went there), in the caller's transaction."""

    def header(d: Day) -> tuple[Any, ...]:
        p = packed[(d.kind, d.day)]
        return (d.next_slot, p.count, p.first_ms, p.last_ms, p.created_ms, p.updated_ms, json.dumps(p.stamps))

    with sql.cursor() as cursor:
        if created:
            rows = [(*owner, d.kind, d.day, *header(d), packed[(d.kind, d.day)].payload) for d in created]
            cursor.executemany(_INSERT, rows)
        if changed:
            cursor.executemany(_UPDATE, [(*header(d), packed[(d.kind, d.day)].payload, d.pk) for d in changed])


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
    kinds, dates = sorted({kind for kind, _ in touched}), sorted({day for _, day in touched})
    if db.vendor == "postgresql":
        others: Iterable[tuple[str, date, bytes | memoryview]] = fetch(
            f"SELECT type, local_day, payload FROM {_TABLE} WHERE human_id = %s AND source = %s"
            " AND type = ANY(%s) AND local_day = ANY(%s) AND connection_id <> %s",
            (human_id, source, kinds, dates, connection_id),
        )
    else:
        others = (
            Series.objects.filter(human_id=human_id, source=source, type__in=kinds, local_day__in=dates)
            .exclude(connection_id=connection_id)
            .values_list("type", "local_day", "payload")
        )
    for kind, day, payload in others:
        if (kind, day) in touched:
            by_day.setdefault((kind, day), []).append(pack(Columns(payload), []))
    stats = [_day_stat(human_id, source, kind, day, by_day.get((kind, day), [])) for kind, day in sorted(touched)]
    if db.vendor == "postgresql":
        with sql.cursor() as cursor:
            cursor.executemany(
                _STAT,
                [
                    (s.human_id, s.type, s.local_day, s.source, s.count, Jsonb(s.stats), s.created_at, s.updated_at)
                    for s in stats
                ],
            )
        return
    DayStat.objects.bulk_create(
        stats,
        update_conflicts=True,
        unique_fields=["human", "type", "local_day", "source"],
        update_fields=["count", "stats", "created_at", "updated_at", "generation", "done_generation"],
    )


_STAT = (
    f"INSERT INTO {DayStat._meta.db_table} (human_id, type, local_day, source, count, stats, created_at, updated_at,"
    " generation, done_generation) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, 1, 1)"
    " ON CONFLICT (human_id, type, local_day, source) DO UPDATE SET count = EXCLUDED.count, stats = EXCLUDED.stats,"
    " created_at = EXCLUDED.created_at, updated_at = EXCLUDED.updated_at, generation = 1, done_generation = 1"
)


def day_stat(human_id: str, source: str, kind: str, day: date, readings: list[list[Any]]) -> DayStat:
    """The rollup of one day of a summarized type, from its readings."""
    return _day_stat(human_id, source, kind, day, [pack(None, list(readings))] if readings else [])


def _day_stat(human_id: str, source: str, kind: str, day: date, parts: list[Packed]) -> DayStat:
    row = DayStat(human_id=human_id, type=kind, local_day=day, source=source, generation=1, done_generation=1)
    if not parts:
        row.count, row.stats, row.created_at, row.updated_at = 0, {}, None, None
        return row
    numbers: dict[str, list[float]] = {}  # each field's numbers, read once for all its measures
    for m in SUMMARIZED[kind]:
        if m.field not in numbers:
            numbers[m.field] = (
                parts[0].numbers(m.field) if len(parts) == 1 else [v for p in parts for v in p.numbers(m.field)]
            )
    values = [aggregate(m, numbers[m.field]) for m in SUMMARIZED[kind]]
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
    days = _load((row.pk, row.type, row.local_day, row.next_slot, row.payload) for row in rows)
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
