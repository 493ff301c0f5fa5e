"""Taking one branch down while its sibling stays, through the CLI on DynamoDB Local.

The project: a root revision (the branch point) and two branches off it, each with its own
backfill, so every step leaves its mark on the items and a wrong plan shows in the data::

    a000aaaa  root: C on every Thing                       [branch point]
    ├── fa01fa01 (feature_a): A1   ── fa02fa02: A2
    └── fb01fb01 (feature_b): B1   ── fb02fb02: Widget items
"""
from __future__ import annotations

import pytest

from conftest import create_table, scan_all
from test_runner import Project, seed, things

pytestmark = pytest.mark.local

BACKFILL_REV = '''\
"""{rev}: {attr} on every Thing"""
from boto3.dynamodb.conditions import Attr

revision = {rev!r}
down_revision = {down!r}
branch_labels = {labels!r}
depends_on = None


def upgrade(op):
    op.backfill(lambda item: {{"{attr}": "{rev}-" + str(item["n"])}}, filter=Attr("Type").eq("Thing"))


def downgrade(op):
    op.remove_attributes(["{attr}"], filter=Attr("Type").eq("Thing"))
'''

WIDGETS_REV = '''\
"""fb02fb02: widgets, a new entity"""
from boto3.dynamodb.conditions import Attr

revision = "fb02fb02"
down_revision = "fb01fb01"
branch_labels = None
depends_on = None


def upgrade(op):
    op.put_items({"PK": f"W#{i}", "SK": "W", "Type": "Widget", "i": i} for i in range(7))


def downgrade(op):
    op.delete_items(filter=Attr("Type").eq("Widget"))
'''

ATTRS = {"C": "a000aaaa", "A1": "fa01fa01", "A2": "fa02fa02", "B1": "fb01fb01"}
ALL = ["a000aaaa", "fa01fa01", "fa02fa02", "fb01fb01", "fb02fb02"]


def make_project(client, endpoint: str, root, sort_key: bool = True) -> Project:
    table = create_table(client, sort_key=sort_key)
    seed(client, table, n=40, sort_key=sort_key)
    p = Project(root, table, endpoint)
    p.client = client
    for rev, down, labels, attr in [
        ("a000aaaa", None, None, "C"),
        ("fa01fa01", "a000aaaa", ("feature_a",), "A1"),
        ("fa02fa02", "fa01fa01", None, "A2"),
        ("fb01fb01", "a000aaaa", ("feature_b",), "B1"),
    ]:
        p.rev(rev, down, source=BACKFILL_REV.format(rev=rev, down=down, labels=labels, attr=attr))
    p.rev("fb02fb02", "fb01fb01", source=WIDGETS_REV)
    return p


@pytest.fixture
def proj(local_client, ddb_local, tmp_path):
    return make_project(local_client, ddb_local.endpoint_url, tmp_path)


def data(p: Project) -> tuple[set[str], int]:
    """Which revisions' marks the items carry (every Thing the same, each value the one its
    revision computes), and how many widgets there are."""
    marks = set()
    items = things(p)
    assert len(items) == 40
    for attr, rev in ATTRS.items():
        values = [i.get(attr, {}).get("S") for i in items]
        if any(values):
            assert values == [f"{rev}-{i['n']['N']}" for i in items], attr
            marks.add(rev)
    widgets = [i for i in scan_all(p.client, p.table) if i.get("Type", {}).get("S") == "Widget"]
    return marks, len(widgets)


def heads(p: Project) -> list[str]:
    return [h["revision"] for h in p.json("current")["heads"]]


def moved(p: Project, *args: str) -> tuple[list[tuple[str, str]], list[str]]:
    r = p.json(*args)
    return [(s["revision"], s["direction"]) for s in r["steps"]], r["heads_after"]


@pytest.mark.parametrize("sort_key", [True, False], ids=["pk+sk", "pk-only"])
def test_revert_feature_b_while_feature_a_stays_then_upgrade_it_back(local_client, ddb_local, tmp_path, sort_key):
    p = make_project(local_client, ddb_local.endpoint_url, tmp_path, sort_key)
    p.dyn("upgrade", "heads")
    assert heads(p) == ["fa02fa02", "fb02fb02"]
    assert data(p) == ({"a000aaaa", "fa01fa01", "fa02fa02", "fb01fb01"}, 7)

    steps, after = moved(p, "downgrade", "feature_b@base")
    assert steps == [("fb02fb02", "down"), ("fb01fb01", "down")]
    assert after == ["fa02fa02"] and heads(p) == ["fa02fa02"]
    assert data(p) == ({"a000aaaa", "fa01fa01", "fa02fa02"}, 0)  # feature_a's data untouched

    steps, after = moved(p, "upgrade", "feature_b@head")
    assert steps == [("fb01fb01", "up"), ("fb02fb02", "up")]
    assert after == ["fa02fa02", "fb02fb02"]
    assert data(p) == ({"a000aaaa", "fa01fa01", "fa02fa02", "fb01fb01"}, 7)
    # feature_a was never run again: one up each, and nothing of it went down
    applied = [(h["revision"], h["direction"]) for h in p.json("history", "--applied")]
    assert sorted(r for r, d in applied if d == "up") == sorted(ALL + ["fb01fb01", "fb02fb02"])
    assert sorted(r for r, d in applied if d == "down") == ["fb01fb01", "fb02fb02"]


