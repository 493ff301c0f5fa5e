"""After a step is interrupted or fails, every message that tells the user what to run names a
command that works: each one is followed here, in both directions, on DynamoDB Local, with
Ctrl-C (SIGINT) sent to a real `dyn` process mid-backfill. And a step that wrote nothing does
not leave the table marked in progress."""
from __future__ import annotations

import re
import signal
import subprocess
import sys
import time

import pytest

from conftest import create_table
from test_runner import Project, seed, things

pytestmark = pytest.mark.local

FAST = '''\
"""first"""
revision = "aaaa11"
down_revision = None


def upgrade(op):
    op.backfill(lambda item: {"c1": 1})


def downgrade(op):
    op.remove_attributes(["c1"])
'''

SLOW = '''\
"""slow both ways"""
import os, time

import dynamic

revision = "bbbb22"
down_revision = "aaaa11"


def _mark(item):
    if int(item["n"]) == 20 and os.environ.get("DYN_TEST_MARKER"):
        open(os.environ["DYN_TEST_MARKER"], "w").close()
    time.sleep(0.02)


def upgrade(op):
    op.backfill(lambda item: (_mark(item), {"slow": int(item["n"]) * 2})[1], segments=1)


def downgrade(op):
    op.backfill(lambda item: (_mark(item), {"slow": dynamic.REMOVE})[1] if "slow" in item else None,
                segments=1)
'''

N = 120
COMMAND = re.compile(r"`(dyn [^`]+)`")


@pytest.fixture
def proj(local_client, ddb_local, tmp_path):
    table = create_table(local_client)
    seed(local_client, table, n=N)
    p = Project(tmp_path / "p", table, ddb_local.endpoint_url)
    p.client = local_client
    p.rev("aaaa11", None, source=FAST)
    p.rev("bbbb22", "aaaa11", source=SLOW)
    p.marker = tmp_path / "marker"
    return p


