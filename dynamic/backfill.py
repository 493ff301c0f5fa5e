"""Parallel-scan engine: rewrite (or delete) existing items of a live table, safely.

The shape is the reference text's loop (Scan a page, UpdateItem each item) made safe and fast:

* **Parallel scan.** ``TotalSegments`` segments run on a pool of threads (``update`` may be any
  callable, closures included). Each thread takes a segment and walks it page by page,
  writing each item in turn; with more segments than threads, a thread that finishes one
  segment takes the next. One boto3 client is shared by every thread (clients are
  thread-safe), so the per-item cost is one UpdateItem call and little else.
* **Writes that cannot go wrong under concurrency.** Every write is an UpdateItem touching
  only the attributes ``update`` returned (SET, or REMOVE for :data:`REMOVE`), conditioned on
  the key existing (an item deleted meanwhile is never resurrected) and on every attribute
  ``update`` *read* still holding the value it saw (absent ones still absent) — the item is
  handed to ``update`` through a mapping that records reads. On a conditional-check failure
  the current item comes back with the error (``ReturnValuesOnConditionCheckFailure``):
  gone -> counted as deleted; already holding exactly what this write sets -> an earlier
  attempt of the same write landed and only its response was lost, so it is done (``update``
  is not applied twice); anything else is a real conflict -> ``update`` runs again on the
  current item. Within one run every item is updated exactly once.
* **Checkpoints.** Each segment's position is the key of the last item it fully processed
  (``ExclusiveStartKey`` may be any item key of the segment), saved at most every
  ``checkpoint_every`` seconds per segment, and ``"done"`` when the segment ends. A run
  killed anywhere re-reads at most that much per active segment, whatever the segment count
  or page size. A run that completes clears its checkpoints.
* **Throttling** and 5xx answers, and botocore giving up after its own retries, are retried
  with exponential backoff and full jitter; an item is never dropped or skipped.
  ``max_wcu``/``max_rcu`` cap consumed capacity (from ``ReturnConsumedCapacity``) with one
  token bucket shared by all threads.

Across a crash the items processed since the last checkpoint are visited again, so ``update``
should be idempotent: derive the new values from the item (``{"GSI1PK": item["PK"]}``), do
not accumulate (``item["n"] + 1``). Within one run, even through lost responses, it is safe.
"""
from __future__ import annotations

import random
import threading
import time
from collections.abc import Mapping
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from math import ceil
from typing import Any, Callable, Iterator, Protocol

from boto3.dynamodb.conditions import ConditionBase, ConditionExpressionBuilder
from boto3.dynamodb.types import Binary, TypeDeserializer, TypeSerializer
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from .dynamo import THROTTLE_CODES, TableInfo, error_code, translate
from .errors import AwsError, DynError, LeaseLost, UsageError

__all__ = [
    "REMOVE",
    "BackfillResult",
    "Checkpoints",
    "MemoryCheckpoints",
    "UpdateFailed",
    "backfill",
    "remove_attributes",
    "delete_items",
    "default_segments",
    "default_workers",
]


class _Remove:
    def __repr__(self) -> str:
        return "dynamic.REMOVE"

    def __reduce__(self) -> str:  # pickles (and copies) as the same singleton
        return "REMOVE"


REMOVE = _Remove()
"""Return ``{"attr": REMOVE}`` from an update function to remove ``attr`` from the item."""

SEGMENT_BYTES = 2 * 1024**3  # AWS: about one parallel-scan segment per 2 GB
DEFAULT_WORKERS = 16
DEFAULT_PAGE_SIZE = 100
DEFAULT_CHECKPOINT_EVERY = 1.0  # seconds between two checkpoint saves of one segment
MAX_CONFLICTS = 25  # re-applications of update() to one item before giving up
MAX_SAMPLES = 5


class UpdateFailed(DynError):
    """``update(item)`` raised (or returned something unusable) on an item.

    The backfill stops; its checkpoints stay, so once the revision is fixed a new run resumes
    where this one stopped. ``key`` is the item's key, ``__cause__`` the original exception.
    """

    def __init__(self, message: str, key: dict | None = None, original: BaseException | None = None):
        super().__init__(message)
        self.key = key
        self.original = original


