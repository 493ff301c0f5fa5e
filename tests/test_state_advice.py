"""A new user's tryout, on DynamoDB Local through the CLI: in each state below, every message
that names a command names one that works from that state, and the test runs it.

1. the table records a revision whose file is gone: `dyn stamp REV` replaces the recorded
   heads, and `dyn history` still lists the files (warning about the missing one);
2. a step is being applied right now by a live runner: `dyn check` / `dyn current` say so,
   rather than "left in progress" with resume advice;
3. a step stopped because its `--max-errors` budget ran out: the resume command carries a
   budget that goes on past the failures already met;
4. an unknown label in `label@...`: the command named lists the labels.
"""
from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import time

import pytest

from conftest import create_table
from test_max_errors import errors_file as default_errors, make_project, tagged
from test_runner import Project, seed

pytestmark = pytest.mark.local

COMMAND = re.compile(r"`(dyn [^`]+)`")


def error_line(r) -> str:
    """The one ``error:`` line of a failed command, with no traceback."""
    lines = [l for l in r.stderr.splitlines() if l.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in r.output, (r.stdout, r.stderr)
    return lines[0]


def heads(p: Project) -> list[str]:
    return [h["revision"] for h in p.json("current")["heads"]]


# ---- 1. the table records a revision the files lack ---------------------------------------

def gone_project(tmp_path, client, endpoint) -> Project:
    """aaaa11 applied, then its file moved away; the files now hold cccc33 -> dddd44."""
    table = create_table(client)
    seed(client, table, n=5)
    p = Project(tmp_path / "p", table, endpoint)
    p.client = client
    f = p.rev("aaaa11", None, "c1")
    p.dyn("upgrade", "head")
    f.rename(tmp_path / f.name)
    p.rev("cccc33", None, "c3")
    p.rev("dddd44", "cccc33", "c4")
    return p


@pytest.mark.parametrize("target", ["base", "heads", "cccc33"])
def test_a_recorded_revision_missing_from_disk_can_be_stamped_away(local_client, ddb_local, tmp_path, target):
    p = gone_project(tmp_path, local_client, ddb_local.endpoint_url)
    r = p.dyn("current", check=False)
    assert r.exit_code == 1
    line = error_line(r)
    assert "'aaaa11', which is not in the versions directory" in line, line
    named = COMMAND.findall(line)
    assert "dyn history" in named and "dyn stamp REV" in named, line

    # `dyn history` works from the files alone, the missing revision named in a warning
    r = p.dyn("history")
    assert [l.split(" -> ")[1].split(",")[0].split()[0] for l in r.stdout.splitlines()] == ["dddd44", "cccc33"]
    assert "warning:" in r.stderr and "aaaa11" in r.stderr, r.stderr
    assert "`dyn history`" not in r.stderr  # it never points at itself
    assert [d["revision"] for d in p.json("history")] == ["dddd44", "cccc33"]

    # `dyn stamp REV` (any revision history listed, or base, or heads) replaces the recorded heads
    r = p.dyn("stamp", target)
    expected = {"base": [], "heads": ["dddd44"], "cccc33": ["cccc33"]}[target]
    assert r.stdout.strip() == f"stamped {', '.join(expected) or 'base'} (was aaaa11)", r.stdout
    assert heads(p) == expected
    # no trace of aaaa11 left: no checksum warning (exit 6), every command works again
    r = p.dyn("check", check=False)
    assert r.exit_code == (0 if target == "heads" else 3), r.output
    p.dyn("upgrade", "head")
    p.dyn("check")
    assert "warning" not in p.dyn("current", "-v").stderr
    p.dyn("downgrade", "base")


def test_heads_branches_and_show_still_work_when_a_recorded_revision_is_gone(local_client, ddb_local, tmp_path):
    p = gone_project(tmp_path, local_client, ddb_local.endpoint_url)
    for args in (("heads",), ("branches",), ("show", "cccc33")):
        r = p.dyn(*args)
        assert "warning:" in r.stderr and "aaaa11" in r.stderr, (args, r.stderr)
        assert "error" not in r.output
    assert "dddd44" in p.dyn("heads").stdout


# ---- 2. a step being applied right now ------------------------------------------------------

GATED = '''\
"""held mid-downgrade until the test opens the gate"""
import os
import time

import dynamic

revision = "bbbb22"
down_revision = "aaaa11"


def _hold(item):
    if int(item["n"]) == 20 and os.environ.get("DYN_TEST_MARKER"):
        open(os.environ["DYN_TEST_MARKER"], "w").close()
        deadline = time.monotonic() + 60
        while not os.path.exists(os.environ["DYN_TEST_GATE"]) and time.monotonic() < deadline:
            time.sleep(0.02)


def upgrade(op):
    op.backfill(lambda item: {"slow": int(item["n"]) * 2}, segments=1)


def downgrade(op):
    op.backfill(lambda item: (_hold(item), {"slow": dynamic.REMOVE})[1] if "slow" in item else None,
                segments=1)
'''

FIRST = '''\
"""first"""
revision = "aaaa11"
down_revision = None


def upgrade(op):
    pass


def downgrade(op):
    pass
'''


def test_check_and_current_while_another_runner_applies_the_step(local_client, ddb_local, tmp_path):
    table = create_table(local_client)
    seed(local_client, table, n=60)
    p = Project(tmp_path / "p", table, ddb_local.endpoint_url)
    p.client = local_client
    p.rev("aaaa11", None, source=FIRST)
    p.rev("bbbb22", "aaaa11", source=GATED)
    p.dyn("upgrade", "head")
    marker, gate = tmp_path / "marker", tmp_path / "gate"
    proc = subprocess.Popen([sys.executable, "-m", "dynamic.cli", "downgrade", "-1"], cwd=p.root,
                            env={**p.env(), "DYN_TEST_MARKER": str(marker), "DYN_TEST_GATE": str(gate)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not marker.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.02)
        assert marker.exists(), proc.communicate()
        lock = p.dyn("lock").stdout
        assert lock.startswith(f"locked by ") and f"/{proc.pid} since" in lock, lock

        r = p.dyn("check", check=False)
        line = error_line(r)
        assert r.exit_code == 4, r.output
        assert line.startswith("error: down of revision bbbb22 is being applied now by the runner holding the "
                               f"lock ("), line
        assert f"/{proc.pid}" in line and "left in progress" not in line and "resumes" not in line, line
        named = COMMAND.findall(line)
        assert named == ["dyn lock"], line
        assert p.dyn(*named[0].split()[1:]).stdout == lock  # the command named works, and shows the holder

        cur = p.dyn("current").stdout
        assert "in progress: down of bbbb22" in cur and "being applied now by the runner holding the lock" in cur
        assert "resumes" not in cur, cur
        assert p.json("current")["dirty"]["live"] is True
    finally:
        gate.touch()
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, (out, err)
    assert heads(p) == ["aaaa11"]
    r = p.dyn("check", check=False)
    assert r.exit_code == 3 and "in progress" not in p.dyn("current").stdout


# ---- 3. the --max-errors budget ran out ------------------------------------------------------

FIVE = {"k005", "k050", "k100", "k150", "k180"}
N = 200


@pytest.mark.parametrize("config", [{}, {"segments": 1, "workers": 1}], ids=["default", "one-segment"])
def test_the_budget_stop_names_a_resume_that_goes_on(local_client, ddb_local, tmp_path, config):
    p = make_project(tmp_path / "p", local_client, ddb_local.endpoint_url, raises=FIVE, unusable=set(),
                     rejected=set(), **config)
    errors = tmp_path / "e.jsonl"
    r = p.dyn("upgrade", "head", "--max-errors", "3", "--errors-file", str(errors), check=False)
    assert r.exit_code == 1
    line = error_line(r)
    assert "the most max_errors = 3 allows" in line and "left in progress" in line, line
    named = COMMAND.findall(line)
    resume = [c for c in named if "--max-errors" in c]
    assert resume == [f"dyn upgrade me000001 --max-errors 6 --errors-file {errors}"], line
    assert "fix the revision, then `dyn upgrade me000001` resumes it" in line, line

    r = p.dyn(*shlex.split(resume[0])[1:])  # the command as printed: it goes on, past all five
    assert "(resumed)" in r.stdout
    assert p.json("current")["dirty"] is None
    assert tagged(p) == {f"k{i:03d}" for i in range(N)} - FIVE
    listed = [json.loads(l)["key"]["PK"] for l in errors.read_text().splitlines()]
    assert sorted(listed) == sorted(FIVE) and not default_errors(p)
    assert p.json("history", "--applied")[0]["counts"]["failed"] == 5


def test_the_budget_stop_fix_the_revision_then_resume(local_client, ddb_local, tmp_path):
    p = make_project(tmp_path / "p", local_client, ddb_local.endpoint_url, raises=FIVE, unusable=set(),
                     rejected=set(), segments=1, workers=1)
    r = p.dyn("upgrade", "head", "--max-errors", "3", check=False)
    line = error_line(r)
    assert "`dyn upgrade me000001` resumes it" in line and "fix the revision, then" in line, line
    f = p.root / "migrations" / "versions" / "me000001_r.py"
    f.write_text(f.read_text().replace("RAISES, UNUSABLE", "_RAISES, UNUSABLE").replace(
        "\n\ndef tag", "\nRAISES = set()\n\n\ndef tag", 1))
    p.dyn("upgrade", "me000001")  # fixed: the named command resumes it, with no budget needed
    assert p.json("current")["dirty"] is None
    # the three skipped before the stop were left as they were; every other item is tagged
    assert len(tagged(p)) >= N - 3


# ---- 4. an unknown label ------------------------------------------------------------------------

LABELLED = '''\
"""labelled"""
revision = "bbbb22"
down_revision = "aaaa11"
branch_labels = ("feature",)


def upgrade(op):
    pass


def downgrade(op):
    pass
'''


@pytest.mark.parametrize("labels", [False, True], ids=["no-labels", "a-label"])
@pytest.mark.parametrize("target", [("upgrade", "nope@head"), ("downgrade", "nope@base"), ("downgrade", "nope@-1")])
def test_an_unknown_label_names_the_command_that_lists_labels(local_client, ddb_local, tmp_path, labels, target):
    table = create_table(local_client)
    p = Project(tmp_path / "p", table, ddb_local.endpoint_url)
    p.client = local_client
    p.rev("aaaa11", None, source=FIRST)
    p.rev("bbbb22", "aaaa11", source=LABELLED if labels else FIRST.replace('"aaaa11"', '"bbbb22"', 1).replace(
        "down_revision = None", 'down_revision = "aaaa11"'))
    p.dyn("upgrade", "head")
    r = p.dyn(*target, check=False)
    assert r.exit_code == 1
    line = error_line(r)
    assert "unknown branch label or revision 'nope'" in line and "dyn branches" not in line, line
    assert ("(labels: feature)" in line) if labels else ("no revision declares a branch label" in line), line
    named = COMMAND.findall(line)
    assert named == ["dyn history"], line
    out = p.dyn(*named[0].split()[1:]).stdout
    assert "bbbb22" in out and "aaaa11" in out
    if labels:
        assert "aaaa11 -> bbbb22 (feature)" in out, out  # the label, next to its revision
