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

The payload (format 3) is a format byte, then, little-endian: a header of five uint32 (the
number of readings, readings a block, blocks, and the compressed sizes of the JSON part and of
the provider ids), the compressed size of each block (uint32 each), then zlib of the JSON part
(`f` the distinct `fields` objects without their `value`, `p` the distinct (createdAt,
updatedAt) pairs, `o` values no double holds exactly, keyed by place in the day), zlib of the
provider ids (one JSON array), and the blocks, each zlib of its own readings' columns. The
readings are sorted by (instant, slot) and cut into blocks of BLOCK; a block holds where its
source data starts in the day's JSON array of them (uint32), then one item a reading: instants
as epoch-ms deltas from the one before in the block (the first from 0) (int64), slots (int32),
offsets in minutes (int16), indexes into `f` (int32: times 2, plus 1 where `fields` held
`value` itself), indexes into `p` (int32), values (float64), how each was given (a byte: null,
integer, number, boolean, other), where each reading's source data ends in the day's JSON
array (uint32), and that piece of the array (compact JSON texts, each after a `[` or `,`).
Opening a payload reads its header and JSON part; a page decompresses only the blocks it
serves and parses the JSON of its own readings only. Format 2 (one zlib stream of the header,
the JSON part, the provider ids and every column of the day) is still read.
"""

from __future__ import annotations

import json
import math
import struct
import sys
import zlib
from array import array
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from itertools import accumulate, chain, islice, repeat
from json import encoder
from operator import gt, itemgetter, lt
from typing import Any

from django.db import connection as db
from psycopg.types.json import Jsonb

from humanapi_project import sql
from humanapi_project.sql import fetch
from sources.types import SUMMARIZED, aggregate, finish

from .models import DayStat, Series

SLOT_BITS = 20
MAX_SLOTS = 1 << SLOT_BITS
FORMAT = b"\x03"
_FORMAT_2 = b"\x02"  # still read: one block of every reading, the JSON part and ids inside it
_TABLE = Series._meta.db_table
# Readings, readings a block, blocks, compressed bytes of the JSON part, of the provider ids.
_HEAD = struct.Struct("<IIIII")
_HEAD_2 = struct.Struct("<III")  # format 2: readings, bytes of the JSON part, bytes of the provider ids
_BASE = struct.Struct("<I")  # where a block's source data starts in the day's JSON array
# Readings a block: a page opens the blocks it serves, a few dozen kilobytes each; a day of
# minute-level heart rate (1,440) is six of them.
BLOCK = 256

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


def _encode_items(documents: list[Any]) -> list[str]:
    """`_encode_item` of each document, the same text: column by column (C-level maps) where the
    documents are objects with the same keys, in the same order, each key's values of one
    scalar type (a provider's list of samples, the usual case); one by one otherwise."""
    try:
        shapes = set(map(tuple, documents))
    except TypeError:
        return list(map(_encode_item, documents))
    if len(shapes) != 1 or not all(type(d) is dict for d in documents[:1]):
        return list(map(_encode_item, documents))
    (shape,) = shapes
    if not shape:
        return ["{}"] * len(documents)
    if not all(type(key) is str for key in shape):
        return list(map(_encode_item, documents))
    parts: list[Any] = []
    for n, key in enumerate(shape):
        column = list(map(itemgetter(key), documents))
        texts = _scalar_texts(column)
        if texts is None:
            return list(map(_encode_item, documents))
        parts += (repeat(("{" if n == 0 else ",") + encoder.encode_basestring_ascii(key) + ":"), texts)
    parts.append(repeat("}"))
    return list(map("".join, zip(*parts, strict=False)))  # the repeats are endless


def _scalar_texts(column: list[Any]) -> Iterator[str] | None:
    """The JSON texts of a column of scalars of one type, as `_encode_item` writes them; None
    for any other column."""
    kinds = set(map(type, column))
    if kinds == {str}:
        return map(encoder.encode_basestring_ascii, column)
    if kinds == {int}:
        return map(int.__repr__, column)
    if kinds == {float} and all(map(math.isfinite, column)):
        return map(float.__repr__, column)
    if kinds <= {bool, type(None)}:
        return map(_LITERALS.__getitem__, column)
    return None


_LITERALS = {True: "true", False: "false", None: "null"}
_CANONICAL = json.JSONEncoder(separators=(",", ":"), sort_keys=True, default=str)


def reading_id(series_id: int, slot: int) -> int:
    return series_id << SLOT_BITS | slot


def split_id(reading: int) -> tuple[int, int]:
    return reading >> SLOT_BITS, reading & (MAX_SLOTS - 1)


# --- the payload ----------------------------------------------------------------------------


def encode(readings: Sequence[list[Any]]) -> bytes:
    """The payload of these readings, in any order."""
    return pack(None, list(readings)).payload


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


@dataclass
class Fresh:
    """Readings new to a day row, column by column (a reading's list split at AT, SLOT, ...):
    how the engine hands a page's readings over, without a list per reading."""

    times: list[int]
    slots: list[int]
    keys: list[str]
    offsets: list[int]
    values: list[Any]
    fields: list[dict[str, Any]]
    source_data: list[Any]
    created: list[int]
    updated: list[int]

    @classmethod
    def of(cls, readings: Sequence[list[Any]]) -> Fresh:
        """Readings as lists (see AT, SLOT, ...), in columns."""
        if not readings:
            return cls([], [], [], [], [], [], [], [], [])
        return cls(*map(list, zip(*readings, strict=True)))

    def __len__(self) -> int:
        return len(self.times)

    def columns(self) -> tuple[list[Any], ...]:
        """The columns, in the order of a reading's list."""
        return tuple(getattr(self, name) for name in _FRESH_COLUMNS)

    def readings(self) -> list[list[Any]]:
        return list(map(list, zip(*self.columns(), strict=True)))

    def extend(self, other: Fresh) -> None:
        for mine, theirs in zip(self.columns(), other.columns(), strict=True):
            mine.extend(theirs)

    def append(self, reading: list[Any]) -> None:
        for column, value in zip(self.columns(), reading, strict=True):
            column.append(value)

    def pick(self, order: Iterable[int]) -> Fresh:
        """These readings (by position), in this order."""
        at = list(order)
        return Fresh(*(list(map(column.__getitem__, at)) for column in self.columns()))

    def last_of_each(self) -> Fresh:
        """One reading per provider id: the last copy of one given twice."""
        last = dict(zip(self.keys, range(len(self.keys)), strict=True))
        return self if len(last) == len(self.keys) else self.pick(sorted(last.values()))

    def in_order(self) -> Fresh:
        """Sorted by (instant, slot), as a payload holds them: most often already so."""
        times = self.times
        if all(map(lt, times, islice(times, 1, None))):  # distinct instants, rising: no pair to compare
            return self
        pairs = list(zip(times, self.slots, strict=True))
        if not any(map(gt, pairs, islice(pairs, 1, None))):
            return self
        return self.pick(sorted(range(len(pairs)), key=pairs.__getitem__))


_FRESH_COLUMNS = ("times", "slots", "keys", "offsets", "values", "fields", "source_data", "created", "updated")


def pack(stored: Columns | None, fresh: Fresh | list[list[Any]]) -> Packed:
    """The payload of a day: the readings already `stored` in it (left as they are, not parsed)
    and the `fresh` ones (sorted here), in (instant, slot) order."""
    fresh = (fresh if isinstance(fresh, Fresh) else Fresh.of(fresh)).in_order()
    field_docs: list[Any] = list(stored.field_docs) if stored else []
    field_index = {_dedupe_key(doc): n for n, doc in enumerate(field_docs)}
    pairs: list[tuple[int, int]] = [(c, u) for c, u in stored.pairs] if stored else []
    pair_index = {pair: n for n, pair in enumerate(pairs)}
    base = stored.count if stored else 0
    field_refs = _field_refs(fresh.fields, fresh.values, field_docs, field_index)
    # (createdAt, updatedAt) pairs: usually one for a whole write.
    distinct = dict.fromkeys(zip(fresh.created, fresh.updated, strict=True))
    for pair in distinct:
        if pair not in pair_index:
            pair_index[pair] = len(pairs)
            pairs.append(pair)
    if len(distinct) == 1:
        pair_refs = [pair_index[next(iter(distinct))]] * len(fresh)
    else:
        pair_refs = list(map(pair_index.__getitem__, zip(fresh.created, fresh.updated, strict=True)))
    values, kinds, other = _values(fresh.values, base)
    texts = _encode_items(fresh.source_data)
    times, slots, offsets, keys = fresh.times, fresh.slots, fresh.offsets, fresh.keys
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
    blocks: list[bytes] = []
    for index, a in enumerate(range(0, count, BLOCK)):
        blob = _block(
            a, min(a + BLOCK, count), times, slots, offsets, field_refs, pair_refs, values, kinds, ends, items
        )
        kept = stored.stored_block(index, blob) if stored is not None else None
        blocks.append(zlib.compress(blob, _LEVEL) if kept is None else kept)
    parts = [zlib.compress(meta, _LEVEL), zlib.compress(keys_json, _LEVEL)]
    payload = b"".join(
        (
            FORMAT,
            _HEAD.pack(count, BLOCK, len(blocks), *map(len, parts)),
            _bytes(array("I", map(len, blocks))),
            *parts,
            *blocks,
        )
    )
    stamps = Counter(pair_refs)
    return Packed(
        payload=payload,
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


def _block(
    a: int,
    b: int,
    times: Sequence[int],
    slots: Sequence[int],
    offsets: Sequence[int],
    field_refs: Sequence[int],
    pair_refs: Sequence[int],
    values: Sequence[float],
    kinds: bytes | bytearray,
    ends: Sequence[int],
    items: bytes,
) -> bytes:
    """Readings [a, b) of a day's columns as one block of the payload (see the module docstring)."""
    base = ends[a - 1] if a else 0
    at = times[a:b]
    return b"".join(
        (
            _BASE.pack(base),
            _bytes(array("q", [t - p for p, t in zip([0, *at], at, strict=False)])),
            _bytes(array("i", slots[a:b])),
            _bytes(array("h", offsets[a:b])),
            _bytes(array("i", field_refs[a:b])),
            _bytes(array("i", pair_refs[a:b])),
            _bytes(array("d", values[a:b])),
            bytes(kinds[a:b]),
            _bytes(array("I", ends[a:b])),
            items[base : ends[b - 1]],
        )
    )


def _field_refs(fields: list[Any], values: list[Any], field_docs: list[Any], field_index: dict[Any, int]) -> list[int]:
    """Each reading's `fields` as an index into `field_docs` (times 2, plus 1 where they held the
    reading's value itself, kept once in the value column), new documents appended. Readings
    with the same fields and value (same types too) share one reference, worked out once: the
    probes are built and looked up by C-level maps, not a Python loop per reading."""
    shared = _shared_refs(fields, values, field_docs, field_index)
    if shared is not None:
        return shared
    try:
        items: Iterator[Any] = map(tuple, map(dict.items, fields))
        given = set(map(type, chain.from_iterable(map(dict.values, fields))))
        if len(given & _NUMBERS_AND_BOOL) > 1 or not given <= _SCALARS:
            # 1, 1.0 and True are equal keys: told apart by their types, at a cost per reading.
            items = zip(items, map(tuple, map(map, repeat(type), map(dict.values, fields))), strict=True)
        probes = list(zip(items, values, map(type, values), strict=True))
        refs = dict(zip(probes, range(len(probes)), strict=True))  # probe -> a reading that has it
    except TypeError:  # an unhashable value in the fields (or fields that are not a dict)
        return [_field_ref(f, v, field_docs, field_index) for f, v in zip(fields, values, strict=True)]
    for probe, n in refs.items():
        refs[probe] = _field_ref(fields[n], values[n], field_docs, field_index)
    return list(map(refs.__getitem__, probes))


_NUMBERS_AND_BOOL = frozenset((int, float, bool))
_SCALARS = frozenset((str, int, float, bool, type(None)))


def _shared_refs(
    fields: list[Any], values: list[Any], field_docs: list[Any], field_index: dict[Any, int]
) -> list[int] | None:
    """`_field_refs` where every reading's fields have the same keys in the same order, repeat
    the reading's value under "value" exactly (or have no "value"), and hold scalars of at most
    one numeric type otherwise (a device's unit beside its number, the usual case): worked out
    column by column. None where they don't."""
    try:
        shapes = set(map(tuple, fields))
    except TypeError:
        return None
    if len(shapes) != 1:
        return None
    (shape,) = shapes
    has_value = 0
    if "value" in shape:
        given = list(map(itemgetter("value"), fields))
        if given != values or list(map(type, given)) != list(map(type, values)):
            return None
        has_value, shape = 1, tuple(k for k in shape if k != "value")
    if not shape:
        return [_doc_ref({}, field_docs, field_index) * 2 + has_value] * len(fields)
    rows: list[Any] = list(map(itemgetter(*shape), fields))
    if len(shape) == 1:
        rows = list(zip(rows))
    kinds = set(map(type, chain.from_iterable(rows)))
    if len(kinds & _NUMBERS_AND_BOOL) > 1 or not kinds <= _SCALARS:
        return None
    refs = dict.fromkeys(rows, 0)
    for row in refs:
        refs[row] = _doc_ref(dict(zip(shape, row, strict=True)), field_docs, field_index) * 2 + has_value
    if len(refs) == 1:
        return [refs[rows[0]]] * len(rows)
    return list(map(refs.__getitem__, rows))


def _field_ref(fields: Any, value: Any, field_docs: list[Any], field_index: dict[Any, int]) -> int:
    # `value` is kept once where the fields repeat it exactly (same number, same type).
    given = fields.get("value", _ABSENT)
    if given is not _ABSENT and type(given) is type(value) and given == value:
        rest, has_value = {k: v for k, v in fields.items() if k != "value"}, 1
    else:
        rest, has_value = fields, 0
    return _doc_ref(rest, field_docs, field_index) * 2 + has_value


def _doc_ref(rest: Any, field_docs: list[Any], field_index: dict[Any, int]) -> int:
    """The index of these fields in `field_docs`, appended if new."""
    key = _dedupe_key(rest)
    doc = field_index.get(key)
    if doc is None:
        doc = field_index[key] = len(field_docs)
        field_docs.append(rest)
    return doc


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


class _Block:
    """Readings [start, start + len(times)) of a payload, opened: their columns as arrays, and
    their source data as a piece of the day's JSON array that starts at `base` in it."""

    __slots__ = (
        "base",
        "blob",
        "ends",
        "field_refs",
        "kinds",
        "offsets",
        "pair_refs",
        "slots",
        "start",
        "text",
        "times",
        "values",
    )

    def __init__(self, start: int, blob: bytes, at: int, count: int, base: int) -> None:
        self.start, self.base = start, base
        self.blob: bytes | None = None  # what it was opened from, where that is the block alone
        deltas, at = _array("q", blob, at, count)
        self.times = list(accumulate(deltas))
        self.slots, at = _array("i", blob, at, count)
        self.offsets, at = _array("h", blob, at, count)
        self.field_refs, at = _array("i", blob, at, count)
        self.pair_refs, at = _array("i", blob, at, count)
        self.values, at = _array("d", blob, at, count)
        self.kinds = blob[at : at + count]
        self.ends, at = _array("I", blob, at + count, count)
        self.text = blob[at:]

    def item(self, k: int) -> bytes:
        """Its `k`th reading's source data as stored: one item of the day's JSON array."""
        return self.items(k, k)

    def items(self, lo: int, hi: int) -> bytes:
        """The source data of its readings `lo` to `hi` (both in) as stored: items of the day's
        JSON array, with the commas between them."""
        ends, base = self.ends, self.base
        return self.text[(ends[lo - 1] if lo else base) + 1 - base : ends[hi] - base]

    def value(self, k: int, other: dict[str, Any]) -> Any:
        """The value of its `k`th reading (`other` is the payload's, keyed by place in the day)."""
        kind = self.kinds[k]
        if kind == _FLOAT:
            return self.values[k]
        if kind == _INT:
            return int(self.values[k])
        if kind == _NONE:
            return None
        return bool(self.values[k]) if kind == _BOOL else other[str(self.start + k)]


class Columns:
    """A payload opened: its header and JSON part at once, each block of readings decompressed
    when one of its readings is asked for (a page opens only the blocks it serves), each
    reading built only when asked for (its source data parsed from its own JSON text).

    The whole day's columns (`times`, `slots`, `offsets`, `field_refs`, `pair_refs`, `values`,
    `kinds`, `ends`, `text`, `keys_json`) are there too, as a format 2 payload held them: every
    block opened and joined on first use."""

    __slots__ = ("_blocks", "_keys", "_per_block", "_raw", "_spans", "_whole", "count", "field_docs", "other", "pairs")

    def __init__(self, payload: bytes | memoryview) -> None:
        raw = bytes(payload)
        version = raw[:1]
        self._whole: _Block | None = None
        if version == FORMAT:
            count, per_block, blocks, meta_size, keys_size = _HEAD.unpack_from(raw, 1)
            sizes, at = _array("I", raw, 1 + _HEAD.size, blocks)
            meta = json.loads(zlib.decompress(raw[at : at + meta_size]))
            self._keys: bytes | tuple[int, int] = (at + meta_size, at + meta_size + keys_size)
            at += meta_size + keys_size
            self._spans = list(accumulate(sizes, initial=at))
            self._blocks: list[_Block | None] = [None] * blocks
            self._raw = raw
        elif version == _FORMAT_2:
            blob = zlib.decompress(raw[1:])
            count, meta_size, keys_size = _HEAD_2.unpack_from(blob)
            at = _HEAD_2.size + meta_size
            meta = json.loads(blob[_HEAD_2.size : at])
            self._keys = blob[at : at + keys_size]
            per_block = max(count, 1)
            self._whole = _Block(0, blob, at + keys_size, count, 0)
            self._blocks, self._spans, self._raw = [self._whole], [], b""
        else:
            raise ValueError(f"unknown series payload format {version!r}")
        self.count, self._per_block = count, per_block
        self.field_docs, self.pairs, self.other = meta["f"], meta["p"], meta["o"]

    def __len__(self) -> int:
        return self.count

    def block(self, n: int) -> _Block:
        """The block that holds reading `n`, opened."""
        index = n // self._per_block
        found = self._blocks[index]
        if found is None:
            blob = zlib.decompress(self._raw[self._spans[index] : self._spans[index + 1]])
            start = index * self._per_block
            base = _BASE.unpack_from(blob)[0]
            found = self._blocks[index] = _Block(
                start, blob, _BASE.size, min(self._per_block, self.count - start), base
            )
            found.blob = blob
        return found

    def stored_block(self, index: int, blob: bytes) -> bytes | None:
        """Block `index` as stored (compressed), where it holds exactly `blob` (a block `pack`
        made): a day rewritten with its first readings unchanged keeps their blocks as they are,
        compressed once."""
        if self._per_block != BLOCK or index >= len(self._blocks) or not self._raw:
            return None
        if self.block(index * BLOCK).blob != blob:
            return None
        return self._raw[self._spans[index] : self._spans[index + 1]]

    def _all(self) -> _Block:
        """Every reading as one block (the blocks joined, once)."""
        whole = self._whole
        if whole is None:
            parts = [self.block(n) for n in range(0, self.count, self._per_block)]
            whole = self._whole = object.__new__(_Block)
            whole.start, whole.base = 0, 0
            whole.times = []
            for b in parts:
                whole.times.extend(b.times)
            for name, typecode in _JOINED:
                joined = array(typecode)
                for b in parts:
                    joined.extend(getattr(b, name))
                setattr(whole, name, joined)
            whole.kinds = b"".join(b.kinds for b in parts)
            whole.text = b"".join(b.text for b in parts) + b"]"
        return whole

    # The whole day's columns, as format 2 held them.

    @property
    def times(self) -> list[int]:
        return self._all().times

    @property
    def slots(self) -> array[int]:
        return self._all().slots

    @property
    def offsets(self) -> array[int]:
        return self._all().offsets

    @property
    def field_refs(self) -> array[int]:
        return self._all().field_refs

    @property
    def pair_refs(self) -> array[int]:
        return self._all().pair_refs

    @property
    def values(self) -> array[float]:
        return self._all().values

    @property
    def kinds(self) -> bytes:
        return self._all().kinds

    @property
    def ends(self) -> array[int]:
        return self._all().ends

    @property
    def text(self) -> bytes:
        return self._all().text

    @property
    def keys_json(self) -> bytes:
        """The provider ids, as one JSON array."""
        if isinstance(self._keys, tuple):
            start, end = self._keys
            self._keys = zlib.decompress(self._raw[start:end])
        return self._keys

    def stamps(self, n: int) -> tuple[int, int]:
        b = self.block(n)
        created, updated = self.pairs[b.pair_refs[n - b.start]]
        return created, updated

    def value(self, n: int) -> Any:
        b = self.block(n)
        return b.value(n - b.start, self.other)

    def item(self, n: int) -> bytes:
        """Reading `n`'s source data as stored: one item of the JSON array."""
        b = self.block(n)
        return b.item(n - b.start)

    def source_data(self, n: int) -> Any:
        """One reading's source data: its item of the array, parsed alone (as text: given bytes,
        json.loads would first look for which UTF it is in; it is UTF-8)."""
        return json.loads(self.item(n).decode())

    def reading(self, n: int, key: str = "", source_data: Any = None) -> list[Any]:
        """Reading `n`; its provider id is given by `readings` (reads have no use for it)."""
        b = self.block(n)
        k = n - b.start
        ref, value = b.field_refs[k], b.value(k, self.other)
        rest = self.field_docs[ref >> 1]
        fields = {"value": value, **rest} if ref & 1 else dict(rest)
        created, updated = self.pairs[b.pair_refs[k]]
        if source_data is None:
            source_data = json.loads(b.item(k).decode())
        return [b.times[k], b.slots[k], key, b.offsets[k], value, fields, source_data, created, updated]

    def readings(self) -> list[list[Any]]:
        """Every reading, with its provider id (the arrays of ids and source data parsed whole)."""
        keys, documents = json.loads(self.keys_json), json.loads(self.text)
        return [self.reading(n, keys[n], documents[n]) for n in range(self.count)]


_JOINED = (("slots", "i"), ("offsets", "h"), ("field_refs", "i"), ("pair_refs", "i"), ("values", "d"), ("ends", "I"))


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
    fresh: Fresh = field(default_factory=lambda: Fresh.of([]))
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
            self.opened.update((r[KEY], r) for r in self.fresh.readings())
            self.stored, self.fresh, self._keys = None, Fresh.of([]), None
        return self.opened

    def _slots(self, count: int) -> range:
        first = self.next_slot
        if first + count > MAX_SLOTS:
            raise OverflowError(f"{self.kind} {self.day}: more than {MAX_SLOTS} readings ever stored in one day")
        self.next_slot = first + count
        self.dirty = True
        return range(first, first + count)

    def add(self, reading: list[Any]) -> None:
        """A reading new to this day: given the next slot."""
        reading[SLOT] = self._slots(1)[0]
        if self.opened is not None:
            self.opened[reading[KEY]] = reading
            return
        keys = self.keys()
        assert isinstance(keys, set)
        keys.add(reading[KEY])
        self.fresh.append(reading)

    def extend(self, readings: Fresh) -> None:
        """Readings new to this day (none of their ids is in it): given the next slots."""
        readings.slots = list(self._slots(len(readings)))
        if self.opened is not None:
            self.opened.update((r[KEY], r) for r in readings.readings())
            return
        keys = self.keys()
        assert isinstance(keys, set)
        keys.update(readings.keys)
        if len(self.fresh):
            self.fresh.extend(readings)
        else:
            self.fresh = readings

    def empty(self) -> bool:
        if self.opened is not None:
            return not self.opened
        return not len(self.fresh) and not (self.stored and self.stored.count)

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
    """Merge readings, each (type, local day, reading), into their day rows; see `write_days`."""
    by_day: dict[tuple[str, date], list[list[Any]]] = defaultdict(list)
    for kind, day, reading in items:
        by_day[(kind, day)].append(reading)
    batches = {key: Fresh.of(readings) for key, readings in by_day.items()}
    return write_days(batches, human_id=human_id, connection_id=connection_id, source=source)


def write_days(
    batches: dict[tuple[str, date], Fresh],
    *,
    human_id: str,
    connection_id: str,
    source: str,
) -> dict[str, Written]:
    """Merge readings, by (type, local day), into their day rows; must run inside a
    transaction. A reading's stamps are the time of this write. The last copy of a duplicated
    provider id wins. Returns what was created and updated per type."""
    if not batches:
        return {}
    wanted: dict[str, set[date]] = defaultdict(set)
    for kind, day in batches:
        # A reading's day may have moved by one (a corrected offset): its old day is looked in.
        wanted[kind].update((day - _ONE_DAY, day, day + _ONE_DAY))
    days: dict[tuple[str, date], Day] = {}
    for kind, dates in wanted.items():
        days.update(_locked_days(connection_id, kind, sorted(dates)))
    written: dict[str, Written] = defaultdict(Written)
    for (kind, day), given in batches.items():
        batch = given.last_of_each()
        target = days.setdefault((kind, day), Day(kind, day, None))
        neighbours = [d for d in (days.get((kind, day - _ONE_DAY)), days.get((kind, day + _ONE_DAY))) if d]
        counts = written[kind]
        keys = set(batch.keys)
        if not any(keys & d.keys() for d in (target, *neighbours)):
            target.extend(batch)  # the usual page: every reading new
            counts.created += len(batch)
            continue
        for new in batch.readings():
            key = new[KEY]
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
        keys, times = json.loads(stored.keys_json), stored.times
        if all(k in seen for k, at in zip(keys, times, strict=True) if start_ms <= at < end_ms):
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
