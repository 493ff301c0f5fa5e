"""A table's schema as dyn compares it: global secondary indexes, TTL and a few table settings.

Pure data, no AWS calls: a :class:`Schema` is read from DescribeTable / DescribeTimeToLive
output (:func:`actual_schema`) or built up by replaying the revisions (``drift.py``), and
:func:`compare` lists how two of them differ. ``op.create_gsi`` validates and normalises its
arguments with :func:`index_from_args`, so what a revision asks for and what the table has are
compared in one shape.

Compared: each index's key attributes (and their types, when both sides know them) and its
projection; TTL (on or off, and the attribute); and, once a revision has set them through
``op.update_table``, ``BillingMode``, ``StreamSpecification``, ``TableClass`` and
``DeletionProtectionEnabled``. Not compared: provisioned throughput (auto scaling owns it),
local secondary indexes (fixed at table creation) and any other ``update_table`` argument
(SSE, replicas, warm/on-demand throughput); :data:`COMPARED_SETTINGS` is the list.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from .dynamo import table_info_from_description
from .errors import UsageError

KEY_TYPES = ("S", "N", "B")
PROJECTIONS = ("ALL", "KEYS_ONLY")
COMPARED_SETTINGS = ("BillingMode", "StreamSpecification", "TableClass", "DeletionProtectionEnabled")
#: what a table has for a setting no revision ever set (AWS's defaults)
SETTING_DEFAULTS = {"StreamSpecification": {"StreamEnabled": False}, "TableClass": "STANDARD",
                    "DeletionProtectionEnabled": False}
#: update_table arguments that only serve others (types of index keys, the throughput that
#: goes with BillingMode="PROVISIONED"): not reported as "not compared"
HELPER_ARGS = ("AttributeDefinitions", "ProvisionedThroughput", "GlobalSecondaryIndexUpdates", "TableName")


# ---- indexes --------------------------------------------------------------------------

@dataclass(frozen=True)
class Index:
    """One global secondary index. A key is ``(attribute, type)``; the type is None when
    DescribeTable does not say (moto forgets some AttributeDefinitions)."""

    name: str
    partition_key: tuple[str, str | None]
    sort_key: tuple[str, str | None] | None = None
    projection: str = "ALL"  # ALL | KEYS_ONLY | INCLUDE
    non_key_attributes: tuple[str, ...] = ()  # sorted; INCLUDE only
    status: str = "ACTIVE"
    throughput: Mapping[str, int] | None = field(default=None, compare=False)

    @property
    def keys(self) -> list[tuple[str, tuple[str, str | None]]]:
        return [("HASH", self.partition_key)] + ([("RANGE", self.sort_key)] if self.sort_key else [])

    def key_schema(self) -> list[dict]:
        return [{"AttributeName": a, "KeyType": kt} for kt, (a, _) in self.keys]

    def attribute_definitions(self) -> list[dict]:
        return [{"AttributeName": a, "AttributeType": t} for _, (a, t) in self.keys if t]

    def projection_dict(self) -> dict:
        if self.projection == "INCLUDE":
            return {"ProjectionType": "INCLUDE", "NonKeyAttributes": list(self.non_key_attributes)}
        return {"ProjectionType": self.projection}

    def projection_arg(self) -> str | list[str]:
        """The ``projection=`` argument of ``op.create_gsi`` that makes this projection."""
        return list(self.non_key_attributes) if self.projection == "INCLUDE" else self.projection

    def same_keys(self, other: "Index") -> bool:
        return [(kt, a) for kt, (a, _) in self.keys] == [(kt, a) for kt, (a, _) in other.keys]

    def same_definition(self, other: "Index") -> bool:
        """Same key attributes, key types (where both are known) and projection."""
        if not self.same_keys(other):
            return False
        for (_, (_, t1)), (_, (_, t2)) in zip(self.keys, other.keys):
            if t1 and t2 and t1 != t2:
                return False
        return (self.projection, self.non_key_attributes) == (other.projection, other.non_key_attributes)

    def describe(self) -> str:
        keys = ", ".join(f"{a} {t or '?'}" for _, (a, t) in self.keys)
        proj = self.projection + (f" {', '.join(self.non_key_attributes)}" if self.projection == "INCLUDE" else "")
        return f"keys ({keys}), projection {proj}"

    def as_dict(self) -> dict:
        return {
            "partition_key": list(self.partition_key),
            "sort_key": list(self.sort_key) if self.sort_key else None,
            "projection": self.projection_arg(),
            "status": self.status,
        }

    def description(self) -> dict:
        """As a GlobalSecondaryIndexes entry of DescribeTable."""
        d = {"IndexName": self.name, "KeySchema": self.key_schema(), "Projection": self.projection_dict(),
             "IndexStatus": self.status}
        if self.throughput:
            d["ProvisionedThroughput"] = dict(self.throughput)
        return d


def check_index_name(op: str, name: Any) -> None:
    """DynamoDB's characters for index names (letters, digits, _ . -), checked before any call;
    its length rule (3-255) is DynamoDB's to enforce: a refusal is one usage line too."""
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]{1,255}", name):
        raise UsageError(f"op.{op}: the index name must be letters, digits, _ . or -, got {name!r}")