@dataclass
class BackfillResult:
    """What a backfill did (or, in a dry run, would do).

    ``scanned``: items the scans evaluated; ``matched``: items passed the filter and reached
    ``update``; ``updated``: items written (dry run: that would be); ``unchanged``: ``update``
    returned None or the values the item already holds; ``conflicts``: writes that found the
    item changed since it was read and applied ``update`` again; ``deleted``: items deleted
    meanwhile (for :func:`delete_items`: items it deleted).
    """

    scanned: int = 0
    matched: int = 0
    updated: int = 0
    unchanged: int = 0
    conflicts: int = 0
    deleted: int = 0
    rcu: float = 0.0
    wcu: float = 0.0
    seconds: float = 0.0
    segments: int = 0
    samples: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["rcu"] = round(self.rcu, 1)
        d["wcu"] = round(self.wcu, 1)
        d["seconds"] = round(self.seconds, 3)
        d["samples"] = _jsonable(self.samples)
        if not self.samples:
            del d["samples"]
        return d


class Checkpoints(Protocol):
    """Where a backfill keeps each segment's position so an interrupted run can resume.

    The runner passes one backed by the table's ``_dyn`` records and fenced by its lock.
    """

    def load(self) -> tuple[int | None, dict[int, dict | str]]:
        """``(total_segments, {segment: LastEvaluatedKey | "done"})``; ``(None, {})`` if none."""
        ...

    def save(self, segment: int, position: dict | str, total_segments: int) -> None:
        """Record that every item of ``segment`` up to ``position`` (a key) is processed."""
        ...

    def clear(self) -> None:
        """Forget every position: the backfill completed."""
        ...


class MemoryCheckpoints:
    """Checkpoints in a dict (tests, and library callers that do not need to survive a crash)."""

    def __init__(self) -> None:
        self.total: int | None = None
        self.positions: dict[int, dict | str] = {}
        self.saves = 0
        self.cleared = False
        self._lock = threading.Lock()

    def load(self) -> tuple[int | None, dict[int, dict | str]]:
        with self._lock:
            return self.total, dict(self.positions)

    def save(self, segment: int, position: dict | str, total_segments: int) -> None:
        with self._lock:
            self.total = total_segments
            self.positions[segment] = position
            self.saves += 1

    def clear(self) -> None:
        with self._lock:
            self.total, self.positions, self.cleared = None, {}, True


# ---- sizing ---------------------------------------------------------------------------------
def default_workers(client: Any) -> int:
    """Threads: enough writes in flight to hide latency, no more than the client's HTTP pool."""
    pool = getattr(getattr(getattr(client, "meta", None), "config", None), "max_pool_connections", None)
    return max(1, min(DEFAULT_WORKERS, int(pool or DEFAULT_WORKERS)))


def default_segments(table: TableInfo, workers: int) -> int:
    """About one segment per 2 GB (AWS's advice), and at least four per worker: segments are
    never quite equal, and small ones let the last round end together instead of leaving a
    few workers finishing long segments alone. Small tables get fewer (~50 items each) when
    ItemCount is known; DescribeTable's counts lag by hours on AWS, so 0 means "unknown"."""
    by_size = ceil(table.size_bytes / SEGMENT_BYTES) if table.size_bytes else 1
    busy = 4 * workers
    if table.item_count > 0:
        busy = min(busy, max(1, table.item_count // 50))
    return max(1, min(1_000_000, max(by_size, busy)))


# ---- attribute values -----------------------------------------------------------------------
_deser = TypeDeserializer()
_ser = TypeSerializer()


def _av_equal(a: dict, b: dict) -> bool:
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
        return len(va) == len(vb) and all(_av_equal(x, y) for x, y in zip(va, vb))
    if ta == "M":
        return va.keys() == vb.keys() and all(_av_equal(va[k], vb[k]) for k in va)
    return va == vb


def _bytes(v: Any) -> bytes:
    return v.value if isinstance(v, Binary) else bytes(v)


def _plain(raw: Mapping) -> dict:
    return {k: _deser.deserialize(v) for k, v in raw.items()}


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, (set, frozenset)):
        return sorted((_jsonable(x) for x in v), key=repr)
    if isinstance(v, Decimal):
        return int(v) if v == v.to_integral_value() else float(v)
    if isinstance(v, (Binary, bytes, bytearray)):
        return _bytes(v).hex()
    if v is REMOVE:
        return "<removed>"
    return v


def _one_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else repr(e)


def _key_text(key: dict) -> str:
    return "{" + ", ".join(f"{k}={_jsonable(_deser.deserialize(v))!r}" for k, v in key.items()) + "}"


class ItemView(Mapping):
    """The item as plain Python values, recording which attributes ``update`` read.

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
            value = self._cache[name] = _deser.deserialize(self._raw[name])
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


# ---- filters ---------------------------------------------------------------------------------
def _scan_filter(filter: Any, exclude: Any) -> dict:
    """FilterExpression (+ names/values) for ``filter AND exclude``, via boto3's own builder."""
    conds = [c for c in (filter, exclude) if c is not None]
    if not conds:
        return {}
    for c in conds:
        if not isinstance(c, ConditionBase):
            raise UsageError(
                f"filter must be a boto3 condition such as Attr('Type').eq('Post'), not {type(c).__name__}"
            )
    cond = conds[0] if len(conds) == 1 else conds[0] & conds[1]
    built = ConditionExpressionBuilder().build_expression(cond, is_key_condition=False)
    kw: dict = {
        "FilterExpression": built.condition_expression,
        "ExpressionAttributeNames": built.attribute_name_placeholders,
    }
    if built.attribute_value_placeholders:
        kw["ExpressionAttributeValues"] = {
            k: _ser.serialize(v) for k, v in built.attribute_value_placeholders.items()
        }
    return kw


# ---- rate limit ------------------------------------------------------------------------------
class TokenBucket:
    """Capacity units per second shared by every worker. Calls wait while the bucket is in
    debt; each call is charged what DynamoDB says it consumed, after the fact."""

    def __init__(self, per_second: float):
        if per_second <= 0:
            raise UsageError(f"a capacity limit must be positive, got {per_second}")
        self.rate = float(per_second)
        self.capacity = max(1.0, self.rate)  # at most one second of burst
        self.tokens = min(self.capacity, max(1.0, self.rate / 10))  # start nearly empty
        self.stamp = time.monotonic()
        self.lock = threading.Lock()

    def _refill(self) -> None:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def wait(self, stop: threading.Event) -> None:
        while True:
            with self.lock:
                self._refill()
                if self.tokens > 0:
                    return
                delay = -self.tokens / self.rate
            if stop.wait(min(max(delay, 0.001), 0.25)):
                raise _Stopped()

    def charge(self, units: float) -> None:
        with self.lock:
            self._refill()
            self.tokens -= units


# ---- the engine ------------------------------------------------------------------------------
class _Stopped(Exception):
    """Another worker failed (or the run was interrupted): stop without writing more."""


_RETRYABLE_EXC = (BotoConnectionError, HTTPClientError)


def _retryable(e: BaseException) -> bool:
    if isinstance(e, ClientError):
        if error_code(e) in THROTTLE_CODES:
            return True
        return int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0) >= 500
    return isinstance(e, _RETRYABLE_EXC)


