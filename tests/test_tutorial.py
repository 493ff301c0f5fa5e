"""docs/tutorial.md as a new user runs it: its shell steps, literally, one after the other in
one bash, in a fresh copy of the repository with nothing on PATH but the system's; then again
after `scripts/demo.sh` has run there. And README's install steps, into a new environment.

The one change made to what the page says: port 8000 becomes a free port (other people's
servers may hold 8000 on a shared machine). The copy's .venv and .dynamodb-local stand for
what `scripts/setup.sh` would download: a venv that sees this one's packages, and the jar."""
from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest

from dynamic import local
from test_docs import blocks, pattern

pytestmark = pytest.mark.local

ROOT = Path(__file__).resolve().parent.parent
TUTORIAL = ROOT / "docs" / "tutorial.md"
EXIT = re.compile(r"#.*?\bexit (\d+)")


def fresh_copy(dest: Path) -> Path:
    """The repository's files as a clone has them (tracked, and new ones not ignored)."""
    names = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split("\0")
    for name in filter(None, names):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    (dest / ".dynamodb-local").symlink_to(ROOT / ".dynamodb-local")
    return dest


def prepared_venv(path: Path) -> None:
    """A venv whose packages come from this one's (no downloads); setup.sh installs dyn in it."""
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True, capture_output=True)
    purelib = Path(subprocess.run([str(path / "bin" / "python"), "-c",
                                   "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  capture_output=True, text=True, check=True).stdout.strip())
    (purelib / "_dyn_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")


def user_env() -> dict:
    """A new user's shell: the system's PATH, no virtualenv, no AWS or dyn settings."""
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if ".venv" not in p)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AWS_", "DYN_", "VIRTUAL_ENV", "PYTEST", "SOCIAL_"))}
    return {**env, "PATH": path}


def tutorial_steps(port: int) -> list[dict]:
    """Every shell step of the page, in order: sh lines, console commands (with the output they
    must print) and the revision file the reader is told to write."""
    steps: list[dict] = []
    text = TUTORIAL.read_text()
    for b in blocks(TUTORIAL):
        if b.lang == "sh":
            for line in b.text.splitlines():
                if line.strip() and not line.strip().startswith("#"):
                    steps.append({"line": line.strip(), "expect": []})
        elif b.lang == "console":
            for line in b.text.splitlines():
                if line.startswith("$ "):
                    steps.append({"line": line[2:].strip(), "expect": []})
                elif line.strip():
                    steps[-1]["expect"].append(line)
        elif b.lang == "python" and re.search(r"^revision\s*=", b.text, re.M):
            before = text[:text.index(b.text.splitlines()[0])]
            path = re.findall(r"Open `([^`]+\.py)`", before)[-1]
            steps.append({"line": f"cat > {path} <<'DYN_TUTORIAL_EOF'\n{b.text}DYN_TUTORIAL_EOF", "expect": []})
        elif b.lang == "python":  # code the reader runs as it is
            steps.append({"line": f"python - <<'DYN_TUTORIAL_EOF'\n{b.text}DYN_TUTORIAL_EOF", "expect": []})
    for s in steps:
        s["line"] = s["line"].replace("8000", str(port))
        m = EXIT.search(s["line"].split("\n")[0])
        s["exit"] = int(m.group(1)) if m else 0
    return steps


def run_steps(root: Path, steps: list[dict], env: dict, out: Path) -> list[tuple[int, str]]:
    """All steps in one bash (cd, export, activate carry over), each one's exit code and output."""
    out.mkdir()
    script = ["set +e"]
    for i, s in enumerate(steps):
        script += ["{", s["line"], f"}} >{shlex.quote(str(out / str(i)))} 2>&1",
                   f"echo $? >{shlex.quote(str(out / f'{i}.rc'))}"]
    r = subprocess.run(["bash", "-c", "\n".join(script)], cwd=root, env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr
    return [(int((out / f"{i}.rc").read_text()), (out / str(i)).read_text()) for i in range(len(steps))]


def check(steps: list[dict], results: list[tuple[int, str]], where: str) -> None:
    for s, (code, output) in zip(steps, results):
        line = s["line"].split("\n")[0]
        background = line.split(" #")[0].rstrip().endswith("&")
        assert code == s["exit"] or background, f"{where}: `{line}` exited {code}, the page says {s['exit']}\n{output}"
        assert "Traceback" not in output, f"{where}: `{line}`\n{output}"
        printed = output.splitlines()
        for exp in s["expect"]:
            assert any(pattern(exp).fullmatch(p) for p in printed), \
                f"{where}: `{line}` did not print {exp!r}; it printed:\n{output}"


def servers_on(port: int) -> list[int]:
    """Processes of a DynamoDB Local on ``port`` (the wrapper and Java)."""
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (d / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and (f"-port {port}" in cmd or f"dynamic.local start --port {port}" in cmd):
            found.append(int(d.name))
    return found


def wait_stopped(port: int, timeout: float = 30) -> float:
    t = time.monotonic()
    while (servers_on(port) or local.port_in_use(port)) and time.monotonic() - t < timeout:
        time.sleep(0.1)
    return time.monotonic() - t


def test_the_tutorial_runs_as_written_from_a_fresh_clone_and_after_the_demo(tmp_path):
    root = fresh_copy(tmp_path / "clone")
    prepared_venv(root / ".venv")
    port = local.free_port()
    env = user_env()
    steps = tutorial_steps(port)
    assert any(s["line"].startswith("bash scripts/setup.sh") for s in steps)
    assert any("socialnetwork.py create" in s["line"] for s in steps)
    try:
        # 1. a fresh clone: the page alone, ending with the stop it documents
        t = time.monotonic()
        check(steps, run_steps(root, steps, env, tmp_path / "fresh"), "fresh clone")
        print(f"tutorial from a fresh clone: {time.monotonic() - t:.0f}s; "
              f"server gone {wait_stopped(port):.1f}s after its stop line")
        assert not servers_on(port), "the tutorial's stop line left DynamoDB Local running"

        # 2. after scripts/demo.sh, whose server keeps running: the page again, as written
        shutil.rmtree(root / "tutorial")
        demo = subprocess.run(["bash", "scripts/demo.sh"], cwd=root, env={**env, "DYN_DEMO_PORT": str(port)},
                              capture_output=True, text=True, timeout=600)
        assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
        assert "kill $(cat .demo-db/server.pid)" in demo.stdout
        results = run_steps(root, steps, env, tmp_path / "after-demo")
        check(steps, results, "after the demo")
        start = next(i for i, s in enumerate(steps) if "dynamic.local start" in s["line"])
        assert f"error: port {port} is already in use" in results[start][1]
        print(f"after the demo: server gone {wait_stopped(port):.1f}s after `kill $(cat .demo-db/server.pid)`")
        assert not servers_on(port), "the demo's server outlived `kill $(cat .demo-db/server.pid)`"
    finally:
        for pid in servers_on(port):
            os.kill(pid, signal.SIGKILL)


def test_the_example_says_what_to_do_without_a_region_or_with_the_table_there(tmp_path, ddb_local):
    env = {**user_env(), "AWS_ENDPOINT_URL_DYNAMODB": ddb_local.endpoint_url, "AWS_ACCESS_KEY_ID": "dynlocal",
           "AWS_SECRET_ACCESS_KEY": "dynlocal", "SOCIAL_TABLE": f"tut-{os.getpid()}-{time.time_ns()}",
           "AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")}
    script = str(ROOT / "example_project" / "socialnetwork.py")
    r = subprocess.run([sys.executable, script, "create"], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.strip() == "error: no AWS region: export AWS_REGION=us-east-1 (or your region)"
    env["AWS_REGION"] = "us-east-1"  # only AWS_REGION, as the tutorial exports it
    r = subprocess.run([sys.executable, script, "create"], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([sys.executable, script, "create"], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().endswith(f"`python {script} create --reset` drops and recreates it"), r.stderr
    r = subprocess.run([sys.executable, script, "create", "--reset"], env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr


def test_install_as_the_readme_says(tmp_path):
    """README's Install: build a wheel from a checkout, install it into a new environment: `dyn`
    is on the PATH there (activated) and works with no checkout around (templates included)."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Install", 1)[1].split("\n## ", 1)[0]
    lines = [l.split(" #")[0].strip() for b in blocks(ROOT / "README.md") if b.lang == "sh" and b.text in section
             for l in b.text.splitlines() if l.strip().startswith("pip ")]
    assert any(l.startswith("pip wheel") for l in lines) and any(l.startswith("pip install dist/") for l in lines)
    checkout = fresh_copy(tmp_path / "dynamic")
    venv = tmp_path / "app" / ".venv"
    prepared_venv(venv)
    script = "\n".join([". .venv/bin/activate", *[l.replace("/path/to/dynamic", str(checkout)) for l in lines
                                                   if not l.startswith("pip install /path")],
                        "cd empty && dyn --version && dyn init migrations --table Tbl && dyn history",
                        "python -c 'import dynamic, sys; print(dynamic.__file__)'"])
    (tmp_path / "app" / "empty").mkdir()
    # no PYTHONPATH either (a worktree's test run sets one): it would put a checkout before the wheel
    env = {k: v for k, v in user_env().items() if k != "PYTHONPATH"}
    r = subprocess.run(["bash", "-ec", script], cwd=tmp_path / "app", env=env, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "dyn 0.1.0" in r.stdout and (tmp_path / "app" / "empty" / "migrations" / "revision.py.j2").is_file()
    assert str(venv) in r.stdout.splitlines()[-1], r.stdout  # the installed wheel, not a checkout
