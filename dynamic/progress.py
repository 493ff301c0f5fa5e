"""Progress of a long data operation: a rich bar on a terminal, a plain line every few
seconds in CI logs, or nothing.

The backfill engine calls ``advance(scanned=, matched=, updated=)`` from its worker threads
(once a page per segment) and ``close()`` once at the end; every reporter here is
thread-safe. ``make_progress`` picks one from where the output goes.
"""
from __future__ import annotations

import sys
import threading
import time
from typing import IO, Any, Protocol

__all__ = ["Progress", "NullProgress", "PlainProgress", "RichProgress", "make_progress"]


class Progress(Protocol):
    def advance(self, *, scanned: int = 0, matched: int = 0, updated: int = 0) -> None:
        """Add to the counts (called from any thread)."""
        ...

    def close(self) -> None:
        """The operation ended (successfully or not): stop drawing, print the last state."""
        ...


class NullProgress:
    """Reports nothing."""

    def advance(self, *, scanned: int = 0, matched: int = 0, updated: int = 0) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> "NullProgress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class _Counts:
    """Counts, rate and ETA shared by the reporters."""

    def __init__(self, label: str, total: int | None):
        self.label = label
        self.total = total if total and total > 0 else None
        self.scanned = self.matched = self.updated = 0
        self.started = time.monotonic()
        self.lock = threading.Lock()
        self.closed = False

    def add(self, scanned: int, matched: int, updated: int) -> None:
        with self.lock:
            self.scanned += scanned
            self.matched += matched
            self.updated += updated

    def line(self, final: bool = False) -> str:
        with self.lock:
            scanned, updated, total = self.scanned, self.updated, self.total
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = scanned / elapsed
        parts = [f"{self.label}:"]
        if total and not final:
            pct = min(100.0, 100.0 * scanned / total)
            parts.append(f"scanned {scanned:,}/~{total:,} ({pct:.0f}%)")
        else:
            parts.append(f"scanned {scanned:,}")
        parts.append(f"updated {updated:,}")
        parts.append(f"{rate:,.0f} items/s")
        if final:
            parts.append(f"in {_duration(elapsed)}")
        elif total and rate > 0 and scanned < total:
            parts.append(f"ETA {_duration((total - scanned) / rate)}")
        return ", ".join([parts[0] + " " + parts[1], *parts[2:]])


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class PlainProgress:
    """A plain line to ``stream`` at most every ``interval`` seconds, and a last one on close:
    readable in CI logs, no escape codes. ItemCount is an estimate (AWS updates it every few
    hours), so the total is shown as ``~N``."""

    def __init__(self, label: str, total: int | None, *, stream: IO[str] | None = None,
                 interval: float = 5.0):
        self._c = _Counts(label, total)
        self._stream = stream if stream is not None else sys.stderr
        self._interval = interval
        self._last = time.monotonic()
        self._emit_lock = threading.Lock()

    def advance(self, *, scanned: int = 0, matched: int = 0, updated: int = 0) -> None:
        self._c.add(scanned, matched, updated)
        now = time.monotonic()
        if now - self._last >= self._interval and self._emit_lock.acquire(blocking=False):
            try:
                if now - self._last >= self._interval:
                    self._last = now
                    self._write(self._c.line())
            finally:
                self._emit_lock.release()

    def close(self) -> None:
        with self._emit_lock:
            if self._c.closed:
                return
            self._c.closed = True
            self._write(self._c.line(final=True))

    def _write(self, line: str) -> None:
        try:
            self._stream.write(line + "\n")
            self._stream.flush()
        except (OSError, ValueError):  # a closed pipe must not stop a migration
            pass

    @property
    def counts(self) -> dict:
        return {"scanned": self._c.scanned, "matched": self._c.matched, "updated": self._c.updated}

    def __enter__(self) -> "PlainProgress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class RichProgress:
    """A rich progress bar: items scanned out of the table's ItemCount, items updated, rate
    and ETA. Rich refreshes it from its own thread; ``advance`` only adds to counters."""

    def __init__(self, label: str, total: int | None, *, stream: IO[str] | None = None):
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            Progress as _RichBar,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._c = _Counts(label, total)
        console = Console(file=stream if stream is not None else sys.stderr)
        self._bar = _RichBar(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.completed:,.0f}/{task.fields[total_text]} scanned"),
            TextColumn("{task.fields[updated]:,} updated"),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            refresh_per_second=5,
            transient=False,
        )
        self._task = self._bar.add_task(
            label, total=self._c.total, updated=0, rate="", total_text=f"~{total:,}" if self._c.total else "?"
        )
        self._bar.start()
        self._lock = threading.Lock()

    def advance(self, *, scanned: int = 0, matched: int = 0, updated: int = 0) -> None:
        self._c.add(scanned, matched, updated)
        with self._lock:
            if self._c.closed:
                return
            c = self._c
            elapsed = max(time.monotonic() - c.started, 1e-9)
            total = c.total
            if total is not None and c.scanned > total:  # ItemCount was an underestimate
                total = c.scanned
            self._bar.update(
                self._task, completed=c.scanned, total=total, updated=c.updated,
                rate=f"{c.scanned / elapsed:,.0f}/s",
            )

    def close(self) -> None:
        with self._lock:
            if self._c.closed:
                return
            self._c.closed = True
            c = self._c
            self._bar.update(self._task, completed=c.scanned, total=max(c.scanned, 1) if c.total else None,
                             updated=c.updated)
            self._bar.stop()

    @property
    def counts(self) -> dict:
        return {"scanned": self._c.scanned, "matched": self._c.matched, "updated": self._c.updated}

    def __enter__(self) -> "RichProgress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def make_progress(label: str, total: int | None, *, json_mode: bool = False,
                  stream: IO[str] | None = None) -> Progress:
    """A bar on a terminal; plain lines when ``stream`` is not a TTY (CI) or in ``--json``
    mode (stdout carries the JSON, stderr plain lines without escape codes)."""
    stream = stream if stream is not None else sys.stderr
    try:
        tty = bool(stream.isatty())
    except (AttributeError, ValueError):
        tty = False
    if tty and not json_mode:
        return RichProgress(label, total, stream=stream)
    return PlainProgress(label, total, stream=stream)
