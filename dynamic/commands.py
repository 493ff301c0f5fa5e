"""One function per `dyn` command: the Python API (a Lambda, a test or a notebook calls these).

Each takes a :class:`Project` (configuration plus lazily made client, table description and
store) and returns plain data; ``cli.py`` only parses arguments and renders what comes back.

    from dynamic import commands
    from dynamic.config import load_config
    project = commands.Project(load_config(overrides={"table": "app-prod"}))
    result = commands.upgrade(project, "head")
"""
from __future__ import annotations

import math
import os
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from . import dynamo
from . import lock as locklib
from .config import CONFIG_FILE, Config
from .errors import (ChecksumMismatch, DirtyState, Drifted, MultipleHeads, NotAtHead, ProtectedTable, StepRunning,
                     TableError, UsageError)
from .graph import Revision
from .operations import OpSettings
from .progress import Reporter
from .runner import (ErrorsFile, RunOptions, RunResult, Runner, checksum_changes, checksum_warnings, data_operations,
                     dirty_advice, dirty_message, irreversible_reason, one_revision, utc_z)
from .scripts import TEMPLATE_NAME, ScriptDirectory, render, templates_dir
from .store import Store


class Project:
    """A configuration plus the things made from it on first use (client, table, store).

    Messages go to ``reporter`` (the CLI's live display or plain lines), else one line each to
    ``log`` (e.g. ``print``); ``progress(label, total, verb)`` makes progress reporters."""

    def __init__(self, config: Config, *, client: Any = None, log: Callable[[str], None] | None = None,
                 progress: Callable[..., Any] | None = None, reporter: Reporter | None = None):
        self.config = config
        self.scripts = ScriptDirectory(config.script_dir)
        self._client = client
        self._own_client = client is None
        self._data_client: Any = None
        self._table: dynamo.TableInfo | None = None
        self._store: Store | None = None
        self.reporter = reporter or Reporter(log=log, progress=progress)
        self.log = self.reporter.log
        self.progress = progress

    @property
    def graph(self):
        return self.scripts.graph

    @property
    def client(self) -> Any:
        """The client of dyn's records, the lock, schema changes and ``op.client``."""
        if self._client is None:
            c = self.config
            self._client = dynamo.make_client(
                region=c.region, endpoint_url=c.endpoint_url, profile=c.profile, retry_mode=c.retry_mode)
        return self._client

    def client_spec(self) -> dynamo.ClientSpec:
        """How worker processes and Dask workers make their own data client."""
        c = self.config
        return dynamo.ClientSpec(region=c.region or self.data_client.meta.region_name,
                                 endpoint_url=c.endpoint_url or self.data_client.meta.endpoint_url,
                                 profile=c.profile, retry_mode=c.retry_mode,
                                 max_pool_connections=max(32, (c.workers or 16) * 2 + 4))

    @property
    def data_client(self) -> Any:
        """The client of the backfill engine's data calls: botocore's retries off (the engine
        retries per call, per thread), a pool sized for the workers. A client passed in
        serves both."""
        if self._data_client is None:
            if self._client is not None and not self._own_client:
                self._data_client = self._client
            else:
                c = self.config
                self._data_client = dynamo.make_client(
                    region=c.region, endpoint_url=c.endpoint_url, profile=c.profile,
                    max_pool_connections=max(32, (c.workers or 16) * 2 + 4), retry_mode=c.retry_mode,
                    engine=True)
        return self._data_client

    @property
    def table(self) -> dynamo.TableInfo:
        if self._table is None:
            name = self.config.require_table()
            if self._own_client:
                # the first call to the endpoint: with few, quick retries, so an endpoint or a
                # region nobody answers at fails within seconds, not after ten backed-off tries
                c = self.config
                probe = dynamo.make_client(region=c.region, endpoint_url=c.endpoint_url, profile=c.profile,
                                           max_attempts=2, connect_timeout=1, read_timeout=5)
                self._table = dynamo.describe_table(probe, name)
            else:
                self._table = dynamo.describe_table(self.client, name)
        return self._table

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store(self.client, self.table, meta_pk=self.config.meta_pk)
        return self._store

    def runner(self, *, dry_run: bool = False, lock_timeout: float | None = None,
               sample: float | None = None) -> Runner:
        c = self.config
        if lock_timeout is not None and (isinstance(lock_timeout, bool) or not lock_timeout >= 0):
            raise UsageError(f"--lock-timeout is how many seconds to wait for the lock: give 0 or more, "
                             f"got {lock_timeout}")
        errors_file = Path(c.errors_file)
        options = RunOptions(
            dry_run=dry_run,
            lease_seconds=c.lock_lease_seconds,
            lock_timeout=c.lock_timeout if lock_timeout is None else lock_timeout,
            settings=OpSettings(workers=c.workers, segments=c.segments, page_size=c.page_size,
                                max_wcu=c.max_wcu, max_rcu=c.max_rcu, dry_run=dry_run,
                                write_mode=c.write_mode, checkpoint_interval=c.checkpoint_interval,
                                sample=sample, read_price=c.read_price, write_price=c.write_price,
                                # a client passed in lives in this process only: one process
                                # unless told otherwise
                                processes=1 if c.processes is None and not self._own_client else c.processes,
                                dask_scheduler=c.dask_scheduler,
                                client_factory=self.client_spec() if self._own_client else None),
            log=self.log,
            progress=self.progress,
            backup=c.backup,
            reporter=self.reporter,
            max_errors=c.max_errors,
            errors_file=ErrorsFile(errors_file if errors_file.is_absolute() else c.root / errors_file),
        )
        self.graph  # load revision files before touching AWS: a broken file fails first
        return Runner(self.scripts, self.client, self.table, self.store, options,
                      data_client=self.data_client)


