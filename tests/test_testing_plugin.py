"""dynamic.testing, the pytest plugin users import: light at load, fixtures that give a fresh
table with the project's migrations, and checks that pass on good migrations and fail — with
a message saying why — on bad ones."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import create_table
from dynamic.config import load_config
from dynamic.errors import MigrationError
from dynamic.testing import (
    DynProject,
    DynTestWarning,
    check_data,
    check_single_head,
    check_up_down_consistency,
    check_upgrade,
)

ROOT = Path(__file__).resolve().parent.parent

REV = '''\
"""{doc}"""
from boto3.dynamodb.conditions import Attr
import dynamic

revision = {rev!r}
down_revision = {down!r}
branch_labels = {labels!r}


def upgrade(op):
{up}


def downgrade(op):
{down_body}
'''

TAG = "    op.backfill(lambda item: {{'{a}': item['Name'].upper()}}, filter=Attr('Type').eq('Thing'))"
UNTAG = "    op.remove_attributes(['{a}'], filter=Attr('Type').eq('Thing'))"


def rev(rid, down=None, up="    pass", down_body="    pass", labels=None, doc=None):
    return rid, REV.format(doc=doc or f"rev {rid}", rev=rid, down=down, labels=labels, up=up,
                           down_body=down_body)


def write_project(root: Path, *revs) -> Path:
    versions = root / "migrations" / "versions"
    versions.mkdir(parents=True)
    (root / "dyn.toml").write_text('[dyn]\ntable = "plugin-${STAGE:-test}"\nscript_location = "migrations"\n')
    for rid, text in revs:
        (versions / f"{rid}_r.py").write_text(text)
    return root


THINGS = [{"PK": f"T#{i}", "SK": "T", "Type": "Thing", "Name": f"thing{i}"} for i in range(30)]


@pytest.fixture
def make(tmp_path, local_client):
    """A DynProject for the given revisions on a fresh DynamoDB Local table seeded with THINGS."""

    def make(*revs, seed=THINGS):
        root = write_project(tmp_path / "p", *revs)
        p = DynProject(load_config(cwd=root, env={}), local_client, create_table(local_client))
        p.put_items(seed)
        return p

    return make


LINEAR = [
    rev("aaaa01", None, TAG.format(a="Upper"), UNTAG.format(a="Upper")),
    rev("aaaa02", "aaaa01", "    op.put_items([{'PK': 'NEW#1', 'SK': 'N', 'Type': 'New'}])",
        "    op.delete_items(filter=Attr('Type').eq('New'))"),
    rev("aaaa03", "aaaa02", TAG.format(a="Again"), UNTAG.format(a="Again")),
]

BRANCHED = [
    rev("bbbb01", None, TAG.format(a="A"), UNTAG.format(a="A")),
    rev("bbbb02", "bbbb01", TAG.format(a="B"), UNTAG.format(a="B"), labels="left"),
    rev("bbbb03", "bbbb01", TAG.format(a="C"), UNTAG.format(a="C"), labels="right"),
    rev("bbbb04", ("bbbb02", "bbbb03"), "    pass"),
]


pytestmark = pytest.mark.local


# ---- the checks on good migrations ----------------------------------------------------

def test_checks_pass_on_good_linear_migrations(make):
    p = make(*LINEAR)
    check_single_head(p)
    assert check_up_down_consistency(p) == ["aaaa01", "aaaa02", "aaaa03"]
    assert p.current() == ("aaaa03",)
    things = p.items()
    assert len(things) == 31 and all(i["Upper"] == i["Name"].upper() for i in things if i["Type"] == "Thing")


def test_upgrade_check_applies_every_revision(make):
    p = make(*LINEAR)
    check_upgrade(p)
    assert p.current() == ("aaaa03",)
    assert p.get_item(PK="NEW#1", SK="N") == {"PK": "NEW#1", "SK": "N", "Type": "New"}


def test_walk_over_a_branch_and_its_merge(make):
    p = make(*BRANCHED)
    assert check_up_down_consistency(p) == ["bbbb01", "bbbb02", "bbbb03", "bbbb04"]
    assert p.current() == ("bbbb04",)


def test_revert_removes_as_little_as_possible(make):
    p = make(*BRANCHED)
    p.upgrade("heads")
    r = p.revert("bbbb04")  # the merge alone
    assert [s.revision for s in r.steps] == ["bbbb04"]
    assert set(p.current()) == {"bbbb02", "bbbb03"}
    r = p.revert("bbbb02")  # no single target takes one branch down alone: its sibling goes too
    assert sorted(s.revision for s in r.steps) == ["bbbb02", "bbbb03"]
    assert p.current() == ("bbbb01",)
    p.upgrade("heads")
    r = p.revert("bbbb01")
    assert sorted(s.revision for s in r.steps) == ["bbbb01", "bbbb02", "bbbb03", "bbbb04"]
    assert p.current() == ()


def test_items_leave_dyns_records_out(make, local_client):
    p = make(*LINEAR)
    p.upgrade("aaaa01")
    raw = local_client.scan(TableName=p.table_name)["Items"]
    assert any(p.is_meta(i) for i in raw)  # the version record is there...
    assert len(p.items()) == len(THINGS)  # ...and not among the application's items
    assert all(i["Type"] == "Thing" for i in p.items())


# ---- the checks on bad migrations -----------------------------------------------------

def test_single_head_fails_on_two_heads(make):
    p = make(rev("cccc01"), rev("cccc02", "cccc01"), rev("cccc03", "cccc01"))
    with pytest.raises(AssertionError, match=r"found 2: cccc02, cccc03.*dyn merge"):
        check_single_head(p)


def test_walk_fails_when_a_downgrade_leaves_a_trace(make):
    p = make(rev("dddd01", None, TAG.format(a="Upper"), "    pass"))
    with pytest.raises(AssertionError, match=r"downgrade of dddd01 did not restore the table: 30 item"):
        check_up_down_consistency(p)


def test_walk_without_state_comparison_accepts_a_lossy_downgrade(tmp_path, local_client):
    root = write_project(tmp_path / "q", rev("dddd01", None, TAG.format(a="Upper"), "    pass"))
    p = DynProject(load_config(cwd=root, env={}), local_client, create_table(local_client))
    p.put_items(THINGS)
    assert check_up_down_consistency(p, compare_state=False) == ["dddd01"]


def test_walk_fails_when_the_second_upgrade_differs(make):
    up = "    import uuid\n    op.put_items([{'PK': 'R#' + uuid.uuid4().hex, 'SK': 'R', 'Type': 'Random'}])"
    p = make(rev("eeee01", None, up, "    op.delete_items(filter=Attr('Type').eq('Random'))"))
    with pytest.raises(AssertionError, match="upgrading eeee01 a second time gave another table"):
        check_up_down_consistency(p)


ONE_WAY = {
    "NotImplementedError": ("    raise NotImplementedError('one way')", None,
                            "its downgrade raises NotImplementedError: one way"),
    "op.irreversible": ("    op.irreversible('one way')", None, "its downgrade calls op.irreversible(): one way"),
    "irreversible =": ("    pass", "one way", "it is declared irreversible (irreversible = ...): one way"),
}


@pytest.mark.parametrize("kind", list(ONE_WAY))
def test_walk_goes_on_above_an_irreversible_revision_and_says_why(make, kind):
    body, declared, why = ONE_WAY[kind]
    rid, text = rev("ffff02", "ffff01", TAG.format(a="Y"), body)
    if declared:
        text += f"\nirreversible = {declared!r}\n"
    p = make(
        rev("ffff01", None, TAG.format(a="X"), UNTAG.format(a="X")),
        (rid, text),
        rev("ffff03", "ffff02", TAG.format(a="Z"), UNTAG.format(a="Z")),
    )
    with pytest.warns(DynTestWarning) as caught:
        walked = check_up_down_consistency(p)
    messages = [str(w.message) for w in caught]
    assert messages == [f"revision ffff02 was upgraded but not downgraded: {why}; the walk goes on above it"]
    assert walked == ["ffff01", "ffff03"]  # the revision above it was walked up, down and up again
    assert p.current() == ("ffff03",)
    assert p.project.store.read().dirty is None


def test_walk_above_an_irreversible_revision_still_catches_a_bad_downgrade(make):
    p = make(
        rev("ffff01", None, TAG.format(a="X"), UNTAG.format(a="X")),
        rev("ffff02", "ffff01", TAG.format(a="Y"), "    op.irreversible('one way')"),
        rev("ffff03", "ffff02", TAG.format(a="Z"), "    pass"),  # leaves Z behind
    )
    with pytest.warns(DynTestWarning), pytest.raises(AssertionError, match="downgrade of ffff03 did not restore"):
        check_up_down_consistency(p)


def test_upgrade_check_fails_when_a_revision_raises(make):
    p = make(rev("gggg01", None, "    raise ValueError('broken revision')"))
    with pytest.raises(MigrationError, match="broken revision"):
        check_upgrade(p)


# ---- data checks ----------------------------------------------------------------------

def test_check_data_seeds_below_the_revision(make):
    p = make(*LINEAR, seed=[])
    seen = []

    def verify(q):
        seen.append("up")
        item = q.get_item(PK="T#new", SK="T")
        # seeded after aaaa01 ran (no Upper), before aaaa03 (Again backfilled onto it)
        assert "Upper" not in item and item["Again"] == "LATE"

    def verify_down(q):
        seen.append("down")
        assert "Again" not in q.get_item(PK="T#new", SK="T")

    result = check_data(p, "aaaa03", seed=[{"PK": "T#new", "SK": "T", "Type": "Thing", "Name": "late"}],
                        verify=verify, verify_downgrade=verify_down)
    assert [s.revision for s in result.steps] == ["aaaa03"]
    assert seen == ["up", "down"]
    assert p.current() == ("aaaa02",)


def test_check_data_reports_a_failed_verification(make):
    p = make(*LINEAR)

    def verify(q):
        assert q.get_item(PK="T#1", SK="T")["Upper"] == "wrong"

    with pytest.raises(AssertionError):
        check_data(p, "aaaa01", verify=verify)


# ---- the plugin as pytest loads it ----------------------------------------------------

def test_plugin_import_is_light():
    code = ("import sys, dynamic.testing; "
            "print(sorted(m for m in sys.modules if m.startswith(('dynamic.', 'moto', 'boto3.session'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = eval(out)
    for heavy in ("dynamic.commands", "dynamic.runner", "dynamic.store", "dynamic.local", "moto"):
        assert heavy not in loaded, f"importing dynamic.testing imported {heavy}"


def inner_pytest(tmp_path: Path, files: dict[str, str], *args: str, endpoint: str | None = None):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(textwrap.dedent(text))
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path), *args]
    if endpoint:
        cmd.append(f"--dyn-endpoint-url={endpoint}")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DYN_", "PYTEST_"))}
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def test_plugin_fixtures_are_prefixed_and_start_nothing(tmp_path):
    r = inner_pytest(tmp_path, {"test_x.py": "def test_nothing():\n    pass\n"}, "--fixtures", "-v")
    assert r.returncode == 0, r.stdout + r.stderr
    section = r.stdout.split("fixtures defined from dynamic.testing", 1)[1].split("\n", 1)[1]
    section = re.split(r"^[-=]{5,}", section, maxsplit=1, flags=re.M)[0]
    names = {line.split()[0] for line in section.splitlines() if line.strip() and not line.startswith(" ")}
    assert {"dyn_project", "dyn_table", "dyn_local", "dyn_client", "dyn_config"} <= names
    assert all(n.startswith("dyn_") for n in names), names
    assert not names & {"ddb_local", "local_client", "moto_client", "any_client", "make_table"}
    r = inner_pytest(tmp_path, {"test_x.py": "def test_nothing():\n    pass\n"},
                     "--dyn-endpoint-url=http://127.0.0.1:9")  # not reachable: nothing may touch it
    assert r.returncode == 0 and "1 passed" in r.stdout, r.stdout + r.stderr


def test_fixtures_end_to_end_on_local(tmp_path, ddb_local, local_client):
    """A user's suite: ini options for the config and the key schema, the imported tests, a
    data check; the tables it made are gone afterwards."""
    write_project(tmp_path / "app", rev("hhhh01", None, TAG.format(a="Upper"), UNTAG.format(a="Upper")))
    files = {
        "pytest.ini": "[pytest]\ndyn_config = app/dyn.toml\ndyn_table_keys = id:S\n",
        "tests/conftest.py": """
            import json, pathlib, pytest

            @pytest.fixture
            def dyn_seed_items():
                return [{"id": f"t{i}", "Type": "Thing", "Name": f"n{i}"} for i in range(5)]

            @pytest.fixture(autouse=True)
            def record(request, dyn_table):
                yield
                with open(pathlib.Path(__file__).parent / "tables.txt", "a") as f:
                    f.write(dyn_table + "\\n")
            """,
        "tests/test_app.py": """
            from dynamic.testing import test_single_head_revision, test_upgrade, test_up_down_consistency
            from dynamic.testing import check_data

            def test_key_schema_and_seed(dyn_project):
                keys = dyn_project.describe()["KeySchema"]
                assert keys == [{"AttributeName": "id", "KeyType": "HASH"}]
                assert dyn_project.table_name.startswith("plugin-test-test-")
                assert len(dyn_project.items()) == 5

            def test_data(dyn_project):
                # its own starting items, in the same file as dyn_seed_items' five: no collision
                def verify(p):
                    assert [(i["id"], i["Upper"]) for i in p.items()] == [("x", "LATE")]

                check_data(dyn_project, "hhhh01", seed=[{"id": "x", "Type": "Thing", "Name": "late"}],
                           verify=verify)

            def test_data_on_the_fixture_items(dyn_project):
                def verify(p):
                    assert sorted(i["Upper"] for i in p.items()) == [f"N{i}" for i in range(5)]

                check_data(dyn_project, "hhhh01", verify=verify)

            def test_data_from_an_empty_table(dyn_project):
                def verify(p):
                    assert p.items() == []

                check_data(dyn_project, "hhhh01", seed=[], verify=verify)
            """,
    }
    r = inner_pytest(tmp_path, files, "tests", endpoint=ddb_local.endpoint_url)
    assert r.returncode == 0 and "7 passed" in r.stdout, r.stdout[-3000:] + r.stderr[-2000:]
    made = (tmp_path / "tests" / "tables.txt").read_text().split()
    assert len(made) == 7 and len(set(made)) == 7  # a fresh table per test...
    existing = set(local_client.list_tables()["TableNames"])
    assert not existing & set(made)  # ...deleted after it


def test_fixtures_on_moto(tmp_path):
    """The same imported tests on moto: no Java, no server (an unreachable endpoint proves it)."""
    write_project(tmp_path / "app", *LINEAR)
    files = {
        "pytest.ini": "[pytest]\ndyn_config = app/dyn.toml\ndyn_backend = moto\n",
        "test_app.py": """
            from dynamic.testing import test_upgrade, test_up_down_consistency

            def test_backend(dyn_backend, dyn_client):
                assert dyn_backend == "moto"
                assert "amazonaws.com" in dyn_client.meta.endpoint_url
            """,
    }
    r = inner_pytest(tmp_path, files, endpoint="http://127.0.0.1:9")
    assert r.returncode == 0 and "3 passed" in r.stdout, r.stdout[-3000:] + r.stderr[-2000:]


def test_bad_table_keys_option_is_a_usage_error(tmp_path):
    write_project(tmp_path / "app", *LINEAR)
    files = {"pytest.ini": "[pytest]\ndyn_config = app/dyn.toml\ndyn_table_keys = PK\n",
             "test_app.py": "def test_t(dyn_table_schema):\n    pass\n"}
    r = inner_pytest(tmp_path, files)
    assert r.returncode != 0 and "dyn_table_keys" in r.stdout + r.stderr


def test_a_protected_production_config_still_tests(tmp_path, local_client):
    """dyn.toml says protected + backups (for production); the throwaway test table needs neither."""
    root = write_project(tmp_path / "prod", *LINEAR)
    (root / "dyn.toml").write_text(
        '[dyn]\ntable = "app-prod"\nscript_location = "migrations"\nprotected = true\nbackup = "pitr"\n')
    p = DynProject(load_config(cwd=root, env={}), local_client, create_table(local_client))
    check_upgrade(p)
    assert p.current() == ("aaaa03",)
