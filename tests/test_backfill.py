"""The backfill engine's contract, on both beds where both can prove it (moto, DynamoDB Local).

moto accepts PartiQL statements but does not evaluate their conditions, so on moto the engine
runs its item path (``write_mode="item"``); on DynamoDB Local, its default batched path.

Fault injection, concurrent application writes and a real kill -9 are in
test_backfill_faults.py and test_backfill_crash.py.
"""
from __future__ import annotations

import io
import threading
import time
from decimal import Decimal

import pytest
from boto3.dynamodb.conditions import Attr
from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

from conftest import create_table, scan_all
from dynamic import REMOVE
from dynamic import backfill as engine
from dynamic.backfill import (
    BackfillResult,
    ItemView,
    MemoryCheckpoints,
    UpdateFailed,
    default_segments,
    default_workers,
)
from dynamic.backfill.values import av_equal as _av_equal
from dynamic.dynamo import TableInfo, describe_table
from dynamic.errors import LeaseLost, UsageError
from dynamic.progress import NullProgress, PlainProgress, RichProgress, make_progress

ser, deser = TypeSerializer(), TypeDeserializer()


# ---- helpers ---------------------------------------------------------------------------------
def write_mode(client) -> str:
    """The batched path on DynamoDB Local; the item path on moto (no PartiQL conditions)."""
    return "item" if "amazonaws.com" in client.meta.endpoint_url else "batch"


def backfill(client, *args, **kw):
    kw.setdefault("write_mode", write_mode(client))
    return engine.backfill(client, *args, **kw)


def remove_attributes(client, *args, **kw):
    kw.setdefault("write_mode", write_mode(client))
    return engine.remove_attributes(client, *args, **kw)


def delete_items(client, *args, **kw):
    kw.setdefault("write_mode", write_mode(client))
    return engine.delete_items(client, *args, **kw)


def put_items(client, table: str, items: list[dict]) -> None:
    for i in range(0, len(items), 25):
        req = {table: [{"PutRequest": {"Item": {k: ser.serialize(v) for k, v in it.items()}}}
                       for it in items[i:i + 25]]}
        while req:
            req = client.batch_write_item(RequestItems=req).get("UnprocessedItems") or None


def plain_items(client, table: str) -> list[dict]:
    return [{k: deser.deserialize(v) for k, v in raw.items()} for raw in scan_all(client, table)]


def social(n: int) -> list[dict]:
    """Posts and user profiles, plus two bookkeeping items of the `_dyn` collection."""
    items = []
    for i in range(n):
        if i % 3:
            items.append({"PK": f"USER#{i // 3}", "SK": f"POST#{i:05d}", "Type": "Post", "A": i})
        else:
            items.append({"PK": f"USER#{i // 3}", "SK": "PROFILE", "Type": "User", "A": i})
    items.append({"PK": "_dyn", "SK": "version", "Type": "Post", "heads": ["abc"]})
    items.append({"PK": "_dyn", "SK": "checkpoint#x", "Type": "Post", "pos": "y"})
    return items


NOT_META = Attr("PK").ne("_dyn")


def is_meta(raw: dict) -> bool:
    return raw["PK"].get("S") == "_dyn"


class CallCounter:
    """Counts calls of one operation a client makes (each call once, however many retries)."""

    def __init__(self, client, operation: str = "UpdateItem"):
        self.n = 0
        self._lock = threading.Lock()
        client.meta.events.register(f"before-call.dynamodb.{operation}", self)

    def __call__(self, **kw):
        with self._lock:
            self.n += 1


def gsi_update(item):
    return {"GSI1PK": item["PK"], "GSI1SK": item["SK"]}


