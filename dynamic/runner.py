"""Plan → lock → run each step → record. The only module that knows both revisions and the table.

The runner reads the heads, resolves the target and plans *before* taking the lock, so a bad
target or a broken revision fails without writing anything; it then takes the lease lock,
re-reads the heads (another deploy may have done the work meanwhile) and plans again.
Each step is marked in progress (dirty) before it runs and recorded, with the new heads,
in one fenced transaction after it ran.
"""
from __future__ import annotations

import datetime as _dt
import getpass
import json
import os
import socket
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from . import __version__
from . import lock as locklib
from .dynamo import TableInfo
from . import backup as backups
from .backfill.failures import ErrorBudget
from .backfill.values import jsonable, plain
from .errors import DirtyState, DynError, GraphError, Irreversible, LeaseLost, MigrationError, UsageError
from .graph import RevisionGraph, Step, Target
from .operations import Operations, OpSettings, add_counts, history_counts
from .scripts import ScriptDirectory
from .store import Store, StoreCheckpoints


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


def who() -> str:
    try:
        user = getpass.getuser()
    except Exception:
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


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
    progress: Callable[[str, int | None], Any] | None = None
    backup: str = "none"
    max_errors: int = 0  # failing items a step records in errors_file and skips before it stops
    errors_file: ErrorsFile | None = None


@dataclass
class StepResult:
    revision: str
    direction: str
    doc: str
    seconds: float
    ops: list[dict]
    counts: dict
    resumed: bool = False


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
    errors_file: str | None = None  # where this run recorded the items it skipped, if any

    @property
    def nothing_to_do(self) -> bool:
        return not self.steps

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


def checksum_warnings(scripts: ScriptDirectory, applied: dict[str, str]) -> list[str]:
    """Applied revisions whose file changed, or vanished, since they ran."""
    out = []
    for rev, recorded in sorted(applied.items()):
        s = scripts.scripts.get(rev)
        if s is None:
            out.append(f"revision {rev} was applied but its file is missing from {scripts.versions}")
        elif recorded and s.checksum != recorded:
            out.append(f"revision {rev} ({s.revision.path}) changed since it was applied")
    return out


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


