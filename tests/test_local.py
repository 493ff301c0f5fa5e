"""`python -m dynamic.local start`, the server the tutorial and the demo run, as real processes:
a taken port is an error, SIGTERM (the demo's `kill $(cat .demo-db/server.pid)`) stops Java
and the wrapper, and a relative --db-path keeps the data where the user asked."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest

from dynamic import local

pytestmark = pytest.mark.local


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(x) for x in text.split()]


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is dead, only not reaped yet


def _start(tmp_path: Path, *args: str) -> tuple[subprocess.Popen, int, str]:
    """The wrapper in its own session, as `&` or nohup would leave it; returns it, Java's pid
    and the line it printed."""
    proc = subprocess.Popen([sys.executable, "-m", "dynamic.local", "start", *args], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    line = proc.stdout.readline()
    assert line.startswith("DynamoDB Local on"), (line, proc.stderr.read() if proc.poll() is not None else "")
    java = _children(proc.pid)
    assert len(java) == 1, java
    return proc, java[0], line


def _wait_gone(pid: int, timeout: float = 30) -> float:
    t = time.monotonic()
    while _alive(pid) and time.monotonic() - t < timeout:
        time.sleep(0.05)
    return time.monotonic() - t


def test_a_taken_port_is_an_error_not_a_server(ddb_local):
    """The session's DynamoDB Local holds its port: a second start there must not claim it."""
    t = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "dynamic.local", "start", "--port", str(ddb_local.port)],
                       capture_output=True, text=True, timeout=60)
    print(f"refused in {time.monotonic() - t:.2f}s")
    assert r.returncode != 0
    assert r.stdout == "", r.stdout  # no "DynamoDB Local on ..." line
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: port") and str(ddb_local.port) in lines[0], r.stderr
    assert "--port" in lines[0] and "Traceback" not in r.stderr
    # and the server already there is untouched
    boto3.client("dynamodb", endpoint_url=ddb_local.endpoint_url, region_name="us-east-1").list_tables()


def test_sigterm_stops_java_and_the_wrapper(tmp_path):
    port = local.free_port()
    proc, java, _ = _start(tmp_path, "--port", str(port))
    t = time.monotonic()
    proc.send_signal(signal.SIGTERM)  # what `kill $(cat .demo-db/server.pid)` sends
    try:
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    wrapper_s = time.monotonic() - t
    java_s = _wait_gone(java, 5)
    print(f"SIGTERM: wrapper exited in {wrapper_s:.2f}s, java gone {java_s:.2f}s after that")
    assert code == 0, proc.stderr.read()
    assert not _alive(java), "java outlived the wrapper"
    assert not local.port_in_use(port)


def test_kill_9_of_the_wrapper_takes_java_with_it(tmp_path):
    proc, java, _ = _start(tmp_path, "--port", str(local.free_port()))
    try:
        proc.kill()
        proc.wait(timeout=10)
        gone = _wait_gone(java, 30)
    finally:
        if _alive(java):
            os.kill(java, signal.SIGKILL)
    print(f"SIGKILL of the wrapper: java gone in {gone:.2f}s")
    assert not _alive(java)


def test_java_dying_on_its_own_is_an_error(tmp_path):
    proc, java, _ = _start(tmp_path, "--port", str(local.free_port()))
    os.kill(java, signal.SIGKILL)
    code = proc.wait(timeout=30)
    assert code != 0
    assert "error: DynamoDB Local (java) exited" in proc.stderr.read()


def test_a_relative_db_path_is_relative_to_where_you_run_it(tmp_path):
    port = local.free_port()
    proc, java, line = _start(tmp_path, "--port", str(port), "--db-path", "mydb")
    try:
        assert str(tmp_path / "mydb") in line
        c = boto3.client("dynamodb", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                         aws_access_key_id="x", aws_secret_access_key="x")
        c.create_table(TableName="tbl", AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}],
                       KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}], BillingMode="PAY_PER_REQUEST")
        assert any((tmp_path / "mydb").iterdir()), "DynamoDB Local kept its data somewhere else"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