# ---- files only -----------------------------------------------------------------------

@dataclass
class InitResult:
    config_path: Path
    script_dir: Path
    created: list[Path]


def init(directory: str | os.PathLike = "migrations", *, table: str, cwd: Path | None = None) -> InitResult:
    """Write dyn.toml and DIR/ with versions/ and an editable copy of the revision template."""
    cwd = Path(cwd or Path.cwd())
    if not table:
        raise UsageError("dyn init needs --table NAME (the DynamoDB table to migrate)")
    target = Path(directory)
    script_dir = target if target.is_absolute() else cwd / target
    config_path = cwd / CONFIG_FILE
    if config_path.exists():
        raise UsageError(f"{config_path} already exists: this project is already set up")
    if script_dir.exists() and any(script_dir.iterdir()):
        raise UsageError(f"{script_dir} exists and is not empty: choose another directory")
    try:
        rel = script_dir.relative_to(cwd).as_posix()
    except ValueError:
        rel = str(script_dir)
    # validate the table name before writing anything
    from .config import _validate

    _validate(Config(table=table))
    text = render("dyn.toml.j2", table=table, script_location=rel)
    (script_dir / "versions").mkdir(parents=True, exist_ok=True)
    tpl = script_dir / TEMPLATE_NAME
    tpl.write_text((templates_dir() / TEMPLATE_NAME).read_text(encoding="utf-8"), encoding="utf-8")
    readme = script_dir / "README"
    readme.write_text(
        "Revision files for dyn. `dyn revision -m MSG` adds one; edit revision.py.j2 to change\n"
        "what new revisions look like.\n", encoding="utf-8")
    config_path.write_text(text, encoding="utf-8")
    return InitResult(config_path, script_dir, [config_path, script_dir / "versions", tpl, readme])


def revision(project: Project, message: str, *, head: str | None = None,
             branch_label: Sequence[str] = (), depends_on: Sequence[str] = (),
             rev_id: str | None = None) -> Path:
    """Create a new revision file on top of the current head (or ``head``)."""
    if not message.strip():
        raise UsageError("a revision needs a message: dyn revision -m \"what it does\"")
    graph = project.graph
    if head is not None:
        down = tuple(graph.resolve(head)) if head != "base" else ()
    elif len(graph.heads) > 1:
        raise MultipleHeads(
            f"multiple heads ({', '.join(graph.heads)}): pass --head REV to choose the parent, "
            "or join them with `dyn merge heads`")
    else:
        down = tuple(graph.heads)
    deps = tuple(one_revision(graph, d, (_try_current(project) or ()) if _needs_table(d) else ())
                 for d in depends_on)
    return project.scripts.generate(message, down_revision=down, rev_id=rev_id,
                                    branch_labels=tuple(branch_label), depends_on=deps)


