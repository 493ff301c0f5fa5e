"""Worker processes on one machine: past the one core a Python process gets.

Each worker process walks its share of the segments with its own threads and its own boto3
client, and tells the parent, through a pipe, every position and count it reaches; the parent
keeps what the engine always keeps (positions, counts, progress, checkpoints) and the lease.

* **No writes without the lease.** The parent confirms its lease every ``relay_interval``
  seconds into a shared value; a worker writes only while that confirmation is fresh, stops
  for good once the parent says the lease is lost, and waits while it is stale.
* **No orphans.** A worker stops as soon as its pipe to the parent closes, and on Linux the
  kernel kills it when the parent dies (``PR_SET_PDEATHSIG``), kill -9 included.
* **Shares.** Worker ``i`` of ``n`` walks every ``n``-th segment still to do, with up to
  ``threads`` threads of its own.
* **Revision code in the workers.** With ``fork`` (Linux, macOS) the workers inherit the job,
  closures and all. Without it (``spawn``), the job travels without its function and the
  worker loads it again from the revision file (``Job.origin``).
* Ctrl-C goes to the parent only (workers ignore SIGINT); the parent stops them and waits for
  their last positions.
"""
from __future__ import annotations

import dataclasses
import multiprocessing as mp
import os
import queue
import signal
import threading
import time
from typing import TYPE_CHECKING, Any, Callable

from ..errors import DynError, LeaseLost
from .executor import first_error
from .failures import errors_of
from .ratelimit import Stopped, TokenBucket
from .retry import Caller
from .walk import Job, Samples, Segment, Worker

if TYPE_CHECKING:
    from .engine import Engine

RELAY_INTERVAL = 0.1  # seconds between two confirmations of the lease
LEASE_WINDOW = 0.5  # a confirmation lets workers write for this long (never past the lease's end)
STOP_GRACE = 30.0  # seconds a worker gets to finish its calls after a stop


