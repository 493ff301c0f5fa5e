"""Where each segment has got to, so an interrupted run resumes instead of starting over.

A segment's position is the ``LastEvaluatedKey`` of the last page it fully processed (every
item before it is written, or decided), or ``"done"``. Walkers only *mark* positions in
memory; one :class:`Flusher` per run writes every changed position together every
``interval`` seconds, and once more at the end. So bookkeeping is a fixed, small number of
writes per second whatever the segment count, and a run killed at any point re-reads about
one interval of work per segment.
"""
from __future__ import annotations

import threading
from typing import Any, Callable, Mapping, Protocol

from .ratelimit import Stopped

DEFAULT_INTERVAL = 2.0  # seconds between two flushes


class Checkpoints(Protocol):
    """The runner passes one backed by the table's ``_dyn`` records and fenced by its lock.

    One that sets ``keeps_counts = True`` gets, with each save, the counts of every segment
    saved (``{segment: {"updated": n, ...}}``, what the segment did up to that position), so
    the totals of an operation resumed after a crash can include its earlier runs.
    """

    def load(self) -> tuple[int | None, dict[int, dict | str]]:
        """``(total_segments, {segment: LastEvaluatedKey | "done"})``; ``(None, {})`` if none."""
        ...

    def save(self, positions: Mapping[int, dict | str], total_segments: int) -> None:
        """Record new positions of some segments (the others keep theirs), all at once."""
        ...

    def clear(self) -> None:
        """Forget every position: the operation completed."""
        ...


class MemoryCheckpoints:
    """Checkpoints in a dict (tests, and library callers that do not need to survive a crash)."""

    keeps_counts = True

    def __init__(self) -> None:
        self.total: int | None = None
        self.positions: dict[int, dict | str] = {}
        self.counts: dict[int, dict] = {}  # each segment's counts up to its position
        self.saves = 0  # save() calls: what a store would spend a transaction on
        self.cleared = False
        self._lock = threading.Lock()

    def load(self) -> tuple[int | None, dict[int, dict | str]]:
        with self._lock:
            return self.total, dict(self.positions)

    def save(self, positions: Mapping[int, dict | str], total_segments: int,
             counts: Mapping[int, dict] | None = None) -> None:
        with self._lock:
            self.total = total_segments
            self.positions.update(positions)
            self.counts.update(counts or {})
            self.saves += 1

    def clear(self) -> None:
        with self._lock:
            self.total, self.positions, self.counts, self.cleared = None, {}, {}, True


class Flusher:
    """Writes the positions walkers mark, every ``interval`` seconds, from its own thread.

    A save that fails for good (the lease is gone, the table refuses) is kept in ``error`` and
    ``on_error()`` is called so the run stops; transient failures are the caller's to retry.
    """

    def __init__(self, checkpoints: Checkpoints, total_segments: int, call: Callable[..., Any],
                 interval: float = DEFAULT_INTERVAL, on_error: Callable[[], None] = lambda: None):
        self.checkpoints = checkpoints
        self.total = total_segments
        self.call = call
        self.interval = max(0.0, float(interval))
        self.on_error = on_error
        self.error: BaseException | None = None
        self.flushes = 0
        self._dirty: dict[int, dict | str] = {}
        self._counts: dict[int, dict] = {}  # each dirty segment's counts at its position
        self._with_counts = bool(getattr(checkpoints, "keeps_counts", False))
        self._lock = threading.Lock()  # guards _dirty and _counts
        self._saving = threading.Lock()  # one save at a time, in mark order
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def mark(self, segment: int, position: dict | str, counts: Any = None) -> None:
        """A segment reached ``position``, having done ``counts`` (a ``Counts``, or its dict)
        so far (called by walkers; cheap)."""
        snapshot = None
        if self._with_counts and counts is not None:
            snapshot = dict(counts) if isinstance(counts, Mapping) else counts.as_dict()
        with self._lock:
            self._dirty[segment] = position
            if snapshot is not None:
                self._counts[segment] = snapshot

    def start(self) -> "Flusher":
        self._thread = threading.Thread(target=self._loop, name="dyn-checkpoints", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.flush()
            except Stopped:
                return
            except BaseException as e:  # noqa: BLE001 - handed to the run, which stops
                self.error = e
                self.on_error()
                return

    def flush(self, *, stoppable: bool = True) -> None:
        """Save what changed since the last save (nothing to do: no call)."""
        with self._saving:
            with self._lock:
                batch, self._dirty = self._dirty, {}
                counts, self._counts = self._counts, {}
            if not batch:
                return
            if self._with_counts:
                save = lambda: self.checkpoints.save(batch, self.total, counts=counts)  # noqa: E731
            else:
                save = lambda: self.checkpoints.save(batch, self.total)  # noqa: E731
            try:
                self.call(save, stoppable=stoppable)
            except BaseException:
                with self._lock:  # not saved: keep them, unless a newer position came meanwhile
                    for seg, pos in batch.items():
                        if seg not in self._dirty:
                            self._dirty[seg] = pos
                            if seg in counts:
                                self._counts[seg] = counts[seg]
                raise
            self.flushes += 1

    def close(self, *, final: bool) -> None:
        """Stop the thread; with ``final``, save what is left (best effort after a failure)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        if final and self.error is None:
            self.flush(stoppable=False)
