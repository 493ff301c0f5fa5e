"""Guarantee 2 for the backfill, for real: SIGKILL a process halfway through a backfill on
DynamoDB Local, run again, and the rerun only does what was left (plus a small window)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from conftest import create_table
from dynamic import local
from dynamic.backfill import backfill
from dynamic.dynamo import describe_table
from test_backfill import plain_items, put_items

N = 2000
SEGMENTS = 32  # many segments of ~60 items: page-end positions alone would lose every segment's page


class FileCheckpoints:
    """Checkpoints in a JSON file, replaced atomically (the real store keeps them in `_dyn`)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.lock = threading.Lock()
        self.data = json.loads(self.path.read_text()) if self.path.exists() else {"total": None, "positions": {}}

    def load(self):
        with self.lock:
            return self.data["total"], {int(k): v for k, v in self.data["positions"].items()}

    def save(self, positions, total_segments):
        with self.lock:
            self.data["total"] = total_segments
            self.data["positions"].update({str(k): v for k, v in positions.items()})
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.data))
            os.replace(tmp, self.path)

    def clear(self):
        with self.lock:
            self.data = {"total": None, "positions": {}}
            self.path.unlink(missing_ok=True)


def double_a(item):
    return {"B": item["A"] * 2}


def child_main(endpoint: str, table_name: str, path: str) -> None:
    """The process that gets killed: a throttled backfill (so there is time to kill it)."""
    import boto3
    from botocore.config import Config

    client = boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1",
                          config=Config(max_pool_connections=16))
    backfill(client, describe_table(client, table_name), double_a, checkpoints=FileCheckpoints(path),
             segments=SEGMENTS, workers=8, max_wcu=400, checkpoint_interval=0.2)


def count_migrated(client, name: str) -> int:
    kw = {"TableName": name, "Select": "COUNT", "FilterExpression": "attribute_exists(B)"}
    total = 0
    while True:
        r = client.scan(**kw)
        total += r["Count"]
        if "LastEvaluatedKey" not in r:
            return total
        kw["ExclusiveStartKey"] = r["LastEvaluatedKey"]


def test_kill_9_halfway_then_rerun_resumes(ddb_local, local_client, tmp_path):
    name = create_table(local_client, sort_key=False)
    put_items(local_client, name, [{"PK": f"k{i:05d}", "A": i} for i in range(N)])
    path = tmp_path / "checkpoints.json"
    code = (f"import sys; sys.path[:0] = [{str(Path(__file__).parent)!r}, {str(Path(__file__).parent.parent)!r}]; "
            f"from test_backfill_crash import child_main; "
            f"child_main({ddb_local.endpoint_url!r}, {name!r}, {str(path)!r})")
    env = {**os.environ, **local.LOCAL_ENV}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            migrated = count_migrated(local_client, name)
            if migrated >= 0.55 * N:
                break
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "the child made no progress"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    at_kill = count_migrated(local_client, name)
    assert at_kill < N, "the child finished before it could be killed"
    checkpointed = FileCheckpoints(path).load()
    assert checkpointed[0] == SEGMENTS and checkpointed[1]

    calls = 0
    lock = threading.Lock()

    def counting(item):
        nonlocal calls
        with lock:
            calls += 1
        return double_a(item)

    cp = FileCheckpoints(path)
    r = backfill(local_client, describe_table(local_client, name), counting, checkpoints=cp, workers=8)
    assert r.segments == SEGMENTS
    items = plain_items(local_client, name)
    assert len(items) == N and all(i["B"] == i["A"] * 2 for i in items)
    assert not path.exists()  # cleared on completion
    assert calls >= N - at_kill
    assert calls < 0.6 * N, f"rerun visited {calls} of {N} items ({at_kill} were done at the kill)"
    # the re-visited window: what was written since the last flush (0.2 s at 400 WCU/s, twice
    # for a burst) plus one batch of 25 per worker; not a share of the table
    assert calls - (N - at_kill) <= 8 * 25 + 2 * 0.2 * 400
