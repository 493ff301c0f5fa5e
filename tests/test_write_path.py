"""The write path on DynamoDB Local: PartiQL conditions that mean what the Scan filter means,
the filter checked again at write time, deletes by a Python rule, and the item path where a
statement cannot carry a write."""
from __future__ import annotations

import random
import threading
from decimal import Decimal

import boto3
import pytest
from boto3.dynamodb.conditions import Attr, ConditionExpressionBuilder
from boto3.dynamodb.types import TypeSerializer
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from conftest import add_index, create_table, scan_all
from dynamic import REMOVE
from dynamic.backfill import backfill, delete_items
from dynamic.backfill.conditions import quote, to_partiql
from dynamic.backfill.statements import MAX_STATEMENT
from dynamic.dynamo import describe_table
from test_backfill import plain_items, put_items

pytestmark = pytest.mark.local
ser = TypeSerializer()
MODES = ["batch", "item"]


# ---- the translator: PartiQL WHERE == FilterExpression, on the real engine -----------------------
NAMES = ["a", "b", "select", "odd name", 'q"uote', "m.x", "l[0]"]
SCALARS = st.one_of(st.integers(0, 3).map(Decimal), st.sampled_from(["x", "y", "xy", ""]))


def _item(rng: random.Random, i: int) -> dict:
    item: dict = {"PK": f"p{i:03d}"}
    for name, make in (
        ("a", lambda: rng.choice([Decimal(rng.randint(0, 3)), "x", "xy", None, True])),
        ("b", lambda: rng.choice([{"x", "y"}, {"y"}, [Decimal(1), "x"], "y", Decimal(2)])),
        ("select", lambda: rng.choice(["x", "y", Decimal(0)])),
        ("odd name", lambda: rng.choice(["x", "xy", Decimal(3)])),
        ('q"uote', lambda: rng.choice(["y", Decimal(1)])),
        ("m", lambda: rng.choice([{"x": Decimal(rng.randint(0, 3))}, {"x": "y"}, {}])),
        ("l", lambda: [rng.choice(["x", Decimal(2)]), "z"]),
    ):
        if rng.random() < 0.75:
            item[name] = make()
    return item


def _leaf(draw) -> object:
    attr = Attr(draw(st.sampled_from(NAMES)))
    kind = draw(st.sampled_from(["eq", "ne", "lt", "lte", "gt", "gte", "between", "begins_with", "contains",
                                 "exists", "not_exists", "attribute_type", "size", "is_in"]))
    if kind in ("exists", "not_exists"):
        return getattr(attr, kind)()
    if kind == "attribute_type":
        return attr.attribute_type(draw(st.sampled_from(["S", "N", "SS", "L", "M", "NULL", "BOOL"])))
    if kind == "between":
        low, high = sorted(draw(st.one_of(st.lists(st.integers(0, 3).map(Decimal), min_size=2, max_size=2),
                                          st.lists(st.sampled_from(["", "x", "xy", "y"]), min_size=2, max_size=2))))
        return attr.between(low, high)
    if kind == "begins_with":
        return attr.begins_with(draw(st.sampled_from(["x", "y"])))
    if kind == "contains":
        return attr.contains(draw(st.sampled_from(["x", "y", Decimal(1)])))
    if kind == "size":
        return getattr(attr.size(), draw(st.sampled_from(["eq", "lt", "gte"])))(Decimal(draw(st.integers(0, 2))))
    if kind == "is_in":
        return attr.is_in(draw(st.lists(SCALARS, min_size=1, max_size=3)))
    return getattr(attr, kind)(draw(SCALARS))


@st.composite
def conditions(draw, depth: int = 0):
    if depth >= 2 or draw(st.booleans()):
        return _leaf(draw)
    op = draw(st.sampled_from(["and", "or", "not"]))
    if op == "not":
        return ~draw(conditions(depth + 1))
    left, right = draw(conditions(depth + 1)), draw(conditions(depth + 1))
    return left & right if op == "and" else left | right


