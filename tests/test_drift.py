"""`dyn check --drift` and `dyn revision --autogenerate` on DynamoDB Local, through the CLI.

Changes "made outside dyn" are raw boto3 calls, as the console or another tool makes them.
Every command an error message tells the user to run is run here, as printed.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import create_table
from dynamic import commands
from dynamic.cli import app
from dynamic.config import load_config
from dynamic.errors import TableError

pytestmark = pytest.mark.local
cli = CliRunner()

GSI1_REV = '''\
"""post and comments on gsi1"""
from boto3.dynamodb.conditions import Attr

revision = "aaaa01"
down_revision = None


def upgrade(op):
    op.create_gsi("GSI1", partition_key=("GSI1PK", "S"), sort_key=("GSI1SK", "S"))
    result = op.backfill(lambda item: {"GSI1PK": item["PK"], "GSI1SK": item["SK"]},
                         filter=Attr("Type").eq("Post"))
    print(f"backfilled {result.updated} posts")  # the replay's zero counts must do here too


def downgrade(op):
    op.remove_attributes(["GSI1PK", "GSI1SK"], filter=Attr("Type").eq("Post"))
    op.delete_gsi("GSI1")
'''

SETTINGS_REV = '''\
"""expiry, a stream and deletion protection"""
revision = "aaaa02"
down_revision = "aaaa01"


def upgrade(op):
    op.update_ttl("ExpiresAt")
    desc = op.client.describe_table(TableName=op.table_name)["Table"]
    if not desc.get("StreamSpecification", {}).get("StreamEnabled"):
        op.update_table(StreamSpecification={"StreamEnabled": True, "StreamViewType": "KEYS_ONLY"})
    op.update_table(DeletionProtectionEnabled=True)


def downgrade(op):
    op.update_table(DeletionProtectionEnabled=False)
    op.update_table(StreamSpecification={"StreamEnabled": False})
    op.update_ttl("ExpiresAt", enabled=False)
'''


class Project:
    """A throwaway dyn project (made with `dyn init`) on a fresh table of DynamoDB Local."""

    def __init__(self, root: Path, client, endpoint: str, **table_kw):
        self.root, self.client, self.endpoint = root, client, endpoint
        self.table = create_table(client, **table_kw)
        root.mkdir(parents=True, exist_ok=True)
        for i in range(6):
            client.put_item(TableName=self.table, Item={"PK": {"S": f"USER#{i}"}, "SK": {"S": f"POST#{i}"},
                                                        "Type": {"S": "Post"}})
        self.dyn("init", "migrations", "--table", self.table)
        with open(root / "dyn.toml", "a") as f:
            f.write(f'endpoint_url = "{endpoint}"\n')
        self.versions = root / "migrations" / "versions"

    def rev(self, source: str) -> None:
        rid = re.search(r'^revision = "(\w+)"', source, re.M).group(1)
        (self.versions / f"{rid}_r.py").write_text(source)

    def dyn(self, *args: str, code: int = 0, env: dict | None = None):
        old = os.getcwd()
        os.chdir(self.root)
        try:
            r = cli.invoke(app, list(args), env=env)
        finally:
            os.chdir(old)
        assert r.exit_code == code, (args, r.exit_code, r.stdout, r.stderr)
        assert "Traceback" not in r.output
        return r

    def error(self, *args: str, code: int) -> str:
        """The one `error:` line of a failing command (and nothing on stderr besides)."""
        r = self.dyn(*args, code=code)
        lines = [line for line in r.stderr.splitlines() if line.strip()]
        assert [line for line in lines if line.startswith("error: ")] == lines[-1:], r.stderr
        return lines[-1]

    def run_suggested(self, line: str) -> list:
        """Run every `dyn ...` command a message names, as printed."""
        cmds = re.findall(r"`(dyn [^`]+)`", line)
        assert cmds, f"no command in {line!r}"
        return [self.dyn(*shlex.split(c)[1:]) for c in cmds]

    def project(self) -> commands.Project:
        return commands.Project(load_config(cwd=self.root), client=self.client)

    def describe(self) -> dict:
        return self.client.describe_table(TableName=self.table)["Table"]

    def indexes(self) -> dict:
        """Each index's keys, projection (its attributes as a set: their order is not kept) and status."""
        return {g["IndexName"]: (g["KeySchema"], g["Projection"]["ProjectionType"],
                                 set(g["Projection"].get("NonKeyAttributes", ())), g["IndexStatus"])
                for g in self.describe().get("GlobalSecondaryIndexes", [])}

    def files(self) -> set:
        return {p.name for p in self.versions.iterdir()}

    # ---- changes made outside dyn ---------------------------------------------------
    def wait_indexes(self) -> None:
        for _ in range(300):
            gsis = self.describe().get("GlobalSecondaryIndexes", [])
            if all(g["IndexStatus"] == "ACTIVE" for g in gsis):
                return
            time.sleep(0.1)
        raise AssertionError("indexes did not settle")

    def console_create_gsi(self, name: str, pk: str, projection: dict | None = None, throughput: dict | None = None):
        create = {"IndexName": name, "KeySchema": [{"AttributeName": pk, "KeyType": "HASH"}],
                  "Projection": projection or {"ProjectionType": "ALL"}}
        if throughput:
            create["ProvisionedThroughput"] = throughput
        self.client.update_table(TableName=self.table,
                                 AttributeDefinitions=[{"AttributeName": pk, "AttributeType": "S"}],
                                 GlobalSecondaryIndexUpdates=[{"Create": create}])
        self.wait_indexes()

    def console_delete_gsi(self, name: str) -> None:
        self.client.update_table(TableName=self.table, GlobalSecondaryIndexUpdates=[{"Delete": {"IndexName": name}}])
        for _ in range(300):
            if name not in self.indexes():
                return
            time.sleep(0.1)
        raise AssertionError(f"{name} was not deleted")


