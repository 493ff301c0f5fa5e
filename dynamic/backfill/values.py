"""Attribute values as DynamoDB sees them: equality, size, plain Python, and the read-recording view."""
from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from math import ceil
from typing import Any, Iterator

from boto3.dynamodb.types import Binary, TypeDeserializer, TypeSerializer

deserializer = TypeDeserializer()
serializer = TypeSerializer()


class _Remove:
    def __repr__(self) -> str:
        return "dynamic.REMOVE"

    def __reduce__(self) -> str:  # pickles (and copies) as the same singleton
        return "REMOVE"


REMOVE = _Remove()
"""Return ``{"attr": REMOVE}`` from an update function to remove ``attr`` from the item."""


def av_equal(a: dict, b: dict) -> bool:
    """Equality of two attribute values as DynamoDB sees them (1 == 1.0, sets unordered)."""
    if len(a) != 1 or len(b) != 1:
        return a == b
    (ta, va), = a.items()
    (tb, vb), = b.items()
    if ta != tb:
        return False
    if ta == "N":
        return Decimal(va) == Decimal(vb)
    if ta == "SS":
        return set(va) == set(vb)
    if ta == "NS":
        return {Decimal(x) for x in va} == {Decimal(x) for x in vb}
    if ta == "BS":
        return {_bytes(x) for x in va} == {_bytes(x) for x in vb}
    if ta == "B":
        return _bytes(va) == _bytes(vb)
    if ta == "L":
        return len(va) == len(vb) and all(av_equal(x, y) for x, y in zip(va, vb))
    if ta == "M":
        return va.keys() == vb.keys() and all(av_equal(va[k], vb[k]) for k in va)
    return va == vb


def same_item(a: Mapping, b: Mapping) -> bool:
    """Two raw items hold exactly the same attributes and values."""
    return a.keys() == b.keys() and all(av_equal(a[k], b[k]) for k in a)


def holds(item: Mapping, sets: Mapping, removes: Any) -> bool:
    """The item already has exactly what a write sets, and none of what it removes."""
    for n, v in sets.items():
        cur = item.get(n)
        if cur is None or not av_equal(cur, v):
            return False
    return not any(n in item for n in removes)


def _bytes(v: Any) -> bytes:
    return v.value if isinstance(v, Binary) else bytes(v)


def plain(raw: Mapping) -> dict:
    """A raw item as plain Python values (numbers are Decimal)."""
    return {k: deserializer.deserialize(v) for k, v in raw.items()}


def jsonable(v: Any) -> Any:
    """Plain values made JSON-ready (Decimal -> int/float, sets -> sorted lists, bytes -> hex)."""
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, (set, frozenset)):
        return sorted((jsonable(x) for x in v), key=repr)
    if isinstance(v, Decimal):
        return int(v) if v == v.to_integral_value() else float(v)
    if isinstance(v, (Binary, bytes, bytearray)):
        return _bytes(v).hex()
    if v is REMOVE:
        return "<removed>"
    return v


def one_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else repr(e)


def key_text(key: Mapping) -> str:
    """A raw key as ``{PK='USER#1', SK='POST#2'}`` for messages."""
    return "{" + ", ".join(f"{k}={jsonable(deserializer.deserialize(v))!r}" for k, v in key.items()) + "}"


# ---- sizes (DynamoDB's item size rules, for capacity estimates) ------------------------------
def value_size(av: Mapping) -> int:
    """Bytes DynamoDB counts for one attribute value (numbers and containers approximated as
    the docs describe: ~1 byte per two significant digits + 1; 3 bytes + 1 per element)."""
    (t, v), = av.items()
    if t == "S":
        return len(v.encode("utf-8"))
    if t == "N":
        digits = str(v).lstrip("-").replace(".", "").lstrip("0") or "0"
        return (len(digits.rstrip("0") or "0") + 1) // 2 + 1
    if t == "B":
        return len(_bytes(v))
    if t in ("BOOL", "NULL"):
        return 1
    if t == "SS":
        return sum(len(x.encode("utf-8")) for x in v)
    if t == "NS":
        return sum(value_size({"N": x}) for x in v)
    if t == "BS":
        return sum(len(_bytes(x)) for x in v)
    if t == "L":
        return 3 + sum(1 + value_size(x) for x in v)
    if t == "M":
        return 3 + sum(1 + len(k.encode("utf-8")) + value_size(x) for k, x in v.items())
    return len(str(v))


