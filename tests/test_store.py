"""The store's promises, proved once and run on both beds (moto and DynamoDB Local), like
golang-migrate's shared driver suite. Anything that depends on DynamoDB's own rules
(transactions, conditions, filter expressions) runs at least on DynamoDB Local."""
from __future__ import annotations

import time

import pytest
from boto3.dynamodb.conditions import ConditionExpressionBuilder

import dynamic
from conftest import create_table, scan_all
from dynamic import lock as locklib
from dynamic import store as storemod
from dynamic.dynamo import TableInfo, describe_table
from dynamic.errors import LeaseLost, TableError
from dynamic.store import MetaLayout, Store, StoreCheckpoints, to_av

# (partition key name, sort key name or None): both shapes, default and non-default names
# (default PK/SK names are covered by the tests that use make_store's defaults)
SHAPES = [("pk", "sk"), ("id", None)]
SHAPE_IDS = ["pk+sk", "id-only"]


def make_store(client, pk="PK", sk="SK", pk_type="S", meta_pk="_dyn") -> Store:
    name = create_table(client, sort_key=sk is not None, pk=pk, sk=sk or "SK", pk_type=pk_type)
    return Store(client, describe_table(client, name), meta_pk=meta_pk)


@pytest.fixture(params=SHAPES, ids=SHAPE_IDS)
def store(request, any_client):
    pk, sk = request.param
    return make_store(any_client, pk, sk)


@pytest.fixture
def leases():
    """Leases a test took; their heartbeats are stopped (no network call) at teardown."""
    made: list = []
    yield made
    for lease in made:
        lease.abandon()


def hold(store, leases, **kw):
    lease = locklib.acquire(store, lease_seconds=kw.pop("lease_seconds", 30), timeout=5, **kw)
    leases.append(lease)
    return lease


def step(rev="aaa", direction="up"):
    return {"revision": rev, "direction": direction, "started": "2024-01-01T00:00:00Z", "who": "t@h", "pid": 1}


def finish(store, lease, counter, heads, rev="aaa", direction="up", **kw):
    return store.finish_step(
        lease.token, expected_counter=counter, new_heads=heads,
        history={"revision": rev, "direction": direction, "seconds": 0.25, "counts": {"updated": 3}},
        **kw)


# ---- layout (no table) ---------------------------------------------------------------------

def info(pk="PK", pk_type="S", sk="SK", sk_type="S", name="T") -> TableInfo:
    return TableInfo(name=name, pk_name=pk, pk_type=pk_type, sk_name=sk, sk_type=sk_type if sk else None)


def test_layout_keys_use_the_tables_key_names():
    with_sk = MetaLayout(info(pk="pk", sk="sk"))
    assert with_sk.version_key() == {"pk": {"S": "_dyn"}, "sk": {"S": "version"}}
    assert with_sk.history_key("2024#r1#up") == {"pk": {"S": "_dyn"}, "sk": {"S": "history#2024#r1#up"}}
    assert with_sk.checkpoint_key("r1#up#0", 7) == {"pk": {"S": "_dyn"}, "sk": {"S": "checkpoint#r1#up#0#00007"}}
    pk_only = MetaLayout(info(pk="id", sk=None), meta_pk="_meta")
    assert pk_only.version_key() == {"id": {"S": "_meta#version"}}
    assert pk_only.checkpoint_key("s", 3) == {"id": {"S": "_meta#checkpoint#s#00003"}}


def test_is_meta_on_raw_and_plain_keys():
    with_sk = MetaLayout(info())
    assert with_sk.is_meta({"PK": {"S": "_dyn"}, "SK": {"S": "anything"}})
    assert with_sk.is_meta({"PK": "_dyn", "SK": "x"})
    assert not with_sk.is_meta({"PK": {"S": "_dyn#x"}, "SK": {"S": "version"}})
    assert not with_sk.is_meta({"PK": {"S": "user"}, "SK": {"S": "version"}})
    assert not with_sk.is_meta({"SK": {"S": "version"}})
    pk_only = MetaLayout(info(sk=None))
    assert pk_only.is_meta({"PK": {"S": "_dyn#version"}})
    assert not pk_only.is_meta({"PK": {"S": "_dyn"}})
    assert not pk_only.is_meta({"PK": "_dynamo"})
    numeric = MetaLayout(info(pk_type="N"), meta_pk="-1")
    assert numeric.meta_av == {"N": "-1"}
    assert numeric.is_meta({"PK": {"N": "-1.0"}, "SK": {"S": "version"}})
    assert numeric.is_meta({"PK": -1, "SK": "x"})
    assert not numeric.is_meta({"PK": {"N": "1"}, "SK": {"S": "version"}})
    assert not numeric.is_meta({"PK": {"S": "-1"}, "SK": {"S": "version"}})