@pytest.fixture
def proj(tmp_path, local_client, ddb_local):
    return Project(tmp_path / "p", local_client, ddb_local.endpoint_url)


def test_gsi_added_and_one_deleted_outside_dyn_autogenerate_then_drift_is_clean(proj):
    proj.rev(GSI1_REV)
    proj.dyn("upgrade", "head")
    clean = proj.dyn("check", "--drift")
    assert clean.stdout.strip() == (f"table {proj.table} is at head (aaaa01) and matches what its applied "
                                    "revisions declare")
    assert "backfilled 0 posts" in clean.stderr  # what a replayed revision prints goes to stderr
    assert json.loads(proj.dyn("check", "--drift", "--json").stdout) == []

    proj.console_create_gsi("ByEmail", "Email", {"ProjectionType": "INCLUDE", "NonKeyAttributes": ["Name", "Age"]})
    proj.console_delete_gsi("GSI1")

    r = proj.dyn("check", "--drift", code=7)
    assert r.stdout.splitlines() == [
        "index ByEmail is on the table (keys (Email S), projection INCLUDE Age, Name) but no applied revision "
        "declares it",
        "index GSI1 is declared by revision aaaa01 (keys (GSI1PK S, GSI1SK S), projection ALL) but is not on the table",
    ]
    error = proj.error("check", "--drift", code=7)
    assert error.startswith(f"error: table {proj.table} differs from what its applied revisions declare "
                            "(2 differences)")
    as_json = json.loads(proj.dyn("check", "--drift", "--json", code=7).stdout)
    assert [(d["kind"], d["name"], d["declared_by"]) for d in as_json] == [
        ("index_not_declared", "ByEmail", None), ("index_missing", "GSI1", "aaaa01")]
    assert as_json[0]["actual"]["projection"] == ["Age", "Name"]
    assert proj.dyn("check").stdout.strip() == f"table {proj.table} is at head (aaaa01)"  # unchanged without --drift

    # the message's commands, as printed: autogenerate, then upgrade
    table_before = proj.indexes()
    files_before = proj.files()
    made, upgraded = proj.run_suggested(error)
    assert made.stdout.splitlines()[:2] == [f"found: {line}" for line in r.stdout.splitlines()]
    (new,) = proj.files() - files_before
    path = proj.versions / new
    assert made.stdout.splitlines()[-1] == f"created {path}"
    text = path.read_text()
    assert '"""adopt changes made outside dyn\n\ndyn revision --autogenerate found 2 difference(s)' in text
    assert 'down_revision = \'aaaa01\'' in text
    assert ('    op.create_gsi("ByEmail", partition_key=("Email", "S"), projection=["Age", "Name"])\n'
            '    # index GSI1 is declared by revision aaaa01') in text
    assert "    op.delete_gsi(\"GSI1\")\n" in text
    assert ("def downgrade(op):\n    \"\"\"Undo upgrade(); raise NotImplementedError if it cannot be undone.\"\"\"\n"
            '    op.create_gsi("GSI1", partition_key=("GSI1PK", "S"), sort_key=("GSI1SK", "S"), projection="ALL")\n'
            '    op.delete_gsi("ByEmail")\n') in text
    assert "index ByEmail already there" in upgraded.stdout
    assert "index GSI1 already gone" in upgraded.stdout
    assert proj.indexes() == table_before  # adopting changed nothing on the table
    proj.dyn("check")
    proj.dyn("check", "--drift")
    nothing = proj.dyn("revision", "--autogenerate", "-m", "again")
    assert nothing.stdout.strip() == (f"no drift: table {proj.table} matches what its applied revisions declare; "
                                      "no revision written")
    assert proj.files() == files_before | {new}

    # its downgrade gives back what the revisions below declare; upgrading again, what the table had
    proj.dyn("downgrade", "-1")
    assert set(proj.indexes()) == {"GSI1"}
    assert commands.drift(proj.project())["differences"] == []
    proj.dyn("upgrade", "head")
    assert proj.indexes() == table_before
    proj.dyn("check", "--drift")