# ---- the GSI backfill of the reference text ----------------------------------------------------
def test_gsi_backfill_updates_matching_items_only(any_client):
    name = create_table(any_client)
    put_items(any_client, name, social(300))
    seen: list[str] = []
    lock = threading.Lock()

    def update(item):
        with lock:
            seen.append(item["PK"])
        return gsi_update(item)

    r = backfill(any_client, describe_table(any_client, name), update, filter=Attr("Type").eq("Post"),
                 exclude=NOT_META, is_meta=is_meta, segments=4, workers=4, page_size=25)
    posts = [i for i in plain_items(any_client, name) if i["Type"] == "Post" and i["PK"] != "_dyn"]
    assert len(posts) == 200
    assert all(p["GSI1PK"] == p["PK"] and p["GSI1SK"] == p["SK"] for p in posts)
    others = [i for i in plain_items(any_client, name) if i["Type"] != "Post" or i["PK"] == "_dyn"]
    assert not any("GSI1PK" in i for i in others)
    assert "_dyn" not in seen and len(seen) == 200
    assert (r.matched, r.updated, r.unchanged, r.conflicts, r.deleted) == (200, 200, 0, 0, 0)
    assert r.scanned >= 200 and r.segments == 4 and r.wcu >= 100  # moto charges 0.5
    assert r.as_dict()["updated"] == 200


def test_rerun_writes_nothing_and_counts_unchanged(any_client):
    name = create_table(any_client)
    put_items(any_client, name, social(150))
    table = describe_table(any_client, name)
    backfill(any_client, table, gsi_update, filter=Attr("Type").eq("Post"), exclude=NOT_META, segments=3)
    writes = CallCounter(any_client)
    r = backfill(any_client, table, gsi_update, filter=Attr("Type").eq("Post"), exclude=NOT_META, segments=3)
    assert writes.n == 0
    assert (r.updated, r.unchanged, r.wcu) == (0, 100, 0)


def test_numbers_sets_and_maps_compare_by_value(any_client):
    """1 == 1.0 and sets are unordered: equal values are not rewritten."""
    name = create_table(any_client, sort_key=False)
    put_items(any_client, name, [{"PK": f"k{i}", "n": Decimal(1), "s": {"a", "b"}, "m": {"x": [1, "y"]}}
                                 for i in range(20)])
    writes = CallCounter(any_client)
    r = backfill(any_client, describe_table(any_client, name),
                 lambda it: {"n": Decimal("1.00"), "s": {"b", "a"}, "m": {"x": [Decimal(1), "y"]}})
    assert writes.n == 0 and r.unchanged == 20


# ---- key shapes --------------------------------------------------------------------------------
def test_partition_key_only_table_with_numeric_key(any_client):
    name = create_table(any_client, sort_key=False, pk="id", pk_type="N")
    put_items(any_client, name, [{"id": i, "A": i} for i in range(120)])
    table = describe_table(any_client, name)
    assert table.key_names == ("id",)
    r = backfill(any_client, table, lambda it: {"label": f"item-{it['id']}", "B": it["A"] * 2}, segments=4)
    items = plain_items(any_client, name)
    assert r.updated == 120 and len(items) == 120
    assert all(i["label"] == f"item-{i['id']}" and i["B"] == i["A"] * 2 for i in items)


def test_non_default_key_names(any_client):
    name = create_table(any_client, pk="tenant", sk="ts")
    put_items(any_client, name, [{"tenant": f"t{i % 7}", "ts": f"{i:04d}", "v": i} for i in range(90)])
    r = backfill(any_client, describe_table(any_client, name), lambda it: {"w": it["v"] + 1}, segments=2,
                 page_size=10)
    assert r.updated == 90
    assert all(i["w"] == i["v"] + 1 for i in plain_items(any_client, name))


def test_bookkeeping_items_never_reach_update(any_client):
    """`exclude` (server side) and `is_meta` (client side) each keep `_dyn` items away."""
    name = create_table(any_client)
    put_items(any_client, name, social(60))
    table = describe_table(any_client, name)
    for kw in ({"exclude": NOT_META}, {"is_meta": is_meta}):
        seen = []
        backfill(any_client, table, lambda it: seen.append(it["PK"]) or {"X": 1}, segments=2, **kw)
        assert seen and "_dyn" not in seen
    meta = [i for i in plain_items(any_client, name) if i["PK"] == "_dyn"]
    assert len(meta) == 2 and not any("X" in i for i in meta)


