"""What a run shows while it works: progress of a long data operation (a rich bar on a
terminal, a plain line every few seconds in CI logs, or nothing), and the :class:`Reporter`
that a run's messages, steps and lock waits go through.

The backfill engine calls ``advance(scanned=, matched=, updated=)`` from its worker threads
(once a page per segment) and ``close()`` once at the end; every reporter here is
thread-safe. ``updated`` counts what the operation writes, whatever it is: a reporter's
``verb`` ("updated", "deleted", "would update" ...) says what to call it. ``make_progress``
picks one from where the output goes; ``make_reporter`` does the same for a whole run.
"""
from __future__ import annotations

import sys
import threading
import time
from typing import IO, Any, Callable, Protocol

__all__ = ["Progress", "NullProgress", "PlainProgress", "RichProgress", "make_progress",
           "Reporter", "StreamReporter", "TerminalReporter", "make_reporter"]


class Progress(Protocol):
    """What the engine reports to. It also calls ``resume(scanned=, updated=)`` when the
    reporter has one: an operation resumed after a crash, and what its earlier runs did."""

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

    def resume(self, *, scanned: int = 0, updated: int = 0) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> "NullProgress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class _Counts:
    """Counts, rate and ETA shared by the reporters."""

    def __init__(self, label: str, total: int | None, verb: str = "updated"):
        self.label = label
        self.verb = verb
        self.total = total if total and total > 0 else None
        self.scanned = self.matched = self.updated = 0
        self.done_before = self.updated_before = 0  # a resumed operation: what earlier runs did
        self.started = time.monotonic()
        self.lock = threading.Lock()
        self.closed = False

    def add(self, scanned: int, matched: int, updated: int) -> None:
        with self.lock:
            self.scanned += scanned
            self.matched += matched
            self.updated += updated

    def resume(self, scanned: int, updated: int) -> None:
        with self.lock:
            self.done_before, self.updated_before = scanned, updated

    def line(self, final: bool = False) -> str:
        with self.lock:
            rate_of = self.scanned
            scanned, updated = self.scanned + self.done_before, self.updated + self.updated_before
            total = self.total
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = rate_of / elapsed  # this run's pace: the earlier runs' items are not in its time
        parts = [f"{self.label}:"]
        if total and not final:
            pct = min(100.0, 100.0 * scanned / total)
            parts.append(f"scanned {scanned:,}/~{total:,} ({pct:.0f}%)")
        else:
            parts.append(f"scanned {scanned:,}")
        parts.append(f"{self.verb} {updated:,}")
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
                 interval: float = 5.0, verb: str = "updated", final_line: bool = True):
        self._c = _Counts(label, total, verb)
        self._stream = stream if stream is not None else sys.stderr
        self._interval = interval
        self._final_line = final_line  # off when the step's own line will say the totals
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

    def resume(self, *, scanned: int = 0, updated: int = 0) -> None:
        """The operation resumes: earlier runs scanned and wrote this much of the table."""
        self._c.resume(scanned, updated)

    def close(self) -> None:
        with self._emit_lock:
            if self._c.closed:
                return
            self._c.closed = True
            if self._final_line:
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

    def __init__(self, label: str, total: int | None, *, stream: IO[str] | None = None,
                 verb: str = "updated", transient: bool = False):
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            Progress as _RichBar,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._c = _Counts(label, total, verb)
        console = Console(file=stream if stream is not None else sys.stderr)
        self._bar = _RichBar(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.completed:,.0f}/{task.fields[total_text]} scanned"),
            TextColumn(f"{{task.fields[updated]:,}} {verb}"),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            refresh_per_second=5,
            transient=transient,
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
            total, done = c.total, c.scanned + c.done_before
            if total is not None and done > total:  # ItemCount was an underestimate
                total = done
            self._bar.update(
                self._task, completed=done, total=total, updated=c.updated + c.updated_before,
                rate=f"{c.scanned / elapsed:,.0f}/s",
            )

    def resume(self, *, scanned: int = 0, updated: int = 0) -> None:
        """The operation resumes: the bar starts where the earlier runs left it."""
        self._c.resume(scanned, updated)
        self.advance()

    def close(self) -> None:
        with self._lock:
            if self._c.closed:
                return
            self._c.closed = True
            c = self._c
            done = c.scanned + c.done_before
            self._bar.update(self._task, completed=done, total=max(done, 1) if c.total else None,
                             updated=c.updated + c.updated_before)
            self._bar.stop()

    @property
    def counts(self) -> dict:
        return {"scanned": self._c.scanned, "matched": self._c.matched, "updated": self._c.updated}

    def __enter__(self) -> "RichProgress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def make_progress(label: str, total: int | None, *, json_mode: bool = False,
                  stream: IO[str] | None = None, verb: str = "updated") -> Progress:
    """A bar on a terminal; plain lines when ``stream`` is not a TTY (CI) or in ``--json``
    mode (stdout carries the JSON, stderr plain lines without escape codes)."""
    stream = stream if stream is not None else sys.stderr
    if _isatty(stream) and not json_mode:
        return RichProgress(label, total, stream=stream, verb=verb)
    return PlainProgress(label, total, stream=stream, verb=verb)


