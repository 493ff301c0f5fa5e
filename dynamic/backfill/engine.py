"""One data operation, start to end: resume from checkpoints, walk the segments on an
executor, flush positions, report progress, and turn failures into one line."""
from __future__ import annotations

import threading
import time
from typing import Any, Callable

from botocore.exceptions import BotoCoreError, ClientError

from ..dynamo import ClientSpec, TableInfo, translate
from ..errors import LeaseLost, UsageError
from .checkpoints import DEFAULT_INTERVAL, Checkpoints, Flusher
from .conditions import check
from .estimate import extrapolate, sample_segments
from .executor import Executor, ThreadExecutor
from .processes import ProcessExecutor, default_processes
from .ratelimit import Stopped, TokenBucket
from .result import BackfillResult, Clashes, Counts
from .retry import Caller
from .sizing import default_segments, default_workers
from .walk import Job, Samples, Segment

DEFAULT_PAGE_SIZE = 100
FINAL_FLUSH_SECONDS = 10.0  # retry budget of the last save after a failure


def run(client: Any, table: TableInfo, kind: str, fn: Callable | None, *, filter: Any = None,
        exclude: Any = None, is_meta: Callable[[dict], bool] | None = None, segments: int | None = None,
        workers: int | None = None, page_size: int | None = None, checkpoints: Checkpoints | None = None,
        guard: Callable[[], float | None] | None = None, dry_run: bool = False, max_wcu: float | None = None,
        max_rcu: float | None = None, progress: Any = None, label: str = "backfill",
        checkpoint_interval: float = DEFAULT_INTERVAL, write_mode: str = "batch",
        max_retry_seconds: float = 600.0, executor: Executor | None = None, processes: int | None = 1,
        client_factory: Callable[[], Any] | None = None, origin: Any = None, errors: Any = None,
        sample: float | None = None) -> BackfillResult:
    """Resolve the options into a :class:`Job` and run it (see ``dynamic.backfill.backfill``).

    ``processes``: worker processes (None: one per available core, each with a segment per thread;
    1: threads of this process only), each making its client with ``client_factory()``.
    ``executor`` overrides both (e.g. a Dask cluster). A dry run's result is the real run's
    estimate (``estimate.extrapolate``), from ``sample`` percent of the segments when given."""
    check(filter)
    if sample is not None:
        if not dry_run:
            raise UsageError("a sample applies to a dry run only: a real run scans every segment")
        if not 0 < sample <= 100:
            raise UsageError(f"sample must be a percentage above 0 and at most 100, got {sample}")
    check(exclude, "exclude")
    if write_mode not in ("batch", "item"):
        raise UsageError(f"write_mode must be \"batch\" or \"item\", got {write_mode!r}")
    workers = int(workers) if workers else default_workers(client)
    if workers < 1:
        raise UsageError(f"workers must be at least 1, got {workers}")
    checkpoints = None if dry_run else checkpoints
    total, positions = checkpoints.load() if checkpoints is not None else (None, {})
    resume = getattr(progress, "resume", None)
    if total and resume is not None and hasattr(checkpoints, "prior_totals"):
        before = checkpoints.prior_totals()  # the bar and its ETA go on from the earlier runs
        resume(scanned=int(before.get("scanned", 0)),
               updated=int(sum(before.get(k, 0) for k in ("updated", "deleted", "moved"))))
    if total:  # a resume keeps the segmentation its positions belong to
        total_segments = int(total)
        positions = {int(k): v for k, v in positions.items()}
    else:
        total_segments = int(segments) if segments else default_segments(table, workers)
        positions = {}
    if total_segments < 1:
        raise UsageError(f"segments must be at least 1, got {segments}")
    real_segments = scanned = total_segments
    if dry_run and sample is not None and sample < 100:  # the other segments count as done
        total_segments, chosen = sample_segments(real_segments, sample)
        scanned = len(chosen)
        positions = dict.fromkeys(set(range(total_segments)).difference(chosen), "done")
    job = Job(table=table, kind=kind, fn=fn, filter=filter, exclude=exclude, is_meta=is_meta,
              total_segments=total_segments, page_size=int(page_size) if page_size else DEFAULT_PAGE_SIZE,
              write_mode=write_mode, dry_run=dry_run, label=label, max_retry_seconds=max_retry_seconds,
              origin=origin)
    real_processes = 1  # how many processes the real run walks its segments in (the estimate of a move's time)
    if executor is None:
        real_processes = default_processes(real_segments, workers) if processes is None else \
            max(1, min(int(processes), real_segments))
        left = sum(1 for i in range(total_segments) if positions.get(i) != "done")
        n = default_processes(left, workers) if processes is None else min(int(processes), max(1, left))
        if n < 1:
            raise UsageError(f"processes must be at least 1, got {processes}")
        if n > 1:
            executor = ProcessExecutor(n, workers, client_factory or ClientSpec.of(client),
                                       max_wcu=max_wcu, max_rcu=max_rcu)
        else:
            executor = ThreadExecutor(workers)
    local = isinstance(executor, ThreadExecutor)  # elsewhere, the executor shares the caps out
    engine = Engine(client, job, positions, checkpoints=checkpoints, guard=guard,
                    max_wcu=max_wcu if local else None, max_rcu=max_rcu if local else None,
                    progress=progress, checkpoint_interval=checkpoint_interval,
                    executor=executor, errors=errors)
    result = engine.run()
    if dry_run:
        result = extrapolate(result, scanned_segments=scanned, total_segments=total_segments,
                             real_segments=real_segments, workers=workers, page_size=job.page_size,
                             write_mode=write_mode, max_wcu=max_wcu, max_rcu=max_rcu, processes=real_processes)
    return result


