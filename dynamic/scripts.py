"""The versions/ directory: load revision modules into a graph, render new ones from the template."""
from __future__ import annotations

import ast
import datetime as _dt
import hashlib
import re
import sys
import traceback
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Iterable

import jinja2

from .errors import ScriptError, UsageError
from .graph import Revision, RevisionGraph

TEMPLATE_NAME = "revision.py.j2"
_REV_ID = re.compile(r"^[A-Za-z0-9_]{1,64}$")


def templates_dir() -> Path:
    """Templates ship inside the wheel as dynamic/templates; a checkout has them at the top."""
    packaged = Path(__file__).resolve().parent / "templates"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / "templates"


def _env(search: Iterable[Path]) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader([str(p) for p in search]),
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
        autoescape=False,
    )
    env.filters["pyrepr"] = repr
    env.filters["pyrepr_toml"] = lambda v: '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'
    return env


def render(name: str, search: Iterable[Path] | None = None, **context) -> str:
    return _env(search or [templates_dir()]).get_template(name).render(**context)


def checksum(data: bytes) -> str:
    """sha256 of the file with line endings normalized, so a checkout on Windows matches."""
    return hashlib.sha256(data.replace(b"\r\n", b"\n")).hexdigest()


@dataclass(frozen=True)
class Script:
    """A loaded revision file."""

    revision: Revision
    module: ModuleType
    path: Path
    checksum: str

    @property
    def id(self) -> str:
        return self.revision.revision


def _tuple(value, what: str, path: Path) -> tuple[str, ...]:
    if value is None or value == ():
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ScriptError(f"{path}: {what} must be None, a string or a tuple of strings, got {value!r}")


def load_script(path: Path, display: str | None = None) -> Script:
    """Import one revision file, turning any failure into one line naming the file and line."""
    display = display or str(path)
    data = path.read_bytes()
    name = f"_dyn_rev_{path.stem}_{hashlib.md5(str(path).encode()).hexdigest()[:8]}"
    try:
        code = compile(data, str(path), "exec")
    except SyntaxError as e:
        raise ScriptError(f"{display}:{e.lineno}: syntax error: {e.msg}") from None
    module = ModuleType(name)
    module.__file__ = str(path)
    try:
        exec(code, module.__dict__)
    except (Exception, SystemExit) as e:  # sys.exit() in a revision file must not end dyn quietly
        line = "?"
        for frame in reversed(traceback.extract_tb(e.__traceback__)):
            if frame.filename == str(path):
                line = str(frame.lineno)
                break
        raise ScriptError(
            f"{display}:{line}: revision file failed to import: {type(e).__name__}: {e}"
        ) from e
    rev = getattr(module, "revision", None)
    if rev is not None and not isinstance(rev, str):
        raise ScriptError(f"{display}: revision = {rev!r} must be a string: write `revision = \"{rev}\"`")
    if not rev:
        raise ScriptError(f"{display}: missing `revision = \"<id>\"` at module level")
    if not _REV_ID.match(rev):
        raise ScriptError(
            f"{display}: revision id {rev!r} may hold only letters, digits and _ (no @ - + :)"
        )
    for fn in ("upgrade", "downgrade"):
        if not callable(getattr(module, fn, None)):
            raise ScriptError(f"{display}: missing `def {fn}(op):`")
    doc = (module.__doc__ or "").strip().splitlines()
    revision = Revision(
        revision=rev,
        down_revision=_tuple(getattr(module, "down_revision", None), "down_revision", path),
        branch_labels=_tuple(getattr(module, "branch_labels", None), "branch_labels", path),
        depends_on=_tuple(getattr(module, "depends_on", None), "depends_on", path),
        doc=doc[0] if doc else "",
        path=display,
    )
    return Script(revision, module, path, checksum(data))


