"""Backfill speed, measured as the whole command a user types: `dyn upgrade head` against the
reference loop and a hand-written 16-thread script, each a process of its own.

On DynamoDB Local, each contender does the reference text's GSI-key backfill (GSI1PK=PK,
GSI1SK=SK on Type=Post items; 3 of 4 items are posts) on its own fresh, identical table:

* ``sequential``: the reference text's loop -- one Scan page, then UpdateItem per item;
* ``threads16``:  a hand-written parallel scan -- 16 threads, each its own segment, UpdateItem
  per item, one shared client with a 16-connection pool;
* ``dyn``:        ``dyn upgrade head`` of a one-revision project (``op.backfill``), with its
  own clients, its lock, and its checkpoints in the table.

at 0 ms and 4 ms of added round trip (``dynamic.testing.proxy`` in its own process). Then:

* the fault mix: ``dyn upgrade head`` through a proxy that throttles 5%, fails 2% with HTTP 500
  and drops 2% of the responses (after the request applied) of *every* call dyn makes, against
  its unfaulted twin at the same latency;
* bookkeeping: checkpoint transactions per second and their write units, as DynamoDB Local
  reports them, against the backfill's own write units;
* client CPU per migrated item (user + system time of the whole process, start-up included);
* where the segments run: ``--processes 1`` against ``--processes 2`` and a local Dask cluster
  of two worker processes, at the fault-mix round trip;
* memory: the peak RSS (VmHWM, read from /proc while it runs) of the largest process of `dyn
  upgrade head` on a 10k and a 100k table.

    .venv/bin/python benchmarks/backfill.py            # 4,000 items, 3 rounds, faults, memory at 10k/100k
    .venv/bin/python benchmarks/backfill.py --quick    # 2,000 items, 1 round, memory at 5k/20k
    .venv/bin/python benchmarks/backfill.py --items 10000 --latency 0 4 8 --no-memory --no-faults

Contenders run once per round, each on its own freshly seeded table, in an order that rotates
from round to round; tables show medians, so a noisy neighbour skews one run, not the result.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import boto3  # noqa: E402
from botocore.config import Config  # noqa: E402

from dynamic import local  # noqa: E402

for _k, _v in local.LOCAL_ENV.items():
    os.environ.setdefault(_k, _v)

POST_SHARE = 3  # 3 of 4 items are posts
DYN = str(Path(sys.executable).with_name("dyn"))
FAULTS = ["*:throttle=0.05", "*:error500=0.02", "*:lost=0.02"]
REVISION = '''"""GSI1 keys on posts"""
from boto3.dynamodb.conditions import Attr

revision = "b0000000bench"
down_revision = None
branch_labels = None
depends_on = None


def upgrade(op):
    op.backfill(lambda item: {"GSI1PK": item["PK"], "GSI1SK": item["SK"]}, filter=Attr("Type").eq("Post"))


def downgrade(op):
    op.remove_attributes(["GSI1PK", "GSI1SK"], filter=Attr("Type").eq("Post"))
'''


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


# ---- the baselines, as the scripts a user would run ---------------------------------------------
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


def script_sequential(endpoint: str, name: str) -> int:
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


def script_threads16(endpoint: str, name: str) -> int:
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


SCRIPTS = {"sequential": script_sequential, "threads16": script_threads16}
CONTENDERS = ["sequential", "threads16", "dyn"]


# ---- running a whole command ------------------------------------------------------------------
@dataclass
class Run:
    seconds: float
    cpu: float  # user + system seconds of the process and the worker processes it waited for
    maxrss: int  # bytes: the largest high-water mark of the command's processes (VmHWM)
    stdout: str
    stderr: str


class PeakRSS:
    """The RSS high-water mark (VmHWM) of a process and its children, read from /proc while
    they run. Not ``ru_maxrss``: that one keeps the parent's RSS from before the fork and exec,
    so it would measure the benchmark, not the command."""

    def __init__(self, pid: int, every: float = 0.1):
        self.pid = pid
        self.peaks: dict[int, int] = {}
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, args=(every,), daemon=True)
        self._thread.start()

    def _tree(self) -> list[int]:
        pids, todo = [], [self.pid]
        while todo:
            pid = todo.pop()
            pids.append(pid)
            for task in Path(f"/proc/{pid}/task").glob("*/children"):
                try:
                    todo += [int(x) for x in task.read_text().split()]
                except OSError:
                    pass
        return pids

    def _loop(self, every: float) -> None:
        while not self._done.is_set():
            for pid in self._tree():
                try:
                    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                        if line.startswith("VmHWM:"):
                            self.peaks[pid] = max(self.peaks.get(pid, 0), int(line.split()[1]) * 1024)
                except (OSError, ValueError):
                    pass
            self._done.wait(every)

    def stop(self) -> int:
        self._done.set()
        self._thread.join()
        return max(self.peaks.values(), default=0)


def run_command(argv: list[str], *, env: dict | None = None, cwd: Path | None = None) -> Run:
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t = time.monotonic()
        proc = subprocess.Popen(argv, env={**os.environ, **(env or {})}, cwd=cwd, stdout=out, stderr=err,
                                text=True)
        rss = PeakRSS(proc.pid)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.monotonic() - t
        peak = rss.stop()
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        run = Run(seconds, usage.ru_utime + usage.ru_stime, peak, out.read(), err.read())
    if proc.returncode:
        raise SystemExit(f"{' '.join(argv)} exited {proc.returncode}:\n{run.stderr[-2000:]}")
    return run


def project_dir() -> Path:
    """A one-revision dyn project; the table comes from DYN_TABLE."""
    d = Path(tempfile.mkdtemp(prefix="dyn-bench-"))
    (d / "migrations" / "versions").mkdir(parents=True)
    (d / "migrations" / "versions" / "b0000000bench_gsi1.py").write_text(REVISION)
    (d / "dyn.toml").write_text('[dyn]\nscript_location = "migrations"\n')
    return d


def run_contender(who: str, url: str, name: str, project: Path, *extra: str) -> tuple[Run, dict]:
    """One contender's whole command against ``url``; its run and, for dyn, the step's counts."""
    if who == "dyn":
        run = run_command([DYN, "upgrade", "head", "--json", *extra], cwd=project,
                          env={"AWS_ENDPOINT_URL_DYNAMODB": url, "DYN_TABLE": name})
        steps = json.loads(run.stdout)["steps"]
        return run, steps[0]["counts"]
    run = run_command([sys.executable, __file__, "--script", who, url, name])
    return run, {"updated": int(run.stdout.strip())}


class ProxyProcess:
    def __init__(self, upstream: str, latency_ms: float, faults: list[str] = ()):
        self.stats_path = Path(tempfile.mktemp(prefix="dyn-bench-proxy-", suffix=".json"))
        argv = [sys.executable, "-m", "dynamic.testing.proxy", "--upstream", upstream,
                "--latency-ms", str(latency_ms), "--lifetime", "7200", "--stats", str(self.stats_path),
                "--seed", str(uuid.uuid4().int % 1000)]
        for f in faults:
            argv += ["--fault", f]
        self.proc = subprocess.Popen(argv, cwd=str(ROOT), stdout=subprocess.PIPE, text=True)
        self.url = self.proc.stdout.readline().strip()
        if not self.url.startswith("http://"):
            raise SystemExit("the proxy did not start")

    def close(self) -> dict:
        self.proc.terminate()
        self.proc.wait(10)
        try:
            return json.loads(self.stats_path.read_text())
        finally:
            self.stats_path.unlink(missing_ok=True)


# ---- measurements ------------------------------------------------------------------------------
def median(values: list[float]) -> float:
    v = sorted(values)
    return v[len(v) // 2] if len(v) % 2 else (v[len(v) // 2 - 1] + v[len(v) // 2]) / 2


def fmt(v: float | None, unit: str = "") -> str:
    return f"{v:,.0f}{unit}" if v else "-"


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a and b else "-"


def throughput(endpoint: str, project: Path, n: int, rounds: int, latencies: list[float],
               only: list[str]) -> dict:
    results: dict = {}
    for latency in latencies:
        proxy = ProxyProcess(endpoint, latency) if latency else None
        url = proxy.url if proxy else endpoint
        results[latency] = {who: {"rate": [], "cpu": []} for who in only}
        try:
            for rnd in range(rounds):
                order = only[rnd % len(only):] + only[:rnd % len(only)]
                for who in order:
                    name = f"bench-{who}-{int(latency)}ms-{uuid.uuid4().hex[:6]}"
                    posts = seed(endpoint, name, n)
                    run, counts = run_contender(who, url, name, project)
                    if counts["updated"] != posts:
                        raise SystemExit(f"{who}: updated {counts['updated']} of {posts} posts")
                    check_migrated(endpoint, name, posts)
                    results[latency][who]["rate"].append(posts / run.seconds)
                    results[latency][who]["cpu"].append(run.cpu / posts)
                    print(f"  {latency:g} ms  round {rnd + 1}  {who:<11} {posts:>6} posts in {run.seconds:6.2f}s  "
                          f"{posts / run.seconds:8.0f} items/s  {1e6 * run.cpu / posts:6.0f} us CPU/item",
                          flush=True)
        finally:
            if proxy:
                proxy.close()
    print()
    print(f"{'round trip':>10}  {'sequential':>10}  {'16 threads':>10}  {'dyn':>8}  "
          f"{'dyn/seq':>7}  {'dyn/16t':>7}   (items/s, whole command, median of {rounds})")
    for latency, r in results.items():
        seq, t16, dyn = (median(r[w]["rate"]) if r.get(w) else None for w in CONTENDERS)
        print(f"{latency:>8g}ms  {fmt(seq):>10}  {fmt(t16):>10}  {fmt(dyn):>8}  "
              f"{ratio(dyn, seq):>7}  {ratio(dyn, t16):>7}")
    print()
    print("client CPU per migrated item (user + system of the whole process, start-up included), median:")
    for latency, r in results.items():
        parts = [f"{w} {1e6 * median(r[w]['cpu']):,.0f} us" for w in CONTENDERS if r.get(w)]
        print(f"  {latency:g} ms: " + ", ".join(parts))
    return results


def faults(endpoint: str, project: Path, n: int, rounds: int, latency: float) -> None:
    clean = ProxyProcess(endpoint, latency)
    faulty = ProxyProcess(endpoint, latency, FAULTS)
    rates: dict[str, list[float]] = {"clean": [], "faults": []}
    books: list[dict] = []
    try:
        for rnd in range(rounds):
            order = ["faults", "clean"] if rnd % 2 == 0 else ["clean", "faults"]
            for kind in order:
                proxy = faulty if kind == "faults" else clean
                name = f"bench-{kind}-{uuid.uuid4().hex[:6]}"
                posts = seed(endpoint, name, n)
                run, counts = run_contender("dyn", proxy.url, name, project)
                if counts["updated"] != posts:
                    raise SystemExit(f"dyn with {kind}: updated {counts['updated']} of {posts} posts")
                check_migrated(endpoint, name, posts)
                rates[kind].append(posts / run.seconds)
                if kind == "clean":
                    books.append({"seconds": run.seconds, "wcu": counts.get("wcu", 0.0)})
                print(f"  {latency:g} ms  round {rnd + 1}  dyn {kind:<7} {posts:>6} posts in {run.seconds:6.2f}s  "
                      f"{posts / run.seconds:8.0f} items/s", flush=True)
    finally:
        clean_stats = clean.close()
        fault_stats = faulty.close()
    injected = {k: sum(op.get(k, 0) for op in fault_stats["operations"].values())
                for k in ("throttle", "error500", "lost")}
    requests = sum(op["requests"] for op in fault_stats["operations"].values())
    ops = sorted(op for op, c in fault_stats["operations"].items() if any(c.get(k) for k in injected))
    fr, cr = median(rates["faults"]), median(rates["clean"])
    print()
    print(f"fault mix at {latency:g} ms: {fr:,.0f} items/s against {cr:,.0f} unfaulted: {fr / cr:.0%} "
          f"(median of {rounds}; {injected['throttle']} throttles, {injected['error500']} HTTP 500s, "
          f"{injected['lost']} lost responses in {requests} requests, on {', '.join(ops)})")
    tx = clean_stats["transactions"].get("checkpoint", {"calls": 0, "units": 0.0})
    seconds = sum(b["seconds"] for b in books)
    wcu = sum(b["wcu"] for b in books)
    print(f"checkpoints (unfaulted runs, {len(books)} x {n:,} items): {tx['calls']} transactions in "
          f"{seconds:.1f}s of runs = {tx['calls'] / seconds:.2f}/s; {tx['units']:.0f} write units against "
          f"the backfill's {wcu:,.0f} = {tx['units'] / wcu:.1%}")


def scale(endpoint: str, project: Path, n: int, rounds: int, latency: float) -> None:
    """Where the segments run, same table size and round trip: one process, two worker
    processes, and a local Dask cluster of two worker processes."""
    from distributed import LocalCluster

    proxy = ProxyProcess(endpoint, latency)
    cluster = LocalCluster(n_workers=2, threads_per_worker=16, processes=True, dashboard_address=None,
                           silence_logs=50)
    ways = {"1 process": ["--processes", "1"], "2 processes": ["--processes", "2"],
            "dask 2x16": ["--dask-scheduler", cluster.scheduler_address]}
    rates: dict[str, list[float]] = {w: [] for w in ways}
    cpu: dict[str, list[float]] = {w: [] for w in ways}
    try:
        for rnd in range(rounds):
            order = list(ways)[rnd % len(ways):] + list(ways)[:rnd % len(ways)]
            for way in order:
                name = f"bench-scale-{uuid.uuid4().hex[:6]}"
                posts = seed(endpoint, name, n)
                run, counts = run_contender("dyn", proxy.url, name, project, *ways[way])
                if counts["updated"] != posts:
                    raise SystemExit(f"dyn {way}: updated {counts['updated']} of {posts}")
                check_migrated(endpoint, name, posts)
                rates[way].append(posts / run.seconds)
                cpu[way].append(run.cpu / posts)
                print(f"  {latency:g} ms  round {rnd + 1}  dyn {way:<12} {posts:>6} posts in {run.seconds:6.2f}s  "
                      f"{posts / run.seconds:8.0f} items/s  {1e6 * run.cpu / posts:6.0f} us CPU/item (dyn's "
                      "processes)", flush=True)
    finally:
        cluster.close()
        proxy.close()
    one, two, dask = (median(rates[w]) for w in ways)
    print()
    print(f"where segments run, {latency:g} ms, median of {rounds}: 1 process {one:,.0f} items/s, 2 processes "
          f"{two:,.0f} ({two / one:.2f}x), Dask 2 workers {dask:,.0f} ({dask / two:.2f}x of 2 processes); client "
          f"CPU per item: {1e6 * median(cpu['1 process']):,.0f} us, {1e6 * median(cpu['2 processes']):,.0f} us "
          "(Dask workers' CPU is not the dyn process's)")


def retry_modes(endpoint: str, project: Path, n: int, latency: float) -> None:
    """botocore's retry modes under 5% throttles on every call: dyn's default (``standard``,
    the engine retrying each call on its own thread) against ``adaptive`` (one client-wide
    rate limiter)."""
    proxy = ProxyProcess(endpoint, latency, ["*:throttle=0.05"])
    try:
        for mode in ("standard", "adaptive"):
            name = f"bench-retry-{uuid.uuid4().hex[:6]}"
            posts = seed(endpoint, name, n)
            os.environ["DYN_RETRY_MODE"] = mode
            try:
                run, counts = run_contender("dyn", proxy.url, name, project)
            finally:
                del os.environ["DYN_RETRY_MODE"]
            check_migrated(endpoint, name, posts)
            print(f"  {latency:g} ms, 5% throttles  retry_mode={mode:<9} {posts:>6} posts in {run.seconds:6.2f}s  "
                  f"{posts / run.seconds:8.0f} items/s", flush=True)
    finally:
        proxy.close()


def memory(endpoint: str, project: Path, sizes: list[int]) -> None:
    """Peak RSS at each size; the runs go through a proxy without latency, which counts the
    checkpoint transactions of a long run (a short one is mostly its last flush and the clear)."""
    print()
    peaks = []
    for size in sizes:
        name = f"bench-mem-{size}-{uuid.uuid4().hex[:6]}"
        posts = seed(endpoint, name, size)
        proxy = ProxyProcess(endpoint, 0)
        try:
            run, counts = run_contender("dyn", proxy.url, name, project)
        finally:
            stats = proxy.close()
        if counts["updated"] != posts:
            raise SystemExit(f"memory run updated {counts['updated']} of {posts}")
        peaks.append(run.maxrss)
        tx = stats["transactions"].get("checkpoint", {"calls": 0, "units": 0.0})
        print(f"memory at {size:>7,} items: `dyn upgrade head` peak RSS {run.maxrss / 2**20:6.1f} MiB "
              f"({posts:,} posts in {run.seconds:.0f}s, {posts / run.seconds:,.0f} items/s; {tx['calls']} checkpoint "
              f"transactions = {tx['calls'] / run.seconds:.2f}/s, {tx['units']:.0f} units against "
              f"{counts.get('wcu', 0):,.0f})", flush=True)
    if len(peaks) > 1:
        print(f"peak RSS at {sizes[-1]:,} items / at {sizes[0]:,} items: {peaks[-1] / peaks[0]:.2f}x")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--items", type=int, default=None, help="items per table (default 4000; --quick 2000)")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds; medians reported (default 3)")
    p.add_argument("--quick", action="store_true", help="2000 items, 1 round, memory at 5k/20k")
    p.add_argument("--latency", type=float, nargs="+", default=[0, 4], help="added round trip, ms")
    p.add_argument("--only", nargs="+", choices=CONTENDERS, default=CONTENDERS)
    p.add_argument("--fault-latency", type=float, default=4.0, help="round trip of the fault-mix runs, ms")
    p.add_argument("--no-faults", action="store_true")
    p.add_argument("--no-scale", action="store_true", help="skip processes 1 vs 2 vs Dask")
    p.add_argument("--retry-modes", type=int, metavar="ITEMS", default=0,
                   help="also compare retry_mode standard and adaptive under 5%% throttles on a table this big")
    p.add_argument("--memory", type=int, nargs="*", default=None, help="item counts for the memory runs")
    p.add_argument("--no-memory", action="store_true")
    p.add_argument("--script", nargs=3, metavar=("NAME", "ENDPOINT", "TABLE"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.script:
        who, endpoint, name = args.script
        print(SCRIPTS[who](endpoint, name))
        return 0
    n = args.items or (2000 if args.quick else 4000)
    rounds = args.rounds or (1 if args.quick else 3)
    mem_sizes = args.memory if args.memory is not None else ([5000, 20000] if args.quick else [10000, 100000])

    print(f"DynamoDB Local, {os.cpu_count()} cores (load average {os.getloadavg()[0]:.1f} at start), {n:,} "
          f"items per table ({POST_SHARE}/4 posts), {rounds} interleaved round(s), medians; every contender "
          "is a whole process", flush=True)
    ddb = local.start()
    project = project_dir()
    try:
        endpoint = ddb.endpoint_url
        for who in ("threads16", "dyn"):  # let the JVM compile everyone's hot paths first
            warm = f"bench-warm-{who}-{uuid.uuid4().hex[:6]}"
            seed(endpoint, warm, 4000)
            run_contender(who, endpoint, warm, project)
        throughput(endpoint, project, n, rounds, args.latency, args.only)
        if not args.no_faults:
            print()
            faults(endpoint, project, n, rounds, args.fault_latency)
        if not args.no_scale:
            print()
            scale(endpoint, project, n, rounds, args.fault_latency)
        if args.retry_modes:
            print()
            retry_modes(endpoint, project, args.retry_modes, args.fault_latency)
        if not args.no_memory and mem_sizes:
            memory(endpoint, project, mem_sizes)
        print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    finally:
        ddb.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
