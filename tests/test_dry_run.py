"""`dyn upgrade --dry-run` on DynamoDB Local: the counts, units, cost and duration it predicts
against what the real run then does, with and without `--sample`; the figures count the
user's items only; bad options are refused before anything is read or written."""
from __future__ import annotations

import json
import re
import time

import pytest

from conftest import create_table, scan_all
from dynamic import commands
from dynamic.backfill.estimate import sample_segments
from dynamic.config import load_config
from test_backfill import put_items
from test_runner import Project

pytestmark = pytest.mark.local

NOOP = '''\
"""nothing to migrate ({rev})"""
revision = {rev!r}
down_revision = {down!r}


def upgrade(op):
    pass


def downgrade(op):
    pass
'''

POST_KEYS = '''\
"""the posts' keys on GSI1"""
from boto3.dynamodb.conditions import Attr

revision = "dr000003"
down_revision = "dr000002"


def upgrade(op):
    op.backfill(lambda item: {"GSI1PK": item["PK"], "GSI1SK": item["SK"]}, filter=Attr("Type").eq("Post"))


def downgrade(op):
    op.remove_attributes(["GSI1PK", "GSI1SK"], filter=Attr("Type").eq("Post"))
'''

PRUNE = '''\
"""prune the drafts with an odd number"""
from boto3.dynamodb.conditions import Attr

revision = "dr000004"
down_revision = "dr000003"


def upgrade(op):
    op.delete_items(filter=Attr("Type").eq("Draft"), where=lambda item: item["N"] % 2 == 1)


def downgrade(op):
    pass
'''


def gsi_table(client, sort_key: bool = True) -> str:
    """A table with GSI1 (GSI1PK, GSI1SK), projecting every attribute."""
    name = create_table(client, sort_key=sort_key)
    client.update_table(
        TableName=name,
        AttributeDefinitions=[{"AttributeName": "GSI1PK", "AttributeType": "S"},
                              {"AttributeName": "GSI1SK", "AttributeType": "S"}],
        GlobalSecondaryIndexUpdates=[{"Create": {"IndexName": "GSI1", "KeySchema": [
            {"AttributeName": "GSI1PK", "KeyType": "HASH"}, {"AttributeName": "GSI1SK", "KeyType": "RANGE"}],
            "Projection": {"ProjectionType": "ALL"}}}])
    while any(g["IndexStatus"] != "ACTIVE" for g in
              client.describe_table(TableName=name)["Table"].get("GlobalSecondaryIndexes", [])):
        time.sleep(0.1)
    return name


def project(tmp_path, client, endpoint, table, *revisions, **config) -> Project:
    p = Project(tmp_path, table, endpoint)
    p.client = client
    for i, (rev, down) in enumerate([("dr000001", None), ("dr000002", "dr000001")]):
        p.rev(rev, down, source=NOOP.format(rev=rev, down=down))
    for rev, source in revisions:
        p.rev(rev, None, source=source)
    with open(p.root / "dyn.toml", "a") as f:
        for k, v in config.items():
            f.write(f"{k} = {json.dumps(v)}\n")
    return p


def the_op(run: dict, revision: str) -> dict:
    step = next(s for s in run["steps"] if s["revision"] == revision)
    return next(o for o in step["ops"] if "scanned" in o.get("counts", {}))["counts"]


def within(estimate: float, actual: float, share: float) -> bool:
    return abs(estimate - actual) <= share * actual


