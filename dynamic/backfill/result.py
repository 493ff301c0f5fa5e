"""What a data operation did: counts per segment while it runs, one result at the end."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from ..errors import DynError
from .values import jsonable


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


COUNTS = ("scanned", "matched", "updated", "unchanged", "conflicts", "deleted", "gone", "unmatched", "failed")


class Counts:
    """One segment's (or one worker's) running counts; plain attributes for speed."""

    __slots__ = (*COUNTS, "rcu", "wcu")

    def __init__(self) -> None:
        for name in COUNTS:
            setattr(self, name, 0)
        self.rcu = self.wcu = 0.0

    def add(self, other: "Counts | dict") -> None:
        get = other.get if isinstance(other, dict) else (lambda n, d=0: getattr(other, n))
        for name in self.__slots__:
            setattr(self, name, getattr(self, name) + get(name, 0))

    def as_dict(self) -> dict:
        return {name: getattr(self, name) for name in self.__slots__}

    def minus(self, other: "Counts") -> dict:
        return {name: getattr(self, name) - getattr(other, name) for name in self.__slots__}


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
    within the error budget. ``rcu`` / ``wcu``: capacity units consumed, as DynamoDB reports
    them.

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
    rcu: float = 0.0
    wcu: float = 0.0
    seconds: float = 0.0
    segments: int = 0
    samples: list[dict] = field(default_factory=list)
    sample: float | None = None  # dry run: percent of the segments scanned (None: all)
    scan_seconds: float | None = None  # dry run: how long the dry run itself took

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
        for k in ("sample", "scan_seconds"):
            if d[k] is None:
                del d[k]
        if self.scan_seconds is not None:
            d["scan_seconds"] = round(self.scan_seconds, 3)
        return d
