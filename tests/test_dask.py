"""Segments on a Dask cluster (issue 10): a real local cluster of worker processes against
DynamoDB Local, driven by `dyn upgrade --dask-scheduler` as users run it."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import scan_all
from test_processes import STAMP, alive, seed, things
from test_upgrade_faults import dyn, project

pytestmark = pytest.mark.local
distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def cluster():
    """Two worker processes (not threads of this process: they share nothing with the test),
    four threads each; workers that die are restarted by their nanny."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=4, processes=True, dashboard_address=None,
                      silence_logs=50) as c, Client(c) as client:
        yield c, client


def worker_pids(client) -> set[str]:
    return {str(pid) for pid in client.run(os.getpid).values()}


def test_backfill_on_the_cluster_writes_from_its_workers_once(ddb_local, local_client, tmp_path, cluster):
    c, client = cluster
    table = seed(local_client, 1200, sort_key=True)
    root = project(tmp_path, table, ("e1000001_stamp", STAMP), segments=8, checkpoint_interval=0.5)
    r = dyn(root, ddb_local.endpoint_url, "upgrade", "head", "--dask-scheduler", c.scheduler_address, "--json")
    assert r.returncode == 0, r.stderr
    items = things(local_client, table)
    assert len(items) == 1200 and {i["n"]["N"] for i in items} == {"1"}  # a counter: once each
    assert all(i["label"]["S"] == i["PK"]["S"] + "-x" for i in items)  # helper + constant + closure
    assert {i["pid"]["N"] for i in items} <= worker_pids(client)
    assert len({i["pid"]["N"] for i in items}) == 2
    step = json.loads(r.stdout)["steps"][0]
    assert step["counts"]["updated"] == 1200
    current = json.loads(dyn(root, ddb_local.endpoint_url, "current", "--json").stdout)
    assert current["dirty"] is None and current["lock"] is None