@pytest.mark.parametrize("sort_key", [True, False], ids=["pk+sk", "pk-only"])
def test_estimate_against_the_run(local_client, ddb_local, tmp_path, sort_key):
    """1,000 items, 600 posts of ~1.6 KB: the dry run predicts exactly the items the run scans,
    matches and writes, its read units within 10% and its write units (the table's 2 per post
    plus GSI1's 2, as DynamoDB reports them for UpdateItem) within 10%; the cost is priced
    with the configured prices. dyn's own records (the version record, two history records)
    are not counted as scanned, in either run."""
    table = gsi_table(local_client, sort_key)
    put_items(local_client, table, [{"PK": f"U#{i:04d}", "SK": "S", "Type": "Post" if i % 5 < 3 else "User",
                                     "pad": "x" * 1500} for i in range(1000)])  # SK: a key or not
    p = project(tmp_path, local_client, ddb_local.endpoint_url, table, ("dr000003_keys", POST_KEYS),
                write_mode="item", read_price=0.25, write_price=1.25)
    p.dyn("upgrade", "dr000002")  # two history records and the version record in the table
    before = scan_all(local_client, table)

    dry = p.json("upgrade", "head", "--dry-run")
    assert scan_all(local_client, table) == before
    est = the_op(dry, "dr000003")
    run = p.json("upgrade", "head")
    got = the_op(run, "dr000003")

    assert (est["scanned"], est["matched"], est["updated"]) == (1000, 600, 600)
    assert (got["scanned"], got["matched"], got["updated"]) == (1000, 600, 600)
    assert within(est["rcu"], got["rcu"], 0.10), (est["rcu"], got["rcu"])
    assert within(est["wcu"], got["wcu"], 0.10), (est["wcu"], got["wcu"])
    assert got["wcu"] >= 600 * 4 * 0.9  # GSI1's writes are in what DynamoDB reported, and estimated
    for c in (est, got):
        assert c["cost_usd"] == pytest.approx((c["rcu"] * 0.25 + c["wcu"] * 1.25) / 1e6, abs=2e-6)
    assert "sample" not in est and est["seconds"] > 0 and est["scan_seconds"] > 0
    assert dry["totals"]["wcu"] == est["wcu"] and dry["totals"]["scanned"] == 1000


def test_a_sample_of_the_segments_extrapolates(local_client, ddb_local, tmp_path):
    """12,000 items of ~650 bytes, half of them posts: a 10% sample reads about a tenth of the
    table (spread over the key space, the same segments every time), says so, and its
    extrapolated counts and units land within 10% of the real run's. (Read units are billed
    per Scan call, rounded up to half a unit: on a table of a few hundred KB that rounding,
    not the data, would decide them; sampling is for large tables.)"""
    table = create_table(local_client)
    put_items(local_client, table, [{"PK": f"U#{i:05d}", "SK": "S", "Type": "Post" if i % 2 else "User",
                                     "pad": "x" * 600} for i in range(12_000)])
    p = project(tmp_path, local_client, ddb_local.endpoint_url, table, ("dr000003_keys", POST_KEYS))
    p.dyn("upgrade", "dr000002")
    scanned = []
    local_client.meta.events.register("after-call.dynamodb.Scan",
                                      lambda parsed, **kw: scanned.append(parsed.get("ScannedCount", 0)))
    project_ = commands.Project(load_config(cwd=p.root), client=local_client)
    first = commands.upgrade(project_, "head", dry_run=True, sample=10).as_dict()
    read = sum(scanned)
    again = commands.upgrade(project_, "head", dry_run=True, sample=10).as_dict()
    est = the_op(first, "dr000003")
    assert est["sample"] == 10 and the_op(again, "dr000003")["scanned"] == est["scanned"]  # same segments
    assert 0.05 * 12_000 < read < 0.15 * 12_000, read  # it read about a tenth of the table

    text = p.dyn("upgrade", "head", "--dry-run", "--sample", "10").stdout
    assert "estimate from a 10% sample of the table's segments, extrapolated" in text
    assert "nothing was written" in text

    got = the_op(p.json("upgrade", "head"), "dr000003")
    assert (got["scanned"], got["updated"]) == (12_000, 6_000)
    for name in ("scanned", "matched", "updated", "rcu", "wcu"):
        assert within(est[name], got[name], 0.10), (name, est[name], got[name])


def test_duration_follows_the_capacity_caps(local_client, ddb_local, tmp_path):
    """With --max-wcu the run cannot write faster than the cap: the estimate says at least
    units / cap (here the cap is what sets it)."""
    table = create_table(local_client)
    put_items(local_client, table, [{"PK": f"U#{i:04d}", "SK": "S", "Type": "Post"} for i in range(300)])
    p = project(tmp_path, local_client, ddb_local.endpoint_url, table, ("dr000003_keys", POST_KEYS))
    est = the_op(p.json("upgrade", "head", "--dry-run", "--max-wcu", "10"), "dr000003")
    assert est["wcu"] == 300
    assert est["seconds"] == pytest.approx(300 / 10, rel=0.01)
    uncapped = the_op(p.json("upgrade", "head", "--dry-run"), "dr000003")
    assert 0 < uncapped["seconds"] < 30