def test_ttl_and_settings_changed_outside_dyn_are_adopted(proj):
    proj.rev(GSI1_REV)
    proj.rev(SETTINGS_REV)
    proj.dyn("upgrade", "head")
    proj.dyn("check", "--drift")
    c, t = proj.client, proj.table
    c.update_time_to_live(TableName=t, TimeToLiveSpecification={"Enabled": False, "AttributeName": "ExpiresAt"})
    c.update_table(TableName=t, StreamSpecification={"StreamEnabled": False})
    c.update_table(TableName=t, DeletionProtectionEnabled=False)
    r = proj.dyn("check", "--drift", code=7)
    assert r.stdout.splitlines() == [
        "TTL: revision aaaa02 turns it on for ExpiresAt; the table has it off",
        "StreamSpecification: revision aaaa02 declares a KEYS_ONLY stream; the table has no stream",
        "DeletionProtectionEnabled: revision aaaa02 declares deletion protection on; the table has deletion "
        "protection off",
    ]
    proj.dyn("revision", "--autogenerate", "-m", "as the table is", "--rev-id", "adopt01")
    before = (proj.describe(), c.describe_time_to_live(TableName=t)["TimeToLiveDescription"])
    up = proj.dyn("upgrade", "head")
    assert "TTL ExpiresAt already off" in up.stdout
    assert "table StreamSpecification already so" in up.stdout
    after = (proj.describe(), c.describe_time_to_live(TableName=t)["TimeToLiveDescription"])
    assert (after[0].get("StreamSpecification"), after[0]["DeletionProtectionEnabled"], after[1]) == \
        (before[0].get("StreamSpecification"), before[0]["DeletionProtectionEnabled"], before[1])
    proj.dyn("check", "--drift")

    proj.dyn("downgrade", "-1")
    desc = proj.describe()
    assert desc["StreamSpecification"] == {"StreamEnabled": True, "StreamViewType": "KEYS_ONLY"}
    assert desc["DeletionProtectionEnabled"] is True
    assert c.describe_time_to_live(TableName=t)["TimeToLiveDescription"]["TimeToLiveStatus"] == "ENABLED"
    assert commands.drift(proj.project())["differences"] == []
    proj.dyn("upgrade", "head")
    proj.dyn("check", "--drift")
    c.update_table(TableName=t, DeletionProtectionEnabled=False)  # let the session's server drop it