def index_from_args(name: str, partition_key: Any, sort_key: Any = None, projection: Any = "ALL",
                    throughput: Mapping[str, int] | None = None) -> Index:
    """What ``op.create_gsi(name, partition_key, sort_key, projection)`` asks for, validated:
    keys are ``(attribute, "S" | "N" | "B")``, projection ``"ALL"``, ``"KEYS_ONLY"`` or a
    list of attributes to include."""
    where = f"op.create_gsi({name!r})"
    check_index_name("create_gsi", name)
    keys = []
    for what, key in (("partition_key", partition_key), ("sort_key", sort_key)):
        if key is None and what == "sort_key":
            keys.append(None)
            continue
        if not (isinstance(key, (tuple, list)) and len(key) == 2 and all(isinstance(x, str) for x in key)):
            raise UsageError(f"{where}: {what} must be (attribute, type) such as (\"GSI1PK\", \"S\"), got {key!r}")
        attr, typ = key
        if typ not in KEY_TYPES:
            raise UsageError(f"{where}: key type of {attr!r} must be S, N or B, got {typ!r}")
        keys.append((attr, typ))
    if isinstance(projection, str):
        if projection not in PROJECTIONS:
            raise UsageError(f"{where}: projection must be \"ALL\", \"KEYS_ONLY\" or a list of attributes "
                             f"to include, got {projection!r}")
        ptype, nka = projection, ()
    elif isinstance(projection, (list, tuple)) and projection and all(isinstance(a, str) for a in projection):
        ptype, nka = "INCLUDE", tuple(sorted(set(projection)))
    else:
        raise UsageError(f"{where}: projection must be \"ALL\", \"KEYS_ONLY\" or a non-empty list of "
                         f"attributes to include, got {projection!r}")
    return Index(name, keys[0], keys[1], ptype, nka, "ACTIVE", dict(throughput) if throughput else None)


def attribute_types(desc: Mapping) -> dict[str, str]:
    return {a["AttributeName"]: a["AttributeType"] for a in desc.get("AttributeDefinitions", [])}


def index_from_description(g: Mapping, types: Mapping[str, str]) -> Index:
    """A GlobalSecondaryIndexes entry of DescribeTable, with the table's attribute types."""
    pk = sk = None
    for k in g["KeySchema"]:
        key = (k["AttributeName"], types.get(k["AttributeName"]))
        if k["KeyType"] == "HASH":
            pk = key
        else:
            sk = key
    proj = g.get("Projection") or {"ProjectionType": "ALL"}
    ptype = proj.get("ProjectionType", "ALL")
    nka = tuple(sorted(set(proj.get("NonKeyAttributes") or ()))) if ptype == "INCLUDE" else ()
    pt = g.get("ProvisionedThroughput") or {}
    throughput = None
    if pt.get("ReadCapacityUnits") or pt.get("WriteCapacityUnits"):
        throughput = {"ReadCapacityUnits": int(pt["ReadCapacityUnits"]),
                      "WriteCapacityUnits": int(pt["WriteCapacityUnits"])}
    return Index(g["IndexName"], pk, sk, ptype, nka, g.get("IndexStatus", "ACTIVE"), throughput)


# ---- TTL and settings -----------------------------------------------------------------

@dataclass(frozen=True)
class Ttl:
    enabled: bool = False
    attribute: str | None = None
    status: str = ""  # DescribeTimeToLive's, on the actual side

    def describe(self) -> str:
        return f"on {self.attribute}" if self.enabled else "off"

    def as_dict(self) -> dict:
        return {"enabled": self.enabled, "attribute": self.attribute,
                **({"status": self.status} if self.status else {})}


def ttl_from_description(ttl_desc: Mapping | None) -> Ttl:
    """DescribeTimeToLive's TimeToLiveDescription; ENABLING counts as on, DISABLING as off."""
    d = ttl_desc or {}
    status = d.get("TimeToLiveStatus", "DISABLED")
    return Ttl(status in ("ENABLED", "ENABLING"), d.get("AttributeName"), status)


def normalize_setting(name: str, value: Any) -> Any:
    """A setting in one comparable shape (the stream's view type only counts when it is on)."""
    if name == "StreamSpecification":
        v = dict(value or {})
        if not v.get("StreamEnabled"):
            return {"StreamEnabled": False}
        return {"StreamEnabled": True, "StreamViewType": v.get("StreamViewType")}
    if name == "DeletionProtectionEnabled":
        return bool(value)
    return value


def settings_from_description(desc: Mapping) -> dict[str, Any]:
    return {
        "BillingMode": table_info_from_description(dict(desc)).billing_mode,
        "StreamSpecification": normalize_setting("StreamSpecification", desc.get("StreamSpecification")),
        "TableClass": (desc.get("TableClassSummary") or {}).get("TableClass", "STANDARD"),
        "DeletionProtectionEnabled": bool(desc.get("DeletionProtectionEnabled", False)),
    }