# ---- a whole run ----------------------------------------------------------------------

class Reporter:
    """Where a run's messages go; the runner and ``op`` call these, the CLI chooses the kind.

    This base hands every message, one line each, to ``log`` (``print``, a logger; nothing by
    default) and makes a progress reporter only when ``progress(label, total)`` is given: what
    the Python API does in a Lambda.

    - ``log(msg)``: a line that stays (warnings, notices);
    - ``status(msg)``: what the current step is doing now (creating an index, waiting for it);
    - ``progress(label, total, verb)``: a reporter for one data operation;
    - ``step_started(title)`` / ``step_finished(line)``: a step begins; it ended, ``line`` says
      what it did (its one line); ``step_stopped()``: it raised instead;
    - ``lock_wait(info, seconds_to_takeover, seconds_waited)``: still waiting for the lock;
      ``lock_done()`` once the wait is over.
    """

    def __init__(self, log: Callable[[str], None] | None = None,
                 progress: Callable[..., Progress] | None = None):
        self._log = log
        self._progress = progress
        self._countdown = _Throttle(10.0)

    def log(self, msg: str) -> None:
        if self._log:
            self._log(msg)

    def status(self, msg: str) -> None:
        self.log(msg)

    def progress(self, label: str, total: int | None, verb: str = "updated") -> Progress:
        if self._progress is None:
            return NullProgress()
        try:
            return self._progress(label, total, verb)
        except TypeError:  # a (label, total) factory
            return self._progress(label, total)

    def step_started(self, title: str) -> None:
        self.log(title)

    def step_finished(self, line: str) -> None:
        self.log(line)

    def step_stopped(self) -> None:
        """The step raised: its error says the rest."""

    def lock_wait(self, info: Any, seconds_to_takeover: float, waited: float) -> None:
        if self._countdown.due():
            self.log(_countdown_text(info, seconds_to_takeover))

    def lock_done(self) -> None:
        self._countdown = _Throttle(self._countdown.interval)


class _Throttle:
    """True at most once per ``interval`` seconds (the first call included)."""

    def __init__(self, interval: float):
        self.interval = interval
        self._last: float | None = None

    def due(self) -> bool:
        now = time.monotonic()
        if self._last is None or now - self._last >= self.interval:
            self._last = now
            return True
        return False


def _countdown_text(info: Any, seconds_to_takeover: float) -> str:
    who = f"{getattr(info, 'host', '?')}/{getattr(info, 'pid', '?')}"
    return (f"still waiting for the lock held by {who}: if it is dead, its lease runs out in "
            f"{_duration(seconds_to_takeover)}")


class StreamReporter(Reporter):
    """For logs (CI, a pipe, ``--json``): plain lines on ``err``, step lines on ``out``, a
    progress line every ``interval`` seconds, the lock countdown every ``interval`` too."""

    def __init__(self, out: IO[str] | None = None, err: IO[str] | None = None, *, interval: float = 5.0):
        super().__init__()
        self.out = out if out is not None else sys.stdout
        self.err = err if err is not None else sys.stderr
        self.interval = interval
        self._countdown = _Throttle(interval)

    def log(self, msg: str) -> None:
        _write(self.err, msg)

    def progress(self, label: str, total: int | None, verb: str = "updated") -> Progress:
        # no last line: the step's own line says the totals
        return PlainProgress(label, total, stream=self.err, interval=self.interval, verb=verb,
                             final_line=False)

    def step_started(self, title: str) -> None:
        _write(self.err, f"{title} ...")  # in a log, a long step shows what it is while it runs

    def step_finished(self, line: str) -> None:
        _write(self.out, line)


def _write(stream: IO[str], line: str) -> None:
    try:
        stream.write(line + "\n")
        stream.flush()
    except (OSError, ValueError):  # a closed pipe (`dyn upgrade head | head -1`) must not stop a run
        pass


