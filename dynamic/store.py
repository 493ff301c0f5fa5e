"""The metadata records dyn keeps in the migrated table: version, history, checkpoints.

Everything lives in a reserved item collection of the table itself (partition key value
``meta_pk``, ``"_dyn"`` by default), so a table carries its version wherever it is copied or
restored. ``MetaLayout`` says where each record lives for the table's key shape; ``Store``
reads and writes them. Every write is conditional: the version record is changed only by
the holder of the lock (``lock_owner = :token``, the fence) and, for the steps themselves,
only if the ``counter`` is still the one the runner read (compare-and-set).

Layout (attribute names are the table's own key names)::

    PK + SK table                         PK-only table
    PK=_dyn  SK=version                   PK=_dyn#version
    PK=_dyn  SK=history#<ts>#<rev>#<dir>  PK=_dyn#history#<ts>#<rev>#<dir>
    PK=_dyn  SK=checkpoint#<scope>#<chunk>  PK=_dyn#checkpoint#<scope>#<chunk>

The version record also indexes what a PK-only table cannot Query for: the checkpoint scopes
in progress (``checkpoint_scopes``: scope → segment count, kept for both shapes) and, for
PK-only tables, the ids of the latest history items (``history_index``), so no read of the
metadata ever scans the table.
"""
from __future__ import annotations

import datetime as _dt
import os
import random
import re
import socket
import time
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Callable, Iterable, Mapping

from boto3.dynamodb.conditions import Attr, ConditionBase
from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError
from packaging.version import InvalidVersion, Version

from .dynamo import THROTTLE_CODES, TableInfo, error_code, translate
from .errors import ConfigError, DynError, LeaseLost, TableError

HISTORY_INDEX_CAP = 1000  # PK-only tables: how many history items the version record indexes
_TXN_MAX = 100  # items per TransactWriteItems
_CONFLICT_CODES = frozenset({"TransactionConflictException", "TransactionInProgressException"})
_RETRYABLE_REASONS = frozenset(
    {"TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded", "RequestLimitExceeded"}
)
_CONFLICT_ATTEMPTS = 12
_TXN_BYTES = 3_500_000  # TransactWriteItems carries at most 4 MB
CHECKPOINT_CHUNK = 100  # segment positions per checkpoint item (a key is at most ~3 KB: < 400 KB)

# attributes of the version record (a table whose key is named like one of these is refused)
LOCK_ATTRS = ("lock_owner", "lock_host", "lock_pid", "lock_since", "lock_expires", "lock_lease", "rvn",
              "lock_boot_id", "lock_pid_ns", "lock_start_time")
RECORD_ATTRS = (
    "heads", "counter", "format", "dyn_version", "dirty", "checksums", "checkpoint_scopes",
    "history_index", "created", "updated", *LOCK_ATTRS,
)

_ser = TypeSerializer()
_de = TypeDeserializer()


# ---- small helpers ------------------------------------------------------------------------