def _consumed(resp: Mapping, fallback: float) -> float:
    cc = resp.get("ConsumedCapacity")
    if isinstance(cc, list):  # BatchWriteItem
        return sum(float(c.get("CapacityUnits") or 0) for c in cc) or fallback
    if cc and cc.get("CapacityUnits") is not None:
        return float(cc["CapacityUnits"])
    return fallback


class _Counts:
    __slots__ = ("scanned", "matched", "updated", "unchanged", "conflicts", "deleted", "rcu", "wcu")

    def __init__(self) -> None:
        self.scanned = self.matched = self.updated = self.unchanged = 0
        self.conflicts = self.deleted = 0
        self.rcu = self.wcu = 0.0


class _Segment:
    """One segment's walk: its position, the time of its last checkpoint, its counts."""

    __slots__ = ("index", "position", "saved", "last_save", "counts", "reported")

    def __init__(self, index: int, position: dict | None):
        self.index = index
        self.position = position  # key of the last fully processed item (or page end)
        self.saved = position  # what the checkpoint store holds
        self.last_save = time.monotonic()
        self.counts = _Counts()
        self.reported = _Counts()


class _Engine:
    def __init__(self, client: Any, table: TableInfo, *, handle: Callable, filter: Any, exclude: Any,
                 is_meta: Callable[[dict], bool] | None, segments: int | None, workers: int | None,
                 page_size: int | None, checkpoints: Checkpoints | None, guard: Callable[[], None] | None,
                 dry_run: bool, max_wcu: float | None, max_rcu: float | None, progress: Any,
                 label: str, checkpoint_every: float, max_retry_seconds: float):
        self.client = client
        self.table = table
        self.key_names = table.key_names
        self.handle = handle
        self.is_meta = is_meta
        self.guard = guard or (lambda: None)
        self.dry_run = dry_run
        self.progress = progress
        self.label = label
        self.checkpoints = None if dry_run else checkpoints
        self.checkpoint_every = checkpoint_every
        self.max_retry_seconds = max_retry_seconds
        self.wcu_bucket = TokenBucket(max_wcu) if max_wcu else None
        self.rcu_bucket = TokenBucket(max_rcu) if max_rcu else None
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.samples: list[dict] = []

        self.workers = int(workers) if workers else default_workers(client)
        if self.workers < 1:
            raise UsageError(f"workers must be at least 1, got {workers}")
        total, positions = (None, {})
        if self.checkpoints is not None:
            total, positions = self.checkpoints.load()
        if total:  # a resume keeps the segmentation its positions belong to
            self.total_segments = int(total)
            positions = {int(k): v for k, v in positions.items()}
        else:
            self.total_segments = int(segments) if segments else default_segments(table, self.workers)
            positions = {}
        if self.total_segments < 1:
            raise UsageError(f"segments must be at least 1, got {segments}")
        self.page_size = int(page_size) if page_size else DEFAULT_PAGE_SIZE
        self.positions = positions
        self.scan_kw = {
            "TableName": table.name,
            "TotalSegments": self.total_segments,
            "Limit": self.page_size,
            "ReturnConsumedCapacity": "TOTAL",
            **_scan_filter(filter, exclude),
        }
        self.segments: list[_Segment] = []

    # -- calls ---------------------------------------------------------------------------------
    def call(self, method: Callable, kw: dict | None = None, *, write: bool, charge: bool = True,
             stoppable: bool = True, retry_seconds: float | None = None) -> Any:
        """One AWS call, retried through throttling, 5xx and connection failures (botocore
        retries first; this loop takes over when it gives up). Writes check the lease first.
        ``stoppable=False``: the final checkpoint flush, which runs after the stop."""
        attempt = 0
        first_failure = 0.0
        bucket = (self.wcu_bucket if write else self.rcu_bucket) if charge else None
        stop = self.stop if stoppable else threading.Event()
        budget = self.max_retry_seconds if retry_seconds is None else retry_seconds
        while True:
            if stop.is_set():
                raise _Stopped()
            if bucket is not None:
                bucket.wait(stop)
            if write:
                self.guard()
            try:
                return method(**kw) if kw is not None else method()
            except Exception as e:
                if not _retryable(e):
                    raise
                now = time.monotonic()
                if not attempt:
                    first_failure = now
                elif now - first_failure > budget:
                    raise AwsError(
                        f"{self.label}: DynamoDB kept failing for {budget:.0f}s "
                        f"({error_code(e) or type(e).__name__}); the checkpoints are kept, run again "
                        "to resume"
                    ) from e
                attempt += 1
                if bucket is not None:  # a throttled or failed write still costs capacity
                    bucket.charge(1.0)
                if stop.wait(random.uniform(0, min(5.0, 0.05 * 2 ** min(attempt, 10)))):
                    raise _Stopped()

    # -- checkpoints ---------------------------------------------------------------------------
    def maybe_checkpoint(self, seg: _Segment, now: float) -> None:
        if now - seg.last_save >= self.checkpoint_every and seg.position is not seg.saved:
            self.save(seg, seg.position)
            seg.last_save = now

    def save(self, seg: _Segment, position: dict | str, *, stoppable: bool = True) -> None:
        if self.checkpoints is None:
            return
        checkpoints, total = self.checkpoints, self.total_segments
        self.call(lambda: checkpoints.save(seg.index, position, total), write=True, charge=False,
                  stoppable=stoppable, retry_seconds=None if stoppable else 10.0)
        seg.saved = position

    def flush_checkpoints(self) -> None:
        """After a failure: save every segment's last position (unless the lease is gone)."""
        if self.checkpoints is None:
            return
        try:
            self.guard()
            for seg in self.segments:
                if seg.position is not None and seg.position is not seg.saved:
                    self.save(seg, seg.position, stoppable=False)
        except Exception:  # noqa: BLE001 - best effort: the saved positions are still valid
            pass

    # -- progress ------------------------------------------------------------------------------
    def report(self, seg: _Segment) -> None:
        if self.progress is None:
            return
        c, r = seg.counts, seg.reported
        ds, dm, du = c.scanned - r.scanned, c.matched - r.matched, c.updated - r.updated
        r.scanned, r.matched, r.updated = c.scanned, c.matched, c.updated
        if ds or dm or du:
            self.progress.advance(scanned=ds, matched=dm, updated=du)

    def add_sample(self, key: dict, before: dict, after: dict) -> None:
        if len(self.samples) >= MAX_SAMPLES:
            return
        with self.lock:
            if len(self.samples) < MAX_SAMPLES:
                self.samples.append({"key": _plain(key), "before": before, "after": after})

    # -- walking a segment ---------------------------------------------------------------------
    def scan_page(self, kw: dict, counts: Any) -> dict:
        """One Scan page, its read units counted and charged to the shared read budget."""
        page = self.call(self.client.scan, kw, write=False)
        units = _consumed(page, 0.5 * max(1, page.get("ScannedCount", 1)) / 8)
        counts.rcu += units
        if self.rcu_bucket is not None:
            self.rcu_bucket.charge(units)
        counts.scanned += page.get("ScannedCount", 0)
        return page

    def run_segment(self, seg: _Segment) -> None:
        kw = dict(self.scan_kw, Segment=seg.index)
        if seg.position is not None:
            kw["ExclusiveStartKey"] = seg.position
        counts = seg.counts
        key_names = self.key_names
        is_meta = self.is_meta
        handle = self.handle
        while True:
            page = self.scan_page(kw, counts)
            for raw in page.get("Items", ()):
                if self.stop.is_set():
                    raise _Stopped()
                if is_meta is None or not is_meta(raw):
                    counts.matched += 1
                    handle(self, seg, raw)
                seg.position = {k: raw[k] for k in key_names}
                self.maybe_checkpoint(seg, time.monotonic())
            self.report(seg)
            lek = page.get("LastEvaluatedKey")
            if not lek:
                break
            kw["ExclusiveStartKey"] = seg.position = lek
            self.maybe_checkpoint(seg, time.monotonic())
        self.finish_segment(seg)

    def finish_segment(self, seg: _Segment) -> None:
        seg.position = "done"  # type: ignore[assignment]
        if self.stop.is_set():
            raise _Stopped()
        self.save(seg, "done")

    # -- the whole run -------------------------------------------------------------------------
    def run(self) -> BackfillResult:
        started = time.monotonic()
        for i in range(self.total_segments):
            pos = self.positions.get(i)
            seg = _Segment(i, pos if isinstance(pos, dict) else None)
            if pos == "done":
                seg.position = seg.saved = "done"  # type: ignore[assignment]
            self.segments.append(seg)
        pending = [s for s in self.segments if s.position != "done"]
        error: BaseException | None = None
        try:
            if pending:
                with ThreadPoolExecutor(
                    max_workers=min(self.workers, len(pending)), thread_name_prefix="dyn-backfill"
                ) as pool:
                    futures = [pool.submit(self.run_segment, s) for s in pending]
                    try:
                        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
                    except BaseException:  # KeyboardInterrupt in the main thread
                        self.stop.set()
                        raise
                    if any(f.exception() for f in done):
                        self.stop.set()
                    wait(futures)
                    error = _first_error(futures)
            if error is None and self.checkpoints is not None:
                self.call(self.checkpoints.clear, write=True, charge=False)
        except BaseException as e:
            error = error or e
        finally:
            self.stop.set()
            result = self.result(time.monotonic() - started)
            if self.progress is not None:
                for seg in self.segments:
                    self.report(seg)
                self.progress.close()
        if error is not None:
            if not isinstance(error, LeaseLost):
                self.flush_checkpoints()
            if isinstance(error, (ClientError, BotoCoreError)):  # one line, not a traceback
                error = _with_cause(translate(error, self.table.name, self.client), error)
            try:
                error.backfill_result = result  # type: ignore[attr-defined]  # what was done
            except AttributeError:
                pass
            raise error
        return result

    def result(self, seconds: float) -> BackfillResult:
        r = BackfillResult(seconds=seconds, segments=self.total_segments, samples=list(self.samples))
        for seg in self.segments:
            c = seg.counts
            r.scanned += c.scanned
            r.matched += c.matched
            r.updated += c.updated
            r.unchanged += c.unchanged
            r.conflicts += c.conflicts
            r.deleted += c.deleted
            r.rcu += c.rcu
            r.wcu += c.wcu
        return r


