"""The lease lock: exclusion, takeover of a dead holder after one lease, never of a live one
(whatever the clocks say), fencing, timeouts. Short leases (0.6–1 s) keep it fast; races
between threads run on DynamoDB Local, whose conditional writes are the real ones."""
from __future__ import annotations

import re
import threading
import time

import pytest

from conftest import create_table, scan_all
from dynamic import lock as locklib
from dynamic.dynamo import describe_table
from dynamic.errors import EXIT_LOCKED, LeaseLost, LockTimeout
from dynamic.store import Store


def snapshot(store):
    """The table's items, less the attributes a live holder's heartbeat keeps changing."""
    return [{k: v for k, v in i.items() if k not in ("rvn", "lock_expires")}
            for i in scan_all(store.client, store.table.name)]


def make_store(client, sort_key=True) -> Store:
    name = create_table(client, sort_key=sort_key, pk="pk" if sort_key else "id", sk="sk")
    return Store(client, describe_table(client, name))


@pytest.fixture
def leases():
    """Leases a test took; their heartbeats are stopped (no network call) at teardown."""
    made: list = []
    yield made
    for lease in made:
        lease.abandon()


def take(store, leases, **kw):
    kw.setdefault("lease_seconds", 1)
    kw.setdefault("timeout", 10)
    lease = locklib.acquire(store, **kw)
    leases.append(lease)
    return lease


@pytest.mark.parametrize("sort_key", [True, False], ids=["pk+sk", "id-only"])
def test_acquire_release_is_idempotent(any_client, leases, sort_key):
    store = make_store(any_client, sort_key)
    assert locklib.read_lock(store) is None
    with take(store, leases, host="h1", pid=42) as lease:
        held = locklib.read_lock(store)
        assert (held.owner, held.host, held.pid, held.lease_seconds) == (lease.token, "h1", 42, 1.0)
        assert held.expires > time.time() and held.since.endswith("Z")
        assert store.read().exists  # acquiring created the version record
        lease.check()
    assert locklib.read_lock(store) is None
    lease.release()
    lease.release()
    again = take(store, leases, timeout=0)  # free at once
    again.release()