def merge(project: Project, revisions: Sequence[str], message: str, *, rev_id: str | None = None) -> Path:
    """Create a merge revision whose parents are ``revisions`` (or all ``heads``)."""
    graph = project.graph
    parents: list[str] = []
    for r in revisions:
        for x in (graph.heads if r == "heads" else graph.resolve(r)):
            if x not in parents:
                parents.append(x)
    if len(parents) < 2:
        raise UsageError(f"a merge needs at least two revisions to join, got {', '.join(parents) or 'none'}")
    for p in parents:
        below = [q for q in parents if q != p and p in graph.line_below(q)]
        if below:
            raise UsageError(f"{p} is already below {below[0]}: a merge joins revisions on separate branches "
                             "(`dyn heads` lists the ones to join)")
    return project.scripts.generate(message, down_revision=tuple(parents), rev_id=rev_id)


def describe(project: Project, rev: Revision, current: Sequence[str] = ()) -> dict:
    g = project.graph
    applied = g.closure(tuple(current)) if current else set()
    return {
        "revision": rev.revision,
        "down_revision": list(rev.down_revision),
        "branch_labels": list(rev.branch_labels),
        "depends_on": list(rev.depends_on),
        "doc": rev.doc,
        "path": rev.path,
        "is_head": g.is_head(rev.revision),
        "is_branch_point": g.is_branch_point(rev.revision),
        "is_merge_point": g.is_merge_point(rev.revision),
        "is_current": rev.revision in current,
        "applied": rev.revision in applied,
    }


def _described(project: Project, rev: Revision, current: tuple[str, ...] | None) -> dict:
    """``describe`` with the table's state when it could be read; without ``is_current`` and
    ``applied`` when not (they would claim "not applied" for a table nobody looked at)."""
    d = describe(project, rev, current or ())
    if current is None:
        d.pop("is_current")
        d.pop("applied")
    return d


def heads(project: Project) -> list[dict]:
    """The heads of the revision graph; ``is_current`` / ``applied`` when the table is reachable."""
    g = project.graph
    current = _shown_current(project)
    return [_described(project, g.get(h), current) for h in g.heads]


def branches(project: Project) -> list[dict]:
    """Branch points and the revisions that start each branch."""
    g = project.graph
    current = _shown_current(project)
    out = []
    for bp in sorted(g.branch_points):
        d = _described(project, g.get(bp), current)
        d["children"] = list(g.children(bp))
        out.append(d)
    return out


def _shown_current(project: Project) -> tuple[str, ...] | None:
    """The table's heads for a listing that works from the files alone (history, heads,
    branches, show): those in the files; any other is named in a warning, not an error, so the
    listing still shows the revisions a `dyn stamp` could record."""
    current = _try_current(project)
    if current is None:
        return None
    missing = project.graph.unknown(current)
    if missing:
        names = ", ".join(f"'{m}'" for m in missing)
        project.log(f"warning: table {project.config.table} records {names}, which "
                    f"{'is' if len(missing) == 1 else 'are'} not in the versions directory: restore "
                    f"{'its file' if len(missing) == 1 else 'their files'}, or record the revision the "
                    "table is really at with `dyn stamp REV`")
    return tuple(h for h in current if h not in missing)


def _try_current(project: Project) -> tuple[str, ...] | None:
    """The table's heads when a table is configured and reachable; None otherwise."""
    c = project.config
    if not c.table:
        return None
    try:
        # a quick probe: `dyn history` must stay fast with no AWS at all
        probe = project._client or dynamo.make_client(
            region=c.region, endpoint_url=c.endpoint_url, profile=c.profile,
            max_attempts=1, connect_timeout=1, read_timeout=3)
        table = dynamo.describe_table(probe, c.table)
        return tuple(Store(probe, table, meta_pk=c.meta_pk).read().heads)
    except Exception:
        return None


