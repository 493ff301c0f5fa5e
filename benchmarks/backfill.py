"""Backfill throughput and memory: dyn's engine vs. the reference loop vs. a 16-thread script.

On DynamoDB Local, each contender does the reference text's GSI-key backfill (GSI1PK=PK,
GSI1SK=SK on Type=Post items) on its own fresh, identical table:

* ``sequential``: the reference text's loop -- one Scan page, then UpdateItem per item;
* ``threads16``:  a hand-written parallel scan -- 16 threads, each its own segment, UpdateItem
  per item, one shared client with a 16-connection pool;
* ``dyn``:        ``dynamic.backfill.backfill`` with its defaults, on a ``make_client`` client.

at 0 ms and at 4 ms of added round trip (a latency proxy, ``dynamic.testing.proxy``, in its
own process). Then the engine's peak memory (RSS high-water mark above its baseline, in a
subprocess) at 10k and 100k items.

    .venv/bin/python benchmarks/backfill.py            # 4,000 items a table, 3 rounds, memory at 10k/100k
    .venv/bin/python benchmarks/backfill.py --quick    # 2,000 items, 1 round, memory at 5k/20k
    .venv/bin/python benchmarks/backfill.py --items 10000 --latency 0 4 8 --no-memory

Each contender runs once per round, on its own freshly seeded table, in an order that rotates
from round to round; the table reports medians, so a noisy neighbour on the machine skews one
run, not the result.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import boto3  # noqa: E402
from boto3.dynamodb.conditions import Attr  # noqa: E402
from botocore.config import Config  # noqa: E402

from dynamic import local  # noqa: E402
from dynamic.backfill import backfill  # noqa: E402
from dynamic.dynamo import describe_table, make_client  # noqa: E402

for _k, _v in local.LOCAL_ENV.items():
    os.environ.setdefault(_k, _v)

POST_SHARE = 3  # 3 of 4 items are posts


# ---- data -----------------------------------------------------------------------------------
def create_table(client, name: str) -> None:
    client.create_table(
        TableName=name,
        AttributeDefinitions=[{"AttributeName": "PK", "AttributeType": "S"},
                              {"AttributeName": "SK", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "PK", "KeyType": "HASH"}, {"AttributeName": "SK", "KeyType": "RANGE"}],
        BillingMode="PAY_PER_REQUEST",
    )
    client.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 0.2, "MaxAttempts": 100})


def item(i: int) -> dict:
    user = f"USER#{i // 8:07d}"
    if i % 4 < POST_SHARE:
        return {"PK": {"S": user}, "SK": {"S": f"POST#{i:08d}"}, "Type": {"S": "Post"},
                "Title": {"S": f"post number {i}"}, "Likes": {"N": str(i % 97)}}
    return {"PK": {"S": user}, "SK": {"S": "PROFILE"}, "Type": {"S": "User"}, "Name": {"S": f"user {i}"}}


def seed(endpoint: str, name: str, n: int) -> int:
    """Fill a table with BatchWriteItem from 8 threads; returns the number of posts."""
    client = boto3.client("dynamodb", endpoint_url=endpoint, config=Config(max_pool_connections=16))
    create_table(client, name)
    items = {}
    for i in range(n):  # several profiles per user collapse into one: dedupe by key
        it = item(i)
        items[(it["PK"]["S"], it["SK"]["S"])] = it
    rows = list(items.values())
    batches = [rows[i:i + 25] for i in range(0, len(rows), 25)]

    def write(batch):
        req = {name: [{"PutRequest": {"Item": it}} for it in batch]}
        while req:
            req = client.batch_write_item(RequestItems=req).get("UnprocessedItems") or None

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(write, batches))
    return sum(1 for it in rows if it["Type"]["S"] == "Post")


def check_migrated(endpoint: str, name: str, posts: int) -> None:
    client = boto3.client("dynamodb", endpoint_url=endpoint)
    kw = {"TableName": name, "Select": "COUNT",
          "FilterExpression": "#t = :p AND GSI1PK = PK AND GSI1SK = SK",
          "ExpressionAttributeNames": {"#t": "Type"}, "ExpressionAttributeValues": {":p": {"S": "Post"}}}
    done = 0
    while True:
        r = client.scan(**kw)
        done += r["Count"]
        if "LastEvaluatedKey" not in r:
            break
        kw["ExclusiveStartKey"] = r["LastEvaluatedKey"]
    if done != posts:
        raise SystemExit(f"{name}: {done} of {posts} posts migrated")


# ---- contenders -----------------------------------------------------------------------------
SCAN_PARAMS = {
    "FilterExpression": "#type = :type",
    "ExpressionAttributeNames": {"#type": "Type"},
    "ExpressionAttributeValues": {":type": {"S": "Post"}},
}


def _update(client, name: str, it: dict) -> None:
    client.update_item(
        TableName=name,
        Key={"PK": it["PK"], "SK": it["SK"]},
        UpdateExpression="SET #gsi1pk = :gsi1pk, #gsi1sk = :gsi1sk",
        ExpressionAttributeNames={"#gsi1pk": "GSI1PK", "#gsi1sk": "GSI1SK"},
        ExpressionAttributeValues={":gsi1pk": it["PK"], ":gsi1sk": it["SK"]},
    )


def run_sequential(endpoint: str, name: str) -> int:
    """The reference text's loop, as written there."""
    client = boto3.client("dynamodb", endpoint_url=endpoint)
    params = {"TableName": name, **SCAN_PARAMS}
    n = 0
    while True:
        results = client.scan(**params)
        for it in results["Items"]:
            _update(client, name, it)
            n += 1
        if not results.get("LastEvaluatedKey"):
            break
        params["ExclusiveStartKey"] = results["LastEvaluatedKey"]
    return n


