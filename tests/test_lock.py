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


# ---- a dead holder on this machine: its identity, checked against /proc ------------------

HOLDER = """
import sys, time, boto3
from dynamic import lock
from dynamic.dynamo import describe_table
from dynamic.store import Store
c = boto3.client("dynamodb", endpoint_url=sys.argv[1], region_name="us-east-1")
lease = lock.acquire(Store(c, describe_table(c, sys.argv[2])), lease_seconds=60)
print("locked", flush=True)
time.sleep(600)
"""


def _holder_process(local_client, store, endpoint):
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", HOLDER, endpoint, store.table.name],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_identity_is_recorded_for_the_holding_process(local_client, leases):
    store = make_store(local_client)
    take(store, leases)
    held = locklib.read_lock(store)
    me = locklib.process_identity()
    assert held.boot_id == me["boot_id"] and held.pid_ns == me["pid_ns"] and held.start_time == me["start_time"]
    assert held.boot_id and held.pid_ns.startswith("pid:[") and held.start_time.isdigit()
    # a pid given for someone else: nothing about this process is claimed for it
    other = make_store(local_client)
    take(other, leases, pid=1)
    assert locklib.read_lock(other).start_time == ""


def test_a_holder_killed_on_this_machine_is_taken_over_at_once(local_client, ddb_local, leases):
    import signal

    store = make_store(local_client)
    holder = _holder_process(local_client, store, ddb_local.endpoint_url)
    assert locklib.holder_is_gone(locklib.read_lock(store)) is False  # alive: wait
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    t0 = time.monotonic()
    lease = take(store, leases, lease_seconds=60, timeout=10)  # the holder's lease is 60 s
    took = time.monotonic() - t0
    print(f"takeover of a kill -9'd holder on this machine: {took * 1000:.0f} ms (lease 60 s)")
    assert lease.taken_over.pid == holder.pid
    assert lease.takeover_reason == "its process is gone from this machine"


def test_a_killed_holder_not_yet_reaped_is_gone_too(local_client, ddb_local, leases):
    """A zombie (its parent has not waited for it yet) cannot do anything more."""
    import signal

    store = make_store(local_client)
    holder = _holder_process(local_client, store, ddb_local.endpoint_url)
    try:
        holder.send_signal(signal.SIGKILL)
        t0 = time.monotonic()
        while locklib._stat(holder.pid)[0] not in ("Z", "X") and time.monotonic() - t0 < 10:
            time.sleep(0.02)
        assert locklib.holder_is_gone(locklib.read_lock(store))
    finally:
        holder.wait()


def _fake_holder(store, **identity):
    """A lock record as a holder would write it, with some of its identity changed."""
    from dataclasses import replace

    gone = subprocess_pid_of_an_exited_process()
    me = locklib.process_identity()
    info = replace(locklib.LockInfo(owner="dead-owner", host=__import__("socket").gethostname(), pid=gone,
                                    since="2026-01-01T00:00:00Z", expires=0, lease_seconds=5, rvn="r1",
                                    boot_id=me["boot_id"], pid_ns=me["pid_ns"], start_time="123"), **identity)
    store.ensure_record()
    ok, _ = store.update_record(
        update=("SET #lock_owner = :o, #lock_host = :h, #lock_pid = :p, #lock_since = :s, #lock_expires = :e, "
                "#lock_lease = :l, #rvn = :r, #lock_boot_id = :b, #lock_pid_ns = :n, #lock_start_time = :t"),
        condition="attribute_not_exists(#lock_owner)",
        values={":o": {"S": info.owner}, ":h": {"S": info.host}, ":p": {"N": str(info.pid)},
                ":s": {"S": info.since}, ":e": {"N": "0"}, ":l": {"N": "5"}, ":r": {"S": info.rvn},
                ":b": {"S": info.boot_id}, ":n": {"S": info.pid_ns}, ":t": {"S": info.start_time}})
    assert ok
    return info


def subprocess_pid_of_an_exited_process() -> int:
    import subprocess

    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


