"""What a new user's tryout found, through the `dyn` command users run: each test fails on the
code as tried and names what it proves."""
from __future__ import annotations

import pytest

from conftest import create_table, scan_all
from test_upgrade_faults import dyn, project

pytestmark = pytest.mark.local

EXITS = '''\
"""writes one item, then exits"""
revision = "c1000001"
down_revision = None


def upgrade(op):
    op.put_items([{"PK": "X#1", "SK": "a"}])
    raise SystemExit(0)


def downgrade(op):
    pass
'''


def _errors(r) -> list[str]:
    assert "Traceback" not in r.stderr, r.stderr
    return [line for line in r.stderr.splitlines() if line.startswith("error:")]


def test_a_revision_calling_sys_exit_fails_the_step(ddb_local, local_client, tmp_path):
    """sys.exit(0) half-way through upgrade() ended dyn with exit 0 and no word, the step left
    in progress: a CI deploy passed on a half-applied migration."""
    table = create_table(local_client)
    root = project(tmp_path, table, ("c1000001_exit", EXITS))
    r = dyn(root, ddb_local.endpoint_url, "upgrade", "head")
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    (line,) = _errors(r)
    assert "sys.exit(0)" in line and "c1000001" in line and "`dyn upgrade c1000001`" in line, line
    check = dyn(root, ddb_local.endpoint_url, "check")
    assert check.returncode == 5, check.stderr  # the step is in progress, as the line says


def test_a_revision_file_calling_sys_exit_at_import_is_one_error(ddb_local, local_client, tmp_path):
    table = create_table(local_client)
    root = project(tmp_path, table, ("c1000001_exit", "import sys\nsys.exit(3)\n"))
    for args in (("heads",), ("upgrade", "head"), ("current",)):
        r = dyn(root, ddb_local.endpoint_url, *args)
        assert r.returncode == 1, (args, r.returncode, r.stderr)
        (line,) = _errors(r)
        assert "c1000001_exit.py:2: revision file failed to import: SystemExit: 3" in line, line
    assert not scan_all(local_client, table)


def test_a_non_string_irreversible_reason_is_said_as_it_is(ddb_local, local_client, tmp_path):
    """op.irreversible(5) met after the probe (an operation comes first) ended in 'unexpected
    TypeError: __str__ returned non-string'."""
    table = create_table(local_client)
    source = EXITS.replace("    op.put_items([{\"PK\": \"X#1\", \"SK\": \"a\"}])\n    raise SystemExit(0)\n",
                           "    pass\n").replace("def downgrade(op):\n    pass",
                                                    "def downgrade(op):\n    op.remove_attributes([\"x\"])\n    op.irreversible(5)")
    root = project(tmp_path, table, ("c1000001_irr", source))
    assert dyn(root, ddb_local.endpoint_url, "upgrade", "head").returncode == 0
    r = dyn(root, ddb_local.endpoint_url, "downgrade", "base")
    assert r.returncode == 1, r.stderr
    (line,) = _errors(r)
    assert "Irreversible: 5;" in line and "unexpected" not in line, line


BACKFILL = '''\
"""display names"""
from boto3.dynamodb.conditions import Attr

revision = "c2000001"
down_revision = None


def upgrade(op):
    op.backfill(lambda item: {"Display": item["Name"].upper()}, filter=Attr("Type").eq("User"))


def downgrade(op):
    op.remove_attributes(["Display"])
'''


def test_a_meta_pk_naming_an_application_partition_is_refused(ddb_local, local_client, tmp_path):
    """dyn skips its whole meta_pk partition: set to an application partition, a migration left
    that partition's items out (matched 4,999 of 5,000) without a word."""
    from test_backfill import put_items
    table = create_table(local_client)
    put_items(local_client, table, [{"PK": f"USER#{i}", "SK": "PROFILE", "Type": "User", "Name": f"u{i}"}
                                    for i in range(5)])
    before = scan_all(local_client, table)
    root = project(tmp_path, table, ("c2000001_display", BACKFILL), meta_pk="USER#1")
    for args in (("upgrade", "head", "--dry-run"), ("upgrade", "head"), ("current",)):
        r = dyn(root, ddb_local.endpoint_url, *args)
        assert r.returncode == 2, (args, r.stderr)
        (line,) = _errors(r)
        assert "meta_pk USER#1 names a partition" in line and "PROFILE" in line, line
    assert scan_all(local_client, table) == before
    (root / "dyn.toml").write_text((root / "dyn.toml").read_text().replace('meta_pk = "USER#1"', ""))
    assert dyn(root, ddb_local.endpoint_url, "upgrade", "head").returncode == 0
    # migrated under the default now: another meta_pk would start over, dyn's records included
    (root / "dyn.toml").write_text((root / "dyn.toml").read_text() + 'meta_pk = "_dyn2"\n')
    r = dyn(root, ddb_local.endpoint_url, "upgrade", "head", "--dry-run")
    assert r.returncode == 2 and 'holds dyn\'s records under the default "_dyn"' in _errors(r)[0], r.stderr


def test_a_meta_pk_prefixing_application_keys_is_refused_on_a_table_without_sort_key(ddb_local, local_client,
                                                                                     tmp_path):
    """Without a sort key dyn's records are keys "<meta_pk>#..." and its scans skip every key
    starting so: meta_pk = "ORG" skipped all of ORG#0..ORG#19 ("updated 0 items", exit 0)."""
    from test_backfill import put_items
    table = create_table(local_client, sort_key=False)
    put_items(local_client, table, [{"PK": f"ORG#{i}", "Type": "User", "Name": f"o{i}"} for i in range(20)])
    before = scan_all(local_client, table)
    root = project(tmp_path, table, ("c2000001_display", BACKFILL), meta_pk="ORG")
    r = dyn(root, ddb_local.endpoint_url, "upgrade", "head")
    assert r.returncode == 2, r.stderr
    (line,) = _errors(r)
    assert "meta_pk ORG is the start of keys of the application's items" in line and "ORG#" in line, line
    assert scan_all(local_client, table) == before


