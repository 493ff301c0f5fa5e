"""Plan → lock → run each step → record. The only module that knows both revisions and the table.

The runner reads the heads, resolves the target and plans *before* taking the lock, so a bad
target or a broken revision fails without writing anything; it then takes the lease lock,
re-reads the heads (another deploy may have done the work meanwhile) and plans again.
Each step is marked in progress (dirty) before it runs and recorded, with the new heads,
in one fenced transaction after it ran.
"""
from __future__ import annotations

import getpass
import json
import os
import shlex
import socket
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from . import __version__
from . import lock as locklib
from .dynamo import TableInfo
from . import backup as backups
from .backfill.cluster import RemoteLease, preflight
from .backfill.failures import ErrorBudget
from .backfill.values import jsonable, plain
from .errors import DirtyState, DynError, GraphError, Interrupted, Irreversible, LeaseLost, MigrationError, UsageError
from .graph import RevisionGraph, Step, Target
from .operations import Operations, OpSettings, add_counts, history_counts
from .progress import Reporter
from .scripts import ScriptDirectory
from .store import Store, StoreCheckpoints
from .store import now_iso as _store_now


def now_iso() -> str:
    """UTC now, to the millisecond, with a Z: the one timestamp format of dyn's records."""
    return _store_now("milliseconds")


def who() -> str:
    try:
        user = getpass.getuser()
    except Exception:
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


DRY_RUN_FAILURES = 10**12  # a dry run's error budget: it counts failing items, it does not stop


