"""Production safety (issue 6): backups (moto), irreversible revisions, protected stages,
the IAM policy, and the checksum gate — each refusal leaves the table unchanged."""
from __future__ import annotations

import json

import pytest

from conftest import create_table, scan_all
from dynamic import backup as backups
from dynamic import commands
from dynamic.config import load_config
from dynamic.errors import EXIT_CHECKSUM, EXIT_USAGE
from test_runner import Project, counts, three_counters

IRREVERSIBLE_ATTR = '''\
"""drop legacy attribute"""
revision = "dddd44"
down_revision = "cccc33"
irreversible = "the legacy values are deleted and cannot be rebuilt"

def upgrade(op):
    op.remove_attributes(["n"])

def downgrade(op):
    pass
'''

IRREVERSIBLE_OP = '''\
"""squash"""
revision = "dddd44"
down_revision = "cccc33"

def upgrade(op):
    pass

def downgrade(op):
    op.irreversible("squashed rows cannot be split again")
'''

IRREVERSIBLE_RAISE = '''\
"""squash"""
import dynamic
revision = "dddd44"
down_revision = "cccc33"

def upgrade(op):
    pass

def downgrade(op):
    raise dynamic.Irreversible("no way back")
'''


@pytest.fixture
def proj(local_client, ddb_local, tmp_path):
    return three_counters(local_client, ddb_local.endpoint_url, tmp_path)


@pytest.mark.local
@pytest.mark.parametrize("source,reason", [
    (IRREVERSIBLE_ATTR, "cannot be rebuilt"),
    (IRREVERSIBLE_OP, "cannot be split again"),
    (IRREVERSIBLE_RAISE, "no way back"),
])
def test_downgrade_past_irreversible_stops_first(proj, source, reason):
    proj.rev("dddd44", "cccc33", source=source)
    proj.dyn("upgrade", "head")
    before = scan_all(proj.client, proj.table)
    for target in ("-1", "base", "-2"):
        r = proj.dyn("downgrade", target, check=False)
        assert r.exit_code == 1 and "dddd44" in r.stderr and reason in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
    assert scan_all(proj.client, proj.table) == before
    hist = proj.dyn("history", "-v").stdout
    assert f"irreversible: {reason}" in hist or reason in hist


@pytest.mark.local
def test_reversible_downgrade_is_not_probed_into_running(proj):
    """The probe stops at the first real op: a normal downgrade is not mistaken for irreversible."""
    proj.dyn("upgrade", "head")
    proj.dyn("downgrade", "-1")
    assert counts(proj, "c3") == [0]


@pytest.mark.local
def test_protected_stage_needs_yes(proj, monkeypatch):
    monkeypatch.setenv("DYN_PROTECTED", "${STAGE_IS_PROD:-true}")
    before = scan_all(proj.client, proj.table)
    for args in (("upgrade", "head"), ("stamp", "aaaa11"), ("unlock",)):
        r = proj.dyn(*args, check=False)
        assert r.exit_code == EXIT_USAGE, (args, r.stderr)
        assert "--yes" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = proj.dyn("upgrade", "head", check=False)
    assert "aaaa11" in r.stderr  # the plan is printed
    assert scan_all(proj.client, proj.table) == before
    proj.dyn("upgrade", "head", "--dry-run")  # a dry run needs no confirmation
    assert scan_all(proj.client, proj.table) == before
    proj.dyn("upgrade", "head", "--yes")
    assert counts(proj, "c3") == [1]
    r = proj.dyn("downgrade", "-1", check=False)
    assert r.exit_code == EXIT_USAGE
    proj.dyn("downgrade", "-1", "--yes")
    # nothing to do needs no confirmation either
    proj.dyn("downgrade", "bbbb22")


def test_protected_confirm_callback(tmp_path):
    """Interactive confirmation (the CLI passes typer.confirm on a TTY)."""
    cfg = load_config(cwd=tmp_path, env={"DYN_PROTECTED": "true", "DYN_TABLE": "t-x1"})
    p = commands.Project(cfg)
    asked = []
    commands.guard_protected(p, "upgrade head", "plan", yes=False, confirm=lambda q: asked.append(q) or True)
    assert asked and "protected" in asked[0]
    with pytest.raises(Exception, match="not confirmed"):
        commands.guard_protected(p, "upgrade head", "plan", yes=False, confirm=lambda q: False)