class FakeTime:
    """A clock that only moves when the waiter sleeps: lease waits take no real time."""

    def __init__(self):
        self.now = 0.0

    def clock(self):
        return self.now

    def sleep(self, s):
        self.now += s


def test_same_identity_and_the_process_gone_takes_over_without_waiting(any_client, leases):
    store = make_store(any_client)
    _fake_holder(store)
    t = FakeTime()
    lease = take(store, leases, lease_seconds=5, clock=t.clock, sleep=t.sleep)
    assert t.now == 0 and lease.takeover_reason == "its process is gone from this machine"


@pytest.mark.parametrize("identity", [
    {"boot_id": "00000000-another-boot"},  # another machine or container host, or a reboot
    {"pid_ns": "pid:[1]"},  # another container on this host: its pids are not ours
    {"host": "another-host"},
    {"boot_id": ""}, {"pid_ns": ""}, {"start_time": ""},  # an older dyn, or /proc unreadable there
], ids=["other-boot", "other-pid-ns", "other-host", "no-boot-id", "no-pid-ns", "no-start-time"])
def test_any_identity_difference_falls_back_to_the_lease(any_client, leases, identity):
    store = make_store(any_client)
    _fake_holder(store, **identity)
    t = FakeTime()
    countdown = []
    lease = take(store, leases, lease_seconds=5, poll=1, clock=t.clock, sleep=t.sleep,
                 on_countdown=lambda info, left, waited: countdown.append(left))
    assert t.now >= 5 and lease.takeover_reason == "its lease expired"
    assert countdown[0] == 5 and countdown == sorted(countdown, reverse=True) and countdown[-1] <= 1


def test_no_proc_here_falls_back_to_the_lease(any_client, leases, monkeypatch):
    store = make_store(any_client)
    _fake_holder(store)
    monkeypatch.setattr(locklib, "boot_id", lambda: "")  # e.g. not Linux
    t = FakeTime()
    lease = take(store, leases, lease_seconds=5, clock=t.clock, sleep=t.sleep)
    assert t.now >= 5 and lease.takeover_reason == "its lease expired"


def test_a_reused_pid_is_not_the_holder(any_client, leases):
    """The holder's pid now belongs to a live process that started later (pid reuse)."""
    import os

    store = make_store(any_client)
    _fake_holder(store, pid=os.getpid(), start_time="1")  # our pid, another start time
    t = FakeTime()
    lease = take(store, leases, lease_seconds=5, clock=t.clock, sleep=t.sleep)
    assert t.now == 0 and lease.takeover_reason == "its process is gone from this machine"


def test_a_live_holder_on_this_machine_is_waited_for(any_client, leases):
    store = make_store(any_client)
    me = locklib.process_identity()
    import os

    _fake_holder(store, pid=os.getpid(), start_time=me["start_time"])  # alive: this very process
    t = FakeTime()
    with pytest.raises(LockTimeout):
        locklib.acquire(store, lease_seconds=5, timeout=3, poll=1, clock=t.clock, sleep=t.sleep)


# ---- a Dask worker's view of the lease -----------------------------------------------------------
class _ThrottledReads:
    """A worker's client whose reads of the version record are throttled while ``on`` is set."""

    def __init__(self, client):
        self.client, self.on = client, False

    def get_item(self, **kw):
        if self.on:
            from botocore.exceptions import ClientError
            raise ClientError({"Error": {"Code": "ThrottlingException", "Message": "slow down"},
                               "ResponseMetadata": {"HTTPStatusCode": 400}}, "GetItem")
        return self.client.get_item(**kw)


def _watch(store, lease, client, clock, sleep=lambda s: None):
    from dynamic.backfill.cluster import LeaseWatch, RemoteLease
    remote = RemoteLease(store.table.name, store.layout.version_key(), lease.token, lease.info.lease_seconds)
    return LeaseWatch(remote, client, clock=clock, sleep=sleep)


