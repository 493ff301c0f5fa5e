"""op.rename_attribute and op.move_items in the engine, on DynamoDB Local (issue 14): the
decisions on a mixed table, clashes named and never overwritten, writes of the application
in between, lost answers of transactions, and the scan meeting the items a move wrote.

`dyn` itself (kill -9 and resume, worker processes, bad input) is in test_rename_move_cli.py."""
from __future__ import annotations

import threading

import pytest
from boto3.dynamodb.conditions import Attr
from boto3.dynamodb.types import TypeSerializer

from conftest import create_table
from dynamic.backfill import Clashes, MemoryCheckpoints, UpdateFailed, move_items, rename_attribute
from dynamic.dynamo import describe_table
from dynamic.errors import UsageError
from dynamic.testing.proxy import FaultProxy
from test_backfill import plain_items, put_items
from test_backfill_faults import proxied_client

pytestmark = pytest.mark.local
ser = TypeSerializer()
MODES = ["batch", "item"]


# ---- rename ------------------------------------------------------------------------------------
def mixed(n: int = 200) -> list[dict]:
    """Users in five shapes, by i % 5: phone only; phoneNumber only (done); neither; both, equal;
    both, different (a clash). Plus Posts with a phone, which the filter leaves out."""
    items = []
    for i in range(n):
        item = {"PK": f"USER#{i:04d}", "SK": "PROFILE", "Type": "User"}
        shape = i % 5
        if shape in (0, 3, 4):
            item["phone"] = f"+1-{i:04d}"
        if shape in (1, 3):
            item["phoneNumber"] = f"+1-{i:04d}"
        if shape == 4:
            item["phoneNumber"] = "+44-0000"
        items.append(item)
    items += [{"PK": f"USER#{i:04d}", "SK": "POST#1", "Type": "Post", "phone": "p"} for i in range(20)]
    return items


@pytest.mark.parametrize("mode", MODES)
def test_rename_on_a_mixed_table(local_client, mode):
    name = create_table(local_client)
    put_items(local_client, name, mixed())
    table = describe_table(local_client, name)
    cp = MemoryCheckpoints()
    with pytest.raises(Clashes) as e:
        rename_attribute(local_client, table, "phone", "phoneNumber", filter=Attr("Type").eq("User"),
                         segments=4, page_size=15, write_mode=mode, checkpoints=cp)
    users = {i["PK"]: i for i in plain_items(local_client, name) if i["Type"] == "User"}
    for pk, item in users.items():
        i = int(pk[5:])
        shape = i % 5
        if shape == 2:
            assert "phone" not in item and "phoneNumber" not in item
        elif shape == 4:  # a clash: both kept as they were
            assert (item["phone"], item["phoneNumber"]) == (f"+1-{i:04d}", "+44-0000")
        else:
            assert "phone" not in item and item["phoneNumber"] == f"+1-{i:04d}", item
    posts = [i for i in plain_items(local_client, name) if i["Type"] == "Post"]
    assert all(p["phone"] == "p" and "phoneNumber" not in p for p in posts)
    r = e.value.backfill_result
    # the scan asks only for items with `phone`: shapes 0, 3 and 4
    assert (r.matched, r.updated, r.clashes, r.conflicts, r.unchanged) == (120, 80, 40, 0, 0)
    clashed = sorted(c["key"]["PK"] for c in e.value.clash_keys)
    assert clashed == sorted(f"USER#{i:04d}" for i in range(4, 200, 5))
    assert e.value.clashes == 40
    msg = str(e.value)
    assert "\n" not in msg and "40 items were left as they were, not overwritten" in msg
    assert "has both 'phone' and 'phoneNumber', with different values" in msg and "and 35 more" in msg
    # the segments that met a clash keep a position from before it: not one is "done"
    assert not cp.cleared and all(p != "done" for p in cp.positions.values())

    # resolve them (this team lets the new attribute win), run again: the rest is renamed
    for pk in clashed:
        local_client.update_item(TableName=name, Key={"PK": {"S": pk}, "SK": {"S": "PROFILE"}},
                                 UpdateExpression="SET phone = phoneNumber")
    r = rename_attribute(local_client, table, "phone", "phoneNumber", filter=Attr("Type").eq("User"),
                         segments=4, page_size=15, write_mode=mode, checkpoints=cp)
    assert (r.updated, r.clashes) == (40, 0) and cp.cleared
    users = [i for i in plain_items(local_client, name) if i["Type"] == "User"]
    assert not any("phone" in i for i in users)
    assert sum(i.get("phoneNumber") == "+44-0000" for i in users) == 40

    # the downgrade is the reverse rename
    r = rename_attribute(local_client, table, "phoneNumber", "phone", filter=Attr("Type").eq("User"),
                         write_mode=mode)
    assert r.updated == 160
    users = [i for i in plain_items(local_client, name) if i["Type"] == "User"]
    assert not any("phoneNumber" in i for i in users) and sum("phone" in i for i in users) == 160


