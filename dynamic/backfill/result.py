"""What a data operation did: counts per segment while it runs, one result at the end."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from ..errors import DynError
from .values import jsonable, plain


class UpdateFailed(DynError):
    """``update(item)`` (or a ``where`` predicate) raised, returned something unusable, or
    DynamoDB rejected the write of that item.

    Within the error budget (``max_errors``, see ``failures``) the item is left untouched and
    the run goes on; past it the operation stops, its checkpoints stay, and once the revision
    is fixed a new run resumes where this one stopped. ``key`` is the item's raw key,
    ``__cause__`` the original exception.
    """

    def __init__(self, message: str, key: dict | None = None, original: BaseException | None = None):
        super().__init__(message)
        self.key = key
        self.original = original

    def __reduce__(self):  # crosses process boundaries with its key (the original stays behind)
        return (type(self), (self.message, self.key))


MAX_CLASH_KEYS = 100  # clash entries a result keeps (the count goes on)
CLASHES_SHOWN = 5  # ... and the error message names


class Clashes(DynError):
    """A rename or a move left some items as they were, because what it would write is
    already there, different (``op.rename_attribute``: the item has both attributes, with
    different values; ``op.move_items``: the new key holds another item). Nothing was
    overwritten. Every other item is done; the segments that met a clash keep their
    checkpoints from before it, so once the items are resolved a new run finds them again.

    ``clash_keys``: the first :data:`MAX_CLASH_KEYS` (key, reason) entries; ``clashes``: how many.
    """

    def __init__(self, message: str, clash_keys: list | None = None, clashes: int = 0):
        super().__init__(message)
        self.clash_keys = list(clash_keys or [])
        self.clashes = clashes or len(self.clash_keys)

    def __reduce__(self):
        return (type(self), (self.message, self.clash_keys, self.clashes))

    @classmethod
    def of(cls, label: str, clashes: int, entries: list) -> "Clashes":
        """The one line: how many, why, and the first few keys."""
        shown = entries[:CLASHES_SHOWN]
        reasons = {e.get("reason") for e in entries}
        if len(reasons) == 1:  # the usual case: say why once
            why = f" ({reasons.pop()})"
            keys = ", ".join(key_text(e) for e in shown)
        else:
            why = ""
            keys = ", ".join(f"{key_text(e)} ({e.get('reason')})" for e in shown)
        more = f" and {clashes - len(shown):,} more" if clashes > len(shown) else ""
        left = "item was left as it was" if clashes == 1 else "items were left as they were"
        return cls(f"{label}: {clashes:,} {left}, not overwritten{why}: {keys}{more}. Every other item is done; "
                   "resolve these, then run again (the segments where they were found are scanned again)",
                   entries, clashes)


def key_text(entry: dict) -> str:
    """``{PK='a', SK='b'}`` for one clash entry."""
    return "{" + ", ".join(f"{k}={v!r}" for k, v in entry.get("key", {}).items()) + "}"


COUNTS = ("scanned", "matched", "updated", "unchanged", "conflicts", "deleted", "gone", "unmatched", "failed",
          "moved", "already_moved", "clashes")
_NUMBERS = (*COUNTS, "rcu", "wcu", "whole_reads")  # whole_reads: not an item outcome (see BackfillResult)
# a dry run's measure of a call (see estimate.extrapolate): its Scan calls and the time they took,
# summed over the threads; zero (and left out of as_dict, so out of checkpoints) in a real run
TIMING = ("pages", "page_seconds")


class Counts:
    """One segment's (or one worker's) running counts; plain attributes for speed.
    ``clash_keys`` holds the first clashes' entries (key and reason), sent along with the
    numbers when another process or a Dask task reports."""

    __slots__ = (*_NUMBERS, *TIMING, "clash_keys")

    def __init__(self) -> None:
        for name in COUNTS:
            setattr(self, name, 0)
        self.rcu = self.wcu = 0.0
        self.pages = 0
        self.page_seconds = 0.0
        self.whole_reads = 0
        self.clash_keys: list = []

    def add(self, other: "Counts | dict") -> None:
        get = other.get if isinstance(other, dict) else (lambda n, d=0: getattr(other, n))
        for name in (*_NUMBERS, *TIMING):
            setattr(self, name, getattr(self, name) + get(name, 0))
        more = get("clash_keys", None)
        if more:
            self.clash_keys = (self.clash_keys + list(more))[:MAX_CLASH_KEYS]

    def clash(self, key: dict, reason: str) -> None:
        """An item left as it was (a rename or move found its destination taken): count it
        and keep its key, plain, with the reason."""
        self.clashes += 1
        if len(self.clash_keys) < MAX_CLASH_KEYS:
            self.clash_keys.append({"key": jsonable(plain(key)), "reason": reason})

    def as_dict(self) -> dict:
        d = {name: getattr(self, name) for name in _NUMBERS}
        d.update({name: getattr(self, name) for name in TIMING if getattr(self, name)})
        d["clash_keys"] = list(self.clash_keys)
        return d

    def minus(self, other: "Counts") -> dict:
        d = {name: getattr(self, name) - getattr(other, name) for name in (*_NUMBERS, *TIMING)}
        d["clash_keys"] = self.clash_keys[len(other.clash_keys):]
        return d


@dataclass
class BackfillResult:
    """What a data operation did (or, in a dry run, would do).

    ``scanned``: items the scans evaluated; ``matched``: items that passed the filter and reached
    ``update`` / ``where``; ``updated``: items written (dry run: that would be); ``unchanged``:
    ``update`` returned None or values the item already holds (``where`` said no);
    ``conflicts``: writes that found the item changed since it was read and decided again on
    what is there now; ``deleted``: items this operation deleted; ``gone``: items deleted by
    someone else before this operation wrote them (never resurrected); ``unmatched``: items
    that stopped matching the filter between the scan and the write (left alone); ``failed``:
    items whose ``update`` / ``where`` failed or whose write DynamoDB rejected, left untouched
    within the error budget. ``moved`` / ``already_moved``: items ``move_items`` put under their
    new key and deleted (or found already there); ``clashes``: items a rename or move left as
    they were because their destination held something else, with the first ones in
    ``clash_keys``. ``rcu`` / ``wcu``: capacity units consumed, as DynamoDB reports them.
    ``whole_reads``: planned writes whose ``update`` / ``where`` / ``transform`` read the whole
    item (iterated it): their conditions cover the attributes the item had when scanned, not
    one the application added since (no DynamoDB condition says "no other attribute").

    In a dry run the counts are what the run would do, ``rcu`` what its scan consumed (the
    real run's scan reads the same), ``wcu`` what its writes would consume (1 unit per started
    KB of the larger of the item before and after, plus the indexes the write changes) and
    ``seconds`` how long the run would take; ``scan_seconds`` is how long the dry run took.
    With a sample (``sample``: the share of the segments scanned, in percent) every figure is
    extrapolated to the whole table.
    """

    scanned: int = 0
    matched: int = 0
    updated: int = 0
    unchanged: int = 0
    conflicts: int = 0
    deleted: int = 0
    gone: int = 0
    unmatched: int = 0
    failed: int = 0
    moved: int = 0
    already_moved: int = 0
    clashes: int = 0
    rcu: float = 0.0
    wcu: float = 0.0
    seconds: float = 0.0
    segments: int = 0
    samples: list[dict] = field(default_factory=list)
    sample: float | None = None  # dry run: percent of the segments scanned (None: all)
    scan_seconds: float | None = None  # dry run: how long the dry run itself took
    sampled_items: int | None = None  # dry run with a sample: the items the sample really read
    clash_keys: list[dict] = field(default_factory=list)
    whole_reads: int = 0
    pages: int = 0  # dry run: the Scan calls it made, and the seconds they took (summed over threads)
    page_seconds: float = 0.0

    @classmethod
    def from_counts(cls, counts: Counts, **kw) -> "BackfillResult":
        return cls(**{f.name: getattr(counts, f.name) for f in fields(cls) if f.name in Counts.__slots__}, **kw)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["rcu"] = round(self.rcu, 1)
        d["wcu"] = round(self.wcu, 1)
        d["seconds"] = round(self.seconds, 3)
        d["samples"] = jsonable(self.samples)
        if not self.samples:
            del d["samples"]
        for k in ("sample", "scan_seconds", "sampled_items"):
            if d[k] is None:
                del d[k]
        if self.scan_seconds is not None:
            d["scan_seconds"] = round(self.scan_seconds, 3)
        if not self.clash_keys:
            del d["clash_keys"]
        if not self.whole_reads:
            del d["whole_reads"]
        for k in TIMING:  # what the estimate is made from, not a figure of the run
            del d[k]
        return d
