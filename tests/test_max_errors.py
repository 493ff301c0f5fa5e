"""`--max-errors` and the errors file on DynamoDB Local, through `dyn upgrade`: a revision that
fails on a known set of items (it raises, returns something unusable, or writes a value
DynamoDB rejects) is applied around them within the budget, and stops, resumably, past it."""
from __future__ import annotations

import json
import re

import pytest

from conftest import add_index, create_table, scan_all
from dynamic.backfill import UpdateFailed
from dynamic.backfill.failures import ErrorBudget
from dynamic.cli import _relative_targets_last
from test_backfill import plain_items, put_items
from test_runner import Project

pytestmark = pytest.mark.local

N = 200
RAISES, UNUSABLE, REJECTED = {"k005", "k100"}, {"k150"}, {"k042"}
FAILING = RAISES | UNUSABLE | REJECTED

TAG = '''\
"""tag every thing with G, its index key"""
from decimal import Decimal

revision = "me000001"
down_revision = None

RAISES, UNUSABLE, REJECTED = {raises!r}, {unusable!r}, {rejected!r}


def tag(item):
    pk = item["PK"]
    if pk in RAISES:
        raise ValueError(f"no tag for {{pk}}")
    if pk in UNUSABLE:
        return ["G", pk]
    if pk in REJECTED:
        return {{"G": ""}}  # an empty string cannot key the byG index: DynamoDB refuses the write
    return {{"G": "g" + pk}}


def upgrade(op):
    op.backfill(tag)


def downgrade(op):
    op.remove_attributes(["G"])
'''

PRUNE = '''\
"""prune the odd drafts"""
from boto3.dynamodb.conditions import Attr

revision = "me000002"
down_revision = "me000001"


def odd(item):
    if item["PK"] in {bad!r}:
        raise KeyError("N")
    return item["N"] % 2 == 1


def upgrade(op):
    op.delete_items(filter=Attr("Type").eq("Draft"), where=odd)


def downgrade(op):
    pass
'''


def indexed_table(client) -> str:
    name = create_table(client, sort_key=False)
    add_index(client, name)
    put_items(client, name, [{"PK": f"k{i:03d}", "Type": "Thing", "A": i} for i in range(N)])
    return name


def make_project(tmp_path, client, endpoint, raises=RAISES, unusable=UNUSABLE, rejected=REJECTED,
                 **config) -> Project:
    table = indexed_table(client)
    p = Project(tmp_path, table, endpoint)
    p.client = client
    p.rev("me000001", None, source=TAG.format(raises=raises, unusable=unusable, rejected=rejected))
    with open(p.root / "dyn.toml", "a") as f:
        for k, v in config.items():
            f.write(f"{k} = {json.dumps(v)}\n")
    return p


def errors_file(p: Project) -> list[dict]:
    path = p.root / "dyn-errors.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def tagged(p: Project) -> set[str]:
    return {i["PK"] for i in plain_items(p.client, p.table) if "G" in i}


def applied(p: Project) -> dict:
    return p.json("history", "--applied")[0]


@pytest.mark.parametrize("write_mode", ["batch", "item"])
def test_failing_items_within_the_budget_are_listed_and_skipped(local_client, ddb_local, tmp_path, write_mode):
    p = make_project(tmp_path, local_client, ddb_local.endpoint_url, write_mode=write_mode)
    r = p.dyn("upgrade", "head", "--max-errors", str(len(FAILING)))
    assert f"{len(FAILING)} item(s) failed and were left untouched" in r.stdout
    assert str(p.root / "dyn-errors.jsonl") in r.stdout
    lines = errors_file(p)
    assert sorted(line["key"]["PK"] for line in lines) == sorted(FAILING)  # each once, and only those
    assert {(line["revision"], line["direction"], line["op"]) for line in lines} == {("me000001", "up", "backfill tag")}
    why = {line["key"]["PK"]: line["error"] for line in lines}
    assert "ValueError: no tag for k005" in why["k005"]
    assert "must return a dict of attributes or None, got list" in why["k150"]
    assert why["k042"].startswith("DynamoDB rejected the update of item {PK='k042'}")
    assert tagged(p) == {f"k{i:03d}" for i in range(N)} - FAILING  # every other item migrated
    h = applied(p)
    assert (h["counts"]["failed"], h["counts"]["updated"]) == (len(FAILING), N - len(FAILING))
    assert "4 failed, left untouched" in p.dyn("history", "--applied").stdout
    assert p.json("current")["dirty"] is None


