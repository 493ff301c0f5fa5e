"""What a dry run says about the real run: its figures, extrapolated from a sample of the
segments when asked, and how long it would take.

A sampled dry run cuts the table into at least ``SAMPLE_SEGMENTS`` parallel-scan segments and
scans about the asked share of them, spread over the whole key space and the same every time.
Parallel-scan segments split the hash space of the partition keys into equal parts, so on a
table whose items are spread over many partition keys each segment holds about the same share
of the items; every count and unit is multiplied by ``segments / scanned segments``.
"""
from __future__ import annotations

from dataclasses import replace
from math import ceil

from .result import COUNTS, BackfillResult
from .sizing import MAX_SEGMENTS

SAMPLE_SEGMENTS = 100
BATCH = 25  # writes per BatchExecuteStatement


def sample_segments(segments: int, percent: float) -> tuple[int, list[int]]:
    """``(segment count of the dry run, the segments it scans)`` for a ``percent`` sample."""
    total = int(min(MAX_SEGMENTS, max(segments, SAMPLE_SEGMENTS, ceil(100 / percent))))
    k = max(1, min(total, round(total * percent / 100)))
    return total, sorted({int((j + 0.5) * total / k) for j in range(k)})


def extrapolate(result: BackfillResult, *, scanned_segments: int, total_segments: int, real_segments: int,
                workers: int, page_size: int, write_mode: str, max_wcu: float | None,
                max_rcu: float | None, processes: int = 1) -> BackfillResult:
    """The real run's figures from a dry run that walked ``scanned_segments`` of
    ``total_segments``; ``seconds`` becomes the real run's expected duration.

    Duration: the dry run measured how long one of its calls took on one thread (a scan page
    and ``update``'s work on its items); the real run makes its scan calls (a page per
    ``page_size`` items, at least one per segment) and its writes (25 to a call, or one each
    with ``write_mode = "item"``) on ``min(workers, real_segments)`` threads at once. A move
    is a ``TransactWriteItems`` of its own: it takes as long as one of the dry run's Scan calls
    took (measured on its thread, the round trip without the work on the items), on the
    real run's ``processes`` times ``workers`` threads. A ``max_wcu`` / ``max_rcu`` cap makes
    it last at least units / cap.
    """
    factor = total_segments / max(1, scanned_segments)
    scaled = {name: int(round(getattr(result, name) * factor)) for name in COUNTS}
    rcu, wcu = result.rcu * factor, result.wcu * factor
    page = max(1, page_size)
    per_call = result.seconds * min(workers, scanned_segments) / (result.scanned / page + scanned_segments)
    batched = scaled["updated"] + scaled["deleted"]
    calls = scaled["scanned"] / page + real_segments + (batched if write_mode == "item" else ceil(batched / BATCH))
    seconds = calls * per_call / max(1, min(workers, real_segments))
    if scaled["moved"]:
        call = result.page_seconds / result.pages if result.pages else per_call
        seconds += scaled["moved"] * call / max(1, min(workers * max(1, processes), real_segments))
    if max_wcu:
        seconds = max(seconds, wcu / max_wcu)
    if max_rcu:
        seconds = max(seconds, rcu / max_rcu)
    sampled = scanned_segments < total_segments
    return replace(result, **scaled, rcu=rcu, wcu=wcu, seconds=seconds, scan_seconds=result.seconds,
                   sample=round(100.0 * scanned_segments / total_segments, 3) if sampled else None,
                   sampled_items=result.scanned if sampled else None)
