"""Segments as tasks on a Dask cluster: past one machine, without a distributed system of our own.

The runner -- planning, the lock and its heartbeat, dyn's records, the checkpoints -- stays in
the ``dyn`` process. Each task walks one segment for at most ``slice_seconds`` and returns
where it got to and what it counted; the next slice of that segment starts from there. So the
positions reach the checkpoint flusher every few seconds, and a worker that dies costs at most
one slice, which Dask runs again elsewhere (the writes are conditional and ``update`` is
idempotent across crashes, as for any crash).

* **Revision code travels by value.** Workers have dyn installed (``pip install
  "dynamic[dask]"``, the same version: checked before anything runs) but not the project: the
  job, with the revision's functions, closures and helpers, is pickled by value (cloudpickle
  does so for modules that are not importable, as revision modules are not) and scattered once.
* **No writes without the lease.** A worker writes only while the run's lock is still this
  run's: it reads the version record every ``lease/6``, stops when the owner token is
  another's, and trusts only a heartbeat (``rvn``) it saw move -- waiting for the next one when
  the last it saw is half a lease old -- so that its last write comes no later than 2/3 of a
  lease after the last renewal, before anyone could take the lock over (see ``LeaseWatch``).
"""
from __future__ import annotations

import gc
import re
import socket
import threading
import time
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from ..errors import DynError, LeaseLost, UsageError
from .failures import errors_of
from .ratelimit import Stopped, TokenBucket
from .retry import Caller
from .walk import Job, Samples, Segment, Worker

if TYPE_CHECKING:
    from .engine import Engine

CONNECT_TIMEOUT = "10s"
PROBE_TIMEOUT = 5.0
STOP_GRACE = 30.0  # seconds the slices running at a stop get to return their positions


def _distributed() -> Any:
    try:
        import distributed
    except ImportError:
        raise UsageError('--dask-scheduler needs Dask: pip install "dynamic[dask]"') from None
    return distributed


@dataclass(frozen=True)
class RemoteLease:
    """What a worker needs to watch the run's lock in the table itself (picklable)."""

    table: str
    version_key: dict
    token: str
    lease_seconds: float


@dataclass
class _Slice:
    index: int
    position: dict | str | None
    seconds: float
    max_wcu: float | None
    max_rcu: float | None


@dataclass
class _Done:
    index: int
    position: dict | str | None
    counts: dict
    samples: list
    failures: list  # (raw key, error) of the items the slice skipped; the budget is the runner's


