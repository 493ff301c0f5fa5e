"""Worker processes (issue 10) on DynamoDB Local, through `dyn upgrade` itself: the same
results as threads, writes from the workers, and no worker that outlives its parent or its
lease."""
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
from test_backfill import put_items
from test_upgrade_faults import dyn, project

pytestmark = pytest.mark.local

STAMP = '''\
"""stamp each Thing with who wrote it"""
import os
import time

from boto3.dynamodb.conditions import Attr

revision = "e1000001"
down_revision = None
SUFFIX = "-x"  # a module constant, a helper and a closure: all must reach the workers


def label(item):
    return f"{item['PK']}{SUFFIX}"


def upgrade(op):
    slow = float(os.environ.get("DYN_TEST_SLOW", "0"))

    def update(item):
        if slow:
            time.sleep(slow)
        return {"n": item.get("n", 0) + 1, "label": label(item), "pid": os.getpid(), "ts": str(time.time())}

    op.backfill(update, filter=Attr("Type").eq("Thing"))


def downgrade(op):
    op.remove_attributes(["n", "label", "pid", "ts"], filter=Attr("Type").eq("Thing"))
'''

FAILING = '''\
"""fails on one item"""
from boto3.dynamodb.conditions import Attr

revision = "e2000001"
down_revision = None


def upgrade(op):
    def update(item):
        if item["PK"] == "T#0777":
            raise KeyError("no such thing")
        return {"B": 1}
    op.backfill(update, filter=Attr("Type").eq("Thing"))


def downgrade(op):
    op.remove_attributes(["B"])
'''


def things(client, table):
    return [i for i in scan_all(client, table) if i.get("Type", {}).get("S") == "Thing"]


def seed(client, n: int, sort_key: bool = False) -> str:
    table = create_table(client, sort_key=sort_key)
    put_items(client, table, [{"PK": f"T#{i:04d}", **({"SK": "x"} if sort_key else {}), "Type": "Thing", "A": i}
                              for i in range(n)])
    return table


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/stat")
    return not (status.exists() and status.read_text().split()[2] == "Z")  # a zombie is not a writer


def test_two_processes_migrate_everything_once_from_the_workers(ddb_local, local_client, tmp_path):
    table = seed(local_client, 1500, sort_key=True)
    root = project(tmp_path, table, ("e1000001_stamp", STAMP), segments=8)
    r = dyn(root, ddb_local.endpoint_url, "upgrade", "head", "--processes", "2", "--json")
    assert r.returncode == 0, r.stderr
    items = things(local_client, table)
    assert len(items) == 1500 and {i["n"]["N"] for i in items} == {"1"}
    assert all(i["label"]["S"] == i["PK"]["S"] + "-x" for i in items)
    pids = {i["pid"]["N"] for i in items}
    assert len(pids) == 2  # two worker processes wrote, and neither is ...
    step = json.loads(r.stdout)["steps"][0]
    assert step["counts"]["updated"] == 1500 and step["counts"]["matched"] == 1500
    # ... the dyn process itself: its pid is in the history record
    who = json.loads(dyn(root, ddb_local.endpoint_url, "history", "--applied", "--json").stdout)[0]["pid"]
    assert str(who) not in pids
    # one progress report for the whole operation, not one per process
    said = [line for line in r.stderr.splitlines() if "updated" in line]
    assert len(said) == 1 and "updated 1,500 items" in said[0], r.stderr


def test_dry_run_in_processes_counts_like_threads_and_writes_nothing(ddb_local, local_client, tmp_path):
    table = seed(local_client, 900)
    root = project(tmp_path, table, ("e1000001_stamp", STAMP), segments=6)
    before = scan_all(local_client, table)
    runs = [json.loads(dyn(root, ddb_local.endpoint_url, "upgrade", "head", "--dry-run", "--processes", p,
                           "--json").stdout)["steps"][0] for p in ("1", "2")]
    assert scan_all(local_client, table) == before
    for key in ("scanned", "matched", "updated"):
        assert runs[0]["counts"][key] == runs[1]["counts"][key] == 900
    assert [len(r["ops"][0]["counts"]["samples"]) for r in runs] == [5, 5]


def test_max_wcu_is_shared_by_the_processes(ddb_local, local_client, tmp_path):
    table = seed(local_client, 600)
    root = project(tmp_path, table, ("e1000001_stamp", STAMP), segments=4)
    t = time.monotonic()
    r = dyn(root, ddb_local.endpoint_url, "upgrade", "head", "--processes", "2", "--max-wcu", "200", "--json")
    elapsed = time.monotonic() - t
    assert r.returncode == 0, r.stderr
    wcu = json.loads(r.stdout)["steps"][0]["counts"]["wcu"]
    assert wcu >= 600
    assert elapsed >= 0.6 * wcu / 200  # two processes at 100/s each cannot go faster than 200/s together


