"""Review findings: each test fails on the code as reviewed and names the bug it proves."""
from __future__ import annotations

import contextlib

import pytest
from boto3.dynamodb.conditions import Attr

from conftest import create_table
from dynamic.backfill import move_items
from dynamic.backfill.failures import ErrorBudget
from dynamic.dynamo import describe_table
from test_backfill import plain_items, put_items
from test_rename_move import things, to_new

pytestmark = pytest.mark.local


def _index_g(client, name: str) -> None:
    client.update_table(TableName=name, AttributeDefinitions=[{"AttributeName": "G", "AttributeType": "S"}],
                        GlobalSecondaryIndexUpdates=[{"Create": {
                            "IndexName": "ByG", "KeySchema": [{"AttributeName": "G", "KeyType": "HASH"}],
                            "Projection": {"ProjectionType": "KEYS_ONLY"}}}])


def test_a_move_dynamodb_rejects_counts_against_max_errors(local_client):
    """max_errors covers "DynamoDB rejects the write of that item" (failures.py), and it does
    for backfill/delete/rename (writes.WritePath._failed). A move's rejected transaction
    instead raises UpdateFailed straight out of MoveWrites.apply, past the budget: one bad
    item stops the whole move, and every resume stops at it again."""
    name = create_table(local_client)
    _index_g(local_client, name)
    put_items(local_client, name, things(30))

    def transform(it):
        if it["PK"].startswith("GROUP#"):
            return None
        new = to_new(it)
        if it["A"] == 7:
            new["G"] = 5  # ByG keys G as a string: DynamoDB refuses this one transaction
        return new

    budget = ErrorBudget(10)
    r = move_items(local_client, describe_table(local_client, name), transform, segments=2, errors=budget)
    assert (r.moved, r.failed) == (29, 1)
    assert budget.count == 1
    left = [i for i in plain_items(local_client, name) if i["PK"].startswith("OLD#")]
    assert [i["A"] for i in left] == [7]


def test_rename_through_the_runner_counts_only_items_that_have_the_old_attribute(local_client):
    """rename_attribute narrows the scan to items that have ``old`` by adding
    ``Attr(old).exists()`` to ``exclude``; but with ``is_meta`` (how the runner always calls it)
    Job.scan_kwargs sends ``filter OR NOT exclude``, so the narrowing is inverted into the OR:
    every item without ``old`` comes back -- even ones the filter does not match -- and is
    counted ``matched`` (+ ``unchanged``). The result says 30 users matched; 10 did."""
    from dynamic.store import MetaLayout

    name = create_table(local_client)
    table = describe_table(local_client, name)
    layout = MetaLayout(table)
    items = [{"PK": f"U#{i:02d}", "SK": "P", "Type": "User", **({"phone": "1"} if i < 10 else {})}
             for i in range(30)]
    items += [{"PK": f"P#{i:02d}", "SK": "P", "Type": "Post"} for i in range(20)]  # no phone, not users
    put_items(local_client, name, items)
    from dynamic.backfill import rename_attribute
    r = rename_attribute(local_client, table, "phone", "phoneNumber", filter=Attr("Type").eq("User"),
                         exclude=layout.exclude_condition(), is_meta=layout.is_meta)
    assert r.updated == 10
    assert (r.matched, r.unchanged) == (10, 0)



# ---- Dask: a slice that raises is run again by Dask ------------------------------------------------
_FLAKY = {"calls": 0}


class _FlakyClient:
    """The engine's client, whose second BatchExecuteStatement fails once with an error the
    engine does not retry (an access-denied blip, an expired token...)."""

    def __init__(self, real):
        self._real = real

    def __getattr__(self, name):
        return getattr(self._real, name)

    def batch_execute_statement(self, **kw):
        from botocore.exceptions import ClientError

        _FLAKY["calls"] += 1
        if _FLAKY["calls"] == 2:
            raise ClientError({"Error": {"Code": "AccessDeniedException", "Message": "blip"},
                               "ResponseMetadata": {"HTTPStatusCode": 400}}, "BatchExecuteStatement")
        return self._real.batch_execute_statement(**kw)