# ---- REMOVE, remove_attributes, delete_items -----------------------------------------------------
def test_remove_sentinel_removes_and_absent_is_unchanged(any_client):
    name = create_table(any_client, sort_key=False)
    put_items(any_client, name, [{"PK": f"k{i}", "old": i} if i % 2 else {"PK": f"k{i}"} for i in range(40)])
    r = backfill(any_client, describe_table(any_client, name), lambda it: {"old": REMOVE})
    assert (r.updated, r.unchanged) == (20, 20)
    assert not any("old" in i for i in plain_items(any_client, name))


def test_remove_attributes_with_filter(any_client):
    name = create_table(any_client)
    put_items(any_client, name, [dict(it, GSI1PK="g", GSI1SK="h") for it in social(90)])
    table = describe_table(any_client, name)
    r = remove_attributes(any_client, table, ["GSI1PK", "GSI1SK"], filter=Attr("Type").eq("Post"),
                          exclude=NOT_META, segments=2)
    assert r.updated == 60
    for i in plain_items(any_client, name):
        assert ("GSI1PK" in i) == (i["Type"] != "Post" or i["PK"] == "_dyn")
    with pytest.raises(UsageError, match="key attribute"):
        remove_attributes(any_client, table, ["PK"])


def test_delete_items(any_client):
    name = create_table(any_client)
    items = [{"PK": f"u{i}", "SK": f"d{i}", "Type": "Draft" if i % 2 else "Post"} for i in range(130)]
    items.append({"PK": "_dyn", "SK": "version", "Type": "Draft"})
    put_items(any_client, name, items)
    table = describe_table(any_client, name)
    dry = delete_items(any_client, table, filter=Attr("Type").eq("Draft"), exclude=NOT_META, dry_run=True)
    assert dry.deleted == 65 and len(plain_items(any_client, name)) == 131 and len(dry.samples) == 5
    cp = MemoryCheckpoints()
    r = delete_items(any_client, table, filter=Attr("Type").eq("Draft"), exclude=NOT_META, segments=3,
                     checkpoints=cp)
    left = plain_items(any_client, name)
    assert r.deleted == 65 and cp.cleared
    assert {i["Type"] for i in left if i["PK"] != "_dyn"} == {"Post"} and len(left) == 66
    with pytest.raises(UsageError):
        delete_items(any_client, table, filter=None)


class _StatementStub:
    """A client whose BatchExecuteStatement throttles every other statement of a call, twice."""

    class meta:  # noqa: N801
        class config:  # noqa: N801
            max_pool_connections = 4

    def __init__(self, n: int):
        self.items = [{"PK": {"S": f"k{i:03d}"}, "x": {"S": "1"}} for i in range(n)]
        self.deleted: list[str] = []
        self.calls: list[int] = []  # statements per call

    def scan(self, **kw):
        return {"Items": list(self.items), "Count": len(self.items), "ScannedCount": len(self.items)}

    def batch_execute_statement(self, Statements, **kw):  # noqa: N803
        self.calls.append(len(Statements))
        out = []
        for i, st in enumerate(Statements):
            assert st["Statement"].startswith('DELETE FROM "t" WHERE "PK" = ? AND "PK" IS NOT MISSING')
            if len(self.calls) <= 2 and i % 2:
                out.append({"Error": {"Code": "ProvisionedThroughputExceeded", "Message": "slow down"}})
            else:
                self.deleted.append(st["Parameters"][0]["S"])
                out.append({})
        return {"Responses": out}


def test_throttled_statements_are_sent_again_alone():
    stub = _StatementStub(30)
    table = TableInfo(name="t", pk_name="PK", pk_type="S")
    r = engine.delete_items(stub, table, filter=Attr("x").exists(), segments=1)
    assert r.deleted == 30 and sorted(stub.deleted) == sorted(i["PK"]["S"] for i in stub.items)
    # a batch of 25: 12 throttled, sent again alone (6 of those throttled again, sent again);
    # then the last 5
    assert stub.calls == [25, 12, 6, 5]