def _with_cause(error: BaseException, cause: BaseException) -> BaseException:
    error.__cause__ = cause
    return error


def _first_error(futures: list) -> BaseException | None:
    errors = [f.exception() for f in futures if f.exception() is not None]
    real = [e for e in errors if not isinstance(e, _Stopped)]
    return (real or errors or [None])[0]


# ---- update: one item ------------------------------------------------------------------------
class _Writer:
    """Applies ``update`` to one item and writes the result conditionally (see module doc)."""

    def __init__(self, update: Callable[[Mapping], Mapping | None], table: TableInfo):
        self.update = update
        self.table_name = table.name
        self.key_names = table.key_names
        self.key_set = frozenset(table.key_names)
        self._expr: dict[tuple, tuple[str, str, dict]] = {}
        self._expr_lock = threading.Lock()

    def plan(self, raw: dict) -> tuple[ItemView, dict, list]:
        """Run ``update`` on the item: (the view with its reads, attributes to SET, to REMOVE)."""
        view = ItemView(raw)
        try:
            changes = self.update(view)
        except Exception as e:
            key = {k: raw[k] for k in self.key_names}
            raise UpdateFailed(
                f"update() raised {type(e).__name__}: {_one_line(e)} on item {_key_text(key)}", key, e
            ) from e
        if changes is None:
            return view, {}, []
        if not isinstance(changes, Mapping):
            key = {k: raw[k] for k in self.key_names}
            raise UpdateFailed(
                f"update() must return a dict of attributes or None, got {type(changes).__name__} "
                f"on item {_key_text(key)}", key)
        sets: dict = {}
        removes: list = []
        for name, value in changes.items():
            if value is REMOVE:
                if name in raw:
                    removes.append(name)
                continue
            try:
                av = _ser.serialize(value)
            except Exception as e:  # float, unsupported type, empty set...
                key = {k: raw[k] for k in self.key_names}
                raise UpdateFailed(
                    f"update() returned an unstorable value for {name!r} ({type(e).__name__}: {_one_line(e)}) "
                    f"on item {_key_text(key)}", key, e) from e
            cur = raw.get(name)
            if cur is None or not _av_equal(cur, av):
                sets[name] = av
        bad = self.key_set.intersection(sets).union(self.key_set.intersection(removes))
        if bad:
            key = {k: raw[k] for k in self.key_names}
            raise UpdateFailed(
                f"update() tried to change key attribute {sorted(bad)[0]!r} on item {_key_text(key)}: "
                "keys cannot be updated; put a new item and delete the old one instead", key)
        return view, sets, removes

    def expression(self, sets: dict, removes: list, present: tuple, absent: tuple) -> tuple[str, str, dict]:
        shape = (tuple(sets), tuple(removes), present, absent)
        got = self._expr.get(shape)
        if got is not None:
            return got
        names: dict[str, str] = {}
        parts = []
        if sets:
            clauses = []
            for i, n in enumerate(sets):
                names[f"#s{i}"] = n
                clauses.append(f"#s{i} = :s{i}")
            parts.append("SET " + ", ".join(clauses))
        if removes:
            clauses = []
            for i, n in enumerate(removes):
                names[f"#d{i}"] = n
                clauses.append(f"#d{i}")
            parts.append("REMOVE " + ", ".join(clauses))
        names["#k"] = self.key_names[0]
        cond = ["attribute_exists(#k)"]
        for i, n in enumerate(present):
            names[f"#c{i}"] = n
            cond.append(f"#c{i} = :c{i}")
        for i, n in enumerate(absent):
            names[f"#a{i}"] = n
            cond.append(f"attribute_not_exists(#a{i})")
        got = (" ".join(parts), " AND ".join(cond), names)
        with self._expr_lock:
            if len(self._expr) < 1024:
                self._expr[shape] = got
        return got

    def __call__(self, engine: _Engine, seg: _Segment, raw: dict) -> None:
        counts = seg.counts
        for _ in range(MAX_CONFLICTS + 1):
            view, sets, removes = self.plan(raw)
            if not sets and not removes:
                counts.unchanged += 1
                return
            key = {k: raw[k] for k in self.key_names}
            if engine.dry_run:
                counts.updated += 1
                if len(engine.samples) < MAX_SAMPLES:
                    before = {n: _deser.deserialize(raw[n]) for n in (*sets, *removes) if n in raw}
                    after = {n: _deser.deserialize(v) for n, v in sets.items()}
                    after.update({n: REMOVE for n in removes})
                    engine.add_sample(key, before, after)
                return
            # the condition: every attribute update() read still as it saw it (keys are the
            # item's identity: attribute_exists covers them)
            reads = raw.keys() if view.read_all else view.read
            present = tuple(sorted(n for n in reads if n in raw and n not in self.key_set))
            absent = () if view.read_all else tuple(
                sorted(n for n in reads if n not in raw and n not in self.key_set))
            update_expr, cond_expr, names = self.expression(sets, removes, present, absent)
            values = {f":s{i}": v for i, v in enumerate(sets.values())}
            for i, n in enumerate(present):
                values[f":c{i}"] = raw[n]
            kw = {
                "TableName": self.table_name,
                "Key": key,
                "UpdateExpression": update_expr,
                "ConditionExpression": cond_expr,
                "ExpressionAttributeNames": names,
                "ReturnConsumedCapacity": "TOTAL",
                "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
            }
            if values:
                kw["ExpressionAttributeValues"] = values
            try:
                resp = engine.call(engine.client.update_item, kw, write=True)
            except ClientError as e:
                code = error_code(e)
                if code == "ValidationException":  # e.g. a value of the wrong type for an index key
                    msg = e.response.get("Error", {}).get("Message", "")
                    raise UpdateFailed(
                        f"DynamoDB rejected the update of item {_key_text(key)}: {msg}", key, e) from e
                if code != "ConditionalCheckFailedException":
                    raise
                units = 1.0
                counts.wcu += units
                if engine.wcu_bucket is not None:
                    engine.wcu_bucket.charge(units)
                current = e.response.get("Item")
                if current is None:  # no ALL_OLD (older servers): make sure with a strong read
                    got = engine.call(engine.client.get_item, {
                        "TableName": self.table_name, "Key": key, "ConsistentRead": True}, write=False)
                    current = got.get("Item")
                if current is None:
                    counts.deleted += 1  # deleted meanwhile: never resurrect it
                    return
                if _holds(current, sets, removes):
                    counts.updated += 1  # our own earlier attempt landed; its response was lost
                    return
                counts.conflicts += 1  # changed since read: decide again on what is there now
                raw = current
                continue
            units = _consumed(resp, 1.0)
            counts.wcu += units
            counts.updated += 1
            if engine.wcu_bucket is not None:
                engine.wcu_bucket.charge(units)
            return
        key = {k: raw[k] for k in self.key_names}
        raise DynError(
            f"item {_key_text(key)} changed {MAX_CONFLICTS} times while being backfilled; "
            "the checkpoints are kept, run again to resume"
        )