def now_iso(timespec: str = "seconds") -> str:
    """UTC now as ISO 8601 with a Z (``timespec="microseconds"`` for sortable history ids)."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec=timespec).replace("+00:00", "Z")


def _to_dynamo(value: Any) -> Any:
    """Plain Python → what TypeSerializer accepts (floats become Decimals, tuples lists)."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, float):
        return Decimal(repr(value)) if value == value and abs(value) != float("inf") else str(value)
    if isinstance(value, dict):
        return {str(k): _to_dynamo(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_dynamo(v) for v in value]
    return value


def _from_dynamo(value: Any) -> Any:
    """Deserialized values → plain Python (Decimals become int or float)."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _from_dynamo(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_from_dynamo(v) for v in value]
    if isinstance(value, set):
        return {_from_dynamo(v) for v in value}
    return value


def to_av(value: Any) -> dict:
    """A plain Python value as a raw DynamoDB AttributeValue."""
    return _ser.serialize(_to_dynamo(value))


def from_av(av: dict) -> Any:
    """A raw DynamoDB AttributeValue as a plain Python value."""
    return _from_dynamo(_de.deserialize(av))


_NAME = re.compile(r"#[A-Za-z0-9_]+")


def _names(*expressions: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """ExpressionAttributeNames for the placeholders used: ``#foo`` stands for ``foo``."""
    extra = extra or {}
    out: dict[str, str] = {}
    for expr in expressions:
        for tok in _NAME.findall(expr or ""):
            out[tok] = extra.get(tok, tok[1:])
    return out


def _backoff(attempt: int) -> None:
    time.sleep(min(0.5, 0.01 * (2 ** attempt)) * (0.5 + random.random()))


def _transaction_groups(items: list[dict]) -> Iterable[list[dict]]:
    """Split writes into groups that fit one TransactWriteItems beside its fence (100 items,
    4 MB)."""
    group: list[dict] = []
    size = 0
    for item in items:
        n = len(repr(item))
        if group and (len(group) >= _TXN_MAX - 1 or size + n > _TXN_BYTES):
            yield group
            group, size = [], 0
        group.append(item)
        size += n
    if group:
        yield group


def _is_av(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and next(iter(value)) in ("S", "N", "B")


# ---- records ------------------------------------------------------------------------------

@dataclass(frozen=True)
class LockInfo:
    """Who holds the migration lock. ``expires`` is the holder's wall clock (for display only:
    takeover decisions never compare clocks across machines); ``rvn`` changes on every heartbeat.
    ``boot_id``, ``pid_ns`` and ``start_time`` say which process on which running kernel holds
    it, so a waiter on the same machine can tell that it died (empty when unknown)."""

    owner: str
    host: str
    pid: int
    since: str
    expires: float
    lease_seconds: float
    rvn: str
    boot_id: str = ""
    pid_ns: str = ""
    start_time: str = ""


@dataclass(frozen=True)
class VersionRecord:
    """The version record as read; a missing record reads as an empty one with ``exists=False``."""

    heads: tuple[str, ...] = ()
    counter: int = 0
    format: str = ""
    dyn_version: str = ""
    dirty: dict | None = None
    checksums: dict[str, str] = field(default_factory=dict)
    lock: LockInfo | None = None
    exists: bool = False
    checkpoint_scopes: dict[str, int] = field(default_factory=dict)


def parse_lock(item: dict | None) -> LockInfo | None:
    """The lock attributes of a raw version record item, or None when it is not locked."""
    if not item or "lock_owner" not in item:
        return None

    def get(name, default):
        try:
            return from_av(item[name]) if name in item else default
        except Exception:
            return default

    return LockInfo(
        owner=str(get("lock_owner", "")),
        host=str(get("lock_host", "?")),
        pid=int(get("lock_pid", 0) or 0),
        since=str(get("lock_since", "?")),
        expires=float(get("lock_expires", 0) or 0),
        lease_seconds=float(get("lock_lease", 0) or 0),
        rvn=str(get("rvn", "")),
        boot_id=str(get("lock_boot_id", "")),
        pid_ns=str(get("lock_pid_ns", "")),
        start_time=str(get("lock_start_time", "")),
    )


def _parse_record(item: dict | None) -> VersionRecord:
    if not item:
        return VersionRecord()
    fmt = str(from_av(item["format"])) if "format" in item else ""
    dyn_version = str(from_av(item["dyn_version"])) if "dyn_version" in item else ""
    try:
        plain = {k: from_av(v) for k, v in item.items() if k not in LOCK_ATTRS}
        return VersionRecord(
            heads=tuple(plain.get("heads") or ()),
            counter=int(plain.get("counter") or 0),
            format=fmt,
            dyn_version=dyn_version,
            dirty=plain.get("dirty") or None,
            checksums=dict(plain.get("checksums") or {}),
            lock=parse_lock(item),
            exists=True,
            checkpoint_scopes={k: int(v) for k, v in (plain.get("checkpoint_scopes") or {}).items()},
        )
    except Exception:
        # a record of a newer format may not parse: keep what check_format needs to explain
        return VersionRecord(format=fmt, dyn_version=dyn_version, lock=parse_lock(item), exists=True)


# ---- layout ---------------------------------------------------------------------------------
DEFAULT_META_PK = "_dyn"


def _record_suffix(layout: "MetaLayout", item: dict) -> str:
    """What follows dyn's meta key in a record's key: "version", "history#...", "checkpoint#..."."""
    if layout.has_sort_key:
        return item.get(layout.sk_name, {}).get("S", "")
    return item.get(layout.pk_name, {}).get("S", "").partition("#")[2]


class MetaLayout:
    """Where dyn's records live in a table of a given key shape, and how to keep scans off them."""

    def __init__(self, table: TableInfo, meta_pk: str = DEFAULT_META_PK):
        self.table = table
        self.pk_name = table.pk_name
        self.sk_name = table.sk_name
        meta_pk = str(meta_pk)
        name = table.name
        for key in table.key_names:
            if key in RECORD_ATTRS:
                raise TableError(
                    f"table {name} has a key attribute named {key!r}, which dyn uses in its version "
                    "record: dyn cannot keep its records in this table")
        if table.sk_name is not None and table.sk_type != "S":
            raise TableError(
                f"table {name} has a {_type_name(table.sk_type)} sort key {table.sk_name!r}: dyn keeps "
                "its records under string sort keys, so it needs a string sort key (or none)")
        if table.pk_type == "S":
            if not meta_pk:
                raise TableError("meta_pk is empty: set meta_pk in dyn.toml (default \"_dyn\")")
            self.meta_pk: str | Decimal = meta_pk
            self.meta_av = {"S": meta_pk}
        elif table.pk_type == "N":
            if table.sk_name is None:
                raise TableError(
                    f"table {name} has a numeric partition key {table.pk_name!r} and no sort key: dyn "
                    "keeps its records under string keys, so it needs a string partition key or a "
                    "string sort key")
            number = _number(meta_pk)
            if number is None:
                raise TableError(
                    f"table {name} has a numeric partition key {table.pk_name!r}: set meta_pk to a "
                    "number in dyn.toml (e.g. meta_pk = \"-1\")")
            self.meta_pk = number
            self.meta_av = {"N": str(number)}
        else:
            raise TableError(
                f"table {name} has a {_type_name(table.pk_type)} partition key {table.pk_name!r}: dyn "
                "needs a string partition key (or a numeric one with a string sort key)")

    @property
    def has_sort_key(self) -> bool:
        return self.sk_name is not None

    def _key(self, suffix: str) -> dict:
        if self.has_sort_key:
            return {self.pk_name: dict(self.meta_av), self.sk_name: {"S": suffix}}
        return {self.pk_name: {"S": f"{self.meta_pk}#{suffix}"}}

    def version_key(self) -> dict:
        """The raw key of the version record."""
        return self._key("version")

    def history_key(self, history_id: str) -> dict:
        """The raw key of a history item; ``history_id`` is ``<iso-utc-ts>#<revision>#<direction>``."""
        return self._key(f"history#{history_id}")

    def checkpoint_key(self, scope: str, chunk: int) -> dict:
        """The raw key of one checkpoint item: the positions of segments
        ``chunk * CHECKPOINT_CHUNK`` up to the next chunk."""
        return self._key(f"checkpoint#{scope}#{chunk:05d}")

    def exclude_condition(self) -> ConditionBase:
        """A boto3 condition true for every item that is NOT one of dyn's records."""
        if self.has_sort_key:
            return Attr(self.pk_name).ne(self.meta_pk)
        return ~Attr(self.pk_name).begins_with(f"{self.meta_pk}#")

    def is_meta(self, key_or_item: dict) -> bool:
        """Whether a key or item (raw AttributeValues or plain values) is one of dyn's records."""
        if not key_or_item or self.pk_name not in key_or_item:
            return False
        value = key_or_item[self.pk_name]
        if _is_av(value):
            kind, value = next(iter(value.items()))
            if kind == "N":
                value = _number(value)
            elif kind != "S":
                return False
        if isinstance(self.meta_pk, Decimal):
            if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
                return False
            return Decimal(str(value)) == self.meta_pk
        if not isinstance(value, str):
            return False
        if self.has_sort_key:
            return value == self.meta_pk
        return value.startswith(f"{self.meta_pk}#")


def _number(text: Any) -> Decimal | None:
    try:
        n = Decimal(str(text).strip())
    except (InvalidOperation, ValueError):
        return None
    if not n.is_finite():
        return None
    return n.normalize() if n != 0 else Decimal(0)


def _type_name(t: str | None) -> str:
    return {"S": "string", "N": "numeric", "B": "binary"}.get(t or "", repr(t))


# ---- the store ------------------------------------------------------------------------------

class _Cancelled(Exception):
    """A transaction was cancelled by a failed condition; ``reasons`` as DynamoDB gave them."""

    def __init__(self, reasons: list[dict]):
        super().__init__("transaction cancelled")
        self.reasons = reasons


class Store:
    """dyn's records in one table. Every write is conditional and, except ``ensure_record``'s
    create-if-missing, fenced by the lock owner token the writer holds."""

    def __init__(self, client: Any, table: TableInfo, meta_pk: str = "_dyn"):
        self.client = client
        self.table = table
        self.layout = MetaLayout(table, meta_pk)
        self._registered: dict[str, int] = {}  # checkpoint scopes this store registered
        self._positions: dict[str, dict[int, dict | str]] = {}  # every known position, by scope
        self._counts: dict[str, dict[int, dict]] = {}  # each segment's counts at its position, by scope

    # ---- reading ------------------------------------------------------------------------
    def read_raw(self) -> dict | None:
        """The version record as a raw item (ConsistentRead), or None when there is none."""
        return self._get(self.layout.version_key())

    def read(self) -> VersionRecord:
        """Called before planning and again once the lock is held; a strongly consistent read.
        A table dyn never touched reads as an empty record (``exists=False``, no heads)."""
        return _parse_record(self.read_raw())

    def check_format(self, record: VersionRecord) -> None:
        """Called after every read that leads to a decision: refuses a record written by a
        newer, incompatible dyn (its format is newer than this dyn's FORMAT_VERSION), and, before
        dyn's first record, a ``meta_pk`` that would hide application items or dyn's own records."""
        import dynamic

        if not record.exists:
            self._check_meta_partition_free()
            return
        if not record.format:
            return
        ours = dynamic.FORMAT_VERSION
        try:
            newer = Version(record.format) > Version(ours)
        except InvalidVersion:
            newer = True
        if newer:
            raise TableError(
                f"table {self.table.name} was written by dyn format {record.format} "
                f"(dyn {record.dyn_version or '?'}); this dyn ({dynamic.__version__}) understands "
                f"format {ours}: upgrade dyn")

    def _check_meta_partition_free(self) -> None:
        """Before dyn's first record under this ``meta_pk``: dyn's data operations skip its whole
        partition (on a table without a sort key, every key starting ``<meta_pk>#``), so an
        application item there would be left out of every migration without a word; and a table
        dyn already migrated under the default ``_dyn`` would be migrated again from scratch,
        dyn's own records with it."""
        layout = self.layout
        if str(layout.meta_pk) != DEFAULT_META_PK and layout.table.pk_type == "S":
            default = MetaLayout(layout.table, DEFAULT_META_PK).version_key()
            if self._get(default) is not None:
                raise ConfigError(
                    f"meta_pk = {layout.meta_pk!s}, but table {self.table.name} holds dyn's records under "
                    f"the default \"{DEFAULT_META_PK}\" (it was migrated with it): leave meta_pk unset")
        if layout.has_sort_key:
            items = self._query_meta(layout)
        else:
            items = self._sample_prefix(layout)
        # dyn's own records (history, checkpoints: a version record deleted by hand) are not the application's
        found = [i for i in items if not _record_suffix(layout, i).startswith(("history#", "checkpoint#", "version"))]
        if found:
            key = found[0].get(layout.sk_name or layout.pk_name, {})
            where = (f"names a partition of table {self.table.name} that holds the application's items (sort key "
                     if layout.has_sort_key else
                     f"is the start of keys of the application's items in table {self.table.name} (key ")
            raise ConfigError(
                f"meta_pk {layout.meta_pk!s} {where}{next(iter(key.values()), '?')!s} among them), and dyn's "
                f"migrations skip those: set meta_pk to a value no item uses (default \"{DEFAULT_META_PK}\")")

    def _get(self, key: dict) -> dict | None:
        """One of dyn's records (or None), strongly consistent."""
        try:
            return self.client.get_item(TableName=self.table.name, Key=key, ConsistentRead=True).get("Item")
        except Exception as e:
            raise self._aws(e) from None

    def _query_meta(self, layout: "MetaLayout") -> list:
        try:
            return self.client.query(TableName=self.table.name, Limit=100, KeyConditionExpression="#pk = :pk",
                                     ExpressionAttributeNames={"#pk": layout.pk_name},
                                     ExpressionAttributeValues={":pk": layout.meta_av}).get("Items", [])
        except Exception as e:
            raise self._aws(e) from None

    def _sample_prefix(self, layout: "MetaLayout", pages: int = 5) -> list:
        """Keys starting ``<meta_pk>#`` among the first few thousand items (no sort key: dyn's
        records are keys of their own, and finding every such key would mean a whole scan)."""
        if str(layout.meta_pk) == DEFAULT_META_PK:
            return []  # "_dyn#..." is dyn's own; an application would not choose it
        kw: dict = {"TableName": self.table.name, "Limit": 1000,
                    "FilterExpression": "begins_with(#pk, :prefix)",
                    "ExpressionAttributeNames": {"#pk": layout.pk_name},
                    "ExpressionAttributeValues": {":prefix": {"S": f"{layout.meta_pk}#"}}}
        found: list = []
        try:
            for _ in range(pages):
                page = self.client.scan(**kw)
                found += page.get("Items", [])
                if found or "LastEvaluatedKey" not in page:
                    break
                kw["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        except Exception as e:
            raise self._aws(e) from None
        return found

    # ---- the version record ---------------------------------------------------------------
    def ensure_record(self) -> bool:
        """Called by the lock before its first attempt: creates the empty version record if the
        table has none (conditional put; losing the race to another runner is fine). Returns
        whether this call created it."""
        import dynamic

        item = {
            **self.layout.version_key(),
            "heads": {"L": []},
            "counter": {"N": "0"},
            "format": {"S": dynamic.FORMAT_VERSION},
            "dyn_version": {"S": dynamic.__version__},
            "checksums": {"M": {}},
            "checkpoint_scopes": {"M": {}},
            "created": {"S": now_iso()},
        }
        if not self.layout.has_sort_key:
            item["history_index"] = {"L": []}
        try:
            self._retry(lambda: self.client.put_item(
                TableName=self.table.name, Item=item,
                ConditionExpression="attribute_not_exists(#pk)",
                ExpressionAttributeNames={"#pk": self.layout.pk_name}))
        except ClientError as e:
            if error_code(e) == "ConditionalCheckFailedException":
                return False
            raise self._aws(e) from None
        return True

    def update_record(self, *, update: str, condition: str, values: dict | None = None,
                      names: dict[str, str] | None = None) -> tuple[bool, dict | None]:
        """One conditional UpdateItem of the version record (the lock's primitive). ``#name``
        placeholders stand for themselves unless ``names`` maps them; ``values`` are raw.
        Returns ``(True, None)``, or ``(False, item)`` with the record as it was when the
        condition failed (None if there is no record)."""
        kw: dict[str, Any] = dict(
            TableName=self.table.name, Key=self.layout.version_key(), UpdateExpression=update,
            ConditionExpression=condition,
            ExpressionAttributeNames=_names(update, condition, extra={"#pk": self.layout.pk_name, **(names or {})}),
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )
        if values:
            kw["ExpressionAttributeValues"] = values
        try:
            self._retry(lambda: self.client.update_item(**kw))
        except ClientError as e:
            if error_code(e) == "ConditionalCheckFailedException":
                item = e.response.get("Item")
                return False, item if item is not None else self.read_raw()
            raise self._aws(e) from None
        except DynError:
            raise
        except Exception as e:
            raise self._aws(e) from None
        return True, None

    def begin_step(self, token: str, step: dict | None) -> None:
        """Called just before a step runs (not when it resumes): marks it in progress (dirty) so
        a crash leaves an honest record; ``None`` clears the mark when nothing ran. Checkpoints
        left by any earlier step are deleted first: they can never belong to this one.
        Raises LeaseLost (and writes nothing more) if the lock is no longer ``token``'s."""
        self.clear_all_checkpoints(token)
        if step is None:
            update, values = "REMOVE #dirty SET #updated = :now", {}
        else:
            update, values = "SET #dirty = :step, #updated = :now", {":step": to_av(step)}
        ok, item = self.update_record(
            update=update, condition="#lock_owner = :token",
            values={**values, ":now": {"S": now_iso()}, ":token": {"S": token}})
        if not ok:
            raise self._lease_lost("marking the step in progress")

    def finish_step(self, token: str, *, expected_counter: int, new_heads: Iterable[str],
                    history: dict, checksum_set: dict | None = None,
                    checksum_remove: Iterable[str] | None = None) -> int:
        """Called right after a step ran: in ONE transaction, sets the heads, bumps the counter,
        clears dirty, records the applied revisions' checksums, and writes the history item —
        only if ``token`` still holds the lock (else LeaseLost) and the counter is still
        ``expected_counter`` (else TableError); when refused, nothing is written. Then deletes
        the step's checkpoints (best effort). Returns the new counter."""
        import dynamic

        checksum_set = dict(checksum_set or {})
        checksum_remove = [r for r in (checksum_remove or ()) if r not in checksum_set]
        direction = str(history.get("direction", "up"))
        revision = str(history.get("revision", "?"))
        history_id = f"{now_iso('microseconds')}#{revision}#{direction}"
        sets = ["#heads = :heads", "#counter = #counter + :one", "#dyn_version = :dv",
                "#format = :fmt", "#updated = :now"]
        removes = ["#dirty"]
        names: dict[str, str] = {}
        values: dict[str, Any] = {
            ":heads": to_av(list(new_heads)), ":one": {"N": "1"}, ":dv": {"S": dynamic.__version__},
            ":fmt": {"S": dynamic.FORMAT_VERSION}, ":now": {"S": now_iso()},
            ":token": {"S": token}, ":expected": {"N": str(int(expected_counter))},
        }
        for i, (rev, checksum) in enumerate(sorted(checksum_set.items())):
            names[f"#cs{i}"] = rev
            values[f":cs{i}"] = {"S": str(checksum)}
            sets.append(f"#checksums.#cs{i} = :cs{i}")
        for i, rev in enumerate(sorted(checksum_remove)):
            names[f"#cr{i}"] = rev
            removes.append(f"#checksums.#cr{i}")
        if not self.layout.has_sort_key:
            sets.append("#history_index = :hidx")
            values[":hidx"] = to_av(self._history_index_with(history_id))
        update = f"SET {', '.join(sets)} REMOVE {', '.join(removes)}"
        new_counter = int(expected_counter) + 1
        self._record_transaction(
            token, expected_counter, update, names, values,
            self._history_item(history_id, history, new_counter), what="the step's result")
        self._tidy_checkpoints(token)
        return new_counter

    def stamp(self, token: str, *, expected_counter: int, new_heads: Iterable[str],
              checksums: dict, purge: bool = False) -> int:
        """Called by ``dyn stamp``: sets the heads without running anything, clears dirty, and
        writes a history item with direction "stamp", in one transaction fenced like
        ``finish_step``. ``checksums`` are those of the revisions the new heads include:
        without ``purge`` a checksum already recorded is kept (an edited file stays
        detectable) and those no longer applied are dropped; with ``purge`` they replace the
        map. Checkpoints are deleted either way (no step is in progress after a stamp).
        Returns the new counter."""
        import dynamic

        new_heads = list(new_heads)
        record = self.read()
        if record.exists and record.counter != int(expected_counter) and not (
                record.lock and record.lock.owner != token):
            raise self._counter_moved(record.counter, expected_counter)
        if purge:
            new_checksums = dict(checksums)
        else:
            new_checksums = {r: record.checksums.get(r, c) for r, c in checksums.items()}
        label = "+".join(new_heads) or "base"
        history_id = f"{now_iso('microseconds')}#{label}#stamp"
        sets = ["#heads = :heads", "#counter = #counter + :one", "#dyn_version = :dv",
                "#format = :fmt", "#updated = :now", "#checksums = :cs"]
        values: dict[str, Any] = {
            ":heads": to_av(new_heads), ":one": {"N": "1"}, ":dv": {"S": dynamic.__version__},
            ":fmt": {"S": dynamic.FORMAT_VERSION}, ":now": {"S": now_iso()},
            ":cs": to_av(new_checksums), ":token": {"S": token},
            ":expected": {"N": str(int(expected_counter))},
        }
        if not self.layout.has_sort_key:
            sets.append("#history_index = :hidx")
            values[":hidx"] = to_av(self._history_index_with(history_id))
        update = f"SET {', '.join(sets)} REMOVE #dirty"
        new_counter = int(expected_counter) + 1
        entry = {"revision": label, "direction": "stamp", "heads_before": list(record.heads),
                 "heads_after": new_heads, "purge": bool(purge), "dyn_version": dynamic.__version__,
                 "finished": now_iso()}
        self._record_transaction(token, expected_counter, update, {}, values,
                                 self._history_item(history_id, entry, new_counter),
                                 what="the stamp")
        self.clear_all_checkpoints(token)
        return new_counter

    def _history_index_with(self, history_id: str) -> list[str]:
        # PK-only: the index is rewritten whole; the counter condition of the same write makes
        # sure nobody changed it since this read
        record = self.read_raw() or {}
        index = from_av(record["history_index"]) if "history_index" in record else []
        return [*index, history_id][-HISTORY_INDEX_CAP:]

    def _history_item(self, history_id: str, entry: dict, counter: int) -> dict:
        entry = dict(entry)
        entry.setdefault("who", _who())
        entry.setdefault("pid", os.getpid())
        entry.setdefault("recorded", now_iso("milliseconds"))
        return {
            **self.layout.history_key(history_id),
            "history_id": {"S": history_id},
            "counter": {"N": str(counter)},
            "entry": to_av(entry),
        }

    def _record_transaction(self, token: str, expected_counter: int, update: str,
                            names: dict[str, str], values: dict, history_item: dict, what: str) -> None:
        condition = "#lock_owner = :token AND #counter = :expected"
        items = [
            {"Update": {
                "TableName": self.table.name, "Key": self.layout.version_key(),
                "UpdateExpression": update, "ConditionExpression": condition,
                "ExpressionAttributeNames": _names(update, condition, extra=names),
                "ExpressionAttributeValues": values,
                "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
            }},
            {"Put": {
                "TableName": self.table.name, "Item": history_item,
                "ConditionExpression": "attribute_not_exists(#pk)",
                "ExpressionAttributeNames": {"#pk": self.layout.pk_name},
            }},
        ]
        try:
            self._transact(items)
        except _Cancelled as c:
            item = self._failed_item(c.reasons, 0)
            lock = parse_lock(item)
            if lock is None or lock.owner != token:
                raise self._lease_lost(f"recording {what}") from None
            counter = int(from_av(item["counter"])) if item and "counter" in item else None
            if counter != int(expected_counter):
                raise self._counter_moved(counter, expected_counter) from None
            raise TableError(
                f"table {self.table.name}: the history item {history_item['history_id']['S']} "
                "already exists; nothing was recorded: run again") from None

    # ---- history --------------------------------------------------------------------------
    def reset_checksum(self, token: str, revision: str, checksum: str) -> None:
        """Called by ``dyn stamp --reset-checksum``: accept an intended edit of an applied
        revision's file by recording its new checksum. Fenced by the lock."""
        ok, item = self.update_record(
            update="SET #checksums.#rev = :c",
            condition="#lock_owner = :t AND attribute_exists(#checksums.#rev)",
            names={"#rev": revision},
            values={":c": {"S": checksum}, ":t": {"S": token}},
        )
        if not ok:
            if not item or item.get("lock_owner", {}).get("S") != token:
                raise LeaseLost(f"lost the lock on table {self.table.name} before recording the checksum")
            raise TableError(f"revision {revision} is not applied to table {self.table.name}: "
                             "there is no checksum to reset")

    def history(self) -> list[dict]:
        """Called by ``dyn history --applied`` / ``dyn current --verbose``: the history items,
        newest first (ordered by the version counter each one set, not by anyone's clock).
        Each is the entry as recorded plus ``counter`` and ``id``."""
        if self.layout.has_sort_key:
            items = self._query_prefix("history#")
        else:
            record = self.read_raw() or {}
            ids = from_av(record["history_index"]) if "history_index" in record else []
            items = self._batch_get([self.layout.history_key(i) for i in ids])
        out = []
        for item in items:
            entry = from_av(item["entry"]) if "entry" in item else {}
            entry["counter"] = int(from_av(item.get("counter", {"N": "0"})))
            entry["id"] = from_av(item["history_id"]) if "history_id" in item else ""
            out.append(entry)
        out.sort(key=lambda e: (e["counter"], e["id"]), reverse=True)
        return out

    # ---- checkpoints ----------------------------------------------------------------------
    def save_checkpoints(self, token: str, scope: str, positions: Mapping[int, dict | str],
                         total_segments: int, counts: Mapping[int, dict] | None = None) -> None:
        """Called by the backfill engine's flusher every couple of seconds: records the new
        positions of some segments (a raw LastEvaluatedKey, or ``"done"``) -- in ONE transaction
        with a check that ``token`` still holds the lock (else LeaseLost, nothing written), or a
        few for very many segments. Positions are packed ``CHECKPOINT_CHUNK`` segments to an
        item, so the cost is a few small items whatever the segment count. The first save of a
        scope also registers it, with its segment count, in the version record; a different
        count for a registered scope is refused (TableError). One writer per scope: the
        process that runs the operation (it keeps every position of the scope in memory).
        ``counts``, when given, are what each of those segments did up to its position (numbers
        by name); they are kept beside the positions (``checkpoint_counts``)."""
        total_segments = int(total_segments)
        known = self._positions.setdefault(scope, {})
        known_counts = self._counts.setdefault(scope, {})
        for segment, c in (counts or {}).items():
            known_counts[int(segment)] = {k: v for k, v in c.items() if v and _number_count(v)}
        changed: set[int] = set()
        for segment, position in positions.items():
            segment = int(segment)
            if not 0 <= segment < total_segments:
                raise ValueError(f"segment {segment} is not in 0..{total_segments - 1}")
            if isinstance(position, str) and position != "done":
                raise ValueError(f"a checkpoint position is a LastEvaluatedKey or 'done', not {position!r}")
            known[segment] = position
            changed.add(segment // CHECKPOINT_CHUNK)
        if not changed:
            return
        saved = now_iso("milliseconds")
        values = {":token": {"S": token}, ":total": {"N": str(total_segments)}}
        for attempt in range(2):
            puts = [{"Put": {"TableName": self.table.name,
                             "Item": self._chunk_item(scope, c, total_segments, saved)}} for c in sorted(changed)]
            registered = self._registered.get(scope) == total_segments
            if registered:
                # the check covers the registration too, so a position is never written for a
                # scope that was cleared meanwhile (it would be stale when registered again)
                condition = "#lock_owner = :token AND #checkpoint_scopes.#scope = :total"
                fence = {"ConditionCheck": {"ConditionExpression": condition}}
            else:
                condition = ("#lock_owner = :token AND (attribute_not_exists(#checkpoint_scopes.#scope) "
                             "OR #checkpoint_scopes.#scope = :total)")
                update = "SET #checkpoint_scopes.#scope = :total"
                fence = {"Update": {"UpdateExpression": update, "ConditionExpression": condition}}
                condition += " " + update
            body = next(iter(fence.values()))
            body.update({
                "TableName": self.table.name, "Key": self.layout.version_key(),
                "ExpressionAttributeNames": _names(condition, extra={"#scope": scope}),
                "ExpressionAttributeValues": values,
                "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
            })
            try:
                for group in _transaction_groups(puts):
                    self._transact([fence, *group])
            except _Cancelled as c:
                item = self._failed_item(c.reasons, 0)
                lock_info = parse_lock(item)
                if lock_info is None or lock_info.owner != token:
                    raise self._lease_lost(f"saving the checkpoints of {scope}") from None
                now_known = _parse_record(item).checkpoint_scopes.get(scope)
                if registered and now_known is None and attempt == 0:
                    # cleared meanwhile: register again, with only these positions (the others
                    # this store remembers were cleared with the scope)
                    self._registered.pop(scope, None)
                    self._positions[scope] = {int(k): v for k, v in positions.items()}
                    self._counts[scope] = {int(k): dict(c) for k, c in (counts or {}).items()}
                    changed = {int(k) // CHECKPOINT_CHUNK for k in positions}
                    continue
                raise TableError(
                    f"table {self.table.name}: checkpoints of {scope} were saved with {now_known} "
                    f"segments, not {total_segments}: resume with {now_known} segments") from None
            self._registered[scope] = total_segments
            return

    def _chunk_item(self, scope: str, chunk: int, total_segments: int, saved: str) -> dict:
        known = self._positions.get(scope, {})
        known_counts = self._counts.get(scope, {})
        first = chunk * CHECKPOINT_CHUNK
        packed, counts = {}, {}
        for segment in range(first, min(first + CHECKPOINT_CHUNK, total_segments)):
            pos = known.get(segment)
            if pos is not None:
                packed[str(segment)] = {"S": "done"} if isinstance(pos, str) else {"M": dict(pos)}
                if known_counts.get(segment):
                    counts[str(segment)] = to_av(known_counts[segment])
        item = {
            **self.layout.checkpoint_key(scope, chunk),
            "scope": {"S": scope}, "chunk": {"N": str(chunk)},
            "total_segments": {"N": str(total_segments)}, "positions": {"M": packed},
            "saved": {"S": saved},
        }
        if counts:
            item["counts"] = {"M": counts}
        return item

    def load_checkpoints(self, scope: str) -> tuple[int | None, dict[int, dict | str]]:
        """Called by the backfill engine before it starts: the segment count the scope was saved
        with (None if it has no checkpoints) and each saved segment's position (a raw
        LastEvaluatedKey to start after, or ``"done"``)."""
        record = self.read()
        total = record.checkpoint_scopes.get(scope)
        if total is None:
            self._positions.pop(scope, None)
            self._counts.pop(scope, None)
            return None, {}
        self._registered[scope] = total
        chunks = -(-total // CHECKPOINT_CHUNK)
        items = self._batch_get([self.layout.checkpoint_key(scope, c) for c in range(chunks)])
        positions: dict[int, dict | str] = {}
        counts: dict[int, dict] = {}
        for item in items:
            for seg, pos in (item.get("positions", {}).get("M") or {}).items():
                positions[int(seg)] = pos["S"] if "S" in pos else pos["M"]
            for seg, c in (item.get("counts", {}).get("M") or {}).items():
                if int(seg) in positions:
                    counts[int(seg)] = from_av(c)
        self._positions[scope] = dict(positions)
        self._counts[scope] = counts
        return total, positions

    def checkpoint_counts(self, scope: str) -> dict[int, dict]:
        """What each segment of ``scope`` had done at its saved position, as the last
        ``load_checkpoints`` read it (or this store saved it since): ``{segment: {name: n}}``."""
        return {seg: dict(c) for seg, c in self._counts.get(scope, {}).items()}

    def clear_checkpoints(self, token: str, scope: str) -> None:
        """Deletes one scope's checkpoints, fenced by ``token`` (else LeaseLost). The items go
        first and the registration last, so a crash midway leaves fewer positions (segments
        that restart: items visited again), never stale ones."""
        record = self.read()
        total = record.checkpoint_scopes.get(scope)
        self._registered.pop(scope, None)
        self._positions.pop(scope, None)
        self._counts.pop(scope, None)
        if total is None:
            return
        chunks = -(-total // CHECKPOINT_CHUNK)
        keys = [self.layout.checkpoint_key(scope, c) for c in range(chunks)]
        for i in range(0, len(keys), _TXN_MAX - 1):
            deletes = [{"Delete": {"TableName": self.table.name, "Key": k}} for k in keys[i:i + _TXN_MAX - 1]]
            try:
                self._transact([self._fence(token), *deletes])
            except _Cancelled:
                raise self._lease_lost(f"clearing the checkpoints of {scope}") from None
        ok, _ = self.update_record(
            update="REMOVE #checkpoint_scopes.#scope", condition="#lock_owner = :token",
            values={":token": {"S": token}}, names={"#scope": scope})
        if not ok:
            raise self._lease_lost(f"clearing the checkpoints of {scope}")

    def clear_all_checkpoints(self, token: str) -> None:
        """Deletes the checkpoints of every scope (fenced by ``token``)."""
        for scope in sorted(self.read().checkpoint_scopes):
            self.clear_checkpoints(token, scope)

    def _tidy_checkpoints(self, token: str) -> None:
        try:
            self.clear_all_checkpoints(token)
        except DynError:
            pass  # the step is recorded; the next begin_step deletes what is left

    # ---- plumbing -------------------------------------------------------------------------
    def _fence(self, token: str) -> dict:
        return {"ConditionCheck": {
            "TableName": self.table.name, "Key": self.layout.version_key(),
            "ConditionExpression": "#lock_owner = :token",
            "ExpressionAttributeNames": {"#lock_owner": "lock_owner"},
            "ExpressionAttributeValues": {":token": {"S": token}},
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }}

    def _failed_item(self, reasons: list[dict], index: int) -> dict | None:
        """The version record as it was when a transaction's condition on it failed."""
        if index < len(reasons) and reasons[index].get("Item") is not None:
            return reasons[index]["Item"]
        return self.read_raw()

    def _transact(self, items: list[dict]) -> None:
        """TransactWriteItems, retried while it conflicts with another write of the same item
        (a heartbeat, another segment's checkpoint); raises _Cancelled on a failed condition."""
        # botocore fills in ClientRequestToken once per call and sends the same token with its
        # own retries: a retry of a transaction whose response was lost is recognised by
        # DynamoDB as the same request, not applied twice
        for attempt in range(_CONFLICT_ATTEMPTS):
            try:
                self.client.transact_write_items(TransactItems=items, ReturnConsumedCapacity="TOTAL")
                return
            except ClientError as e:
                code = error_code(e)
                if code == "TransactionCanceledException":
                    reasons = e.response.get("CancellationReasons") or []
                    codes = {r.get("Code") for r in reasons}
                    if "ConditionalCheckFailed" in codes or (not reasons and "ConditionalCheckFailed" in str(e)):
                        raise _Cancelled(reasons) from None
                    if codes & _RETRYABLE_REASONS or not reasons:
                        _backoff(attempt)
                        continue
                    raise self._aws(e) from None
                if code in _CONFLICT_CODES or code in THROTTLE_CODES:
                    _backoff(attempt)
                    continue
                raise self._aws(e) from None
            except Exception as e:
                raise self._aws(e) from None
        raise TableError(
            f"table {self.table.name}: dyn's version record stayed busy (transaction conflicts) "
            f"through {_CONFLICT_ATTEMPTS} attempts: run again")

    def _retry(self, call):
        """A single-item write, retried while it conflicts with a transaction on the item."""
        for attempt in range(_CONFLICT_ATTEMPTS):
            try:
                return call()
            except ClientError as e:
                if error_code(e) in _CONFLICT_CODES and attempt < _CONFLICT_ATTEMPTS - 1:
                    _backoff(attempt)
                    continue
                raise

    def _query_prefix(self, prefix: str) -> list[dict]:
        kw: dict[str, Any] = dict(
            TableName=self.table.name, ConsistentRead=True,
            KeyConditionExpression="#pk = :pk AND begins_with(#sk, :prefix)",
            ExpressionAttributeNames={"#pk": self.layout.pk_name, "#sk": self.layout.sk_name},
            ExpressionAttributeValues={":pk": dict(self.layout.meta_av), ":prefix": {"S": prefix}},
        )
        items: list[dict] = []
        try:
            while True:
                r = self.client.query(**kw)
                items.extend(r.get("Items", []))
                if "LastEvaluatedKey" not in r:
                    return items
                kw["ExclusiveStartKey"] = r["LastEvaluatedKey"]
        except Exception as e:
            raise self._aws(e) from None

    def _batch_get(self, keys: list[dict]) -> list[dict]:
        items: list[dict] = []
        try:
            for i in range(0, len(keys), 100):
                pending = {self.table.name: {"Keys": keys[i:i + 100], "ConsistentRead": True}}
                attempt = 0
                while pending:
                    r = self.client.batch_get_item(RequestItems=pending)
                    items.extend(r.get("Responses", {}).get(self.table.name, []))
                    pending = r.get("UnprocessedKeys") or {}
                    if pending:
                        _backoff(attempt)
                        attempt += 1
        except Exception as e:
            raise self._aws(e) from None
        return items

    def _aws(self, e: BaseException) -> DynError:
        if isinstance(e, DynError):
            return e
        return translate(e, self.table.name, self.client)

    def _lease_lost(self, what: str) -> LeaseLost:
        return LeaseLost(
            f"lost the migration lock on table {self.table.name}: another runner took it over or "
            f"it was force-released; this runner stopped before {what}")

    def _counter_moved(self, counter: int | None, expected: int) -> TableError:
        return TableError(
            f"the version record of table {self.table.name} changed under this runner (counter "
            f"{counter}, expected {expected}): another writer bypassed the lock; nothing was "
            "recorded: check `dyn current` and run again")


def _who() -> str:
    try:
        import getpass

        user = getpass.getuser()
    except Exception:
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


class StoreCheckpoints:
    """The checkpoint store the backfill engine takes: ``load() / save(positions,
    total_segments) / clear()`` for one scope, fenced by a lease (or its token). With a lease,
    ``save`` first checks it locally so a lost lease stops the engine before a network call."""

    keeps_counts = True  # the engine hands each segment's counts with its position

    def __init__(self, store: Store, lease_or_token: Any, scope: str, *, defer_clear: bool = False,
                 on_load: Callable[[dict], None] | None = None):
        self.store = store
        self.scope = scope
        # what earlier runs of this operation did, by segment, up to their saved positions: a
        # resumed run's saves add its own counts to these, so the table keeps the totals
        self.prior: dict[int, dict] = {}
        self.on_load = on_load
        # the runner defers: finish_step drops a step's checkpoints once the step is recorded,
        # so a crash between a backfill's end and that record does not redo the whole backfill
        self.defer_clear = defer_clear
        self.token: str = getattr(lease_or_token, "token", lease_or_token)
        self._check = getattr(lease_or_token, "check", None)

    def load(self) -> tuple[int | None, dict[int, dict | str]]:
        loaded = self.store.load_checkpoints(self.scope)
        self.prior = self.store.checkpoint_counts(self.scope)
        if self.on_load is not None:
            self.on_load(self.prior_totals())
        return loaded

    def prior_totals(self) -> dict:
        """The counts of the earlier runs of this operation, summed over its segments."""
        out: dict = {}
        for c in self.prior.values():
            for k, v in c.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    out[k] = out.get(k, 0) + v
        return out

    def save(self, positions: Mapping[int, dict | str], total_segments: int,
             counts: Mapping[int, dict] | None = None) -> None:
        if self._check is not None:
            self._check()
        if counts is not None and self.prior:
            counts = {seg: _add(self.prior.get(int(seg)), c) for seg, c in counts.items()}
        self.store.save_checkpoints(self.token, self.scope, positions, total_segments, counts)

    def clear(self) -> None:
        if not self.defer_clear:
            self.store.clear_checkpoints(self.token, self.scope)


def _add(a: Mapping | None, b: Mapping) -> dict:
    """Two sets of counts added up by name (numbers only: a clash's keys are not counts)."""
    out = {k: v for k, v in (a or {}).items() if _number_count(v)}
    for k, v in b.items():
        if _number_count(v):
            out[k] = out.get(k, 0) + v
    return out


def _number_count(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)
