"""What the applied revisions declare, found by replaying them; and a revision adopting the rest.

:func:`declared_schema` runs the ``upgrade(op)`` of each applied revision, in graph order,
against a :class:`RecordingOp`: schema operations (``create_gsi``, ``delete_gsi``,
``update_ttl``, ``update_table``) are recorded into a :class:`~dynamic.schema.Schema`, data
operations do nothing and report zero counts, and nothing reaches AWS but reads of table
descriptions. ``op.client.describe_table`` / ``describe_time_to_live`` and ``op.table`` answer
with the schema as declared so far, so an upgrade that branches on the table's state takes
the branch it took when it ran. :func:`adoption` turns the differences ``schema.compare``
finds into the body of a revision that declares what the table has.
"""
from __future__ import annotations

import contextlib
import copy
import json
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from .dynamo import TableInfo, table_info_from_description
from .errors import DynError, Irreversible, MigrationError, TableError
from .operations import Operations, OpSettings
from .schema import (
    COMPARED_SETTINGS,
    HELPER_ARGS,
    SETTING_DEFAULTS,
    Difference,
    Index,
    Schema,
    Ttl,
    index_from_args,
    index_from_description,
    normalize_setting,
)


class NoCounts(int):
    """What a data operation returns during the replay: zero, and zero of every count
    (``result.updated``, ``result.matched`` ...)."""

    def __new__(cls) -> "NoCounts":
        return super().__new__(cls, 0)

    def __getattr__(self, name: str) -> int:
        if name.startswith("__"):
            raise AttributeError(name)
        return 0

    def as_dict(self) -> dict:
        return {}


# the empty answer of each data call made through op.client during the replay
_EMPTY: dict[str, dict] = {
    "scan": {"Items": [], "Count": 0, "ScannedCount": 0},
    "query": {"Items": [], "Count": 0, "ScannedCount": 0},
    "execute_statement": {"Items": []},
    "batch_execute_statement": {"Responses": []},
    "batch_get_item": {"Responses": {}, "UnprocessedKeys": {}},
    "batch_write_item": {"UnprocessedItems": {}},
    "transact_get_items": {"Responses": []},
}


class _NoWait:
    def wait(self, **kwargs: Any) -> None:
        return None


class _EmptyPaginator:
    def __init__(self, page: dict):
        self._page = page

    def paginate(self, **kwargs: Any):
        return iter([copy.deepcopy(self._page)])


class RecordingClient:
    """``op.client`` during the replay. Describing the migrated table answers with the schema
    declared so far; its UpdateTable / UpdateTimeToLive are recorded like the op methods;
    other describe_* and list_* calls are real reads; every other call does nothing and
    returns an empty answer."""

    def __init__(self, op: "RecordingOp", real: Any):
        self._op = op
        self._real = real

    def _ours(self, kwargs: Mapping) -> bool:
        return kwargs.get("TableName") == self._op.table_name

    def describe_table(self, **kwargs: Any) -> dict:
        if self._ours(kwargs):
            return {"Table": self._op.description()}
        return self._real.describe_table(**kwargs)

    def describe_time_to_live(self, **kwargs: Any) -> dict:
        if self._ours(kwargs):
            return {"TimeToLiveDescription": self._op.ttl_description()}
        return self._real.describe_time_to_live(**kwargs)

    def update_table(self, **kwargs: Any) -> dict:
        if self._ours(kwargs):
            self._op.update_table(**{k: v for k, v in kwargs.items() if k != "TableName"})
            return {"TableDescription": self._op.description()}
        return {}

    def update_time_to_live(self, **kwargs: Any) -> dict:
        spec = kwargs.get("TimeToLiveSpecification") or {}
        if self._ours(kwargs):
            self._op.update_ttl(spec.get("AttributeName"), bool(spec.get("Enabled")))
        return {"TimeToLiveSpecification": spec}

    def get_waiter(self, name: str) -> _NoWait:
        return _NoWait()  # the declared schema is always settled

    def get_paginator(self, name: str) -> Any:
        if name.startswith("list_"):
            return self._real.get_paginator(name)
        return _EmptyPaginator(_EMPTY.get(name, {}))

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._real, name)
        if not callable(attr) or name.startswith(("describe_", "list_")) or name == "can_paginate":
            return attr
        return lambda *args, **kwargs: copy.deepcopy(_EMPTY.get(name, {}))


