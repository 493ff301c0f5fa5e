"""``--max-wcu`` / ``--max-rcu``: one budget of capacity units per second shared by every worker."""
from __future__ import annotations

import threading
import time

from ..errors import UsageError


class Stopped(Exception):
    """The run is stopping (another worker failed, the lease is gone, or Ctrl-C): write no more."""


class TokenBucket:
    """Capacity units per second. Calls wait while the bucket is in debt; each call is charged
    what DynamoDB says it consumed, after the fact, so a batch may overdraw and the next calls
    wait it off."""

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
                raise Stopped()

    def charge(self, units: float) -> None:
        with self.lock:
            self._refill()
            self.tokens -= units
