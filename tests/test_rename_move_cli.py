"""op.rename_attribute and op.move_items through `dyn` itself (issue 14), on DynamoDB Local:
its own process, clients, lock and checkpoints in the table; killed with SIGKILL and resumed;
worker processes; the application writing meanwhile; bad input."""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading

import boto3
import pytest

from conftest import create_table, scan_all
from test_backfill import plain_items, put_items
from test_rename_move import mixed
from test_upgrade_faults import dyn, kill_when, project

pytestmark = pytest.mark.local

RENAME = '''\
"""phone becomes phoneNumber"""
from boto3.dynamodb.conditions import Attr

revision = "r1400001"
down_revision = None


def upgrade(op):
    op.rename_attribute("phone", "phoneNumber", filter=Attr("Type").eq("User"))


def downgrade(op):
    op.rename_attribute("phoneNumber", "phone", filter=Attr("Type").eq("User"))
'''

MOVE = '''\
"""things join their group's collection"""
import os

from boto3.dynamodb.conditions import Attr

revision = "m1400001"
down_revision = None


def into_group(item):
    if item["PK"].startswith("GROUP#"):
        return None  # already there: among them, the items this step writes
    a = int(item["A"])
    return {**item, "PK": f"GROUP#{a % 7}", "SK": f"THING#{a:05d}", "pid": os.getpid()}


def out_of_group(item):
    if item["PK"].startswith("OLD#"):
        return None
    new = {**item, "PK": f"OLD#{int(item['A']):05d}", "SK": "THING"}
    del new["pid"]
    return new


def upgrade(op):
    op.move_items(into_group, filter=Attr("Type").eq("Thing"))


def downgrade(op):
    op.move_items(out_of_group, filter=Attr("Type").eq("Thing"))
'''


def things(n: int) -> list[dict]:
    return [{"PK": f"OLD#{i:05d}", "SK": "THING", "Type": "Thing", "A": i} for i in range(n)]


def moved_once(client, table: str, n: int) -> list[dict]:
    """Every item exactly once, under its new key; no old key left."""
    items = [i for i in plain_items(client, table) if i.get("Type") == "Thing"]
    assert not [i["PK"] for i in items if i["PK"].startswith("OLD#")], "an old key is left"
    assert sorted(int(i["A"]) for i in items) == list(range(n)), "an item is missing or doubled"
    assert all((i["PK"], i["SK"]) == (f"GROUP#{int(i['A']) % 7}", f"THING#{int(i['A']):05d}") for i in items)
    return items


def error_lines(r: subprocess.CompletedProcess) -> list[str]:
    assert "Traceback" not in r.stderr, r.stderr
    return [line for line in r.stderr.splitlines() if line.startswith("error:")]