@pytest.mark.parametrize("args, env, says", [
    (("--lock-timeout", "-1"), {}, "--lock-timeout is how many seconds"),
    ((), {"DYN_META_PK": ""}, "meta_pk (from DYN_META_PK) is empty"),
    ((), {"DYN_ENDPOINT_URL": "notaurl"}, "endpoint_url (from DYN_ENDPOINT_URL) must be a URL"),
    ((), {"AWS_ENDPOINT_URL_DYNAMODB": "notaurl"}, "Invalid endpoint: notaurl: give a URL"),
    ((), {"AWS_REGION": "us east 1", "AWS_DEFAULT_REGION": "us east 1"}, "(--region, region in dyn.toml, or AWS_REGION)"),
    ((), {"DYN_DASK_SCHEDULER": "bogus"}, "'bogus' (--dask-scheduler, DYN_DASK_SCHEDULER or dask_scheduler"),
])
def test_bad_run_settings_are_one_usage_line(ddb_local, local_client, tmp_path, args, env, says):
    table = create_table(local_client)
    root = project(tmp_path, table, ("c2000001_display", BACKFILL))
    import os
    import subprocess
    import sys
    full = {**os.environ, "AWS_ENDPOINT_URL_DYNAMODB": ddb_local.endpoint_url, **env}
    r = subprocess.run([sys.executable, "-m", "dynamic.cli", "upgrade", "head", *args], cwd=root, env=full,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, (r.returncode, r.stderr)
    (line,) = _errors(r)
    assert says in line, line
    assert not scan_all(local_client, table)


SCHEMA = '''\
"""a schema change with bad arguments"""
revision = "c3000001"
down_revision = None


def upgrade(op):
    {call}


def downgrade(op):
    pass
'''


@pytest.mark.parametrize("call, says", [
    ('op.update_ttl("")', "op.update_ttl: Parameter validation failed: Invalid length"),
    ("op.update_table(Foo=1)", 'op.update_table: Parameter validation failed: Unknown parameter in input: "Foo"'),
    ('op.create_gsi("a b", partition_key=("X", "S"))', "op.create_gsi: the index name must be letters"),
    ("op.delete_gsi(5)", "op.delete_gsi: the index name must be letters, digits, _ . or -, got 5"),
    ('op.delete_gsi("no such index!!")', "op.delete_gsi: the index name must be"),
    ('op.update_table(BillingMode="PAY_PER_REQUEST", TableName="other")', "op.update_table: TableName"),
])
def test_bad_schema_arguments_are_one_line_and_leave_nothing_in_progress(ddb_local, local_client, tmp_path,
                                                                         call, says):
    """They came out as botocore's two-line ParamValidationError (or DynamoDB's refusal), and
    the step, which wrote nothing, was left in progress: a `dyn stamp` to clear."""
    import json
    table = create_table(local_client)
    root = project(tmp_path, table, ("c3000001_bad", SCHEMA.format(call=call)))
    r = dyn(root, ddb_local.endpoint_url, "upgrade", "head")
    assert r.returncode == 2, (r.returncode, r.stderr)
    (line,) = _errors(r)
    assert says in line and "it wrote nothing" in line, line
    current = json.loads(dyn(root, ddb_local.endpoint_url, "current", "--json").stdout)
    assert current["dirty"] is None and current["heads"] == [], current


def test_stamp_takes_a_relative_target_and_dry_runs_check_the_errors_file(ddb_local, local_client, tmp_path):
    table = create_table(local_client)
    second = BACKFILL.replace('revision = "c2000001"\ndown_revision = None',
                              'revision = "c2000002"\ndown_revision = "c2000001"')
    root = project(tmp_path, table, ("c2000001_display", BACKFILL), ("c2000002_again", second))
    assert dyn(root, ddb_local.endpoint_url, "stamp", "head").returncode == 0
    r = dyn(root, ddb_local.endpoint_url, "stamp", "-1")  # read as an option before
    assert r.returncode == 0, r.stderr
    assert "c2000001" in dyn(root, ddb_local.endpoint_url, "current").stdout
    r = dyn(root, ddb_local.endpoint_url, "upgrade", "head", "--dry-run", "--max-errors", "5",
            "--errors-file", str(tmp_path / "no" / "such" / "x.jsonl"))
    assert r.returncode == 2 and "cannot be written" in _errors(r)[0], r.stderr


@pytest.mark.parametrize("url", ["http://[::1", "http://127.0.0.1:99999", "ftp://x", "localhost:8000"])
def test_malformed_endpoints_are_config_errors(tmp_path, url):
    import os
    import subprocess
    import sys
    (tmp_path / "dyn.toml").write_text(f'[dyn]\ntable = "Tab"\nendpoint_url = "{url}"\n')
    r = subprocess.run([sys.executable, "-m", "dynamic.cli", "current"], cwd=tmp_path, capture_output=True,
                       text=True, env={**os.environ, "AWS_REGION": "us-east-1"}, timeout=60)
    assert r.returncode == 2, r.stderr
    (line,) = _errors(r)
    assert "endpoint_url" in line and "must be a URL" in line, line