class _FlakyFactory:
    def __init__(self, spec):
        self.spec = spec

    def __call__(self):
        return _FlakyClient(self.spec())


def test_a_failed_dask_slice_is_not_run_again_over_what_it_wrote(local_client):
    """cluster.DaskExecutor submits each slice with ``retries=3``: a slice that *raises* (any
    error the engine does not retry itself -- AwsError after max_retry_seconds of throttling,
    "changed 25 times", a refused statement, an access-denied blip) is run again by Dask from
    the same start position, over the items its failed attempt already wrote. Within one run
    ``update`` is applied again to them (a counter counts twice) and the run says it succeeded
    (or, for a deterministic failure, repeats it 4 times: 4 x 600 s of throttling)."""
    distributed = pytest.importorskip("distributed")
    from dynamic.backfill import backfill
    from dynamic.backfill.cluster import DaskExecutor
    from dynamic.dynamo import ClientSpec

    name = create_table(local_client)
    put_items(local_client, name, [{"PK": f"k{i:03d}", "SK": "x", "n": 0} for i in range(60)])
    table = describe_table(local_client, name)
    _FLAKY["calls"] = 0
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None,
                                  silence_logs=50) as cluster:
        executor = DaskExecutor(cluster.scheduler_address, _FlakyFactory(ClientSpec.of(local_client)), None,
                                slice_seconds=60)
        try:
            r = backfill(local_client, table, lambda item: {"n": item["n"] + 1}, segments=1, page_size=10,
                         executor=executor)
        except Exception as e:  # noqa: BLE001 - failing on the blip is fine; writing twice is not
            r = e
    counts = [int(i["n"]) for i in plain_items(local_client, name)]
    twice = sum(1 for n in counts if n > 1)
    assert not twice, f"{twice} items were updated twice in one run, which returned {r!r}"


def test_dask_slices_that_end_mid_page_count_each_item_once(local_client):
    """walk.Worker.run_segment counts a page's ``scanned``/``matched`` before ``handle`` decides
    its items; handle moves the position mid-page after each batch of 25 and reports, and a
    Dask slice whose time is up stops right there (cluster._run_slice's report raises). The
    next slice starts after that item and reads the rest of the page again, counting it
    again: ``matched`` exceeds the items (and updated + unchanged + ... no longer add up to it)."""
    distributed = pytest.importorskip("distributed")
    import time

    from dynamic.backfill import backfill
    from dynamic.backfill.cluster import DaskExecutor
    from dynamic.dynamo import ClientSpec

    n = 300
    name = create_table(local_client)
    put_items(local_client, name, [{"PK": f"k{i:03d}", "SK": "x"} for i in range(n)])
    table = describe_table(local_client, name)

    def update(item):
        time.sleep(0.004)  # a batch of 25 takes ~0.1 s: slices end mid-page
        return {"done": True}

    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None,
                                  silence_logs=50) as cluster:
        executor = DaskExecutor(cluster.scheduler_address, ClientSpec.of(local_client), None, slice_seconds=0.1)
        r = backfill(local_client, table, update, segments=1, page_size=100, executor=executor)
    assert r.updated == n
    assert (r.scanned, r.matched) == (n, n)