def test_numeric_partition_key_needs_a_numeric_meta_pk():
    with pytest.raises(TableError) as e:
        MetaLayout(info(pk="id", pk_type="N", name="orders"))
    assert str(e.value) == ("table orders has a numeric partition key 'id': set meta_pk to a number "
                            "in dyn.toml (e.g. meta_pk = \"-1\")")
    assert MetaLayout(info(pk="id", pk_type="N"), meta_pk="-1").meta_pk == -1


@pytest.mark.parametrize("kwargs, words", [
    (dict(pk="id", pk_type="N", sk=None), "numeric partition key 'id' and no sort key"),
    (dict(pk_type="B"), "binary partition key"),
    (dict(sk_type="N"), "numeric sort key 'SK'"),
    (dict(pk="counter"), "named 'counter'"),
])
def test_unusable_key_shapes_are_one_clear_line(kwargs, words):
    with pytest.raises(TableError) as e:
        MetaLayout(info(**kwargs), meta_pk="-1")
    assert words in str(e.value) and "\n" not in str(e.value)


# ---- the version record --------------------------------------------------------------------

def test_fresh_table_reads_as_empty_and_ensure_record_creates_once(store):
    record = store.read()
    assert record.exists is False and record.heads == () and record.lock is None
    assert store.ensure_record() is True
    assert store.ensure_record() is False  # a lost race is fine
    record = store.read()
    assert record.exists and record.heads == () and record.counter == 0
    assert record.format == dynamic.FORMAT_VERSION and record.dyn_version == dynamic.__version__
    store.check_format(record)


def test_a_step_is_marked_then_recorded_in_one_write(store, leases):
    lease = hold(store, leases)
    store.begin_step(lease.token, step())
    assert store.read().dirty == step()
    assert finish(store, lease, 0, ["aaa"], checksum_set={"aaa": "c1"}) == 1
    record = store.read()
    assert (record.heads, record.counter, record.dirty, record.checksums) == (("aaa",), 1, None, {"aaa": "c1"})
    store.begin_step(lease.token, step("bbb"))
    finish(store, lease, 1, ["bbb"], rev="bbb", checksum_set={"bbb": "c2"})
    store.begin_step(lease.token, step("bbb", "down"))
    finish(store, lease, 2, ["aaa"], rev="bbb", direction="down", checksum_remove=["bbb"])
    record = store.read()
    assert (record.heads, record.counter, record.checksums) == (("aaa",), 3, {"aaa": "c1"})
    hist = store.history()
    assert [(h["revision"], h["direction"], h["counter"]) for h in hist] == [
        ("bbb", "down", 3), ("bbb", "up", 2), ("aaa", "up", 1)]
    assert hist[0]["seconds"] == 0.25 and hist[0]["counts"] == {"updated": 3} and hist[0]["who"]
    # every record dyn wrote is in its reserved collection
    items = scan_all(store.client, store.table.name)
    assert len(items) == 4 and all(store.layout.is_meta(i) for i in items)


def test_begin_step_none_clears_dirty(store, leases):
    lease = hold(store, leases)
    store.begin_step(lease.token, step())
    store.begin_step(lease.token, None)
    assert store.read().dirty is None


def test_finish_step_with_a_stale_counter_fails_and_writes_nothing(store, leases):
    lease = hold(store, leases)
    store.begin_step(lease.token, step())
    before = scan_all(store.client, store.table.name)
    with pytest.raises(TableError, match="changed under this runner"):
        finish(store, lease, 5, ["aaa"], checksum_set={"aaa": "c"})
    assert scan_all(store.client, store.table.name) == before