class RecordingOp:
    """Stands in for ``op`` during the replay: records schema operations, touches nothing.

    Any other operation of :class:`~dynamic.operations.Operations` (the data operations,
    and any added later) is a no-op returning :class:`NoCounts`.
    """

    def __init__(self, client: Any, table_description: Mapping):
        self._base = copy.deepcopy(dict(table_description))
        self.table_name: str = self._base["TableName"]
        self.client = RecordingClient(self, client)
        self.settings = OpSettings(dry_run=True)
        self.records: list = []
        self.declared = Schema()
        self.not_compared: dict[str, str] = {}  # update_table argument -> the revision that passed it
        self.provisioned: dict | None = None  # the last ProvisionedThroughput an update_table passed
        self.revision: str | None = None
        self._types = {a["AttributeName"]: a["AttributeType"] for a in self._base.get("AttributeDefinitions", [])
                       if a["AttributeName"] in {k["AttributeName"] for k in self._base["KeySchema"]}}

    # ---- the table as declared so far -------------------------------------------------
    def description(self) -> dict:
        """DescribeTable's ``Table`` had only dyn changed it: the real key schema, the
        declared indexes, and the declared settings (AWS's defaults for the others)."""
        d = copy.deepcopy(self._base)
        d["TableStatus"] = "ACTIVE"
        gsis = [i.description() for i in self.declared.indexes.values()]
        if gsis:
            d["GlobalSecondaryIndexes"] = gsis
        else:
            d.pop("GlobalSecondaryIndexes", None)
        types = dict(self._types)
        for i in self.declared.indexes.values():
            types.update({a: t for _, (a, t) in i.keys if t})
        d["AttributeDefinitions"] = [{"AttributeName": a, "AttributeType": t} for a, t in types.items()]
        settings = {**SETTING_DEFAULTS, **self.declared.settings}
        if "BillingMode" in settings:
            d["BillingModeSummary"] = {"BillingMode": settings["BillingMode"]}
        if self.provisioned:
            d["ProvisionedThroughput"] = dict(self.provisioned)
        d["StreamSpecification"] = settings["StreamSpecification"]
        d["TableClassSummary"] = {"TableClass": settings["TableClass"]}
        d["DeletionProtectionEnabled"] = settings["DeletionProtectionEnabled"]
        return d

    def ttl_description(self) -> dict:
        t = self.declared.ttl
        return ({"TimeToLiveStatus": "ENABLED", "AttributeName": t.attribute} if t.enabled
                else {"TimeToLiveStatus": "DISABLED"})

    @property
    def table(self) -> TableInfo:
        return table_info_from_description(self.description())

    # ---- schema operations: recorded --------------------------------------------------
    def _declare(self, key: str) -> None:
        if self.revision:
            self.declared.declared_by[key] = self.revision

    def create_gsi(self, name: str, partition_key: tuple[str, str], sort_key: tuple[str, str] | None = None,
                   projection: str | list[str] = "ALL", wait: bool = True, throughput: dict | None = None,
                   replace: bool = False, **_: Any) -> bool:
        index = index_from_args(name, partition_key, sort_key, projection, throughput)
        return self._declare_index(index)

    def _declare_index(self, index: Index) -> bool:
        before = self.declared.indexes.get(index.name)
        self.declared.indexes[index.name] = index
        for _, (a, t) in index.keys:
            if t:
                self._types[a] = t
        if before is not None and before.same_definition(index):
            return False
        self._declare(f"index:{index.name}")
        return True

    def delete_gsi(self, name: str, wait: bool = True, **_: Any) -> bool:
        self.declared.declared_by.pop(f"index:{name}", None)
        return self.declared.indexes.pop(name, None) is not None

    def update_ttl(self, attribute: str, enabled: bool = True, **_: Any) -> bool:
        before = self.declared.ttl
        self.declared.ttl = Ttl(True, attribute) if enabled else Ttl(False, None)
        self._declare("ttl")
        return before != self.declared.ttl

    def update_table(self, **kwargs: Any) -> dict:
        types = {a["AttributeName"]: a["AttributeType"] for a in kwargs.get("AttributeDefinitions") or ()}
        self._types.update(types)
        for name, value in kwargs.items():
            if name in COMPARED_SETTINGS:
                self.declared.settings[name] = normalize_setting(name, value)
                self._declare(f"setting:{name}")
            elif name == "ProvisionedThroughput":
                self.provisioned = dict(value)
            elif name == "GlobalSecondaryIndexUpdates":
                for update in value or ():
                    if "Create" in update:
                        c = update["Create"]
                        g = {"IndexName": c["IndexName"], "KeySchema": c["KeySchema"],
                             "Projection": c.get("Projection"), "ProvisionedThroughput": c.get("ProvisionedThroughput")}
                        self._declare_index(index_from_description(g, self._types))
                    elif "Delete" in update:
                        self.delete_gsi(update["Delete"]["IndexName"])
            elif name not in HELPER_ARGS:
                self.not_compared.setdefault(name, self.revision or "?")
        return {}

    # ---- everything else: no effect ---------------------------------------------------
    def irreversible(self, reason: str) -> None:
        raise Irreversible(reason)

    def totals(self) -> dict:
        return {}

    def __getattr__(self, name: str) -> Any:
        if not name.startswith("_") and callable(getattr(Operations, name, None)):
            return lambda *args, **kwargs: NoCounts()
        raise AttributeError(f"'op' has no attribute {name!r}")


