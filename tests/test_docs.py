"""Every code sample in README.md and docs/*.md runs here, so the docs cannot rot.

The convention, by the fence's language (docs/testing.md, "The docs test", says the same):

- ```python
  * a *revision file* (module-level ``revision = ...`` and ``def upgrade(op)``) must load with
    ``dynamic.scripts.load_script``. If the page's project has a revision file with that id
    (the tutorial's "edit the file to read"), the block replaces it; otherwise it is applied
    alone: a throwaway project (empty stand-ins for any parent it names), a seeded table,
    ``upgrade head``, ``check``, then ``downgrade base`` (which must be refused when the
    revision declares itself irreversible).
  * an *op fragment* (uses ``op.`` and does not define ``op``) is the body of ``upgrade(op)``
    of the next revision of the page's fragment project (one table, seeded, fragments in page
    order), and ``dyn upgrade +1`` must succeed.
  * a block whose first line is ``# file: PATH`` is written to PATH in the page's project; when
    the page has written test files, ``pytest`` then runs them there and must pass.
  * anything else is exec'd as a script with the page's project as working directory; if it
    defines ``handler(event, context)``, that is called once with ``({}, None)``.
- ```sh: each line starting with ``dyn `` runs through the CLI in the page's project and must
  exit 0, or N when the line carries a ``# exit N`` comment. ``VAR=value dyn ...``,
  ``export VAR=value`` (except ``AWS_*``, kept pointing at the test's server) and ``cd DIR`` apply; ``bash PATH`` lines must name a file of this
  repository; every other line is shown to the reader only.
- ```console: ``$ dyn ...`` lines run as in sh blocks; the lines after one are output that must
  appear, each matching a line of what the command printed, ``<...>`` matching anything.
- ```bash: the whole block runs with bash (``dyn`` on PATH) in the page's project; exit 0.
- ```toml: parsed; one with a ``[dyn]`` or ``[tool.dyn]`` table is loaded with
  ``dynamic.config.load_config``; ``dyn_*`` keys of ``[tool.pytest.ini_options]`` must be the
  plugin's ini options.
- ```json and ```yaml: parsed; a GitHub Actions workflow's ``run: dyn ...`` steps run as sh lines.
- ```text (or no language): not run. In troubleshooting.md, text blocks that start with
  ``error:``, ``warning:``, ``waiting for lock`` (and the other QUOTED starts) must match what dyn really prints
  (``<...>`` matching anything), produced by the scenarios at the end of this file.

The page's project is an empty folder when the page's first dyn command is ``dyn init``, else a
copy of example_project (dyn.toml + migrations). Either way ``DYN_TABLE`` names a fresh table on
DynamoDB Local seeded with the example's data, and the AWS_* variables point at that server.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import create_table
from dynamic import errors
from dynamic.config import KEYS, load_config

pytestmark = pytest.mark.local

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "example_project"
PAGES = [ROOT / "README.md", EXAMPLE / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LANGS = {"python", "sh", "console", "bash", "toml", "json", "yaml", "text", ""}

sys.path.insert(0, str(EXAMPLE))
import socialnetwork  # noqa: E402


# ---- reading the pages ----------------------------------------------------------------

@dataclass
class Block:
    page: Path
    line: int  # of the opening fence, 1-based
    lang: str
    text: str

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line} ```{self.lang}"


_FENCE = re.compile(r"^(\s*)(```+|~~~+)\s*([\w+-]*)[^\n]*$")


def blocks(page: Path) -> list[Block]:
    out, lines, i = [], page.read_text(encoding="utf-8").splitlines(), 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, lang = m.group(1), m.group(2), m.group(3).lower()
        start, body = i + 1, []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i][len(indent):] if lines[i].startswith(indent) else lines[i])
            i += 1
        i += 1
        out.append(Block(page, start, lang, "\n".join(body) + "\n"))
    return out


def is_revision(code: str) -> bool:
    return bool(re.search(r"^revision\s*=", code, re.M) and re.search(r"^def upgrade\(op\)", code, re.M))


def is_fragment(code: str) -> bool:
    return "op." in code and not re.search(r"^\s*def \w+\(op\b|^op\s*=", code, re.M)


def pattern(expected: str) -> re.Pattern:
    """A documented line with <...> placeholders as a regex matching a whole printed line."""
    parts = re.split(r"<[^<>]*>", expected.strip())
    return re.compile(r"\s*" + ".+?".join(re.escape(p) for p in parts) + r"\s*")


# ---- running them ---------------------------------------------------------------------

cli = CliRunner()
EXIT = re.compile(r"#.*?\bexit (\d+)")
ENV_ASSIGN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")


@dataclass
class Page:
    """One page's world: its project folder, environment and fragment project."""

    tmp: Path
    endpoint: str
    client: object
    env: dict = field(default_factory=dict)
    cwd: Path | None = None
    fragments: int = 0
    fragment_table: str = ""
    test_dirs: set = field(default_factory=set)

    def fresh_table(self) -> str:
        name = create_table(self.client, name=f"docs-{uuid.uuid4().hex[:10]}")
        socialnetwork.seed(name, users=3, posts_per_user=2, dynamodb=_resource(self.endpoint))
        return name

    def start(self, empty: bool) -> None:
        self.cwd = self.tmp / "project"
        if empty:
            self.cwd.mkdir()
        else:
            shutil.copytree(EXAMPLE, self.cwd, ignore=shutil.ignore_patterns("tests", "__pycache__", "*.md"))
        self.env.update({"DYN_TABLE": self.fresh_table(), "AWS_ENDPOINT_URL_DYNAMODB": self.endpoint})

    @contextlib.contextmanager
    def inside(self, cwd: Path | None = None, env: dict | None = None):
        saved_env, saved_cwd = dict(os.environ), os.getcwd()
        os.environ.update({**self.env, **(env or {})})
        os.chdir(cwd or self.cwd)
        try:
            yield
        finally:
            os.chdir(saved_cwd)
            os.environ.clear()
            os.environ.update(saved_env)

    def dyn(self, args: list[str], env: dict | None = None):
        from dynamic.cli import app

        with self.inside(env=env):
            return cli.invoke(app, args)


