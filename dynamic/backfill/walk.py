"""Walking one parallel-scan segment: a Scan page, the decisions on its items, their writes,
then the segment's new position -- until the segment ends."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from boto3.dynamodb.conditions import ConditionBase

from ..dynamo import TableInfo
from .conditions import scan_filter
from .failures import errors_of
from .moves import MovePlan, MoveWrites
from .plan import Change, DeletePlan, UpdatePlan
from .ratelimit import Stopped
from .renames import RenamePlan
from .result import Counts, UpdateFailed
from .retry import Caller, consumed
from .statements import Statements
from .values import REMOVE, deserializer, index_shapes, plain
from .writes import BATCH, WritePath

MAX_SAMPLES = 5


@dataclass
class Job:
    """Everything a worker needs to walk segments of one data operation (and nothing tied to
    the process that planned it, so a worker process or a remote task can run it too)."""

    table: TableInfo
    kind: str  # "update" | "delete" | "rename" | "move"
    fn: Callable | None  # update(item), where(item) for a delete, transform(item) for a move; a Rename
    filter: ConditionBase | None  # the user's filter: in the Scan, and again in every write
    exclude: ConditionBase | None  # dyn's own records (without is_meta: kept out of the Scan)
    is_meta: Callable[[dict], bool] | None  # dyn's own records, recognised client-side
    total_segments: int
    page_size: int
    write_mode: str = "batch"
    dry_run: bool = False
    label: str = "backfill"
    max_retry_seconds: float = 600.0
    origin: Any = None  # where ``fn`` comes from, for a process that cannot inherit it: ``origin.load()``

    def scan_kwargs(self) -> dict:
        """The Scan's arguments. With ``is_meta``, dyn's own records pass the filter (``filter
        OR NOT exclude``) so that each page shows how many of its ScannedCount were dyn's, and
        ``scanned`` counts only the user's items; they are dropped before any decision."""
        if self.exclude is None:
            cond = self.filter
        elif self.is_meta is not None:
            cond = None if self.filter is None else self.filter | ~self.exclude
        else:
            cond = self.exclude if self.filter is None else self.filter & self.exclude
        return {
            "TableName": self.table.name,
            "TotalSegments": self.total_segments,
            "Limit": self.page_size,
            "ReturnConsumedCapacity": "TOTAL",
            **scan_filter(cond),
        }


class Segment:
    """One segment: where it has got to (a key, or ``"done"``), and its counts."""

    __slots__ = ("index", "position", "counts", "reported", "page_end", "held")

    def __init__(self, index: int, position: dict | str | None = None):
        self.index = index
        self.position = position
        self.counts = Counts()
        self.reported = Counts()  # what progress has been told
        self.held = False  # its checkpoint stays before the first item left in a clash
        self.page_end = False  # its position is the end of a Scan page (not one of its items)

    @property
    def done(self) -> bool:
        return self.position == "done"


class Samples:
    """A few before/after examples for a dry run."""

    def __init__(self, limit: int = MAX_SAMPLES):
        self.limit = limit
        self.items: list[dict] = []
        self._lock = threading.Lock()

    def add(self, ch: Change) -> None:
        if len(self.items) >= self.limit:
            return
        if ch.is_move:
            return self.add_sample(ch.sample())
        if ch.is_delete:
            before, after = plain(ch.raw), None
        else:
            names = (*ch.sets, *ch.removes)
            before = {n: deserializer.deserialize(ch.raw[n]) for n in names if n in ch.raw}
            after = {n: deserializer.deserialize(v) for n, v in ch.sets.items()}
            after.update({n: REMOVE for n in ch.removes})
        self.add_sample({"key": plain(ch.key), "before": before, "after": after})

    def add_sample(self, sample: dict) -> None:
        with self._lock:
            if len(self.items) < self.limit:
                self.items.append(sample)