def run_threads16(endpoint: str, name: str) -> int:
    """The reference text's parallel-scan advice, hand-written: 16 threads, 16 segments."""
    client = boto3.client("dynamodb", endpoint_url=endpoint, config=Config(max_pool_connections=16))
    counts = [0] * 16

    def worker(segment: int) -> None:
        params = {"TableName": name, **SCAN_PARAMS, "TotalSegments": 16, "Segment": segment}
        while True:
            results = client.scan(**params)
            for it in results["Items"]:
                _update(client, name, it)
                counts[segment] += 1
            if not results.get("LastEvaluatedKey"):
                break
            params["ExclusiveStartKey"] = results["LastEvaluatedKey"]

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts)


def run_dyn(endpoint: str, name: str) -> int:
    client = make_client(endpoint_url=endpoint)
    result = backfill(client, describe_table(client, name),
                      lambda item: {"GSI1PK": item["PK"], "GSI1SK": item["SK"]},
                      filter=Attr("Type").eq("Post"))
    return result.updated


CONTENDERS = {"sequential": run_sequential, "threads16": run_threads16, "dyn": run_dyn}


# ---- latency proxy --------------------------------------------------------------------------
class ProxyProcess:
    def __init__(self, upstream: str, latency_ms: float):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dynamic.testing.proxy", "--upstream", upstream,
             "--latency-ms", str(latency_ms), "--lifetime", "7200"],
            cwd=str(ROOT), stdout=subprocess.PIPE, text=True,
        )
        self.url = self.proc.stdout.readline().strip()
        if not self.url.startswith("http://"):
            raise SystemExit("latency proxy did not start")

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