def test_rename_with_clashes_fails_naming_them_then_resumes_and_downgrades(ddb_local, local_client, tmp_path):
    table = create_table(local_client)
    put_items(local_client, table, mixed())
    root = project(tmp_path, table, ("r1400001_rename", RENAME), segments=4, page_size=20)
    before = scan_all(local_client, table)

    # the dry run counts them, names them, writes nothing
    r = dyn(root, ddb_local.endpoint_url, "upgrade", "head", "--dry-run", "--json")
    assert r.returncode == 0, r.stderr
    counts = json.loads(r.stdout)["steps"][0]["ops"][0]["counts"]
    assert (counts["updated"], counts["clashes"], len(counts["clash_keys"])) == (80, 40, 40)
    assert scan_all(local_client, table) == before
    r = dyn(root, ddb_local.endpoint_url, "upgrade", "head", "--dry-run")
    assert "would rename 80 items" in r.stdout and "40 clashes left as they were" in r.stdout, r.stdout

    # the run renames everything else, then fails naming the clashes; the step stays in progress
    r = dyn(root, ddb_local.endpoint_url, "upgrade", "head")
    assert r.returncode == 1
    lines = error_lines(r)
    assert len(lines) == 1, r.stderr
    assert "40 items were left as they were, not overwritten (has both 'phone' and 'phoneNumber', with " \
           "different values): {PK='USER#" in lines[0] and "and 35 more" in lines[0]
    assert "left in progress" in lines[0] and "dyn upgrade r1400001" in lines[0]
    current = json.loads(dyn(root, ddb_local.endpoint_url, "current", "--json").stdout)
    assert current["dirty"]["revision"] == "r1400001" and current["lock"] is None
    users = [i for i in plain_items(local_client, table) if i.get("Type") == "User"]
    assert sum("phone" in i for i in users) == 40 and sum("phoneNumber" in i for i in users) == 160

    # resolve them (here the old value wins), and the resumed step renames them
    for i in range(4, 200, 5):
        local_client.update_item(TableName=table, Key={"PK": {"S": f"USER#{i:04d}"}, "SK": {"S": "PROFILE"}},
                                 UpdateExpression="REMOVE phoneNumber")
    r = dyn(root, ddb_local.endpoint_url, "upgrade", "head", "--json")
    assert r.returncode == 0, r.stderr
    step = json.loads(r.stdout)["steps"][0]
    assert step["resumed"] and step["counts"]["updated"] == 40 and step["counts"]["clashes"] == 0
    users = {i["PK"]: i for i in plain_items(local_client, table) if i.get("Type") == "User"}
    assert not any("phone" in i for i in users.values())
    assert all(users[f"USER#{i:04d}"]["phoneNumber"] == f"+1-{i:04d}" for i in range(200) if i % 5 != 2)
    posts = [i for i in plain_items(local_client, table) if i.get("Type") == "Post"]
    assert all("phone" in p and "phoneNumber" not in p for p in posts)  # the filter left them alone

    # the replay of `dyn check --drift` runs it as a no-op
    r = dyn(root, ddb_local.endpoint_url, "check", "--drift")
    assert r.returncode == 0, r.stderr

    # the downgrade is the reverse rename
    r = dyn(root, ddb_local.endpoint_url, "downgrade", "base", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["steps"][0]["counts"]["updated"] == 160
    users = [i for i in plain_items(local_client, table) if i.get("Type") == "User"]
    assert sum("phone" in i for i in users) == 160 and not any("phoneNumber" in i for i in users)


def start_dyn(root, endpoint: str, *args: str) -> subprocess.Popen:
    env = {**os.environ, "AWS_ENDPOINT_URL_DYNAMODB": endpoint}
    return subprocess.Popen([sys.executable, "-m", "dynamic.cli", *args], cwd=root, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def test_kill_9_mid_rename_then_resume(ddb_local, local_client, tmp_path):
    table = create_table(local_client)
    n = 3000
    put_items(local_client, table, [{"PK": f"USER#{i:05d}", "SK": "PROFILE", "Type": "User", "phone": f"+{i}"}
                                    for i in range(n)])
    root = project(tmp_path, table, ("r1400001_rename", RENAME), lock_lease_seconds=2, checkpoint_interval=0.25,
                   max_wcu=400, workers=4)
    victim = start_dyn(root, ddb_local.endpoint_url, "upgrade", "head")

    def renamed() -> int:
        return sum(1 for i in scan_all(local_client, table) if "phoneNumber" in i)

    kill_when(victim, renamed, n // 2)
    at_kill = renamed()
    assert at_kill < n
    r = dyn(root, ddb_local.endpoint_url, "upgrade", "head", "--json")
    assert r.returncode == 0, r.stderr
    step = json.loads(r.stdout)["steps"][0]
    assert step["resumed"]
    users = [i for i in scan_all(local_client, table) if i.get("Type") == {"S": "User"}]
    assert len(users) == n
    assert all("phone" not in i and i["phoneNumber"]["S"] == f"+{int(i['PK']['S'][5:])}" for i in users)
    # exactly what was left: renamed items no longer match the scan (it asks for `phone`)
    assert step["counts"]["updated"] == n - at_kill
    assert step["counts"]["matched"] < 0.6 * n


def test_kill_9_mid_move_then_resume(ddb_local, local_client, tmp_path):
    """Every item exactly once under its new key, no old key left, nothing duplicated: the
    moves before the kill are whole (a transaction), the resumed run does the rest."""
    table = create_table(local_client)
    n = 1500
    put_items(local_client, table, things(n))
    root = project(tmp_path, table, ("m1400001_move", MOVE), lock_lease_seconds=2, checkpoint_interval=0.25,
                   max_wcu=400, workers=4, segments=8)
    victim = start_dyn(root, ddb_local.endpoint_url, "upgrade", "head")

    def moved() -> int:
        return sum(1 for i in scan_all(local_client, table) if i["PK"]["S"].startswith("GROUP#"))

    kill_when(victim, moved, n // 2)
    at_kill = moved()
    assert at_kill < n
    assert len([i for i in scan_all(local_client, table) if i.get("Type") == {"S": "Thing"}]) == n
    r = dyn(root, ddb_local.endpoint_url, "upgrade", "head", "--json")
    assert r.returncode == 0, r.stderr
    step = json.loads(r.stdout)["steps"][0]
    assert step["resumed"]
    moved_once(local_client, table, n)
    c = step["counts"]
    assert (c["moved"], c["already_moved"], c["clashes"], c["gone"]) == (n - at_kill, 0, 0, 0)

    # the downgrade moves them back
    r = dyn(root, ddb_local.endpoint_url, "downgrade", "base", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["steps"][0]["counts"]["moved"] == n
    items = [i for i in plain_items(local_client, table) if i.get("Type") == "Thing"]
    assert sorted(i["PK"] for i in items) == [f"OLD#{i:05d}" for i in range(n)]
    assert all(i["SK"] == "THING" and "pid" not in i for i in items)


def test_app_writes_during_a_move_are_kept(ddb_local, local_client, tmp_path):
    """The application increments a counter on old items while `dyn` moves them (its writes
    require the item to exist, as an update of a live item does). Every increment that
    succeeded is in the moved item: a move re-decides an item changed after its scan.
    (The counter exists from the start: an attribute the application *adds* is one no
    condition can see unless transform asked for it; docs/operations.md says so.)"""
    table = create_table(local_client)
    n = 800
    put_items(local_client, table, [{**t, "hits": 0} for t in things(n)])
    root = project(tmp_path, table, ("m1400001_move", MOVE), max_wcu=300, workers=4, segments=4)
    app = boto3.client("dynamodb", endpoint_url=ddb_local.endpoint_url, region_name="us-east-1")
    done: dict[int, int] = {}
    stop = threading.Event()

    def application():
        rng = random.Random(14)
        while not stop.is_set():
            i = rng.randrange(n)
            try:
                app.update_item(TableName=table, Key={"PK": {"S": f"OLD#{i:05d}"}, "SK": {"S": "THING"}},
                                UpdateExpression="SET hits = hits + :one",
                                ConditionExpression="attribute_exists(PK)",
                                ExpressionAttributeValues={":one": {"N": "1"}})
                done[i] = done.get(i, 0) + 1
            except app.exceptions.ConditionalCheckFailedException:
                pass  # moved already: the app would write the new key now
            except app.exceptions.TransactionConflictException:
                pass  # the move's transaction holds it: not applied

    proc = start_dyn(root, ddb_local.endpoint_url, "upgrade", "head", "--json")
    t = threading.Thread(target=application)
    t.start()
    try:
        _, err = proc.communicate(timeout=300)
    finally:
        stop.set()
        t.join()
    assert proc.returncode == 0, err
    items = moved_once(local_client, table, n)
    hits = {int(i["A"]): int(i["hits"]) for i in items}
    assert sum(done.values()) > 200
    assert {i: h for i, h in hits.items() if h != done.get(i, 0)} == {}, "an application write was lost"
    history = json.loads(dyn(root, ddb_local.endpoint_url, "history", "--applied", "--json").stdout)[0]
    assert history["counts"]["moved"] == n and history["counts"]["conflicts"] > 0


def test_worker_processes_rename_and_move(ddb_local, local_client, tmp_path):
    table = create_table(local_client)
    n = 900
    put_items(local_client, table, things(n) + [{"PK": f"USER#{i:04d}", "SK": "PROFILE", "Type": "User",
                                                 "phone": f"+{i}"} for i in range(300)])
    both = MOVE.replace('    op.move_items(into_group, filter=Attr("Type").eq("Thing"))\n',
                        '    op.move_items(into_group, filter=Attr("Type").eq("Thing"))\n'
                        '    op.rename_attribute("phone", "phoneNumber", filter=Attr("Type").eq("User"))\n')
    root = project(tmp_path, table, ("m1400001_both", both), segments=8)
    r = dyn(root, ddb_local.endpoint_url, "upgrade", "head", "--processes", "2", "--json")
    assert r.returncode == 0, r.stderr
    items = moved_once(local_client, table, n)
    pids = {i["pid"] for i in items}
    assert len(pids) == 2 and os.getpid() not in pids  # moved in two worker processes
    ops = json.loads(r.stdout)["steps"][0]["ops"]
    assert ops[0]["op"] == "move_items" and ops[0]["counts"]["moved"] == n
    assert ops[1]["op"] == "rename_attribute" and ops[1]["counts"]["updated"] == 300
    users = [i for i in plain_items(local_client, table) if i.get("Type") == "User"]
    assert len(users) == 300 and all("phone" not in u and "phoneNumber" in u for u in users)


def test_workers_without_fork_find_both_operations_again(ddb_local, local_client, tmp_path, monkeypatch):
    """Without fork a worker loads the revision file and takes the function of the N-th data
    operation: the move's transform (closure-free here) and the rename's names."""
    from test_processes import upgrade_in_spawned_workers

    table = create_table(local_client)
    put_items(local_client, table, things(300) + [{"PK": f"USER#{i:04d}", "SK": "PROFILE", "Type": "User",
                                                   "phone": f"+{i}"} for i in range(100)])
    both = MOVE.replace('    op.move_items(into_group, filter=Attr("Type").eq("Thing"))\n',
                        '    op.rename_attribute("phone", "phoneNumber", filter=Attr("Type").eq("User"))\n'
                        '    op.move_items(into_group, filter=Attr("Type").eq("Thing"))\n')
    root = project(tmp_path, table, ("m1400001_both", both), segments=4)
    upgrade_in_spawned_workers(monkeypatch, root, ddb_local.endpoint_url)
    items = moved_once(local_client, table, 300)
    assert len({i["pid"] for i in items}) == 2
    users = [i for i in plain_items(local_client, table) if i.get("Type") == "User"]
    assert all("phone" not in u and "phoneNumber" in u for u in users)


@pytest.mark.parametrize("body, want", [
    ('op.rename_attribute("phone", "phone")', "op.rename_attribute: old and new are the same name 'phone'"),
    ('op.rename_attribute("", "x")', "op.rename_attribute: old must be an attribute name"),
    ('op.rename_attribute("SK", "Kind")', "op.rename_attribute: 'SK' is a key attribute of table"),
    ('op.rename_attribute("G", "H")', "op.rename_attribute: 'G' is a key attribute of index ByG: renaming it "
                                      "drops every renamed item from that index; pass force=True"),
    ('op.rename_attribute("phone", "x", filter="Type = User")', "filter must be a boto3 condition"),
    ("op.move_items({'PK': 'x'})", "op.move_items: transform must be a callable"),
    ("op.move_items(lambda item: None, filter=True)", "filter must be a boto3 condition"),
], ids=["same", "empty", "key", "index-key", "rename-filter", "not-callable", "move-filter"])
def test_bad_input_is_one_line_and_writes_nothing(ddb_local, local_client, tmp_path, body, want):
    table = create_table(local_client)
    local_client.update_table(TableName=table, AttributeDefinitions=[{"AttributeName": "G", "AttributeType": "S"}],
                              GlobalSecondaryIndexUpdates=[{"Create": {
                                  "IndexName": "ByG", "KeySchema": [{"AttributeName": "G", "KeyType": "HASH"}],
                                  "Projection": {"ProjectionType": "KEYS_ONLY"}}}])
    put_items(local_client, table, mixed(20))
    local_client.update_item(TableName=table, Key={"PK": {"S": "USER#0000"}, "SK": {"S": "PROFILE"}},
                             UpdateExpression="SET G = :g", ExpressionAttributeValues={":g": {"S": "g"}})
    before = scan_all(local_client, table)
    source = RENAME.replace('    op.rename_attribute("phone", "phoneNumber", filter=Attr("Type").eq("User"))',
                            f"    {body}", 1)
    root = project(tmp_path, table, ("r1400001_bad", source))
    r = dyn(root, ddb_local.endpoint_url, "upgrade", "head")
    assert r.returncode == 2, r.stderr
    lines = error_lines(r)
    assert len(lines) == 1 and want in lines[0], r.stderr
    assert "it wrote nothing: the table is unchanged" in lines[0]
    after = [i for i in scan_all(local_client, table) if i["PK"]["S"] != "_dyn"]
    assert after == before
    current = json.loads(dyn(root, ddb_local.endpoint_url, "current", "--json").stdout)
    assert current["dirty"] is None and current["heads"] == [] and current["lock"] is None