class DaskExecutor:
    """Runs the segments as tasks on the Dask cluster at ``address``; ``client_factory()`` makes a
    worker's DynamoDB client, ``lease`` lets workers watch the lock (None: no lock, e.g. a dry run)."""

    def __init__(self, address: str, client_factory: Callable[[], Any], lease: RemoteLease | None, *,
                 slice_seconds: float = 2.0, max_wcu: float | None = None, max_rcu: float | None = None):
        self.address = address
        self.client_factory = client_factory
        self.lease = lease
        self.slice_seconds = max(0.1, float(slice_seconds))
        self.max_wcu = max_wcu
        self.max_rcu = max_rcu

    def run(self, engine: "Engine") -> BaseException | None:
        pending = engine.pending()
        if not pending:
            return None
        distributed, dask = connect(self.address)
        try:
            with dask.as_current():  # as_completed and wait look for "the" client
                return self._run(engine, dask, distributed, pending)
        finally:
            dask.close()

    def _run(self, engine: "Engine", dask: Any, distributed: Any, pending: list) -> BaseException | None:
        slots = max(1, min(len(pending), sum(dask.nthreads().values())))
        share = lambda cap: cap / slots if cap else None  # noqa: E731
        spec = (self.client_factory, self.lease)
        job = dask.scatter(_Shipped(engine.job, spec), broadcast=True, hash=False)
        running: set = set()

        def submit(index: int, position: Any) -> Any:
            # no ``retries``: a slice that raised had written part of its items, and running it
            # again from the same position would apply ``update`` to them twice in one run (a
            # worker that dies is rescheduled by Dask itself, as any crash: allowed-failures)
            fut = dask.submit(_run_slice, job, _Slice(index, position, self.slice_seconds, share(self.max_wcu),
                                                      share(self.max_rcu)), pure=False)
            running.add(fut)
            return fut

        queue = distributed.as_completed([submit(s.index, s.position) for s in pending])
        error: BaseException | None = None
        try:
            for fut in queue:
                running.discard(fut)
                try:
                    done = fut.result()
                except BaseException as e:  # noqa: BLE001 - a slice failed: the run stops
                    error = error or e
                    engine.stop.set()
                    continue
                try:
                    self._apply(engine, done)
                except BaseException as e:  # noqa: BLE001 - too many items failed
                    error = error or e
                    engine.stop.set()
                if engine.stop.is_set():
                    continue
                try:
                    engine.caller.guard()
                except BaseException as e:  # noqa: BLE001 - this run lost its lease
                    error = e
                    engine.stop.set()
                    continue
                if done.position != "done":
                    queue.add(submit(done.index, done.position))
                if engine.stop.is_set():
                    break
        except BaseException:  # Ctrl-C: stop handing out slices, keep what the running ones did
            engine.stop.set()
            self._drain(engine, dask, distributed, running)
            raise
        if engine.stop.is_set():
            self._drain(engine, dask, distributed, running)
        return error

    def _apply(self, engine: "Engine", done: _Done) -> None:
        try:
            for key, error in done.failures:  # raises once the budget is spent
                errors_of(engine.errors).record(key, error)
        except BaseException:
            # the slice's position is past an item that is neither done nor recorded as skipped:
            # the segment keeps its checkpoint from before the slice, so a new run meets it again
            engine.segments[done.index].held = True
            raise
        finally:
            engine.remote_report(done.index, done.position, done.counts)
            for sample in done.samples:
                engine.samples.add_sample(sample)

    def _drain(self, engine: "Engine", dask: Any, distributed: Any, running: set) -> None:
        """After a stop: slices already running finish (their lease watch stops them if the lock
        is gone); their positions are kept. Slices not started are cancelled."""
        if not running:
            return
        finished, _ = distributed.wait(list(running), timeout=STOP_GRACE)
        for fut in finished:
            if fut.status == "finished":
                try:
                    self._apply(engine, fut.result())
                except BaseException:  # noqa: BLE001 - already stopping
                    pass
        dask.cancel(list(running))


def connect(address: str) -> tuple[Any, Any]:
    """``(distributed, client)`` for the cluster at ``address``, after checking that its workers
    run this dyn; one clear line for each way that fails."""
    distributed = _distributed()
    preflight(address)
    try:
        dask = distributed.Client(address, timeout=CONNECT_TIMEOUT, set_as_default=False)
    except Exception as e:  # noqa: BLE001 - distributed raises many kinds here
        raise _unreachable(address, e) from None
    return distributed, dask


def preflight(address: str) -> None:
    """Called before the run takes the lock: the scheduler answers and every worker runs this
    dyn. Asynchronous on purpose: a synchronous Client that failed to start lingers at exit."""
    import asyncio

    import dynamic

    distributed = _distributed()
    _probe(address)

    async def versions() -> dict:
        async with distributed.Client(address, asynchronous=True, timeout=CONNECT_TIMEOUT,
                                      set_as_default=False) as c:
            return await c.run(_dyn_version, on_error="return")

    failed = None
    try:
        found = asyncio.run(versions())
    except Exception as e:  # noqa: BLE001 - something answered there, but not a scheduler
        failed = DynError(f"{address} answers, but not as a Dask scheduler ({type(e).__name__}: {e}): check "
                          "--dask-scheduler / DYN_DASK_SCHEDULER / dask_scheduler (the scheduler's address, port 8786 by default)")
    if failed is not None:
        with warnings.catch_warnings():  # the half-started client's __del__ complains as it goes
            warnings.simplefilter("ignore", RuntimeWarning)
            gc.collect()
        raise failed
    if not found:
        raise DynError(f"the Dask cluster at {address} has no workers: start some (dask worker {address})")
    wrong = {w: v for w, v in found.items() if v != dynamic.__version__}
    if wrong:
        w, v = next(iter(wrong.items()))
        have = f"dyn {v}" if isinstance(v, str) else "no dyn"
        raise DynError(f"Dask worker {w} has {have}, this is dyn {dynamic.__version__}: install the same "
                       f'version on every worker (pip install "dynamic[dask]=={dynamic.__version__}")')