def test_two_runners_never_hold_it_at_once(local_client, leases):
    store = make_store(local_client)
    inside, overlaps, turns = [], [], []
    mutex = threading.Lock()

    def runner(name):
        for _ in range(2):
            lease = take(store, leases, lease_seconds=1, timeout=10, poll=0.05)
            with lease:
                with mutex:
                    inside.append(name)
                    if len(inside) > 1:
                        overlaps.append(tuple(inside))
                    turns.append(name)
                time.sleep(0.15)
                lease.check()
                with mutex:
                    inside.remove(name)

    threads = [threading.Thread(target=runner, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert overlaps == [] and sorted(turns) == ["a", "a", "b", "b"]
    assert locklib.read_lock(store) is None


def test_a_dead_holder_is_taken_over_after_one_lease(any_client, leases):
    store = make_store(any_client)
    dead = take(store, leases, lease_seconds=1, host="dead", pid=1)
    dead.abandon()  # killed: no heartbeat, no release
    waits = []
    t0 = time.monotonic()
    lease = take(store, leases, lease_seconds=1, poll=0.1, on_wait=waits.append)
    elapsed = time.monotonic() - t0
    assert 0.9 <= elapsed < 3.0
    assert [(w.host, w.pid) for w in waits] == [("dead", 1)]  # once per holder, not per poll
    assert lease.taken_over.owner == dead.token
    assert locklib.read_lock(store).owner == lease.token


def test_a_live_holder_is_never_taken_over_whatever_the_clocks_say(any_client, leases, monkeypatch):
    store = make_store(any_client)
    # the holder's wall clock is a day behind: its lock_expires looks long past to everyone
    monkeypatch.setattr(locklib, "_wall", lambda: time.time() - 86400)
    holder = take(store, leases, lease_seconds=0.6)
    assert locklib.read_lock(store).expires < time.time()
    # the waiter's clock is wildly off too; only its differences count
    with pytest.raises(LockTimeout):
        locklib.acquire(store, lease_seconds=0.6, timeout=1.5, poll=0.05,
                        clock=lambda: time.monotonic() + 10**9)
    holder.check()
    assert locklib.read_lock(store).owner == holder.token


def test_takeover_is_refused_when_the_holder_renewed_meanwhile(moto_client, leases):
    """The waiter's takeover write is conditioned on the rvn it watched: a renewal that lands
    between its last read and its write keeps the lock with the holder."""
    store = make_store(moto_client)
    holder = take(store, leases, lease_seconds=30)  # heartbeat far away: renewed by hand below
    waiter_store = Store(moto_client, store.table)
    real_read = waiter_store.read_raw
    takeovers = []
    real_update = waiter_store.update_record

    reads = []

    def read_then_holder_renews():
        item = real_read()
        reads.append(item["rvn"]["S"])
        if len(reads) % 2 == 0:  # the waiter saw the same rvn twice: it is about to take over
            assert holder._renew()  # ... and the renewal lands between its read and its write
        return item

    def update(**kw):
        if "rvn = :seen_rvn" in kw["condition"]:
            takeovers.append(kw["values"][":seen_rvn"]["S"])
        return real_update(**kw)

    waiter_store.read_raw = read_then_holder_renews
    waiter_store.update_record = update
    fake = iter(range(0, 10**6, 100))  # each read looks a whole lease after the last
    with pytest.raises(LockTimeout):
        locklib.acquire(waiter_store, lease_seconds=30, timeout=600, poll=0,
                        clock=lambda: float(next(fake)), sleep=lambda s: None)
    assert takeovers and set(takeovers) <= set(reads)  # it did try, each time on a stale rvn
    assert locklib.read_lock(store).owner == holder.token
    holder.check()


def test_fencing_after_takeover(any_client, leases):
    store = make_store(any_client)
    old = take(store, leases, lease_seconds=0.6)
    store.begin_step(old.token, {"revision": "r1", "direction": "up"})
    old.abandon()  # stalled, e.g. a long GC pause or a frozen VM
    new = take(store, leases, lease_seconds=0.6, poll=0.05)
    assert new.taken_over.owner == old.token
    with pytest.raises(LeaseLost):
        old.check()
    before = snapshot(store)
    with pytest.raises(LeaseLost):
        store.finish_step(old.token, expected_counter=0, new_heads=["r1"],
                          history={"revision": "r1", "direction": "up"})
    with pytest.raises(LeaseLost):
        store.save_checkpoints(old.token, "r1#up#0", {0: "done"}, 1)
    old.release()  # conditional: never removes the new holder's lock
    assert snapshot(store) == before
    assert store.read().dirty["revision"] == "r1"  # the new holder resumes the step
    store.finish_step(new.token, expected_counter=0, new_heads=["r1"],
                      history={"revision": "r1", "direction": "up"})
    assert store.read().heads == ("r1",)


def test_the_heartbeat_notices_a_force_release(any_client, leases):
    store = make_store(any_client)
    lease = take(store, leases, lease_seconds=0.6, host="h", pid=7)
    released = locklib.force_release(store)
    assert (released.owner, released.host, released.pid) == (lease.token, "h", 7)
    deadline = time.monotonic() + 2
    while not lease.lost and time.monotonic() < deadline:
        time.sleep(0.02)
    assert lease.lost
    with pytest.raises(LeaseLost, match="force-released"):
        lease.check()
    assert locklib.force_release(store) is None
    lease.release()  # quiet, and removes nothing
    assert locklib.read_lock(store) is None


def test_a_lease_that_cannot_be_renewed_is_lost_before_a_waiter_could_take_it(moto_client, leases):
    store = make_store(moto_client)
    lease = take(store, leases, lease_seconds=0.6)

    def unreachable(**kw):
        raise ConnectionError("network down")

    store.update_record = unreachable  # every renewal fails, transiently
    t0 = time.monotonic()
    while not lease.lost and time.monotonic() - t0 < 2:
        time.sleep(0.02)
    assert lease.lost and time.monotonic() - t0 < 0.6  # conservative: before a full lease
    with pytest.raises(LeaseLost, match="could not be renewed"):
        lease.check()


def test_lock_timeout_says_who_holds_it_and_what_to_do(any_client, leases):
    store = make_store(any_client)
    take(store, leases, lease_seconds=1, host="build-7", pid=4242)
    t0 = time.monotonic()
    with pytest.raises(LockTimeout) as e:
        locklib.acquire(store, lease_seconds=1, timeout=0.5, poll=0.1)
    assert 0.4 < time.monotonic() - t0 < 2
    assert e.value.exit_code == EXIT_LOCKED
    assert re.fullmatch(
        rf"table {store.table.name} is locked by build-7/4242 since \S+Z \(waited [01]s\): if that "
        r"runner is dead its lease expires in [01]s; or run `dyn unlock --yes`", str(e.value)), str(e.value)
    with pytest.raises(LockTimeout):
        locklib.acquire(store, lease_seconds=1, timeout=0)