def _holds(item: dict, sets: dict, removes: list) -> bool:
    """The item already has exactly what the write sets, and none of what it removes."""
    for n, v in sets.items():
        cur = item.get(n)
        if cur is None or not _av_equal(cur, v):
            return False
    return not any(n in item for n in removes)


# ---- public API ------------------------------------------------------------------------------
def backfill(
    client: Any,
    table: TableInfo,
    update: Callable[[Mapping], Mapping | None],
    *,
    filter: Any = None,
    exclude: Any = None,
    is_meta: Callable[[dict], bool] | None = None,
    segments: int | None = None,
    workers: int | None = None,
    page_size: int | None = None,
    checkpoints: Checkpoints | None = None,
    guard: Callable[[], None] | None = None,
    dry_run: bool = False,
    max_wcu: float | None = None,
    max_rcu: float | None = None,
    progress: Any = None,
    label: str = "backfill",
    checkpoint_every: float = DEFAULT_CHECKPOINT_EVERY,
    max_retry_seconds: float = 600.0,
) -> BackfillResult:
    """Apply ``update`` to every item of ``table`` matching ``filter`` (and ``exclude``).

    ``update(item)`` gets the item as a read-only mapping of plain Python values (numbers are
    ``Decimal``) and returns a dict of attributes to SET (value :data:`REMOVE` removes one), or
    None. Items already holding the returned values are not written. ``filter`` and
    ``exclude`` are boto3 conditions (``Attr(...)``) sent as the scan's FilterExpression;
    ``is_meta(raw_item)`` skips bookkeeping items client-side as well. ``guard()`` is called
    before every write and stops the run by raising. ``segments`` defaults from the table's
    size, ``workers`` from the client's connection pool; a resume keeps the checkpointed
    segment count. ``dry_run`` scans and calls ``update`` but writes nothing (and neither
    reads nor saves checkpoints). Raises :class:`UpdateFailed` when ``update`` raises.
    """
    if not callable(update):
        raise UsageError(f"update must be a callable taking the item, got {type(update).__name__}")
    engine = _Engine(
        client, table, handle=_Writer(update, table), filter=filter, exclude=exclude,
        is_meta=is_meta, segments=segments, workers=workers, page_size=page_size,
        checkpoints=checkpoints, guard=guard, dry_run=dry_run, max_wcu=max_wcu, max_rcu=max_rcu,
        progress=progress, label=label, checkpoint_every=checkpoint_every,
        max_retry_seconds=max_retry_seconds,
    )
    return engine.run()


