"""Where segments run. The engine hands an executor the segments still to do and a function
that walks one; the executor runs them and returns the first real error. Threads of this
process here; worker processes and a Dask cluster implement the same seam."""
from __future__ import annotations

import threading
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import Callable, Protocol, Sequence

from .ratelimit import Stopped
from .walk import Segment


class Executor(Protocol):
    def run(self, walk: Callable[[Segment], None], segments: Sequence[Segment],
            stop: threading.Event) -> BaseException | None:
        """Walk every segment; on the first failure set ``stop`` (the others stop at their next
        call) and return that failure once all have stopped. ``None``: all segments done."""
        ...


class ThreadExecutor:
    """A pool of ``workers`` threads sharing one client (boto3 clients are thread-safe): a
    thread takes a segment, walks it to its end, then takes the next."""

    def __init__(self, workers: int):
        self.workers = max(1, int(workers))

    def run(self, walk: Callable[[Segment], None], segments: Sequence[Segment],
            stop: threading.Event) -> BaseException | None:
        if not segments:
            return None
        with ThreadPoolExecutor(max_workers=min(self.workers, len(segments)),
                                thread_name_prefix="dyn-segment") as pool:
            futures = [pool.submit(walk, s) for s in segments]
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