def history(project: Project, rev_range: str | None = None, *, verbose: bool = False,
            with_current: bool = True) -> list[dict]:
    """Revisions newest first; ``rev_range`` is ``START:END`` (either side may be empty, e.g.
    ``base:heads``, ``label@base:heads`` for one branch, ``-2:current``). Relative bounds count
    from the table's current heads, so they need the table."""
    start = end = None
    if rev_range:
        if ":" not in rev_range:
            raise UsageError(f"history range {rev_range!r} must look like START:END (e.g. base:heads)")
        start, end = (x or None for x in rev_range.split(":", 1))
    relative = [x for x in (start, end) if x and project.graph.is_relative(x)]
    # a relative bound counts from the table's heads: they must all be known (else the error
    # names `dyn stamp REV`); a listing from the files shows the known ones and warns
    current = (_try_current(project) if relative else _shown_current(project)) if with_current else None
    if relative and current is None:
        table = project.config.table
        why = f"table {table} could not be read" if table else "no table is configured"
        raise UsageError(
            f"history range {rev_range!r} counts from what the table has applied ({relative[0]!r}), "
            f"but {why}: name revisions instead (`dyn history` lists them)")
    revs = project.graph.history(start, end, current or ())
    out = []
    for r in revs:
        d = _described(project, r, current)
        if verbose:
            s = project.scripts.get(r.revision)
            d["checksum"] = s.checksum
            d["docstring"] = (s.module.__doc__ or "").strip()
            d["irreversible"] = irreversible_reason(s)
        out.append(d)
    return out


def _needs_table(ident: str) -> bool:
    """Whether a target means something only against the table's heads (current, -1, +1 ...)."""
    t = ident.strip()
    return t == "current" or t[:1] in "+-" or "@" in t and t.split("@", 1)[1][:1] in "+-"


def show(project: Project, rev: str) -> dict:
    """One revision in full; ``rev`` is an id, a prefix or a target (head, current, -1 ...)."""
    g = project.graph
    if _needs_table(rev):
        record = project.store.read()
        project.store.check_format(record)
        g.check_known(record.heads)
        current: tuple[str, ...] | None = tuple(record.heads)
    else:
        current = _shown_current(project)
    rid = one_revision(g, rev, current or ())
    s = project.scripts.get(rid)
    d = _described(project, g.get(rid), current)
    d["docstring"] = (s.module.__doc__ or "").strip()
    d["checksum"] = s.checksum
    d["children"] = list(g.children(rid))
    return d


# ---- table state ----------------------------------------------------------------------

def current(project: Project, *, verbose: bool = False) -> dict:
    """The table's current heads, the lock and any step left in progress."""
    g = project.graph
    record = project.store.read()
    project.store.check_format(record)
    g.check_known(record.heads)
    out: dict[str, Any] = {
        "table": project.table.name,
        "heads": [{"revision": h, "is_head": g.is_head(h), "doc": g.get(h).doc} for h in record.heads],
        "at_head": set(record.heads) == set(g.heads),
        # "live": a runner holding the lock is applying the step now (not left in progress)
        "dirty": {**record.dirty, "started": utc_z(record.dirty.get("started")),
                  "live": locklib.holder_is_live(record.lock)} if record.dirty else None,
        "dirty_advice": (dirty_advice(g, record.heads, record.dirty, project.scripts.versions, record.lock)
                         if record.dirty else None),
        "lock": _lock_dict(record.lock),
        "format": record.format,
        "dyn_version": record.dyn_version,
    }
    if verbose:
        out["history"] = applied_history(project)[:10]
        out["warnings"] = checksum_warnings(project.scripts, record.checksums)
    return out


_TIMES = ("started", "finished", "recorded")


def applied_history(project: Project) -> list[dict]:
    """The history records kept in the table, newest first."""
    out = project.store.history()
    for h in out:
        for k in _TIMES:
            if k in h:
                h[k] = utc_z(h[k])
    return out


Confirm = Callable[[str], bool]


def guard_protected(project: Project, action: str, plan: str, *, yes: bool,
                    confirm: Confirm | None) -> None:
    """On a protected stage, a change needs ``yes`` or an interactive confirmation."""
    if not project.config.protected or yes:
        return
    table = project.config.require_table()
    if confirm is not None:
        if confirm(f"table {table} is protected. {plan}\nProceed with {action}?"):
            return
        raise ProtectedTable(f"{action} on protected table {table} was not confirmed; nothing was done")
    raise ProtectedTable(
        f"table {table} is protected (protected = true): {action} needs --yes; "
        f"the plan: {plan}")