def test_a_worker_killed_mid_run_loses_nothing(ddb_local, local_client, tmp_path, cluster):
    c, client = cluster
    table = seed(local_client, 1500)
    root = project(tmp_path, table, ("e1000001_stamp", IDEMPOTENT_STAMP), segments=12, checkpoint_interval=0.3)
    env = {**os.environ, "AWS_ENDPOINT_URL_DYNAMODB": ddb_local.endpoint_url, "DYN_TEST_SLOW": "0.004"}
    proc = subprocess.Popen([sys.executable, "-m", "dynamic.cli", "upgrade", "head", "--dask-scheduler",
                             c.scheduler_address, "--json"], cwd=root, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while sum(1 for i in things(local_client, table) if "pid" in i) < 300:
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
        time.sleep(0.1)
    victim = int(next(iter(worker_pids(client))))
    os.kill(victim, signal.SIGKILL)
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err
    assert not alive(victim)
    items = things(local_client, table)
    assert len(items) == 1500 and all(i["B"]["N"] == str(2 * int(i["A"]["N"])) for i in items)
    assert json.loads(out)["steps"][0]["counts"]["matched"] >= 1500  # the killed slices ran again
    client.wait_for_workers(2, timeout=60)


IDEMPOTENT_STAMP = STAMP.replace('"n": item.get("n", 0) + 1, ', '"B": item["A"] * 2, ')


def test_a_lost_lease_stops_the_cluster_writing(ddb_local, local_client, tmp_path, cluster):
    """The lock is force-released mid-run: the workers see it in the version record within a
    sixth of a lease and write nothing after; the run exits 4."""
    c, client = cluster
    table = seed(local_client, 3000)
    lease = 3.0
    root = project(tmp_path, table, ("e1000001_stamp", STAMP), segments=8, checkpoint_interval=0.3,
                   lock_lease_seconds=lease)
    env = {**os.environ, "AWS_ENDPOINT_URL_DYNAMODB": ddb_local.endpoint_url, "DYN_TEST_SLOW": "0.004"}
    proc = subprocess.Popen([sys.executable, "-m", "dynamic.cli", "upgrade", "head", "--dask-scheduler",
                             c.scheduler_address], cwd=root, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while sum(1 for i in things(local_client, table) if "pid" in i) < 300:
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
        time.sleep(0.1)
    assert dyn(root, ddb_local.endpoint_url, "unlock", "--yes").returncode == 0
    released = time.time()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 4, err
    late = [float(i["ts"]["S"]) for i in things(local_client, table) if "ts" in i]
    assert max(late) <= released + lease / 6 + 1.0, max(late) - released
    assert len(late) < 3000


def test_the_cluster_is_told_apart_from_a_missing_one(ddb_local, local_client, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from dynamic.cli import app

    table = seed(local_client, 10)
    root = project(tmp_path, table, ("e1000001_stamp", STAMP))
    before = scan_all(local_client, table)
    t = time.monotonic()
    r = dyn(root, ddb_local.endpoint_url, "upgrade", "head", "--dask-scheduler", "tcp://127.0.0.1:9")
    assert r.returncode == 1 and time.monotonic() - t < 60
    lines = r.stderr.strip().splitlines()
    assert lines[-1].startswith("error: cannot reach the Dask scheduler at tcp://127.0.0.1:9"), r.stderr
    assert "Traceback" not in r.stderr
    monkeypatch.chdir(root)
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", ddb_local.endpoint_url)
    monkeypatch.setitem(sys.modules, "distributed", None)  # as if the extra were not installed
    r = CliRunner().invoke(app, ["upgrade", "head", "--dask-scheduler", "tcp://127.0.0.1:8786"])
    assert r.exit_code == 2
    assert r.stderr.strip() == 'error: --dask-scheduler needs Dask: pip install "dynamic[dask]"'
    assert [i for i in scan_all(local_client, table) if "pid" in i] == []
    assert [i for i in scan_all(local_client, table) if i.get("Type", {}).get("S") == "Thing"] == [
        i for i in before if i.get("Type", {}).get("S") == "Thing"]


def test_max_errors_on_the_cluster(ddb_local, local_client, tmp_path, cluster):
    from test_max_errors import FAILING, N, errors_file, make_project, tagged

    c, _ = cluster
    p = make_project(tmp_path, local_client, ddb_local.endpoint_url, segments=4)
    r = p.dyn("upgrade", "head", "--dask-scheduler", c.scheduler_address, "--max-errors", str(len(FAILING)))
    assert sorted(line["key"]["PK"] for line in errors_file(p)) == sorted(FAILING)
    assert tagged(p) == {f"k{i:03d}" for i in range(N)} - FAILING
    assert f"{len(FAILING)} item(s) failed and were left untouched" in r.stdout


def test_rename_and_move_on_the_cluster_with_a_clash_then_resumed(ddb_local, local_client, tmp_path, cluster):
    """The issue-14 operations run as Dask tasks unchanged: the move's transform travels by
    value, each move's transaction is written from a worker, and a clash found there comes
    back with its key, fails the step, and is met again by the resumed step."""
    from test_backfill import put_items
    from test_rename_move_cli import MOVE, moved_once
    from test_rename_move_cli import things as old_things

    c, client = cluster
    from conftest import create_table

    table = create_table(local_client)
    n = 600
    put_items(local_client, table, old_things(n) + [
        {"PK": f"USER#{i:04d}", "SK": "PROFILE", "Type": "User", "phone": f"+{i}"} for i in range(200)]
        + [{"PK": "GROUP#3", "SK": "THING#00010", "Type": "Blocker"}])  # the new key of A=10, taken
    both = MOVE.replace('    op.move_items(into_group, filter=Attr("Type").eq("Thing"))\n',
                        '    op.rename_attribute("phone", "phoneNumber", filter=Attr("Type").eq("User"))\n'
                        '    op.move_items(into_group, filter=Attr("Type").eq("Thing"))\n')
    root = project(tmp_path, table, ("m1400001_both", both), segments=6, checkpoint_interval=0.3)
    args = ("upgrade", "head", "--dask-scheduler", c.scheduler_address, "--json")
    r = dyn(root, ddb_local.endpoint_url, *args)
    assert r.returncode == 1, r.stderr
    assert "1 item was left as it was, not overwritten (its new key {PK='GROUP#3', SK='THING#00010'} holds " \
           "another item): {PK='OLD#00010', SK='THING'}" in r.stderr, r.stderr
    local_client.delete_item(TableName=table, Key={"PK": {"S": "GROUP#3"}, "SK": {"S": "THING#00010"}})
    r = dyn(root, ddb_local.endpoint_url, *args)
    assert r.returncode == 0, r.stderr
    step = json.loads(r.stdout)["steps"][0]
    assert step["resumed"] and step["ops"][1]["counts"]["moved"] >= 1
    items = moved_once(local_client, table, n)
    assert {str(i["pid"]) for i in items} <= worker_pids(client)
    users = [i for i in scan_all(local_client, table) if i.get("Type", {}).get("S") == "User"]
    assert len(users) == 200 and all("phone" not in u and "phoneNumber" in u for u in users)