# ---- no AWS writes while revisions are replayed -----------------------------------------

_READS = ("Describe", "List", "Get", "BatchGet", "Query", "Scan")
_guard = threading.local()
_patch_lock = threading.Lock()
_patch_users = 0
_original_call: Any = None


class _RefusedCall(Exception):
    """A revision made an AWS call other than a read with a client of its own."""


def _guarded_call(client: Any, operation_name: str, api_params: Any) -> Any:
    if getattr(_guard, "active", False) and not operation_name.startswith(_READS):
        raise _RefusedCall(operation_name)
    return _original_call(client, operation_name, api_params)


@contextmanager
def refuse_aws_writes():
    """While the current thread replays revisions, any botocore call that is not a read
    raises, whatever client made it: the replay must touch nothing."""
    global _patch_users, _original_call
    from botocore.client import BaseClient

    with _patch_lock:
        if _patch_users == 0:
            _original_call = BaseClient._make_api_call
            BaseClient._make_api_call = _guarded_call
        _patch_users += 1
    _guard.active = True
    try:
        yield
    finally:
        _guard.active = False
        with _patch_lock:
            _patch_users -= 1
            if _patch_users == 0:
                BaseClient._make_api_call = _original_call


# ---- the replay --------------------------------------------------------------------------

@dataclass
class Declared:
    """What the applied revisions declare, and the update_table arguments not compared."""

    schema: Schema
    not_compared: dict[str, str] = field(default_factory=dict)
    provisioned: dict | None = None


def declared_schema(scripts: Any, revisions: Iterable[str], client: Any, table_description: Mapping) -> Declared:
    """Replay the ``upgrade(op)`` of ``revisions`` (ids, in graph order) against a recording op."""
    op = RecordingOp(client, table_description)
    # what revisions print goes to stderr: `dyn check --drift --json` prints only JSON on stdout
    with refuse_aws_writes(), contextlib.redirect_stdout(sys.stderr):
        for rid in revisions:
            script = scripts.get(rid)
            op.revision = rid
            try:
                script.module.upgrade(op)
            except _RefusedCall as e:
                raise MigrationError(
                    f"revision {rid} ({script.revision.path}): its upgrade calls {e} with a boto3 client of "
                    "its own, and the drift check replays upgrades touching nothing: make that call "
                    "through op.client (the replay answers it) or an op.* operation") from None
            except (Exception, SystemExit) as e:
                what = e.message if isinstance(e, DynError) else f"{type(e).__name__}: {e}"
                raise MigrationError(
                    f"revision {rid} ({script.revision.path}): its upgrade raised {what} when the drift "
                    "check replayed it (against an op that records schema changes, touches nothing and "
                    "returns no items): make it run without the table's items") from e
    return Declared(op.declared, op.not_compared, op.provisioned)


# ---- adopting the differences ------------------------------------------------------------

@dataclass
class Adoption:
    """The body of a revision that declares what the table has: Python lines (unindented)
    for ``upgrade`` and ``downgrade``, and the notes for its docstring."""

    notes: list[str]
    upgrade: list[str]
    downgrade: list[str]


