"""Renaming an attribute: copy ``old`` to ``new`` and remove ``old``, one conditional write per
item, through the engine's write path (batched, checkpointed, throttle-safe).

Each item is decided on what it holds:

* ``old`` only -> ``SET new = <old's value> REMOVE old``, conditioned on ``old`` still holding
  that value and ``new`` still absent;
* ``new`` only (or neither) -> done already: nothing to write (the scan does not even return
  such items: it asks for ``old`` to exist);
* both, equal -> ``REMOVE old``, conditioned on both being as they were;
* both, different -> a clash: left as it is, never overwritten, and named in the result.

A write whose condition fails is settled like any other (``writes``): the item already renamed
(a lost response), gone, or changed -- decided again on what is there now.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from boto3.dynamodb.conditions import Attr

from ..dynamo import TableInfo
from .plan import Change, Clash
from .values import av_equal

# a name boto3's Attr() would read as a path (a.b, a[0]): the scan is not narrowed for it
_PATH_CHARS = re.compile(r"[.\[\]]")


@dataclass(frozen=True)
class Rename:
    """What a rename job carries as its function: the two names (picklable as it is)."""

    old: str
    new: str


def problem(table: TableInfo, old: object, new: object, force: bool) -> str | None:
    """What is wrong with renaming ``old`` to ``new`` on ``table``, in one sentence, or None."""
    for what, name in (("old", old), ("new", new)):
        if not isinstance(name, str) or not name:
            return f"{what} must be an attribute name (a non-empty string), got {name!r}"
    if old == new:
        return f"old and new are the same name {old!r}: nothing to rename"
    for name in (old, new):
        if name in table.key_names:
            return (f"{name!r} is a key attribute of table {table.name}: a key cannot be renamed in place; "
                    "op.move_items gives items new keys")
    if not force:
        indexes = table.index_keys()
        if old in indexes:
            return (f"{old!r} is a key attribute of index {indexes[old]}: renaming it drops every renamed item "
                    "from that index; pass force=True if that is what you want")
        if new in indexes:
            return (f"{new!r} is a key attribute of index {indexes[new]}: renaming into it adds every renamed "
                    "item to that index (a value of another type than the index key's fails the write); "
                    "pass force=True if that is what you want")
    return None


def scan_narrowing(old: str) -> Attr | None:
    """The Scan asks only for items that have ``old`` (None when ``old`` reads as a path)."""
    return None if _PATH_CHARS.search(old) else Attr(old).exists()


class RenamePlan:
    """An item -> the Change that renames its attribute, a Clash, or None (nothing to do)."""

    def __init__(self, rename: Rename, table: TableInfo):
        self.old = rename.old
        self.new = rename.new
        self.key_names = table.key_names
        self.both = tuple(sorted((rename.old, rename.new)))
        self.reason = f"has both {rename.old!r} and {rename.new!r}, with different values"

    def __call__(self, raw: Mapping, verified: bool = True) -> Change | Clash | None:
        value = raw.get(self.old)
        if value is None:
            return None
        key = {k: raw[k] for k in self.key_names}
        there = raw.get(self.new)
        if there is None:
            return Change(raw, key, {self.new: value}, [self.old], (self.old,), (self.new,), verified)
        if av_equal(value, there):
            return Change(raw, key, {}, [self.old], self.both, (), verified)
        return Clash(key, self.reason)