# ---- dry run -------------------------------------------------------------------------------------
def test_dry_run_writes_nothing(any_client):
    name = create_table(any_client)
    put_items(any_client, name, social(120))
    before = scan_all(any_client, name)
    cp = MemoryCheckpoints()
    r = backfill(any_client, describe_table(any_client, name), gsi_update, filter=Attr("Type").eq("Post"),
                 exclude=NOT_META, dry_run=True, checkpoints=cp)
    assert scan_all(any_client, name) == before
    # wcu: what the 80 writes would consume (small items: one unit each), none consumed
    assert r.updated == 80 and r.wcu == 80 and cp.saves == 0 and not cp.cleared
    assert 1 <= len(r.samples) <= 5
    s = r.samples[0]
    assert s["after"]["GSI1PK"] == s["key"]["PK"] and s["before"] == {}
    assert r.as_dict()["samples"][0]["key"] == s["key"]


# ---- update failing, guard, resume ---------------------------------------------------------------
def test_update_failure_stops_and_a_fixed_rerun_resumes(local_client):
    name = create_table(local_client, sort_key=False)
    n = 600
    put_items(local_client, name, [{"PK": f"k{i:04d}", "A": i} for i in range(n)])
    table = describe_table(local_client, name)
    cp = MemoryCheckpoints()
    calls = 0
    lock = threading.Lock()

    def buggy(item):
        nonlocal calls
        with lock:
            calls += 1
            if calls == n // 2:
                raise ZeroDivisionError("division by zero")
        return {"B": item["A"] * 2}

    with pytest.raises(UpdateFailed) as info:  # no periodic saves: what is kept is the final flush
        backfill(local_client, table, buggy, checkpoints=cp, segments=8, workers=4, page_size=20,
                 checkpoint_interval=3600)
    e = info.value
    assert isinstance(e.__cause__, ZeroDivisionError)
    assert "ZeroDivisionError: division by zero" in str(e) and "PK=" in str(e) and "\n" not in str(e)
    assert e.key and set(e.key) == {"PK"}
    assert cp.total == 8 and cp.positions and not cp.cleared

    rerun = 0

    def fixed(item):
        nonlocal rerun
        with lock:
            rerun += 1
        return {"B": item["A"] * 2}

    r = backfill(local_client, table, fixed, checkpoints=cp, segments=3, workers=4)
    assert r.segments == 8  # the checkpointed segmentation wins
    assert cp.cleared
    assert all(i["B"] == i["A"] * 2 for i in plain_items(local_client, name))
    assert rerun < 0.75 * n, rerun


def test_bad_return_values_fail_with_the_key(any_client):
    name = create_table(any_client, sort_key=False)
    put_items(any_client, name, [{"PK": "k1", "A": 1}])
    table = describe_table(any_client, name)
    for update, match in [
        (lambda it: {"B": 1.5}, "unstorable value for 'B'"),
        (lambda it: {"PK": "other"}, "key attribute 'PK'"),
        (lambda it: ["B"], "must return a dict"),
    ]:
        with pytest.raises(UpdateFailed, match=match) as info:
            backfill(any_client, table, update, segments=1)
        assert "PK='k1'" in str(info.value)


def test_write_rejected_by_dynamodb_names_the_item(local_client):
    name = create_table(local_client, sort_key=False)
    local_client.update_table(
        TableName=name, AttributeDefinitions=[{"AttributeName": "G", "AttributeType": "S"}],
        GlobalSecondaryIndexUpdates=[{"Create": {"IndexName": "gsi", "KeySchema": [
            {"AttributeName": "G", "KeyType": "HASH"}], "Projection": {"ProjectionType": "KEYS_ONLY"}}}])
    put_items(local_client, name, [{"PK": "k1", "A": 1}])
    table = describe_table(local_client, name)
    # an empty string cannot key an index: only DynamoDB says so
    with pytest.raises(UpdateFailed, match=r"DynamoDB rejected the update of item \{PK='k1'\}"):
        backfill(local_client, table, lambda it: {"G": ""}, segments=1)
    # a value of the wrong type for the index key: dyn says so before writing, naming the index
    with pytest.raises(UpdateFailed, match=r"update\(\) set 'G' to a number \(N\) on item \{PK='k1'\}, "
                                           r"but index gsi keys on it as a string \(S\)"):
        backfill(local_client, table, lambda it: {"G": it["A"]}, segments=1)
    with pytest.raises(UpdateFailed, match=r"update\(\) returned an empty set for 'T' on item"):
        backfill(local_client, table, lambda it: {"T": set()}, segments=1)


