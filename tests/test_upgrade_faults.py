"""Guarantees 2, 3 and 4 through what users run: `dyn upgrade head` as its own process, with
its own clients, its lock and its checkpoints in the table, on DynamoDB Local behind a proxy
that throttles, fails and drops the responses of every kind of call dyn makes."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import create_table, scan_all
from dynamic.testing.proxy import FaultProxy
from test_backfill import put_items

pytestmark = pytest.mark.local

COUNTER = '''\
"""count every Thing once"""
from boto3.dynamodb.conditions import Attr

revision = "f1000001"
down_revision = None


def upgrade(op):
    # not idempotent on purpose: an update applied twice within the run would show as n == 2
    op.backfill(lambda item: {"n": item.get("n", 0) + 1}, filter=Attr("Type").eq("Thing"))


def downgrade(op):
    op.remove_attributes(["n"], filter=Attr("Type").eq("Thing"))
'''

PRUNE = '''\
"""drop the odd drafts"""
from boto3.dynamodb.conditions import Attr

revision = "f1000002"
down_revision = "f1000001"


def upgrade(op):
    op.delete_items(filter=Attr("Type").eq("Draft"), where=lambda item: int(item["A"]) % 2 == 1)


def downgrade(op):
    pass
'''

DOUBLE = '''\
"""B = 2A, idempotent"""
from boto3.dynamodb.conditions import Attr

revision = "f2000001"
down_revision = None


def upgrade(op):
    op.backfill(lambda item: {"B": item["A"] * 2}, filter=Attr("Type").eq("Thing"))


def downgrade(op):
    op.remove_attributes(["B"])
'''


def project(root: Path, table: str, *revisions: tuple[str, str], **config) -> Path:
    (root / "migrations" / "versions").mkdir(parents=True)
    for name, source in revisions:
        (root / "migrations" / "versions" / f"{name}.py").write_text(source)
    lines = [f'table = "{table}"', 'script_location = "migrations"']
    lines += [f"{k} = {json.dumps(v)}" for k, v in config.items()]
    (root / "dyn.toml").write_text("[dyn]\n" + "\n".join(lines) + "\n")
    return root


def dyn(root: Path, endpoint: str, *args: str, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "AWS_ENDPOINT_URL_DYNAMODB": endpoint}
    return subprocess.run([sys.executable, "-m", "dynamic.cli", *args], cwd=root, env=env,
                          capture_output=True, text=True, timeout=kw.pop("timeout", 300), **kw)


def kill_when(proc: subprocess.Popen, done, half: int, timeout: float = 120) -> None:
    """SIGKILL ``proc`` once ``done()`` reaches ``half``, then let its last request land."""
    try:
        deadline = time.monotonic() + timeout
        while done() < half:
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "no progress"
            time.sleep(0.1)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        time.sleep(0.5)  # a request the victim sent may still be applying on the server
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def things(client, table: str) -> list[dict]:
    return [i for i in scan_all(client, table) if i.get("Type", {}).get("S") == "Thing"]


@pytest.mark.parametrize("write_mode", ["batch", "item"])
def test_upgrade_head_through_faults_on_every_call(ddb_local, local_client, tmp_path, write_mode):
    """5% throttles, 2% HTTP 500s and 2% lost responses on every call (more on dyn's own
    bookkeeping: the lock, the checkpoints, the step records): the run ends with exit 0, every
    item counted exactly once by a non-idempotent update, exactly the right items deleted, the
    steps recorded, the lock released."""
    table = create_table(local_client)
    n = 600
    put_items(local_client, table, [{"PK": f"U#{i}", "SK": f"T#{i:04d}", "Type": "Thing"} for i in range(n)]
              + [{"PK": f"U#{i}", "SK": f"D#{i:04d}", "Type": "Draft", "A": i} for i in range(100)])
    root = project(tmp_path, table, ("f1000001_count", COUNTER), ("f1000002_prune", PRUNE),
                   lock_lease_seconds=6, checkpoint_interval=0.05, write_mode=write_mode, segments=12,
                   page_size=20)
    with FaultProxy(ddb_local.endpoint_url, seed=11) as proxy:
        proxy.inject("*", throttle=0.05, error500=0.02, lost=0.02)
        for op in ("UpdateItem", "GetItem", "PutItem"):
            proxy.inject(op, throttle=0.1, error500=0.05, lost=0.1)
        # an application's transaction holding an item: a plain write is refused for the moment
        for op in ("UpdateItem", "DeleteItem"):
            proxy.inject(op, throttle=0.1, error500=0.05, lost=0.1, conflict=0.05)
        # a transaction whose response is lost is retried with the same ClientRequestToken
        proxy.inject("TransactWriteItems", throttle=0.1, error500=0.1, lost=0.25)
        r = dyn(root, proxy.url, "upgrade", "head", "--json")
        stats = proxy.stats()
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert [s["revision"] for s in out["steps"]] == ["f1000001", "f1000002"]
    assert sorted({int(i["n"]["N"]) for i in things(local_client, table)}) == [1]
    assert len(things(local_client, table)) == n
    drafts = sorted(int(i["A"]["N"]) for i in scan_all(local_client, table) if i.get("Type") == {"S": "Draft"})
    assert drafts == list(range(0, 100, 2))
    counts = out["steps"][0]["counts"]
    assert (counts["matched"], counts["updated"], counts["conflicts"], counts["gone"]) == (n, n, 0, 0)
    assert out["steps"][1]["counts"]["deleted"] == 50
    current = json.loads(dyn(root, ddb_local.endpoint_url, "current", "--json").stdout)
    assert current["heads"][0]["revision"] == "f1000002" and current["dirty"] is None
    assert current["lock"] is None
    write = "BatchExecuteStatement" if write_mode == "batch" else "UpdateItem"
    ops = stats["operations"]
    for op in ("Scan", write, "TransactWriteItems", "UpdateItem", "GetItem"):
        assert sum(ops[op][f] for f in ("throttle", "error500", "lost")) > 0, (op, ops[op])
    if write_mode == "item":
        assert ops["UpdateItem"]["conflict"] > 0 and ops["DeleteItem"]["conflict"] > 0, ops
    assert ops["TransactWriteItems"]["lost"] > 0, ops["TransactWriteItems"]
    assert stats["transactions"]["checkpoint"]["calls"] >= 4  # flushes did happen under faults


def test_kill_9_mid_backfill_then_upgrade_resumes_from_the_table(ddb_local, local_client, tmp_path):
    """`dyn upgrade head` killed halfway: the next `dyn upgrade head` takes the lock over,
    resumes from the checkpoints in the table, and re-reads only a small window."""
    table = create_table(local_client, sort_key=False)
    n = 3000
    put_items(local_client, table, [{"PK": f"k{i:05d}", "Type": "Thing", "A": i} for i in range(n)])
    interval, max_wcu, workers = 0.25, 400, 4
    root = project(tmp_path, table, ("f2000001_double", DOUBLE), lock_lease_seconds=2,
                   checkpoint_interval=interval, max_wcu=max_wcu, workers=workers)
    env = {**os.environ, "AWS_ENDPOINT_URL_DYNAMODB": ddb_local.endpoint_url}
    victim = subprocess.Popen([sys.executable, "-m", "dynamic.cli", "upgrade", "head"], cwd=root, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def migrated() -> int:
        return sum(1 for i in things(local_client, table) if "B" in i)

    kill_when(victim, migrated, n // 2)
    at_kill = migrated()
    assert at_kill < n
    r = dyn(root, ddb_local.endpoint_url, "upgrade", "head", "--json")
    assert r.returncode == 0, r.stderr
    step = json.loads(r.stdout)["steps"][0]
    assert step["resumed"]
    items = things(local_client, table)
    assert len(items) == n and all(int(i["B"]["N"]) == 2 * int(i["A"]["N"]) for i in items)
    counts = step["counts"]
    assert counts["updated"] == n - at_kill  # exactly what was left
    # what it read again: written since the last flush (one interval at max_wcu, twice for a
    # burst) plus one batch of 25 per worker -- not a share of the table
    assert counts["unchanged"] <= 2 * interval * max_wcu + workers * 25, counts
    assert counts["matched"] < 0.6 * n, counts
    # the history record counts both runs: the killed run's part (kept with its checkpoints)
    # and this one; only what the killed run wrote after its last checkpoint is counted as
    # unchanged (read again) instead of updated
    history = json.loads(dyn(root, ddb_local.endpoint_url, "history", "--applied", "--json").stdout)[0]
    total = history["counts"]
    assert history["resumed"] and counts["updated"] < total["updated"] <= n
    assert total["updated"] >= n - (2 * interval * max_wcu + workers * 25), (total, counts)
    # no rate made of both runs' items over this run's seconds (the killed run's time is unknown)
    text = dyn(root, ddb_local.endpoint_url, "history", "--applied").stdout
    assert "f2000001" in text and "items/s" not in text, text


def test_a_small_table_gets_one_segment_and_one_checkpoint_write(ddb_local, local_client, tmp_path):
    """60 items: one Scan segment, and the bookkeeping of the data operation is one flush and
    one clear, whatever the defaults would give a large table."""
    table = create_table(local_client)
    put_items(local_client, table, [{"PK": f"U#{i}", "SK": "T", "Type": "Thing", "A": i} for i in range(60)])
    root = project(tmp_path, table, ("f2000001_double", DOUBLE))
    with FaultProxy(ddb_local.endpoint_url) as proxy:
        r = dyn(root, proxy.url, "upgrade", "head", "--json")
        stats = proxy.stats()
    assert r.returncode == 0, r.stderr
    op = json.loads(r.stdout)["steps"][0]["ops"][0]
    assert op["counts"]["segments"] == 1 and op["counts"]["updated"] == 60
    assert stats["operations"]["Scan"]["requests"] == 1
    assert stats["operations"]["BatchExecuteStatement"]["requests"] == 3  # 60 items, 25 a call
    assert stats["transactions"]["checkpoint"]["calls"] == 2  # the last flush, and the clear
