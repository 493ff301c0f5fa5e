"""One AWS call of the engine, retried on its own thread through throttling, 5xx and dropped
connections, with exponential backoff and full jitter.

botocore's own retries are off for the engine's client (``dynamo.make_client(engine=True)``):
botocore's standard mode waits ~0.5 s on average before its first retry, and its adaptive
mode slows *every* thread of the client when one call is throttled. Here a throttled call
waits a few tens of milliseconds on its own thread while the others go on.
"""
from __future__ import annotations

import random
import threading
import time
from typing import Any, Callable, Mapping

from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from ..dynamo import THROTTLE_CODES, error_code
from ..errors import AwsError
from .ratelimit import Stopped, TokenBucket

_RETRYABLE_EXC = (BotoConnectionError, HTTPClientError)
# an application's transaction holds the item right now: a plain write is refused, not queued
_RETRYABLE_CODES = frozenset({"TransactionConflictException"})
BASE_DELAY = 0.025
MAX_DELAY = 5.0


def retryable(e: BaseException) -> bool:
    """Throttling, an item held by a transaction, a 5xx answer, or the connection failing (the
    request may or may not have landed)."""
    if isinstance(e, ClientError):
        if error_code(e) in THROTTLE_CODES or error_code(e) in _RETRYABLE_CODES:
            return True
        return int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0) >= 500
    return isinstance(e, _RETRYABLE_EXC)


def delay(attempt: int) -> float:
    """Full jitter: uniform in [0, min(MAX, BASE * 2**attempt)] (attempt 1 -> 25 ms on average)."""
    return random.uniform(0, min(MAX_DELAY, BASE_DELAY * 2 ** min(attempt, 16)))


def consumed(resp: Mapping, fallback: float) -> float:
    """Capacity units a response says it consumed (``ReturnConsumedCapacity``), else ``fallback``."""
    cc = resp.get("ConsumedCapacity")
    if isinstance(cc, list):  # batch operations
        return sum(float(x.get("CapacityUnits") or 0) for x in cc) or fallback
    if cc and cc.get("CapacityUnits") is not None:
        return float(cc["CapacityUnits"])
    return fallback


class Caller:
    """Makes the engine's calls: waits for the rate budget, checks the lease before a write,
    retries what is worth retrying, and gives up after ``max_retry_seconds`` of failures."""

    def __init__(self, *, stop: threading.Event, guard: Callable[[], float | None] | None = None,
                 wcu: TokenBucket | None = None, rcu: TokenBucket | None = None,
                 max_retry_seconds: float = 600.0, label: str = "backfill"):
        self.stop = stop
        self.guard = guard or (lambda: None)
        self.wcu = wcu
        self.rcu = rcu
        self.max_retry_seconds = max_retry_seconds
        self.label = label

    def call(self, method: Callable, kw: dict | None = None, *, write: bool, charge: bool = True,
             stoppable: bool = True, retry_seconds: float | None = None,
             attempts: list | None = None) -> Any:
        """``method(**kw)``, retried. ``stoppable=False``: the final checkpoint flush, which runs
        after the stop. ``attempts``, when given, gets the number of tries appended (also when
        the last try raised)."""
        attempt = 0
        first_failure = 0.0
        bucket = (self.wcu if write else self.rcu) if charge else None
        stop = self.stop if stoppable else threading.Event()
        budget = self.max_retry_seconds if retry_seconds is None else retry_seconds
        while True:
            if stop.is_set():
                raise Stopped()
            if bucket is not None:
                bucket.wait(stop)
            if write:
                self.guard()
            try:
                result = method(**kw) if kw is not None else method()
            except Exception as e:
                if not retryable(e):
                    if attempts is not None:  # e.g. a failed condition on the retry of a lost response
                        attempts.append(attempt + 1)
                    raise
                now = time.monotonic()
                if not attempt:
                    first_failure = now
                elif now - first_failure > budget:
                    raise AwsError(
                        f"{self.label}: DynamoDB kept failing for {budget:.0f}s "
                        f"({error_code(e) or type(e).__name__}); the checkpoints are kept, run again "
                        "to resume") from e
                attempt += 1
                if bucket is not None:  # a throttled or failed call still costs capacity
                    bucket.charge(1.0)
                if stop.wait(delay(attempt)):
                    raise Stopped()
                continue
            if attempts is not None:
                attempts.append(attempt + 1)
            return result

    def charge(self, units: float, *, write: bool) -> None:
        bucket = self.wcu if write else self.rcu
        if bucket is not None:
            bucket.charge(units)