def _plan_text(project: Project, runner: Runner, command: str, target: str) -> str | None:
    """What a run would do, or None when it would do nothing: the steps, and for data
    operations the most they could cost (from the table's size, without scanning it)."""
    record, _, steps = runner.plan(command, target)
    if not steps and not record.dirty:
        return None
    names = ", ".join(f"{s.direction} {s.revision.revision} ({s.revision.doc})" for s in steps)
    text = f"{command} would run: {names or 'the step left in progress'}"
    ops = [(s.revision.revision, o) for s in steps
           for o in data_operations(project.scripts.get(s.revision.revision), s.direction)]
    if ops:
        text += "; " + _cost_warning(project, command, target, ops)
    return text


def _cost_warning(project: Project, command: str, target: str, ops: list[tuple[str, str]]) -> str:
    """The write units a plan's data operations could consume at most: every item written once
    by each (DescribeTable's item count and size, which AWS refreshes every ~6 hours)."""
    t, c = project.table, project.config
    what = ", ".join(f"{o} in {rev}" for rev, o in ops)
    redo = f"`dyn {command} {target} --dry-run --sample 10`"
    if t.item_count <= 0:
        return (f"cost: {len(ops)} data operation(s) ({what}); the table's size is not known yet: "
                f"{redo} estimates the units and the cost")
    wcu = len(ops) * t.item_count * max(1, math.ceil(t.size_bytes / t.item_count / 1024))
    rcu = len(ops) * max(0.5, t.size_bytes / 4096 / 2)  # a scan: 0.5 unit per 4 KB read
    usd = (rcu * c.read_price + wcu * c.write_price) / 1e6
    return (f"cost: {len(ops)} data operation(s) ({what}) on ~{t.item_count:,} items "
            f"(~{t.size_bytes / 1e6:,.1f} MB): up to ~{wcu:,.0f} write units and ~{rcu:,.0f} read units "
            f"(~${usd:,.2f} on demand) if every item is written; {redo} estimates them")


def _move(project: Project, command: str, target: str, dry_run: bool, lock_timeout: float | None,
          yes: bool, confirm: Confirm | None, sample: float | None = None) -> RunResult:
    check_sample(sample, dry_run)
    runner = project.runner(dry_run=dry_run, lock_timeout=lock_timeout, sample=sample)
    if project.config.protected and not dry_run and not yes:
        plan = _plan_text(project, runner, command, target)
        if plan:
            if command == "downgrade":
                runner.check_reversible(runner.plan(command, target)[2])
            guard_protected(project, f"{command} {target}", plan, yes=yes, confirm=confirm)
    return runner.upgrade(target) if command == "upgrade" else runner.downgrade(target)


def check_sample(sample: float | None, dry_run: bool) -> None:
    """``--sample PERCENT``: a dry run's share of the table, above 0 and at most 100."""
    if sample is None:
        return
    if not dry_run:
        raise UsageError(f"--sample {sample:g} applies to a dry run only: add --dry-run "
                         "(a real run always scans the whole table)")
    if not 0 < sample <= 100:
        raise UsageError(f"--sample {sample:g} is not a share of the table: give a percentage above 0 "
                         "and at most 100 (e.g. --sample 10)")


def upgrade(project: Project, target: str = "head", *, dry_run: bool = False,
            lock_timeout: float | None = None, yes: bool = False,
            confirm: Confirm | None = None, sample: float | None = None) -> RunResult:
    """Apply pending revisions up to ``target``. On a protected stage pass ``yes=True`` (or a
    ``confirm(prompt) -> bool`` callback). A dry run (``dry_run=True``) writes nothing and
    estimates each data operation from ``sample`` percent of the table (default: all of it)."""
    return _move(project, "upgrade", target, dry_run, lock_timeout, yes, confirm, sample)


def downgrade(project: Project, target: str, *, dry_run: bool = False,
              lock_timeout: float | None = None, yes: bool = False,
              confirm: Confirm | None = None, sample: float | None = None) -> RunResult:
    """Revert applied revisions down to ``target`` (``-1``, ``base``, a revision)."""
    return _move(project, "downgrade", target, dry_run, lock_timeout, yes, confirm, sample)


def stamp(project: Project, target: str | None, *, purge: bool = False, dry_run: bool = False,
          reset_checksum: str | None = None, yes: bool = False,
          confirm: Confirm | None = None) -> RunResult | str:
    """Record ``target`` as the table's heads without running anything; or, with
    ``reset_checksum=REV``, accept an intended edit of an applied revision's file."""
    runner = project.runner(dry_run=dry_run)
    what = f"stamp --reset-checksum {reset_checksum}" if reset_checksum else f"stamp {target}"
    if not dry_run:
        guard_protected(project, what, f"{what} (nothing runs; only the version record changes)",
                        yes=yes, confirm=confirm)
    if reset_checksum:
        return runner.reset_checksum(reset_checksum)
    if not target:
        raise UsageError("dyn stamp needs a revision (or base), or --reset-checksum REV")
    return runner.stamp(target, purge=purge)