def default_processes(segments: int, threads: int = 1) -> int:
    """The cores this process may run on, capped by the segments there are to walk: a worker
    process is started only for a full share, one segment for each of its ``threads`` (a small
    table, whose few segments one process's threads walk at once, stays in one process)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, segments // max(1, threads)))


def start_method() -> str:
    return "fork" if "fork" in mp.get_all_start_methods() else "spawn"


@dataclasses.dataclass
class _Spec:
    """What a worker process starts from (pickled only with ``spawn``)."""

    job: Job
    client_factory: Callable[[], Any]
    threads: int
    max_wcu: float | None
    max_rcu: float | None
    parent: int


class ProcessExecutor:
    """``processes`` worker processes of ``threads`` threads each; ``client_factory()`` makes a
    worker's client (clients are not shared across processes); ``max_wcu``/``max_rcu`` are
    split evenly between the workers."""

    def __init__(self, processes: int, threads: int, client_factory: Callable[[], Any], *,
                 max_wcu: float | None = None, max_rcu: float | None = None, method: str | None = None):
        self.processes = max(1, int(processes))
        self.threads = max(1, int(threads))
        self.client_factory = client_factory
        self.max_wcu = max_wcu
        self.max_rcu = max_rcu
        self.method = method or start_method()

    def run(self, engine: "Engine") -> BaseException | None:
        pending = engine.pending()
        if not pending:
            return None
        n = min(self.processes, len(pending))
        ctx = mp.get_context(self.method)
        job = engine.job
        if self.method != "fork":
            if job.origin is None:
                raise DynError("worker processes without fork need the revision file to load the "
                               "update function from: run with --processes 1")
            job = dataclasses.replace(job, fn=None)
        spec = _Spec(job, self.client_factory, self.threads,
                     self.max_wcu / n if self.max_wcu else None, self.max_rcu / n if self.max_rcu else None,
                     os.getpid())
        lease = ctx.RawValue("d", 0.0)
        relay = _Relay(engine, lease)
        relay.confirm()
        procs, conns = [], []
        try:
            for i in range(n):  # each its share: every n-th segment
                share = [(seg.index, seg.position) for seg in pending[i::n]]
                parent_end, child_end = ctx.Pipe()
                p = ctx.Process(target=_child_main, args=(spec, child_end, share, lease), daemon=True,
                                name="dyn-worker")
                p.start()
                child_end.close()
                procs.append(p)
                conns.append(parent_end)
        except BaseException:
            for p in procs:
                p.kill()
            raise
        errors: list[BaseException] = []
        exited = [False] * n
        shares = [[seg.index for seg in pending[i::n]] for i in range(n)]
        readers = [threading.Thread(target=_read, args=(engine, conn, errors, exited, i, shares[i]),
                                    name=f"dyn-worker-pipe-{i}", daemon=True) for i, conn in enumerate(conns)]
        for t in readers:
            t.start()
        relay.start()
        try:
            _wait(procs, engine.stop, conns)
        except BaseException:  # Ctrl-C: stop the workers, keep their last positions, then go
            engine.stop.set()
            _broadcast(conns)
            _join(procs, STOP_GRACE)
            raise
        finally:
            relay.close()
            for t in readers:
                t.join(5)
            for c in conns:
                c.close()
        for i, p in enumerate(procs):
            if not exited[i] and not errors:
                errors.append(DynError(
                    f"{job.label}: worker process {p.pid} died (exit code {p.exitcode}); the checkpoints "
                    "are kept, run again to resume"))
        if relay.error is not None:
            errors.insert(0, relay.error)
        return first_error(errors)


class _Relay:
    """The parent's side of the lease: confirms it into ``value`` (a monotonic deadline; -1
    once lost) from its own thread."""

    def __init__(self, engine: "Engine", value: Any):
        self.engine = engine
        self.value = value
        self.error: BaseException | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="dyn-lease-relay", daemon=True)

    def confirm(self) -> bool:
        try:
            left = self.engine.caller.guard()  # a Lease's check: the seconds it still holds
        except BaseException as e:  # noqa: BLE001 - the lease is gone (or cannot be known)
            self.value.value = -1.0
            self.error = e
            self.engine.stop.set()
            return False
        window = LEASE_WINDOW if left is None else min(LEASE_WINDOW, left)
        self.value.value = time.monotonic() + window
        return True

    def _loop(self) -> None:
        while not self._done.wait(RELAY_INTERVAL):
            if not self.confirm():
                return

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._done.set()
        if self._thread.is_alive():
            self._thread.join()


def _read(engine: "Engine", conn: Any, errors: list, exited: list, i: int, share: list) -> None:
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        kind = msg[0]
        if kind == "page":
            engine.remote_report(msg[1], msg[2], msg[3])
        elif kind == "sample":
            engine.samples.add_sample(msg[1])
        elif kind == "failed":  # an item that failed: the budget (in this process) decides
            try:
                errors_of(engine.errors).record(msg[1], msg[2])
            except BaseException as e:  # noqa: BLE001 - over the budget: the run stops
                # the worker walks on past that item (it cannot know the budget is spent): its
                # segments keep the checkpoints from before it, so a new run meets it again
                for index in share:
                    engine.segments[index].held = True
                errors.append(e)
                engine.stop.set()
        elif kind == "error":
            errors.append(msg[1])
            engine.stop.set()
        elif kind == "exit":
            exited[i] = True
            return


def _broadcast(conns: list) -> None:
    for c in conns:
        try:
            c.send(("stop",))
        except (OSError, ValueError):
            pass


def _wait(procs: list, stop: threading.Event, conns: list) -> None:
    told = False
    while any(p.is_alive() for p in procs):
        if stop.is_set() and not told:
            _broadcast(conns)
            told = True
        for p in procs:
            p.join(0.05)


def _join(procs: list, grace: float) -> None:
    deadline = time.monotonic() + grace
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join()


# ---- the worker process ----------------------------------------------------------------------------
def _die_with_parent(parent: int) -> None:
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: the kernel kills us when the parent dies
    except Exception:  # noqa: BLE001 - not Linux: the closed pipe still stops us
        pass
    if os.getppid() != parent:  # it died before we got here
        os._exit(1)


class _Pipe:
    """The worker's end of the pipe, shared by its threads."""

    def __init__(self, conn: Any, stop: threading.Event):
        self.conn = conn
        self.stop = stop
        self.lock = threading.Lock()

    def send(self, msg: tuple) -> None:
        with self.lock:
            try:
                self.conn.send(msg)
            except (OSError, ValueError):  # the parent is gone
                self.stop.set()

    def listen(self) -> None:
        """Stop when told to, or when the parent is gone (the pipe closes)."""
        while True:
            try:
                msg = self.conn.recv()
            except (EOFError, OSError):
                self.stop.set()
                return
            if msg[0] == "stop":
                self.stop.set()