def _unreachable(address: str, e: BaseException) -> DynError:
    return DynError(f"cannot reach the Dask scheduler at {address} ({type(e).__name__}: {e}): check "
                    "--dask-scheduler / DYN_DASK_SCHEDULER / dask_scheduler and that the scheduler runs")


def _probe(address: str) -> None:
    """A plain TCP connect first: a scheduler that is not there fails in seconds, with one line
    (a Client that cannot connect lingers at exit trying to close)."""
    m = re.fullmatch(r"(?:tcp://)?\[?([^\]/]+?)\]?:(\d+)/?", address.strip())
    if not m:
        if "://" in address:
            return  # tls://, ucx://...: left to distributed
        raise UsageError(f"the Dask scheduler address {address!r} (--dask-scheduler, DYN_DASK_SCHEDULER or "
                         "dask_scheduler in dyn.toml) is not an address: give host:port or tcp://host:port "
                         "(e.g. tcp://10.0.0.5:8786)")
    try:
        socket.create_connection((m.group(1), int(m.group(2))), timeout=PROBE_TIMEOUT).close()
    except Exception as e:  # noqa: BLE001 - refused, unreachable, no route, no name
        raise _unreachable(address, e) from None


@dataclass
class _Shipped:
    """The job and how to reach the table, scattered to every worker once."""

    job: Job
    spec: tuple


def _dyn_version() -> str:
    import dynamic

    return dynamic.__version__


# ---- on a worker ----------------------------------------------------------------------------------
_cache: dict = {}
_cache_lock = threading.Lock()


def _cached(key: Any, make: Callable[[], Any]) -> Any:
    with _cache_lock:
        if key not in _cache:
            _cache[key] = make()
        return _cache[key]


class _SliceDone(Exception):
    """The slice's time is up; the segment's position was just reported."""


def _run_slice(shipped: _Shipped, work: _Slice) -> _Done:
    client_factory, lease = shipped.spec
    client = _cached(("client", client_factory), client_factory)
    guard = _cached(("lease", lease.token), lambda: LeaseWatch(lease, client)) if lease is not None else None
    stop = threading.Event()
    caller = Caller(stop=stop, guard=guard, wcu=TokenBucket(work.max_wcu) if work.max_wcu else None,
                    rcu=TokenBucket(work.max_rcu) if work.max_rcu else None,
                    max_retry_seconds=shipped.job.max_retry_seconds, label=shipped.job.label)
    deadline = time.monotonic() + work.seconds

    def report(seg: Segment) -> None:
        # a slice ends at a page's end: the next one reads no item of that page again (its
        # scanned count is the page's, counted once)
        if seg.page_end and time.monotonic() >= deadline and seg.position != "done":
            raise _SliceDone()

    seg = Segment(work.index, work.position)
    samples = Samples()
    failures = _Failures()
    try:
        Worker(shipped.job, client, caller, report, samples, failures).run_segment(seg)
    except _SliceDone:
        pass
    except Stopped:
        pass
    return _Done(seg.index, seg.position, seg.counts.as_dict(), samples.items, failures.items)


class _Failures:
    """A slice's failing items, skipped and handed back with its result."""

    def __init__(self) -> None:
        self.items: list = []
        self._lock = threading.Lock()

    def record(self, key: dict, error: BaseException) -> None:
        with self._lock:
            self.items.append((key, error))