class ErrorsFile:
    """Where a run records the items it skipped (``max_errors``): one JSON line each,
    ``{"revision", "direction", "op", "key", "error"}``, appended and flushed as they come.
    An item already listed for the same step and operation (an earlier run of the step failed
    on it too, before its last checkpoint) is not listed again."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.written = 0  # lines this run appended
        self._lock = threading.Lock()
        self._listed: set | None = None

    def check(self) -> None:
        """Refuse, before anything runs, a path the run could not write to."""
        p = self.path
        why = None
        if p.is_dir():
            why = "it is a folder"
        elif p.exists():
            if not os.access(p, os.W_OK):
                why = "it is not writable"
        elif not p.parent.is_dir():
            why = f"its folder {p.parent} does not exist"
        elif not os.access(p.parent, os.W_OK):
            why = f"its folder {p.parent} is not writable"
        if why is None:  # permissions are not the whole story (root, /proc, a read-only mount): try it
            existed = p.exists()
            try:
                with open(p, "a", encoding="utf-8"):
                    pass
            except OSError as e:
                why = e.strerror or type(e).__name__
            else:
                if not existed:
                    p.unlink(missing_ok=True)
        if why:
            raise UsageError(f"errors file {p} cannot be written ({why}): pass --errors-file PATH "
                             "(or set errors_file) naming a file in a writable folder")

    def sink(self, revision: str, direction: str) -> Callable[[dict, Any, str], None]:
        def write(key: dict, error: Any, op: str) -> None:
            plain_key = jsonable(plain(key or {}))
            ident = (revision, direction, op, json.dumps(plain_key, sort_keys=True, default=str))
            line = json.dumps({"revision": revision, "direction": direction, "op": op, "key": plain_key,
                               "error": getattr(error, "message", str(error))}, default=str)
            with self._lock:
                listed = self._load_listed()
                if ident in listed:
                    return
                try:
                    with open(self.path, "a", encoding="utf-8") as f:
                        f.write(line + "\n")
                except OSError as e:
                    raise DynError(f"cannot append to the errors file {self.path}: {e.strerror}") from None
                listed.add(ident)
                self.written += 1
        return write

    def _load_listed(self) -> set:
        if self._listed is None:
            self._listed = set()
            try:
                lines = self.path.read_text(encoding="utf-8").splitlines()
            except OSError:
                lines = []
            for line in lines:
                try:
                    d = json.loads(line)
                    self._listed.add((d["revision"], d["direction"], d["op"],
                                      json.dumps(d["key"], sort_keys=True, default=str)))
                except (ValueError, KeyError, TypeError):
                    continue
        return self._listed


@dataclass
class RunOptions:
    dry_run: bool = False
    lease_seconds: float = 60.0
    lock_timeout: float = 600.0
    settings: OpSettings = field(default_factory=OpSettings)
    log: Callable[[str], None] = lambda msg: None
    progress: Callable[..., Any] | None = None
    backup: str = "none"
    # where messages, steps and lock waits go; None: a Reporter over ``log`` and ``progress``
    reporter: Reporter | None = None
    max_errors: int = 0  # failing items a step records in errors_file and skips before it stops
    errors_file: ErrorsFile | None = None


# ---- what a step did, in words ------------------------------------------------------------

# data operations: op name -> (verb, dry-run verb, the counts key of what it wrote)
_ITEM_OPS = {
    "backfill": ("updated", "would update", "updated"),
    "remove_attributes": ("updated", "would update", "updated"),
    "delete_items": ("deleted", "would delete", "deleted"),
    "rename_attribute": ("renamed", "would rename", "updated"),
    "move_items": ("moved", "would move", "moved"),
    "put_items": ("put", "would put", "put"),
}
# schema operations: op name -> (what it did, what it acts on)
_SCHEMA_OPS = {
    "create_gsi": ("created index", "index"),
    "delete_gsi": ("deleted index", "index"),
    "update_ttl": ("set TTL", "TTL"),
    "update_table": ("updated table", "table"),
}
# counts that are not item counts, or are said otherwise
_NOT_COUNTS = {"scanned", "matched", "rcu", "wcu", "seconds", "segments", "samples", "cost_usd", "scan_seconds",
               "sample", "sampled_items", "whole_reads"}
# how the other item counts read; a key not here reads as "<key> <n>"
_COUNT_WORDS = {"unchanged": "unchanged", "conflicts": "conflicts retried", "gone": "deleted meanwhile",
                "unmatched": "no longer matching", "failed": "failed, left untouched",
                "already_moved": "already moved", "clashes": "clashes left as they were"}


def _n(value: Any) -> int | float | None:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _items(n: float) -> str:
    return f"{n:,.0f} item{'' if n == 1 else 's'}"


def op_phrase(op: Mapping, dry_run: bool = False) -> str:
    """One operation of a step in words: "updated 600 items (scanned 825, 4,163 items/s)",
    "deleted 3 items", "would create index GSI1". The verb comes from the operation, never
    from which counts happen to be there; counts it does not know are still shown."""
    name, detail = str(op.get("op", "?")), str(op.get("detail", ""))
    counts = op.get("counts") or {}
    if name in _SCHEMA_OPS:
        done, noun = _SCHEMA_OPS[name]
        if detail.endswith(")") and " (" in detail:
            what, note = detail[:-1].split(" (", 1)
            return f"{note} {noun} {what}" if note.startswith("would ") else f"{noun} {what} {note}"
        return f"{done} {detail}".strip()
    if name in _ITEM_OPS:
        verb, dry_verb, key = _ITEM_OPS[name]
        written = _n(counts.get(key))
        if written is None:
            written = _n(counts.get(f"would_{key}")) or 0
        main = f"{dry_verb if dry_run else verb} {_items(written)}"
        skip = {key, f"would_{key}"}
    else:
        main, skip = f"{name} {detail}".strip(), set()
    extra = []
    scanned, seconds = _n(counts.get("scanned")), _n(counts.get("seconds"))
    if scanned:
        rate = f", {scanned / seconds:,.0f} items/s" if seconds else ""
        extra.append(f"scanned {scanned:,.0f}{rate}")
    for k, v in counts.items():
        v = _n(v)
        if k in skip or k in _NOT_COUNTS or not v or (name == "delete_items" and k == "deleted"):
            continue
        word = _COUNT_WORDS.get(k, k.replace("_", " "))
        extra.append(f"{v:,.0f} {word}" if k in _COUNT_WORDS else f"{word} {v:,.0f}")
    return main + (f" ({', '.join(extra)})" if extra else "")


def ops_phrase(ops: Iterable[Mapping], dry_run: bool = False) -> str:
    """A step's operations in words, ``; ``-separated; "no data operations" when it ran none."""
    return "; ".join(op_phrase(o, dry_run) for o in ops) or "no data operations"


def step_verb(direction: str, dry_run: bool = False) -> str:
    """What a step in this direction is called: upgraded / reverted (would ... in a dry run)."""
    if direction == "down":
        return "would revert" if dry_run else "reverted"
    return "would upgrade" if dry_run else "upgraded"


@dataclass
class StepResult:
    revision: str
    direction: str
    doc: str
    seconds: float
    ops: list[dict]
    counts: dict
    resumed: bool = False
    dry_run: bool = False
    # dry run: an earlier step of the same dry run would write, and a dry run cannot apply that
    # first, so this step's figures are of the table as it is now
    before_earlier_steps: bool = False

    @property
    def would_write(self) -> bool:
        """Whether the step writes items (a dry run: would): the steps after it read them."""
        return any(_n(self.counts.get(k)) for k in ("updated", "deleted", "moved", "put", "would_put"))

    def line(self) -> str:
        """The step's one line: what it did, how many, how fast."""
        when = "" if self.dry_run else f" in {self.seconds:.1f}s"
        resumed = " (resumed)" if self.resumed else ""
        return (f"{step_verb(self.direction, self.dry_run)} {self.revision}{resumed}{when}: "
                f"{ops_phrase(self.ops, self.dry_run)} — {self.doc}")