class TerminalReporter(Reporter):
    """For a person at a terminal: while a step runs, one transient display on ``err`` (the
    step, what it is doing, a bar per data operation, the lock countdown); when it ends, the
    display goes and the step's one line is printed on ``out``. Nothing is printed twice."""

    def __init__(self, out: IO[str] | None = None, err: IO[str] | None = None):
        super().__init__()
        from rich.console import Console
        from rich.progress import BarColumn, Progress as _RichBar, TextColumn, TimeRemainingColumn

        self.out = out if out is not None else sys.stdout
        self.console = Console(file=err if err is not None else sys.stderr)
        self._bars = _RichBar(
            TextColumn("  {task.description}"),
            BarColumn(),
            TextColumn("{task.completed:,.0f}/{task.fields[total_text]} scanned"),
            TextColumn("{task.fields[written]:,} {task.fields[verb]}"),
            TextColumn("{task.fields[rate]}"),
            TimeRemainingColumn(),
            console=self.console,
        )
        self._lock = threading.RLock()
        self._live: Any = None
        self._title = ""
        self._status = ""

    # the live display: started on demand, stopped (and erased) when a step or a wait ends
    def _render(self) -> Any:
        from rich.console import Group
        from rich.spinner import Spinner

        head = Spinner("dots", text=self._title + (f": {self._status}" if self._status else ""))
        return Group(head, self._bars.get_renderable()) if self._bars.tasks else head

    def _show(self) -> None:
        from rich.live import Live

        with self._lock:
            if self._live is None:
                self._live = Live(get_renderable=self._render, console=self.console, transient=True,
                                  refresh_per_second=8, redirect_stdout=False, redirect_stderr=True)
                self._live.start()

    def _hide(self) -> None:
        with self._lock:
            live, self._live = self._live, None
            for task in list(self._bars.task_ids):
                self._bars.remove_task(task)
            self._status = ""
        if live is not None:
            live.stop()

    def log(self, msg: str) -> None:
        self.console.print(msg, markup=False, highlight=False, soft_wrap=True)  # above the display

    def status(self, msg: str) -> None:
        with self._lock:
            self._status = msg
        self._show()

    def progress(self, label: str, total: int | None, verb: str = "updated") -> Progress:
        self._show()
        return _LiveBar(self._bars, self._lock, label, total, verb)

    def step_started(self, title: str) -> None:
        with self._lock:
            self._title = title
        self._show()

    def step_finished(self, line: str) -> None:
        self._hide()
        _write(self.out, line)

    def step_stopped(self) -> None:
        self._hide()

    def lock_wait(self, info: Any, seconds_to_takeover: float, waited: float) -> None:
        with self._lock:
            self._title = _countdown_text(info, seconds_to_takeover)
        self._show()

    def lock_done(self) -> None:
        self._hide()
        with self._lock:
            self._title = ""

    def close(self) -> None:
        self._hide()


class _LiveBar:
    """One data operation's bar inside a TerminalReporter's display; gone when it closes."""

    def __init__(self, bars: Any, lock: Any, label: str, total: int | None, verb: str):
        self._c = _Counts(label, total, verb)
        self._bars, self._lock = bars, lock
        self._task = bars.add_task(label, total=self._c.total, written=0, verb=verb, rate="",
                                   total_text=f"~{self._c.total:,}" if self._c.total else "?")

    def advance(self, *, scanned: int = 0, matched: int = 0, updated: int = 0) -> None:
        self._c.add(scanned, matched, updated)
        c = self._c
        with self._lock:
            if c.closed:
                return
            elapsed = max(time.monotonic() - c.started, 1e-9)
            total = c.total if c.total is None or c.scanned <= c.total else c.scanned
            self._bars.update(self._task, completed=c.scanned, total=total, written=c.updated,
                              rate=f"{c.scanned / elapsed:,.0f} items/s")

    def close(self) -> None:
        with self._lock:
            if self._c.closed:
                return
            self._c.closed = True
            if self._task in self._bars.task_ids:
                self._bars.remove_task(self._task)

    @property
    def counts(self) -> dict:
        return {"scanned": self._c.scanned, "matched": self._c.matched, "updated": self._c.updated}


def make_reporter(*, json_mode: bool = False, out: IO[str] | None = None,
                  err: IO[str] | None = None) -> Reporter:
    """The CLI's reporter: the live display when ``err`` is a terminal, plain lines otherwise.
    With ``--json`` stdout carries only the JSON, so step lines go to ``err`` too."""
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    if json_mode:
        return StreamReporter(err, err)
    if _isatty(err):
        return TerminalReporter(out, err)
    return StreamReporter(out, err)