# ---- memory ---------------------------------------------------------------------------------
def _vm(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def memory_child(endpoint: str, name: str) -> None:
    """Run in a subprocess: the engine's RSS high-water mark above its baseline."""
    client = make_client(endpoint_url=endpoint)
    table = describe_table(client, name)
    client.scan(TableName=name, Limit=1)  # warm the client
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    except OSError:
        pass
    base = _vm("VmRSS")
    t = time.monotonic()
    r = backfill(client, table, lambda item: {"GSI1PK": item["PK"], "GSI1SK": item["SK"]},
                 filter=Attr("Type").eq("Post"))
    print(json.dumps({"base": base, "peak": _vm("VmHWM"), "updated": r.updated,
                      "seconds": time.monotonic() - t}))


def measure_memory(endpoint: str, n: int) -> dict:
    name = f"bench-mem-{n}-{uuid.uuid4().hex[:6]}"
    posts = seed(endpoint, name, n)
    out = subprocess.run([sys.executable, __file__, "--memory-child", endpoint, name],
                         capture_output=True, text=True, check=True)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    if res["updated"] != posts:
        raise SystemExit(f"memory run updated {res['updated']} of {posts}")
    return res


# ---- main -----------------------------------------------------------------------------------
def median(values: list[float]) -> float:
    v = sorted(values)
    return v[len(v) // 2] if len(v) % 2 else (v[len(v) // 2 - 1] + v[len(v) // 2]) / 2


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--items", type=int, default=None, help="items per table (default 4000; --quick 2000)")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds; medians reported (default 3)")
    p.add_argument("--quick", action="store_true", help="2000 items, 1 round, memory at 5k/20k")
    p.add_argument("--latency", type=float, nargs="+", default=[0, 4], help="added round trip, ms")
    p.add_argument("--only", nargs="+", choices=list(CONTENDERS), default=list(CONTENDERS))
    p.add_argument("--memory", type=int, nargs="*", default=None, help="item counts for the memory runs")
    p.add_argument("--no-memory", action="store_true")
    p.add_argument("--memory-child", nargs=2, metavar=("ENDPOINT", "TABLE"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.memory_child:
        memory_child(*args.memory_child)
        return 0
    n = args.items or (2000 if args.quick else 4000)
    rounds = args.rounds or (1 if args.quick else 3)
    mem_sizes = args.memory if args.memory is not None else ([5000, 20000] if args.quick else [10000, 100000])

    load = os.getloadavg()[0]
    print(f"DynamoDB Local, {os.cpu_count()} cores (load average {load:.1f} at start), {n} items per "
          f"table ({POST_SHARE}/4 posts), {rounds} interleaved round(s), medians", flush=True)
    ddb = local.start()
    try:
        endpoint = ddb.endpoint_url
        warm = f"bench-warm-{uuid.uuid4().hex[:6]}"  # let the JVM compile its hot paths first
        seed(endpoint, warm, 4000)
        run_threads16(endpoint, warm)
        backfill(make_client(endpoint_url=endpoint), describe_table(make_client(endpoint_url=endpoint), warm),
                 lambda item: {"W": item["SK"]})
        results: dict[float, dict[str, list[float]]] = {}
        for latency in args.latency:
            proxy = ProxyProcess(endpoint, latency) if latency else None
            url = proxy.url if proxy else endpoint
            results[latency] = {who: [] for who in args.only}
            try:
                for rnd in range(rounds):
                    order = args.only[rnd % len(args.only):] + args.only[:rnd % len(args.only)]
                    for who in order:
                        name = f"bench-{who}-{int(latency)}ms-{uuid.uuid4().hex[:6]}"
                        posts = seed(endpoint, name, n)
                        t = time.monotonic()
                        done = CONTENDERS[who](url, name)
                        secs = time.monotonic() - t
                        if done != posts:
                            raise SystemExit(f"{who}: updated {done} of {posts} posts")
                        check_migrated(endpoint, name, posts)
                        results[latency][who].append(posts / secs)
                        print(f"  {latency:g} ms  round {rnd + 1}  {who:<11} {posts:>6} posts in {secs:6.2f}s  "
                              f"{posts / secs:8.0f} items/s", flush=True)
            finally:
                if proxy:
                    proxy.close()
        print()
        print(f"{'round trip':>10}  {'sequential':>10}  {'16 threads':>10}  {'dyn':>8}  "
              f"{'dyn/seq':>7}  {'dyn/16t':>7}   (items/s, median of {rounds})")
        for latency, r in results.items():
            seq, t16, dyn = (median(r[w]) if r.get(w) else None for w in ("sequential", "threads16", "dyn"))
            fmt = lambda v: f"{v:,.0f}" if v else "-"  # noqa: E731
            ratio = lambda a, b: f"{a / b:.2f}x" if a and b else "-"  # noqa: E731
            print(f"{latency:>8g}ms  {fmt(seq):>10}  {fmt(t16):>10}  {fmt(dyn):>8}  "
                  f"{ratio(dyn, seq):>7}  {ratio(dyn, t16):>7}")
        if not args.no_memory and mem_sizes:
            print()
            for size in mem_sizes:
                m = measure_memory(endpoint, size)
                print(f"memory at {size:>7,} items: peak RSS {m['peak'] / 2**20:6.1f} MiB, "
                      f"{(m['peak'] - m['base']) / 2**20:5.1f} MiB above the baseline "
                      f"({m['updated']:,} posts in {m['seconds']:.0f}s)", flush=True)
        print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    finally:
        ddb.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
