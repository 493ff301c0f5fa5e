"""Deciding what to do with one item: run the user's ``update`` (or ``where``) on it and turn
the answer into a :class:`Change` -- what to write, and what the write must find unchanged."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Callable

from ..dynamo import TableInfo
from ..errors import UsageError
from .result import UpdateFailed
from .values import REMOVE, ItemView, av_equal, key_text, one_line, serializer, write_cost

_TYPE_NAMES = {"S": "a string (S)", "N": "a number (N)", "B": "binary (B)", "BOOL": "a boolean", "NULL": "null",
               "L": "a list", "M": "a map", "SS": "a string set", "NS": "a number set", "BS": "a binary set"}
MAX_CONFLICTS = 25  # decisions on one item (it kept changing under us) before giving up


class Change:
    """One planned write. ``sets``/``removes`` for an update, ``sets is None`` for a delete.

    ``present``/``absent``: the attributes the user's code read, which the write's condition
    requires to be as they were. ``raw`` is the item the decision was made on; ``verified``
    says whether it came from the scan (so it matched the filter) or from a failed write's
    ALL_OLD (not checked against the filter). ``tries`` counts the decisions made on this item.
    """

    __slots__ = ("raw", "key", "sets", "removes", "present", "absent", "verified", "tries", "whole")
    clash = False  # see Clash
    is_move = False  # see moves.MoveChange

    def __init__(self, raw: Mapping, key: dict, sets: dict | None, removes: list, present: tuple,
                 absent: tuple, verified: bool, tries: int = 0, whole: bool = False):
        self.raw = raw
        self.key = key
        self.sets = sets
        self.removes = removes
        self.present = present
        self.absent = absent
        self.verified = verified
        self.tries = tries
        self.whole = whole  # user code read the whole item: its condition cannot cover added attributes

    @property
    def is_delete(self) -> bool:
        return self.sets is None

    def new_item(self) -> dict:
        """The item as this write leaves it (for its size)."""
        new = dict(self.raw)
        if self.sets:
            new.update(self.sets)
        for n in self.removes:
            new.pop(n, None)
        return new

    def units(self, indexes: tuple = ()) -> float:
        """Write units this write costs when it lands (``values.write_cost``)."""
        return write_cost(self.raw, None if self.is_delete else self.new_item(), indexes)


class Clash:
    """A decision to leave an item as it is that the result must name: what the operation
    would write is already there, different (see ``result.Clashes``)."""

    __slots__ = ("key", "reason")
    clash = True

    def __init__(self, key: dict, reason: str):
        self.key = key
        self.reason = reason


def call_user(fn: Callable, name: str, view: ItemView, key: dict) -> Any:
    """``fn(view)``, the user's code; what it raises becomes an UpdateFailed naming the item."""
    try:
        return fn(view)
    except Exception as e:
        raise UpdateFailed(f"{name}() raised {type(e).__name__}: {one_line(e)} on item {key_text(key)}",
                           key, e) from e


class UpdatePlan:
    """``update(item)`` -> a Change, or None when there is nothing to write."""

    def __init__(self, update: Callable[[Mapping], Mapping | None], table: TableInfo):
        if not callable(update):
            raise UsageError(f"update must be a callable taking the item, got {type(update).__name__}")
        self.update = update
        self.key_names = table.key_names
        self.key_set = frozenset(table.key_names)
        self.index_types = table.index_key_types()

    def __call__(self, raw: Mapping, verified: bool = True) -> Change | None:
        view = ItemView(raw)
        key = {k: raw[k] for k in self.key_names}
        changes = call_user(self.update, "update", view, key)
        if changes is None:
            return None
        if not isinstance(changes, Mapping):
            raise UpdateFailed(
                f"update() must return a dict of attributes or None, got {type(changes).__name__} "
                f"on item {key_text(key)}", key)
        sets: dict = {}
        removes: list = []
        for name, value in changes.items():
            if value is REMOVE:
                if name in raw:
                    removes.append(name)
                continue
            if not isinstance(name, str) or not name:
                raise UpdateFailed(f"update() returned the attribute name {name!r} on item {key_text(key)}: "
                                   "names are non-empty strings", key)
            try:
                av = serializer.serialize(value)
            except Exception as e:  # float, unsupported type, empty set...
                raise UpdateFailed(
                    f"update() returned an unstorable value for {name!r} ({type(e).__name__}: {one_line(e)}) "
                    f"on item {key_text(key)}", key, e) from e
            kind = next(iter(av))
            if kind in ("SS", "NS", "BS") and not av[kind]:
                raise UpdateFailed(f"update() returned an empty set for {name!r} on item {key_text(key)}: DynamoDB "
                                   "stores no empty sets (return dynamic.REMOVE to drop the attribute)", key)
            if name in self.index_types and kind != self.index_types[name][1]:
                index, want = self.index_types[name]
                raise UpdateFailed(f"update() set {name!r} to {_TYPE_NAMES.get(kind, kind)} on item {key_text(key)}, "
                                   f"but index {index} keys on it as {_TYPE_NAMES[want]}", key)
            cur = raw.get(name)
            if cur is None or not av_equal(cur, av):
                sets[name] = av
        bad = self.key_set.intersection(sets).union(self.key_set.intersection(removes))
        if bad:
            raise UpdateFailed(
                f"update() tried to change key attribute {sorted(bad)[0]!r} on item {key_text(key)}: "
                "keys cannot be updated; put a new item and delete the old one instead", key)
        if not sets and not removes:
            return None
        present, absent = view.reads(self.key_set)
        return Change(raw, key, sets, removes, present, absent, verified, whole=view.read_all)


class DeletePlan:
    """Every item the scan matched is deleted, unless ``where(item)`` says no."""

    def __init__(self, where: Callable[[Mapping], Any] | None, table: TableInfo):
        if where is not None and not callable(where):
            raise UsageError(f"where must be a callable taking the item, got {type(where).__name__}")
        self.where = where
        self.key_names = table.key_names
        self.key_set = frozenset(table.key_names)

    def __call__(self, raw: Mapping, verified: bool = True) -> Change | None:
        key = {k: raw[k] for k in self.key_names}
        if self.where is None:
            return Change(raw, key, None, [], (), (), verified)
        view = ItemView(raw)
        keep = not call_user(self.where, "where", view, key)
        if keep:
            return None
        present, absent = view.reads(self.key_set)
        return Change(raw, key, None, [], present, absent, verified, whole=view.read_all)