def _resource(endpoint: str):
    import boto3

    return boto3.resource("dynamodb", endpoint_url=endpoint, region_name="us-east-1")


def first_dyn_command(page_blocks: list[Block]) -> str | None:
    for b in page_blocks:
        if b.lang in ("sh", "console"):
            for line in b.text.splitlines():
                line = line.strip().removeprefix("$ ")
                if line.startswith("dyn "):
                    return line
    return None


def run_sh_line(page: Page, block: Block, line: str, expect_output: list[str] | None = None) -> None:
    code_part = line.split(" #", 1)[0].strip()
    m = EXIT.search(line)
    want = int(m.group(1)) if m else 0
    tokens = shlex.split(code_part)
    if tokens[:1] == ["export"]:
        for t in tokens[1:]:
            k, _, v = t.partition("=")
            if not k.startswith("AWS_"):  # the test keeps AWS_* pointed at its own DynamoDB Local
                page.env[k] = v
        return
    if tokens[:1] == ["cd"]:
        page.cwd = (page.cwd / tokens[1]).resolve()
        return
    if tokens[:1] == ["bash"]:
        assert (ROOT / tokens[1]).is_file(), f"{block.where}: {tokens[1]} does not exist"
        return
    env = {}
    while tokens and ENV_ASSIGN.match(tokens[0]):
        k, _, v = tokens.pop(0).partition("=")
        env[k] = v
    if tokens[:1] != ["dyn"]:
        return  # shown to the reader only (pip install, python -m dynamic.local start, ...)
    assert not set(tokens) & {"|", "||", "&&", ">", "<", ";"}, \
        f"{block.where}: `{line}` uses shell syntax; put it in a ```bash block"
    r = page.dyn(tokens[1:], env)
    assert r.exit_code == want, f"{block.where}: `{code_part}` exited {r.exit_code}, documented {want}\n{r.output}"
    if expect_output:
        printed = r.output.splitlines()
        for exp in expect_output:
            pat = pattern(exp)
            assert any(pat.fullmatch(p) for p in printed), \
                f"{block.where}: `{code_part}` did not print {exp!r}; it printed:\n{r.output}"


def run_sh(page: Page, block: Block) -> None:
    for line in block.text.splitlines():
        if line.strip() and not line.strip().startswith("#"):
            run_sh_line(page, block, line.strip())