def describe_setting(name: str, value: Any) -> str:
    if name == "StreamSpecification":
        return f"a {value['StreamViewType']} stream" if value.get("StreamEnabled") else "no stream"
    if name == "DeletionProtectionEnabled":
        return "deletion protection on" if value else "deletion protection off"
    return f"{name} {value}"


def settings_hold(desc: Mapping, kwargs: Mapping[str, Any]) -> bool:
    """True when an ``update_table(**kwargs)`` would change nothing: every argument is a
    compared setting (or the provisioned throughput) the table already has."""
    if not kwargs:
        return False
    have = settings_from_description(desc)
    for name, value in kwargs.items():
        if name == "ProvisionedThroughput":
            pt = desc.get("ProvisionedThroughput") or {}
            if any(int(pt.get(k) or 0) != int(value.get(k) or 0)
                   for k in ("ReadCapacityUnits", "WriteCapacityUnits")):
                return False
        elif name not in COMPARED_SETTINGS or normalize_setting(name, value) != have[name]:
            return False
    return True


# ---- a whole schema, and how two differ ------------------------------------------------

@dataclass
class Schema:
    """Indexes, TTL and settings. On the declared side ``settings`` holds only what some
    revision set, and ``declared_by`` names the revision behind each entry
    (``index:NAME``, ``ttl``, ``setting:NAME``)."""

    indexes: dict[str, Index] = field(default_factory=dict)
    ttl: Ttl = field(default_factory=Ttl)
    settings: dict[str, Any] = field(default_factory=dict)
    declared_by: dict[str, str] = field(default_factory=dict)
    table_status: str = "ACTIVE"


def actual_schema(desc: Mapping, ttl_desc: Mapping | None) -> Schema:
    """What the table has: DescribeTable's ``Table`` and DescribeTimeToLive's description."""
    types = attribute_types(desc)
    indexes = {g["IndexName"]: index_from_description(g, types) for g in desc.get("GlobalSecondaryIndexes", [])}
    return Schema(indexes, ttl_from_description(ttl_desc), settings_from_description(desc),
                  table_status=desc.get("TableStatus", "ACTIVE"))


@dataclass(frozen=True)
class Difference:
    """One way the table differs from what its applied revisions declare."""

    kind: str  # index_not_declared | index_missing | index_differs | ttl | setting
    name: str  # the index name, "TTL" or the setting's name
    declared: Any
    actual: Any
    declared_by: str | None
    message: str

    def as_dict(self) -> dict:
        def plain(v):
            return v.as_dict() if hasattr(v, "as_dict") else v

        return {"kind": self.kind, "name": self.name, "declared": plain(self.declared),
                "actual": plain(self.actual), "declared_by": self.declared_by, "message": self.message}


def _by(rev: str | None) -> str:
    return f"revision {rev}" if rev else "no applied revision"


def compare(declared: Schema, actual: Schema) -> list[Difference]:
    """How ``actual`` differs from ``declared``: indexes by name, then TTL, then settings.

    An index the table is deleting counts as gone; one it is creating counts as there (its
    status is named)."""
    out: list[Difference] = []
    present = {n: i for n, i in actual.indexes.items() if i.status != "DELETING"}
    for name in sorted(set(declared.indexes) | set(present)):
        d, a = declared.indexes.get(name), present.get(name)
        by = declared.declared_by.get(f"index:{name}")
        status = f" ({a.status})" if a is not None and a.status != "ACTIVE" else ""
        if d is None:
            out.append(Difference("index_not_declared", name, None, a, None,
                                  f"index {name}{status} is on the table ({a.describe()}) but no applied "
                                  "revision declares it"))
        elif a is None:
            gone = "is being deleted from the table" if name in actual.indexes else "is not on the table"
            out.append(Difference("index_missing", name, d, actual.indexes.get(name), by,
                                  f"index {name} is declared by {_by(by)} ({d.describe()}) but {gone}"))
        elif not d.same_definition(a):
            out.append(Difference("index_differs", name, d, a, by,
                                  f"index {name}{status} differs: {_by(by)} declares {d.describe()}; "
                                  f"the table has {a.describe()}"))
    d_ttl, a_ttl = declared.ttl, actual.ttl
    if d_ttl.enabled != a_ttl.enabled or (d_ttl.enabled and d_ttl.attribute != a_ttl.attribute):
        by = declared.declared_by.get("ttl")
        what = f"turns it on for {d_ttl.attribute}" if d_ttl.enabled else "turns it on" if not by else "turns it off"
        status = f" ({a_ttl.status})" if a_ttl.status not in ("ENABLED", "DISABLED", "") else ""
        out.append(Difference("ttl", "TTL", d_ttl, a_ttl, by,
                              f"TTL: {_by(by)} {what}; the table has it {a_ttl.describe()}{status}"))
    for name in COMPARED_SETTINGS:
        if name not in declared.settings:
            continue
        d_val, a_val = declared.settings[name], actual.settings.get(name)
        if d_val != a_val:
            by = declared.declared_by.get(f"setting:{name}")
            out.append(Difference("setting", name, d_val, a_val, by,
                                  f"{name}: {_by(by)} declares {describe_setting(name, d_val)}; "
                                  f"the table has {describe_setting(name, a_val)}"))
    return out