def test_one_failure_too_many_stops_the_step_and_it_resumes(local_client, ddb_local, tmp_path):
    """Three allowed, four failing: the run stops at the fourth (exit 1, left in progress, the
    three before it listed); run again with a budget of four, it resumes and completes. The
    history record counts every run: each item updated once, four failed. (Here ``update``
    fails; an item DynamoDB refuses stops the run in the middle of a batch, whose writes
    that landed are then counted as unchanged by the run that reads them again.)"""
    failing = {"k005", "k100", "k150", "k180"}
    p = make_project(tmp_path, local_client, ddb_local.endpoint_url, raises={"k005", "k100", "k180"},
                     unusable={"k150"}, rejected=set(), segments=1, workers=1)
    r = p.dyn("upgrade", "head", "--max-errors", "3", check=False)
    lines = [l for l in r.stderr.splitlines() if l.startswith("error:")]
    assert r.exit_code == 1 and len(lines) == 1, r.stderr
    assert "3 item(s) had already failed" in lines[0] and "the most max_errors = 3 allows" in lines[0]
    assert "left in progress" in lines[0] and (
        f"`dyn upgrade me000001 --max-errors 6 --errors-file {p.root / 'dyn-errors.jsonl'}` resumes it" in lines[0])
    assert "fix the revision, then `dyn upgrade me000001` resumes it" in lines[0]
    first = [line["key"]["PK"] for line in errors_file(p)]
    assert len(first) == 3 and set(first) < failing
    assert p.json("current")["dirty"]["revision"] == "me000001"
    assert tagged(p) < {f"k{i:03d}" for i in range(N)} - failing  # it stopped midway

    r = p.dyn("upgrade", "head", "--max-errors", "3", check=False)  # the same budget: spent
    assert r.exit_code == 1 and "the most max_errors = 3 allows" in r.stderr

    r = p.dyn("upgrade", "head", "--max-errors", "4")
    # this run: the fourth, and those of the three that came after the last checkpoint (re-read)
    assert re.search(r"^[1-4] item\(s\) failed and were left untouched", r.stdout, re.M), r.stdout
    assert sorted(line["key"]["PK"] for line in errors_file(p)) == sorted(failing)
    assert tagged(p) == {f"k{i:03d}" for i in range(N)} - failing
    h = applied(p)
    assert h["resumed"] and p.json("current")["dirty"] is None
    assert (h["counts"]["failed"], h["counts"]["updated"]) == (4, N - 4)


def test_where_failing_on_some_drafts(local_client, ddb_local, tmp_path):
    p = make_project(tmp_path, local_client, ddb_local.endpoint_url)
    put_items(local_client, p.table, [{"PK": f"d{i:02d}", "Type": "Draft", "N": i} for i in range(40)])
    p.rev("me000002", "me000001", source=PRUNE.format(bad={"d03", "d04"}))
    r = p.dyn("upgrade", "head", "--max-errors", "10", "--json")
    out = json.loads(r.stdout)
    prune = out["steps"][1]["counts"]
    assert (prune["deleted"], prune["failed"], prune["unchanged"]) == (19, 2, 19)
    assert out["errors_file"] == str(p.root / "dyn-errors.jsonl")
    pruned = [line for line in errors_file(p) if line["revision"] == "me000002"]
    assert sorted(line["key"]["PK"] for line in pruned) == ["d03", "d04"]
    assert {line["op"] for line in pruned} == {"delete_items odd"}
    drafts = {i["PK"] for i in plain_items(local_client, p.table) if i.get("Type") == "Draft"}
    assert drafts == {f"d{i:02d}" for i in range(0, 40, 2)} | {"d03"}


def test_a_dry_run_counts_failures_and_writes_no_file(local_client, ddb_local, tmp_path):
    p = make_project(tmp_path, local_client, ddb_local.endpoint_url)
    before = scan_all(local_client, p.table)
    counts = p.json("upgrade", "head", "--dry-run", "--max-errors", "5")["steps"][0]["counts"]
    # DynamoDB's refusal of k042 is only learnt by writing: the dry run sees 3 of the 4
    assert (counts["failed"], counts["updated"]) == (3, N - 3)
    assert "3 item(s) would fail" in p.dyn("upgrade", "head", "--dry-run", "--max-errors", "5").stdout
    # without --max-errors too: a dry run counts every item that would fail, and says what a
    # real run would do about them
    r = p.dyn("upgrade", "head", "--dry-run")
    assert ("3 item(s) would fail (update/where raised, or returned something unusable): a real run stops at "
            "the first one unless --max-errors lets it skip that many and go on") in r.stdout, r.stdout
    assert scan_all(local_client, p.table) == before and not errors_file(p)


def test_error_budget():
    key = {"PK": {"S": "a"}}
    first = UpdateFailed("update() raised ValueError: x on item {PK='a'}", key)
    with pytest.raises(UpdateFailed) as e:
        ErrorBudget(0).record(key, first)
    assert e.value is first  # max_errors = 0: the failure itself, as before
    seen = []
    budget = ErrorBudget(2, lambda k, err, op: seen.append((k, op)), where="errs.jsonl")
    ops = budget.for_op("backfill f")
    ops.record(key, first)
    ops.record(key, first)
    with pytest.raises(UpdateFailed, match=r"2 item\(s\) had already failed \(listed in errs.jsonl\), "
                                           r"the most max_errors = 2 allows"):
        ops.record(key, first)
    assert seen == [(key, "backfill f")] * 2
    # the resume the runner names goes past every failure met (the stopping one included)
    assert budget.spent and budget.resume_limit() == 4
    carried = ErrorBudget(3)
    carried.carry(3)  # an earlier run of the step spent it
    with pytest.raises(UpdateFailed):
        carried.record(key, first)


def test_negative_option_values_are_not_targets():
    assert _relative_targets_last(["downgrade", "-1"]) == ["downgrade", "--", "-1"]
    assert _relative_targets_last(["downgrade", "--dry-run", "-1"]) == ["downgrade", "--dry-run", "--", "-1"]
    assert _relative_targets_last(["upgrade", "head", "--max-errors", "-1"]) == [
        "upgrade", "head", "--max-errors", "-1"]
