"""Lease lock with fencing and heartbeat, kept on dyn's version record.

The design of AWS's DynamoDB lock client: the holder writes a record version number (``rvn``)
and renews it every lease/3 (at most every ``HEARTBEAT_MAX`` seconds: workers that watch the
lock see it move soon) from a heartbeat thread. A waiter never compares clocks across
machines: it remembers the ``rvn`` it saw and when it first saw it *on its own monotonic
clock*, and takes the lock over only if that ``rvn`` stayed unchanged for a whole lease (the
holder's recorded one) — with a conditional write on that very ``rvn``, so a holder that
renewed meanwhile keeps the lock. ``lock_expires`` is written for humans (``dyn lock``) only.

The lock owner token is the fence: every write of the store is conditioned on
``lock_owner = :token``, so a runner whose lease was taken over cannot write anything more to
dyn's records, even if it has not noticed yet; ``Lease.check()`` lets it notice before it
writes to the user's items.

A waiter on the same machine need not wait out a dead holder's lease: the lock records the
holder's kernel boot id, PID namespace, pid and process start time, and when all of them
match this machine and that process is gone, the lock is taken over at once. Hostnames
repeat across containers and CI runners, and another PID namespace's processes are invisible
here, so any difference, or anything that cannot be read, means: wait for the lease.
"""
from __future__ import annotations

import math
import os
import socket
import threading
import time
import uuid
from dataclasses import replace
from typing import Callable

from .errors import LeaseLost, LockTimeout, TableError
from .store import LOCK_ATTRS, LockInfo, Store, now_iso, parse_lock

_wall = time.time  # wall clock: only for lock_since / lock_expires, which humans read

# a holder considers its lease gone this long before a waiter could take it over
_SAFETY = 1 / 6
HEARTBEAT_MAX = 5.0  # seconds between two renewals at most, whatever the lease
_REMOVE_LOCK = "REMOVE " + ", ".join(f"#{a}" for a in LOCK_ATTRS)


# ---- who is this process, and is the holder's process gone? ------------------------------

def _read_text(path: str) -> str:
    try:
        with open(path, encoding="ascii") as f:
            return f.read().strip()
    except (OSError, ValueError):
        return ""


def boot_id() -> str:
    """This kernel's boot id: different on another machine, container host or after a reboot."""
    return _read_text("/proc/sys/kernel/random/boot_id")


def pid_namespace() -> str:
    """This process's PID namespace (``pid:[4026531836]``): pids only mean something inside it."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


class _NoProcess(Exception):
    """No process has that pid here."""


def _stat(pid: int | str) -> tuple[str, str]:
    """(state, start time in clock ticks since boot) from /proc/<pid>/stat; ``_NoProcess`` when
    there is no such process, ("", "") when it cannot be read."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as f:
            text = f.read()
    except (FileNotFoundError, ProcessLookupError):
        raise _NoProcess(pid) from None
    except OSError:
        return "", ""
    fields = text.rsplit(")", 1)[-1].split()  # the command name (field 2) may hold spaces and ')'
    if len(fields) < 20:
        return "", ""
    return fields[0], fields[19]  # field 3 (state) and field 22 (starttime)


def process_identity() -> dict[str, str]:
    """What the lock records about its holder beyond the hostname; empty values when unknown."""
    try:
        start = _stat("self")[1]
    except _NoProcess:
        start = ""
    return {"boot_id": boot_id(), "pid_ns": pid_namespace(), "start_time": start}


def holder_is_gone(holder: LockInfo) -> bool:
    """True only when the holder provably ran on this machine's running kernel, in this PID
    namespace, and its process has exited (or its pid now belongs to a later process). Anything
    that differs or cannot be read gives False: the caller waits for the lease."""
    mine = process_identity()
    if not (holder.boot_id and holder.pid_ns and holder.start_time and holder.pid > 0):
        return False  # recorded by an older dyn, or a holder that could not read its identity
    if not all(mine.values()):
        return False  # no /proc here: nothing can be proved
    if (holder.host, holder.boot_id, holder.pid_ns) != (socket.gethostname(), mine["boot_id"], mine["pid_ns"]):
        return False
    try:
        state, start = _stat(holder.pid)
    except _NoProcess:
        return True
    if not start:
        return False
    return start != holder.start_time or state in ("Z", "X")  # pid reused, or exited and not reaped