class Worker:
    """Walks segments of a job with one client. ``report(segment)`` is called after every page
    (the segment's position and counts have moved)."""

    def __init__(self, job: Job, client: Any, caller: Caller, report: Callable[[Segment], None],
                 samples: Samples | None = None, errors: Any = None):
        self.job = job
        self.client = client
        self.caller = caller
        self.report = report
        self.samples = samples or Samples()
        self.errors = errors_of(errors)  # record(key, error): skip a failing item, or raise
        self.indexes = index_shapes(job.table.gsis, job.table.key_names)
        statements = Statements(job.table, job.filter)
        if job.kind == "move":
            self.plan = MovePlan(job.fn, job.table, job.is_meta)
            self.writes = MoveWrites(client, caller, statements, self.plan, has_filter=job.filter is not None,
                                     max_retry_seconds=job.max_retry_seconds, errors=self.errors)
        else:
            plan = {"update": UpdatePlan, "delete": DeletePlan, "rename": RenamePlan}[job.kind]
            self.plan = plan(job.fn, job.table)
            self.writes = WritePath(client, caller, statements, self.plan,
                                    mode=job.write_mode, has_filter=job.filter is not None,
                                    max_retry_seconds=job.max_retry_seconds, errors=self.errors,
                                    indexes=self.indexes)
        self.scan_kw = job.scan_kwargs()

    def run_segment(self, seg: Segment) -> None:
        kw = dict(self.scan_kw, Segment=seg.index)
        if isinstance(seg.position, dict):
            kw["ExclusiveStartKey"] = seg.position
        counts = seg.counts
        is_meta = self.job.is_meta
        stop = self.caller.stop
        while True:
            if stop.is_set():
                raise Stopped()
            started = time.perf_counter()
            page = self.caller.call(self.client.scan, kw, write=False)
            if self.job.dry_run:  # how long a call takes here: the estimate's measure of a move's call
                counts.pages += 1
                counts.page_seconds += time.perf_counter() - started
            units = consumed(page, 0.5 * max(1, page.get("ScannedCount", 1)) / 8)
            counts.rcu += units
            self.caller.charge(units, write=False)
            items = page.get("Items", ())
            scanned = page.get("ScannedCount", 0)
            if is_meta is not None:
                mine = [raw for raw in items if not is_meta(raw)]
                scanned -= len(items) - len(mine)  # dyn's own records are not the user's items
                items = mine
            counts.scanned += scanned
            seg.page_end = False
            self.handle(items, seg)  # counts each item matched as it decides it
            lek = page.get("LastEvaluatedKey")
            seg.position = lek or "done"
            seg.page_end = True  # a walk may stop here without reading any of this page again
            self.report(seg)
            if not lek:
                return
            kw["ExclusiveStartKey"] = lek

    def handle(self, items: list, seg: Segment) -> None:
        """Decide on the items of a page and write what was decided, a batch at a time; after
        each batch the segment's position moves to the last item decided (every item before
        it is written or left alone), so a crash re-reads at most a batch per segment."""
        counts = seg.counts
        plan = self.plan
        dry_run = self.job.dry_run
        key_names = self.job.table.key_names
        pending: list[Change] = []
        for raw in items:
            counts.matched += 1
            try:
                ch = plan(raw)
            except UpdateFailed as e:  # within the budget: left untouched, the walk goes on
                self.errors.record(e.key or {k: raw[k] for k in key_names}, e)
                counts.failed += 1
                continue
            if ch is None:
                counts.unchanged += 1
                continue
            if ch.clash:
                counts.clash(ch.key, ch.reason)
                continue
            if ch.whole:
                counts.whole_reads += 1
            if dry_run:
                if ch.is_delete:
                    counts.deleted += 1
                elif ch.is_move:
                    counts.moved += 1
                else:
                    counts.updated += 1
                counts.wcu += ch.units(self.indexes)  # what the write would consume
                self.samples.add(ch)
                continue
            pending.append(ch)
            if len(pending) >= BATCH:
                self.writes.apply(pending, counts)
                pending = []
                seg.position = {k: raw[k] for k in key_names}
                self.report(seg)
        if pending:
            self.writes.apply(pending, counts)