def remove_attributes(client: Any, table: TableInfo, names: Any, *, filter: Any = None, **kw: Any) -> BackfillResult:
    """Remove the attributes ``names`` from every item matching ``filter`` (a backfill whose
    update reads nothing, so its writes are conditioned on the key only)."""
    names = [names] if isinstance(names, str) else list(names)
    if not names:
        raise UsageError("remove_attributes needs at least one attribute name")
    keys = [n for n in names if n in table.key_names]
    if keys:
        raise UsageError(f"cannot remove key attribute {keys[0]!r} of table {table.name!r}")
    removal = {n: REMOVE for n in names}
    kw.setdefault("label", f"remove {', '.join(names)}")
    return backfill(client, table, lambda item: removal, filter=filter, **kw)


class _Deleter:
    """Collects a segment's matching keys and deletes them 25 at a time with BatchWriteItem."""

    BATCH = 25

    def __init__(self, table: TableInfo):
        self.table = table
        self.pending: dict[int, list] = {}

    def __call__(self, engine: _Engine, seg: _Segment, raw: dict) -> None:
        key = {k: raw[k] for k in self.table.key_names}
        if engine.dry_run:
            seg.counts.deleted += 1
            if len(engine.samples) < MAX_SAMPLES:
                engine.add_sample(key, _plain(raw), None)  # type: ignore[arg-type]
            return
        batch = self.pending.setdefault(seg.index, [])
        batch.append(key)
        if len(batch) >= self.BATCH:
            self.flush(engine, seg)

    def flush(self, engine: _Engine, seg: _Segment) -> None:
        batch = self.pending.pop(seg.index, None)
        if not batch:
            return
        requests = [{"DeleteRequest": {"Key": k}} for k in batch]
        attempt = 0
        while requests:
            resp = engine.call(engine.client.batch_write_item, {
                "RequestItems": {self.table.name: requests}, "ReturnConsumedCapacity": "TOTAL",
            }, write=True)
            units = _consumed(resp, float(len(requests)))
            seg.counts.wcu += units
            if engine.wcu_bucket is not None:
                engine.wcu_bucket.charge(units)
            left = (resp.get("UnprocessedItems") or {}).get(self.table.name) or []
            seg.counts.deleted += len(requests) - len(left)
            requests = left
            if requests:  # throttled in part: back off, then send the rest again
                attempt += 1
                if engine.stop.wait(random.uniform(0, min(5.0, 0.05 * 2 ** min(attempt, 10)))):
                    raise _Stopped()