def acquire(
    store: Store,
    *,
    lease_seconds: float = 60,
    timeout: float = 600,
    poll: float | None = None,
    on_wait: Callable[[LockInfo], None] | None = None,
    on_countdown: Callable[[LockInfo, float, float], None] | None = None,
    host: str | None = None,
    pid: int | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Lease:
    """Take the table's migration lock, waiting up to ``timeout`` seconds for its holder.

    A held lock is taken over at once when its holder's process is provably gone from this
    machine (:func:`holder_is_gone`), else only once its ``rvn`` stayed unchanged for the
    holder's whole lease as measured on ``clock``. ``on_wait(info)`` is called once per
    distinct holder, ``on_countdown(info, seconds_to_takeover, seconds_waited)`` at every
    poll while waiting. Raises LockTimeout when the lock is still held after ``timeout``.
    The Lease's ``taken_over`` / ``takeover_reason`` say whose lock it replaced and why.
    """
    lease_seconds = float(lease_seconds)
    if lease_seconds <= 0:
        raise ValueError("lease_seconds must be positive")
    poll = min(1.0, lease_seconds / 4) if poll is None else float(poll)
    host = host or socket.gethostname()
    pid = os.getpid() if pid is None else int(pid)
    start = clock()
    store.ensure_record()
    seen: tuple[str, str] | None = None  # (owner, rvn) last seen
    seen_at = start
    announced: set[str] = set()
    while True:
        raw = store.read_raw()
        if raw is None:  # someone deleted the record: recreate it, then compete as usual
            store.ensure_record()
            raw = store.read_raw()
        holder = parse_lock(raw)
        if holder is None:
            lease = _try_lock(store, lease_seconds, host, pid, clock, None,
                              "attribute_exists(#pk) AND attribute_not_exists(#lock_owner)", {})
            if lease:
                return lease
            continue  # another runner got it first: read who
        now = clock()
        holder_lease = holder.lease_seconds if holder.lease_seconds > 0 else lease_seconds
        if (holder.owner, holder.rvn) != seen:
            seen, seen_at = (holder.owner, holder.rvn), now
        takeover = ("its process is gone from this machine" if holder_is_gone(holder) else
                    "its lease expired" if now - seen_at >= holder_lease else None)
        if takeover:
            # conditioned on the rvn just read: a holder that renewed meanwhile keeps the lock
            lease = _try_lock(store, lease_seconds, host, pid, clock, holder,
                              "#lock_owner = :old_owner AND #rvn = :seen_rvn",
                              {":old_owner": {"S": holder.owner}, ":seen_rvn": {"S": holder.rvn}},
                              reason=takeover)
            if lease:
                return lease
            continue
        if holder.owner not in announced:
            announced.add(holder.owner)
            if on_wait:
                on_wait(holder)
        waited = now - start
        if on_countdown:
            on_countdown(holder, max(0.0, holder_lease - (now - seen_at)), waited)
        if waited >= timeout:
            expires_in = max(0, math.ceil(holder_lease - (now - seen_at)))
            raise LockTimeout(
                f"table {store.table.name} is locked by {holder.host}/{holder.pid} since "
                f"{holder.since} (waited {waited:.0f}s): if that runner is dead its lease expires "
                f"in {expires_in}s; or run `dyn unlock --yes`")
        sleep(max(0.0, min(poll, timeout - waited)))


def _try_lock(store: Store, lease_seconds: float, host: str, pid: int, clock: Callable[[], float],
              previous: LockInfo | None, condition: str, values: dict, reason: str | None = None) -> Lease | None:
    """One conditional write taking the lock; the Lease, or None if someone else won."""
    token, rvn = uuid.uuid4().hex, uuid.uuid4().hex
    wall = _wall()
    # the identity proves only this process's own death: a pid given for someone else gets none
    ident = process_identity() if pid == os.getpid() else {"boot_id": "", "pid_ns": "", "start_time": ""}
    info = LockInfo(owner=token, host=host, pid=pid, since=now_iso(),
                    expires=round(wall + lease_seconds, 3), lease_seconds=lease_seconds, rvn=rvn, **ident)
    sent = clock()
    ok, item = store.update_record(
        update=("SET #lock_owner = :token, #lock_host = :host, #lock_pid = :pid, #lock_since = :since, "
                "#lock_expires = :expires, #lock_lease = :lease, #rvn = :rvn, #lock_boot_id = :boot, "
                "#lock_pid_ns = :pidns, #lock_start_time = :start"),
        condition=condition,
        values={
            ":token": {"S": token}, ":host": {"S": host}, ":pid": {"N": str(pid)},
            ":since": {"S": info.since}, ":expires": {"N": repr(info.expires)},
            ":lease": {"N": repr(lease_seconds)}, ":rvn": {"S": rvn}, ":boot": {"S": info.boot_id},
            ":pidns": {"S": info.pid_ns}, ":start": {"S": info.start_time}, **values,
        },
    )
    if not ok:
        now_held = parse_lock(item)
        if not (now_held and now_held.owner == token):  # not a retried write of ours that landed
            return None
    return Lease(store, info, clock=clock, renewed_at=sent, taken_over=previous, takeover_reason=reason)


class Lease:
    """The lock, held: ``token`` fences every store write; a daemon thread renews it every
    lease/3 (5 s at most). ``check()`` raises LeaseLost once it is (or may be) lost. Use as a context manager
    (releases on exit)."""

    def __init__(self, store: Store, info: LockInfo, *, clock: Callable[[], float] = time.monotonic,
                 renewed_at: float | None = None, taken_over: LockInfo | None = None,
                 takeover_reason: str | None = None):
        self.store = store
        self.info = info
        self.token = info.owner
        self.taken_over = taken_over  # the holder whose lock this one replaced (dead or expired)
        self.takeover_reason = takeover_reason
        self._clock = clock
        self._renewed_at = clock() if renewed_at is None else renewed_at
        self._refused = False  # a renewal was refused: someone else holds the lock
        self._gave_up = False  # renewals kept failing until the lease ran out
        self._done = False  # released or abandoned
        self._mutex = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()  # renew now (beat_every)
        self._interval = min(info.lease_seconds / 3, HEARTBEAT_MAX)
        self._thread = threading.Thread(target=self._heartbeat, name=f"dyn-lease-{self.token[:8]}",
                                        daemon=True)
        self._thread.start()

    @property
    def lease_seconds(self) -> float:
        return self.info.lease_seconds

    @property
    def lost(self) -> bool:
        """True once a renewal was refused, or when the last successful renewal is so old that a
        waiter may be about to take over (conservative: a little before a full lease)."""
        return self._refused or self._gave_up or self._clock() >= self._valid_until()

    def _valid_until(self) -> float:
        return self._renewed_at + self.info.lease_seconds * (1 - _SAFETY)

    def check(self) -> float:
        """Called before writing to the table: raises LeaseLost if this runner may no longer
        hold the lock; else returns the seconds it may still write on its last renewal (how long
        a confirmation handed on to worker processes may last)."""
        if self.lost:
            how = ("another runner took it over or it was force-released" if self._refused else
                   f"it could not be renewed for {self.info.lease_seconds * (1 - _SAFETY):.0f}s")
            raise LeaseLost(
                f"lost the migration lock on table {self.store.table.name}: {how}; this runner "
                "stopped before writing anything else")
        return max(0.0, self._valid_until() - self._clock())

    # ---- heartbeat ----------------------------------------------------------------------
    def _heartbeat(self) -> None:
        while True:
            self._wake.wait(self._interval)
            self._wake.clear()
            if self._stop.is_set() or not self._renew():
                return

    def beat_every(self, seconds: float) -> None:
        """Renew at least every ``seconds`` from now on, starting at once: Dask workers write
        only after they saw a renewal, so theirs come sooner."""
        self._interval = max(0.2, min(float(seconds), self._interval))
        self._wake.set()

    def _renew(self) -> bool:
        """One renewal, transient failures retried until the lease would run out."""
        retry = min(1.0, self.info.lease_seconds / 10)
        while not self._stop.is_set():
            rvn = uuid.uuid4().hex
            expires = round(_wall() + self.info.lease_seconds, 3)
            sent = self._clock()
            try:
                ok, _ = self.store.update_record(
                    update="SET #rvn = :rvn, #lock_expires = :expires",
                    condition="#lock_owner = :token",
                    values={":rvn": {"S": rvn}, ":expires": {"N": repr(expires)},
                            ":token": {"S": self.token}},
                )
            except Exception:
                if self._clock() >= self._valid_until():
                    self._gave_up = True
                    return False
                self._stop.wait(retry)
                continue
            if not ok:
                self._refused = True
                return False
            self._renewed_at = sent
            self.info = replace(self.info, rvn=rvn, expires=expires)
            return True
        return False

    def _stop_heartbeat(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=max(5.0, self.info.lease_seconds))

    # ---- ending -------------------------------------------------------------------------
    def release(self) -> None:
        """Stops the heartbeat and removes the lock if it is still this lease's (a conditional
        write: it never removes another runner's lock). Idempotent."""
        with self._mutex:
            if self._done:
                return
            self._done = True
        self._stop_heartbeat()
        if self._refused:
            return  # someone else holds it now
        self.store.update_record(update=_REMOVE_LOCK, condition="#lock_owner = :token",
                                 values={":token": {"S": self.token}})

    def abandon(self) -> None:
        """Stops the heartbeat without releasing — what a killed runner leaves behind (tests)."""
        with self._mutex:
            self._done = True
        self._stop_heartbeat()

    def __enter__(self) -> "Lease":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self.release()
        except Exception:
            if exc_type is None:
                raise
            # already failing: the lock then expires with its lease; keep the original error


def holder_is_live(holder: LockInfo | None) -> bool:
    """Whether a lock's holder looks alive: its lease not expired by the wall clock and its
    process not provably gone from this machine. For wording only (``dyn check`` / ``dyn
    current`` say a step is being applied now rather than left in progress): it compares the
    holder's clock with ours, which takeover decisions never do."""
    return holder is not None and holder.expires > _wall() and not holder_is_gone(holder)


def read_lock(store: Store) -> LockInfo | None:
    """Who holds the lock (``dyn lock``), or None."""
    return parse_lock(store.read_raw())


def force_release(store: Store) -> LockInfo | None:
    """Removes whatever lock is held (``dyn unlock --yes``) and returns whose it was, or None.
    A live holder notices at its next renewal and its fenced writes fail from now on."""
    for _ in range(10):
        holder = parse_lock(store.read_raw())
        if holder is None:
            return None
        ok, _ = store.update_record(update=_REMOVE_LOCK, condition="#lock_owner = :owner",
                                    values={":owner": {"S": holder.owner}})
        if ok:
            return holder
    raise TableError(f"table {store.table.name}: the lock kept changing hands; run `dyn unlock --yes` again")
