"""The `op` object handed to a revision's upgrade(op) / downgrade(op).

Schema operations are idempotent (an index already there, or already gone, is a no-op) and
wait until the table is usable again; data operations are thin calls into the backfill
engine, each with its own checkpoint scope so an interrupted step resumes where it stopped.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from dataclasses import replace as _replace
from decimal import Decimal
from typing import Any, Callable, Iterable, Mapping

from boto3.dynamodb.types import TypeSerializer
from botocore.exceptions import ClientError, ParamValidationError

from . import backfill as engine
from .backfill import values as engine_values
from .backfill.conditions import check as check_condition
from .backfill.conditions import describe as describe_condition
from .dynamo import THROTTLE_CODES, TableInfo, describe_table, error_code
from .errors import DynError, Irreversible, UsageError
from . import schema  # key/projection normalisation, shared with the drift check
from .dynamo import describe_table_raw, table_info_from_description

_ser = TypeSerializer()
KEY_TYPES = ("S", "N", "B")


@dataclass
class OpSettings:
    """How data operations run; from config and flags."""

    workers: int | None = None
    segments: int | None = None
    page_size: int | None = None
    max_wcu: float | None = None
    max_rcu: float | None = None
    dry_run: bool = False
    write_mode: str = "batch"
    checkpoint_interval: float = 2.0
    processes: int | None = 1  # worker processes; None: one per core
    client_factory: Any = None  # makes a worker process's (or Dask worker's) client
    dask_scheduler: str | None = None  # run the segments on this Dask cluster
    remote_lease: Any = None  # lets Dask workers watch the run's lock (set by the runner)
    wait_poll: float = 2.0
    wait_timeout: float = 3600.0
    sample: float | None = None  # dry run: percent of the segments to scan (None: all)
    read_price: float = 0.125  # USD per million read units, for cost_usd
    write_price: float = 0.625  # USD per million write units


# counts that do not add up across operations or runs
NOT_ADDED = frozenset({"segments", "sample", "sampled_items"})


@dataclass
class OpRecord:
    """One operation a step ran (or would run, in a dry run), with its counts; ``prior``: what
    earlier runs of the same step did in this operation before they stopped (a resume)."""

    op: str
    detail: str
    counts: dict = field(default_factory=dict)
    prior: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"op": self.op, "detail": self.detail, **({"counts": self.counts} if self.counts else {})}

    def total_dict(self, prices: tuple[float, float]) -> dict:
        """``as_dict`` with the counts of every run of the step (for its history record)."""
        d = self.as_dict()
        if self.prior:
            counts = add_counts(self.counts, self.prior)
            counts["cost_usd"] = cost_usd(counts.get("rcu", 0), counts.get("wcu", 0), *prices)
            # the earlier runs' time is not known (segments run side by side): items over this
            # run's seconds would overstate the rate
            counts.pop("seconds", None)
            d["counts"] = counts
        return d


def cost_usd(rcu: float, wcu: float, read_price: float, write_price: float) -> float:
    """What ``rcu`` read and ``wcu`` write units cost at prices per million units."""
    return round((rcu * read_price + wcu * write_price) / 1e6, 6)


def add_counts(*many: Mapping) -> dict:
    """Counts added up by name (numbers only; a segment count or sample share is not added)."""
    out: dict[str, float] = {}
    for counts in many:
        for k, v in counts.items():
            if k in NOT_ADDED or isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            out[k] = out.get(k, 0) + v
    for k in ("rcu", "wcu"):
        if k in out:
            out[k] = round(out[k], 1)
    for k in ("seconds", "scan_seconds"):
        if k in out:
            out[k] = round(out[k], 3)
    if "cost_usd" in out:
        out["cost_usd"] = round(out["cost_usd"], 6)
    return out


class Operations:
    """What a revision can do to the table. Passed in, never global: explicit and thread-safe.

    ``checkpoints(index)`` returns the checkpoint store of the index-th data operation of this
    step; ``guard()`` raises when the runner lost its lease; ``progress(label, total, verb)`` makes a
    progress reporter (``verb`` names what it counts as written: "updated", "would delete" ...);
    ``log`` gets what the step is doing now (creating an index, waiting for it); ``warn``
    what the user should know of what it did.
    """

    def __init__(
        self,
        client: Any,
        table: TableInfo,
        *,
        data_client: Any = None,
        settings: OpSettings | None = None,
        exclude: Any = None,
        is_meta: Callable[[dict], bool] | None = None,
        checkpoints: Callable[[int], Any] | None = None,
        guard: Callable[[], None] | None = None,
        progress: Callable[[str, int | None, str], Any] | None = None,
        log: Callable[[str], None] | None = None,
        warn: Callable[[str], None] | None = None,
        source: tuple[str, str] | None = None,
        errors: Any = None,
    ):
        self._client = client
        self._source = source  # (revision file, "up" | "down"): where a worker process finds our functions
        self._data_client = data_client or client
        self.table = table
        self.table_name = table.name
        self.settings = settings or OpSettings()
        self._exclude = exclude
        self._is_meta = is_meta
        self._checkpoints = checkpoints
        self._guard = guard or (lambda: None)
        self._progress = progress
        self._log = log or (lambda msg: None)
        self._warn = warn or (lambda msg: None)
        self._errors = errors  # the step's failures.ErrorBudget (max_errors), or None: stop at the first
        self._data_ops = 0
        self._cp: Any = None  # the checkpoints of the data operation running
        self.records: list[OpRecord] = []
        # whether this step may have written anything: a step that failed before writing leaves
        # the table clean instead of marked in progress (raw client access counts as a write)
        self.touched = False

    @property
    def client(self) -> Any:
        """The raw boto3 client, for anything the methods here do not cover."""
        self.touched = True
        return self._client

    def _writing(self) -> None:
        """Called just before any write: the lease must still be held, and the step is touched."""
        self.touched = True
        self._guard()

    def irreversible(self, reason: str) -> None:
        """Call first thing in ``downgrade(op)``: this revision cannot be undone, and
        ``dyn downgrade`` past it stops before doing anything, naming ``reason``."""
        raise Irreversible(reason)

    # ---- data -------------------------------------------------------------------------
    def _engine_kwargs(self, label: str, op: str, verbs: tuple[str, str] = ("updated", "would update")) -> dict:
        """The engine's arguments for the next data operation, ``op`` naming it in the errors file;
        ``verbs`` name what its progress counts as written (done, dry run): the engine counts
        deletes as writes too."""
        index = self._data_ops
        self._data_ops += 1
        s = self.settings
        if not s.dry_run:
            self.touched = True
        self._cp = None if s.dry_run or not self._checkpoints else self._checkpoints(index)
        return dict(
            exclude=self._exclude,
            is_meta=self._is_meta,
            segments=s.segments,
            workers=s.workers,
            page_size=s.page_size,
            checkpoints=self._cp,
            guard=self._guard,
            dry_run=s.dry_run,
            max_wcu=s.max_wcu,
            max_rcu=s.max_rcu,
            progress=(self._progress(label, self.table.item_count, verbs[1] if s.dry_run else verbs[0])
                      if self._progress else None),
            label=label,
            write_mode=s.write_mode,
            checkpoint_interval=s.checkpoint_interval,
            processes=s.processes,
            client_factory=s.client_factory,
            executor=self._executor(),
            origin=FnOrigin(*self._source, index, self.table) if self._source else None,
            errors=self._errors.for_op(op) if self._errors is not None else None,
            sample=s.sample if s.dry_run else None,
        )

    def _executor(self) -> Any:
        s = self.settings
        if not s.dask_scheduler:
            return None
        from .backfill.cluster import DaskExecutor
        from .dynamo import ClientSpec

        return DaskExecutor(s.dask_scheduler, s.client_factory or ClientSpec.of(self._data_client),
                            s.remote_lease, slice_seconds=s.checkpoint_interval, max_wcu=s.max_wcu,
                            max_rcu=s.max_rcu)

    def backfill(self, update: Callable[[Mapping], dict | None], *, filter=None, segments=None,
                 page_size=None) -> engine.BackfillResult:
        """Rewrite existing items: ``update(item)`` returns attributes to SET (``dynamic.REMOVE``
        removes one) or None. Writes are conditioned on what ``update`` read; make it idempotent."""
        if not callable(update):
            raise UsageError("op.backfill: update must be a callable taking the item and returning the "
                             f"attributes to set (or None), got {type(update).__name__}")
        if _bad_filter(filter):  # before the step counts as touched: nothing was written
            raise UsageError(f"op.backfill: {_bad_filter(filter)}")
        label = f"backfill {getattr(update, '__name__', 'update')}"
        kw = self._engine_kwargs(label, label)
        if segments is not None:
            kw["segments"] = segments
        if page_size is not None:
            kw["page_size"] = page_size
        result = engine.backfill(self._data_client, self.table, update, filter=filter, **kw)
        self._record("backfill", _describe_filter(filter), result)
        return result

    def remove_attributes(self, names: Iterable[str], *, filter=None) -> engine.BackfillResult:
        """Remove attributes from every (matching) item."""
        names = [names] if isinstance(names, str) else list(names)
        if not names:
            raise UsageError("op.remove_attributes needs at least one attribute name")
        for n in names:
            if n in self.table.key_names:
                raise UsageError(f"op.remove_attributes cannot remove key attribute {n!r}")
        if _bad_filter(filter):
            raise UsageError(f"op.remove_attributes: {_bad_filter(filter)}")
        kw = self._engine_kwargs(f"remove {', '.join(names)}", f"remove_attributes {', '.join(names)}")
        result = engine.remove_attributes(self._data_client, self.table, names, filter=filter, **kw)
        self._record("remove_attributes", f"{', '.join(names)} {_describe_filter(filter)}".strip(), result)
        return result

    def delete_items(self, *, filter=None, where: Callable[[Mapping], Any] | None = None) -> engine.BackfillResult:
        """Delete every item matching ``filter`` for which ``where(item)`` is true (at least one
        of the two: deleting everything is a table drop). Each delete is conditioned on the
        filter and on what ``where`` read, so an item changed since the scan is decided again."""
        if filter is None and where is None:
            raise UsageError("op.delete_items needs a filter (e.g. Attr('Type').eq('Draft')) or a where= predicate")
        if _bad_filter(filter):
            raise UsageError(f"op.delete_items: {_bad_filter(filter)}")
        if where is not None and not callable(where):
            raise UsageError("op.delete_items: where must be a callable taking the item and returning whether "
                             f"to delete it, got {type(where).__name__}")
        kw = self._engine_kwargs("delete items", "delete_items" + (
            f" {getattr(where, '__name__', 'where')}" if where is not None else ""), ("deleted", "would delete"))
        result = engine.delete_items(self._data_client, self.table, filter=filter, where=where, **kw)
        detail = " ".join(x for x in (_describe_filter(filter), _describe_where(where)) if x)
        self._record("delete_items", detail, result)
        return result

    def rename_attribute(self, old: str, new: str, *, filter=None, force: bool = False) -> engine.BackfillResult:
        """Rename attribute ``old`` to ``new`` on every (matching) item: one conditional write
        per item copies the value and removes ``old``. An item already renamed is left alone;
        one with both, equal, loses ``old``; one with both, different, is a clash: left as it
        is, and the step fails naming it once every other item is renamed. Refuses the table's
        key attributes, and an index's key attributes unless ``force=True``."""
        why = engine.renames.problem(self.table, old, new, True) or _bad_filter(filter)
        if why:  # before anything is written (or described)
            raise UsageError(f"op.rename_attribute: {why}")
        table = self._described()
        why = engine.renames.problem(table, old, new, force)
        if why:
            raise UsageError(f"op.rename_attribute: {why}")
        kw = self._engine_kwargs(f"rename {old} -> {new}", f"rename_attribute {old} -> {new}",
                                 ("renamed", "would rename"))
        result = engine.rename_attribute(self._data_client, table, old, new, filter=filter, force=force, **kw)
        self._record("rename_attribute", f"{old} -> {new} {_describe_filter(filter)}".strip(), result)
        return result

    def move_items(self, transform: Callable[[Mapping], Mapping | None], *, filter=None) -> engine.BackfillResult:
        """Give items new keys: ``transform(item)`` returns the new item (or None: leave it).
        Each move is one transaction: put the new item where its key is free, delete the old
        one where what ``transform`` read is unchanged. ``transform`` must leave alone (None,
        or the item's own key) the items it makes: the scan meets them."""
        if not callable(transform):
            raise UsageError("op.move_items: transform must be a callable taking the item and returning the new "
                             f"item (or None), got {type(transform).__name__}")
        if _bad_filter(filter):
            raise UsageError(f"op.move_items: {_bad_filter(filter)}")
        name = getattr(transform, "__name__", "<lambda>")
        label = "move items" + ("" if name == "<lambda>" else f" ({name})")
        kw = self._engine_kwargs(label, label.replace("move items", "move_items"), ("moved", "would move"))
        result = engine.move_items(self._data_client, self.table, transform, filter=filter, **kw)
        detail = " ".join(x for x in ("" if name == "<lambda>" else f"by {name}(item)", _describe_filter(filter)) if x)
        self._record("move_items", detail, result)
        return result

    def _described(self) -> TableInfo:
        """The table as it is now (a schema operation earlier in the step may have changed its
        indexes)."""
        return describe_table(self._client, self.table_name)

    def put_items(self, items: Iterable[Mapping]) -> int:
        """Write new items (plain Python values), 25 per BatchWriteItem, unprocessed ones retried."""
        if isinstance(items, (str, bytes, Mapping)) or not isinstance(items, Iterable):
            raise UsageError(f"op.put_items takes a list of items (dicts), got {type(items).__name__}")
        items = list(items)
        for it in items:
            if not isinstance(it, Mapping):
                raise UsageError(f"op.put_items: each item must be a dict of attributes, got {type(it).__name__}")
            missing = [k for k in self.table.key_names if k not in it]
            if missing:
                raise UsageError(f"op.put_items: item {dict(it)!r} lacks key attribute(s) {missing}")
            if self._is_meta and self._is_meta({k: _ser.serialize(_num(it[k])) for k in self.table.key_names}):
                raise UsageError("op.put_items: an item uses dyn's reserved partition key value")
        raws = [{k: _ser.serialize(_num(v)) for k, v in it.items()} for it in items]
        indexes = engine_values.index_shapes(self.table.gsis, self.table.key_names)
        # a put costs the new item and its entries in the indexes (more if it replaces a bigger one)
        estimate = sum(engine_values.write_cost({}, raw, indexes) for raw in raws)
        if self.settings.dry_run:
            self.records.append(OpRecord("put_items", f"{len(items)} items", {
                "would_put": len(items), "wcu": round(estimate, 1), "cost_usd": cost_usd(0, estimate, *self._prices)}))
            return len(items)
        requests = [{"PutRequest": {"Item": raw}} for raw in raws]
        wcu = 0.0
        for i in range(0, len(requests), 25):
            wcu += self._batch_write(requests[i:i + 25])
        wcu = wcu or estimate  # what DynamoDB reported, when it does
        self.records.append(OpRecord("put_items", f"{len(items)} items", {
            "put": len(items), "wcu": round(wcu, 1), "cost_usd": cost_usd(0, wcu, *self._prices)}))
        return len(items)

    def _batch_write(self, batch: list[dict]) -> float:
        """BatchWriteItem until every request is processed; the write units DynamoDB reported."""
        pending = {self.table_name: batch}
        attempt = 0
        units = 0.0
        while pending:
            self._writing()
            try:
                r = self._client.batch_write_item(RequestItems=pending, ReturnConsumedCapacity="TOTAL")
            except ClientError as e:
                if error_code(e) not in THROTTLE_CODES:
                    raise
                r = {"UnprocessedItems": pending}
            units += sum(float(c.get("CapacityUnits") or 0) for c in r.get("ConsumedCapacity") or ())
            pending = r.get("UnprocessedItems") or {}
            if pending:
                attempt += 1
                time.sleep(min(5.0, 0.05 * 2 ** attempt))
        return units

    # ---- schema -----------------------------------------------------------------------
    def create_gsi(self, name: str, partition_key: tuple[str, str], sort_key: tuple[str, str] | None = None,
                   projection: str | list[str] = "ALL", wait: bool = True,
                   throughput: dict | None = None, replace: bool = False) -> bool:
        """Add a global secondary index; a no-op when one of that name exists with the same keys.
        With ``replace=True`` an index of that name defined otherwise (keys, key types or
        projection) is deleted first, and one defined the same way is left alone."""
        index = schema.index_from_args(name, partition_key, sort_key, projection, throughput)
        desc = describe_table_raw(self._client, self.table_name)
        info = table_info_from_description(desc)
        if name in info.gsis:
            existing = schema.index_from_description(info.gsis[name], schema.attribute_types(desc))
            if replace and not existing.same_definition(index):
                if self.settings.dry_run:
                    self.records.append(OpRecord("create_gsi", f"{name} (would replace)"))
                    return True
                self._log(f"index {name} on {self.table_name} is {existing.describe()}: replacing it")
                self.delete_gsi(name, wait=True)
                info = describe_table(self._client, self.table_name)
            elif not existing.same_keys(index):
                have = [(k["KeyType"], k["AttributeName"]) for k in existing.key_schema()]
                want = [(k["KeyType"], k["AttributeName"]) for k in index.key_schema()]
                raise DynError(
                    f"index {name!r} already exists on {self.table_name} with keys {have}, "
                    f"not {want}: delete it first, use another name, or pass replace=True"
                )
            else:
                self.records.append(OpRecord("create_gsi", f"{name} (already there)"))
                return False
        create = {"IndexName": name, "KeySchema": index.key_schema(), "Projection": index.projection_dict()}
        if self.settings.dry_run:
            # the data operations after it write to it too: their estimates count it
            self.table = _replace(self.table, gsis={**self.table.gsis, name: create})
            self.records.append(OpRecord("create_gsi", f"{name} (would create)"))
            return True
        if info.billing_mode == "PROVISIONED":
            create["ProvisionedThroughput"] = throughput or info.provisioned
        self._update_table(
            "create_gsi",
            AttributeDefinitions=index.attribute_definitions(),
            GlobalSecondaryIndexUpdates=[{"Create": create}],
        )
        self._log(f"creating index {name} on {self.table_name}")
        if wait:
            self._wait(lambda d: _gsi_ready(d, name), f"index {name} to become ACTIVE")
        self.table = describe_table(self._client, self.table_name)  # later writes also cost index units
        self.records.append(OpRecord("create_gsi", name))
        return True

    def delete_gsi(self, name: str, wait: bool = True) -> bool:
        """Drop a global secondary index; a no-op when it is already gone."""
        schema.check_index_name("delete_gsi", name)
        info = describe_table(self._client, self.table_name)
        if name not in info.gsis:
            self.records.append(OpRecord("delete_gsi", f"{name} (already gone)"))
            return False
        if self.settings.dry_run:
            self.table = _replace(self.table, gsis={k: v for k, v in self.table.gsis.items() if k != name})
            self.records.append(OpRecord("delete_gsi", f"{name} (would delete)"))
            return True
        self._update_table("delete_gsi", GlobalSecondaryIndexUpdates=[{"Delete": {"IndexName": name}}])
        self._log(f"deleting index {name} on {self.table_name}")
        if wait:
            self._wait(lambda d: not any(g["IndexName"] == name for g in d.get("GlobalSecondaryIndexes", [])),
                       f"index {name} to be deleted")
        self.table = describe_table(self._client, self.table_name)
        self.records.append(OpRecord("delete_gsi", name))
        return True

    def update_ttl(self, attribute: str, enabled: bool = True) -> bool:
        """Turn TTL on (or off) for ``attribute``; a no-op when already so."""
        try:
            cur = self._client.describe_time_to_live(TableName=self.table_name)["TimeToLiveDescription"]
        except ClientError:
            cur = {}
        status = cur.get("TimeToLiveStatus", "DISABLED")
        on = status in ("ENABLED", "ENABLING")
        if on == enabled and (not enabled or cur.get("AttributeName") == attribute):
            self.records.append(OpRecord("update_ttl", f"{attribute} (already {'on' if on else 'off'})"))
            return False
        if self.settings.dry_run:
            self.records.append(OpRecord("update_ttl", f"{attribute} (would turn {'on' if enabled else 'off'})"))
            return True
        self._schema_write("update_ttl", lambda: self._client.update_time_to_live(
            TableName=self.table_name,
            TimeToLiveSpecification={"Enabled": enabled, "AttributeName": attribute},
        ))
        self.records.append(OpRecord("update_ttl", f"{attribute} {'on' if enabled else 'off'}"))
        return True

    def update_table(self, **kwargs: Any) -> dict:
        """UpdateTable with any arguments (TableName is filled in); waits until ACTIVE. A call
        that only sets billing mode, stream, table class or deletion protection to what the
        table already has is a no-op."""
        if "TableName" in kwargs:
            raise UsageError(f"op.update_table: TableName is filled in (this table, {self.table_name}): "
                             "leave it out")
        if schema.settings_hold(describe_table_raw(self._client, self.table_name), kwargs):
            self.records.append(OpRecord("update_table", f"{', '.join(sorted(kwargs))} (already so)"))
            return {}
        if self.settings.dry_run:
            self.records.append(OpRecord("update_table", f"{sorted(kwargs)} (would update)"))
            return {}
        r = self._update_table("update_table", **kwargs)
        self._wait(_table_ready, "the table to become ACTIVE")
        self.records.append(OpRecord("update_table", ", ".join(sorted(kwargs))))
        return r

    def _update_table(self, what: str, **kwargs: Any) -> dict:
        # one change at a time: DynamoDB refuses an UpdateTable while another is in progress
        self._wait(_table_ready, "the table to become ACTIVE")
        try:
            return self._schema_write(what, lambda: self._client.update_table(TableName=self.table_name, **kwargs))
        except ClientError as e:
            msg = e.response.get("Error", {}).get("Message", str(e))
            raise DynError(f"UpdateTable on {self.table_name} failed: {error_code(e)}: {msg}") from None

    def _schema_write(self, what: str, call: Callable[[], Any]) -> Any:
        """One schema change. Arguments refused (by botocore's checks, or DynamoDB's
        ValidationException) are the revision's mistake, and nothing was changed: one line, and
        the step does not count as touched; anything else may have applied."""
        touched_before = self.touched
        self._writing()
        try:
            return call()
        except ParamValidationError as e:
            self.touched = touched_before
            raise UsageError(f"op.{what}: {' '.join(str(e).split())}") from None
        except ClientError as e:
            if error_code(e) != "ValidationException":
                raise
            self.touched = touched_before
            msg = e.response.get("Error", {}).get("Message", "") or str(e)
            raise UsageError(f"op.{what}: DynamoDB refused it: {msg}") from None

    def _wait(self, ready: Callable[[dict], bool], what: str) -> None:
        deadline = time.monotonic() + self.settings.wait_timeout
        announced = False
        delay = min(0.05, self.settings.wait_poll)  # quick at first, then back off
        while True:
            desc = self._client.describe_table(TableName=self.table_name)["Table"]
            if ready(desc):
                return
            if time.monotonic() > deadline:
                raise DynError(f"timed out after {self.settings.wait_timeout:.0f}s waiting for {what}")
            if not announced:
                self._log(f"waiting for {what}")
                announced = True
            self._guard()
            time.sleep(delay)
            delay = min(self.settings.wait_poll, delay * 2)

    def _record(self, op: str, detail: str, result: engine.BackfillResult) -> None:
        if result.whole_reads:
            n = result.whole_reads
            self._warn(
                f"{op}{f' ({detail})' if detail else ''}: {'where' if op == 'delete_items' else 'update'}() "
                f"read the whole item (iterated it, or took len(), keys(), items(), dict() or ==) on {n:,} "
                f"item{'' if n == 1 else 's'}; each write is conditioned on the attributes the item had when "
                "scanned, so one the application added in between is not seen (no DynamoDB condition says "
                "\"no other attribute\"): read the attributes you use by name (item[\"a\"], item.get(\"b\"))")
        counts = result.as_dict()
        counts["cost_usd"] = cost_usd(result.rcu, result.wcu, *self._prices)
        prior = self._cp.prior_totals() if hasattr(self._cp, "prior_totals") else {}
        self.records.append(OpRecord(op, detail, counts, prior))
        self._cp = None

    @property
    def _prices(self) -> tuple[float, float]:
        return self.settings.read_price, self.settings.write_price

    def totals(self) -> dict:
        """Counts summed over this run of the step's data operations (a dry run: the estimate)."""
        return add_counts(*(r.counts for r in self.records))