def test_a_lost_lock_fails_every_fenced_write_and_writes_nothing(store, leases):
    lease = hold(store, leases)
    store.begin_step(lease.token, step())
    store.save_checkpoints(lease.token, "aaa#up#0", {0: "done"}, 2)
    assert locklib.force_release(store).owner == lease.token
    other = hold(store, leases)  # someone else holds it now
    before = scan_all(store.client, store.table.name)
    writes = [
        lambda: finish(store, lease, 0, ["aaa"]),
        lambda: store.save_checkpoints(lease.token, "aaa#up#0", {1: {"x": {"S": "1"}}}, 2),
        lambda: store.save_checkpoints(lease.token, "new#scope", {0: "done"}, 2),
        lambda: store.begin_step(lease.token, step("zzz")),
        lambda: store.clear_checkpoints(lease.token, "aaa#up#0"),
        lambda: store.stamp(lease.token, expected_counter=0, new_heads=["aaa"], checksums={}),
    ]
    for write in writes:
        with pytest.raises(LeaseLost) as e:
            write()
        assert "\n" not in str(e.value)
    assert scan_all(store.client, store.table.name) == before
    assert store.read().lock.owner == other.token


def test_a_newer_format_is_refused_in_one_line(any_client):
    store = make_store(any_client)
    any_client.put_item(TableName=store.table.name, Item={
        **store.layout.version_key(), "format": {"S": "3"}, "dyn_version": {"S": "2.1.0"},
        "heads": {"S": "not-a-list-any-more"}, "counter": {"S": "x"}})
    record = store.read()
    with pytest.raises(TableError) as e:
        store.check_format(record)
    assert str(e.value) == (f"table {store.table.name} was written by dyn format 3 (dyn 2.1.0); this dyn "
                            f"({dynamic.__version__}) understands format {dynamic.FORMAT_VERSION}: upgrade dyn")


def test_history_is_newest_first_by_counter_not_by_clock(store, leases, monkeypatch):
    lease = hold(store, leases)
    stamps = iter(["2030-01-01T00:00:00.000003Z", "2030-01-01T00:00:00.000002Z",
                   "2030-01-01T00:00:00.000001Z"])
    real = storemod.now_iso
    monkeypatch.setattr(storemod, "now_iso", lambda timespec="seconds": next(stamps)
                        if timespec == "microseconds" else real(timespec))
    counter = 0
    for rev in ("r1", "r2"):
        store.begin_step(lease.token, step(rev))
        counter = finish(store, lease, counter, [rev], rev=rev)
    counter = store.stamp(lease.token, expected_counter=counter, new_heads=["r1"], checksums={"r1": "c"})
    hist = store.history()
    assert [(h["revision"], h["direction"]) for h in hist] == [("r1", "stamp"), ("r2", "up"), ("r1", "up")]
    assert hist[0]["heads_before"] == ["r2"] and hist[0]["heads_after"] == ["r1"]


def test_pk_only_history_index_is_capped(any_client, leases, monkeypatch):
    monkeypatch.setattr(storemod, "HISTORY_INDEX_CAP", 2)
    store = make_store(any_client, "id", None)
    lease = hold(store, leases)
    for i, rev in enumerate(("r1", "r2", "r3")):
        finish(store, lease, i, [rev], rev=rev)
    assert [h["revision"] for h in store.history()] == ["r3", "r2"]


def test_stamp_keeps_recorded_checksums_unless_purged(store, leases):
    lease = hold(store, leases)
    store.begin_step(lease.token, step("r1"))
    finish(store, lease, 0, ["r1"], rev="r1", checksum_set={"r1": "old"})
    store.begin_step(lease.token, step("r2"))  # left in progress, with a checkpoint
    store.save_checkpoints(lease.token, "r2#up#0", {0: "done"}, 1)
    store.stamp(lease.token, expected_counter=1, new_heads=["r2"], checksums={"r1": "new", "r2": "c2"})
    record = store.read()
    assert (record.heads, record.counter, record.dirty) == (("r2",), 2, None)
    assert record.checksums == {"r1": "old", "r2": "c2"}
    assert store.load_checkpoints("r2#up#0") == (None, {})
    store.stamp(lease.token, expected_counter=2, new_heads=["r2"], checksums={"r1": "new", "r2": "c2"},
                purge=True)
    assert store.read().checksums == {"r1": "new", "r2": "c2"}
    with pytest.raises(TableError, match="changed under this runner"):
        store.stamp(lease.token, expected_counter=0, new_heads=[], checksums={})
    assert [h["direction"] for h in store.history()] == ["stamp", "stamp", "up"]


# ---- checkpoints ---------------------------------------------------------------------------