def test_a_crash_after_a_clash_meets_it_again(local_client):
    """The clash is found, then the run dies before it ends: the checkpoints saved after the
    clash still start before it, so the resumed run names it instead of ending clean."""
    name = create_table(local_client, sort_key=False)
    put_items(local_client, name, [{"PK": f"k{i:03d}", "old": i} for i in range(300)])
    order = [i["PK"]["S"] for i in local_client.scan(TableName=name)["Items"]]
    early = order[14]  # on the second page of 10: the clash
    local_client.update_item(TableName=name, Key={"PK": {"S": early}}, UpdateExpression="SET #n = :v",
                             ExpressionAttributeNames={"#n": "new"}, ExpressionAttributeValues={":v": {"N": "-1"}})
    table = describe_table(local_client, name)
    cp = MemoryCheckpoints()

    class Boom(Exception):
        pass

    writes = []

    def dying_guard():  # the run "crashes" on its 200th item write, far past the clash
        if threading.current_thread().name.startswith("dyn-segment"):
            writes.append(1)
            if len(writes) > 200:
                raise Boom()

    with pytest.raises(Boom):
        rename_attribute(local_client, table, "old", "new", segments=1, page_size=10, write_mode="item",
                         checkpoints=cp, guard=dying_guard, checkpoint_interval=0)
    assert sum("old" in i for i in plain_items(local_client, name)) == 300 - 200
    assert cp.saves and cp.positions[0] != "done"
    # without the hold its position would be ~20 pages past the clash; a resume must meet it
    with pytest.raises(Clashes) as e:
        rename_attribute(local_client, table, "old", "new", segments=1, page_size=10, checkpoints=cp)
    assert [c["key"] for c in e.value.clash_keys] == [{"PK": early}]
    r = e.value.backfill_result
    assert r.updated == 99 and r.matched <= 10 + 100  # it re-read from before the clash's page
    assert [i["PK"] for i in plain_items(local_client, name) if "old" in i] == [early]


class AppBetween:
    """The engine's client, with the application writing to some items just before the first
    write call that concerns them (between the engine's read and its write)."""

    def __init__(self, client, app_write):
        self._client = client
        self._app_write = app_write
        self._done: set = set()
        self._lock = threading.Lock()

    def __getattr__(self, name):
        return getattr(self._client, name)

    def _before(self, keys: list[str]) -> None:
        for k in keys:
            with self._lock:
                if k in self._done:
                    continue
                self._done.add(k)
            self._app_write(k)

    def batch_execute_statement(self, **kw):
        self._before([p["S"] for st in kw["Statements"] for p in st["Parameters"] if "S" in p
                      and p["S"].startswith("k")])
        return self._client.batch_execute_statement(**kw)

    def update_item(self, **kw):
        self._before([kw["Key"]["PK"]["S"]])
        return self._client.update_item(**kw)

    def transact_write_items(self, **kw):
        self._before([t["Delete"]["Key"]["PK"]["S"] for t in kw["TransactItems"] if "Delete" in t])
        return self._client.transact_write_items(**kw)