class ScriptDirectory:
    """A project's migrations folder: versions/ plus the user's copy of the template."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.versions = self.path / "versions"
        self._scripts: dict[str, Script] | None = None
        self._graph: RevisionGraph | None = None

    def require(self) -> None:
        if not self.versions.is_dir():
            raise UsageError(
                f"no migrations found at {self.versions}: run `dyn init` first, "
                "or set script_location in dyn.toml"
            )

    def files(self) -> list[Path]:
        return sorted(
            p for p in self.versions.glob("*.py") if not p.name.startswith(("_", "."))
        )

    def _load(self) -> None:
        self.require()
        scripts: dict[str, Script] = {}
        revisions = []
        sys.dont_write_bytecode, saved = True, sys.dont_write_bytecode
        try:
            for f in self.files():
                try:
                    display = str(f.relative_to(Path.cwd()))
                except ValueError:
                    display = str(f)
                s = load_script(f, display)
                if s.id in scripts:
                    raise ScriptError(
                        f"duplicate revision id {s.id!r} in {scripts[s.id].revision.path} "
                        f"and {display}: give one of them a new id"
                    )
                scripts[s.id] = s
                revisions.append(s.revision)
        finally:
            sys.dont_write_bytecode = saved
        self._graph = RevisionGraph(revisions)
        self._scripts = scripts

    @property
    def graph(self) -> RevisionGraph:
        if self._graph is None:
            self._load()
        return self._graph  # type: ignore[return-value]

    @property
    def scripts(self) -> dict[str, Script]:
        if self._scripts is None:
            self._load()
        return self._scripts  # type: ignore[return-value]

    def get(self, rev: str) -> Script:
        return self.scripts[rev]

    def checksums(self) -> dict[str, str]:
        return {k: s.checksum for k, s in self.scripts.items()}

    def template_search(self) -> list[Path]:
        return [self.path, templates_dir()]

    def generate(
        self,
        message: str,
        *,
        down_revision: tuple[str, ...],
        rev_id: str | None = None,
        branch_labels: tuple[str, ...] = (),
        depends_on: tuple[str, ...] = (),
        now: _dt.datetime | None = None,
        upgrades: list[str] | None = None,
        downgrades: list[str] | None = None,
        notes: list[str] | None = None,
    ) -> Path:
        """Render a new revision file; returns its path. Nothing is written on error.

        ``upgrades`` / ``downgrades`` are lines of Python for the bodies of ``upgrade(op)`` and
        ``downgrade(op)`` and ``notes`` lines for the docstring (``dyn revision --autogenerate``).
        The template places them with ``{{ upgrades }}``, ``{{ downgrades }}`` and
        ``{{ autogenerated }}``; a template that does not (one copied before they existed) still
        gets them: the lines go at the end of the functions' bodies, the notes in a comment
        after the module docstring."""
        if not message.strip():
            raise UsageError("a revision needs a message: dyn revision -m \"what it does\"")
        rev_id = rev_id or new_rev_id()
        if not _REV_ID.match(rev_id):
            raise UsageError(
                f"revision id {rev_id!r} may hold only letters, digits and _ (no @ - + :)"
            )
        if rev_id in self.scripts:
            raise UsageError(f"revision id {rev_id!r} already exists in {self.scripts[rev_id].path}")
        for label in branch_labels:
            if not _REV_ID.match(label):
                raise UsageError(f"branch label {label!r} may hold only letters, digits and _")
        down = down_revision[0] if len(down_revision) == 1 else (tuple(down_revision) or None)
        path = self.versions / f"{rev_id}_{slug(message)}.py"
        notes_text = "\n".join(_docstring_safe(n) for n in notes or ())
        text = render(
            TEMPLATE_NAME,
            self.template_search(),
            message=message.strip(),
            revision=rev_id,
            down_revision=down,
            down_revision_text=", ".join(down_revision) or "<base>",
            branch_labels=(branch_labels[0] if len(branch_labels) == 1 else tuple(branch_labels)) or None,
            depends_on=(depends_on[0] if len(depends_on) == 1 else tuple(depends_on)) or None,
            create_date=(now or _dt.datetime.now(_dt.timezone.utc)).strftime("%Y-%m-%d %H:%M:%S UTC"),
            upgrades="\n".join(upgrades or ()) or "pass",
            downgrades="\n".join(downgrades or ()) or "pass",
            autogenerated=f"\n{notes_text}\n" if notes_text else "",
        )
        text = _place(text, str(path), upgrades or [], downgrades or [], notes or [])
        # the rendered file must load as a revision before it is written
        compile(text, str(path), "exec")
        tmp = self.versions / f".{rev_id}.tmp.py"
        try:
            tmp.write_text(text, encoding="utf-8")
            script = load_script(tmp, str(path))
            if script.id != rev_id:
                raise ScriptError(f"{self.path / TEMPLATE_NAME} renders revision = {script.id!r}, not {rev_id!r}: "
                                  "fix the template (revision = {{ revision | pyrepr }})")
            tmp.replace(path)
        finally:
            tmp.unlink(missing_ok=True)
        self._scripts = self._graph = None
        return path


def _docstring_safe(line: str) -> str:
    return line.replace("\\", "\\\\").replace('"""', '\\"\\"\\"')


def _place(text: str, filename: str, upgrades: list[str], downgrades: list[str], notes: list[str]) -> str:
    """Put generated lines the template left out at the end of ``upgrade``/``downgrade`` (in
    place of a lone ``pass``) and the notes in a comment after the module docstring."""
    if not (upgrades or downgrades or notes):
        return text
    try:
        tree = ast.parse(text, filename)
    except SyntaxError as e:
        raise ScriptError(f"the revision template renders invalid Python ({filename}:{e.lineno}: {e.msg}): "
                          "fix revision.py.j2 in the migrations folder") from None
    lines = text.splitlines(keepends=True)
    edits: list[tuple[int, int, list[str]]] = []  # (start, end) line slice to replace, new lines
    for func, body in (("upgrade", upgrades), ("downgrade", downgrades)):
        if not body or all(b.strip() in text for b in body):
            continue
        node = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == func), None)
        if node is None:
            raise ScriptError(f"the revision template has no `def {func}(op):` for the generated code: "
                              f"fix revision.py.j2 in the migrations folder")
        first, last = node.body[0], node.body[-1]
        one_line = first.lineno == node.lineno  # def upgrade(op): pass
        indent = " " * (node.col_offset + 4 if one_line else first.col_offset)
        new = [f"{indent}{b}\n" for b in body]
        if isinstance(last, ast.Pass):
            before = lines[last.lineno - 1][:last.col_offset]
            keep = [before.rstrip().rstrip(";") + "\n"] if before.strip() else []
            edits.append((last.lineno - 1, last.end_lineno, keep + new))
        else:
            edits.append((last.end_lineno, last.end_lineno, new))
    if notes and not all(_docstring_safe(n) in text for n in notes):
        first = tree.body[0] if tree.body else None
        at = first.end_lineno if (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
                                   and isinstance(first.value.value, str)) else 0
        edits.append((at, at, [f"# {n}\n" for n in notes]))
    for start, end, new in sorted(edits, reverse=True):
        lines[start:end] = new
    return "".join(lines)


def new_rev_id() -> str:
    return uuid.uuid4().hex[:12]


def slug(message: str, width: int = 40) -> str:
    s = re.sub(r"[^a-z0-9]+", "_", message.lower()).strip("_")
    return s[:width].rstrip("_") or "revision"