def test_dry_run_text_shows_the_table_and_the_samples(local_client, ddb_local, tmp_path):
    table = create_table(local_client)
    put_items(local_client, table, [{"PK": f"U#{i}", "SK": "S", "Type": "Post"} for i in range(20)]
              + [{"PK": f"D#{i}", "SK": "S", "Type": "Draft", "N": i} for i in range(10)])
    p = project(tmp_path, local_client, ddb_local.endpoint_url, table, ("dr000003_keys", POST_KEYS),
                ("dr000004_prune", PRUNE))
    out = p.dyn("upgrade", "head", "--dry-run").stdout
    lines = out.splitlines()
    assert any(l.strip().startswith("{PK='U#") and "GSI1PK <absent> -> 'U#" in l for l in lines), out
    assert any(l.strip().startswith("{PK='D#") and l.endswith("would delete") for l in lines), out
    header = next(l for l in lines if l.startswith("revision"))
    assert header.split() == ["revision", "operation", "scanned", "matched", "write", "delete", "RCU", "WCU",
                              "cost", "time"]
    total = next(l for l in lines if l.startswith("total")).split()
    assert total[1:5] == ["60", "30", "20", "5"]  # two scans of 30; 20 writes; 5 odd drafts
    assert "estimate (the whole table was scanned):" in out and "nothing was written" in out
    deleted = the_op(p.json("upgrade", "head", "--dry-run"), "dr000004")
    assert (deleted["deleted"], deleted["wcu"]) == (5, 5)


@pytest.mark.parametrize("args,needle", [
    (("--dry-run", "--sample", "0"), "--sample 0 is not a share of the table"),
    (("--dry-run", "--sample", "150"), "--sample 150 is not a share of the table"),
    (("--sample", "10"), "--sample 10 applies to a dry run only: add --dry-run"),
    (("--max-errors", "-1"), "max_errors (from --max-errors) is how many failing items a step may skip"),
    (("--max-errors", "2", "--errors-file", "no/such/folder/errors.jsonl"), "pass --errors-file PATH"),
])
def test_bad_options_are_refused_before_anything_runs(local_client, ddb_local, tmp_path, args, needle):
    table = create_table(local_client)
    put_items(local_client, table, [{"PK": f"U#{i}", "SK": "S", "Type": "Post"} for i in range(10)])
    p = project(tmp_path / "p", local_client, ddb_local.endpoint_url, table, ("dr000003_keys", POST_KEYS))
    before = scan_all(local_client, table)
    r = p.dyn("upgrade", "head", *args, check=False)
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert r.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], r.stderr
    assert "Traceback" not in r.output
    assert scan_all(local_client, table) == before  # not even the version record
    assert not list((tmp_path / "p").rglob("*.jsonl"))


def test_sample_segments_are_spread_and_fixed():
    total, chosen = sample_segments(8, 10)
    assert (total, chosen) == (100, [5, 15, 25, 35, 45, 55, 65, 75, 85, 95])
    assert sample_segments(8, 10) == (total, chosen)
    total, chosen = sample_segments(4000, 2.5)
    assert total == 4000 and len(chosen) == 100 and chosen[0] < 40 and chosen[-1] > 3960
    total, chosen = sample_segments(1, 0.1)  # a share below one in a hundred: a finer cut
    assert total == 1000 and chosen == [500]


def test_protected_confirmation_shows_the_write_units(local_client, ddb_local, tmp_path, monkeypatch):
    """Before a protected stage's confirmation: the most the plan's data operations could
    write (every item once, from the table's size, no scan) and the command that estimates
    them; not for revisions without data operations."""
    table = create_table(local_client)
    put_items(local_client, table, [{"PK": f"U#{i}", "SK": "S", "Type": "Post", "pad": "x" * 1500}
                                    for i in range(40)])
    p = project(tmp_path, local_client, ddb_local.endpoint_url, table, ("dr000003_keys", POST_KEYS))
    cfg = load_config(cwd=p.root, env={"DYN_PROTECTED": "true"})
    asked: list[str] = []
    with pytest.raises(Exception, match="not confirmed"):
        commands.upgrade(commands.Project(cfg), "dr000002", confirm=lambda q: asked.append(q) or False)
    assert "upgrade would run: up dr000001" in asked[0] and "write units" not in asked[0]
    with pytest.raises(Exception, match="not confirmed"):
        commands.upgrade(commands.Project(cfg), "head", confirm=lambda q: asked.append(q) or False)
    prompt = asked[1]
    assert "1 data operation(s) (backfill in dr000003) on ~40 items" in prompt
    assert "up to ~80 write units" in prompt  # 40 items of 1.5-2 KB: 2 units each
    assert "`dyn upgrade head --dry-run --sample 10` estimates them" in prompt
    monkeypatch.setenv("DYN_PROTECTED", "true")
    r = p.dyn("upgrade", "head", check=False)  # no terminal: exit 2, the same plan on one line
    assert r.exit_code == 2 and "up to ~80 write units" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    monkeypatch.delenv("DYN_PROTECTED")
    p.dyn("upgrade", "head", "--dry-run", "--sample", "10")  # the command it names works


