"""The drift check without AWS: the comparison (schema.py), the replay against a recording op
and the adoption code (drift.py), and where generated code lands in a template (scripts.py).
The replay tests that must show nothing is touched run on moto."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from conftest import create_table, scan_all
from dynamic import drift, schema
from dynamic.errors import MigrationError, ScriptError, TableError, UsageError
from dynamic.operations import Operations
from dynamic.scripts import ScriptDirectory, load_script

KEYS = [{"AttributeName": "PK", "KeyType": "HASH"}, {"AttributeName": "SK", "KeyType": "RANGE"}]


def table_desc(gsis=(), types=None, **extra) -> dict:
    """A DescribeTable ``Table`` as DynamoDB Local returns it."""
    t = {"PK": "S", "SK": "S", **(types or {})}
    d = {"TableName": "T1", "KeySchema": KEYS, "TableStatus": "ACTIVE",
         "AttributeDefinitions": [{"AttributeName": a, "AttributeType": v} for a, v in t.items()],
         "BillingModeSummary": {"BillingMode": "PAY_PER_REQUEST"},
         "ProvisionedThroughput": {"ReadCapacityUnits": 0, "WriteCapacityUnits": 0}}
    if gsis:
        d["GlobalSecondaryIndexes"] = list(gsis)
    d.update(extra)
    return d


def gsi(name, pk, sk=None, projection=None, status="ACTIVE") -> dict:
    keys = [{"AttributeName": pk, "KeyType": "HASH"}] + ([{"AttributeName": sk, "KeyType": "RANGE"}] if sk else [])
    return {"IndexName": name, "KeySchema": keys, "Projection": projection or {"ProjectionType": "ALL"},
            "IndexStatus": status}


# ---- schema.py: arguments, descriptions, comparison ------------------------------------

@pytest.mark.parametrize("args, needle", [
    (("G1", ("a", "X")), "must be S, N or B"),
    (("G1", "a"), "partition_key must be (attribute, type)"),
    (("G1", ("a", "S"), ("b",)), "sort_key must be (attribute, type)"),
    (("G1", ("a", "S"), None, "all"), 'projection must be "ALL"'),
    (("G1", ("a", "S"), None, "INCLUDE"), 'projection must be "ALL"'),
    (("G1", ("a", "S"), None, []), "non-empty list"),
])
def test_index_arguments_are_validated(args, needle):
    with pytest.raises(UsageError) as e:
        schema.index_from_args(*args)
    assert needle in str(e.value) and "op.create_gsi" in str(e.value)


def test_an_include_projection_compares_as_a_set():
    asked = schema.index_from_args("G1", ("a", "S"), None, ["z", "b", "z"])
    have = schema.index_from_description(
        gsi("G1", "a", projection={"ProjectionType": "INCLUDE", "NonKeyAttributes": ["b", "z"]}), {"a": "S"})
    assert asked.projection == "INCLUDE" and asked.non_key_attributes == ("b", "z")
    assert asked.same_definition(have)
    assert asked.projection_dict() == {"ProjectionType": "INCLUDE", "NonKeyAttributes": ["b", "z"]}


def declared(*indexes, ttl=schema.Ttl(), **settings) -> schema.Schema:
    s = schema.Schema({i.name: i for i in indexes}, ttl, dict(settings))
    s.declared_by = {**{f"index:{i.name}": "rev1" for i in indexes}, "ttl": "rev2",
                     **{f"setting:{k}": "rev3" for k in settings}}
    return s


def test_no_difference_when_the_table_has_what_is_declared():
    d = declared(schema.index_from_args("GSI1", ("GSI1PK", "S"), ("GSI1SK", "S")),
                 ttl=schema.Ttl(True, "ExpiresAt"), StreamSpecification={"StreamEnabled": False})
    a = schema.actual_schema(table_desc([gsi("GSI1", "GSI1PK", "GSI1SK")], {"GSI1PK": "S", "GSI1SK": "S"}),
                             {"TimeToLiveStatus": "ENABLED", "AttributeName": "ExpiresAt"})
    assert schema.compare(d, a) == []


def test_each_kind_of_index_difference_is_one_line():
    d = declared(schema.index_from_args("GSI1", ("GSI1PK", "S"), ("GSI1SK", "S")),
                 schema.index_from_args("GSI2", ("GSI2PK", "S"), projection="KEYS_ONLY"))
    a = schema.actual_schema(table_desc([gsi("GSI2", "GSI2PK"), gsi("ByEmail", "Email")],
                                        {"GSI2PK": "S", "Email": "S"}), None)
    diffs = schema.compare(d, a)
    assert [(x.kind, x.name) for x in diffs] == [
        ("index_not_declared", "ByEmail"), ("index_missing", "GSI1"), ("index_differs", "GSI2")]
    by = {x.name: x.message for x in diffs}
    assert by["ByEmail"] == ("index ByEmail is on the table (keys (Email S), projection ALL) but no applied "
                             "revision declares it")
    assert by["GSI1"] == ("index GSI1 is declared by revision rev1 (keys (GSI1PK S, GSI1SK S), projection ALL) "
                          "but is not on the table")
    assert by["GSI2"] == ("index GSI2 differs: revision rev1 declares keys (GSI2PK S), projection KEYS_ONLY; "
                          "the table has keys (GSI2PK S), projection ALL")
    assert all("\n" not in m for m in by.values())
    assert diffs[0].as_dict()["actual"] == {"partition_key": ["Email", "S"], "sort_key": None,
                                            "projection": "ALL", "status": "ACTIVE"}


def test_key_types_are_compared_only_when_both_sides_know_them():
    d = declared(schema.index_from_args("G1", ("n", "N")))
    assert [x.kind for x in schema.compare(d, schema.actual_schema(table_desc([gsi("G1", "n")], {"n": "S"}), None))] \
        == ["index_differs"]
    # moto forgets AttributeDefinitions of earlier indexes: an unknown type is not a difference
    assert schema.compare(d, schema.actual_schema(table_desc([gsi("G1", "n")]), None)) == []


def test_an_index_being_deleted_is_gone_and_one_being_created_is_there():
    d = declared(schema.index_from_args("Old", ("o", "S")), schema.index_from_args("New", ("n", "S")))
    a = schema.actual_schema(table_desc([gsi("Old", "o", status="DELETING"), gsi("New", "n", status="CREATING"),
                                         gsi("Gone", "g", status="DELETING")], {"o": "S", "n": "S", "g": "S"}), None)
    diffs = schema.compare(d, a)
    assert [(x.kind, x.name) for x in diffs] == [("index_missing", "Old")]
    assert diffs[0].message.endswith("but is being deleted from the table")
    undeclared = schema.compare(declared(), a)
    assert [x.message.split(" is on")[0] for x in undeclared] == ["index New (CREATING)"]


@pytest.mark.parametrize("want, have, message", [
    (schema.Ttl(True, "ExpiresAt"), {"TimeToLiveStatus": "DISABLED"},
     "TTL: revision rev2 turns it on for ExpiresAt; the table has it off"),
    (schema.Ttl(True, "ExpiresAt"), {"TimeToLiveStatus": "ENABLED", "AttributeName": "Expiry"},
     "TTL: revision rev2 turns it on for ExpiresAt; the table has it on Expiry"),
    (schema.Ttl(False), {"TimeToLiveStatus": "ENABLING", "AttributeName": "Expiry"},
     "TTL: revision rev2 turns it off; the table has it on Expiry (ENABLING)"),
    (schema.Ttl(True, "ExpiresAt"), {"TimeToLiveStatus": "DISABLING", "AttributeName": "ExpiresAt"},
     "TTL: revision rev2 turns it on for ExpiresAt; the table has it off (DISABLING)"),
])
def test_ttl_differences(want, have, message):
    diffs = schema.compare(declared(ttl=want), schema.actual_schema(table_desc(), have))
    assert [x.message for x in diffs] == [message]


def test_ttl_that_no_revision_mentions_is_off():
    s = schema.Schema()
    diffs = schema.compare(s, schema.actual_schema(table_desc(), {"TimeToLiveStatus": "ENABLED",
                                                                  "AttributeName": "Exp"}))
    assert [x.message for x in diffs] == ["TTL: no applied revision turns it on; the table has it on Exp"]


def test_settings_are_compared_only_once_declared():
    have = table_desc(StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"},
                      DeletionProtectionEnabled=True)
    a = schema.actual_schema(have, None)
    assert schema.compare(schema.Schema(), a) == []  # nothing declared: not compared
    d = declared(StreamSpecification={"StreamEnabled": True, "StreamViewType": "KEYS_ONLY"},
                 DeletionProtectionEnabled=True, TableClass="STANDARD_INFREQUENT_ACCESS",
                 BillingMode="PAY_PER_REQUEST")
    assert [x.message for x in schema.compare(d, a)] == [
        "StreamSpecification: revision rev3 declares a KEYS_ONLY stream; the table has a NEW_IMAGE stream",
        # no TableClassSummary in the description: the table is STANDARD
        "TableClass: revision rev3 declares TableClass STANDARD_INFREQUENT_ACCESS; the table has TableClass STANDARD",
    ]


def test_settings_hold_only_when_every_argument_already_holds():
    have = table_desc(StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"})
    assert schema.settings_hold(have, {"StreamSpecification": {"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"}})
    assert schema.settings_hold(have, {"BillingMode": "PAY_PER_REQUEST", "DeletionProtectionEnabled": False})
    assert not schema.settings_hold(have, {"StreamSpecification": {"StreamEnabled": False}})
    assert not schema.settings_hold(have, {"BillingMode": "PAY_PER_REQUEST", "SSESpecification": {"Enabled": True}})
    assert not schema.settings_hold(have, {})
    prov = table_desc(BillingModeSummary={"BillingMode": "PROVISIONED"},
                      ProvisionedThroughput={"ReadCapacityUnits": 5, "WriteCapacityUnits": 5})
    assert schema.settings_hold(prov, {"BillingMode": "PROVISIONED",
                                       "ProvisionedThroughput": {"ReadCapacityUnits": 5, "WriteCapacityUnits": 5}})
    assert not schema.settings_hold(prov, {"BillingMode": "PROVISIONED",
                                           "ProvisionedThroughput": {"ReadCapacityUnits": 9, "WriteCapacityUnits": 5}})


# ---- drift.py: the replay ---------------------------------------------------------------

def scripts_of(tmp_path: Path, *bodies: str) -> tuple[ScriptDirectory, list[str]]:
    """A versions/ folder of revisions r1, r2, ... (a chain), each upgrade with ``body``."""
    versions = tmp_path / "migrations" / "versions"
    versions.mkdir(parents=True, exist_ok=True)
    ids = []
    for i, body in enumerate(bodies, 1):
        rid, down = f"r{i}", (f"r{i - 1}" if i > 1 else None)
        (versions / f"{rid}_x.py").write_text(
            f'"""rev {i}"""\nimport boto3\nimport dynamic\nfrom boto3.dynamodb.conditions import Attr\n\n'
            f"revision = {rid!r}\ndown_revision = {down!r}\n\n\ndef upgrade(op):\n"
            + textwrap.indent(textwrap.dedent(body).strip() + "\n", "    ")
            + "\n\ndef downgrade(op):\n    pass\n")
        ids.append(rid)
    return ScriptDirectory(tmp_path / "migrations"), ids


def replay(tmp_path, *bodies, desc=None, client=None) -> drift.Declared:
    scripts, ids = scripts_of(tmp_path, *bodies)
    return drift.declared_schema(scripts, ids, client, desc or table_desc())


def test_replay_follows_create_delete_ttl_and_update_table(tmp_path):
    d = replay(tmp_path,
               'op.create_gsi("GSI1", partition_key=("GSI1PK", "S"), sort_key=("GSI1SK", "S"))\n'
               'op.create_gsi("Tmp", ("t", "N"), projection="KEYS_ONLY")\nop.update_ttl("ExpiresAt")',
               'op.delete_gsi("Tmp")\nop.update_ttl("ExpiresAt", enabled=False)\nop.update_ttl("Expiry")',
               'op.update_table(AttributeDefinitions=[{"AttributeName": "E", "AttributeType": "S"}],\n'
               '    GlobalSecondaryIndexUpdates=[{"Create": {"IndexName": "ByEmail", "KeySchema": '
               '[{"AttributeName": "E", "KeyType": "HASH"}], "Projection": {"ProjectionType": "KEYS_ONLY"}}}])\n'
               'op.update_table(StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"},\n'
               '    SSESpecification={"Enabled": True})')
    s = d.schema
    assert sorted(s.indexes) == ["ByEmail", "GSI1"]
    assert s.indexes["ByEmail"] == schema.index_from_args("ByEmail", ("E", "S"), projection="KEYS_ONLY")
    assert s.ttl == schema.Ttl(True, "Expiry") and s.declared_by["ttl"] == "r2"
    assert s.declared_by["index:GSI1"] == "r1" and s.declared_by["index:ByEmail"] == "r3"
    assert s.settings == {"StreamSpecification": {"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"}}
    assert d.not_compared == {"SSESpecification": "r3"}


def test_an_upgrade_that_branches_on_the_table_sees_what_was_declared_before_it(tmp_path):
    # as when it ran: GSI1 not there yet, no stream yet; the real table has both already
    real = table_desc([gsi("GSI1", "GSI1PK")], {"GSI1PK": "S"},
                      StreamSpecification={"StreamEnabled": True, "StreamViewType": "KEYS_ONLY"})
    d = replay(tmp_path, '''
        if "GSI1" not in op.table.gsis:
            op.create_gsi("GSI1", ("GSI1PK", "S"))
        desc = op.client.describe_table(TableName=op.table_name)["Table"]
        if not desc.get("StreamSpecification", {}).get("StreamEnabled"):
            op.update_table(StreamSpecification={"StreamEnabled": True, "StreamViewType": "KEYS_ONLY"})
        ttl = op.client.describe_time_to_live(TableName=op.table_name)["TimeToLiveDescription"]
        assert ttl["TimeToLiveStatus"] == "DISABLED"
        ''', '''
        assert "GSI1" in op.table.gsis
        assert op.client.describe_table(TableName=op.table_name)["Table"]["StreamSpecification"]["StreamEnabled"]
        ''', desc=real)
    assert list(d.schema.indexes) == ["GSI1"]
    assert d.schema.settings["StreamSpecification"]["StreamEnabled"] is True


def test_a_raising_upgrade_is_one_line_naming_the_revision(tmp_path):
    with pytest.raises(MigrationError) as e:
        replay(tmp_path, 'op.create_gsi("GSI1", ("a", "S"))', 'raise ValueError("boom")')
    msg = str(e.value)
    assert msg.startswith("revision r2 (") and "r2_x.py" in msg and "ValueError: boom" in msg
    assert "drift check" in msg and "\n" not in msg
    with pytest.raises(MigrationError) as e:
        replay(tmp_path / "b", 'op.create_gsi("GSI1", ("a", "Q"))')
    assert "revision r1" in str(e.value) and "must be S, N or B" in str(e.value)


def test_data_operations_and_op_client_calls_touch_nothing(tmp_path, moto_client, monkeypatch):
    # a data operation added to Operations later is a no-op on the recording op as well
    monkeypatch.setattr(Operations, "rename_attribute", lambda self, old, new: 1 / 0, raising=False)
    table = create_table(moto_client)
    moto_client.put_item(TableName=table, Item={"PK": {"S": "a"}, "SK": {"S": "1"}, "Type": {"S": "Post"}})
    before = (scan_all(moto_client, table), moto_client.describe_table(TableName=table)["Table"])
    d = replay(tmp_path, f'''
        r = op.backfill(lambda item: {{"X": 1}}, filter=Attr("Type").eq("Post"))
        print(f"{{r.updated}} of {{r.matched}}", r.as_dict())
        assert r.updated == 0 and r == 0
        op.remove_attributes(["Type"])
        op.delete_items(filter=Attr("Type").eq("Post"))
        assert op.put_items([{{"PK": "b", "SK": "2"}}]) == 0
        op.rename_attribute("Type", "Kind")
        m = op.move_items(lambda item: {{**item, "PK": "moved"}}, filter=Attr("Type").eq("Post"))
        assert m.moved == m.already_moved == m.clashes == 0 and m.as_dict() == {{}}
        op.client.put_item(TableName=op.table_name, Item={{"PK": {{"S": "c"}}, "SK": {{"S": "3"}}}})
        op.client.delete_item(TableName=op.table_name, Key={{"PK": {{"S": "a"}}, "SK": {{"S": "1"}}}})
        assert op.client.scan(TableName=op.table_name)["Items"] == []
        for page in op.client.get_paginator("scan").paginate(TableName=op.table_name):
            assert page["Items"] == []
        op.client.update_table(TableName="some-other-table", BillingMode="PROVISIONED")
        op.client.update_time_to_live(TableName=op.table_name,
                                      TimeToLiveSpecification={{"Enabled": True, "AttributeName": "Exp"}})
        op.client.get_waiter("table_exists").wait(TableName=op.table_name)
        assert {table!r} in op.client.list_tables()["TableNames"]  # a real read
        op.create_gsi("G1", ("g", "S"))
        ''', desc=before[1], client=moto_client)
    assert d.schema.ttl == schema.Ttl(True, "Exp") and list(d.schema.indexes) == ["G1"]
    assert scan_all(moto_client, table) == before[0]
    after = moto_client.describe_table(TableName=table)["Table"]
    assert not after.get("GlobalSecondaryIndexes")
    assert after.get("StreamSpecification") == before[1].get("StreamSpecification")
    assert moto_client.describe_time_to_live(TableName=table)["TimeToLiveDescription"]["TimeToLiveStatus"] == "DISABLED"


def test_a_write_through_a_client_of_its_own_is_refused(tmp_path, moto_client):
    table = create_table(moto_client)
    with pytest.raises(MigrationError) as e:
        replay(tmp_path, f'''
            boto3.client("dynamodb", region_name="us-east-1").put_item(
                TableName={table!r}, Item={{"PK": {{"S": "x"}}, "SK": {{"S": "y"}}}})
            ''', client=moto_client)
    assert "revision r1" in str(e.value) and "PutItem" in str(e.value) and "op.client" in str(e.value)
    assert scan_all(moto_client, table) == []
    # outside the replay, clients work as ever
    moto_client.put_item(TableName=table, Item={"PK": {"S": "x"}, "SK": {"S": "y"}})
    assert len(scan_all(moto_client, table)) == 1


def test_what_revisions_print_goes_to_stderr(tmp_path, capsys):
    replay(tmp_path, 'print("hello from the upgrade")')
    out = capsys.readouterr()
    assert out.out == "" and "hello from the upgrade" in out.err


# ---- drift.py: adoption, replayed, gives the table; its downgrade gives back the declared --

SCENARIOS = {
    "index added and one deleted": (
        ['op.create_gsi("GSI1", ("GSI1PK", "S"), ("GSI1SK", "S"))'],
        table_desc([gsi("ByEmail", "Email", projection={"ProjectionType": "INCLUDE",
                                                        "NonKeyAttributes": ["Name", "Age"]})], {"Email": "S"}),
        None),
    "index redefined": (
        ['op.create_gsi("GSI1", ("GSI1PK", "S"), projection="KEYS_ONLY")'],
        table_desc([gsi("GSI1", "GSI1PK", "GSI1SK")], {"GSI1PK": "S", "GSI1SK": "N"}), None),
    "provisioned index": (
        [],
        table_desc([{**gsi("G1", "g"), "ProvisionedThroughput": {"ReadCapacityUnits": 3, "WriteCapacityUnits": 2}}],
                   {"g": "B"}, BillingModeSummary={"BillingMode": "PROVISIONED"},
                   ProvisionedThroughput={"ReadCapacityUnits": 5, "WriteCapacityUnits": 5}), None),
    "ttl turned on": ([], table_desc(), {"TimeToLiveStatus": "ENABLED", "AttributeName": "Exp"}),
    "ttl turned off": (['op.update_ttl("Exp")'], table_desc(), {"TimeToLiveStatus": "DISABLED"}),
    "ttl moved": (['op.update_ttl("Exp")'], table_desc(), {"TimeToLiveStatus": "ENABLED", "AttributeName": "Other"}),
    "settings changed": (
        ['op.update_table(StreamSpecification={"StreamEnabled": True, "StreamViewType": "KEYS_ONLY"}, '
         'DeletionProtectionEnabled=True)',
         'op.update_table(BillingMode="PROVISIONED", '
         'ProvisionedThroughput={"ReadCapacityUnits": 4, "WriteCapacityUnits": 4})'],
        table_desc(StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"},
                   DeletionProtectionEnabled=False), None),
}


@pytest.mark.parametrize("name", SCENARIOS)
def test_adoption_upgrade_declares_the_table_and_downgrade_goes_back(tmp_path, name):
    bodies, have, ttl = SCENARIOS[name]
    bodies = bodies or ["pass"]
    before = replay(tmp_path / "before", *bodies, desc=have)
    actual = schema.actual_schema(have, ttl)
    diffs = schema.compare(before.schema, actual)
    assert diffs, "the scenario must drift"
    pt = have["ProvisionedThroughput"] if actual.settings["BillingMode"] == "PROVISIONED" else None
    pt = {k: pt[k] for k in ("ReadCapacityUnits", "WriteCapacityUnits")} if pt else None
    adopt = drift.adoption("T1", diffs, before, pt)
    assert len(adopt.notes) == len(diffs) + 2 and "T1" in adopt.notes[0]
    up = "\n".join(adopt.upgrade)
    down = "\n".join(adopt.upgrade + adopt.downgrade)
    assert schema.compare(replay(tmp_path / "up", *bodies, up, desc=have).schema, actual) == []
    back = replay(tmp_path / "down", *bodies, down, desc=have).schema
    assert (back.indexes, back.ttl) == (before.schema.indexes, before.schema.ttl)
    assert {k: v for k, v in back.settings.items() if k in before.schema.settings} == before.schema.settings
    for line in adopt.upgrade + adopt.downgrade:
        compile(line, "<adoption>", "exec")


def test_generated_index_calls_read_like_a_revision():
    a = schema.index_from_description(
        gsi("ByEmail", "Email", "At", {"ProjectionType": "INCLUDE", "NonKeyAttributes": ["b", "a"]}),
        {"Email": "S", "At": "N"})
    assert drift._create(a) == ('op.create_gsi("ByEmail", partition_key=("Email", "S"), sort_key=("At", "N"), '
                                'projection=["a", "b"])')
    with pytest.raises(TableError) as e:
        drift._create(schema.index_from_description(gsi("G", "g"), {}))
    assert "does not give the type of attribute 'g'" in str(e.value)


# ---- scripts.py: generated code lands in whatever template the project has -------------

ORIGINAL_TEMPLATE = (Path(__file__).resolve().parent.parent / "example_project" / "migrations" / "revision.py.j2")


@pytest.mark.parametrize("template", ["shipped", "original", "one-liners", "custom body"])
def test_generated_code_lands_in_any_template(tmp_path, template):
    versions = tmp_path / "migrations" / "versions"
    versions.mkdir(parents=True)
    tpl = tmp_path / "migrations" / "revision.py.j2"
    if template == "original":  # a project set up before {{ upgrades }} existed
        tpl.write_text(ORIGINAL_TEMPLATE.read_text())
        assert "upgrades" not in tpl.read_text()
    elif template == "one-liners":
        tpl.write_text('"""{{ message }}"""\nrevision = {{ revision | pyrepr }}\n'
                       "down_revision = {{ down_revision | pyrepr }}\ndef upgrade(op): pass\n"
                       "def downgrade(op): pass\n")
    elif template == "custom body":
        tpl.write_text('# header\n"""{{ message }}"""\nrevision = {{ revision | pyrepr }}\n'
                       "down_revision = {{ down_revision | pyrepr }}\n\n\ndef upgrade(op):\n"
                       '    print("before")\n\n\ndef downgrade(op):\n    """Undo."""\n    print("undo")\n')
    sd = ScriptDirectory(tmp_path / "migrations")
    path = sd.generate("adopt", down_revision=(), rev_id="abc1",
                       upgrades=["# adopt GSI2", 'op.create_gsi("GSI2", partition_key=("a", "S"))'],
                       downgrades=['op.delete_gsi("GSI2")'],
                       notes=['found: index "GSI2" \\ """odd""" name'])
    text = path.read_text()
    script = load_script(path)
    calls = []

    class Op:
        def __getattr__(self, name):
            return lambda *a, **k: calls.append((name, a))

    script.module.upgrade(Op())
    script.module.downgrade(Op())
    assert calls == [("create_gsi", ("GSI2",)), ("delete_gsi", ("GSI2",))]
    assert 'found: index "GSI2"' in text and "odd" in text
    assert not list(versions.glob(".*"))  # no temporary file left behind
    if template == "shipped":
        assert "\n    pass\n" not in text and '"""adopt\n\nfound: index' in text


def test_a_template_that_does_not_load_writes_nothing(tmp_path):
    (tmp_path / "migrations" / "versions").mkdir(parents=True)
    (tmp_path / "migrations" / "revision.py.j2").write_text(
        'revision = "fixed"\ndown_revision = None\ndef upgrade(op): pass\ndef downgrade(op): pass\n')
    sd = ScriptDirectory(tmp_path / "migrations")
    with pytest.raises(ScriptError) as e:
        sd.generate("x", down_revision=(), rev_id="abc1")
    assert "renders revision = 'fixed'" in str(e.value)
    assert not list((tmp_path / "migrations" / "versions").iterdir())


def test_plain_revisions_render_as_before(tmp_path):
    """The shipped template with no generated code gives the file it always gave."""
    (tmp_path / "migrations" / "versions").mkdir(parents=True)
    sd = ScriptDirectory(tmp_path / "migrations")
    text = sd.generate("plain", down_revision=(), rev_id="abc1").read_text()
    old = ORIGINAL_TEMPLATE.read_text()  # the example project keeps the template it was made with
    assert text.count("\n    pass\n") == 2 and '"""plain\n\nRevision ID: abc1' in text
    assert "{{ upgrades" not in old and old.count("    pass\n") == 2