# ---- max_errors with worker processes ----------------------------------------------------------------
@pytest.mark.parametrize("processes", [1, 2, "dask"])
def test_the_item_past_the_error_budget_is_met_again_by_the_resumed_run(local_client, processes):
    """The item that breaks ``max_errors`` stops the run and is not recorded as skipped (the sink
    never sees it): the run's checkpoints must stay before it, so the resumed run (revision
    fixed) migrates it. With threads the raising ``record`` keeps the position where it was.
    A worker process's ``_SentFailures.record`` cannot raise: the worker counts the item
    ``failed``, walks on and reports positions past it, and the parent -- which only learns
    the budget is spent when it reads the "failed" message (processes._read) -- marks and
    saves those positions. The resumed run never meets that item again: it is neither
    migrated nor in the errors file. (Dask: cluster.DaskExecutor._apply reports the slice's
    position before recording its failures: the same.)"""
    from dynamic.backfill import MemoryCheckpoints, UpdateFailed, backfill

    name = create_table(local_client)
    put_items(local_client, name, [{"PK": f"k{i:03d}", "SK": "x"} for i in range(400)])
    table = describe_table(local_client, name)
    bad = {f"k{i:03d}" for i in range(100, 140)}

    def broken(item):
        if item["PK"] in bad:
            raise ValueError("bug")
        return {"v": 1}

    skipped: list = []
    budget = ErrorBudget(1, sink=lambda key, error, op: skipped.append(key["PK"]["S"]))
    cp = MemoryCheckpoints()
    with contextlib.ExitStack() as stack:
        kw: dict = {"processes": processes}
        if processes == "dask":
            distributed = pytest.importorskip("distributed")
            from dynamic.backfill.cluster import DaskExecutor
            from dynamic.dynamo import ClientSpec

            cluster = stack.enter_context(distributed.LocalCluster(
                n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None, silence_logs=50))
            kw = {"executor": DaskExecutor(cluster.scheduler_address, ClientSpec.of(local_client), None,
                                           slice_seconds=0.05)}
        with pytest.raises(UpdateFailed):
            backfill(local_client, table, broken, segments=2, workers=1, errors=budget, checkpoints=cp,
                     checkpoint_interval=0.05, **kw)
        assert len(skipped) == 1 and not cp.cleared
        backfill(local_client, table, lambda item: {"v": 1}, workers=1, checkpoints=cp, **kw)
    missed = sorted(i["PK"] for i in plain_items(local_client, name) if "v" not in i and i["PK"] not in skipped)
    assert not missed, f"never migrated and not in the errors file: {missed[:5]} ({len(missed)})"


# ---- a compound filter in UpdateItem / DeleteItem / a move's transaction -----------------------------
def test_a_compound_filter_works_on_the_item_path():
    """statements.Statements._expression appends the filter as ``f"({expr})"``; boto3's builder
    already parenthesises an And/Or/Not (``(#f0 = :f0 AND attribute_exists(#f1))``), so the
    ConditionExpression gets ``((...))`` and DynamoDB refuses it ("The expression has redundant
    parentheses"). Every write of the item path with such a filter fails: write_mode="item",
    the batch path's fallbacks (a statement too long, a per-statement ValidationError), and
    every move_items (its transaction's delete is built by item_request)."""
    from dynamic.backfill.statements import Statements
    from dynamic.backfill.plan import Change

    table = type("T", (), {"name": "t", "key_names": ("PK",)})()
    st = Statements(table, Attr("Type").eq("User") & Attr("x").exists())
    ch = Change({"PK": {"S": "a"}}, {"PK": {"S": "a"}}, {"y": {"S": "1"}}, [], (), (), True)
    cond = st.item_request(ch)["ConditionExpression"]
    assert "((" not in cond, cond


@pytest.mark.parametrize("mode", ["item", "batch"])
def test_backfill_and_move_with_a_compound_filter(local_client, mode):
    from dynamic.backfill import backfill

    name = create_table(local_client)
    put_items(local_client, name, [{"PK": f"OLD#{i:04d}", "SK": "THING", "Type": "Thing", "A": i, "Tags": {"x"}}
                                   for i in range(20)])
    table = describe_table(local_client, name)
    both = Attr("Type").eq("Thing") & Attr("A").gte(0)
    r = backfill(local_client, table, lambda item: {"B": item["A"] * 2}, filter=both, write_mode=mode)
    assert (r.updated, r.failed) == (20, 0)
    r = move_items(local_client, table, to_new, filter=both, write_mode=mode)
    assert r.moved == 20