@pytest.mark.parametrize("mode", MODES)
def test_rename_decides_again_on_what_the_app_wrote(local_client, mode):
    name = create_table(local_client, sort_key=False)
    n = 120
    put_items(local_client, name, [{"PK": f"k{i:03d}", "old": f"v{i}"} for i in range(n)])
    table = describe_table(local_client, name)

    def app(pk: str) -> None:
        i = int(pk[1:])
        if i % 4 == 0:  # changes the old attribute
            local_client.update_item(TableName=name, Key={"PK": {"S": pk}}, UpdateExpression="SET #o = :v",
                                     ExpressionAttributeNames={"#o": "old"},
                                     ExpressionAttributeValues={":v": {"S": f"app{i}"}})
        elif i % 4 == 1:  # deletes the item
            local_client.delete_item(TableName=name, Key={"PK": {"S": pk}})
        elif i % 4 == 2:  # already writes the new attribute, the same value
            local_client.update_item(TableName=name, Key={"PK": {"S": pk}}, UpdateExpression="SET #n = #o",
                                     ExpressionAttributeNames={"#n": "new", "#o": "old"})

    r = rename_attribute(AppBetween(local_client, app), table, "old", "new", segments=3, write_mode=mode)
    items = {i["PK"]: i for i in plain_items(local_client, name)}
    assert len(items) == n - n // 4
    assert not any("old" in i for i in items.values())
    for pk, item in items.items():
        i = int(pk[1:])
        assert item["new"] == (f"app{i}" if i % 4 == 0 else f"v{i}")
    assert r.gone == n // 4 and r.conflicts == n // 2 and r.updated == n - n // 4 and r.clashes == 0


def test_rename_refuses_bad_names_and_index_keys(local_client):
    name = create_table(local_client)
    local_client.update_table(TableName=name, AttributeDefinitions=[{"AttributeName": "G", "AttributeType": "S"}],
                              GlobalSecondaryIndexUpdates=[{"Create": {
                                  "IndexName": "ByG", "KeySchema": [{"AttributeName": "G", "KeyType": "HASH"}],
                                  "Projection": {"ProjectionType": "KEYS_ONLY"}}}])
    put_items(local_client, name, [{"PK": "a", "SK": "1", "G": "g", "x": 1}])
    table = describe_table(local_client, name)
    for old, new, want in [
        ("x", "x", "same name 'x'"), ("", "y", "old must be an attribute name"),
        ("x", None, "new must be an attribute name"), ("PK", "P", "'PK' is a key attribute of table"),
        ("x", "SK", "'SK' is a key attribute of table"),
        ("G", "H", "'G' is a key attribute of index ByG: renaming it drops every renamed item from that index"),
        ("x", "G", "'G' is a key attribute of index ByG: renaming into it adds"),
    ]:
        with pytest.raises(UsageError, match=want) as e:
            rename_attribute(local_client, table, old, new)
        assert "\n" not in str(e.value)
    assert plain_items(local_client, name) == [{"PK": "a", "SK": "1", "G": "g", "x": 1}]
    r = rename_attribute(local_client, table, "G", "H", force=True)
    assert r.updated == 1 and plain_items(local_client, name)[0]["H"] == "g"
    assert local_client.scan(TableName=name, IndexName="ByG")["Count"] == 0  # dropped from the index, as said


# ---- move --------------------------------------------------------------------------------------
def things(n: int) -> list[dict]:
    return [{"PK": f"OLD#{i:04d}", "SK": "THING", "Type": "Thing", "A": i, "Tags": {"x", f"t{i % 3}"}}
            for i in range(n)]


def to_new(item):
    """Into the collection of its group; an item already there is left alone."""
    if item["PK"].startswith("GROUP#"):
        return None
    i = int(item["A"])
    return {**item, "PK": f"GROUP#{i % 7}", "SK": f"THING#{i:04d}"}


def moved_ok(client, name: str, n: int) -> list[dict]:
    items = plain_items(client, name)
    assert not [i for i in items if i["PK"].startswith("OLD#")], "an old key is left"
    assert sorted(int(i["A"]) for i in items) == list(range(n)), "an item is missing or doubled"
    for i in items:
        a = int(i["A"])
        assert (i["PK"], i["SK"], i["Type"], i["Tags"]) == (f"GROUP#{a % 7}", f"THING#{a:04d}", "Thing",
                                                            {"x", f"t{a % 3}"})
    return items