@dataclass
class RunResult:
    command: str
    target: tuple[str, ...]
    heads_before: tuple[str, ...]
    heads_after: tuple[str, ...]
    steps: list[StepResult]
    dry_run: bool
    seconds: float
    warnings: list[str]
    cleared: dict | None = None  # stamp: the step in progress whose mark it removed
    # where this run recorded the items it skipped, if any (a dry run with a budget: where a real
    # run would; it writes no file)
    errors_file: str | None = None
    max_errors: int = 0  # the error budget per step (a dry run says what a real run would do with it)

    @property
    def nothing_to_do(self) -> bool:
        return not self.steps

    def line(self) -> str:
        """The run in one line, after the steps' own lines."""
        if self.nothing_to_do:
            return f"nothing to do: the table is already at {', '.join(self.heads_after) or 'base'}"
        n = len(self.steps)
        what = f"{n} revision{'' if n == 1 else 's'}"
        verb = step_verb("down" if self.command == "downgrade" else "up", self.dry_run)
        if self.dry_run:
            return f"dry run: {verb} {what}; nothing was written"
        return f"{verb} {what} in {self.seconds:.1f}s; heads now {', '.join(self.heads_after) or 'base'}"

    def failure_lines(self) -> list[str]:
        """A dry run's word on the items that would fail: what a real run does with them under
        its ``max_errors`` budget, and for the steps evaluated before the earlier steps' writes,
        that the count is of the table as it is now (the real run changes it first)."""
        now = [s for s in self.steps if not s.before_earlier_steps and _failed(s)]
        later = [s for s in self.steps if s.before_earlier_steps and _failed(s)]
        why = "(update/where raised, or returned something unusable)"
        out = []
        if now:
            n = sum(_failed(s) for s in now)
            over = [s for s in now if _failed(s) > self.max_errors]
            if not self.max_errors:
                out.append(f"{n:,} item(s) would fail {why}: a real run stops at the first one unless "
                           "--max-errors lets it skip that many and go on")
            elif over:
                where = ", ".join(f"{s.revision} ({_failed(s):,})" for s in over)
                out.append(f"{n:,} item(s) would fail {why}: more than the --max-errors budget of "
                           f"{self.max_errors:,} per step in {where}, so a real run would stop that step at its "
                           f"{_ordinal(self.max_errors + 1)} failure")
            else:
                out.append(f"{n:,} item(s) would fail {why}: within the --max-errors budget of "
                           f"{self.max_errors:,} per step, a real run would skip them, list them in "
                           f"{self.errors_file or 'the errors file'} and go on")
        if later:
            n = sum(_failed(s) for s in later)
            where = ", ".join(s.revision for s in later)
            out.append(f"{n:,} item(s) would fail in {where} on the table as it is now; the earlier steps "
                       "of this run change it first, so this is not a prediction that the real run fails")
        return out

    @property
    def totals(self) -> dict:
        """This run's counts summed over its steps (a dry run: the estimate of the real run)."""
        return add_counts(*(s.counts for s in self.steps))

    def as_dict(self) -> dict:
        d = asdict(self)
        d["totals"] = self.totals
        d["nothing_to_do"] = self.nothing_to_do
        d["target"] = list(self.target)
        d["heads_before"] = list(self.heads_before)
        d["heads_after"] = list(self.heads_after)
        return d


DASK_HEARTBEAT = 1.0  # seconds between renewals while Dask workers watch the lock


class RevisionExited(Exception):
    """A revision's ``upgrade``/``downgrade`` called ``sys.exit()``: a failure like any other."""


def _failed(step: StepResult) -> int:
    return int(step.counts.get("failed", 0))