def test_write_cost_counts_the_index_entries_a_write_changes():
    from dynamic.backfill.values import index_shapes, write_cost

    idx = index_shapes({
        "byG": {"KeySchema": [{"AttributeName": "G", "KeyType": "HASH"}], "Projection": {"ProjectionType": "KEYS_ONLY"}},
        "byH": {"KeySchema": [{"AttributeName": "H", "KeyType": "HASH"}], "Projection": {"ProjectionType": "ALL"}},
    }, ("PK",))
    old = {"PK": {"S": "k"}, "pad": {"S": "x" * 1500}}  # 2 KB started: 2 units
    assert write_cost(old, {**old, "n": {"N": "1"}}, idx) == 2  # in no index
    assert write_cost(old, {**old, "G": {"S": "g"}}, idx) == 2 + 1  # a new keys-only entry
    assert write_cost(old, {**old, "H": {"S": "h"}}, idx) == 2 + 2  # a new entry of the whole item
    both = {**old, "G": {"S": "g"}, "H": {"S": "h"}}
    assert write_cost(both, {**both, "n": {"N": "1"}}, idx) == 2 + 2  # byH projects n; byG does not
    assert write_cost(both, {**both, "G": {"S": "g2"}}, idx) == 2 + (1 + 1) + 2  # byG's key moved
    assert write_cost(both, None, idx) == 2 + 1 + 2  # a delete removes both entries


MOVE = '''\
"""users get new keys"""
revision = "dr000003"
down_revision = "dr000002"


def to_new(item):
    if item["PK"].startswith("NEW#"):
        return None
    return {**item, "PK": "NEW#" + item["PK"][4:]}


def upgrade(op):
    op.move_items(to_new)


def downgrade(op):
    pass
'''


def test_a_dry_run_of_moves_counts_them_as_writes_with_a_call_each(local_client, ddb_local, tmp_path):
    """2,000 moves: the table counts them as writes, at 4 write units each (a transaction bills
    the put and the delete twice). The samples show the key change, not the attributes carried
    over as they were."""
    n = 2000
    table = create_table(local_client)
    put_items(local_client, table, [{"PK": f"OLD#{i:05d}", "SK": "S", "Type": "User", "N": i} for i in range(n)])
    p = project(tmp_path, local_client, ddb_local.endpoint_url, table, ("dr000003_move", MOVE))
    p.dyn("upgrade", "dr000002")

    out = p.dyn("upgrade", "head", "--dry-run").stdout
    lines = out.splitlines()
    total = next(l for l in lines if l.startswith("total")).split()
    assert total[1:5] == ["2,000", "2,000", "2,000", "0"], out  # scanned, matched, write, delete
    samples = [l.strip() for l in lines if l.strip().startswith("{PK='OLD#")]
    assert samples and all(re.fullmatch(r"\{PK='OLD#(\d+)', SK='S'\}: PK 'OLD#\1' -> 'NEW#\1'", l)
                           for l in samples), samples  # not "Type 'User' -> 'User', N 7 -> 7"

    est = the_op(p.json("upgrade", "head", "--dry-run"), "dr000003")
    assert (est["moved"], est["wcu"]) == (n, 4 * n)
    got = the_op(p.json("upgrade", "head"), "dr000003")
    assert got["moved"] == n


def test_a_move_is_estimated_at_a_call_each_and_a_backfill_at_25_writes_a_call():
    """The duration model, on the figures a dry run measured (no clock here): its Scan made 20
    calls that took 0.5 s in all (25 ms each); a move is a call of its own, 25 writes share one."""
    from dynamic.backfill.estimate import extrapolate
    from dynamic.backfill.result import BackfillResult

    measured = dict(scanned=2000, matched=2000, seconds=1.0, pages=20, page_seconds=0.5)
    kw = dict(scanned_segments=1, total_segments=1, real_segments=1, workers=1, page_size=100,
              write_mode="batch", max_wcu=None, max_rcu=None)
    scan_only = extrapolate(BackfillResult(**measured), **kw).seconds
    moves = extrapolate(BackfillResult(moved=2000, **measured), **kw).seconds
    updates = extrapolate(BackfillResult(updated=2000, **measured), **kw).seconds
    assert moves - scan_only == pytest.approx(2000 * 0.025)
    per_call = 1.0 / 21  # the dry run's second over its 20 pages and 1 segment
    assert updates - scan_only == pytest.approx(80 * per_call)
    on_4_threads = extrapolate(BackfillResult(moved=2000, **measured), **{**kw, "workers": 4, "real_segments": 8})
    assert on_4_threads.seconds < moves / 3