def test_lost_lease_stops_writes(local_client):
    name = create_table(local_client, sort_key=False)
    n = 800
    put_items(local_client, name, [{"PK": f"k{i:04d}", "A": i} for i in range(n)])
    lost = threading.Event()
    guards = 0
    lock = threading.Lock()
    writes_after_loss = 0

    def guard():
        nonlocal guards
        with lock:
            guards += 1
            if guards > 8:
                lost.set()
        if lost.is_set():
            raise LeaseLost("lease taken over by another runner")

    def count_late_write(**kw):
        nonlocal writes_after_loss
        if lost.is_set():
            with lock:
                writes_after_loss += 1

    local_client.meta.events.register("before-call.dynamodb.BatchExecuteStatement", count_late_write)
    cp = MemoryCheckpoints()
    with pytest.raises(LeaseLost):
        backfill(local_client, describe_table(local_client, name), lambda it: {"B": 1}, guard=guard,
                 segments=8, workers=4, checkpoints=cp, checkpoint_interval=0.01)
    migrated = sum(1 for i in plain_items(local_client, name) if "B" in i)
    # 8 calls of at most 25 statements passed the guard, and the calls already past it then
    assert migrated <= (8 + 4) * 25 < n and writes_after_loss <= 4
    assert not cp.cleared


def test_max_wcu_engages_the_limiter(local_client):
    name = create_table(local_client, sort_key=False)
    put_items(local_client, name, [{"PK": f"k{i:04d}", "A": i} for i in range(360)])
    t = time.monotonic()
    r = backfill(local_client, describe_table(local_client, name), lambda it: {"B": 1}, max_wcu=150,
                 segments=4, workers=4)
    elapsed = time.monotonic() - t
    assert r.updated == 360 and r.wcu >= 360
    assert elapsed >= 1.5  # 360 WCU at 150/s cannot take less than ~2.4 s
    assert r.wcu / elapsed <= 150 * 1.6


def test_resume_skips_segments_marked_done(any_client):
    name = create_table(any_client, sort_key=False)
    put_items(any_client, name, [{"PK": f"k{i}"} for i in range(30)])
    cp = MemoryCheckpoints()
    cp.save({s: "done" for s in range(3)}, 3)
    seen = []
    r = backfill(any_client, describe_table(any_client, name), lambda it: seen.append(1), checkpoints=cp)
    assert (seen, r.scanned, r.segments, cp.cleared) == ([], 0, 3, True)


# ---- pieces ----------------------------------------------------------------------------------------
def test_item_view_records_reads():
    raw = {"PK": {"S": "a"}, "A": {"N": "2"}, "L": {"L": [{"S": "x"}]}}
    v = ItemView(raw)
    assert v["A"] == Decimal(2) and v.get("missing") is None and "other" not in v
    assert v.read == {"A", "missing", "other"} and not v.read_all
    with pytest.raises(KeyError):
        v["nope"]
    assert "nope" in v.read
    assert dict(v) == {"PK": "a", "A": Decimal(2), "L": ["x"]} and v.read_all


def test_attribute_value_equality():
    s = ser.serialize
    assert _av_equal(s(Decimal("1.0")), s(1))
    assert not _av_equal(s(True), s(1))
    assert _av_equal(s({"a", "b"}), {"SS": ["b", "a"]})
    assert _av_equal(s({"m": [1, {"x": "y"}]}), s({"m": [Decimal("1.00"), {"x": "y"}]}))
    assert not _av_equal(s([1, 2]), s([2, 1]))
    assert _av_equal(s(b"\x00"), {"B": b"\x00"})


def test_default_sizing():
    t = TableInfo(name="t", pk_name="PK", pk_type="S")
    assert default_segments(t, 16) == 64  # ItemCount unknown: keep every worker busy
    assert default_segments(TableInfo(name="t", pk_name="PK", pk_type="S", item_count=300), 16) == 2
    assert default_segments(TableInfo(name="t", pk_name="PK", pk_type="S", item_count=60), 16) == 1
    big = TableInfo(name="t", pk_name="PK", pk_type="S", item_count=10**10, size_bytes=500 * 2**30)
    assert default_segments(big, 16) == 250  # one per 2 GB

    class C:
        class meta:  # noqa: N801
            class config:  # noqa: N801
                max_pool_connections = 10

    assert default_workers(C()) == 10


