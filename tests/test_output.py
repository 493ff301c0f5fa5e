"""What dyn prints, as a user sees it: one line per step saying what it did (updated / deleted /
would update / reverted), how many, how fast; nothing twice on a terminal; symbolic targets
wherever a revision is named; JSON that agrees with the text; quiet when piped into `head`;
warnings on stderr; one timestamp format."""
from __future__ import annotations

import os
import pty
import re
import subprocess
import sys

import pytest

from conftest import scan_all
from dynamic.runner import StepResult, op_phrase, ops_phrase
from test_runner import three_counters

pytestmark = pytest.mark.local

DELETE_REV = '''\
"""drop the drafts"""
from boto3.dynamodb.conditions import Attr

revision = "dddd44"
down_revision = "cccc33"


def upgrade(op):
    op.delete_items(filter=Attr("n").lt(10))


def downgrade(op):
    op.put_items([{{"PK": f"T#{{i}}", "SK": "T", "Type": "Thing", "n": i}} for i in range(10)])
'''


@pytest.fixture
def proj(local_client, ddb_local, tmp_path):
    p = three_counters(local_client, ddb_local.endpoint_url, tmp_path)
    p.rev("dddd44", "cccc33", source=DELETE_REV.format())
    return p


def step_lines(text: str) -> list[str]:
    return [l for l in text.splitlines() if re.match(r"(would (upgrade|revert)|upgraded|reverted) \w{6}\b", l)]


# ---- the words, from the operation and the direction ----------------------------------

def test_the_verb_comes_from_the_operation_and_the_direction():
    assert op_phrase({"op": "delete_items", "detail": "", "counts": {"scanned": 50, "matched": 10, "deleted": 10,
                                                                        "updated": 0, "seconds": 0.5}}) \
        == "deleted 10 items (scanned 50, 100 items/s)"
    assert op_phrase({"op": "backfill", "counts": {"scanned": 60, "updated": 57, "gone": 2, "unmatched": 1}},
                     dry_run=True) == "would update 57 items (scanned 60, 2 deleted meanwhile, 1 no longer matching)"
    assert op_phrase({"op": "put_items", "detail": "3 items", "counts": {"would_put": 3}}, dry_run=True) \
        == "would put 3 items"
    assert op_phrase({"op": "create_gsi", "detail": "GSI1 (would create)"}) == "would create index GSI1"
    assert op_phrase({"op": "delete_gsi", "detail": "GSI1 (already gone)"}) == "index GSI1 already gone"
    assert op_phrase({"op": "create_gsi", "detail": "GSI1"}) == "created index GSI1"
    assert ops_phrase([]) == "no data operations"
    down = StepResult("r1", "down", "doc", 1.25, [{"op": "remove_attributes", "counts": {"updated": 1}}], {})
    assert down.line() == "reverted r1 in 1.2s: updated 1 item — doc"
    dry = StepResult("r1", "up", "doc", 0.1, [{"op": "backfill", "counts": {"updated": 5}}], {}, dry_run=True)
    assert dry.line() == "would upgrade r1: would update 5 items — doc"


def test_counts_it_does_not_know_are_shown_not_dropped_or_misread():
    """The engine's counts dict grows (issue 11): a new key is shown by name and never becomes
    the verb; zero counts and resource figures stay out of the line."""
    phrase = op_phrase({"op": "backfill", "counts": {"scanned": 10, "updated": 4, "unchanged": 6, "resumed_from": 7,
                                                     "conflicts": 0, "rcu": 3.5, "wcu": 4.0, "segments": 4}})
    assert phrase == "updated 4 items (scanned 10, 6 unchanged, resumed from 7)"
    assert op_phrase({"op": "shiny_new_op", "detail": "x", "counts": {"widgets": 2}}) == "shiny_new_op x (widgets 2)"


# ---- through the CLI, on DynamoDB Local ---------------------------------------------------