@pytest.mark.parametrize("segments", [1, 4])
def test_the_scan_meets_the_new_items_and_leaves_them(local_client, segments):
    """New keys land all over the key space, ahead of the scan too: it meets them (scanned >
    n) and leaves them alone, so each item moves once."""
    name = create_table(local_client)
    n = 300
    put_items(local_client, name, things(n))
    r = move_items(local_client, describe_table(local_client, name), to_new, segments=segments, page_size=10,
                   workers=segments)
    moved_ok(local_client, name, n)
    assert (r.moved, r.already_moved, r.clashes, r.conflicts, r.gone) == (n, 0, 0, 0, 0)
    assert r.unchanged > 20 and r.scanned == n + r.unchanged  # the new items it met
    assert r.wcu >= 2 * n


def test_a_transform_that_would_move_its_own_items_again_is_refused(local_client):
    name = create_table(local_client)
    put_items(local_client, name, things(30))
    before = plain_items(local_client, name)
    table = describe_table(local_client, name)
    with pytest.raises(UpdateFailed, match=r"would move the new item it made for \{PK='OLD#\d+', SK='THING'\} "
                                           r"again \(from .* to .*\): the scan can meet") as e:
        move_items(local_client, table, lambda item: {**item, "PK": "X" + item["PK"]})
    assert "\n" not in str(e.value)
    assert plain_items(local_client, name) == before
    # a dry run finds it too, before anything is written
    with pytest.raises(UpdateFailed, match="would move the new item"):
        move_items(local_client, table, lambda item: {**item, "PK": "X" + item["PK"]}, dry_run=True)


@pytest.mark.parametrize("transform, want", [
    (lambda it: {"PK": "N#" + it["PK"], "A": it["A"]}, "without the table's key attribute 'SK'"),
    (lambda it: {**it, "PK": "N#" + it["PK"], "SK": 5}, "returned SK as a number .* keys SK as a string"),
    (lambda it: {**it, "PK": "N#" + it["PK"], "Blob": "x" * 500_000}, "would be 500,.* bytes, more than"),
    (lambda it: {**it, "PK": "_dyn", "SK": "x"}, "dyn's reserved partition"),
    (lambda it: {**it, "PK": "N#" + it["PK"], "f": 1.5}, "unstorable value for 'f'"),
    (lambda it: {**it, "PK": ""}, "empty PK"),
    (lambda it: it["nope"], "transform\\(\\) raised KeyError"),
    (lambda it: [it["PK"]], "must return the new item \\(a dict\\) or None, got list"),
])
def test_a_transform_the_table_cannot_take_fails_naming_the_item(local_client, transform, want):
    name = create_table(local_client)
    put_items(local_client, name, things(5))
    before = plain_items(local_client, name)
    with pytest.raises(UpdateFailed, match=want) as e:
        move_items(local_client, describe_table(local_client, name), transform,
                   is_meta=lambda raw: raw["PK"].get("S") == "_dyn")
    assert "OLD#000" in str(e.value) and "\n" not in str(e.value)
    assert e.value.key["PK"]["S"].startswith("OLD#")
    assert plain_items(local_client, name) == before


def test_dynamodb_rejecting_a_move_names_the_item(local_client):
    """A value an index cannot take: DynamoDB refuses the transaction, the error names it."""
    name = create_table(local_client)
    local_client.update_table(TableName=name, AttributeDefinitions=[{"AttributeName": "G", "AttributeType": "S"}],
                              GlobalSecondaryIndexUpdates=[{"Create": {
                                  "IndexName": "ByG", "KeySchema": [{"AttributeName": "G", "KeyType": "HASH"}],
                                  "Projection": {"ProjectionType": "KEYS_ONLY"}}}])
    put_items(local_client, name, things(3))
    with pytest.raises(UpdateFailed, match=r"DynamoDB rejected the move of item \{PK='OLD#000\d', SK='THING'\} "
                                           r"to \{PK='GROUP#\d'.*\}: .*"):
        move_items(local_client, describe_table(local_client, name), lambda it: None if it["PK"][0] == "G" else
                   {**to_new(it), "G": 5})