class _Timeline:
    """A fake clock whose sleeps let time pass, and the heartbeat of a holder whose process is
    gone: its renewals (writes of a new rvn, as the heartbeat makes) happen at given times."""

    def __init__(self, client, store, renewals=()):
        self.now, self.client, self.store = 1000.0, client, store
        self.renewals = sorted(renewals)
        self.on_tick = lambda: None

    def t(self) -> float:
        return self.now - 1000

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        while self.renewals and self.renewals[0] <= self.t():
            self.renewals.pop(0)
            self.client.update_item(TableName=self.store.table.name, Key=self.store.layout.version_key(),
                                    UpdateExpression="SET rvn = :r",
                                    ExpressionAttributeValues={":r": {"S": f"r{self.t():.2f}"}})
        self.on_tick()


def test_a_dask_worker_whose_lock_reads_fail_stops_before_a_takeover(local_client, leases):
    """The dyn process renews at t=0.5 and t=1 and dies; from t=1.5 the worker's reads of the
    lock are throttled. Its last write must come well before a waiter may take over (a lease
    after the last renewal), not a while after."""
    store = make_store(local_client)
    line = _Timeline(local_client, store, renewals=[0.5, 1.0])
    dead = take(store, leases, lease_seconds=6, clock=lambda: line.now, sleep=lambda s: None)
    dead.abandon()
    reads = _ThrottledReads(local_client)
    line.on_tick = lambda: setattr(reads, "on", line.t() >= 1.5)
    watch = _watch(store, dead, reads, lambda: line.now, line.sleep)
    passed = []  # the times the guard let a write through
    while True:
        try:
            watch()
        except LeaseLost:
            break
        passed.append(line.t())
        line.sleep(0.1)
        assert line.t() < 30, "never stopped"
    assert passed and passed[0] >= 0.5, passed  # it waited to see a renewal before its first write
    assert max(passed) <= 1.0 + 6 * 2 / 3 + 0.01, max(passed)  # 2/3 of a lease after the last renewal
    assert max(passed) < 1.0 + 6  # so before any takeover


def test_a_dask_worker_that_never_saw_the_heartbeat_move_does_not_write(local_client, leases):
    """A worker that starts after the dyn process died reads a lock that looks held; it waits
    for a renewal that never comes, and writes nothing. One whose reads all fail, the same."""
    store = make_store(local_client)
    lease = take(store, leases, lease_seconds=6)
    lease.abandon()
    for throttled, says in ((False, "stopped renewing it"), (True, "cannot read the lock")):
        line = _Timeline(local_client, store)
        reads = _ThrottledReads(local_client)
        reads.on = throttled
        with pytest.raises(LeaseLost, match=says):
            _watch(store, lease, reads, lambda: line.now, line.sleep)()
        assert line.t() >= 6  # it waited a whole lease for a renewal


def test_a_dask_worker_keeps_writing_while_the_heartbeat_moves(local_client, leases):
    """A live holder renews every lease/3: the worker never takes that for a dead one, even when
    some of its reads are throttled; it waits for the first renewal it sees, then writes on."""

    class Flaky(_ThrottledReads):  # every other 0.1 s of the clock, the reads fail
        @property
        def on(self):
            return int(time.monotonic() * 10) % 2 == 1

        @on.setter
        def on(self, value):
            pass

    store = make_store(local_client)
    lease = take(store, leases, lease_seconds=3)  # renewed every 1 s
    watch = _watch(store, lease, Flaky(local_client), time.monotonic, time.sleep)
    end = time.monotonic() + 4.0
    calls = 0
    while time.monotonic() < end:
        watch()
        calls += 1
        time.sleep(0.05)
    assert watch.lost is None and calls > 40


def test_a_lease_beats_faster_when_asked(local_client, leases):
    """While Dask workers watch the lock they wait to see a renewal before writing: the holder
    renews at once when asked, then at the asked pace (not every 5 s of a 60 s lease)."""
    store = make_store(local_client)
    lease = take(store, leases, lease_seconds=60)
    seen = {locklib.read_lock(store).rvn}
    lease.beat_every(0.3)
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        seen.add(locklib.read_lock(store).rvn)
        time.sleep(0.05)
    assert len(seen) >= 4, seen  # the first one, one at once, and about one each 0.3 s