def test_an_update_failing_in_a_worker_stops_the_run_and_resumes(ddb_local, local_client, tmp_path):
    table = seed(local_client, 1200)
    root = project(tmp_path, table, ("e2000001_fail", FAILING), segments=6)
    r = dyn(root, ddb_local.endpoint_url, "upgrade", "head", "--processes", "2")
    assert r.returncode == 1
    lines = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "KeyError" in lines[0] and "T#0777" in lines[0], r.stderr
    assert "Traceback" not in r.stderr
    current = json.loads(dyn(root, ddb_local.endpoint_url, "current", "--json").stdout)
    assert current["dirty"]["revision"] == "e2000001" and current["lock"] is None


def test_kill_9_of_the_parent_leaves_no_writer(ddb_local, local_client, tmp_path):
    """The deploy is killed: its worker processes stop writing at once (the kernel kills them
    with their parent), so the next deploy never races an orphan."""
    table = seed(local_client, 2000)
    root = project(tmp_path, table, ("e1000001_stamp", STAMP), segments=8, workers=2)
    env = {**os.environ, "AWS_ENDPOINT_URL_DYNAMODB": ddb_local.endpoint_url, "DYN_TEST_SLOW": "0.005"}
    parent = subprocess.Popen([sys.executable, "-m", "dynamic.cli", "upgrade", "head", "--processes", "2"],
                              cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            written = [i for i in things(local_client, table) if "pid" in i]
            if len(written) > 200 and len({i["pid"]["N"] for i in written}) == 2:
                break
            assert parent.poll() is None, parent.stderr.read()
            assert time.monotonic() < deadline, "no progress"
            time.sleep(0.1)
        workers = {int(i["pid"]["N"]) for i in written}
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        killed = time.monotonic()
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
    while any(alive(p) for p in workers) and time.monotonic() - killed < 5:
        time.sleep(0.05)
    assert not any(alive(p) for p in workers), "a worker outlived its parent"
    print(f"kill -9 of the parent: its workers were gone {time.monotonic() - killed:.2f}s later")
    time.sleep(0.5)  # a request already sent may still land on the server
    settled = sorted(i["PK"]["S"] for i in things(local_client, table) if "pid" in i)
    time.sleep(2)
    assert sorted(i["PK"]["S"] for i in things(local_client, table) if "pid" in i) == settled
    assert len(settled) < 2000


def test_a_lost_lease_stops_every_worker_process(ddb_local, local_client, tmp_path):
    """`dyn unlock --yes` mid-run: the runner notices at its next renewal and its workers write
    nothing after that."""
    table = seed(local_client, 3000)
    lease = 3.0
    root = project(tmp_path, table, ("e1000001_stamp", STAMP), segments=8, workers=2, lock_lease_seconds=lease)
    env = {**os.environ, "AWS_ENDPOINT_URL_DYNAMODB": ddb_local.endpoint_url, "DYN_TEST_SLOW": "0.005"}
    proc = subprocess.Popen([sys.executable, "-m", "dynamic.cli", "upgrade", "head", "--processes", "2"],
                            cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while sum(1 for i in things(local_client, table) if "pid" in i) < 200:
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.1)
    assert dyn(root, ddb_local.endpoint_url, "unlock", "--yes").returncode == 0
    released = time.time()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 4, err
    assert "lost the migration lock" in err or "lost its lock" in err, err
    late = [float(i["ts"]["S"]) for i in things(local_client, table) if "ts" in i]
    # the runner renews every lease/3 and relays to the workers every 0.1 s
    assert max(late) <= released + lease / 3 + 1.0, max(late) - released
    assert len(late) < 3000


def upgrade_in_spawned_workers(monkeypatch, root, endpoint: str) -> None:
    """`dyn upgrade head --processes 2` in this process, its workers started with spawn (as on a
    platform without fork): they load the revision file again."""
    from typer.testing import CliRunner

    from dynamic.backfill import processes
    from dynamic.cli import app

    monkeypatch.setattr(processes, "start_method", lambda: "spawn")
    monkeypatch.chdir(root)
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", endpoint)
    r = CliRunner().invoke(app, ["upgrade", "head", "--processes", "2", "--json"])
    assert r.exit_code == 0, r.stderr


def test_without_fork_workers_load_the_revision_again(ddb_local, local_client, tmp_path, monkeypatch):
    """Where a platform has no fork (Windows), a worker process starts fresh: it loads the
    revision file by path and takes the function of the same data operation, closures, helpers
    and all. Forced here with the spawn start method."""
    table = seed(local_client, 600)
    source = STAMP.replace("def upgrade(op):\n", "def upgrade(op):\n    op.create_gsi('ByLabel', ('label', 'S'))\n"
                                                 "    op.backfill(lambda item: None)\n")
    root = project(tmp_path, table, ("e1000001_stamp", source), segments=4)
    upgrade_in_spawned_workers(monkeypatch, root, ddb_local.endpoint_url)
    items = things(local_client, table)
    assert len(items) == 600 and {i["n"]["N"] for i in items} == {"1"}
    assert all(i["label"]["S"] == i["PK"]["S"] + "-x" for i in items)
    assert len({i["pid"]["N"] for i in items}) == 2 and str(os.getpid()) not in {i["pid"]["N"] for i in items}


def test_max_errors_is_one_budget_across_the_processes(ddb_local, local_client, tmp_path):
    """The error budget lives in the runner: failures in either worker count against it, the
    errors file lists exactly the failing keys, and one failure too many stops the run."""
    from test_max_errors import FAILING, N, errors_file, make_project, tagged

    p = make_project(tmp_path / "within", local_client, ddb_local.endpoint_url, segments=4)
    r = p.dyn("upgrade", "head", "--processes", "2", "--max-errors", str(len(FAILING)))
    assert sorted(line["key"]["PK"] for line in errors_file(p)) == sorted(FAILING)
    assert tagged(p) == {f"k{i:03d}" for i in range(N)} - FAILING
    assert f"{len(FAILING)} item(s) failed and were left untouched" in r.stdout

    p = make_project(tmp_path / "over", local_client, ddb_local.endpoint_url, segments=4)
    r = p.dyn("upgrade", "head", "--processes", "2", "--max-errors", str(len(FAILING) - 1), check=False)
    assert r.exit_code == 1 and "the most max_errors = 3 allows" in r.stderr, r.stderr
    assert len(errors_file(p)) == len(FAILING) - 1
    assert p.json("current")["dirty"]["revision"] == "me000001"


def test_ctrl_c_stops_the_workers_keeps_their_positions_and_resumes(ddb_local, local_client, tmp_path):
    """Ctrl-C at a terminal reaches the whole process group: the workers ignore it, the parent
    stops them, saves their last positions and exits 130; the command it names resumes."""
    table = seed(local_client, 2000)
    root = project(tmp_path, table, ("e1000001_stamp", IDEMPOTENT_STAMP), segments=8, workers=2,
                   checkpoint_interval=0.2)
    env = {**os.environ, "AWS_ENDPOINT_URL_DYNAMODB": ddb_local.endpoint_url, "DYN_TEST_SLOW": "0.005"}
    proc = subprocess.Popen([sys.executable, "-m", "dynamic.cli", "upgrade", "head", "--processes", "2"],
                            cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.monotonic() + 60
    while True:
        written = [i for i in things(local_client, table) if "pid" in i]
        if len(written) > 300 and len({i["pid"]["N"] for i in written}) == 2:
            break
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
        time.sleep(0.1)
    workers = {int(i["pid"]["N"]) for i in written}
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert not any(alive(p) for p in workers)
    line = [x for x in err.splitlines() if x.startswith("error:")][-1]
    assert "`dyn upgrade e1000001`" in line, err
    assert "Traceback" not in err
    done_before = sum(1 for i in things(local_client, table) if "B" in i)
    r = dyn(root, ddb_local.endpoint_url, "upgrade", "e1000001", "--processes", "2", "--json")
    assert r.returncode == 0, r.stderr
    counts = json.loads(r.stdout)["steps"][0]["counts"]
    assert counts["updated"] == 2000 - done_before  # the positions saved at the stop held
    assert all(i["B"]["N"] == str(2 * int(i["A"]["N"])) for i in things(local_client, table))


IDEMPOTENT_STAMP = STAMP.replace('"n": item.get("n", 0) + 1, ', '"B": item["A"] * 2, ')


def test_a_lease_confirmation_never_outlasts_the_lease(local_client):
    """Workers may write for LEASE_WINDOW after each confirmation from the parent, but never past
    the parent's own deadline: with a short lease near its end, the window shrinks to what is
    left of it."""
    import threading
    import types

    from dynamic import lock as locklib
    from dynamic.backfill.processes import LEASE_WINDOW, _Relay
    from dynamic.dynamo import describe_table
    from dynamic.store import Store

    store = Store(local_client, describe_table(local_client, create_table(local_client)))
    now = [100.0]
    lease = locklib.acquire(store, lease_seconds=0.6, clock=lambda: now[0])
    lease.abandon()  # no renewal from here on: the fake clock alone decides what is left
    try:
        value = types.SimpleNamespace(value=0.0)
        engine = types.SimpleNamespace(caller=types.SimpleNamespace(guard=lease.check), stop=threading.Event())
        relay = _Relay(engine, value)
        now[0] += 0.45  # 0.05 s left of the 0.5 s (5/6 of 0.6) this runner may write for
        before = time.monotonic()
        assert relay.confirm()
        assert value.value - before <= 0.05 + 0.01 < LEASE_WINDOW
        now[0] += 0.1  # past it: the relay says lost, and workers stop at once
        assert not relay.confirm() and value.value == -1.0
    finally:
        lease.abandon()