def test_branch_relative_forms(proj):
    p = proj
    p.dyn("upgrade", "heads")
    assert moved(p, "downgrade", "feature_b@-1") == ([("fb02fb02", "down")], ["fa02fa02", "fb01fb01"])
    assert data(p) == ({"a000aaaa", "fa01fa01", "fa02fa02", "fb01fb01"}, 0)
    assert moved(p, "upgrade", "feature_b@+1") == ([("fb02fb02", "up")], ["fa02fa02", "fb02fb02"])
    assert moved(p, "downgrade", "feature_b@head-1") == ([("fb02fb02", "down")], ["fa02fa02", "fb01fb01"])
    assert moved(p, "upgrade", "feature_b@heads") == ([("fb02fb02", "up")], ["fa02fa02", "fb02fb02"])
    # base+1 is the root, base+2 the branch's first revision
    assert moved(p, "downgrade", "feature_b@base+2") == ([("fb02fb02", "down")], ["fa02fa02", "fb01fb01"])
    assert moved(p, "downgrade", "feature_a@a000aaaa") == (
        [("fa02fa02", "down"), ("fa01fa01", "down")], ["fb01fb01"])
    assert data(p) == ({"a000aaaa", "fb01fb01"}, 0)
    assert moved(p, "upgrade", "feature_a@fa01fa01") == ([("fa01fa01", "up")], ["fa01fa01", "fb01fb01"])
    # a plain base+N takes every branch above it down
    assert moved(p, "downgrade", "base+1") == ([("fb01fb01", "down"), ("fa01fa01", "down")], ["a000aaaa"])
    assert data(p) == ({"a000aaaa"}, 0)
    # on a fork, base+2 must say which way; the form its error suggests works
    r = p.dyn("upgrade", "base+2", check=False)
    assert r.exit_code == 1 and "`feature_a@base+2`" in r.stderr
    assert moved(p, "upgrade", "feature_a@base+2") == ([("fa01fa01", "up")], ["fa01fa01"])


def test_minus_one_from_two_heads_names_a_branch_that_works(proj):
    p = proj
    p.dyn("upgrade", "heads")
    r = p.dyn("downgrade", "-1", check=False)
    assert r.exit_code == 1
    assert r.stderr.strip() == (
        "error: cannot go -1 from several heads (fa02fa02, fb02fb02): name the branch, e.g. "
        "`fa02fa02@-1` or `fb02fb02@-1`")  # neither declares a label
    assert moved(p, "downgrade", "fb02fb02@-1") == ([("fb02fb02", "down")], ["fa02fa02", "fb01fb01"])
    assert data(p) == ({"a000aaaa", "fa01fa01", "fa02fa02", "fb01fb01"}, 0)


