"""``max_errors``: how many items may fail before a step stops.

An item fails when ``update`` / ``where`` raises or returns something unusable, or when
DynamoDB rejects the write of that item (a value of the wrong type for an index key). Within
the budget the failure goes to a sink (the runner's errors file), the item is left untouched
and the walk goes on; the failure past the budget stops the run as any other error does.

The budget is one small object per step, shared by the step's data operations and by every
worker; workers only call :meth:`ErrorBudget.record`, so its state can live in the process
that plans the run while segments run elsewhere.
"""
from __future__ import annotations

import threading
from typing import Any, Callable

from .result import UpdateFailed

Sink = Callable[[dict, UpdateFailed, str], None]  # (raw key, the failure, operation label)


class ErrorBudget:
    """Up to ``limit`` failing items are handed to ``sink`` and skipped; the next one raises.

    ``limit = 0`` (the default) is "stop at the first failure" and raises the failure itself,
    unchanged. ``where`` names where the sink puts them, for the message of the stop.
    """

    def __init__(self, limit: int = 0, sink: Sink | None = None, where: str = ""):
        self.limit = max(0, int(limit))
        self.sink = sink
        self.where = where
        self.count = 0  # failures recorded, by this run and (``carry``) by earlier runs of the step
        self.spent = False  # a failure past the budget stopped the step (the runner's resume advice says so)
        self._lock = threading.Lock()

    def carry(self, n: int) -> None:
        """Failures recorded by an earlier run of the same step count against the budget too."""
        with self._lock:
            self.count += max(0, int(n))

    def record(self, key: dict, error: UpdateFailed, op: str = "") -> None:
        """Called by a worker for each failing item: returns when the item may be skipped (the
        caller counts it ``failed`` and goes on), raises when the budget is spent."""
        with self._lock:
            if self.count >= self.limit:
                raise self._over(error)
            if self.sink is not None:
                self.sink(key, error, op)
            self.count += 1

    def for_op(self, op: str) -> "OpErrors":
        """The budget as one data operation sees it: its failures are labelled ``op``."""
        return OpErrors(self, op)

    def resume_limit(self) -> int:
        """The budget a resumed run of the step needs to go on past every failure met so far
        (the one that stopped it included, as a resumed run meets those after the last
        checkpoint again), with as much room again: twice the budget that ran out."""
        return max(2 * self.limit, self.count + 1)

    def _over(self, error: UpdateFailed) -> UpdateFailed:
        if self.limit == 0:
            return error
        self.spent = True
        where = f" (listed in {self.where})" if self.where else ""
        # what to run then is the runner's to say (it knows the command that resumes the step)
        e = UpdateFailed(f"{error.message}; {self.count} item(s) had already failed{where}, the most "
                         f"max_errors = {self.limit} allows", error.key, error.original)
        e.__cause__ = error.__cause__
        return e


class OpErrors:
    """What the engine calls: ``record(key, error)``."""

    __slots__ = ("budget", "op")

    def __init__(self, budget: ErrorBudget, op: str):
        self.budget = budget
        self.op = op

    def record(self, key: dict, error: UpdateFailed) -> None:
        self.budget.record(key, error, self.op)


STOP_AT_FIRST = ErrorBudget(0)  # stateless while limit is 0: every record() raises


def errors_of(errors: Any) -> Any:
    """The ``errors`` argument of the engine: an object with ``record(key, error)``, or None."""
    return STOP_AT_FIRST if errors is None else errors