def test_an_index_redefined_outside_dyn_is_replaced_on_downgrade_and_upgrade(proj):
    proj.rev(GSI1_REV)
    proj.dyn("upgrade", "head")
    proj.console_delete_gsi("GSI1")
    proj.console_create_gsi("GSI1", "GSI1PK", {"ProjectionType": "KEYS_ONLY"})
    r = proj.dyn("check", "--drift", code=7)
    assert r.stdout.strip() == ("index GSI1 differs: revision aaaa01 declares keys (GSI1PK S, GSI1SK S), projection "
                                "ALL; the table has keys (GSI1PK S), projection KEYS_ONLY")
    proj.dyn("revision", "--autogenerate", "-m", "keys only", "--rev-id", "adopt01")
    text = next(proj.versions.glob("adopt01_*.py")).read_text()
    assert 'op.create_gsi("GSI1", partition_key=("GSI1PK", "S"), projection="KEYS_ONLY", replace=True)' in text
    keys_only = proj.indexes()
    assert "index GSI1 already there" in proj.dyn("upgrade", "head").stdout
    assert proj.indexes() == keys_only
    proj.dyn("check", "--drift")
    proj.dyn("downgrade", "-1")
    assert proj.indexes()["GSI1"][1] == "ALL"
    assert commands.drift(proj.project())["differences"] == []
    proj.dyn("upgrade", "head")
    assert proj.indexes() == keys_only
    proj.dyn("check", "--drift")


def test_provisioned_table_adopts_an_index_with_its_throughput(tmp_path, local_client, ddb_local):
    proj = Project(tmp_path / "p", local_client, ddb_local.endpoint_url, provisioned=True)
    proj.dyn("check", "--drift")  # nothing applied, nothing on the table: no drift
    proj.console_create_gsi("ByEmail", "Email", throughput={"ReadCapacityUnits": 3, "WriteCapacityUnits": 2})
    proj.dyn("check", "--drift", code=7)
    # no revision yet: the first one adopts the table as it is
    proj.dyn("revision", "--autogenerate", "-m", "adopt the table", "--rev-id", "adopt01")
    text = next(proj.versions.glob("adopt01_*.py")).read_text()
    assert "down_revision = None" in text
    assert ('op.create_gsi("ByEmail", partition_key=("Email", "S"), projection="ALL", '
            'throughput={"ReadCapacityUnits": 3, "WriteCapacityUnits": 2})') in text
    proj.dyn("upgrade", "head")
    proj.dyn("check", "--drift")
    proj.dyn("downgrade", "base")
    assert proj.indexes() == {}
    proj.dyn("upgrade", "head")
    g = proj.describe()["GlobalSecondaryIndexes"][0]
    assert (g["ProvisionedThroughput"]["ReadCapacityUnits"], g["ProvisionedThroughput"]["WriteCapacityUnits"]) == (3, 2)
    proj.dyn("check", "--drift")