def _dirty_error(project: Project, record: Any) -> DirtyState | StepRunning:
    """The error of a command that needs no step in progress: StepRunning (exit 4, retry later)
    while a live runner holds the lock and is applying it, else DirtyState (exit 5)."""
    message = dirty_message(project.graph, record.heads, record.dirty, project.scripts.versions, record.lock)
    return (StepRunning if locklib.holder_is_live(record.lock) else DirtyState)(message)


def _gate(project: Project):
    """What `dyn check` checks, in its order; returns the version record when all is well."""
    g = project.graph
    record = project.store.read()
    project.store.check_format(record)
    g.check_known(record.heads)
    if record.dirty:  # first: the fix its advice asks for may well be an edit of an applied file
        raise _dirty_error(project, record)
    changed = checksum_changes(project.scripts, record.checksums)
    if changed:
        more = f" (and {len(changed) - 1} more)" if len(changed) > 1 else ""
        for _, w in changed[1:]:
            project.log(f"warning: {w}")
        rev, text = changed[0]
        fix = ("restore the file, or accept the change with "
               f"`dyn stamp --reset-checksum {rev}`" if rev in project.scripts.scripts else
               "restore the file")
        raise ChecksumMismatch(f"{text}{more}: {fix}")
    pending = g.upgrade_plan(record.heads, g.heads)
    if pending:
        names = ", ".join(s.revision.revision for s in pending)
        raise NotAtHead(f"table {project.table.name} is not at head: {len(pending)} pending "
                        f"revision(s): {names}; run `dyn upgrade head`")
    return record


def check(project: Project, *, drift: bool = False) -> dict:
    """Raise NotAtHead (exit 3) when revisions are pending, DirtyState (exit 5) when a step was
    left in progress, StepRunning (exit 4) while a live runner holding the lock applies one.
    With ``drift``, then also Drifted (exit 7) when the table's indexes, TTL or settings differ
    from what its applied revisions declare (see :func:`drift`)."""
    record = _gate(project)
    out = {"table": project.table.name, "heads": list(record.heads), "at_head": True, "warnings": []}
    if drift:
        report = _drift_report(project, record)
        if report.differences:
            n = len(report.differences)
            raise Drifted(
                f"table {project.table.name} differs from what its applied revisions declare "
                f"({n} difference{'s' if n > 1 else ''}): adopt what it has with "
                f"`dyn revision --autogenerate -m \"adopt changes made outside dyn\"` and `dyn upgrade head`, "
                "or undo the changes on the table",
                [d.as_dict() for d in report.differences])
        out["drift"] = []
    return out


@dataclass
class _DriftReport:
    table: str
    description: dict
    declared: Any  # drift.Declared
    actual: Any  # schema.Schema
    differences: list


def _drift_report(project: Project, record: Any) -> _DriftReport:
    from . import drift as driftlib
    from . import schema as schemalib

    name = project.config.require_table()
    applied = [s.revision.revision for s in project.graph.upgrade_plan((), record.heads)]
    desc = dynamo.describe_table_raw(project.client, name)
    ttl = dynamo.describe_ttl(project.client, name)
    declared = driftlib.declared_schema(project.scripts, applied, project.client, desc)
    actual = schemalib.actual_schema(desc, ttl)
    for arg, rev in sorted(declared.not_compared.items()):
        project.log(f"note: update_table({arg}=...) of revision {rev} is not compared (dyn compares indexes, "
                    f"TTL, {', '.join(schemalib.COMPARED_SETTINGS)})")
    return _DriftReport(name, desc, declared, actual, schemalib.compare(declared.schema, actual))


