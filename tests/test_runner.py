"""The runner on DynamoDB Local: moving a real table along the chain, concurrency, crashes,
and bad inputs that must leave the table byte-for-byte unchanged."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import create_table, scan_all
from dynamic.cli import app

pytestmark = pytest.mark.local
cli = CliRunner()

COUNTER_REV = '''\
"""{doc}"""
from boto3.dynamodb.conditions import Attr

revision = {rev!r}
down_revision = {down!r}


def upgrade(op):
    op.backfill(lambda item: {{"{attr}": item.get("{attr}", 0) + 1}}, filter=Attr("Type").eq("Thing"))


def downgrade(op):
    op.remove_attributes(["{attr}"], filter=Attr("Type").eq("Thing"))
'''


class Project:
    """A throwaway dyn project in a temp dir, pointed at one table on DynamoDB Local."""

    def __init__(self, root: Path, table: str, endpoint: str, lease: float = 60):
        self.root, self.table, self.endpoint = root, table, endpoint
        (root / "migrations" / "versions").mkdir(parents=True, exist_ok=True)
        (root / "dyn.toml").write_text(
            f'[dyn]\ntable = "{table}"\nscript_location = "migrations"\n'
            f'endpoint_url = "{endpoint}"\nlock_lease_seconds = {lease}\n')

    def rev(self, rev: str, down, attr: str | None = None, source: str | None = None) -> Path:
        p = self.root / "migrations" / "versions" / f"{rev}_r.py"
        p.write_text(source or COUNTER_REV.format(doc=f"count {attr}", rev=rev, down=down, attr=attr))
        return p

    def env(self) -> dict:
        return {**os.environ, "AWS_ENDPOINT_URL_DYNAMODB": self.endpoint}

    def dyn(self, *args: str, check: bool = True):
        old = os.getcwd()
        os.chdir(self.root)
        try:
            r = cli.invoke(app, list(args))
        finally:
            os.chdir(old)
        if check:
            assert r.exit_code == 0, (r.stdout, r.stderr)
        return r

    def json(self, *args: str):
        return json.loads(self.dyn(*args, "--json").stdout)

    def spawn(self, *args: str, **kw) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "dynamic.cli", *args], cwd=self.root, env=self.env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def seed(client, table, n=50, sort_key=True):
    for i in range(n):
        item = {"PK": {"S": f"T#{i}"}, "Type": {"S": "Thing"}, "n": {"N": str(i)}}
        if sort_key:
            item["SK"] = {"S": "T"}
        client.put_item(TableName=table, Item=item)


def three_counters(client, endpoint: str, root: Path) -> Project:
    """A seeded table and a project of three counting revisions: aaaa11 -> bbbb22 -> cccc33."""
    table = create_table(client)
    seed(client, table)
    p = Project(root, table, endpoint)
    p.client = client
    for rev, down, attr in (("aaaa11", None, "c1"), ("bbbb22", "aaaa11", "c2"), ("cccc33", "bbbb22", "c3")):
        p.rev(rev, down, attr)
    return p


@pytest.fixture(params=[True, False], ids=["pk+sk", "pk-only"])
def proj(request, local_client, ddb_local, tmp_path):
    table = create_table(local_client, sort_key=request.param)
    seed(local_client, table, sort_key=request.param)
    p = Project(tmp_path, table, ddb_local.endpoint_url)
    p.client = local_client
    p.sort_key = request.param
    p.rev("aaaa11", None, "c1")
    p.rev("bbbb22", "aaaa11", "c2")
    p.rev("cccc33", "bbbb22", "c3")
    return p


def things(p):
    return [i for i in scan_all(p.client, p.table) if i.get("Type", {}).get("S") == "Thing"]


def counts(p, attr):
    return sorted({int(i[attr]["N"]) if attr in i else 0 for i in things(p)})


def test_upgrade_downgrade_cycle(proj):
    r = proj.json("upgrade", "head")
    assert [s["revision"] for s in r["steps"]] == ["aaaa11", "bbbb22", "cccc33"]
    assert r["heads_after"] == ["cccc33"]
    assert counts(proj, "c1") == counts(proj, "c2") == counts(proj, "c3") == [1]
    cur = proj.json("current")
    assert cur["heads"][0]["revision"] == "cccc33" and cur["heads"][0]["is_head"]
    assert "(head)" in proj.dyn("current").stdout
    proj.dyn("check")

    again = proj.json("upgrade", "head")
    assert again["nothing_to_do"]
    assert "nothing to do" in proj.dyn("upgrade", "head").stdout

    proj.dyn("downgrade", "-1")
    assert counts(proj, "c3") == [0] and counts(proj, "c2") == [1]
    r = proj.dyn("check", check=False)
    assert r.exit_code == 3 and "cccc33" in r.stderr

    proj.dyn("downgrade", "base")
    assert counts(proj, "c1") == [0]
    assert proj.json("current")["heads"] == []

    proj.dyn("upgrade", "+1")
    assert proj.json("current")["heads"][0]["revision"] == "aaaa11"
    assert counts(proj, "c1") == [1] and counts(proj, "c2") == [0]

    applied = proj.json("history", "--applied")
    assert [(h["revision"], h["direction"]) for h in applied][:2] == [("aaaa11", "up"), ("aaaa11", "down")]
    assert applied[0]["counts"]["updated"] == 50
    assert applied[0]["checksum"] and applied[0]["who"] and applied[0]["dyn_version"]

    hist = proj.json("history")
    assert [h["revision"] for h in hist if h["is_current"]] == ["aaaa11"]

    # no bookkeeping item was ever handed to a backfill
    assert len(things(proj)) == 50


def test_stamp_and_check(proj):
    r = proj.dyn("check", check=False)
    assert r.exit_code == 3
    proj.dyn("stamp", "bbbb22")
    assert proj.json("current")["heads"][0]["revision"] == "bbbb22"
    assert counts(proj, "c1") == [0]  # stamp runs nothing
    r = proj.json("upgrade", "head")
    assert [s["revision"] for s in r["steps"]] == ["cccc33"]
    proj.dyn("check")
    proj.dyn("stamp", "base")
    assert proj.json("current")["heads"] == []


def test_dry_run_writes_nothing(proj):
    before = scan_all(proj.client, proj.table)
    r = proj.json("upgrade", "head", "--dry-run")
    assert r["dry_run"] and len(r["steps"]) == 3
    assert r["steps"][0]["counts"]["updated"] == 50
    assert scan_all(proj.client, proj.table) == before


def test_checksum_change_warns(proj):
    proj.dyn("upgrade", "+1")
    f = proj.root / "migrations" / "versions" / "aaaa11_r.py"
    f.write_text(f.read_text() + "\n# edited\n")
    r = proj.dyn("check", check=False)
    assert "aaaa11" in r.stderr and "changed since it was applied" in r.stderr


BAD_CASES = {
    "syntax error": lambda p: p.rev("dddd44", "cccc33", source="revision = 'dddd44'\ndef upgrade(op:\n"),
    "two heads": lambda p: p.rev("dddd44", "bbbb22", "c4"),
    "cycle": lambda p: p.rev("aaaa11", "cccc33", "c1"),
    "duplicate id": lambda p: (p.root / "migrations" / "versions" / "dup.py").write_text(
        (p.root / "migrations" / "versions" / "bbbb22_r.py").read_text()),
}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_revisions_write_nothing(proj, case):
    proj.dyn("upgrade", "+1")
    before = scan_all(proj.client, proj.table)
    BAD_CASES[case](proj)
    r = proj.dyn("upgrade", "head", check=False)
    assert r.exit_code != 0
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), r.stderr
    assert scan_all(proj.client, proj.table) == before


@pytest.mark.parametrize("args,needle", [
    (("upgrade", "zzzz99"), "zzzz99"),
    (("downgrade", "-5"), "-5"),
    (("downgrade", "cccc33"), "cccc33"),
    (("upgrade", "-1"), "dyn downgrade"),
])
def test_bad_targets_write_nothing(proj, args, needle):
    proj.dyn("upgrade", "+1")
    before = scan_all(proj.client, proj.table)
    r = proj.dyn(*args, check=False)
    assert r.exit_code != 0 and needle in r.stderr, r.stderr
    assert len([l for l in r.stderr.splitlines() if l.strip()]) == 1
    assert scan_all(proj.client, proj.table) == before


def test_downgrade_below_base(proj):
    before = scan_all(proj.client, proj.table)
    r = proj.dyn("downgrade", "-1", check=False)
    assert r.exit_code != 0 and "base" in r.stderr
    assert scan_all(proj.client, proj.table) == before


def test_table_records_unknown_revision(proj):
    proj.dyn("upgrade", "head")
    (proj.root / "migrations" / "versions" / "cccc33_r.py").unlink()
    before = scan_all(proj.client, proj.table)
    for args in (("upgrade", "head"), ("current",), ("check",), ("downgrade", "-1")):
        r = proj.dyn(*args, check=False)
        assert r.exit_code != 0 and "cccc33" in r.stderr and "Traceback" not in r.output, (args, r.stderr)
    assert scan_all(proj.client, proj.table) == before


def test_missing_table(tmp_path, ddb_local):
    p = Project(tmp_path, "no-such-table", ddb_local.endpoint_url)
    p.rev("aaaa11", None, "c1")
    r = p.dyn("upgrade", "head", check=False)
    assert r.exit_code == 1 and "no-such-table" in r.stderr and "does not exist" in r.stderr


@pytest.mark.parametrize("args", [("current",), ("upgrade", "head")])
def test_unreachable_endpoint(tmp_path, args):
    """Nobody listens there: one line naming the endpoint and what to check, within seconds
    (the first call is tried twice, with a short connect timeout), not after ten retries."""
    p = Project(tmp_path, "some-table", "http://127.0.0.1:9")
    p.rev("aaaa11", None, "c1")
    started = time.monotonic()
    r = p.dyn(*args, check=False)
    assert time.monotonic() - started < 8
    assert r.exit_code == 1 and "cannot reach" in r.stderr and "127.0.0.1:9" in r.stderr
    assert "check the endpoint (--endpoint-url, endpoint_url in dyn.toml, AWS_ENDPOINT_URL_DYNAMODB) and the region" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_four_concurrent_deploys(local_client, ddb_local, tmp_path):
    """Guarantee 1: four `dyn upgrade head` at once; each revision applied exactly once."""
    table = create_table(local_client)
    seed(local_client, table, n=300)
    p = Project(tmp_path, table, ddb_local.endpoint_url)
    p.client = local_client
    p.rev("aaaa11", None, "c1")
    p.rev("bbbb22", "aaaa11", "c2")
    procs = [p.spawn("upgrade", "head") for _ in range(4)]
    outs = [pr.communicate(timeout=300) for pr in procs]
    assert [pr.returncode for pr in procs] == [0, 0, 0, 0], outs
    assert counts(p, "c1") == [1] and counts(p, "c2") == [1]
    applied = p.json("history", "--applied")
    assert sorted(h["revision"] for h in applied if h["direction"] == "up") == ["aaaa11", "bbbb22"]
    assert sum("nothing to do" in o for o, _ in outs) >= 1


SLOW_REV = '''\
"""slow idempotent backfill"""
import os, time
from boto3.dynamodb.conditions import Attr

revision = "aaaa11"
down_revision = None


def mark(item):
    if int(item["n"]) == 5:
        open(os.environ["DYN_TEST_MARKER"], "w").close()
    time.sleep(0.02)
    return {"slow": int(item["n"]) * 2}


def upgrade(op):
    op.backfill(mark, filter=Attr("Type").eq("Thing"), segments=1)


def downgrade(op):
    op.remove_attributes(["slow"])
'''


def _killed_runner(local_client, ddb_local, tmp_path, lease: float):
    """A `dyn upgrade head` SIGKILLed mid-backfill on this machine: the lock and the step in
    progress are left behind."""
    table = create_table(local_client)
    seed(local_client, table, n=200)
    p = Project(tmp_path, table, ddb_local.endpoint_url, lease=lease)
    p.client = local_client
    p.rev("aaaa11", None, source=SLOW_REV)
    p.rev("bbbb22", "aaaa11", "c2")
    marker = tmp_path / "marker"
    p.run_env = {**p.env(), "DYN_TEST_MARKER": str(marker)}
    victim = subprocess.Popen([sys.executable, "-m", "dynamic.cli", "upgrade", "head"], cwd=p.root,
                              env=p.run_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while not marker.exists() and time.time() < deadline:
        time.sleep(0.05)
    assert marker.exists()
    time.sleep(0.5)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    cur = p.json("current")
    assert cur["lock"] and cur["lock"]["pid"] == victim.pid and cur["dirty"]["revision"] == "aaaa11"
    return p


def _finishes(p):
    """The interrupted backfill was resumed and every item migrated; the rest applied once."""
    assert all(int(i["slow"]["N"]) == int(i["n"]["N"]) * 2 for i in things(p))
    assert counts(p, "c2") == [1]
    applied = p.json("history", "--applied")
    ups = [h["revision"] for h in applied if h["direction"] == "up"]
    assert sorted(ups) == ["aaaa11", "bbbb22"]
    assert p.json("current")["dirty"] is None


def test_killed_runner_on_this_machine_is_taken_over_at_once(local_client, ddb_local, tmp_path):
    """Guarantee 2, same host: kill -9, and the next deploy need not wait out the lease. The
    lease (60 s) is longer than --lock-timeout (20 s): waiting for it would exit 4."""
    p = _killed_runner(local_client, ddb_local, tmp_path, lease=60)
    t = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "dynamic.cli", "upgrade", "head", "--lock-timeout", "20"],
                       cwd=p.root, env=p.run_env, capture_output=True, text=True, timeout=120)
    took = time.monotonic() - t
    assert r.returncode == 0, r.stderr
    assert "its process is gone from this machine" in r.stderr and "waiting for lock" not in r.stderr, r.stderr
    print(f"after kill -9: `dyn upgrade head` took over the lock and finished in {took:.1f}s (lease 60s)")
    _finishes(p)


# one identity end to end; every other difference (PID namespace, host, an unreadable start
# time, no /proc) is held to the same rule on both beds with a fake clock in test_lock.py
@pytest.mark.parametrize("attr,value", [("lock_boot_id", "another-boot")])
def test_killed_runner_elsewhere_is_taken_over_after_its_lease(local_client, ddb_local, tmp_path, attr, value):
    """Guarantee 2, another machine / container / an identity that cannot be read: the dead
    holder's pid means nothing here, so the next run waits for the lease (3 s), with a countdown."""
    p = _killed_runner(local_client, ddb_local, tmp_path, lease=3)
    local_client.update_item(TableName=p.table, Key={"PK": {"S": "_dyn"}, "SK": {"S": "version"}},
                             UpdateExpression="SET #a = :v", ExpressionAttributeNames={"#a": attr},
                             ExpressionAttributeValues={":v": {"S": value}})
    t = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "dynamic.cli", "upgrade", "head"], cwd=p.root, env=p.run_env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "waiting for lock" in r.stderr and "its lease expired" in r.stderr, r.stderr
    assert "if it is dead, its lease runs out in" in r.stderr  # the countdown, not on a TTY: a plain line
    assert time.monotonic() - t >= 2.5  # it waited for the lease to run out
    _finishes(p)