def test_drift_on_both_beds(any_client, tmp_path):
    """The comparison through commands.drift, on moto and on DynamoDB Local."""
    table = create_table(any_client)
    root = tmp_path / "p"
    (root / "migrations" / "versions").mkdir(parents=True)
    (root / "dyn.toml").write_text(f'[dyn]\ntable = "{table}"\nscript_location = "migrations"\n')
    # schema operations only: moto is not thread-safe under the backfill engine's segments
    # writing to a table with an index ("dictionary changed size during iteration")
    (root / "migrations" / "versions" / "aaaa01_r.py").write_text(
        '"""gsi1 and ttl"""\nrevision = "aaaa01"\ndown_revision = None\n\n\ndef upgrade(op):\n'
        '    op.update_ttl("Exp")\n    op.create_gsi("GSI1", partition_key=("GSI1PK", "S"), sort_key=("GSI1SK", "S"))\n'
        '    op.backfill(lambda item: None)\n\n\ndef downgrade(op):\n    op.delete_gsi("GSI1")\n')
    project = commands.Project(load_config(cwd=root), client=any_client)
    commands.upgrade(project, "head")
    assert commands.drift(project) == {"table": table, "heads": ["aaaa01"], "differences": [], "indexes": 1,
                                       "ttl": "on Exp", "not_compared": []}
    any_client.update_table(TableName=table, GlobalSecondaryIndexUpdates=[{"Delete": {"IndexName": "GSI1"}}])
    for _ in range(300):
        if not any(g["IndexName"] == "GSI1" for g in
                   any_client.describe_table(TableName=table)["Table"].get("GlobalSecondaryIndexes", [])):
            break
        time.sleep(0.1)
    diffs = commands.drift(project)["differences"]
    assert [(d["kind"], d["name"]) for d in diffs] == [("index_missing", "GSI1")]


# ---- bad input: one line, an exit code, nothing written --------------------------------