def item_size(raw: Mapping) -> int:
    """An item's size in bytes: attribute names plus values."""
    return sum(len(k.encode("utf-8")) + value_size(v) for k, v in raw.items())


def write_units(size: int) -> float:
    """Write units of one standard write of an item of ``size`` bytes: 1 per started KB."""
    return float(max(1, ceil(size / 1024)))


def index_shapes(gsis: Mapping[str, dict], key_names: tuple) -> tuple:
    """``(index key names, projected attribute names or None for ALL)`` of each global
    secondary index in a DescribeTable's ``GlobalSecondaryIndexes`` (by name)."""
    out = []
    for g in gsis.values():
        keys = tuple(k["AttributeName"] for k in g.get("KeySchema", ()))
        proj = g.get("Projection") or {}
        kind = proj.get("ProjectionType", "ALL")
        attrs = None if kind == "ALL" else frozenset(
            (*keys, *key_names, *((proj.get("NonKeyAttributes") or ()) if kind == "INCLUDE" else ())))
        out.append((keys, attrs))
    return tuple(out)


def write_cost(old: Mapping, new: Mapping | None, indexes: tuple = ()) -> float:
    """Write units of a write that turns item ``old`` into ``new`` (None: deletes it), as AWS
    bills them: 1 per started KB of the larger of the two, plus, for each global secondary
    index (``index_shapes``), what the write does to the index entry -- put or delete it (its
    size), update it when a projected attribute changed, or both when its key changed."""
    units = write_units(max(item_size(old), item_size(new) if new is not None else 0))
    for keys, attrs in indexes:
        was = all(k in old for k in keys)
        now = new is not None and all(k in new for k in keys)
        if was:
            before = old if attrs is None else {k: v for k, v in old.items() if k in attrs}
        if now:
            after = new if attrs is None else {k: v for k, v in new.items() if k in attrs}  # type: ignore[union-attr]
        if was and now:
            if not all(av_equal(old[k], new[k]) for k in keys):  # type: ignore[index]
                units += write_units(item_size(before)) + write_units(item_size(after))
            elif not same_item(before, after):
                units += write_units(max(item_size(before), item_size(after)))
        elif was:
            units += write_units(item_size(before))
        elif now:
            units += write_units(item_size(after))
    return units


# ---- the item handed to user code --------------------------------------------------------------
class ItemView(Mapping):
    """The item as plain Python values, recording which attributes user code read.

    ``item[k]``, ``item.get(k)`` and ``k in item`` record ``k`` (present or absent);
    iterating, ``len``, ``keys()``/``items()``/``values()`` and ``==`` record "read all".
    Values are deserialized on first access only.
    """

    __slots__ = ("_raw", "_cache", "read", "read_all")

    def __init__(self, raw: Mapping):
        self._raw = raw
        self._cache: dict = {}
        self.read: set[str] = set()
        self.read_all = False

    def __getitem__(self, name: str) -> Any:
        self.read.add(name)
        try:
            return self._cache[name]
        except KeyError:
            value = self._cache[name] = deserializer.deserialize(self._raw[name])
            return value

    def get(self, name: str, default: Any = None) -> Any:
        self.read.add(name)
        if name in self._raw:
            return self[name]
        return default

    def __contains__(self, name: object) -> bool:
        self.read.add(name)  # type: ignore[arg-type]
        return name in self._raw

    def __iter__(self) -> Iterator[str]:
        self.read_all = True
        return iter(self._raw)

    def __len__(self) -> int:
        self.read_all = True
        return len(self._raw)

    def __repr__(self) -> str:
        return f"ItemView({dict(self)!r})"

    def reads(self, key_names: frozenset) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(attributes read and present, attributes read and absent), keys left out: the key is
        the item's identity, which every write's condition covers on its own."""
        raw = self._raw
        if self.read_all:
            return tuple(sorted(n for n in raw if n not in key_names)), ()
        present = tuple(sorted(n for n in self.read if n in raw and n not in key_names))
        absent = tuple(sorted(n for n in self.read if n not in raw and n not in key_names))
        return present, absent