@pytest.fixture(scope="module")
def probe_table(request):
    ddb = request.getfixturevalue("ddb_local")
    client = boto3.client("dynamodb", endpoint_url=ddb.endpoint_url, region_name="us-east-1")
    name = create_table(client, sort_key=False)
    rng = random.Random(7)
    put_items(client, name, [_item(rng, i) for i in range(25)])
    return client, name


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cond=conditions())
def test_partiql_conditions_match_what_the_scan_filter_matches(probe_table, cond):
    client, name = probe_table
    built = ConditionExpressionBuilder().build_expression(cond)
    kw = {"TableName": name, "FilterExpression": built.condition_expression,
          "ExpressionAttributeNames": built.attribute_name_placeholders}
    if built.attribute_value_placeholders:
        kw["ExpressionAttributeValues"] = {k: ser.serialize(v) for k, v in built.attribute_value_placeholders.items()}
    try:
        by_filter = {i["PK"]["S"] for i in client.scan(**kw)["Items"]}
    except client.exceptions.ClientError as e:  # a filter DynamoDB itself refuses: not a case here
        assume("ValidationException" not in str(e))
        raise
    where, params = to_partiql(cond)
    keys = sorted(i["PK"]["S"] for i in client.scan(TableName=name, ProjectionExpression="PK")["Items"])
    statements = [{"Statement": f'UPDATE {quote(name)} SET "probe" = ? WHERE "PK" = ? AND {where}',
                   "Parameters": [{"N": "1"}, {"S": k}, *params]} for k in keys]
    resp = client.batch_execute_statement(Statements=statements)["Responses"]
    errors = {r["Error"]["Code"] for r in resp if "Error" in r} - {"ConditionalCheckFailed"}
    assert not errors, (where, errors)
    by_partiql = {k for k, r in zip(keys, resp) if "Error" not in r}
    assert by_partiql == by_filter, where


# ---- the filter, again at write time ------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
def test_an_item_that_stops_matching_the_filter_is_left_alone(local_client, mode):
    """Between the scan and the write, the application archives some posts: they are counted
    `unmatched` and keep no GSI keys; the others are written as usual."""
    name = create_table(local_client)
    put_items(local_client, name, [{"PK": f"U#{i}", "SK": f"P#{i:03d}", "Type": "Post"} for i in range(120)])
    app = boto3.client("dynamodb", endpoint_url=local_client.meta.endpoint_url, region_name="us-east-1")
    archive = {f"P#{i:03d}" for i in range(0, 120, 7)}
    lock, done = threading.Lock(), set()

    def update(item):
        sk = item["SK"]
        with lock:
            first = sk not in done
            done.add(sk)
        if first and sk in archive:
            app.update_item(TableName=name, Key={"PK": {"S": item["PK"]}, "SK": {"S": sk}},
                            UpdateExpression="SET #t = :a", ExpressionAttributeNames={"#t": "Type"},
                            ExpressionAttributeValues={":a": {"S": "Archived"}})
        return {"GSI1PK": item["PK"], "GSI1SK": sk}

    r = backfill(local_client, describe_table(local_client, name), update, filter=Attr("Type").eq("Post"),
                 segments=4, workers=4, write_mode=mode)
    items = {i["SK"]: i for i in plain_items(local_client, name)}
    assert all("GSI1PK" not in items[sk] and items[sk]["Type"] == "Archived" for sk in archive)
    assert all(i["GSI1PK"] == i["PK"] for sk, i in items.items() if sk not in archive)
    assert (r.updated, r.unmatched) == (120 - len(archive), len(archive))
    assert r.updated + r.unchanged + r.gone + r.unmatched == r.matched