def py(value: Any) -> str:
    """A Python literal, strings in double quotes (as the rest of a revision file)."""
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, tuple):
        return "(" + ", ".join(py(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    if isinstance(value, list):
        return "[" + ", ".join(py(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{py(k)}: {py(v)}" for k, v in value.items()) + "}"
    return repr(value)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _create(index: Index, *, replace: bool = False) -> str:
    for _, (attr, typ) in index.keys:
        if not typ:
            raise TableError(
                f"DescribeTable does not give the type of attribute {attr!r} (a key of index {index.name}), "
                "so dyn cannot write its op.create_gsi: write that revision by hand")
    args = [py(index.name), f"partition_key={py(tuple(index.partition_key))}"]
    if index.sort_key:
        args.append(f"sort_key={py(tuple(index.sort_key))}")
    args.append(f"projection={py(index.projection_arg())}")
    if index.throughput:
        args.append(f"throughput={py(dict(index.throughput))}")
    if replace:
        args.append("replace=True")
    return f"op.create_gsi({', '.join(args)})"


_ONE_STEP_NOTE = ("# from the state downgrade() leaves, AWS refuses this in one step: first turn the old "
                  "one off (see downgrade())")


def _ttl_calls(ttl: Ttl, other: Ttl, *, from_other: bool) -> list[str]:
    """Calls that make TTL ``ttl``. ``from_other``: the table has ``other`` (a downgrade);
    else the table already has ``ttl`` (the adopting upgrade: one call, a no-op)."""
    if not ttl.enabled:
        return [f"op.update_ttl({py(other.attribute)}, enabled=False)"]
    if other.enabled and other.attribute != ttl.attribute:
        if not from_other:
            return [_ONE_STEP_NOTE, f"op.update_ttl({py(ttl.attribute)})"]
        # TTL moves from one attribute to another only through off
        return [f"op.update_ttl({py(other.attribute)}, enabled=False)",
                "# AWS allows one TTL change at a time: this one may need a second run once the first is done",
                f"op.update_ttl({py(ttl.attribute)})"]
    return [f"op.update_ttl({py(ttl.attribute)})"]


def _setting_calls(name: str, value: Any, other: Any, throughput: dict | None, *, from_other: bool) -> list[str]:
    """Calls that make setting ``name`` ``value`` (``from_other`` as in :func:`_ttl_calls`)."""
    if name == "StreamSpecification" and value.get("StreamEnabled") and other.get("StreamEnabled"):
        if not from_other:
            return [_ONE_STEP_NOTE, f"op.update_table(StreamSpecification={py(value)})"]
        # a stream's view type cannot change in place: turn it off, then on again
        return [f"op.update_table(StreamSpecification={py({'StreamEnabled': False})})",
                f"op.update_table(StreamSpecification={py(value)})"]
    if name == "BillingMode" and value == "PROVISIONED":
        if throughput:
            return [f"op.update_table(BillingMode=\"PROVISIONED\", ProvisionedThroughput={py(throughput)})"]
        return ["# add ProvisionedThroughput={...}: no revision or table state says which",
                "op.update_table(BillingMode=\"PROVISIONED\")"]
    return [f"op.update_table({name}={py(value)})"]


def adoption(table: str, differences: list[Difference], declared: Declared, actual_throughput: dict | None) -> Adoption:
    """The upgrade declares what the table has (each call a no-op on this table: dyn's schema
    operations skip what is already so); the downgrade goes back to what was declared."""
    up: list[str] = []
    down: list[list[str]] = []
    for d in differences:
        label = f"# {_one_line(d.message)}"
        if d.kind == "index_not_declared":
            up += [label, _create(d.actual)]
            down.append([f"op.delete_gsi({py(d.name)})"])
        elif d.kind == "index_missing":
            up += [label, f"op.delete_gsi({py(d.name)})"]
            down.append([_create(d.declared)])
        elif d.kind == "index_differs":
            up += [label, _create(d.actual, replace=True)]
            down.append([_create(d.declared, replace=True)])
        elif d.kind == "ttl":
            up += [label, *_ttl_calls(d.actual, d.declared, from_other=False)]
            down.append(_ttl_calls(d.declared, d.actual, from_other=True))
        elif d.kind == "setting":
            up += [label, *_setting_calls(d.name, d.actual, d.declared, actual_throughput, from_other=False)]
            down.append(_setting_calls(d.name, d.declared, d.actual, declared.provisioned, from_other=True))
    notes = [f"dyn revision --autogenerate found {len(differences)} difference(s) between table {table} "
             "and what its applied revisions declare:"]
    notes += [f"- {_one_line(d.message)}" for d in differences]
    notes.append("upgrade() declares what the table has (a no-op on this table); downgrade() goes back "
                 "to what was declared.")
    return Adoption(notes, up, [line for block in reversed(down) for line in block])
