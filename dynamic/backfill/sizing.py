"""How many segments and threads a run gets when the caller does not say."""
from __future__ import annotations

from math import ceil
from typing import Any

from ..dynamo import TableInfo

SEGMENT_BYTES = 2 * 1024**3  # AWS: about one parallel-scan segment per 2 GB
DEFAULT_WORKERS = 16
ITEMS_PER_SEGMENT = 250  # a small table gets few segments: each costs a Scan call at least
MAX_SEGMENTS = 1_000_000  # DynamoDB's limit on TotalSegments


def default_workers(client: Any) -> int:
    """Threads: enough calls in flight to hide latency, no more than the client's HTTP pool."""
    pool = getattr(getattr(getattr(client, "meta", None), "config", None), "max_pool_connections", None)
    return max(1, min(DEFAULT_WORKERS, int(pool or DEFAULT_WORKERS)))


def default_segments(table: TableInfo, workers: int) -> int:
    """About one segment per 2 GB (AWS's advice), and at least four per worker: segments are
    never quite equal, and small ones let the last round end together instead of leaving a
    few workers finishing long segments alone. A small table gets one segment per ~250 items
    when ItemCount is known (a 60-item table: one Scan call); DescribeTable's counts lag by
    hours on AWS, so 0 means "unknown" and gets the full count."""
    by_size = ceil(table.size_bytes / SEGMENT_BYTES) if table.size_bytes else 1
    busy = 4 * workers
    if table.item_count > 0:
        busy = min(busy, ceil(table.item_count / ITEMS_PER_SEGMENT))
    return max(1, min(MAX_SEGMENTS, max(by_size, busy)))