# ---- deletes by a rule ----------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
def test_delete_by_filter_and_where_decides_again_on_a_changed_item(local_client, mode):
    """Delete drafts with an odd A. Meanwhile the application turns some drafts into posts
    (the filter no longer matches) and makes some odd A even (the rule no longer holds):
    none of those is deleted; every other odd draft is."""
    name = create_table(local_client, sort_key=False)
    put_items(local_client, name, [{"PK": f"d{i:03d}", "Type": "Draft", "A": i} for i in range(200)]
              + [{"PK": f"p{i:03d}", "Type": "Post", "A": i} for i in range(20)])
    app = boto3.client("dynamodb", endpoint_url=local_client.meta.endpoint_url, region_name="us-east-1")
    publish = {f"d{i:03d}" for i in range(1, 200, 10)}  # odd: would be deleted
    evened = {f"d{i:03d}" for i in range(3, 200, 10)}  # odd: would be deleted
    lock, seen = threading.Lock(), set()

    def odd(item):
        pk, a = item["PK"], int(item["A"])
        with lock:
            first = pk not in seen
            seen.add(pk)
        if first and pk in publish:
            app.update_item(TableName=name, Key={"PK": {"S": pk}}, UpdateExpression="SET #t = :p",
                            ExpressionAttributeNames={"#t": "Type"}, ExpressionAttributeValues={":p": {"S": "Post"}})
        if first and pk in evened:
            app.update_item(TableName=name, Key={"PK": {"S": pk}}, UpdateExpression="SET A = :a",
                            ExpressionAttributeValues={":a": {"N": str(a + 1)}})
        return a % 2 == 1

    r = delete_items(local_client, describe_table(local_client, name), filter=Attr("Type").eq("Draft"),
                     where=odd, segments=3, workers=3, write_mode=mode)
    left = {i["PK"] for i in plain_items(local_client, name)}
    odd_drafts = {f"d{i:03d}" for i in range(1, 200, 2)}
    assert left == ({f"d{i:03d}" for i in range(200)} - odd_drafts) | publish | evened | {
        f"p{i:03d}" for i in range(20)}
    assert r.deleted == len(odd_drafts) - len(publish) - len(evened)
    assert r.unmatched == len(publish)  # the filter failed at write time
    assert r.unchanged == 100 + len(evened)  # even from the start, or made even meanwhile
    assert r.conflicts >= len(publish) + len(evened)


def test_delete_needs_a_filter_or_a_rule(local_client):
    from dynamic.errors import UsageError

    name = create_table(local_client, sort_key=False)
    table = describe_table(local_client, name)
    with pytest.raises(UsageError, match="needs a filter .* or a where= predicate"):
        delete_items(local_client, table)
    with pytest.raises(UsageError, match="where must be a callable"):
        delete_items(local_client, table, where="A > 1")


# ---- what a statement carries -----------------------------------------------------------------------
def test_odd_names_null_values_and_removes_in_one_statement(local_client):
    """Reserved words, spaces, dots and quotes in names; a NULL the update read; REMOVE."""
    name = create_table(local_client, sort_key=False)
    put_items(local_client, name, [{"PK": f"k{i}", "select": i, "a.b": None, 'say "hi"': "x", "old": 1}
                                   for i in range(30)])
    writes = []
    local_client.meta.events.register("before-parameter-build.dynamodb.BatchExecuteStatement",
                                      lambda params, **kw: writes.append(len(params["Statements"])))

    def update(item):
        assert item["a.b"] is None
        return {"order": item["select"] + 1, 'say "hi"': item['say "hi"'] + "!", "old": REMOVE}

    r = backfill(local_client, describe_table(local_client, name), update, filter=Attr("select").gte(0))
    assert r.updated == 30 and sum(writes) == 30
    for i in plain_items(local_client, name):
        assert i["order"] == i["select"] + 1 and i['say "hi"'] == "x!" and "old" not in i