class _DeleteEngine(_Engine):
    """The scan walk, but positions only advance past items whose batch was deleted."""

    def run_segment(self, seg: _Segment) -> None:
        deleter: _Deleter = self.handle  # type: ignore[assignment]
        kw = dict(self.scan_kw, Segment=seg.index)
        if seg.position is not None:
            kw["ExclusiveStartKey"] = seg.position
        counts = seg.counts
        while True:
            page = self.scan_page(kw, counts)
            for raw in page.get("Items", ()):
                if self.stop.is_set():
                    raise _Stopped()
                if self.is_meta is None or not self.is_meta(raw):
                    counts.matched += 1
                    deleter(self, seg, raw)
                    if not deleter.pending.get(seg.index):  # the batch went out: all before is done
                        seg.position = {k: raw[k] for k in self.key_names}
                        self.maybe_checkpoint(seg, time.monotonic())
            deleter.flush(self, seg)
            self.report(seg)
            lek = page.get("LastEvaluatedKey")
            if not lek:
                break
            kw["ExclusiveStartKey"] = seg.position = lek
            self.maybe_checkpoint(seg, time.monotonic())
        self.finish_segment(seg)

    def report(self, seg: _Segment) -> None:
        if self.progress is None:
            return
        c, r = seg.counts, seg.reported
        ds, dm, dd = c.scanned - r.scanned, c.matched - r.matched, c.deleted - r.deleted
        r.scanned, r.matched, r.deleted = c.scanned, c.matched, c.deleted
        if ds or dm or dd:
            self.progress.advance(scanned=ds, matched=dm, updated=dd)