def test_checkpoints_save_load_clear(store, leases):
    lease = hold(store, leases)
    scope = "rev1#up#0"
    assert store.load_checkpoints(scope) == (None, {})
    lek = {store.table.pk_name: {"S": "user#7"}}
    if store.table.sk_name:
        lek[store.table.sk_name] = {"S": "profile"}
    store.save_checkpoints(lease.token, scope, {2: lek}, 4)
    store.save_checkpoints(lease.token, scope, {3: "done"}, 4)
    store.save_checkpoints(lease.token, scope, {2: "done"}, 4)  # a later position replaces
    store.save_checkpoints(lease.token, "rev1#up#1", {0: lek}, 1)
    assert store.load_checkpoints(scope) == (4, {2: "done", 3: "done"})
    # a fresh store (another process resuming) sees the same
    assert Store(store.client, store.table).load_checkpoints("rev1#up#1") == (1, {0: lek})
    with pytest.raises(TableError, match="saved with 4 segments, not 8"):
        Store(store.client, store.table).save_checkpoints(lease.token, scope, {0: "done"}, 8)
    store.clear_checkpoints(lease.token, scope)
    assert store.load_checkpoints(scope) == (None, {})
    assert store.load_checkpoints("rev1#up#1") == (1, {0: lek})
    store.clear_checkpoints(lease.token, scope)  # idempotent
    # the adapter the backfill engine takes
    cp = StoreCheckpoints(store, lease, "rev1#up#1")
    cp.save({0: "done"}, 1)
    assert cp.load() == (1, {0: "done"})
    cp.clear()
    assert cp.load() == (None, {})
    items = scan_all(store.client, store.table.name)
    assert len(items) == 1 and store.layout.is_meta(items[0])  # only the version record is left


def test_checkpoints_never_outlive_their_step(store, leases):
    lease = hold(store, leases)
    store.begin_step(lease.token, step("r1"))
    store.save_checkpoints(lease.token, "r1#up#0", {0: "done"}, 2)
    finish(store, lease, 0, ["r1"], rev="r1")
    assert store.load_checkpoints("r1#up#0") == (None, {})
    store.save_checkpoints(lease.token, "r1#up#0", {0: "done"}, 2)  # stray, e.g. cleanup crashed
    store.begin_step(lease.token, step("r1", "down"))
    assert store.load_checkpoints("r1#up#0") == (None, {})


def test_a_scope_cleared_elsewhere_is_registered_again_never_left_stale(store, leases):
    lease = hold(store, leases)
    other = Store(store.client, store.table)  # remembers the scope as registered
    other.save_checkpoints(lease.token, "s", {0: "done"}, 2)
    store.clear_checkpoints(lease.token, "s")
    other.save_checkpoints(lease.token, "s", {1: "done"}, 2)
    assert store.load_checkpoints("s") == (2, {1: "done"})


def test_adapter_with_a_lost_lease_stops_before_writing(any_client, leases):
    store = make_store(any_client)
    lease = hold(store, leases, lease_seconds=0.6)
    lease.abandon()
    cp = StoreCheckpoints(store, lease, "s")
    import time
    time.sleep(0.6)
    with pytest.raises(LeaseLost):
        cp.save({0: "done"}, 1)
    assert store.load_checkpoints("s") == (None, {})


def test_checkpoint_flushes_and_heartbeats_all_land(local_client, leases):
    """A flush is a transaction on the version record, as the heartbeat's update is: on the real
    engine they conflict, and the store retries until each lands."""
    store = make_store(local_client)
    lease = hold(store, leases, lease_seconds=0.6)  # heartbeats every 0.2 s meanwhile
    for page in range(30):
        store.save_checkpoints(lease.token, "big", {n: {"PK": {"S": f"{n}-{page}"}, "SK": {"S": "x"}}
                                                    for n in range(page % 8, 8, 3)}, 8)
        time.sleep(0.01)
    store.save_checkpoints(lease.token, "big", {n: "done" for n in range(8)}, 8)
    assert store.load_checkpoints("big") == (8, {n: "done" for n in range(8)})
    lease.check()