def test_a_write_too_long_for_a_statement_takes_the_item_path(local_client):
    name = create_table(local_client, sort_key=False)
    put_items(local_client, name, [{"PK": f"k{i}"} for i in range(10)])
    long_names = {f"attribute_{n:04d}_" + "x" * 60: n for n in range(MAX_STATEMENT // 60)}
    calls = {"UpdateItem": 0, "BatchExecuteStatement": 0}
    for op in calls:
        local_client.meta.events.register(f"before-call.dynamodb.{op}",
                                          lambda op=op, **kw: calls.__setitem__(op, calls[op] + 1))
    r = backfill(local_client, describe_table(local_client, name), lambda item: long_names, segments=1)
    assert r.updated == 10 and calls == {"UpdateItem": 10, "BatchExecuteStatement": 0}
    assert all(len(i) == 1 + len(long_names) for i in plain_items(local_client, name))


def test_a_statement_dynamodb_rejects_names_the_item(local_client):
    """An empty string for an index key: DynamoDB rejects that one statement; the item path says
    which item and why; the other items of the batch are not lost."""
    name = create_table(local_client, sort_key=False)
    add_index(local_client, name)
    put_items(local_client, name, [{"PK": f"k{i:02d}", "A": i} for i in range(20)])
    from dynamic.backfill import UpdateFailed

    with pytest.raises(UpdateFailed, match=r"DynamoDB rejected the update of item \{PK='k07'\}"):
        backfill(local_client, describe_table(local_client, name),
                 lambda item: {"G": "" if item["PK"] == "k07" else f"g{item['A']}"}, segments=1)
    assert {i["PK"] for i in plain_items(local_client, name) if "G" in i} == {
        f"k{i:02d}" for i in range(20)} - {"k07"}
    assert len(scan_all(local_client, name)) == 20


# ---- what a condition cannot carry: whole-item reads and too many attributes ----------------------
WHOLE = '''\
"""count the attributes, by iterating the item"""
from boto3.dynamodb.conditions import Attr

revision = "{rev}"
down_revision = {down}


def upgrade(op):
    op.backfill({update}, filter=Attr("Type").eq("Thing"))


def downgrade(op):
    pass
'''


def _whole_project(tmp_path, table, mode, *updates):
    from test_upgrade_faults import project
    revs, down = [], None
    for i, update in enumerate(updates):
        rev = f"a{i:07d}"
        revs.append((f"{rev}_r", WHOLE.format(rev=rev, down=repr(down), update=update)))
        down = rev
    return project(tmp_path, table, *revs, write_mode=mode)


@pytest.mark.parametrize("write_mode", MODES)
def test_an_update_reading_the_whole_item_is_written_with_a_warning(ddb_local, local_client, tmp_path, write_mode):
    """Iterating the item leaves the write's condition blind to attributes added after the scan:
    the run says so, once per operation, and an update reading by name does not."""
    from test_upgrade_faults import dyn
    table = create_table(local_client)
    put_items(local_client, table, [{"PK": f"U#{i}", "SK": "T", "Type": "Thing", "a": i} for i in range(3)])
    root = _whole_project(tmp_path, table, write_mode, 'lambda item: {"n": len(item)}',
                          'lambda item: {"b": item["a"] + 1}')
    r = dyn(root, ddb_local.endpoint_url, "upgrade", "head")
    assert r.returncode == 0, r.stderr
    warnings = [line for line in r.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1, r.stderr
    assert "update() read the whole item" in warnings[0] and "on 3 items" in warnings[0]
    assert "by name" in warnings[0]
    import json
    other = create_table(local_client)
    put_items(local_client, other, [{"PK": "U#1", "SK": "T", "Type": "Thing", "a": 1}])
    again = _whole_project(tmp_path / "again", other, write_mode, 'lambda item: {"m": len(item)}')
    out = json.loads(dyn(again, ddb_local.endpoint_url, "upgrade", "head", "--json").stdout)
    assert len(out["warnings"]) == 1 and "update() read the whole item" in out["warnings"][0], out["warnings"]
    assert sorted(int(i["n"]["N"]) for i in scan_all(local_client, table) if "n" in i) == [4, 4, 4]


@pytest.mark.parametrize("write_mode", MODES)
def test_an_update_reading_too_many_attributes_for_one_condition_says_so(ddb_local, local_client, tmp_path,
                                                                          write_mode):
    """A condition holds at most 300 operators: an update that reads 160 attributes of an item
    cannot be written safely, and the one line says why and what to do; nothing is written."""
    from test_upgrade_faults import dyn
    table = create_table(local_client)
    wide = {"PK": "W", "SK": "T", "Type": "Thing", **{f"attr_{i:03d}": "v" for i in range(160)}}
    put_items(local_client, table, [wide])
    root = _whole_project(tmp_path, table, write_mode, 'lambda item: {"n": len(item)}')
    r = dyn(root, ddb_local.endpoint_url, "upgrade", "head")
    assert r.returncode == 1, r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in r.stderr, r.stderr
    assert "PK='W'" in errors[0] and "at most 300 operators" in errors[0], errors[0]
    assert "read only the attributes you use" in errors[0]
    assert all("n" not in i for i in scan_all(local_client, table))