def test_result_as_dict_is_json_ready():
    r = BackfillResult(updated=3, rcu=1.234, samples=[{"key": {"PK": "a"}, "before": {"n": Decimal(1)},
                                                       "after": {"n": Decimal("1.5"), "x": REMOVE}}])
    d = r.as_dict()
    assert d["samples"][0]["after"] == {"n": 1.5, "x": "<removed>"} and d["rcu"] == 1.2
    import json
    json.dumps(d)


class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_progress_reporters():
    out = io.StringIO()
    p = PlainProgress("backfill", 100, stream=out, interval=0)
    p.advance(scanned=50, updated=10)
    p.close()
    lines = out.getvalue().splitlines()
    assert "scanned 50/~100 (50%)" in lines[0] and "updated 10" in lines[0]
    assert lines[-1].startswith("backfill: scanned 50, updated 10") and len(lines) == 2
    assert isinstance(make_progress("x", 10, stream=io.StringIO()), PlainProgress)
    assert isinstance(make_progress("x", 10, stream=_Tty(), json_mode=True), PlainProgress)
    rich = make_progress("x", 10, stream=_Tty())
    assert isinstance(rich, RichProgress)
    threads = [threading.Thread(target=lambda: [rich.advance(scanned=1, updated=1) for _ in range(50)])
               for _ in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    rich.close()
    assert rich.counts == {"scanned": 200, "matched": 0, "updated": 200}
    NullProgress().advance(scanned=1)


def test_engine_reports_progress(any_client):
    name = create_table(any_client, sort_key=False)
    put_items(any_client, name, [{"PK": f"k{i}"} for i in range(50)])
    out = io.StringIO()
    p = PlainProgress("bf", 50, stream=out, interval=3600)
    backfill(any_client, describe_table(any_client, name), lambda it: {"x": 1}, progress=p, segments=2)
    assert p.counts == {"scanned": 50, "matched": 50, "updated": 50}
    assert out.getvalue().startswith("bf: scanned 50, updated 50")


def test_a_resumed_operation_shows_the_whole_table_and_its_own_pace(any_client):
    """On resume the bar went from zero of the whole table ("scanned 8,753/~20,003 (44%)" with
    11,000 left); it goes on from what the earlier runs did, its rate being this run's."""
    out = io.StringIO()
    p = PlainProgress("bf", 100, stream=out, interval=0)
    p.resume(scanned=60, updated=40)
    p.advance(scanned=20, updated=5)
    assert "scanned 80/~100 (80%)" in out.getvalue() and "updated 45" in out.getvalue()

    class Resumable(MemoryCheckpoints):  # as the table's checkpoints: the earlier runs' counts
        def prior_totals(self):
            return {"scanned": 30, "updated": 30}

    name = create_table(any_client, sort_key=False)
    put_items(any_client, name, [{"PK": f"k{i}"} for i in range(50)])
    cp = Resumable()
    cp.save({0: "done"}, 2)  # segment 0 of 2 was walked by an earlier run
    seen = []

    class Recording(PlainProgress):
        def resume(self, *, scanned=0, updated=0):
            seen.append((scanned, updated))
            super().resume(scanned=scanned, updated=updated)

    p = Recording("bf", 50, stream=io.StringIO(), interval=3600)
    backfill(any_client, describe_table(any_client, name), lambda it: {"x": 1}, progress=p, checkpoints=cp)
    assert seen == [(30, 30)]
    assert p.counts["scanned"] < 50  # this run's own items: segment 1 only


def test_token_bucket_holds_the_rate_across_threads():
    from dynamic.backfill import TokenBucket

    bucket, stop = TokenBucket(1000), threading.Event()

    def spend():
        for _ in range(10):
            bucket.wait(stop)
            bucket.charge(20)

    t = time.monotonic()
    threads = [threading.Thread(target=spend) for _ in range(4)]
    [th.start() for th in threads]
    [th.join() for th in threads]
    assert time.monotonic() - t >= 0.5  # 800 units at 1000/s from 100 in the bucket: >= 0.62 s
    with pytest.raises(UsageError):
        TokenBucket(0)