def _ordinal(n: int) -> str:
    """1st, 2nd, 3rd, 4th, 11th, 21st ..."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n:,}{suffix}"


def checksum_changes(scripts: ScriptDirectory, applied: dict[str, str]) -> list[tuple[str, str]]:
    """``(revision, what happened)`` for each applied revision whose file changed, or vanished,
    since it ran."""
    out = []
    for rev, recorded in sorted(applied.items()):
        s = scripts.scripts.get(rev)
        if s is None:
            out.append((rev, f"revision {rev} was applied but its file is missing from {scripts.versions}"))
        elif recorded and s.checksum != recorded:
            out.append((rev, f"revision {rev} ({s.revision.path}) changed since it was applied"))
    return out


def checksum_warnings(scripts: ScriptDirectory, applied: dict[str, str]) -> list[str]:
    """Applied revisions whose file changed, or vanished, since they ran."""
    return [text for _, text in checksum_changes(scripts, applied)]


def utc_z(value: Any) -> Any:
    """A timestamp as dyn writes them now (``...Z``): records of older dyns said ``+00:00``."""
    return value[:-6] + "Z" if isinstance(value, str) and value.endswith("+00:00") else value


def _heads_text(heads: Iterable[str]) -> str:
    return ", ".join(heads) or "base"


def resume_command(graph: RevisionGraph, heads: tuple[str, ...], dirty: Mapping) -> str | None:
    """The command that resumes the step ``dirty`` left in progress, or None when its revision
    is not in the files. An up step: ``dyn upgrade R``. A down step: the downgrade target that
    removes R and as little else as possible (``dyn downgrade R`` would keep R: it loops)."""
    rev, direction = str(dirty.get("revision", "")), dirty.get("direction")
    if rev not in graph.revisions:
        return None
    if direction == "up":
        return f"dyn upgrade {rev}"
    best: tuple[int, str] | None = None
    for target in (*graph.get(rev).down_revision, "base"):
        try:
            plan = graph.downgrade_plan(heads, () if target == "base" else (target,))
        except DynError:
            continue
        if any(s.revision.revision == rev and s.direction == "down" for s in plan):
            if best is None or len(plan) < best[0]:
                best = (len(plan), target)
    return f"dyn downgrade {best[1]}" if best else None


def running_now(lock: Any) -> str:
    """What to say of a step in progress while a live runner holds the lock: it is applying it
    now, so no resume or stamp advice (either would wait for the lock, or undo its work)."""
    return (f"being applied now by the runner holding the lock ({lock.host}/{lock.pid}, since {lock.since}): "
            "wait for it to finish; `dyn lock` shows the holder")


def dirty_advice(graph: RevisionGraph, heads: tuple[str, ...], dirty: Mapping, versions: Any = "",
                 lock: Any = None) -> str:
    """What to do about a step left in progress, naming commands that work from this state;
    ``lock``: the version record's lock, when a live holder may be applying the step now."""
    if locklib.holder_is_live(lock):
        return running_now(lock)
    rev, direction = dirty.get("revision"), dirty.get("direction")
    stamp = f"`dyn stamp {heads[0] if heads else 'base'}`" if len(heads) <= 1 else None
    cmd = resume_command(graph, heads, dirty)
    if cmd is None:
        where = f" from {versions}" if versions else ""
        fix = f"restore the file, then `dyn upgrade {rev}` resumes it" if direction == "up" else \
            "restore the file to resume it"
        if stamp:
            fix += (f"; or give the step up with {stamp} (records the table at "
                    f"{_heads_text(heads)} and clears the mark; undo by hand what it wrote)")
        return f"revision {rev}'s file is missing{where}: {fix}"
    out = f"`{cmd}` resumes it"
    if stamp:
        out += f" (or, after repairing the items by hand, {stamp} clears the mark)"
    return out


def dirty_message(graph: RevisionGraph, heads: tuple[str, ...], dirty: Mapping, versions: Any = "",
                  lock: Any = None) -> str:
    """The one line about a step left in progress, for every command that meets one; with the
    version record's ``lock`` held by a live runner, the line says that runner is applying it."""
    if locklib.holder_is_live(lock):
        return f"{dirty.get('direction')} of revision {dirty.get('revision')} is {running_now(lock)}"
    return (f"{dirty.get('direction')} of revision {dirty.get('revision')} was left in progress by "
            f"{dirty.get('who', '?')} at {utc_z(dirty.get('started', '?'))}: "
            f"{dirty_advice(graph, heads, dirty, versions)}")


DATA_OPS = ("backfill", "remove_attributes", "delete_items", "put_items")