def run_console(page: Page, block: Block) -> None:
    cmd, expected = None, []
    for line in block.text.splitlines() + ["$ "]:
        if line.startswith("$ "):
            if cmd:
                run_sh_line(page, block, cmd, [e for e in expected if e.strip()])
            cmd, expected = line[2:].strip(), []
        else:
            expected.append(line)


def run_bash(page: Page, block: Block) -> None:
    env = {**os.environ, **page.env, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    r = subprocess.run(["bash", "-c", block.text], cwd=page.cwd, env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, f"{block.where} exited {r.returncode}\n{r.stdout}\n{r.stderr}"


def run_toml(page: Page, block: Block) -> None:
    import tomllib

    data = tomllib.loads(block.text)
    pytest_ini = data.get("tool", {}).get("pytest", {}).get("ini_options", {})
    for key in pytest_ini:
        if key.startswith("dyn_"):
            assert key in PLUGIN_INI, f"{block.where}: {key} is not an ini option of dynamic.testing"
    if "dyn" not in data and "dyn" not in data.get("tool", {}):
        return
    d = page.tmp / f"toml-{block.line}"
    d.mkdir()
    name = "dyn.toml" if "dyn" in data else "pyproject.toml"
    (d / name).write_text(block.text)
    cfg = load_config(d / name, env={"STAGE": "dev"})
    assert cfg.path == d / name


class _OptionCapture:
    """Stands in for pytest's parser to learn the plugin's ini option names."""

    def __init__(self):
        self.ini: set[str] = set()

    def getgroup(self, *a, **k):
        return self

    def addoption(self, *a, **k):
        pass

    def addini(self, name, *a, **k):
        self.ini.add(name)


def _plugin_ini() -> set[str]:
    import dynamic.testing

    cap = _OptionCapture()
    dynamic.testing.pytest_addoption(cap)
    return cap.ini


PLUGIN_INI = _plugin_ini()


def run_yaml(page: Page, block: Block) -> None:
    import yaml

    data = yaml.safe_load(block.text)
    assert isinstance(data, dict), f"{block.where}: not a YAML mapping"
    for job in (data.get("jobs") or {}).values():
        for step in job.get("steps", []):
            for line in str(step.get("run", "")).splitlines():
                if line.strip().startswith("dyn "):
                    env = {k: str(v) for k, v in (step.get("env") or {}).items()}
                    prefix = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
                    run_sh_line(page, block, f"{prefix} {line.strip()}".strip())


def write_revision_file(dir: Path, rev: str, down, body: str = "    pass\n", doc: str = "stand-in") -> Path:
    p = dir / f"{rev}_docs.py"
    p.write_text(f'"""{doc}"""\nrevision = {rev!r}\ndown_revision = {down!r}\n\n\n'
                 f"def upgrade(op):\n{body}\n\ndef downgrade(op):\n    pass\n")
    return p


def run_revision(page: Page, block: Block) -> None:
    from dynamic.scripts import load_script

    src = page.tmp / f"rev-{block.line}.py"
    src.write_text(block.text)
    script = load_script(src)  # the sample must load as a revision
    rid = script.id
    versions = page.cwd / "migrations" / "versions" if page.cwd else None
    if versions and versions.is_dir():
        existing = [p for p in versions.glob("*.py") if re.search(rf"^revision\s*=\s*['\"]{rid}['\"]",
                                                                     p.read_text(), re.M)]
        if existing:
            existing[0].write_text(block.text)
            return
    # alone: a throwaway project with stand-ins for the parents it names
    proj = page.tmp / f"alone-{block.line}"
    vdir = proj / "migrations" / "versions"
    vdir.mkdir(parents=True)
    (proj / "dyn.toml").write_text('[dyn]\nscript_location = "migrations"\n')
    shutil.copy(src, vdir / f"{rid}_sample.py")
    for parent in script.revision.down_revision + script.revision.depends_on:
        write_revision_file(vdir, parent, None)
    from dynamic.runner import irreversible_reason

    one_way = irreversible_reason(script)
    env = {"DYN_TABLE": page.fresh_table()}
    for args in (["upgrade", "head"], ["check"], ["downgrade", "base"]):
        with page.inside(proj, env):
            from dynamic.cli import app

            r = cli.invoke(app, args)
        if args[0] == "downgrade" and one_way:  # declared irreversible: refused, nothing run
            assert r.exit_code == errors.Irreversible.exit_code and "irreversible" in r.output, \
                f"{block.where}: an irreversible sample was downgraded\n{r.output}"
            continue
        assert r.exit_code == 0, f"{block.where}: `dyn {' '.join(args)}` of the sample failed\n{r.output}"


FRAGMENT = """\
\"\"\"{where}\"\"\"
from decimal import Decimal

from boto3.dynamodb.conditions import Attr, Key

import dynamic

revision = {rid!r}
down_revision = {down!r}


def upgrade(op):
{body}

def downgrade(op):
    pass
"""


def run_fragment(page: Page, block: Block) -> None:
    """The page's op fragments, in order, as successive revisions on one seeded table."""
    proj = page.tmp / "fragments"
    vdir = proj / "migrations" / "versions"
    if not vdir.exists():
        vdir.mkdir(parents=True)
        (proj / "dyn.toml").write_text('[dyn]\nscript_location = "migrations"\n')
        page.fragment_table = page.fresh_table()
    page.fragments += 1
    rid = f"frag{page.fragments:04d}"
    down = f"frag{page.fragments - 1:04d}" if page.fragments > 1 else None
    (vdir / f"{rid}_docs.py").write_text(FRAGMENT.format(
        where=block.where, rid=rid, down=down, body=textwrap.indent(block.text, "    ")))
    from dynamic.cli import app

    with page.inside(proj, {"DYN_TABLE": page.fragment_table}):
        r = cli.invoke(app, ["upgrade", "+1"])
    assert r.exit_code == 0, f"{block.where}: the fragment failed as upgrade(op)\n{r.output}"


def run_python(page: Page, block: Block) -> None:
    first = block.text.splitlines()[0] if block.text.strip() else ""
    m = re.match(r"#\s*file:\s*(\S+)", first)
    if m:
        target = page.cwd / m.group(1)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(block.text)
        if re.match(r"(test_.*|conftest)\.py$", target.name):
            page.test_dirs.add(target.parent)
        return
    if is_revision(block.text):
        return run_revision(page, block)
    if is_fragment(block.text):
        return run_fragment(page, block)
    namespace = {"__name__": "__main__", "__file__": str(page.cwd / "docs_sample.py")}
    with page.inside():
        exec(compile(block.text, block.where, "exec"), namespace)
        if callable(namespace.get("handler")):
            namespace["handler"]({}, None)


def run_tests_written(page: Page) -> None:
    for d in sorted(page.test_dirs):
        env = {**os.environ, **page.env}
        r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W",
                            "error::pytest.PytestUnknownMarkWarning", "--dyn-backend=moto",
                            "--rootdir", str(d), str(d)],
                           cwd=d, env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, f"the test files of {page.tmp.name} failed:\n{r.stdout[-4000:]}\n{r.stderr[-2000:]}"


RUNNERS = {"python": run_python, "sh": run_sh, "console": run_console, "bash": run_bash,
           "toml": run_toml, "json": lambda p, b: json.loads(b.text), "yaml": run_yaml}


@pytest.mark.parametrize("path", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_page_samples_run(path, tmp_path, ddb_local, local_client):
    page_blocks = blocks(path)
    page = Page(tmp_path, ddb_local.endpoint_url, local_client)
    first = first_dyn_command(page_blocks)
    page.start(empty=bool(first and first.startswith("dyn init")))
    for b in page_blocks:
        assert b.lang in LANGS, f"{b.where}: unknown fence language; use one of {sorted(LANGS - {''})}"
        runner = RUNNERS.get(b.lang)
        if runner:
            try:
                runner(page, b)
            except AssertionError:
                raise
            except Exception as e:
                raise AssertionError(f"{b.where} failed: {type(e).__name__}: {e}") from e
    run_tests_written(page)


# ---- the parts of the docs that are tables and lists ------------------------------------

def doc(name: str) -> str:
    return (ROOT / "docs" / name).read_text(encoding="utf-8")


def exit_code_rows(text: str) -> dict[int, str]:
    return {int(m.group(1)): m.group(2).strip() for m in re.finditer(r"^\|\s*(\d+)\s*\|([^|]+)\|", text, re.M)}


def test_exit_code_tables_match_the_code():
    codes = {v for k, v in vars(errors).items() if k.startswith("EXIT_")}
    for text in ((ROOT / "README.md").read_text(), doc("ci-cd.md")):
        assert set(exit_code_rows(text)) == codes


def test_every_config_key_documented():
    text = doc("configuration.md")
    for key in KEYS:
        row = re.search(rf"^\|\s*`{key}`\s*\|\s*`DYN_{key.upper()}`\s*\|", text, re.M)
        assert row, f"configuration.md has no table row for `{key}` with `DYN_{key.upper()}`"


def test_every_op_documented():
    from dynamic.operations import Operations

    text = doc("operations.md")
    public = [n for n in vars(Operations) if not n.startswith("_") and n not in ("totals",)]
    for name in [*public, "client", "table_name"]:
        assert re.search(rf"^#+ .*`op\.{name}\b", text, re.M), f"operations.md has no heading for op.{name}"


def slugs(page: Path) -> set[str]:
    """GitHub's anchors for a page's headings."""
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
            for h in re.findall(r"^#+ (.+)$", text, re.M)}


def test_links_point_at_files_and_headings_that_exist():
    for page in PAGES:
        for target, anchor in re.findall(r"\]\(([^)#\s]*)(?:#([^)\s]*))?\)", page.read_text()):
            if "://" in target:
                continue
            dest = (page.parent / target) if target else page
            assert dest.exists(), f"{page.name} links to missing {target}"
            if anchor:
                assert anchor in slugs(dest), f"{page.name} links to {target}#{anchor}: no such heading"


# ---- troubleshooting.md: the quoted messages are the real ones --------------------------

QUOTED = ("error:", "warning:", "waiting for lock", "in progress:", "locked by", "still waiting",
          "took over", "cleared the")

SLOW = '''\
"""slow"""
import time

revision = "slow01"
down_revision = None


def upgrade(op):
    op.backfill(lambda item: (time.sleep(0.03), {"Slow": item["PK"]})[1], segments=1)


def downgrade(op):
    op.remove_attributes(["Slow"])
'''


class Scenario:
    """A throwaway project on a fresh table; every line dyn prints is kept in ``lines``."""

    def __init__(self, root: Path, client, endpoint: str, revs: dict[str, str | None], lease: float = 60):
        self.root, self.client, self.endpoint = root, client, endpoint
        self.versions = root / "migrations" / "versions"
        self.versions.mkdir(parents=True)
        self.table = create_table(client)
        (root / "dyn.toml").write_text(f'[dyn]\ntable = "{self.table}"\nscript_location = "migrations"\n'
                                       f'endpoint_url = "{endpoint}"\nlock_lease_seconds = {lease}\n')
        for rid, down in revs.items():
            write_revision_file(self.versions, rid, down,
                                body="    op.backfill(lambda item: {'Seen': True})\n")
        self.lines: list[str] = []

    def dyn(self, *args: str, code: int = 0, env: dict | None = None):
        from dynamic.cli import app

        saved = os.getcwd()
        os.chdir(self.root)
        try:
            r = cli.invoke(app, list(args), env=env)
        finally:
            os.chdir(saved)
        self.lines += r.output.splitlines()
        assert r.exit_code == code, (args, r.exit_code, r.output)
        return r

    def spawn(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "dynamic.cli", *args], cwd=self.root,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_troubleshooting_quotes_real_messages(tmp_path, ddb_local, local_client):
    from dynamic import commands
    from dynamic import lock as locklib
    from dynamic.config import load_config as load

    url = ddb_local.endpoint_url
    seen: list[str] = []

    # multiple heads
    s = Scenario(tmp_path / "heads", local_client, url, {"aaaa01": None, "aaaa02": "aaaa01", "aaaa03": "aaaa01"})
    s.dyn("upgrade", "head", code=1)
    s.dyn("revision", "-m", "x", code=1)
    seen += s.lines

    # not at head, checksum changed, the table naming a revision the files lack, newer format
    s = Scenario(tmp_path / "check", local_client, url, {"bbbb01": None, "bbbb02": "bbbb01"})
    local_client.put_item(TableName=s.table, Item={"PK": {"S": "X#1"}, "SK": {"S": "X"}})
    s.dyn("check", code=3)
    s.dyn("upgrade", "head")
    f = next(s.versions.glob("bbbb01_*.py"))
    f.write_text(f.read_text() + "\n# edited\n")
    s.dyn("check", code=6)
    s.dyn("upgrade", "head")  # warns, and goes on
    s.dyn("stamp", "--reset-checksum", "bbbb01")
    s.dyn("check")
    next(s.versions.glob("bbbb02_*.py")).unlink()
    s.dyn("current", code=1)
    s.dyn("history")  # from the files, the missing revision in a warning
    local_client.update_item(TableName=s.table, Key={"PK": {"S": "_dyn"}, "SK": {"S": "version"}},
                             UpdateExpression="SET #f = :f", ExpressionAttributeNames={"#f": "format"},
                             ExpressionAttributeValues={":f": {"S": "99"}})
    s.dyn("current", code=1)
    seen += s.lines

    # dirty: a revision that raises after writing, then the commands that see the step in progress
    s = Scenario(tmp_path / "dirty", local_client, url, {"cccc01": None})
    local_client.put_item(TableName=s.table, Item={"PK": {"S": "X#1"}, "SK": {"S": "X"}})
    write_revision_file(s.versions, "cccc02", "cccc01",
                        body="    op.put_items([{'PK': 'P#1', 'SK': 'P'}])\n    raise ValueError('boom')\n")
    s.dyn("upgrade", "head", code=1)
    s.dyn("current")
    s.dyn("check", code=5)
    # while a live runner holds the lock (this process, here), it is applying the step now
    live = locklib.acquire(commands.Project(load(cwd=s.root), client=local_client).store, lease_seconds=30, timeout=5)
    try:
        s.dyn("current")
        s.dyn("check", code=4)
    finally:
        live.release()
    s.dyn("downgrade", "base", code=5)
    f = next(s.versions.glob("cccc02_*.py"))
    f.unlink()  # its file gone: the message says so
    s.dyn("check", code=5)
    s.dyn("stamp", "cccc01")  # gives the step up; says what it cleared
    write_revision_file(s.versions, "cccc02", "cccc01")
    s.dyn("upgrade", "head")
    assert "in progress" not in s.dyn("current").output
    # a revision that raises before writing anything leaves nothing in progress
    f = write_revision_file(s.versions, "cccc09", "cccc02", body="    raise ValueError('early')\n")
    s.dyn("upgrade", "head", code=1)
    assert "in progress" not in s.dyn("current").output
    f.unlink()
    # a revision that cannot be undone
    f = write_revision_file(s.versions, "cccc03", "cccc02")
    f.write_text(f.read_text().replace("def downgrade(op):\n    pass",
                                       "def downgrade(op):\n    op.irreversible('the old values are gone')"))
    s.dyn("upgrade", "head")
    s.dyn("downgrade", "base", code=1)
    seen += s.lines

    # locked: a lock held by someone else, then force-released under a live runner
    s = Scenario(tmp_path / "lock", local_client, url, {"dddd01": None}, lease=3)
    project = commands.Project(load(cwd=s.root), client=local_client)
    lease = locklib.acquire(project.store, lease_seconds=30, timeout=5)
    try:
        s.dyn("upgrade", "head", "--lock-timeout", "1", code=4)
        s.dyn("lock")
        s.dyn("unlock", code=2)
        s.dyn("--table", s.table, "stamp", "head", code=2, env={"DYN_PROTECTED": "true"})
    finally:
        lease.release()
    (s.versions / "slow01_docs.py").write_text(SLOW)
    for f in s.versions.glob("dddd01_*"):
        f.unlink()
    for i in range(120):
        local_client.put_item(TableName=s.table, Item={"PK": {"S": f"S#{i}"}, "SK": {"S": "S"}})
    import signal
    import time

    def spawn_locked():
        runner = s.spawn("upgrade", "head")
        for _ in range(200):
            if commands.lock_status(project):
                break
            time.sleep(0.05)
        return runner

    runner = spawn_locked()
    try:
        s.dyn("unlock", "--yes")
        out, err = runner.communicate(timeout=60)
    finally:
        runner.kill()
    assert runner.returncode == 4, (out, err)
    seen += s.lines + err.splitlines()
    # Ctrl-C mid-step, then a runner killed on this machine: taken over at once
    for sig, code in ((signal.SIGINT, 130), (signal.SIGKILL, -9)):
        runner = spawn_locked()
        try:
            time.sleep(0.5)
            runner.send_signal(sig)
            out, err = runner.communicate(timeout=60)
        finally:
            runner.kill()
        assert runner.returncode == code, (out, err)
        seen += err.splitlines()
    s.dyn("upgrade", "head")
    seen += s.lines

    # drift: an index deleted and TTL turned on outside dyn; upgrades that cannot be replayed touching nothing
    s = Scenario(tmp_path / "drift", local_client, url, {})
    write_revision_file(s.versions, "ffff01", None, body='    op.create_gsi("GSI1", ("GSI1PK", "S"))\n')
    s.dyn("upgrade", "head")
    s.dyn("check", "--drift")
    local_client.update_table(TableName=s.table, GlobalSecondaryIndexUpdates=[{"Delete": {"IndexName": "GSI1"}}])
    local_client.update_time_to_live(TableName=s.table,
                                     TimeToLiveSpecification={"Enabled": True, "AttributeName": "Exp"})
    s.dyn("check", "--drift", code=7)
    while local_client.describe_table(TableName=s.table)["Table"].get("GlobalSecondaryIndexes"):
        time.sleep(0.1)  # DynamoDB Local refuses writes while an index is being deleted
    write_revision_file(s.versions, "ffff02", "ffff01",
                        body='    op.client.scan(TableName=op.table_name, Limit=1)["Items"][0]\n')
    local_client.put_item(TableName=s.table, Item={"PK": {"S": "X#1"}, "SK": {"S": "X"}})
    s.dyn("upgrade", "head")
    s.dyn("check", "--drift", code=1)
    write_revision_file(s.versions, "ffff02", "ffff01", body=(
        '    import boto3\n'
        f'    boto3.client("dynamodb", endpoint_url={url!r}, region_name="us-east-1").put_item(\n'
        '        TableName=op.table_name, Item={"PK": {"S": "Y#1"}, "SK": {"S": "Y"}})\n'))
    s.dyn("stamp", "--reset-checksum", "ffff02")
    s.dyn("check", "--drift", code=1)
    seen += s.lines

    # a rename that finds an item holding both attributes, with different values
    s = Scenario(tmp_path / "clash", local_client, url, {})
    write_revision_file(s.versions, "gggg01", None, body='    op.rename_attribute("phone", "phoneNumber")\n')
    local_client.put_item(TableName=s.table, Item={"PK": {"S": "U#1"}, "SK": {"S": "U"}, "phone": {"S": "1"},
                                                   "phoneNumber": {"S": "2"}})
    local_client.put_item(TableName=s.table, Item={"PK": {"S": "U#2"}, "SK": {"S": "U"}, "phone": {"S": "3"}})
    s.dyn("upgrade", "head", code=1)
    seen += s.lines

    # AWS: a missing table, an endpoint nobody listens on
    s = Scenario(tmp_path / "aws", local_client, url, {"eeee01": None})
    s.dyn("--table", "no-such-table", "current", code=1)
    s.dyn("--endpoint-url", "http://127.0.0.1:9", "current", code=1)  # nobody listens there
    seen += s.lines

    quoted = [line.strip() for b in blocks(ROOT / "docs" / "troubleshooting.md") if b.lang == "text"
              for line in b.text.splitlines() if line.strip().startswith(QUOTED)]
    assert len(quoted) >= 12
    for q in quoted:
        pat = pattern(q)
        assert any(pat.fullmatch(line) for line in seen), f"troubleshooting.md quotes {q!r}; dyn printed none like it"


# ---- iam.md: the policies allow exactly what dyn calls ----------------------------------

EVERY_OP = '''\
"""every kind of call dyn makes"""
from boto3.dynamodb.conditions import Attr

import dynamic

revision = "iam001"
down_revision = None


def upgrade(op):
    desc = op.client.describe_table(TableName=op.table_name)["Table"]
    if not desc.get("StreamSpecification", {}).get("StreamEnabled"):
        op.update_table(StreamSpecification={"StreamEnabled": True, "StreamViewType": "KEYS_ONLY"})
    op.put_items([{"id": f"n{i}", "Type": "New"} for i in range(3)])
    op.backfill(lambda item: {"Seen": True, "Old": dynamic.REMOVE}, filter=Attr("Type").eq("Thing"))
    op.remove_attributes(["Seen"], filter=Attr("Type").eq("Thing"))
    op.delete_items(filter=Attr("Type").eq("New"))
    op.rename_attribute("Type", "Kind")
    op.move_items(lambda item: None if item["id"].startswith("m") else {**item, "id": "m" + item["id"]},
                  filter=Attr("Kind").eq("Thing"))
    op.update_ttl("ExpiresAt")


def downgrade(op):
    op.update_ttl("ExpiresAt", enabled=False)
'''

_TRANSACT = {"Put": "PutItem", "Update": "UpdateItem", "Delete": "DeleteItem", "ConditionCheck": "ConditionCheckItem"}


def recording_client(endpoint: str, calls: set):
    import boto3

    client = boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1")

    def record(model, params, **_):
        if model.name == "TransactWriteItems":
            calls.update(_TRANSACT[k] for item in params["TransactItems"] for k in item)
        elif model.name == "BatchExecuteStatement":  # authorized per statement
            calls.update("PartiQL" + st["Statement"].split()[0].capitalize() for st in params["Statements"])
        else:
            calls.add(model.name)

    client.meta.events.register("before-parameter-build.dynamodb", record)
    return client


def test_iam_policies_allow_exactly_what_dyn_calls(tmp_path, ddb_local, local_client):
    from dynamic import commands
    from dynamic.config import load_config as load

    policies = {}
    for b in blocks(ROOT / "docs" / "iam.md"):
        if b.lang == "json":
            stmt = json.loads(b.text)["Statement"][0]
            policies[stmt["Sid"]] = {a.removeprefix("dynamodb:") for a in stmt["Action"]}
    migrate, check = policies["DynMigrateTable"], policies["DynCheckTable"]
    known = set(local_client.meta.service_model.operation_names) | {"ConditionCheckItem", "PartiQLUpdate",
                                                                    "PartiQLDelete"}
    assert migrate <= known and check <= known

    writes, reads = set(), set()
    projects = []
    for name, sort_key in (("pk-only", False), ("pk-sk", True)):
        root = tmp_path / name
        (root / "migrations" / "versions").mkdir(parents=True)
        table = create_table(local_client, sort_key=sort_key, pk="id" if not sort_key else "PK")
        pk = "id" if not sort_key else "PK"
        for i in range(5):
            item = {pk: {"S": f"t{i}"}, "Type": {"S": "Thing"}, "Old": {"N": "1"}}
            if sort_key:
                item["SK"] = {"S": "T"}
            local_client.put_item(TableName=table, Item=item)
        (root / "dyn.toml").write_text(f'[dyn]\ntable = "{table}"\nscript_location = "migrations"\n')
        if not sort_key:
            (root / "migrations" / "versions" / "iam001_every_op.py").write_text(EVERY_OP)
        else:
            write_revision_file(root / "migrations" / "versions", "iam001", None)
        cfg = load(cwd=root)
        p = commands.Project(cfg, client=recording_client(ddb_local.endpoint_url, writes))
        if not sort_key:
            commands.upgrade(p, "head")
            commands.downgrade(p, "base")
            generated = {a.removeprefix("dynamodb:") for a in
                         commands.iam_policy(p)["Statement"][0]["Action"]}
            assert generated == migrate, "`dyn iam-policy` and iam.md disagree"
            generated_ro = {a.removeprefix("dynamodb:") for a in
                            commands.iam_policy(p, read_only=True)["Statement"][0]["Action"]}
            assert generated_ro == check, "`dyn iam-policy --read-only` and iam.md disagree"
        commands.stamp(p, "head")
        commands.unlock(p, yes=True)
        commands.applied_history(p)
        projects.append(cfg)

    for cfg in projects:
        p = commands.Project(cfg, client=recording_client(ddb_local.endpoint_url, reads))
        commands.check(p)
        commands.drift(p)
        commands.current(p, verbose=True)
        commands.applied_history(p)
        commands.lock_status(p)

    assert writes <= migrate, f"iam.md's migrating policy lacks {sorted(writes - migrate)}"
    assert reads <= check, f"iam.md's read-only policy lacks {sorted(reads - check)}"
    assert migrate <= writes, f"iam.md's migrating policy grants unused {sorted(migrate - writes)}"
    assert check <= reads, f"iam.md's read-only policy grants unused {sorted(check - reads)}"
    table = (ROOT / "docs" / "iam.md").read_text()
    for action in migrate:
        assert re.search(rf"^\|[^|]*`{action}`", table, re.M), f"iam.md does not say what {action} is for"