@pytest.mark.local
def test_check_fails_on_changed_checksum_and_reset(proj):
    proj.dyn("upgrade", "head")
    proj.dyn("check")
    f = proj.root / "migrations" / "versions" / "bbbb22_r.py"
    f.write_text(f.read_text() + "\n# a comment\n")
    r = proj.dyn("check", check=False)
    assert r.exit_code == EXIT_CHECKSUM and "bbbb22" in r.stderr and "--reset-checksum" in r.stderr
    up = proj.dyn("upgrade", "head")
    assert "bbbb22" in up.stderr and "changed since it was applied" in up.stderr
    proj.dyn("stamp", "--reset-checksum", "bbbb22")
    proj.dyn("check")
    r = proj.dyn("stamp", "--reset-checksum", "zzzz99", check=False)
    assert r.exit_code != 0 and "zzzz99" in r.stderr


@pytest.mark.local
def test_pitr_refusal_on_local_is_clear(proj):
    before = scan_all(proj.client, proj.table)
    r = proj.dyn("upgrade", "head", "--backup", "pitr", check=False)
    assert r.exit_code == 1, r.stderr
    assert "DynamoDB Local" in r.stderr or "point-in-time" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert scan_all(proj.client, proj.table) == before


def test_backups_on_moto(moto_client):
    table = create_table(moto_client)
    with pytest.raises(backups.BackupError, match="update-continuous-backups"):
        backups.require_pitr(moto_client, table)
    moto_client.update_continuous_backups(
        TableName=table, PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True})
    backups.require_pitr(moto_client, table)
    arn = backups.create_backup(moto_client, table, "abc123")
    assert arn.startswith("arn:aws:dynamodb") and "backup" in arn
    names = [b["BackupName"] for b in moto_client.list_backups(TableName=table)["BackupSummaries"]]
    assert len(names) == 1 and names[0].startswith(f"dyn-{table}-abc123-")


def test_on_demand_backup_recorded_in_history(moto_client, tmp_path):
    """A run with backup = on-demand takes one backup and records its ARN (moto has backups)."""
    table = create_table(moto_client)
    for i in range(5):
        moto_client.put_item(TableName=table, Item={"PK": {"S": f"T#{i}"}, "SK": {"S": "T"}, "Type": {"S": "Thing"}})
    p = Project(tmp_path, table, "http://unused")
    p.rev("aaaa11", None, "c1")
    cfg = load_config(cwd=tmp_path, env={"DYN_BACKUP": "on-demand"}, overrides={"endpoint_url": None})
    cfg = cfg.__class__(**{**{f: getattr(cfg, f) for f in cfg.__dataclass_fields__}, "endpoint_url": None})
    project = commands.Project(cfg, client=moto_client)
    r = commands.upgrade(project, "head")
    assert [s.revision for s in r.steps] == ["aaaa11"]
    hist = commands.applied_history(project)
    assert hist[0]["backup_arn"].startswith("arn:aws:dynamodb")
    assert len(moto_client.list_backups(TableName=table)["BackupSummaries"]) == 1


@pytest.mark.local
def test_iam_policy(proj):
    pol = json.loads(proj.dyn("iam-policy").stdout)
    st = pol["Statement"][0]
    assert st["Resource"][0].endswith(f":table/{proj.table}")
    acts = set(st["Action"])
    assert {"dynamodb:Scan", "dynamodb:UpdateItem", "dynamodb:DescribeTable"} <= acts
    assert "dynamodb:UpdateTable" not in acts  # no revision here changes the schema
    assert "dynamodb:CreateBackup" not in acts
    ro = set(json.loads(proj.dyn("iam-policy", "--read-only").stdout)["Statement"][0]["Action"])
    assert not any(a in ro for a in ("dynamodb:UpdateItem", "dynamodb:PutItem", "dynamodb:Scan"))
    proj.rev("dddd44", "cccc33", source='revision = "dddd44"\ndown_revision = "cccc33"\n'
             'def upgrade(op):\n    op.create_gsi("G", ("a", "S"))\ndef downgrade(op):\n    op.delete_gsi("G")\n')
    acts = set(json.loads(proj.dyn("iam-policy").stdout)["Statement"][0]["Action"])
    assert "dynamodb:UpdateTable" in acts