def data_operations(script: Any, direction: str) -> list[str]:
    """The data operations (``op.backfill`` ...) a revision's upgrade (``"up"``) or downgrade
    calls, read from its source without running it; a call in a helper of the module counts
    for both directions."""
    import ast

    try:
        tree = ast.parse(script.path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return []

    def calls(node: Any) -> list[str]:
        return [n.func.attr for n in ast.walk(node) if isinstance(n, ast.Call)
                and isinstance(n.func, ast.Attribute) and n.func.attr in DATA_OPS]

    name = "upgrade" if direction == "up" else "downgrade"
    other = "downgrade" if direction == "up" else "upgrade"
    found: list[str] = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if node.name == name or node.name != other:
                found += calls(node)
    return found


class _Reached(Exception):
    """The probe reached a real operation: the downgrade does something, so it is reversible."""


class _ProbeOp:
    """Stands in for `op` to learn, without touching the table, whether a downgrade declares
    itself irreversible: ``op.irreversible()`` raises, any other use ends the probe."""

    def irreversible(self, reason: str) -> None:
        raise Irreversible(reason)

    def __getattr__(self, name: str) -> Any:
        raise _Reached(name)


def irreversible_how(script: Any) -> tuple[str, str] | None:
    """How a revision declares that it cannot be downgraded, and why: ``("irreversible =",
    why)`` for the module-level declaration, ``("op.irreversible()", why)``, or
    ``("NotImplementedError", why)`` raised in ``downgrade`` before any operation; else None."""
    declared = getattr(script.module, "irreversible", None)
    if isinstance(declared, str) and declared:
        return "irreversible =", declared
    if declared is True:
        return "irreversible =", "declared irreversible"
    try:
        script.module.downgrade(_ProbeOp())
    except Irreversible as e:
        return "op.irreversible()", e.reason
    except NotImplementedError as e:
        return "NotImplementedError", str(e) or "its downgrade() raises NotImplementedError"
    except (Exception, SystemExit):  # the real run meets it, and says so
        return None
    return None


def irreversible_reason(script: Any) -> str | None:
    """Why a revision cannot be downgraded, or None (see :func:`irreversible_how`)."""
    how = irreversible_how(script)
    return how[1] if how else None


class Runner:
    """Moves one table along the revision graph."""

    def __init__(self, scripts: ScriptDirectory, client: Any, table: TableInfo, store: Store,
                 options: RunOptions | None = None, *, data_client: Any = None):
        self.scripts = scripts
        self.graph: RevisionGraph = scripts.graph
        self.client = client
        self.data_client = data_client or client
        self.table = table
        self.store = store
        self.options = options or RunOptions()
        o = self.options
        self.report: Reporter = o.reporter or Reporter(log=o.log, progress=o.progress)
        self._warnings: list[str] = []  # this run's, for its result (--json) as well as stderr

    # ---- planning (no writes) ---------------------------------------------------------
    def _read(self):
        record = self.store.read()
        self.store.check_format(record)
        self.graph.check_known(record.heads)
        return record

    def _acquire(self) -> locklib.Lease:
        """The lock, waiting with a countdown; says so when it took over a dead runner's."""
        try:
            lease = locklib.acquire(
                self.store,
                lease_seconds=self.options.lease_seconds,
                timeout=self.options.lock_timeout,
                on_wait=lambda info: self.report.log(
                    f"waiting for lock held by {info.host}/{info.pid} since {info.since}"),
                on_countdown=self.report.lock_wait,
            )
        finally:
            self.report.lock_done()
        if lease.taken_over is not None:
            old = lease.taken_over
            self.report.log(f"took over the lock held by {old.host}/{old.pid} since {old.since}: "
                            f"{lease.takeover_reason}")
        return lease

    def plan(self, command: str, target: str) -> tuple[Any, Target, list[Step]]:
        """Resolve ``target`` against the table's current heads and plan the steps."""
        record = self._read()
        resolved = self._resolve(command, target, record.heads)
        return record, resolved, self._plan(command, record.heads, resolved)

    def _resolve(self, command: str, target: str, heads: tuple[str, ...]) -> Target:
        if command == "downgrade" and target.startswith("+"):
            raise GraphError(f"downgrade target {target!r} points up: use `dyn upgrade {target}`")
        if command == "upgrade" and target.startswith("-"):
            raise GraphError(f"upgrade target {target!r} points down: use `dyn downgrade {target}`")
        if command == "downgrade" and target.lstrip("-").isdigit() and not heads:
            raise GraphError(f"cannot downgrade {target}: nothing is applied (the table is at base)")
        return self.graph.resolve_target(target, heads)

    def _plan(self, command: str, heads: tuple[str, ...], target: Target) -> list[Step]:
        if command == "upgrade":
            return self.graph.upgrade_plan(heads, target.revisions)
        # a NAME@ target takes only that branch down
        return self.graph.downgrade_plan(heads, target.revisions, branch=target.branch)

    # ---- running ----------------------------------------------------------------------
    def upgrade(self, target: str = "head") -> RunResult:
        return self._run("upgrade", target)

    def downgrade(self, target: str) -> RunResult:
        return self._run("downgrade", target)

    def check_reversible(self, steps: list[Step]) -> None:
        """A downgrade past an irreversible revision stops before anything runs."""
        for s in steps:
            if s.direction == "down":
                why = irreversible_reason(self.scripts.get(s.revision.revision))
                if why:
                    raise Irreversible(
                        f"cannot downgrade past revision {s.revision.revision} ({s.revision.path}): "
                        f"it is irreversible: {why}")

    def _run(self, command: str, target: str) -> RunResult:
        t0 = time.monotonic()
        record, resolved, steps = self.plan(command, target)
        self.check_reversible(steps)
        warnings = self._warnings = checksum_warnings(self.scripts, record.checksums)  # the steps' join them
        for w in warnings:
            self.report.log(f"warning: {w}")
        if steps and self.options.backup == "pitr":
            backups.require_pitr(self.client, self.table.name)
        if steps and self.options.settings.dask_scheduler:
            preflight(self.options.settings.dask_scheduler)  # before anything is written
        if (steps or record.dirty) and self.options.max_errors:  # a dry run says where the list would go
            self._errors_file().check()
        if self.options.dry_run:
            dry: list[StepResult] = []
            for s in steps:  # a dry run cannot apply an earlier step's writes: it says so
                dry.append(self._dry_step(s, any(r.would_write for r in dry)))
            budget = self.options.max_errors
            return RunResult(command, resolved.revisions, record.heads,
                             steps[-1].heads_after if steps else record.heads,
                             dry, True, time.monotonic() - t0, warnings, max_errors=budget,
                             errors_file=str(self._errors_file().path) if budget else None)
        if not steps and not record.dirty:
            return RunResult(command, resolved.revisions, record.heads, record.heads, [], False,
                             time.monotonic() - t0, warnings)
        lease = self._acquire()
        results: list[StepResult] = []
        with lease:
            record = self._read()  # another runner may have moved the table while we waited
            steps = self._resume_order(record, self._plan_after_wait(command, record.heads, resolved))
            self.check_reversible(steps)
            counter = record.counter
            heads_before = heads = record.heads
            dirty = record.dirty
            self.backup_arn = None
            if steps and self.options.backup == "on-demand":
                self.backup_arn = backups.create_backup(self.client, self.table.name, steps[0].revision.revision)
                self.report.log(f"backup taken: {self.backup_arn}")
            for step in steps:
                lease.check()
                resumed = bool(dirty) and _same_step(dirty, step)
                results.append(self._run_step(step, lease, counter, resumed))
                counter += 1
                heads = step.heads_after
                dirty = None
        failed = sum(int(r.counts.get("failed", 0)) for r in results)
        return RunResult(command, resolved.revisions, heads_before, heads, results, False,
                         time.monotonic() - t0, warnings,
                         errors_file=str(self._errors_file().path) if failed else None)

    def _errors_file(self) -> ErrorsFile:
        if self.options.errors_file is None:
            self.options.errors_file = ErrorsFile("dyn-errors.jsonl")
        return self.options.errors_file

    def _budget(self, step: Step, dry_run: bool) -> ErrorBudget:
        """The step's error budget: ``max_errors`` failing items, recorded in the errors file (a
        dry run counts them and writes nothing)."""
        if dry_run:  # counts every item that would fail, and goes on: the estimate says how many
            return ErrorBudget(DRY_RUN_FAILURES)
        if not self.options.max_errors:
            return ErrorBudget(0)
        f = self._errors_file()
        return ErrorBudget(self.options.max_errors, f.sink(step.revision.revision, step.direction),
                           where=str(f.path))

    def _plan_after_wait(self, command: str, heads: tuple[str, ...], target: Target) -> list[Step]:
        if command == "downgrade":
            applied = self.graph.closure(heads)
            if not set(target.revisions) <= applied and applied <= self.graph.closure(target.revisions):
                return []  # someone already went at least as far down
        return self._plan(command, heads, target)

    def _resume_order(self, record: Any, steps: list[Step]) -> list[Step]:
        """A step left in progress runs first (it resumes from its checkpoints), or we refuse."""
        dirty = record.dirty
        if not dirty:
            return steps
        for i, s in enumerate(steps):
            if _same_step(dirty, s):
                if i:
                    self.report.log(f"resuming {s.direction} of {s.revision.revision} first")
                return [s] + steps[:i] + steps[i + 1:]
        raise DirtyState(dirty_message(self.graph, record.heads, dirty, self.scripts.versions))

    def _operations(self, step: Step, lease: Any, dry_run: bool, budget: ErrorBudget | None = None) -> Operations:
        rev, direction = step.revision.revision, step.direction
        settings = self.options.settings
        changes: dict = {}
        if dry_run != settings.dry_run:
            changes["dry_run"] = dry_run
        if lease is not None and settings.dask_scheduler:
            changes["remote_lease"] = RemoteLease(self.table.name, self.store.layout.version_key(),
                                                  lease.token, lease.lease_seconds)
            if hasattr(lease, "beat_every"):
                lease.beat_every(DASK_HEARTBEAT)  # a worker's first write waits to see a renewal
        if changes:
            settings = replace(settings, **changes)
        budget = self._budget(step, dry_run) if budget is None else budget
        # failures of the step's earlier runs (kept with their checkpoints) count against it too
        carry = lambda prior: budget.carry(prior.get("failed", 0))  # noqa: E731
        return Operations(
            self.client,
            self.table,
            data_client=self.data_client,
            settings=settings,
            exclude=self.store.layout.exclude_condition(),
            is_meta=self.store.layout.is_meta,
            checkpoints=(lambda i: StoreCheckpoints(self.store, lease, f"{rev}#{direction}#{i}", defer_clear=True,
                                                    on_load=carry))
            if lease else None,
            guard=lease.check if lease else None,
            progress=self.report.progress,
            log=self.report.status,
            warn=self._warn,
            source=(str(self.scripts.get(rev).path), direction),
            errors=budget,
        )

    def _warn(self, msg: str) -> None:
        self._warnings.append(msg)
        self.report.log(f"warning: {msg}")

    def _call(self, step: Step, op: Operations) -> None:
        script = self.scripts.get(step.revision.revision)
        fn = script.module.upgrade if step.direction == "up" else script.module.downgrade
        try:
            fn(op)
        except SystemExit as e:  # would end dyn with its code (0: "success") half-way through a step
            raise RevisionExited(f"the revision called sys.exit({e.code!r}); raise an exception to fail "
                                 "a step") from None

    def _title(self, step: Step, dry_run: bool = False, resumed: bool = False) -> str:
        verb = {"up": "upgrading", "down": "reverting"}.get(step.direction, step.direction)
        if resumed:
            verb = f"resuming the {step.direction}grade of"
        return f"{'dry run: ' if dry_run else ''}{verb} {step.revision.revision} ({step.revision.doc})"

    def _dry_step(self, step: Step, before_earlier_steps: bool = False) -> StepResult:
        t = time.monotonic()
        self.report.step_started(self._title(step, dry_run=True))
        op = self._operations(step, None, True)
        try:
            self._call(step, op)
        except KeyboardInterrupt:
            self.report.step_stopped()
            raise Interrupted("interrupted during a dry run; nothing was written") from None
        except DynError:
            self.report.step_stopped()
            raise
        except Exception as e:
            self.report.step_stopped()
            raise MigrationError(
                f"revision {step.revision.revision} {step.direction}grade failed in dry run: "
                f"{type(e).__name__}: {e}") from e
        scans = any("scanned" in r.counts for r in op.records)  # its figures depend on the table's items
        result = StepResult(step.revision.revision, step.direction, step.revision.doc,
                            time.monotonic() - t, [r.as_dict() for r in op.records], op.totals(),
                            dry_run=True, before_earlier_steps=before_earlier_steps and scans)
        self.report.step_finished(result.line())
        return result

    def _run_step(self, step: Step, lease: Any, counter: int, resumed: bool) -> StepResult:
        rev, direction = step.revision.revision, step.direction
        script = self.scripts.get(rev)
        started = now_iso()
        t = time.monotonic()
        self.report.step_started(self._title(step, resumed=resumed))
        dirty = {"revision": rev, "direction": direction, "started": started, "who": who(), "pid": os.getpid()}
        if not resumed:
            self.store.begin_step(lease.token, dirty)
        budget = self._budget(step, False)
        op = self._operations(step, lease, False, budget)
        try:
            self._call(step, op)
        except BaseException as e:
            # a step that wrote nothing (and had written nothing before: not resumed) must not
            # leave the table marked in progress
            clean = (not resumed and not op.touched and not isinstance(e, LeaseLost)
                     and self._clear_mark(lease))
            failure = self._failure(step, e, clean, dirty, budget)
            self.report.step_stopped()
            if failure is e:
                raise
            raise failure from (None if isinstance(e, KeyboardInterrupt) else e)
        seconds = time.monotonic() - t
        counts = op.totals()
        # the history record: every run of the step, this one and those a crash or a failure
        # stopped (their counts are kept with their checkpoints)
        history_ops, history_totals = history_counts(op)
        self.store.finish_step(
            lease.token,
            expected_counter=counter,
            new_heads=step.heads_after,
            history={
                "revision": rev, "direction": direction, "doc": step.revision.doc,
                "started": started, "finished": now_iso(), "seconds": round(seconds, 3),
                "who": who(), "pid": os.getpid(), "dyn_version": __version__,
                "checksum": script.checksum, "counts": history_totals, "ops": history_ops,
                "heads_before": list(step.heads_before), "heads_after": list(step.heads_after),
                **({"resumed": True} if resumed else {}),
                **({"backup_arn": self.backup_arn} if getattr(self, "backup_arn", None) else {}),
            },
            checksum_set={rev: script.checksum} if direction == "up" else None,
            checksum_remove=[rev] if direction == "down" else None,
        )
        result = StepResult(rev, direction, step.revision.doc, seconds,
                            [r.as_dict() for r in op.records], counts, resumed)
        self.report.step_finished(result.line())
        return result

    def _clear_mark(self, lease: Any) -> bool:
        """Remove the in-progress mark of a step that wrote nothing; False if that failed."""
        try:
            self.store.begin_step(lease.token, None)
            return True
        except Exception:
            return False

    def _failure(self, step: Step, e: BaseException, clean: bool, dirty: dict,
                 budget: ErrorBudget | None = None) -> BaseException:
        """The error a step's exception becomes: what happened, and what the table is left with
        (unchanged, or the step in progress and the command that resumes it)."""
        rev, direction = step.revision.revision, step.direction
        path = self.scripts.get(rev).revision.path
        if isinstance(e, (LeaseLost, DirtyState)):
            return e
        resume = resume_command(self.graph, step.heads_before, dirty)
        if clean:
            left = f"it wrote nothing: the table is unchanged, still at {_heads_text(step.heads_before)}"
        elif budget is not None and budget.spent and resume and isinstance(e, Exception):
            # the plain resume command would stop at the next failing item again (its budget
            # counts the failures met so far): name one whose budget goes past them
            n = budget.resume_limit()
            more = f"{resume} --max-errors {n}" + (f" --errors-file {shlex.quote(budget.where)}"
                                                   if budget.where else "")
            left = (f"it is left in progress: `{more}` resumes it, skipping up to {n} failing items in all "
                    f"(or fix the revision, then `{resume}` resumes it)")
            msg = e.message if isinstance(e, DynError) else f"{type(e).__name__}: {e}"
            return MigrationError(f"revision {rev} {direction}grade stopped: {msg}; {left}")
        else:
            # the revision's own mistake (an exception of its code, or bad op arguments): fixing it
            # comes before resuming
            own = isinstance(e, UsageError) or (isinstance(e, Exception) and not isinstance(
                e, (DynError, NotImplementedError)))
            left = (f"it is left in progress: {'fix it, then ' if own else ''}"
                    f"{dirty_advice(self.graph, step.heads_before, dirty, self.scripts.versions)}")
        if isinstance(e, KeyboardInterrupt):
            return Interrupted(f"interrupted during {direction}grade of revision {rev}; {left}")
        if isinstance(e, (NotImplementedError, Irreversible)):
            # raised after the probe passed, perhaps mid-way
            return MigrationError(f"revision {rev} ({path}) {direction}grade stopped: "
                                  f"{type(e).__name__}: {e}; {left}")
        if isinstance(e, DynError):
            return type(e)(f"revision {rev} {direction}grade stopped: {e.message}; {left}")
        if isinstance(e, Exception):
            return MigrationError(f"revision {rev} {direction}grade failed: {type(e).__name__}: {e} "
                                  f"({path}); {left}")
        return e  # SystemExit and the like: as they are

    def reset_checksum(self, target: str) -> str:
        """Accept an intended edit of an applied revision: record its file's current checksum."""
        record = self.store.read()
        self.store.check_format(record)
        rev = one_revision(self.graph, target, record.heads)
        if rev not in record.checksums:
            raise GraphError(f"revision {rev} is not applied to table {self.table.name}: nothing to reset")
        lease = self._acquire()
        with lease:
            self.store.reset_checksum(lease.token, rev, self.scripts.get(rev).checksum)
        return rev

    # ---- stamp ------------------------------------------------------------------------
    def stamp(self, target: str, purge: bool = False) -> RunResult:
        """Set the heads without running anything (adopt an existing table, or repair)."""
        t0 = time.monotonic()
        record = self.store.read()
        self.store.check_format(record)
        heads = () if purge else record.heads
        if self.graph.unknown(heads) and not self.graph.is_relative(target) and "@" not in target:
            # a plain target replaces the recorded heads whatever they are: the way out when the
            # table records a revision whose file is gone (only relative and NAME@ targets,
            # which count from the recorded heads, need them known)
            heads = ()
        self.graph.check_known(heads)
        t = self.graph.resolve_target(target, heads)
        resolved = self.graph.stamp_heads(heads, t.revisions, branch=t.branch)  # NAME@: that branch only
        if self.options.dry_run:
            return RunResult("stamp", resolved, record.heads, resolved, [], True, 0.0, [], record.dirty)
        lease = self._acquire()
        with lease:
            record = self.store.read()
            applied = self.graph.closure(resolved)
            self.store.stamp(
                lease.token,
                expected_counter=record.counter,
                new_heads=resolved,
                checksums={r: self.scripts.get(r).checksum for r in applied},
                purge=purge,
            )
        return RunResult("stamp", resolved, record.heads, resolved, [], False, time.monotonic() - t0, [],
                         record.dirty)


def one_revision(graph: RevisionGraph, ident: str, current: Iterable[str] = ()) -> str:
    """The one revision ``ident`` names: an id or prefix, or a symbolic target (``head``,
    ``current``, ``-1``, ``label@head`` ...) resolved against the table's ``current`` heads."""
    ids = graph.resolve(ident, tuple(current))
    if len(ids) == 1:
        return ids[0]
    if not ids:
        raise GraphError(f"'{ident}' names no revision (it is base): name a revision")
    raise GraphError(f"'{ident}' names {len(ids)} revisions ({', '.join(ids)}): name one of them")


def _same_step(dirty: dict, step: Step) -> bool:
    return dirty.get("revision") == step.revision.revision and dirty.get("direction") == step.direction