def test_positions_are_packed_a_hundred_segments_to_an_item(store, leases):
    """250 segments: 3 checkpoint items (not 250), written together, read and cleared together;
    a save rewrites only the items whose segments moved."""
    lease = hold(store, leases)
    key = {store.table.pk_name: {"S": "u"}}
    if store.table.sk_name:
        key[store.table.sk_name] = {"S": "p"}
    store.save_checkpoints(lease.token, "wide", {n: ("done" if n % 2 else key) for n in range(250)}, 250)
    meta = [i for i in scan_all(store.client, store.table.name) if "positions" in i]
    assert sorted(int(i["chunk"]["N"]) for i in meta) == [0, 1, 2]
    saved = {int(i["chunk"]["N"]): i["saved"]["S"] for i in meta}
    time.sleep(0.01)
    store.save_checkpoints(lease.token, "wide", {120: "done"}, 250)  # chunk 1 only
    now = {int(i["chunk"]["N"]): i["saved"]["S"] for i in scan_all(store.client, store.table.name)
           if "positions" in i}
    assert now[0] == saved[0] and now[2] == saved[2] and now[1] != saved[1]
    total, positions = Store(store.client, store.table).load_checkpoints("wide")
    assert total == 250 and len(positions) == 250 and positions[120] == "done" and positions[0] == key
    store.clear_checkpoints(lease.token, "wide")
    assert not [i for i in scan_all(store.client, store.table.name) if "positions" in i]


# ---- keeping scans off dyn's records --------------------------------------------------------

def _scan_excluding(client, table, condition):
    expr = ConditionExpressionBuilder().build_expression(condition)
    kw = dict(TableName=table, ConsistentRead=True, FilterExpression=expr.condition_expression,
              ExpressionAttributeNames=expr.attribute_name_placeholders,
              ExpressionAttributeValues={k: to_av(v) for k, v in expr.attribute_value_placeholders.items()})
    items = []
    while True:
        r = client.scan(**kw)
        items += r["Items"]
        if "LastEvaluatedKey" not in r:
            return items
        kw["ExclusiveStartKey"] = r["LastEvaluatedKey"]


@pytest.mark.parametrize("pk, sk, pk_type, meta_pk, user_pks", [
    ("PK", "SK", "S", "_dyn", ["_dynx", "_dyn#1", "user", "_DYN"]),
    ("id", None, "S", "_dyn", ["_dyn", "_dynx", "user", "x#_dyn#"]),
    ("id", "sk", "N", "-1", [-2, 0, 1, 10]),
], ids=["PK+SK", "id-only", "numeric"])
def test_exclude_condition_keeps_a_real_scan_off_dyns_records(local_client, leases, pk, sk, pk_type,
                                                               meta_pk, user_pks):
    store = make_store(local_client, pk, sk, pk_type=pk_type, meta_pk=meta_pk)
    lease = hold(store, leases)
    store.begin_step(lease.token, step())
    store.save_checkpoints(lease.token, "aaa#up#0", {0: "done"}, 1)
    finish(store, lease, 0, ["aaa"])
    store.save_checkpoints(lease.token, "bbb#up#0", {0: "done"}, 1)
    for value in user_pks:
        item = {pk: to_av(value), "data": {"S": "user"}}
        if sk:
            item[sk] = {"S": "version"}  # same sort key as dyn's record, different partition
        local_client.put_item(TableName=store.table.name, Item=item)
    everything = scan_all(local_client, store.table.name)
    meta = [i for i in everything if store.layout.is_meta(i)]
    assert len(meta) == 3  # version, history, checkpoint
    kept = _scan_excluding(local_client, store.table.name, store.layout.exclude_condition())
    assert sorted(repr(i[pk]) for i in kept) == sorted(repr(to_av(v)) for v in user_pks)
    assert all(i["data"] == {"S": "user"} for i in kept)


def test_numeric_partition_key_with_a_numeric_meta_pk(any_client, leases):
    name = create_table(any_client, pk="id", sk="sk", pk_type="N")
    table = describe_table(any_client, name)
    with pytest.raises(TableError, match="set meta_pk to a number"):
        Store(any_client, table)
    store = Store(any_client, table, meta_pk="-1")
    lease = hold(store, leases)
    store.begin_step(lease.token, step())
    store.save_checkpoints(lease.token, "aaa#up#0", {0: {"id": {"N": "5"}, "sk": {"S": "a"}}}, 1)
    assert store.load_checkpoints("aaa#up#0") == (1, {0: {"id": {"N": "5"}, "sk": {"S": "a"}}})
    finish(store, lease, 0, ["aaa"])
    assert store.read().heads == ("aaa",)
    assert [h["revision"] for h in store.history()] == ["aaa"]
    items = scan_all(any_client, name)
    assert {i["id"]["N"] for i in items} == {"-1"}