class LeaseWatch:
    """A worker's view of the run's lock: the guard called before every write (one per worker
    process, shared by its threads). It reads the version record at most every ``lease/6``.

    The dyn process's heartbeat moves ``rvn`` every lease/3 (5 s at most). A worker cannot tell
    how old an ``rvn`` is from reading it -- the dyn process may have died long before -- so it
    dates a renewal from the read *before* the one that saw it (it was written in between) and
    trusts only a renewal it saw happen: on its first read, or when the last one it saw is older
    than ``lease/2`` (it was busy, or the reads failed), it stops writing and polls until it sees
    the next one, and gives up after a whole lease without one. The guard passes for at most
    ``lease/6`` after a check, so no write goes out later than 2/3 of a lease after the last
    renewal: before the holder's own deadline (5/6) and a third of a lease before any waiter may
    take the lock over (a whole lease of the same ``rvn``)."""

    READ_TRIES = 4  # a throttled read of the version record is tried again, briefly

    def __init__(self, lease: RemoteLease, client: Any, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self.lease = lease
        self.client = client
        self.clock = clock
        self.sleep = sleep
        self.every = max(0.05, lease.lease_seconds / 6)
        self.still = lease.lease_seconds / 2  # the last renewal seen may be this old
        self.poll = max(0.02, min(1.0, lease.lease_seconds / 30))  # while waiting for a renewal
        self.lost: str | None = None
        self._checked = -1e9
        self._rvn: str | None = None
        self._read_at: float | None = None  # the last successful read
        self._rvn_since: float | None = None  # the current rvn was written after this (None: unknown)
        self._lock = threading.Lock()

    def __call__(self) -> None:
        if self.lost:
            raise LeaseLost(self.lost)
        if self.clock() - self._checked < self.every:
            return
        with self._lock:
            now = self.clock()
            if now - self._checked >= self.every:
                self._check()
        if self.lost:
            raise LeaseLost(self.lost)

    def _read(self) -> tuple[dict | None, float]:
        """The version record (None: unreadable), and the time just before the read that got it:
        what it says held no earlier than then."""
        delay = 0.05
        for attempt in range(self.READ_TRIES):
            sent = self.clock()
            try:
                return self.client.get_item(TableName=self.lease.table, Key=self.lease.version_key,
                                            ConsistentRead=True,
                                            ProjectionExpression="lock_owner, rvn").get("Item") or {}, sent
            except Exception:  # noqa: BLE001 - throttled or unreachable: try again, then judge by age
                if attempt + 1 < self.READ_TRIES:
                    self.sleep(delay)
                    delay *= 2
        return None, self.clock()

    def _look(self) -> bool | None:
        """One read: True (seen, the renewal dated), None (unreadable) or False (lost)."""
        item, sent = self._read()
        if item is None:
            return None
        if item.get("lock_owner", {}).get("S") != self.lease.token:
            self.lost = (f"the lock of table {self.lease.table} is no longer this run's (taken over or "
                         "released): this Dask worker stopped before writing")
            return False
        rvn = item.get("rvn", {}).get("S")
        if rvn != self._rvn:
            # a renewal between our last read and this one; the first one seen cannot be dated
            self._rvn_since = self._read_at if self._rvn is not None else None
            self._rvn = rvn
        self._read_at = sent
        return True

    def _fresh(self) -> bool:
        return self._rvn_since is not None and self.clock() - self._rvn_since <= self.still

    def _check(self) -> None:
        seen = self._look()
        deadline = self.clock() + self.lease.lease_seconds
        while seen is not False and not self._fresh():
            if self.clock() > deadline:
                self.lost = (f"cannot read the lock of table {self.lease.table}" if seen is None else
                             f"the dyn process holding the lock of table {self.lease.table} stopped "
                             "renewing it") + ": this Dask worker stopped before writing"
                return
            self.sleep(self.poll)  # no write meanwhile: wait to see the heartbeat move
            seen = self._look()
        if seen is not False:
            self._checked = self.clock()

