"""The parallel-scan engine: rewrite (or delete) existing items of a live table, safely and fast.

The shape is the reference text's loop (Scan a page, write each item) made safe and fast:

* **Parallel scan** (``walk``, ``executor``): ``TotalSegments`` segments, walked page by page
  by a pool of threads sharing one client.
* **Writes that cannot go wrong under concurrency** (``plan``, ``statements``, ``writes``):
  ``update(item)`` sees the item through a mapping that records what it reads; every write
  is conditioned on the key existing (an item deleted meanwhile is never resurrected), on
  every attribute ``update`` read still holding the value it saw, and on the filter still
  matching. Writes go 25 at a time as PartiQL statements in one ``BatchExecuteStatement``,
  each with its own condition and outcome (``write_mode="item"``: one UpdateItem each). A
  failed condition is settled from the item DynamoDB returns with it: gone, already written
  (a lost response: ``update`` is not applied twice), no longer matching the filter, or
  changed (decide again). Within one run every item is updated once.
* **Checkpoints** (``checkpoints``): each segment's position is the last page it fully
  processed; one flusher writes all changed positions every ``checkpoint_interval`` seconds.
* **Throttling** (``retry``, ``ratelimit``): a throttled call backs off on its own thread with
  full jitter, the others go on; ``max_wcu``/``max_rcu`` cap the whole run.

Across a crash the items processed since the last checkpoint are visited again, so ``update``
should be idempotent: derive the new values from the item (``{"GSI1PK": item["PK"]}``), do
not accumulate (``item["n"] + 1``). Within one run, even through lost responses, it is safe.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Callable, Iterable

from ..dynamo import TableInfo
from ..errors import UsageError
from . import engine as _engine
from . import renames
from .checkpoints import DEFAULT_INTERVAL, Checkpoints, MemoryCheckpoints
from .conditions import combine
from .executor import Executor, ThreadExecutor
from .failures import ErrorBudget
from .ratelimit import TokenBucket
from .result import BackfillResult, Clashes, UpdateFailed
from .sizing import default_segments, default_workers
from .values import REMOVE, ItemView

__all__ = [
    "REMOVE",
    "BackfillResult",
    "Checkpoints",
    "ErrorBudget",
    "Clashes",
    "Executor",
    "ItemView",
    "MemoryCheckpoints",
    "ThreadExecutor",
    "TokenBucket",
    "UpdateFailed",
    "backfill",
    "default_segments",
    "default_workers",
    "delete_items",
    "move_items",
    "remove_attributes",
    "rename_attribute",
]


def backfill(
    client: Any,
    table: TableInfo,
    update: Callable[[Mapping], Mapping | None],
    *,
    filter: Any = None,
    exclude: Any = None,
    is_meta: Callable[[dict], bool] | None = None,
    segments: int | None = None,
    workers: int | None = None,
    page_size: int | None = None,
    checkpoints: Checkpoints | None = None,
    guard: Callable[[], float | None] | None = None,
    dry_run: bool = False,
    max_wcu: float | None = None,
    max_rcu: float | None = None,
    progress: Any = None,
    label: str = "backfill",
    checkpoint_interval: float = DEFAULT_INTERVAL,
    write_mode: str = "batch",
    max_retry_seconds: float = 600.0,
    executor: Executor | None = None,
    processes: int | None = 1,
    client_factory: Callable[[], Any] | None = None,
    origin: Any = None,
    errors: Any = None,
    sample: float | None = None,
) -> BackfillResult:
    """Apply ``update`` to every item of ``table`` matching ``filter`` (and ``exclude``).

    ``update(item)`` gets the item as a read-only mapping of plain Python values (numbers are
    ``Decimal``) and returns a dict of attributes to SET (value :data:`REMOVE` removes one), or
    None. Items already holding the returned values are not written. ``filter`` (checked again
    by every write) and ``exclude`` (the scan only) are boto3 conditions (``Attr(...)``);
    ``is_meta(raw_item)`` skips bookkeeping items client-side as well. ``guard()`` is called
    before every write and stops the run by raising (it may return the seconds the run still
    holds its lock: worker processes are let write no longer). ``segments`` defaults from the table's
    size, ``workers`` from the client's connection pool; a resume keeps the checkpointed
    segment count. ``dry_run`` scans and calls ``update`` but writes nothing (and neither
    reads nor saves checkpoints); its result is the real run's estimate, from ``sample`` percent
    of the segments when given. ``processes`` > 1 (None: one per core) walks the segments in
    worker processes of ``workers`` threads each, with clients from ``client_factory()``
    (default: a copy of ``client``'s region and endpoint); ``executor`` runs them elsewhere
    (:class:`~dynamic.backfill.cluster.DaskExecutor`). An item whose ``update`` fails (or whose
    write DynamoDB rejects) goes to ``errors.record(key, error)`` (an :class:`ErrorBudget`),
    which skips it or raises; without ``errors`` the first one raises :class:`UpdateFailed`.
    """
    if not callable(update):
        raise UsageError(f"update must be a callable taking the item, got {type(update).__name__}")
    return _engine.run(client, table, "update", update, filter=filter, exclude=exclude, is_meta=is_meta,
                       segments=segments, workers=workers, page_size=page_size, checkpoints=checkpoints,
                       guard=guard, dry_run=dry_run, max_wcu=max_wcu, max_rcu=max_rcu, progress=progress,
                       label=label, checkpoint_interval=checkpoint_interval, write_mode=write_mode,
                       max_retry_seconds=max_retry_seconds, executor=executor, processes=processes,
                       client_factory=client_factory, origin=origin, errors=errors, sample=sample)


def remove_attributes(client: Any, table: TableInfo, names: str | Iterable[str], *, filter: Any = None,
                      **kw: Any) -> BackfillResult:
    """Remove the attributes ``names`` from every item matching ``filter`` (a backfill whose
    update reads nothing, so its writes are conditioned on the key and the filter only)."""
    names = [names] if isinstance(names, str) else list(names)
    if not names:
        raise UsageError("remove_attributes needs at least one attribute name")
    keys = [n for n in names if n in table.key_names]
    if keys:
        raise UsageError(f"cannot remove key attribute {keys[0]!r} of table {table.name!r}")
    removal = {n: REMOVE for n in names}
    kw.setdefault("label", f"remove {', '.join(names)}")
    return backfill(client, table, lambda item: removal, filter=filter, **kw)


def delete_items(client: Any, table: TableInfo, *, filter: Any = None,
                 where: Callable[[Mapping], Any] | None = None, **kw: Any) -> BackfillResult:
    """Delete every item matching ``filter`` (a boto3 condition) for which ``where(item)`` (a
    Python predicate) is true; at least one of the two is required -- deleting everything is a
    table drop, not a migration. Each delete is conditioned like an update's write: the filter
    still matches and every attribute ``where`` read is unchanged, so an item changed after
    the scan is decided again on its current value, never deleted on a stale one."""
    if filter is None and where is None:
        raise UsageError("delete_items needs a filter (e.g. Attr('Type').eq('Draft')) or a where= predicate")
    if where is not None and not callable(where):
        raise UsageError(f"where must be a callable taking the item, got {type(where).__name__}")
    kw.setdefault("label", "delete items")
    return _engine.run(client, table, "delete", where, filter=filter, **kw)


def rename_attribute(client: Any, table: TableInfo, old: str, new: str, *, filter: Any = None,
                     force: bool = False, **kw: Any) -> BackfillResult:
    """Rename attribute ``old`` to ``new`` on every item matching ``filter``: one conditional
    write per item copies the value and removes ``old`` (``renames``). An item that has both,
    with different values, is a clash: left as it is, and the run raises :class:`Clashes`
    naming it once every other item is done. Key attributes cannot be renamed; attributes of
    an index's key schema only with ``force=True``."""
    why = renames.problem(table, old, new, force)
    if why:
        raise UsageError(f"rename_attribute: {why}")
    kw.setdefault("label", f"rename {old} -> {new}")
    # the narrowing joins the filter, not ``exclude``: with ``is_meta`` the scan sends
    # ``filter OR NOT exclude``, which would let back every item without ``old``
    filter = combine(filter, renames.scan_narrowing(old))
    return _engine.run(client, table, "rename", renames.Rename(old, new), filter=filter, **kw)


def move_items(client: Any, table: TableInfo, transform: Callable[[Mapping], Mapping | None], *,
               filter: Any = None, **kw: Any) -> BackfillResult:
    """Give items new keys: ``transform(item)`` returns the new item (its key may differ) or
    None. Each move is one TransactWriteItems -- put the new item if its key is free, delete
    the old one if what ``transform`` read is unchanged (``moves``). ``transform`` must leave
    alone (None, or the item's own key) the items it makes: the scan meets them. A new key
    taken by another item is a clash: the run raises :class:`Clashes` naming it once every
    other item is moved."""
    if not callable(transform):
        raise UsageError(f"transform must be a callable taking the item, got {type(transform).__name__}")
    name = getattr(transform, "__name__", "<lambda>")
    kw.setdefault("label", "move items" + ("" if name == "<lambda>" else f" ({name})"))
    return _engine.run(client, table, "move", transform, filter=filter, **kw)