def history_counts(op: Operations) -> tuple[list[dict], dict]:
    """``(ops, totals)`` of a step's history record: over every run of the step, this one and
    the earlier runs a crash or a failure stopped (their counts are kept with the checkpoints)."""
    ops = [r.total_dict(op._prices) for r in op.records]
    return ops, add_counts(*(o.get("counts", {}) for o in ops))


def _table_ready(desc: dict) -> bool:
    if desc.get("TableStatus") != "ACTIVE":
        return False
    return all(g.get("IndexStatus") == "ACTIVE" and not g.get("Backfilling")
               for g in desc.get("GlobalSecondaryIndexes", []))


def _gsi_ready(desc: dict, name: str) -> bool:
    for g in desc.get("GlobalSecondaryIndexes", []):
        if g["IndexName"] == name:
            return g.get("IndexStatus") == "ACTIVE" and not g.get("Backfilling")
    return False


def _num(v: Any) -> Any:
    """Plain floats are not DynamoDB numbers; accept them as Decimal so seed data is easy."""
    if isinstance(v, float):
        return Decimal(str(v))
    if isinstance(v, dict):
        return {k: _num(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_num(x) for x in v]
    return v


def _describe_filter(cond: Any) -> str:
    return describe_condition(cond)


def _bad_filter(cond: Any) -> str | None:
    try:
        check_condition(cond)
    except UsageError as e:
        return e.message
    return None


def _describe_where(where: Any) -> str:
    if where is None:
        return ""
    return f"if {getattr(where, '__name__', 'where')}(item)"


# ---- a data operation's function, found again in another process ---------------------------------
@dataclass(frozen=True)
class FnOrigin:
    """Where the function of a step's ``index``-th data operation comes from: a worker process
    that cannot inherit it (no fork) loads the revision file again and runs its ``upgrade`` /
    ``downgrade`` on an ``op`` that changes nothing and stops at that operation."""

    path: str
    direction: str
    index: int
    table: TableInfo

    def load(self) -> Callable:
        from pathlib import Path

        from .scripts import load_script

        module = load_script(Path(self.path)).module
        fn = module.upgrade if self.direction == "up" else module.downgrade
        try:
            fn(_CaptureOperations(self.table, self.index))
        except _Captured as c:
            return c.fn
        raise DynError(f"{self.path}: its {self.direction}grade() no longer reaches data operation "
                       f"{self.index + 1} when run again: run with --processes 1")


class _Captured(Exception):
    def __init__(self, fn: Callable):
        super().__init__("captured")
        self.fn = fn


class _Capture:
    """The executor of a capturing ``op``: hands the job's function back instead of running it."""

    def run(self, engine: Any) -> None:
        raise _Captured(engine.job.fn)


class _CaptureOperations(Operations):
    """``op`` for :meth:`FnOrigin.load`: schema operations and the data operations before the
    wanted one do nothing; the wanted one gives up its function."""

    def __init__(self, table: TableInfo, index: int):
        super().__init__(None, table, settings=OpSettings(dry_run=True, processes=1))
        self._want = index

    def _engine_kwargs(self, label: str, op: str, verbs: tuple[str, str] = ("updated", "would update")) -> dict:
        kw = super()._engine_kwargs(label, op, verbs)
        kw["executor"] = _Capture() if self._data_ops - 1 == self._want else _Skip()
        return kw

    def put_items(self, items: Iterable[Mapping]) -> int:
        return 0

    def _described(self) -> TableInfo:
        # the dyn process checked the indexes before it started this worker
        return _replace(self.table, gsis={}, lsis={})

    def create_gsi(self, *args: Any, **kw: Any) -> bool:
        return False

    def delete_gsi(self, *args: Any, **kw: Any) -> bool:
        return False

    def update_ttl(self, *args: Any, **kw: Any) -> bool:
        return False

    def update_table(self, **kwargs: Any) -> dict:
        return {}


class _Skip:
    def run(self, engine: Any) -> None:
        return None