def drift(project: Project) -> dict:
    """How the table's indexes, TTL and settings differ from what its applied revisions
    declare: their ``upgrade(op)`` functions replayed, in graph order, against an op that
    records schema operations and touches nothing. Reads only; no at-head check (see
    ``check(project, drift=True)`` for the gate)."""
    record = project.store.read()
    project.store.check_format(record)
    project.graph.check_known(record.heads)
    if record.dirty:
        raise _dirty_error(project, record)
    for w in checksum_warnings(project.scripts, record.checksums):
        project.log(f"warning: {w}")
    report = _drift_report(project, record)
    present = [i for i in report.actual.indexes.values() if i.status != "DELETING"]
    return {"table": report.table, "heads": list(record.heads),
            "differences": [d.as_dict() for d in report.differences],
            "indexes": len(present), "ttl": report.actual.ttl.describe(),
            "not_compared": sorted(report.declared.not_compared)}


def autogenerate(project: Project, message: str, *, rev_id: str | None = None, head: str | None = None,
                 branch_label: Sequence[str] = (), depends_on: Sequence[str] = ()) -> dict:
    """Write a revision whose upgrade declares what the table has where it differs from what
    its applied revisions declare, and whose downgrade goes back. The table must be at head.
    Returns ``{"table", "path", "differences"}``; ``path`` is None when there is no drift
    (nothing is written)."""
    from . import drift as driftlib

    if head is not None:
        raise UsageError("--autogenerate writes the new revision on top of the table's head: leave out --head")
    if not message.strip():
        raise UsageError('a revision needs a message: dyn revision --autogenerate -m "what it adopts"')
    g = project.graph
    if len(g.heads) > 1:
        raise MultipleHeads(
            f"multiple heads ({', '.join(g.heads)}): --autogenerate writes on top of one; join them with "
            "`dyn merge heads -m \"merge heads\"` and `dyn upgrade head` first")
    deps = tuple(g.resolve_id(d) for d in depends_on)
    record = _gate(project)
    report = _drift_report(project, record)
    out = {"table": report.table, "path": None, "differences": [d.as_dict() for d in report.differences]}
    if not report.differences:
        return out
    again = f"run `dyn revision --autogenerate -m {shlex.quote(message)}` again once it is ACTIVE"
    if report.actual.table_status != "ACTIVE":
        raise TableError(f"table {report.table} is {report.actual.table_status}: {again}")
    for index in report.actual.indexes.values():
        if index.status != "ACTIVE":
            raise TableError(f"index {index.name} of table {report.table} is {index.status}: {again}")
    pt = report.description.get("ProvisionedThroughput") or {}
    throughput = ({k: int(pt.get(k) or 0) for k in ("ReadCapacityUnits", "WriteCapacityUnits")}
                  if report.actual.settings.get("BillingMode") == "PROVISIONED" else None)
    adopt = driftlib.adoption(report.table, report.differences, report.declared, throughput)
    out["path"] = project.scripts.generate(
        message, down_revision=tuple(g.heads), rev_id=rev_id, branch_labels=tuple(branch_label),
        depends_on=deps, upgrades=adopt.upgrade, downgrades=adopt.downgrade, notes=adopt.notes)
    return out


def lock_status(project: Project) -> dict | None:
    """Who holds the table's migration lock, and since when."""
    return _lock_dict(locklib.read_lock(project.store))


def unlock(project: Project, *, yes: bool = False, confirm: Confirm | None = None) -> dict | None:
    """Force-release the lock (the holder, if alive, stops at its next write). Needs ``yes``
    or a ``confirm(prompt)`` callback that says yes, protected stage or not."""
    if not yes:
        if confirm is None:
            raise UsageError("unlock force-releases another runner's lock: pass --yes if that runner is dead")
        held = _lock_dict(locklib.read_lock(project.store))
        what = f"release the lock held by {held['host']}/{held['pid']}" if held else "unlock (it is not locked)"
        if not confirm(f"table {project.config.require_table()}: {what}?"):
            raise UsageError("unlock was not confirmed; nothing was done")
    return _lock_dict(locklib.force_release(project.store))


def iam_policy(project: Project, *, read_only: bool = False) -> dict:
    """A least-privilege IAM policy for this project's table and revisions."""
    from .iam import policy

    sources = [s.path.read_text(encoding="utf-8") for s in project.scripts.scripts.values()]
    c = project.config
    return policy(c.require_table(), sources, region=c.region, backup=c.backup, read_only=read_only)


def _lock_dict(info: Any) -> dict | None:
    if info is None:
        return None
    d = dict(vars(info)) if not isinstance(info, dict) else dict(info)
    d.pop("rvn", None)
    return d