class Engine:
    """Runs one job in this process: the parent side of any executor."""

    def __init__(self, client: Any, job: Job, positions: dict, *, checkpoints: Checkpoints | None,
                 guard: Callable[[], float | None] | None, max_wcu: float | None, max_rcu: float | None,
                 progress: Any, checkpoint_interval: float, executor: Executor, errors: Any = None):
        self.client = client
        self.errors = errors  # record(key, error) for a failing item (failures.ErrorBudget)
        self.job = job
        self.checkpoints = checkpoints
        self.progress = progress
        self.executor = executor
        self.stop = threading.Event()
        self.caller = Caller(stop=self.stop, guard=guard,
                             wcu=TokenBucket(max_wcu) if max_wcu else None,
                             rcu=TokenBucket(max_rcu) if max_rcu else None,
                             max_retry_seconds=job.max_retry_seconds, label=job.label)
        self.segments = [Segment(i, positions.get(i)) for i in range(job.total_segments)]
        self.samples = Samples()
        self.flusher = None if checkpoints is None else Flusher(
            checkpoints, job.total_segments, self._save, checkpoint_interval, on_error=self.stop.set)
        self._report_lock = threading.Lock()

    def _save(self, fn: Callable[[], None], *, stoppable: bool) -> None:
        self.caller.call(fn, write=True, charge=False, stoppable=stoppable,
                         retry_seconds=None if stoppable else FINAL_FLUSH_SECONDS)

    def report(self, seg: Segment) -> None:
        """A page of ``seg`` is done: mark its position, tell progress what moved."""
        if self.flusher is not None and not seg.held:
            if seg.counts.clashes:  # an item was left in a clash: the next run must meet it again
                seg.held = True
            else:
                self.flusher.mark(seg.index, seg.position, seg.counts)  # type: ignore[arg-type]
        if self.progress is not None:
            with self._report_lock:
                c, r = seg.counts, seg.reported
                ds, dm = c.scanned - r.scanned, c.matched - r.matched
                du = (c.updated + c.deleted + c.moved) - (r.updated + r.deleted + r.moved)
                r.scanned, r.matched, r.updated, r.deleted = c.scanned, c.matched, c.updated, c.deleted
                r.moved = c.moved
            if ds or dm or du:
                self.progress.advance(scanned=ds, matched=dm, updated=du)

    def remote_report(self, index: int, position: dict | str | None, delta: dict) -> None:
        """A page of segment ``index`` was walked in another process: its new position and
        what its counts grew by."""
        seg = self.segments[index]
        seg.counts.add(delta)
        if position is not None:
            seg.position = position
        self.report(seg)

    def pending(self) -> list[Segment]:
        """The segments still to walk."""
        return [s for s in self.segments if not s.done]

    def run(self) -> BackfillResult:
        started = time.monotonic()
        error: BaseException | None = None
        if self.flusher is not None:
            self.flusher.start()
        try:
            error = self.executor.run(self)
        except BaseException as e:  # KeyboardInterrupt
            error = e
        finally:
            self.stop.set()
        if error is None:
            error = self._clashes()
        error = self._finish_checkpoints(error)
        result = self.result(time.monotonic() - started)
        if self.progress is not None:
            self.progress.close()
        if error is not None:
            if isinstance(error, (ClientError, BotoCoreError)):  # one line, not a traceback
                error = _with_cause(translate(error, self.job.table.name, self.client), error)
            try:
                error.backfill_result = result  # type: ignore[attr-defined]  # what was done
            except AttributeError:
                pass
            raise error
        return result

    def _clashes(self) -> Clashes | None:
        """A run that left items in a clash did not finish: it fails, naming them, and keeps the
        checkpoints from before them (a dry run only counts them)."""
        if self.job.dry_run:
            return None
        total = Counts()
        for seg in self.segments:
            total.add(seg.counts)
        return Clashes.of(self.job.label, total.clashes, total.clash_keys) if total.clashes else None

    def _finish_checkpoints(self, error: BaseException | None) -> BaseException | None:
        """The last flush (every segment "done" after a success), then, after a success, clear."""
        flusher = self.flusher
        if flusher is None:
            return error
        if (error is None or isinstance(error, Stopped)) and flusher.error is not None:
            error = flusher.error  # the flusher failed first (the lease is gone): the cause, not the stop
        lease_gone = isinstance(error, LeaseLost) or isinstance(flusher.error, LeaseLost)
        try:
            flusher.close(final=not lease_gone)
        except BaseException as e:  # noqa: BLE001
            if error is None:
                error = e  # a completed run whose last positions could not be saved: say so
        if error is None:
            try:
                self.caller.call(self.checkpoints.clear, write=True, charge=False, stoppable=False)
            except BaseException as e:  # noqa: BLE001
                error = e
        return error

    def result(self, seconds: float) -> BackfillResult:
        total = Counts()
        for seg in self.segments:
            total.add(seg.counts)
        return BackfillResult.from_counts(total, seconds=seconds, segments=self.job.total_segments,
                                          samples=list(self.samples.items))


def _with_cause(error: BaseException, cause: BaseException) -> BaseException:
    error.__cause__ = cause
    return error