def irreversible_reason(script: Any) -> str | None:
    """Why a revision cannot be downgraded, or None. Declared by a module-level
    ``irreversible = "why"``, by ``op.irreversible("why")`` or by raising
    ``dynamic.Irreversible`` / ``NotImplementedError`` in ``downgrade`` before any operation."""
    declared = getattr(script.module, "irreversible", None)
    if isinstance(declared, str) and declared:
        return declared
    if declared is True:
        return "declared irreversible"
    try:
        script.module.downgrade(_ProbeOp())
    except Irreversible as e:
        return e.reason
    except NotImplementedError as e:
        return str(e) or "its downgrade() raises NotImplementedError"
    except Exception:
        return None
    return None


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

    # ---- planning (no writes) ---------------------------------------------------------
    def _read(self):
        record = self.store.read()
        self.store.check_format(record)
        self.graph.check_known(record.heads)
        return record

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
        warnings = checksum_warnings(self.scripts, record.checksums)
        for w in warnings:
            self.options.log(f"warning: {w}")
        if steps and self.options.backup == "pitr":
            backups.require_pitr(self.client, self.table.name)
        if (steps or record.dirty) and not self.options.dry_run and self.options.max_errors:
            self._errors_file().check()
        if self.options.dry_run:
            results = [self._dry_step(s) for s in steps]
            return RunResult(command, resolved.revisions, record.heads,
                             steps[-1].heads_after if steps else record.heads,
                             results, True, time.monotonic() - t0, warnings)
        if not steps and not record.dirty:
            return RunResult(command, resolved.revisions, record.heads, record.heads, [], False,
                             time.monotonic() - t0, warnings)
        lease = locklib.acquire(
            self.store,
            lease_seconds=self.options.lease_seconds,
            timeout=self.options.lock_timeout,
            on_wait=lambda info: self.options.log(
                f"waiting for lock held by {info.host}/{info.pid} since {info.since}"),
        )
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
                self.options.log(f"backup taken: {self.backup_arn}")
            for step in steps:
                lease.check()
                resumed = bool(dirty) and _same_step(dirty, step)
                results.append(self._run_step(step, lease, counter, resumed))
                counter += 1
                heads = step.heads_after
                dirty = None
        failed = sum(int(r.counts.get("failed", 0)) for r in results)
        return RunResult(command, resolved.revisions, heads_before, heads, results, False,
                         time.monotonic() - t0, warnings, str(self._errors_file().path) if failed else None)

    def _errors_file(self) -> ErrorsFile:
        if self.options.errors_file is None:
            self.options.errors_file = ErrorsFile("dyn-errors.jsonl")
        return self.options.errors_file

    def _budget(self, step: Step, dry_run: bool) -> ErrorBudget:
        """The step's error budget: ``max_errors`` failing items, recorded in the errors file (a
        dry run counts them and writes nothing)."""
        if dry_run or not self.options.max_errors:
            return ErrorBudget(self.options.max_errors)
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
                    self.options.log(f"resuming {s.direction} of {s.revision.revision} first")
                return [s] + steps[:i] + steps[i + 1:]
        rev, direction = dirty.get("revision"), dirty.get("direction")
        verb = "upgrade" if direction == "up" else "downgrade"
        raise DirtyState(
            f"{direction} of revision {rev} was left in progress by {dirty.get('who', '?')} "
            f"at {dirty.get('started', '?')}: run `dyn {verb} {rev}` to resume it, or repair by hand "
            f"and `dyn stamp` the table"
        )

    def _operations(self, step: Step, lease: Any, dry_run: bool) -> Operations:
        rev, direction = step.revision.revision, step.direction
        settings = self.options.settings
        if dry_run != settings.dry_run:
            settings = OpSettings(**{**asdict(settings), "dry_run": dry_run})
        budget = self._budget(step, dry_run)
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
            progress=self.options.progress,
            log=self.options.log,
            errors=budget,
        )

    def _call(self, step: Step, op: Operations) -> None:
        script = self.scripts.get(step.revision.revision)
        fn = script.module.upgrade if step.direction == "up" else script.module.downgrade
        fn(op)

    def _dry_step(self, step: Step) -> StepResult:
        t = time.monotonic()
        op = self._operations(step, None, True)
        try:
            self._call(step, op)
        except DynError:
            raise
        except Exception as e:
            raise MigrationError(
                f"revision {step.revision.revision} {step.direction}grade failed in dry run: "
                f"{type(e).__name__}: {e}") from e
        return StepResult(step.revision.revision, step.direction, step.revision.doc,
                          time.monotonic() - t, [r.as_dict() for r in op.records], op.totals())

    def _run_step(self, step: Step, lease: Any, counter: int, resumed: bool) -> StepResult:
        rev, direction = step.revision.revision, step.direction
        script = self.scripts.get(rev)
        started = now_iso()
        t = time.monotonic()
        self.options.log(f"{'resuming' if resumed else 'running'} {direction}grade {rev}: {step.revision.doc}")
        if not resumed:
            self.store.begin_step(lease.token, {
                "revision": rev, "direction": direction, "started": started,
                "who": who(), "pid": os.getpid(),
            })
        op = self._operations(step, lease, False)
        try:
            self._call(step, op)
        except (LeaseLost, DirtyState):
            raise
        except (NotImplementedError, Irreversible) as e:
            # raised after the probe passed, perhaps mid-way: the step stays in progress
            raise MigrationError(
                f"revision {rev} ({script.revision.path}) {direction}grade stopped: "
                f"{type(e).__name__}: {e}; it is left in progress") from e
        except DynError as e:
            raise type(e)(f"revision {rev} {direction}grade stopped: {e.message}; it is left in "
                          "progress and resumes on the next run") from e
        except Exception as e:
            raise MigrationError(
                f"revision {rev} {direction}grade failed: {type(e).__name__}: {e} "
                f"({script.revision.path}); it is left in progress: fix it and run again to resume"
            ) from e
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
        self.options.log(f"done {direction}grade {rev} in {seconds:.1f}s")
        return StepResult(rev, direction, step.revision.doc, seconds,
                          [r.as_dict() for r in op.records], counts, resumed)

    def reset_checksum(self, target: str) -> str:
        """Accept an intended edit of an applied revision: record its file's current checksum."""
        rev = self.graph.resolve_id(target)
        record = self.store.read()
        self.store.check_format(record)
        if rev not in record.checksums:
            raise GraphError(f"revision {rev} is not applied to table {self.table.name}: nothing to reset")
        lease = locklib.acquire(self.store, lease_seconds=self.options.lease_seconds,
                                timeout=self.options.lock_timeout)
        with lease:
            self.store.reset_checksum(lease.token, rev, self.scripts.get(rev).checksum)
        return rev

    # ---- stamp ------------------------------------------------------------------------
    def stamp(self, target: str, purge: bool = False) -> RunResult:
        """Set the heads without running anything (adopt an existing table, or repair)."""
        t0 = time.monotonic()
        record = self.store.read()
        self.store.check_format(record)
        if not purge:
            self.graph.check_known(record.heads)
        heads = () if purge else record.heads
        t = self.graph.resolve_target(target, heads)
        resolved = self.graph.stamp_heads(heads, t.revisions, branch=t.branch)  # NAME@: that branch only
        if self.options.dry_run:
            return RunResult("stamp", resolved, record.heads, resolved, [], True, 0.0, [])
        lease = locklib.acquire(self.store, lease_seconds=self.options.lease_seconds,
                                timeout=self.options.lock_timeout)
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
        return RunResult("stamp", resolved, record.heads, resolved, [], False, time.monotonic() - t0, [])


def _same_step(dirty: dict, step: Step) -> bool:
    return dirty.get("revision") == step.revision.revision and dirty.get("direction") == step.direction