def test_each_step_is_one_line_of_what_it_did(proj):
    up = proj.dyn("upgrade", "head")
    lines = step_lines(up.stdout)
    assert [l.split()[1] for l in lines] == ["aaaa11", "bbbb22", "cccc33", "dddd44"], up.stdout
    assert re.fullmatch(r"upgraded aaaa11 in \d+\.\ds: updated 50 items \(scanned \d+, [\d,]+ items/s\) — count c1",
                        lines[0]), lines[0]
    assert re.fullmatch(r"upgraded dddd44 in \d+\.\ds: deleted 10 items \(scanned \d+, [\d,]+ items/s\) — drop the drafts",
                        lines[3]), lines[3]
    assert up.stdout.splitlines()[-1].startswith("upgraded 4 revisions in ")
    assert "applied" not in up.stdout and "updated 10" not in up.stdout

    down = proj.dyn("downgrade", "-2")
    lines = step_lines(down.stdout)
    assert [l.split()[:2] for l in lines] == [["reverted", "dddd44"], ["reverted", "cccc33"]], down.stdout
    # the 10 put back never had c3: the remove leaves them alone
    assert "put 10 items" in lines[0] and "updated 40 items" in lines[1] and "10 unchanged" in lines[1]
    assert down.stdout.splitlines()[-1].startswith("reverted 2 revisions in ")

    before = scan_all(proj.client, proj.table)
    dry = proj.dyn("upgrade", "head", "--dry-run")
    lines = step_lines(dry.stdout)
    assert lines[0].startswith("would upgrade cccc33: would update 50 items"), dry.stdout
    assert lines[1].startswith("would upgrade dddd44: would delete 10 items"), dry.stdout
    assert dry.stdout.splitlines()[-1] == "dry run: would upgrade 2 revisions; nothing was written"
    assert scan_all(proj.client, proj.table) == before
    dry_down = proj.dyn("downgrade", "base", "--dry-run")
    assert step_lines(dry_down.stdout)[0].startswith("would revert bbbb22: would update 40 items")

    # no line is printed twice (not on stderr either, where a log shows only what runs)
    assert not set(step_lines(up.stdout)) & set(up.stderr.splitlines())

    # the history of the table says the same, without zero counts
    applied = proj.dyn("history", "--applied").stdout.splitlines()
    assert "deleted 10 items" in applied[2] and "deleted 0" not in "\n".join(applied), applied


class Screen:
    """Enough of a terminal for what rich writes: text, CR, LF, cursor up, erase line; the
    screen as the user is left with it."""

    CSI = re.compile(r"\x1b\[([0-9;?]*)([A-Za-z])")

    def __init__(self):
        self.lines, self.row, self.col = [""], 0, 0

    def feed(self, text: str) -> None:
        i = 0
        while i < len(text):
            m = self.CSI.match(text, i)
            if m:
                arg, cmd = m.group(1), m.group(2)
                n = int(arg) if arg.isdigit() else 1
                if cmd == "A":
                    self.row = max(0, self.row - n)
                elif cmd == "K":
                    self.lines[self.row] = "" if arg == "2" else self.lines[self.row][:self.col]
                i = m.end()
                continue
            ch = text[i]
            if ch == "\r":
                self.col = 0
            elif ch == "\n":
                self.row += 1
                self.col = 0
                if self.row == len(self.lines):
                    self.lines.append("")
            elif ch >= " ":
                line = self.lines[self.row].ljust(self.col)
                self.lines[self.row] = line[:self.col] + ch + line[self.col + 1:]
                self.col += 1
            i += 1

    def text(self) -> list[str]:
        return [l.rstrip() for l in self.lines if l.strip()]


