"""Where segments run: the seam between the engine (which keeps positions, counts, progress
and checkpoints in this process) and whatever walks the segments. Threads of this process
here; worker processes (``processes.py``) and a Dask cluster (``dask.py``) implement the same
seam, and the engine does not know which one runs it."""
from __future__ import annotations

from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING, Protocol, Sequence

from .ratelimit import Stopped
from .walk import Worker

if TYPE_CHECKING:
    from .engine import Engine


class Executor(Protocol):
    def run(self, engine: "Engine") -> BaseException | None:
        """Walk every segment of ``engine.pending()``, telling the engine after every page
        (``engine.report`` for a segment object it shares, ``engine.remote_report`` for one
        walked elsewhere). On the first failure set ``engine.stop`` (the others stop at their
        next call) and return that failure once all have stopped; ``None``: all done."""
        ...


class ThreadExecutor:
    """A pool of ``workers`` threads sharing one client (boto3 clients are thread-safe): a
    thread takes a segment, walks it to its end, then takes the next."""

    def __init__(self, workers: int):
        self.workers = max(1, int(workers))

    def run(self, engine: "Engine") -> BaseException | None:
        segments = engine.pending()
        if not segments:
            return None
        stop = engine.stop
        worker = Worker(engine.job, engine.client, engine.caller, engine.report, engine.samples, engine.errors)
        with ThreadPoolExecutor(max_workers=min(self.workers, len(segments)),
                                thread_name_prefix="dyn-segment") as pool:
            futures = [pool.submit(worker.run_segment, s) for s in segments]
            try:
                done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            except BaseException:  # KeyboardInterrupt in the main thread
                stop.set()
                raise
            if any(f.exception() for f in done):
                stop.set()
            wait(futures)
        return first_error([f.exception() for f in futures])


def first_error(errors: Sequence[BaseException | None]) -> BaseException | None:
    """The failure that caused the stop, not the ``Stopped`` of those it stopped."""
    found = [e for e in errors if e is not None]
    real = [e for e in found if not isinstance(e, Stopped)]
    return (real or found or [None])[0]
