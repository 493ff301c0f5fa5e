"""The `dyn` command line: parse arguments, call commands.py, render text or --json.

No logic lives here. Errors become one line on stderr (`error: ...`) and an exit code
(see README "Exit codes"); `--debug` adds the traceback.
"""
from __future__ import annotations

import json
import os
import re
import sys
import traceback
from pathlib import Path
from typing import Any, List, Optional

import typer
from typer.core import TyperGroup

from . import __version__, commands
from .config import load_config
from .errors import EXIT_ERROR, Drifted, DynError
from .runner import ops_phrase


class _State:
    debug = False
    reporter: Any = None  # the command's Reporter, closed when the command ends


class DynGroup(TyperGroup):
    """Turns DynError (and any unexpected exception) into one line and an exit code."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        return super().parse_args(ctx, _relative_targets_last(list(args)))

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            return _quiet_broken_pipe()
        except DynError as e:
            _close_reporter()
            if _State.debug:
                traceback.print_exc()
            typer.echo(f"error: {e.message}", err=True)
            raise typer.Exit(e.exit_code) from None
        except Exception as e:
            _close_reporter()
            if _is_usage(e):  # a bad option value or an unknown option: one line too, exit 2
                typer.echo(f"error: {_usage_line(e, ctx)}", err=True)
                raise typer.Exit(2) from None
            if _is_cli_control(e):  # Exit, Abort: the CLI framework renders them
                raise
            return _unexpected(e)
        except KeyboardInterrupt:
            _close_reporter()
            typer.echo("error: interrupted", err=True)
            raise typer.Exit(130) from None
        finally:
            _close_reporter()


def _is_usage(e: BaseException) -> bool:
    return _is_cli_control(e) and hasattr(e, "format_message") and getattr(e, "exit_code", 0) == 2


def _usage_line(e: Any, ctx: Any) -> str:
    """typer's framed usage error as one line, naming the help that lists the options."""
    text = " ".join(str(e.format_message()).split())
    sub = getattr(e, "ctx", None)
    where = f"dyn {sub.info_name}" if sub is not None and sub.info_name and sub is not ctx else "dyn"
    return f"{text} (see `{where} --help`)"


def _close_reporter() -> None:
    r, _State.reporter = _State.reporter, None
    if r is not None and hasattr(r, "close"):
        r.close()