def interrupt(p, *args: str) -> str:
    """Run `dyn ARGS`, press Ctrl-C once the backfill is under way; its one error line."""
    p.marker.unlink(missing_ok=True)
    proc = subprocess.Popen([sys.executable, "-m", "dynamic.cli", *args], cwd=p.root,
                            env={**p.env(), "DYN_TEST_MARKER": str(p.marker)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not p.marker.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    assert p.marker.exists(), proc.communicate()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    errors = [l for l in err.splitlines() if l.startswith("error:")]
    assert proc.returncode == 130 and len(errors) == 1 and "Traceback" not in err, (out, err)
    return errors[0]


def dirty_of(p):
    return p.json("current")["dirty"]


def advice_in(*messages: str) -> set[str]:
    return {c for m in messages for c in COMMAND.findall(m)}


# direction -> (how to get there, the interrupted command, a command that would not run the step,
#              the heads before the step, after it)
DIRECTIONS = {
    "up": (("upgrade", "aaaa11"), ("upgrade", "head"), ("downgrade", "base"), ["aaaa11"], ["bbbb22"]),
    "down": (("upgrade", "head"), ("downgrade", "-1"), ("upgrade", "head"), ["bbbb22"], ["aaaa11"]),
}


def all_advice(p, direction: str, interrupted_msg: str) -> set[str]:
    """The commands every message about the step in progress names; each names at least one."""
    _, _, other, _, _ = DIRECTIONS[direction]
    check = p.dyn("check", check=False)
    assert check.exit_code == 5, check.output
    current = p.dyn("current").stdout
    assert "in progress:" in current
    refused = p.dyn(*other, check=False)
    assert refused.exit_code == 5, refused.output
    messages = [interrupted_msg, check.stderr, current, refused.stderr]
    for m in messages:
        assert COMMAND.search(m), f"names no command: {m}"
    return advice_in(*messages)


@pytest.mark.parametrize("direction", ["up", "down"])
def test_every_advice_after_ctrl_c_works(proj, direction):
    setup, run, _, before, after = DIRECTIONS[direction]
    proj.dyn(*setup)
    msg = interrupt(proj, *run)
    assert dirty_of(proj)["direction"] == direction
    advice = all_advice(proj, direction, msg)
    resume = {c for c in advice if not c.startswith("dyn stamp")}
    stamps = advice - resume
    assert len(resume) == 1 and len(stamps) == 1, advice

    # 1. the command that resumes the step: it finishes what the interrupted run began
    r = proj.dyn(*resume.pop().split()[1:], check=False)
    assert r.exit_code == 0, r.output
    assert "(resumed)" in r.stdout
    assert [h["revision"] for h in proj.json("current")["heads"]] == after and dirty_of(proj) is None
    slow = [i for i in things(proj) if "slow" in i]
    assert len(slow) == (N if direction == "up" else 0)

    # 2. the other way out: repair by hand, then stamp; interrupt again to get there
    proj.dyn(*(("upgrade", "aaaa11") if direction == "up" else ("upgrade", "head")))
    if direction == "up":
        proj.dyn("downgrade", "aaaa11")
    msg = interrupt(proj, *run)
    assert advice_in(msg) == advice
    r = proj.dyn(*stamps.pop().split()[1:], check=False)
    assert r.exit_code == 0, r.output
    assert f"cleared the in-progress {direction} of revision bbbb22" in r.stdout, r.stdout
    assert [h["revision"] for h in proj.json("current")["heads"]] == before and dirty_of(proj) is None
    assert proj.dyn("check", check=False).exit_code in (0, 3)  # no longer 5: nothing in progress
    # from there every command works again
    proj.dyn("upgrade", "head")
    proj.dyn("downgrade", "base")


# ---- item 7: failing steps --------------------------------------------------------------

def bad_rev(body: str) -> str:
    return f'''"""fails"""
revision = "cccc33"
down_revision = "bbbb22"


def upgrade(op):
{body}


def downgrade(op):
    pass
'''


@pytest.mark.parametrize("body", ["    undefined_name", "    op.table_name\n    raise ValueError('late')"],
                         ids=["name-error", "value-error-after-reading"])
def test_a_step_that_wrote_nothing_leaves_the_table_clean(proj, body):
    proj.dyn("upgrade", "head")
    proj.rev("cccc33", "bbbb22", source=bad_rev(body))
    r = proj.dyn("upgrade", "head", check=False)
    assert r.exit_code == 1 and "it wrote nothing: the table is unchanged, still at bbbb22" in r.stderr, r.stderr
    assert dirty_of(proj) is None
    assert proj.dyn("check", check=False).exit_code == 3  # pending, not dirty (5)
    proj.dyn("downgrade", "-1")  # not refused: nothing is in progress
    assert [h["revision"] for h in proj.json("current")["heads"]] == ["aaaa11"]


@pytest.mark.parametrize("body", [
    "    op.put_items([{'PK': 'NEW#1', 'SK': 'N'}])\n    raise ValueError('after a write')",
    "    op.client.put_item(TableName=op.table_name, Item={'PK': {'S': 'RAW#1'}, 'SK': {'S': 'R'}})\n"
    "    raise ValueError('after a raw write')",
], ids=["op-write", "raw-client-write"])
def test_a_step_that_wrote_stays_in_progress_and_its_advice_works_even_once_its_file_is_gone(proj, body):
    proj.dyn("upgrade", "head")
    f = proj.rev("cccc33", "bbbb22", source=bad_rev(body))
    r = proj.dyn("upgrade", "head", check=False)
    assert r.exit_code == 1 and "it is left in progress" in r.stderr, r.stderr
    assert advice_in(r.stderr) == {"dyn upgrade cccc33", "dyn stamp bbbb22"}, r.stderr
    assert dirty_of(proj)["revision"] == "cccc33"

    source = f.read_text()
    f.unlink()  # the revision file is deleted while its step is in progress
    messages = [proj.dyn("check", check=False), proj.dyn("upgrade", "head", check=False),
                proj.dyn("downgrade", "-1", check=False)]
    for m in messages:
        assert m.exit_code == 5, m.output
        assert "revision cccc33's file is missing from" in m.stderr, m.stderr
        assert advice_in(m.stderr) == {"dyn upgrade cccc33", "dyn stamp bbbb22"}, m.stderr
    assert "file is missing" in proj.dyn("current").stdout

    # restoring the file and resuming works ...
    f.write_text(source.replace("    raise ValueError", "    pass  # fixed\n    # raise ValueError"))
    proj.dyn("upgrade", "cccc33")
    assert dirty_of(proj) is None
    proj.dyn("downgrade", "bbbb22")
    # ... and so does giving the step up with the stamp named
    f.write_text(source)
    proj.dyn("upgrade", "head", check=False)
    f.unlink()
    r = proj.dyn("stamp", "bbbb22")
    assert "stamped bbbb22 (was bbbb22)" in r.stdout
    assert "cleared the in-progress up of revision cccc33" in r.stdout and "nothing it wrote was undone" in r.stdout
    assert dirty_of(proj) is None
    proj.dyn("check")
    proj.dyn("downgrade", "-1")


def test_stamp_without_a_step_in_progress_says_only_what_it_stamped(proj):
    r = proj.dyn("stamp", "aaaa11")
    assert r.stdout.strip() == "stamped aaaa11 (was base)"