class _SentFailures:
    """A worker's error budget: each failing item is skipped here and counted against the
    budget in the parent, which stops the run once it is spent."""

    def __init__(self, pipe: _Pipe):
        self.pipe = pipe

    def record(self, key: dict, error: BaseException) -> None:
        self.pipe.send(("failed", key, _portable(error)))


class _SentSamples(Samples):
    def __init__(self, pipe: _Pipe):
        super().__init__()
        self.pipe = pipe

    def add_sample(self, sample: dict) -> None:
        with self._lock:
            if len(self.items) >= self.limit:
                return
            self.items.append(sample)
        self.pipe.send(("sample", sample))


def _child_main(spec: _Spec, conn: Any, share: list, lease: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    _die_with_parent(spec.parent)
    stop = threading.Event()
    pipe = _Pipe(conn, stop)
    threading.Thread(target=pipe.listen, name="dyn-parent-pipe", daemon=True).start()
    try:
        job = spec.job
        if job.fn is None and job.origin is not None:
            job = dataclasses.replace(job, fn=job.origin.load())

        def guard() -> None:
            while True:
                until = lease.value
                if until < 0:
                    raise LeaseLost("the runner lost its lock: this worker process stopped before writing")
                if time.monotonic() <= until:
                    return
                if stop.wait(0.02):  # the parent is late confirming: wait, unless told to stop
                    raise Stopped()

        caller = Caller(stop=stop, guard=guard, wcu=TokenBucket(spec.max_wcu) if spec.max_wcu else None,
                        rcu=TokenBucket(spec.max_rcu) if spec.max_rcu else None,
                        max_retry_seconds=job.max_retry_seconds, label=job.label)

        def report(seg: Segment) -> None:
            delta = seg.counts.minus(seg.reported)
            seg.reported.add(delta)
            pipe.send(("page", seg.index, seg.position, delta))

        worker = Worker(job, spec.client_factory(), caller, report, _SentSamples(pipe), _SentFailures(pipe))
    except BaseException as e:  # noqa: BLE001 - told to the parent, which stops the run
        pipe.send(("error", _portable(e)))
        conn.close()
        return

    tasks = queue.SimpleQueue()
    for task in share:
        tasks.put(task)

    def walk() -> None:
        while not stop.is_set():
            try:
                task = tasks.get_nowait()
            except queue.Empty:
                return
            seg = Segment(*task)
            try:
                worker.run_segment(seg)
            except Stopped:
                return
            except BaseException as e:  # noqa: BLE001
                stop.set()
                pipe.send(("error", _portable(e)))
                return

    threads = [threading.Thread(target=walk, name=f"dyn-segment-{i}") for i in range(min(spec.threads, len(share)))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    pipe.send(("exit",))
    conn.close()


def _portable(e: BaseException) -> BaseException:
    """The exception itself when it survives pickling, else one line saying what it was."""
    import pickle

    try:
        pickle.loads(pickle.dumps(e))
        return e
    except Exception:  # noqa: BLE001
        text = str(e).strip().splitlines()
        return DynError(f"{type(e).__name__}: {text[0] if text else repr(e)}")