def test_bad_inputs_write_nothing(proj, tmp_path):
    proj.rev(GSI1_REV)
    proj.dyn("upgrade", "head")
    proj.console_create_gsi("ByEmail", "Email")
    before_files, before_table = proj.files(), proj.indexes()

    def refused(*args, code, needle):
        line = proj.error(*args, code=code)
        assert needle in line, line
        assert proj.files() == before_files and proj.indexes() == before_table
        return line

    refused("revision", "--autogenerate", code=2, needle='needs a message: dyn revision --autogenerate -m "')
    refused("revision", code=2, needle='needs a message: dyn revision -m "')
    refused("revision", "--autogenerate", "-m", " ", code=2, needle="needs a message")
    refused("revision", "--autogenerate", "-m", "x", "--head", "aaaa01", code=2, needle="leave out --head")
    refused("--table", "no-such-table", "revision", "--autogenerate", "-m", "x", code=1,
            needle="table 'no-such-table' does not exist")
    refused("--table", "no-such-table", "check", "--drift", code=1, needle="table 'no-such-table' does not exist")
    # no table configured
    bare = tmp_path / "bare"
    (bare / "migrations" / "versions").mkdir(parents=True)
    (bare / "dyn.toml").write_text('[dyn]\nscript_location = "migrations"\n')
    old = os.getcwd()
    os.chdir(bare)
    try:
        r = cli.invoke(app, ["revision", "--autogenerate", "-m", "x"], env={"DYN_TABLE": None})
    finally:
        os.chdir(old)
    assert r.exit_code == 2 and r.stderr.startswith("error: ") and len(r.stderr.splitlines()) == 1, r.stderr
    assert not list((bare / "migrations" / "versions").iterdir())

    # a revision whose upgrade cannot be replayed
    proj.rev('"""reads items"""\nrevision = "aaaa02"\ndown_revision = "aaaa01"\n\n\ndef upgrade(op):\n'
             '    first = op.client.scan(TableName=op.table_name, Limit=1)["Items"][0]\n\n\n'
             'def downgrade(op):\n    pass\n')
    proj.dyn("upgrade", "head")
    before_files = proj.files()
    line = refused("check", "--drift", code=1, needle="revision aaaa02 (")
    assert "IndexError" in line and "drift check" in line
    refused("revision", "--autogenerate", "-m", "x", code=1, needle="revision aaaa02 (")
    (proj.versions / "aaaa02_r.py").unlink()
    proj.dyn("stamp", "aaaa01", "--purge")
    before_files = proj.files()

    # not at head: the table must have every revision first
    proj.rev('"""pending"""\nrevision = "aaaa03"\ndown_revision = "aaaa01"\n\n\ndef upgrade(op):\n    pass\n\n\n'
             'def downgrade(op):\n    pass\n')
    before_files = proj.files()
    line = refused("revision", "--autogenerate", "-m", "adopt", code=3, needle="is not at head")
    refused("check", "--drift", code=3, needle="is not at head")
    proj.run_suggested(line)  # `dyn upgrade head`
    before_files = proj.files()

    # two heads
    proj.rev('"""other"""\nrevision = "aaaa04"\ndown_revision = "aaaa01"\n\n\ndef upgrade(op):\n    pass\n\n\n'
             'def downgrade(op):\n    pass\n')
    before_files = proj.files()
    line = refused("revision", "--autogenerate", "-m", "adopt", code=1, needle="multiple heads (aaaa03, aaaa04)")
    proj.run_suggested(line)  # `dyn merge heads -m "merge heads"`, `dyn upgrade head`
    assert len(proj.files()) == len(before_files) + 1
    before_files = proj.files()

    # a changed file: the check gate's exit 6 comes first
    f = proj.versions / "aaaa01_r.py"
    f.write_text(f.read_text() + "\n# edited\n")
    refused("revision", "--autogenerate", "-m", "adopt", code=6, needle="changed since it was applied")
    refused("check", "--drift", code=6, needle="changed since it was applied")
    proj.dyn("stamp", "--reset-checksum", "aaaa01")

    # a step left in progress
    proj.client.update_item(TableName=proj.table, Key={"PK": {"S": "_dyn"}, "SK": {"S": "version"}},
                            UpdateExpression="SET dirty = :d",
                            ExpressionAttributeValues={":d": {"M": {"revision": {"S": "aaaa03"},
                                                                    "direction": {"S": "up"}}}})
    refused("revision", "--autogenerate", "-m", "adopt", code=5, needle="was left in progress")
    refused("check", "--drift", code=5, needle="was left in progress")
    proj.dyn("stamp", "heads")

    # and when all is well, it is written
    proj.dyn("revision", "--autogenerate", "-m", "adopt")
    assert len(proj.files()) == len(before_files) + 1


class Creating:
    """The project's client, but DescribeTable shows one index still CREATING (DynamoDB Local
    builds an index in well under a second, too fast to catch)."""

    def __init__(self, client, index: str):
        self._client, self._index = client, index

    def describe_table(self, **kw):
        r = self._client.describe_table(**kw)
        for g in r["Table"].get("GlobalSecondaryIndexes", []):
            if g["IndexName"] == self._index:
                g["IndexStatus"] = "CREATING"
        return r

    def __getattr__(self, name):
        return getattr(self._client, name)


def test_an_index_still_creating_is_drift_but_not_adopted_yet(proj):
    proj.rev(GSI1_REV)
    proj.dyn("upgrade", "head")
    proj.console_create_gsi("ByEmail", "Email")
    p = commands.Project(load_config(cwd=proj.root), client=Creating(proj.client, "ByEmail"))
    diffs = commands.drift(p)["differences"]
    assert [d["message"].split(" is on")[0] for d in diffs] == ["index ByEmail (CREATING)"]
    files = proj.files()
    with pytest.raises(TableError) as e:
        commands.autogenerate(p, "adopt by email")
    line = str(e.value)
    assert line.startswith("index ByEmail of table") and "is CREATING" in line
    assert proj.files() == files
    proj.run_suggested(line)  # once it is ACTIVE: `dyn revision --autogenerate -m 'adopt by email'`
    assert len(proj.files()) == len(files) + 1
