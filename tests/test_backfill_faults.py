"""Guarantees 3 and 4 on DynamoDB Local: faults on the wire, and the application writing
while the backfill runs."""
from __future__ import annotations

import random
import threading
import time

import boto3
import pytest
from botocore.config import Config

from conftest import create_table
from dynamic.backfill import MemoryCheckpoints, backfill
from dynamic.dynamo import describe_table
from dynamic.testing.proxy import FaultProxy
from test_backfill import plain_items, put_items


def proxied_client(proxy: FaultProxy, attempts: int):
    """``attempts``: botocore's total attempts per call (1: no botocore retries at all)."""
    return boto3.client(
        "dynamodb", endpoint_url=proxy.url, region_name="us-east-1",
        config=Config(max_pool_connections=16, retries={"mode": "standard", "total_max_attempts": attempts},
                      connect_timeout=2, read_timeout=10),
    )


@pytest.mark.parametrize("attempts", [1, 2], ids=["engine-retries-only", "botocore-retries-first"])
def test_faults_lose_nothing_and_apply_each_write_once(ddb_local, local_client, attempts):
    """Throttles, 500s and lost responses on UpdateItem and Scan: every item is visited, and a
    deliberately non-idempotent update (a counter) ends at exactly 1 everywhere."""
    name = create_table(local_client)
    n = 300
    put_items(local_client, name, [{"PK": f"U#{i}", "SK": f"P#{i:04d}", "A": i} for i in range(n)])
    table = describe_table(local_client, name)
    with FaultProxy(ddb_local.endpoint_url, seed=attempts) as proxy:
        proxy.inject("BatchExecuteStatement", throttle=0.1, error500=0.05, lost=0.15)
        proxy.inject("Scan", throttle=0.15, error500=0.15, lost=0.15)
        client = proxied_client(proxy, attempts)
        cp = MemoryCheckpoints()
        r = backfill(client, table, lambda it: {"n": it.get("n", 0) + 1}, segments=12, workers=12,
                     page_size=8, checkpoints=cp)
        counts = {op: dict(c) for op, c in proxy.counts.items()}
    items = plain_items(local_client, name)
    assert len(items) == n
    assert sorted({i["n"] for i in items}) == [1]
    assert (r.matched, r.updated, r.conflicts, r.gone) == (n, n, 0, 0)
    assert cp.cleared
    for op in ("BatchExecuteStatement", "Scan"):
        for fault in ("throttle", "error500", "lost"):
            assert counts[op][fault] > 0, (op, fault, counts)


def test_app_writes_during_backfill(ddb_local, local_client):
    """An application deleting and rewriting items while the backfill runs: no deleted item
    comes back, and no item ends with B computed from a stale A."""
    name = create_table(local_client, sort_key=False)
    n = 800
    put_items(local_client, name, [{"PK": f"k{i:04d}", "A": i} for i in range(n)])
    table = describe_table(local_client, name)
    app = boto3.client("dynamodb", endpoint_url=ddb_local.endpoint_url, region_name="us-east-1")
    deleted: set[str] = set()
    lock = threading.Lock()

    def app_rewrite(pk: str, a: int) -> bool:  # the new application code writes A and B together
        try:
            app.update_item(TableName=name, Key={"PK": {"S": pk}}, UpdateExpression="SET A = :a, B = :b",
                            ConditionExpression="attribute_exists(PK)",
                            ExpressionAttributeValues={":a": {"N": str(a)}, ":b": {"N": str(2 * a)}})
            return True
        except app.exceptions.ConditionalCheckFailedException:
            return False  # the app deleted it

    def app_delete(pk: str) -> None:
        with lock:
            deleted.add(pk)
        app.delete_item(TableName=name, Key={"PK": {"S": pk}})

    # deterministic races: for these items the app writes between the backfill's read and write
    rewrite_between = {f"k{i:04d}" for i in range(0, n, 40)}
    delete_between = {f"k{i:04d}" for i in range(7, n, 40)}
    interfered: set[str] = set()
    rewritten: set[str] = set()  # by the app, between the backfill's read and its write
    removed: set[str] = set()

    def update(item):
        a = item["A"]
        pk = item["PK"]
        with lock:
            first = pk not in interfered
            interfered.add(pk)
        if first and pk in rewrite_between:
            if app_rewrite(pk, int(a) + 1000):
                rewritten.add(pk)
        elif first and pk in delete_between:
            app_delete(pk)
            removed.add(pk)
        return {"B": a * 2}

    stop = threading.Event()

    def background():  # and random traffic all along
        rng = random.Random(5)
        while not stop.is_set():
            pk = f"k{rng.randrange(n):04d}"
            if rng.random() < 0.3:
                app_delete(pk)
            else:
                app_rewrite(pk, rng.randrange(10**6))
            time.sleep(0.002)

    bg = threading.Thread(target=background)
    with FaultProxy(ddb_local.endpoint_url, latency=0.001) as proxy:
        client = proxied_client(proxy, 2)
        bg.start()
        try:
            r = backfill(client, table, update, segments=8, workers=8, page_size=20)
        finally:
            stop.set()
            bg.join()
    items = {i["PK"]: i for i in plain_items(local_client, name)}
    assert not deleted & set(items), "a deleted item came back"
    stale = {pk: (i["A"], i.get("B")) for pk, i in items.items() if i.get("B") != i["A"] * 2}
    assert not stale
    assert rewritten and removed
    assert r.conflicts >= len(rewritten) and r.gone >= len(removed)
    assert r.updated + r.unchanged + r.gone + r.unmatched == r.matched


def test_proxy_latency_counts_and_lifetime(ddb_local, local_client):
    name = create_table(local_client, sort_key=False)
    with FaultProxy(ddb_local.endpoint_url, latency=0.03, seed=1) as proxy:
        client = proxied_client(proxy, 1)
        t = time.monotonic()
        client.describe_table(TableName=name)
        assert time.monotonic() - t >= 0.03
        proxy.inject("GetItem", throttle=1.0)
        with pytest.raises(client.exceptions.ProvisionedThroughputExceededException):
            client.get_item(TableName=name, Key={"PK": {"S": "x"}})
        proxy.inject("GetItem", error500=1.0)
        with pytest.raises(Exception, match="InternalServerError"):
            client.get_item(TableName=name, Key={"PK": {"S": "x"}})
        proxy.inject("PutItem", lost=1.0)
        with pytest.raises(Exception):
            client.put_item(TableName=name, Item={"PK": {"S": "landed"}})
        proxy.clear()
        assert client.get_item(TableName=name, Key={"PK": {"S": "landed"}})["Item"]  # it applied
        assert proxy.counts["GetItem"] == {"requests": 3, "throttle": 1, "error500": 1, "lost": 0, "conflict": 0}
        assert proxy.injected("lost") == 1 and proxy.injected() == 3
    short = FaultProxy(ddb_local.endpoint_url, lifetime=0.2).start()
    time.sleep(0.6)
    assert short._thread is None  # stopped by itself