def delete_items(client: Any, table: TableInfo, *, filter: Any, **kw: Any) -> BackfillResult:
    """Delete every item matching ``filter`` with BatchWriteItem (25 keys a call; unprocessed
    items retried with backoff). The result's ``deleted`` counts the items deleted.

    BatchWriteItem takes no condition: an item changed after the scan matched it is deleted
    all the same. The filter is required — deleting everything is a table drop, not a migration.
    """
    if filter is None:
        raise UsageError("delete_items needs a filter (e.g. Attr('Type').eq('Draft'))")
    kw.setdefault("label", "delete items")
    options = dict(
        filter=filter, exclude=kw.pop("exclude", None), is_meta=kw.pop("is_meta", None),
        segments=kw.pop("segments", None), workers=kw.pop("workers", None),
        page_size=kw.pop("page_size", None), checkpoints=kw.pop("checkpoints", None),
        guard=kw.pop("guard", None), dry_run=kw.pop("dry_run", False), max_wcu=kw.pop("max_wcu", None),
        max_rcu=kw.pop("max_rcu", None), progress=kw.pop("progress", None), label=kw.pop("label"),
        checkpoint_every=kw.pop("checkpoint_every", DEFAULT_CHECKPOINT_EVERY),
        max_retry_seconds=kw.pop("max_retry_seconds", 600.0),
    )
    if kw:
        raise TypeError(f"delete_items() got unexpected keyword arguments {sorted(kw)}")
    return _DeleteEngine(client, table, handle=_Deleter(table), **options).run()