def test_taken_new_keys_gone_and_changed_old_items(local_client):
    """Every way a move can find the table otherwise than it read it."""
    name = create_table(local_client)
    n = 60
    put_items(local_client, name, things(n))
    table = describe_table(local_client, name)
    raw = {i: {k: ser.serialize(v) for k, v in it.items()} for i, it in enumerate(things(n))}

    def new_of(i: int) -> dict:
        return {k: ser.serialize(v) for k, v in to_new(things(n)[i]).items()}

    put = lambda item: local_client.put_item(TableName=name, Item=item)  # noqa: E731
    # before the run: the new key of 5 holds another item, that of 6 exactly the new item
    put({**new_of(5), "A": {"N": "555"}})
    put(new_of(6))

    def app(pk: str) -> None:  # between the scan and the move
        i = int(pk[4:])
        key = {"PK": raw[i]["PK"], "SK": raw[i]["SK"]}
        if i == 7:  # someone else moved it already
            local_client.delete_item(TableName=name, Key=key)
            put(new_of(7))
        elif i == 8:  # deleted
            local_client.delete_item(TableName=name, Key=key)
        elif i == 9:  # changed: the move is decided again, on what it is now
            local_client.update_item(TableName=name, Key=key, UpdateExpression="SET Tags = :t",
                                     ExpressionAttributeValues={":t": {"SS": ["x", "t0", "app"]}})
        elif i == 10:  # its new key taken meanwhile by another item
            put({**new_of(10), "A": {"N": "1010"}})

    client = AppBetween(local_client, app)
    with pytest.raises(Clashes) as e:
        move_items(client, table, to_new, segments=2)
    r = e.value.backfill_result
    assert (r.moved, r.already_moved, r.gone, r.clashes) == (n - 5, 2, 1, 2)
    assert r.conflicts == 1
    assert sorted(c["key"]["PK"] for c in e.value.clash_keys) == ["OLD#0005", "OLD#0010"]
    assert all("its new key {PK='GROUP#" in c["reason"] and "holds another item" in c["reason"]
               for c in e.value.clash_keys)
    items = {(i["PK"], i["SK"]): i for i in plain_items(local_client, name)}
    assert ("OLD#0005", "THING") in items and ("OLD#0010", "THING") in items  # left as they were
    assert items[("GROUP#5", "THING#0005")]["A"] == 555 and items[("GROUP#3", "THING#0010")]["A"] == 1010
    assert items[("GROUP#2", "THING#0009")]["Tags"] == {"x", "t0", "app"}  # what the app wrote, moved
    assert ("GROUP#1", "THING#0008") not in items  # deleted meanwhile: not resurrected
    assert len(items) == (n - 5) + 2 + 2 + 2  # moved; 6 and 7 already there; 5 and 10 beside their clashes


def test_lost_answers_of_transactions_are_resent_with_their_token(ddb_local, local_client):
    """Throttled, failed and lost TransactWriteItems calls: the engine sends the same request
    again, ClientRequestToken included, so a transaction that had landed answers with its
    success: every item counts as moved by this run, none as 'already moved'."""
    name = create_table(local_client)
    n = 200
    put_items(local_client, name, things(n))
    table = describe_table(local_client, name)
    with FaultProxy(ddb_local.endpoint_url, seed=3) as proxy:
        proxy.inject("TransactWriteItems", throttle=0.1, error500=0.1, lost=0.25)
        proxy.inject("Scan", throttle=0.1, lost=0.1)
        r = move_items(proxied_client(proxy, 1), table, to_new, segments=4, page_size=20)
        counts = {op: dict(c) for op, c in proxy.counts.items()}
    moved_ok(local_client, name, n)
    assert counts["TransactWriteItems"]["lost"] > 10, counts
    assert (r.moved, r.already_moved, r.gone, r.clashes) == (n, 0, 0, 0)


def test_a_dry_run_counts_and_shows_the_moves(local_client):
    name = create_table(local_client)
    put_items(local_client, name, things(40))
    before = plain_items(local_client, name)
    r = move_items(local_client, describe_table(local_client, name), to_new, dry_run=True)
    assert plain_items(local_client, name) == before
    assert (r.moved, r.scanned, r.wcu) == (40, 40, 40 * 4)  # estimated: a put and a delete, each billed twice in a transaction
    s = r.samples[0]
    assert s["before"]["PK"].startswith("OLD#") and s["after"]["PK"].startswith("GROUP#")
    assert s["after"]["SK"] == f"THING#{int(s['before']['PK'][4:]):04d}" and s["before"]["SK"] == "THING"
    assert set(s["before"]) == set(s["after"]) == {"PK", "SK"}  # what the move changes: Type, A, Tags carried over