BAD = {
    "past the branch point": (("downgrade", "feature_b@-2"),
                              "branch 'feature_b' starts above a000aaaa: going to base would"
                              " also remove a000aaaa, fa01fa01, fa02fa02, which are not on it; use `feature_b@base`"
                              " to take the branch down; `dyn downgrade base` takes every branch down to base"),
    "too far down": (("downgrade", "feature_b@-5"),
                     "cannot go feature_b@-5 from 'fb01fb01': only 1 revision below it (-2 is base)"),
    "unknown label": (("downgrade", "nope@base"),
                      "unknown branch label or revision 'nope' (labels: feature_a, feature_b):"
                      " `dyn history` lists the revisions with their labels"),
    "base+99": (("upgrade", "feature_b@base+99"), "cannot go feature_b@base+99 from 'base': only 3 revisions above it"),
    "base+99 at a fork": (("upgrade", "base+99"),
                          "cannot go base+99 from 'base': 'a000aaaa' is a branch point (fa01fa01, fb01fb01):"
                          " name the branch, e.g. `feature_a@base+99` or `feature_b@base+99`"),
    "base-1": (("downgrade", "base-1"), "cannot go base-1: nothing is below base"),
    "not on the branch": (("downgrade", "feature_b@fa01fa01"),
                          "revision 'fa01fa01' is not on branch 'feature_b':"
                          " run `dyn history -r feature_b@base:heads` to list that branch"),
    "unreadable": (("downgrade", "feature_b@sideways"),
                   "cannot read target 'feature_b@sideways': after '@' use head, heads, base, +N, -N, head-N,"
                   " base+N or a revision of the branch"),
    "not applied": (("downgrade", "feature_b@+1"),
                    "cannot downgrade to 'fb02fb02': it is not applied (current: fa02fa02, fb01fb01);"
                    " run `dyn upgrade fb02fb02` to go up"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_branch_targets_write_nothing(proj, case):
    p = proj
    p.dyn("upgrade", "fa02fa02")
    p.dyn("upgrade", "fb01fb01")
    before = scan_all(p.client, p.table)
    args, message = BAD[case]
    r = p.dyn(*args, check=False)
    assert r.exit_code == 1, r.output
    assert r.stderr.splitlines() == [f"error: {message}"]
    assert "Traceback" not in r.output
    assert scan_all(p.client, p.table) == before


def test_advice_in_the_messages_works(proj):
    p = proj
    p.dyn("upgrade", "heads")
    # "use `feature_b@base`" (past the branch point)
    p.dyn("downgrade", "feature_b@base")
    assert heads(p) == ["fa02fa02"]
    # "run `dyn history -r feature_b@base:heads`" (not on the branch)
    listed = [h["revision"] for h in p.json("history", "-r", "feature_b@base:heads")]
    assert listed == ["fb02fb02", "fb01fb01", "a000aaaa"]
    # "run `dyn upgrade fb02fb02`" (not applied)
    p.dyn("upgrade", "fb02fb02")
    assert heads(p) == ["fa02fa02", "fb02fb02"]
    # "`dyn downgrade base` takes every branch down"
    p.dyn("downgrade", "base")
    assert data(p) == (set(), 0)


def test_history_ranges_on_one_branch_count_from_the_table(proj, tmp_path):
    p = proj
    p.dyn("upgrade", "fa02fa02")
    p.dyn("upgrade", "fb01fb01")
    h = lambda rng: [x["revision"] for x in p.json("history", "-r", rng)]  # noqa: E731
    assert h("feature_a@base:heads") == ["fa02fa02", "fa01fa01", "a000aaaa"]
    assert h("base:heads") == ["fb02fb02", "fb01fb01", "fa02fa02", "fa01fa01", "a000aaaa"]
    # relative bounds count from the table's heads (fa02fa02, fb01fb01)
    assert h("feature_a@-1:heads") == ["fa02fa02", "fa01fa01"]
    assert h("feature_b@-1:current") == ["fb01fb01", "a000aaaa"]
    assert h("feature_b@+1:heads") == ["fb02fb02"]
    r = p.dyn("history", "-r", "fb02fb02:fb01fb01", check=False)
    assert r.exit_code == 1 and r.stderr.splitlines() == [
        "error: history range 'fb02fb02:fb01fb01' is inverted: fb01fb01 is below fb02fb02; put the older"
        " one first: `dyn history -r fb01fb01:fb02fb02`"]
    assert h("fb01fb01:fb02fb02") == ["fb02fb02", "fb01fb01"]
    # no table to count from: refused, while the plain ranges still work from the files alone
    away = Project(tmp_path / "away", p.table, "http://127.0.0.1:9")
    for f in (p.root / "migrations" / "versions").glob("*.py"):
        (away.root / "migrations" / "versions" / f.name).write_text(f.read_text())
    r = away.dyn("history", "-r", "feature_b@-1:heads", check=False)
    assert r.exit_code == 2 and r.stderr.splitlines() == [
        f"error: history range 'feature_b@-1:heads' counts from what the table has applied ('feature_b@-1'),"
        f" but table {p.table} could not be read: name revisions instead (`dyn history` lists them)"]
    assert [x["revision"] for x in away.json("history", "-r", "feature_b@base:heads")] == [
        "fb02fb02", "fb01fb01", "a000aaaa"]


def test_stamp_one_branch(proj):
    p = proj
    p.dyn("upgrade", "heads")
    before = things(p)
    p.dyn("stamp", "feature_b@base")
    assert heads(p) == ["fa02fa02"]
    p.dyn("stamp", "feature_b@head")
    assert heads(p) == ["fa02fa02", "fb02fb02"]
    p.dyn("stamp", "fb01fb01")  # a plain target is the whole new state
    assert heads(p) == ["fb01fb01"]
    assert things(p) == before  # stamp runs nothing