def run_in_terminal(proj, *args: str) -> tuple[int, list[str]]:
    """`dyn ARGS` with stdout and stderr on one pseudo-terminal, as at a shell prompt."""
    master, slave = pty.openpty()
    env = {**proj.env(), "COLUMNS": "200", "TERM": "xterm"}
    p = subprocess.Popen([sys.executable, "-m", "dynamic.cli", *args], cwd=proj.root, env=env,
                         stdin=slave, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    code = p.wait(timeout=120)
    screen = Screen()
    screen.feed(b"".join(chunks).decode("utf-8", "replace"))
    return code, screen.text()


SLOWISH = '''\
"""slowish"""
import time

revision = "eeee55"
down_revision = "dddd44"


def upgrade(op):
    op.backfill(lambda item: (time.sleep(0.02), {"slowish": 1})[1], segments=1)


def downgrade(op):
    op.remove_attributes(["slowish"])
'''


def test_on_a_terminal_each_step_is_printed_once(proj):
    proj.rev("eeee55", "dddd44", source=SLOWISH)  # long enough for the live display to draw
    code, screen = run_in_terminal(proj, "upgrade", "head")
    assert code == 0, screen
    for rev in ("aaaa11", "bbbb22", "cccc33", "dddd44", "eeee55"):
        assert len([l for l in screen if rev in l and "heads now" not in l]) == 1, (rev, screen)
    assert screen[-1].startswith("upgraded 5 revisions in "), screen
    assert not any("scanned" in l and "/~" in l for l in screen), screen  # the bars are gone
    code, screen = run_in_terminal(proj, "downgrade", "-1")
    assert code == 0 and [l.split()[:2] for l in screen] == [["reverted", "eeee55"], ["reverted", "1"]], screen


# ---- revisions named by target; JSON that agrees with the text --------------------------

def test_show_and_heads_json_know_where_the_table_is(proj):
    proj.dyn("upgrade", "cccc33")
    show = proj.json("show", "cccc33")
    assert show["is_current"] is True and show["applied"] is True
    assert proj.json("show", "dddd44")["applied"] is False
    heads = proj.json("heads")
    assert [(h["revision"], h["is_current"], h["applied"]) for h in heads] == [("dddd44", False, False)]
    hist = {h["revision"]: (h["is_current"], h["applied"]) for h in proj.json("history")}
    assert hist["cccc33"] == (show["is_current"], show["applied"])
    proj.dyn("upgrade", "head")
    assert [(h["is_current"], h["applied"]) for h in proj.json("heads")] == [(True, True)]
    assert "(current)" in proj.dyn("heads").stdout


def test_show_takes_symbolic_targets(proj):
    proj.dyn("upgrade", "bbbb22")
    assert proj.json("show", "head")["revision"] == "dddd44"
    assert proj.json("show", "current")["revision"] == "bbbb22"
    assert proj.json("show", "-1")["revision"] == "aaaa11"
    assert proj.json("show", "+1")["revision"] == "cccc33"
    assert proj.json("show", "aaaa")["revision"] == "aaaa11"  # a prefix, as before
    r = proj.dyn("show", "base", check=False)
    assert r.exit_code == 1 and r.stderr.startswith("error: 'base' names no revision"), r.stderr
    # and where a revision is named elsewhere: stamp --reset-checksum, revision --depends-on
    f = proj.root / "migrations" / "versions" / "bbbb22_r.py"
    f.write_text(f.read_text() + "\n# a comment\n")
    assert proj.dyn("check", check=False).exit_code == 6
    proj.dyn("stamp", "--reset-checksum", "current")
    proj.dyn("upgrade", "head")
    proj.dyn("revision", "-m", "needs the head", "--depends-on", "head", "--rev-id", "ffff66")
    assert proj.json("show", "ffff66")["depends_on"] == ["dddd44"]


def test_a_warning_goes_to_stderr(proj):
    proj.dyn("upgrade", "+1")
    f = proj.root / "migrations" / "versions" / "aaaa11_r.py"
    f.write_text(f.read_text() + "\n# edited\n")
    r = proj.dyn("current", "-v")
    assert "changed since it was applied" in r.stderr and "warning" not in r.stdout


def test_history_timestamps_have_one_format(proj):
    proj.dyn("upgrade", "head")
    proj.dyn("downgrade", "-1")
    stamps = [h[k] for h in proj.json("history", "--applied") for k in ("started", "finished") if k in h]
    assert stamps and all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", s) for s in stamps), stamps
    text = proj.dyn("history", "--applied").stdout
    assert "+00:00" not in text
    # a record written by an older dyn (…+00:00) reads the same way
    from dynamic.store import from_av

    items = [i for i in scan_all(proj.client, proj.table) if i.get("SK", {}).get("S", "").startswith("history#")]
    old = items[0]
    entry = from_av(old["entry"])
    entry["finished"] = entry["finished"].replace("Z", "+00:00")
    from dynamic.store import to_av

    proj.client.put_item(TableName=proj.table, Item={**old, "entry": to_av(entry)})
    assert "+00:00" not in proj.dyn("history", "--applied").stdout


# ---- piping into head --------------------------------------------------------------------

@pytest.mark.parametrize("args", [("history", "--applied"), ("history",), ("history", "--applied", "--json")])
def test_a_reader_that_goes_away_is_not_an_error(proj, args):
    """`dyn history --applied | head -3`: here the reader is gone before dyn writes at all."""
    proj.dyn("upgrade", "head")
    r, w = os.pipe()
    os.close(r)
    p = subprocess.run([sys.executable, "-m", "dynamic.cli", *args], cwd=proj.root, env=proj.env(),
                       stdout=w, stderr=subprocess.PIPE, text=True, timeout=60)
    os.close(w)
    assert p.returncode == 0 and p.stderr == "", p.stderr


def test_piped_into_head_for_real(proj):
    proj.dyn("upgrade", "head")
    for _ in range(3):
        proj.dyn("downgrade", "base")
        proj.dyn("upgrade", "head")
    env = {**proj.env(), "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}"}
    r = subprocess.run(["bash", "-o", "pipefail", "-c", "dyn history --applied | head -3"], cwd=proj.root, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stderr == "" and len(r.stdout.splitlines()) == 3, (r.stdout, r.stderr)