def _quiet_broken_pipe() -> None:
    """The reader went away (`dyn history | head -3`): what it wanted it has; stop quietly.
    stdout now points at /dev/null so the interpreter's last flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass
    raise typer.Exit(0)


_RELATIVE = re.compile(r"^[-+]\d+$")


_FLAGS = frozenset({"--dry-run", "--yes", "-y", "--json", "--help", "-h", "--purge"})


def _relative_targets_last(args: list[str]) -> list[str]:
    """`dyn downgrade -1` would read -1 as an option: move such targets after a `--` (not the
    value of an option, as in `--max-errors -1`, which the option itself then refuses)."""
    for i, a in enumerate(args):
        if a in ("upgrade", "downgrade", "show", "stamp"):
            rest = args[i + 1:]
            if "--" in rest:
                return args
            rel = [j for j, x in enumerate(rest) if _RELATIVE.match(x) and not (
                j and rest[j - 1].startswith("-") and "=" not in rest[j - 1] and rest[j - 1] not in _FLAGS)]
            if rel:
                return (args[:i + 1] + [x for j, x in enumerate(rest) if j not in rel]
                        + ["--", *(rest[j] for j in rel)])
            return args
    return args


def _is_cli_control(e: BaseException) -> bool:
    return isinstance(e, (typer.Exit, typer.Abort)) or type(e).__module__.split(".")[0] in ("click", "typer")


def _unexpected(e: BaseException) -> None:
    """A bug or an unexpected AWS failure: still one line, and exit 1."""
    if _State.debug:
        traceback.print_exc()
    first = str(e).splitlines()[0] if str(e) else ""
    typer.echo(f"error: unexpected {type(e).__name__}: {first} (run with --debug for the traceback)", err=True)
    raise typer.Exit(EXIT_ERROR) from None


app = typer.Typer(
    cls=DynGroup,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="dyn: versioned schema and data migrations for Amazon DynamoDB.",
    context_settings={"help_option_names": ["-h", "--help"]},
)

JsonOpt = typer.Option(False, "--json", help="Print only JSON on stdout.")
MaxErrorsOpt = typer.Option(None, "--max-errors", metavar="N",
                            help="Record and skip up to N failing items per step (default 0: stop at the first).")
ErrorsFileOpt = typer.Option(None, "--errors-file", metavar="PATH",
                             help="Where skipped items are recorded, one JSON line each (default dyn-errors.jsonl).")
SampleOpt = typer.Option(None, "--sample", metavar="PERCENT",
                         help="With --dry-run: scan this share of the table and extrapolate.")
YesOpt = typer.Option(False, "--yes", "-y", help="Do it without asking (needed on a protected stage in CI).")


def _confirm():
    """An interactive yes/no on a TTY; None in CI (no TTY), where --yes is required."""
    if sys.stdin.isatty() and sys.stderr.isatty():
        return lambda prompt: typer.confirm(prompt, default=False, err=True)
    return None


def _version(value: bool) -> None:
    if value:
        typer.echo(f"dyn {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    ctx: typer.Context,
    config: Optional[Path] = typer.Option(None, "-c", "--config", help="dyn.toml or pyproject.toml to use."),
    table: Optional[str] = typer.Option(None, "--table", help="Table name (overrides config/DYN_TABLE)."),
    endpoint_url: Optional[str] = typer.Option(None, "--endpoint-url", help="DynamoDB endpoint (e.g. local)."),
    region: Optional[str] = typer.Option(None, "--region", help="AWS region."),
    profile: Optional[str] = typer.Option(None, "--profile", help="AWS profile."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version."),
) -> None:
    _State.debug = debug
    ctx.obj = {"config": config, "overrides": {"table": table, "endpoint_url": endpoint_url,
                                               "region": region, "profile": profile}}


def _project(ctx: typer.Context, json_mode: bool = False, live: bool = False, **overrides: Any) -> commands.Project:
    """The command's Project; ``live``: a command that runs steps or waits for the lock, whose
    messages a terminal shows as one live display (else: plain lines on stderr)."""
    obj = ctx.obj or {}
    cfg = load_config(obj.get("config"), overrides={**obj.get("overrides", {}), **overrides})
    from .progress import StreamReporter, make_reporter

    _State.reporter = make_reporter(json_mode=json_mode) if live else StreamReporter(sys.stderr, sys.stderr)
    return commands.Project(cfg, reporter=_State.reporter)


def _abspath(path: Optional[str]) -> Optional[str]:
    """A path given on the command line is relative to the working directory."""
    return str(Path(path).expanduser().absolute()) if path else path


def _warn(msg: str) -> None:
    typer.echo(msg, err=True)


def _emit_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


def _rev_line(d: dict) -> str:
    parents = ", ".join(d["down_revision"]) or "<base>"
    marks = [m for m, k in (("(head)", "is_head"), ("(branchpoint)", "is_branch_point"),
                            ("(mergepoint)", "is_merge_point"), ("(current)", "is_current")) if d.get(k)]
    labels = f" ({', '.join(d['branch_labels'])})" if d.get("branch_labels") else ""
    return f"{parents} -> {d['revision']}{labels}{(' ' + ' '.join(marks)) if marks else ''}, {d['doc']}"


# ---- files ----------------------------------------------------------------------------

@app.command()
def init(
    directory: str = typer.Argument("migrations", help="Folder for the revision files."),
    table: str = typer.Option(..., "--table", help="The DynamoDB table to migrate."),
) -> None:
    """Create dyn.toml and the migrations folder."""
    r = commands.init(directory, table=table)
    for p in r.created:
        typer.echo(f"created {p}")


@app.command()
def revision(
    ctx: typer.Context,
    message: str = typer.Option("", "-m", "--message", help="What the revision does (required).",
                                show_default=False),
    head: Optional[str] = typer.Option(None, "--head", help="Parent revision (default: the current head)."),
    branch_label: List[str] = typer.Option([], "--branch-label", help="Label for a new branch."),
    depends_on: List[str] = typer.Option([], "--depends-on", help="Revision that must be applied first."),
    rev_id: Optional[str] = typer.Option(None, "--rev-id", help="Use this revision id."),
    autogenerate: bool = typer.Option(False, "--autogenerate", help="Adopt the table's indexes, TTL and "
                                      "settings where they differ from what the applied revisions declare."),
) -> None:
    """Create a new revision file."""
    if autogenerate:
        r = commands.autogenerate(_project(ctx), message, head=head, branch_label=branch_label,
                                  depends_on=depends_on, rev_id=rev_id)
        if not r["path"]:
            typer.echo(f"no drift: table {r['table']} matches what its applied revisions declare; "
                       "no revision written")
            return
        for x in r["differences"]:
            typer.echo(f"found: {x['message']}")
        typer.echo(f"created {r['path']}")
        return
    path = commands.revision(_project(ctx), message, head=head, branch_label=branch_label,
                             depends_on=depends_on, rev_id=rev_id)
    typer.echo(f"created {path}")


@app.command()
def merge(
    ctx: typer.Context,
    revisions: List[str] = typer.Argument(..., help="Revisions to join, or `heads`."),
    message: str = typer.Option(..., "-m", "--message"),
    rev_id: Optional[str] = typer.Option(None, "--rev-id"),
) -> None:
    """Create a revision that joins several heads."""
    path = commands.merge(_project(ctx), revisions, message, rev_id=rev_id)
    typer.echo(f"created {path}")


@app.command()
def heads(ctx: typer.Context, json_: bool = JsonOpt) -> None:
    """Show the heads of the revision graph."""
    data = commands.heads(_project(ctx))
    if json_:
        return _emit_json(data)
    for d in data:
        typer.echo(_rev_line(d))


@app.command()
def branches(ctx: typer.Context, json_: bool = JsonOpt) -> None:
    """Show branch points."""
    data = commands.branches(_project(ctx))
    if json_:
        return _emit_json(data)
    for d in data:
        typer.echo(_rev_line(d))
        for c in d["children"]:
            typer.echo(f"    -> {c}")


@app.command()
def history(
    ctx: typer.Context,
    rev_range: Optional[str] = typer.Option(
        None, "-r", "--rev-range",
        help="START:END, oldest first: base:heads, LABEL@base:heads (one branch), -2:current."),
    verbose: bool = typer.Option(False, "-v", "--verbose"),
    applied: bool = typer.Option(False, "--applied", help="What was applied to the table, from its records."),
    json_: bool = JsonOpt,
) -> None:
    """Show the revision chain, newest first (or, with --applied, the table's history records)."""
    project = _project(ctx)
    if applied:
        data = commands.applied_history(project)
        if json_:
            return _emit_json(data)
        if not data:
            typer.echo("no revisions applied to this table yet")
        for h in data:
            what = "" if h.get("direction") == "stamp" else "  " + ops_phrase(h.get("ops") or [])
            typer.echo(f"{h.get('finished', h.get('started', ''))}  {h.get('direction', ''):5} "
                       f"{h.get('revision', '')}  {h.get('who', '')}  {h.get('seconds', 0)}s{what}")
        return
    data = commands.history(project, rev_range, verbose=verbose)
    if json_:
        return _emit_json(data)
    for d in data:
        typer.echo(_rev_line(d))
        if verbose:
            typer.echo(f"    path: {d['path']}\n    checksum: {d['checksum']}")
            if d.get("irreversible"):
                typer.echo(f"    irreversible: {d['irreversible']}")


@app.command()
def show(ctx: typer.Context, rev: str = typer.Argument(...), json_: bool = JsonOpt) -> None:
    """Show one revision."""
    d = commands.show(_project(ctx), rev)
    if json_:
        return _emit_json(d)
    typer.echo(f"Rev: {d['revision']}" + "".join(
        f" ({m})" for m, k in (("head", "is_head"), ("branchpoint", "is_branch_point"),
                               ("mergepoint", "is_merge_point")) if d[k]))
    typer.echo(f"Parent: {', '.join(d['down_revision']) or '<base>'}")
    if d["children"]:
        typer.echo(f"Children: {', '.join(d['children'])}")
    if d["branch_labels"]:
        typer.echo(f"Branch labels: {', '.join(d['branch_labels'])}")
    if d["depends_on"]:
        typer.echo(f"Depends on: {', '.join(d['depends_on'])}")
    typer.echo(f"Path: {d['path']}\n\n    " + d["docstring"].replace("\n", "\n    "))


# ---- table state ----------------------------------------------------------------------

@app.command()
def current(ctx: typer.Context, verbose: bool = typer.Option(False, "-v", "--verbose"),
            json_: bool = JsonOpt) -> None:
    """Show the table's current revision(s), lock and any step in progress."""
    d = commands.current(_project(ctx), verbose=verbose)
    if json_:
        return _emit_json(d)
    if not d["heads"]:
        typer.echo("<base> (nothing applied)")
    for h in d["heads"]:
        typer.echo(f"{h['revision']}{' (head)' if h['is_head'] else ''}, {h['doc']}")
    if d["dirty"]:
        x = d["dirty"]
        typer.echo(f"in progress: {x.get('direction')} of {x.get('revision')} since {x.get('started')} "
                   f"by {x.get('who')}; {d['dirty_advice']}")
    if d["lock"]:
        lk = d["lock"]
        typer.echo(f"locked by {lk.get('host')}/{lk.get('pid')} since {lk.get('since')}")
    if verbose:
        for w in d.get("warnings", []):
            _warn(f"warning: {w}")
        for h in d.get("history", []):
            typer.echo(f"  {h.get('finished', '')} {h.get('direction', '')} {h.get('revision', '')} "
                       f"by {h.get('who', '')} in {h.get('seconds', 0)}s")


ProcessesOpt = typer.Option(None, "--processes", help="Worker processes for data operations (default: one per core).")
DaskOpt = typer.Option(None, "--dask-scheduler", metavar="ADDRESS",
                       help="Run data operations on this Dask cluster, e.g. tcp://10.0.0.5:8786.")


def _render_run(r, json_: bool) -> None:
    """Each step's line was printed as it ended (by the reporter); here the run's own line."""
    if json_:
        return _emit_json(r.as_dict())
    if r.dry_run and r.steps:
        return _render_dry_run(r)
    typer.echo(r.line())
    _render_failures(r)


def _render_failures(r) -> None:
    """The summary's line on the items a run skipped (``--max-errors``), and where they are."""
    failed = sum(int(s.counts.get("failed", 0)) for s in r.steps)
    if failed:
        typer.echo(f"{failed} item(s) failed and were left untouched (within --max-errors); "
                   f"they are listed in {r.errors_file}")


# ---- dry run: what the run would do and cost ------------------------------------------------

SAMPLE_ENOUGH = 200  # items a sample must read before its extrapolation means much
_DRY_COLUMNS = ("scanned", "matched", "write", "delete", "RCU", "WCU", "cost", "time")


def _render_dry_run(r) -> None:
    """Each step's operations with their before/after samples, then one table of what each
    data operation would read, write, cost and take, with totals."""
    rows, sampled = [], set()
    for s in r.steps:  # each step's line was printed as it ended: here its samples and figures
        for o in s.ops:
            c = o.get("counts") or {}
            if c.get("samples"):
                typer.echo(f"{s.revision} {o['op']} {o['detail']}".rstrip() + ", for example:")
            for sample in c.get("samples", []):
                typer.echo(f"    {_sample_line(sample)}")
            if "scanned" in c or "would_put" in c:
                mark = "*" if s.before_earlier_steps and "scanned" in c else ""
                rows.append((s.revision[:12] + mark, f"{o['op']} {o['detail']}".strip(), c))
                if c.get("sample"):
                    sampled.add(c["sample"])
    if rows:
        typer.echo("")
        if sampled:
            share = ", ".join(f"{x:g}%" for x in sorted(sampled))
            typer.echo(f"estimate from a {share} sample of the table's segments, extrapolated to the whole table:")
            few = min(int(c.get("sampled_items", SAMPLE_ENOUGH)) for _, _, c in rows if c.get("sample"))
            if few < SAMPLE_ENOUGH:
                typer.echo(f"warning: the sample read only {few:,} item(s), too few to extrapolate from: use a "
                           "larger --sample, or none on a table this small", err=True)
        else:
            typer.echo("estimate (the whole table was scanned):")
        t = r.totals
        table = [("revision", "operation", *_DRY_COLUMNS)]
        table += [(rev, _clip(name, 36), *_dry_cells(c)) for rev, name, c in rows]
        table.append(("total", "", *_dry_cells(t)))
        widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
        for row in table:
            typer.echo("  ".join(cell.ljust(w) if i < 2 else cell.rjust(w)
                                 for i, (cell, w) in enumerate(zip(row, widths))).rstrip())
        if any(s.before_earlier_steps for s in r.steps):
            typer.echo("* estimated on the table as it is now: the earlier steps of this run would write first, "
                       "and a dry run cannot apply their writes")
        for line in r.failure_lines():
            typer.echo(line)
    typer.echo(r.line())


def _dry_cells(c: dict) -> tuple[str, ...]:
    writes = int(c.get("updated", 0)) + int(c.get("would_put", 0)) + int(c.get("moved", 0))  # a move: a write
    return (f"{int(c.get('scanned', 0)):,}", f"{int(c.get('matched', 0)):,}", f"{writes:,}",
            f"{int(c.get('deleted', 0)):,}", _units(c.get("rcu", 0)), _units(c.get("wcu", 0)),
            _usd(c.get("cost_usd", 0)), _human_seconds(c.get("seconds", 0)))


def _units(x: float) -> str:
    return f"{x:,.1f}" if x < 100 else f"{x:,.0f}"


def _usd(x: float) -> str:
    return f"${x:,.2f}" if x >= 1 else f"${x:.4f}" if x >= 0.0001 else ("$0" if not x else "<$0.0001")


def _human_seconds(x: float) -> str:
    x = int(round(x))
    h, rest = divmod(x, 3600)
    m, sec = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{sec:02d}s" if m else f"{sec}s"


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"


def _sample_line(sample: dict) -> str:
    """One before/after example: ``{PK='U#1'}: Name 'al' -> 'Al', Old 1 -> <removed>``."""
    key = "{" + ", ".join(f"{k}={v!r}" for k, v in (sample.get("key") or {}).items()) + "}"
    after = sample.get("after")
    if after is None:
        return f"{key}: would delete"
    before = sample.get("before") or {}
    parts = [f"{n} {before[n]!r} -> {_after(v)}" if n in before else f"{n} <absent> -> {_after(v)}"
             for n, v in after.items()]
    return f"{key}: {', '.join(parts)}"


def _after(v: Any) -> str:
    return "<removed>" if v == "<removed>" else repr(v)


@app.command()
def upgrade(
    ctx: typer.Context,
    target: str = typer.Argument("head", help="head, heads, +N, a revision, label@head ..."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Count what would change and estimate its units, cost and duration; write nothing."),
    lock_timeout: Optional[float] = typer.Option(None, "--lock-timeout", help="Seconds to wait for the lock."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Backfill threads."),
    max_wcu: Optional[float] = typer.Option(None, "--max-wcu", help="Cap write units per second."),
    max_rcu: Optional[float] = typer.Option(None, "--max-rcu", help="Cap read units per second."),
    backup: Optional[str] = typer.Option(None, "--backup", help="none | pitr | on-demand"),
    max_errors: Optional[int] = MaxErrorsOpt,
    errors_file: Optional[str] = ErrorsFileOpt,
    sample: Optional[float] = SampleOpt,
    processes: Optional[int] = ProcessesOpt,
    dask_scheduler: Optional[str] = DaskOpt,
    yes: bool = YesOpt,
    json_: bool = JsonOpt,
) -> None:
    """Apply pending revisions up to TARGET."""
    p = _project(ctx, json_, live=True, workers=workers, max_wcu=max_wcu, max_rcu=max_rcu, backup=backup,
                 max_errors=max_errors, errors_file=_abspath(errors_file), processes=processes,
                 dask_scheduler=dask_scheduler)
    _render_run(commands.upgrade(p, target, dry_run=dry_run, lock_timeout=lock_timeout, yes=yes,
                               confirm=_confirm(), sample=sample), json_)


@app.command()
def downgrade(
    ctx: typer.Context,
    target: str = typer.Argument(..., help="-1, -N, base, a revision ..."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Count what would change and estimate its units, cost and duration; write nothing."),
    lock_timeout: Optional[float] = typer.Option(None, "--lock-timeout", help="Seconds to wait for the lock."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Backfill threads."),
    max_wcu: Optional[float] = typer.Option(None, "--max-wcu", help="Cap write units per second."),
    max_rcu: Optional[float] = typer.Option(None, "--max-rcu", help="Cap read units per second."),
    backup: Optional[str] = typer.Option(None, "--backup", help="none | pitr | on-demand"),
    max_errors: Optional[int] = MaxErrorsOpt,
    errors_file: Optional[str] = ErrorsFileOpt,
    sample: Optional[float] = SampleOpt,
    processes: Optional[int] = ProcessesOpt,
    dask_scheduler: Optional[str] = DaskOpt,
    yes: bool = YesOpt,
    json_: bool = JsonOpt,
) -> None:
    """Revert applied revisions down to TARGET."""
    p = _project(ctx, json_, live=True, workers=workers, max_wcu=max_wcu, max_rcu=max_rcu, backup=backup,
                 max_errors=max_errors, errors_file=_abspath(errors_file), processes=processes,
                 dask_scheduler=dask_scheduler)
    _render_run(commands.downgrade(p, target, dry_run=dry_run, lock_timeout=lock_timeout, yes=yes,
                               confirm=_confirm(), sample=sample), json_)


@app.command()
def stamp(
    ctx: typer.Context,
    target: Optional[str] = typer.Argument(None, help="Revision(s) to record as current; `base` for none."),
    purge: bool = typer.Option(False, "--purge", help="Ignore (and replace) whatever the table records."),
    reset_checksum: Optional[str] = typer.Option(None, "--reset-checksum", metavar="REV",
                                                 help="Accept an edit of applied revision REV's file."),
    yes: bool = YesOpt,
    json_: bool = JsonOpt,
) -> None:
    """Record TARGET as the table's revision without running anything."""
    r = commands.stamp(_project(ctx, json_, live=True), target, purge=purge, reset_checksum=reset_checksum,
                       yes=yes, confirm=_confirm())
    if isinstance(r, str):
        if json_:
            return _emit_json({"reset_checksum": r})
        typer.echo(f"recorded the current checksum of revision {r}")
        return
    if json_:
        return _emit_json(r.as_dict())
    typer.echo(f"stamped {', '.join(r.heads_after) or 'base'} (was {', '.join(r.heads_before) or 'base'})")
    if r.cleared:
        x = r.cleared
        typer.echo(f"cleared the in-progress {x.get('direction')} of revision {x.get('revision')} (started "
                   f"{x.get('started')} by {x.get('who')}) and its checkpoints: nothing it wrote was undone")


@app.command()
def check(ctx: typer.Context,
          drift: bool = typer.Option(False, "--drift", help="Also compare the table's indexes, TTL and "
                                     "settings with what the applied revisions declare (exit 7 when they differ)."),
          json_: bool = JsonOpt) -> None:
    """Exit 0 when the table is at head, 3 when revisions are pending (the CI gate), 4 while a
    live runner is applying a step, 5 when one was left in progress; with --drift, 7 when its
    indexes, TTL or settings differ from what its revisions declare."""
    try:
        d = commands.check(_project(ctx), drift=drift)
    except Drifted as e:
        if json_:
            _emit_json(e.differences)
        else:
            for x in e.differences:
                typer.echo(x["message"])
        raise
    if json_:
        return _emit_json(d["drift"] if drift else d)
    typer.echo(f"table {d['table']} is at head ({', '.join(d['heads']) or 'base'})"
               + (" and matches what its applied revisions declare" if drift else ""))


@app.command("lock")
def lock_cmd(ctx: typer.Context, json_: bool = JsonOpt) -> None:
    """Show who holds the migration lock."""
    d = commands.lock_status(_project(ctx))
    if json_:
        return _emit_json(d)
    typer.echo("not locked" if not d else
               f"locked by {d.get('host')}/{d.get('pid')} since {d.get('since')} (lease {d.get('lease_seconds')}s)")


@app.command()
def unlock(ctx: typer.Context, yes: bool = YesOpt, json_: bool = JsonOpt) -> None:
    """Force-release the migration lock (only when its holder is dead)."""
    d = commands.unlock(_project(ctx), yes=yes, confirm=_confirm())
    if json_:
        return _emit_json(d)
    typer.echo("was not locked" if not d else f"released the lock held by {d.get('host')}/{d.get('pid')}")


@app.command("iam-policy")
def iam_policy(ctx: typer.Context,
               read_only: bool = typer.Option(False, "--read-only", help="For current/check/history only.")) -> None:
    """Print a least-privilege IAM policy (JSON) for the table and these revisions."""
    _emit_json(commands.iam_policy(_project(ctx), read_only=read_only))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