FAILING = '''\
"""a backfill that fails on five items"""
revision = "dr000003"
down_revision = "dr000002"


def tag(item):
    if int(item["N"]) % 10 == 0:
        raise ValueError("bad item")
    return {"Tag": "t"}


def upgrade(op):
    op.backfill(tag)


def downgrade(op):
    pass
'''


def test_a_dry_run_says_what_the_error_budget_does(local_client, ddb_local, tmp_path):
    """5 failing items: with --max-errors 2 the dry run says the budget is exceeded and where the
    real run stops (which it then does); with 10, that they would be skipped and listed."""
    table = create_table(local_client)
    put_items(local_client, table, [{"PK": f"U#{i:02d}", "SK": "S", "N": i} for i in range(50)])
    p = project(tmp_path, local_client, ddb_local.endpoint_url, table, ("dr000003_tag", FAILING))

    out = p.dyn("upgrade", "head", "--dry-run", "--max-errors", "2").stdout
    assert ("5 item(s) would fail (update/where raised, or returned something unusable): more than the "
            "--max-errors budget of 2 per step in dr000003 (5), so a real run would stop that step at its 3rd "
            "failure") in out, out
    assert "unless --max-errors" not in out

    out = p.dyn("upgrade", "head", "--dry-run", "--max-errors", "10").stdout
    assert ("5 item(s) would fail (update/where raised, or returned something unusable): within the "
            f"--max-errors budget of 10 per step, a real run would skip them, list them in "
            f"{p.root / 'dyn-errors.jsonl'} and go on") in out, out
    assert not (p.root / "dyn-errors.jsonl").exists()

    r = p.dyn("upgrade", "head", "--max-errors", "2", check=False)  # as the dry run said
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert len((p.root / "dyn-errors.jsonl").read_text().splitlines()) == 2


COPY_NAME = '''\
"""A is the name"""
revision = "dr000003"
down_revision = "dr000002"


def upgrade(op):
    op.backfill(lambda item: {"A": item["Name"]})


def downgrade(op):
    pass
'''

LOWER_A = '''\
"""B is A in lower case"""
revision = "dr000004"
down_revision = "dr000003"


def upgrade(op):
    op.backfill(lambda item: {"B": item["A"].lower()})


def downgrade(op):
    pass
'''


def test_a_later_step_is_marked_as_estimated_before_the_earlier_steps(local_client, ddb_local, tmp_path):
    """C sets A, D reads it: the dry run cannot apply C's writes, so D's figures are of the table
    as it is now. They are marked so (text and --json), and D's failures are not said to be the
    real run's; the real run succeeds."""
    n = 40
    table = create_table(local_client)
    put_items(local_client, table, [{"PK": f"U#{i:02d}", "SK": "S", "Name": f"Name{i}"} for i in range(n)])
    p = project(tmp_path, local_client, ddb_local.endpoint_url, table, ("dr000003_a", COPY_NAME),
                ("dr000004_b", LOWER_A))

    dry = p.json("upgrade", "head", "--dry-run")
    steps = {s["revision"]: s for s in dry["steps"]}
    assert steps["dr000003"]["before_earlier_steps"] is False and steps["dr000003"]["counts"]["updated"] == n
    assert steps["dr000004"]["before_earlier_steps"] is True and steps["dr000004"]["counts"]["failed"] == n
    assert not steps["dr000001"]["before_earlier_steps"]  # no data operations

    out = p.dyn("upgrade", "head", "--dry-run").stdout
    lines = out.splitlines()
    assert next(l for l in lines if l.startswith("dr000004")).split()[0] == "dr000004*", out
    assert next(l for l in lines if l.startswith("dr000003")).split()[0] == "dr000003", out
    assert ("* estimated on the table as it is now: the earlier steps of this run would write first, and a dry "
            "run cannot apply their writes") in lines
    assert ("40 item(s) would fail in dr000004 on the table as it is now; the earlier steps of this run change "
            "it first, so this is not a prediction that the real run fails") in lines
    assert "a real run stops at the first one" not in out

    run = p.json("upgrade", "head")
    assert the_op(run, "dr000004")["updated"] == n and the_op(run, "dr000004")["failed"] == 0
