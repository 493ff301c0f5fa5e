"""The write path: planned changes -> conditional writes -> an outcome for every item.

By default changes go 25 at a time in one ``BatchExecuteStatement`` of PartiQL ``UPDATE`` /
``DELETE`` statements, each with its own condition and its own outcome (``write_mode =
"batch"``); ``write_mode = "item"`` sends one UpdateItem / DeleteItem per change. Both settle
an item the same way when its condition fails, from the item DynamoDB returns with the
failure (``ALL_OLD``):

* gone -> it was deleted meanwhile: never resurrected (``gone``);
* it already holds exactly what this write sets -> an earlier attempt of this very write
  landed and only its response was lost: done, ``update`` is not applied twice;
* it is the very item this decision was made on, which was not read by the scan -> only the
  filter can have failed: it no longer matches, and is left alone (``unmatched``);
* anything else -> it changed since it was read: decide again on what is there now.

Throttled or failed statements are retried alone, after a jittered backoff; a call that
fails as a whole (connection dropped, 5xx) is sent again as it was, and the rules above sort
out the statements that had landed.
"""
from __future__ import annotations

import re
import time
from collections import deque
from typing import Any, Callable, Mapping

from botocore.exceptions import ClientError

from ..dynamo import error_code
from ..errors import AwsError, DynError
from .failures import errors_of
from .plan import MAX_CONFLICTS, Change
from .result import Counts, UpdateFailed
from .retry import Caller, consumed, delay
from .statements import Statements
from .values import holds, key_text, same_item
from .ratelimit import Stopped

BATCH = 25  # statements per BatchExecuteStatement (DynamoDB's limit)
# per-statement errors worth sending again (alone) after a backoff
_RETRY_STATEMENT = frozenset({
    "ProvisionedThroughputExceeded", "ThrottlingError", "RequestLimitExceeded", "InternalServerError",
    "TransactionConflict",
})
# a condition over DynamoDB's limits: the function read too many attributes for one condition
_TOO_BIG = re.compile(r"too many operators|Expression size has exceeded", re.I)
# per-item refusals: that item cannot be written as planned (the others can)
_ITEM_REFUSED = frozenset({"ValidationException", "ItemCollectionSizeLimitExceededException"})


class WritePath:
    """Writes the changes of one worker. ``plan(raw, verified=False)`` decides again on an item
    that changed. An item that fails (DynamoDB refuses its write, or ``plan`` fails on its new
    value) goes to ``errors.record(key, error)``, which skips it or stops the run."""

    def __init__(self, client: Any, caller: Caller, statements: Statements,
                 plan: Callable[..., Change | None], *, mode: str = "batch", has_filter: bool = False,
                 max_retry_seconds: float = 600.0, errors: Any = None, indexes: tuple = ()):
        if mode not in ("batch", "item"):
            raise ValueError(f"write_mode must be 'batch' or 'item', got {mode!r}")
        self.client = client
        self.caller = caller
        self.statements = statements
        self.plan = plan
        self.mode = mode
        self.has_filter = has_filter
        self.max_retry_seconds = max_retry_seconds
        self.errors = errors_of(errors)
        self.indexes = indexes  # global secondary indexes, for the write units a write costs

    def apply(self, changes: list[Change], counts: Counts) -> None:
        """Write every change; each item ends updated/deleted, unchanged, gone or unmatched."""
        if self.mode == "item":
            for ch in changes:
                self._one(ch, counts)
        elif changes:
            self._batches(changes, counts)

    # ---- BatchExecuteStatement ------------------------------------------------------------------
    def _batches(self, changes: list[Change], counts: Counts) -> None:
        queue = deque(changes)
        waiting: list[Change] = []  # throttled statements, sent again after a pause
        attempt = 0
        first_wait = 0.0
        while queue or waiting:
            if not queue:
                attempt += 1
                now = time.monotonic()
                if attempt == 1:
                    first_wait = now
                elif now - first_wait > self.max_retry_seconds:
                    raise AwsError(
                        f"{self.caller.label}: DynamoDB kept throttling writes for {self.max_retry_seconds:.0f}s; "
                        "the checkpoints are kept, run again to resume")
                if self.caller.stop.wait(delay(attempt)):
                    raise Stopped()
                queue.extend(waiting)
                waiting = []
            batch: list[Change] = []
            statements: list[dict] = []
            while queue and len(batch) < BATCH:
                ch = queue.popleft()
                st = self.statements.statement(ch)
                if st is None:
                    self._one(ch, counts)
                    continue
                batch.append(ch)
                statements.append(st)
            if not batch:
                continue
            tries: list[int] = []
            try:
                resp = self.caller.call(self.client.batch_execute_statement,
                                        {"Statements": statements, "ReturnConsumedCapacity": "TOTAL"},
                                        write=True, attempts=tries)
            except ClientError as e:
                if error_code(e) != "ValidationException":
                    raise
                for ch in batch:  # the request as a whole was refused: one item at a time says why
                    self._one(ch, counts)
                continue
            resent = bool(tries) and tries[0] > 1
            estimate = 0.0
            throttled = False
            failed = []
            for ch, r in zip(batch, resp.get("Responses", ())):
                err = r.get("Error")
                if err:
                    failed.append((ch, err))
                    continue
                estimate += ch.units(self.indexes)
                if ch.is_delete:
                    counts.deleted += 1
                else:
                    counts.updated += 1
            # a failed condition costs a unit too; what landed is counted before a failure below
            # may stop the run
            estimate += sum(1.0 for _, err in failed if err.get("Code") == "ConditionalCheckFailed")
            units = consumed(resp, estimate)
            counts.wcu += units
            self.caller.charge(units, write=True)
            for ch, err in failed:
                code = err.get("Code", "")
                if code == "ConditionalCheckFailed":
                    nxt = self._settle(ch, err.get("Item"), counts, resent)
                    if nxt is not None:
                        queue.append(nxt)
                elif code in _RETRY_STATEMENT:
                    throttled = True
                    waiting.append(ch)
                elif code in ("ValidationError", "ItemCollectionSizeLimitExceeded"):
                    self._one(ch, counts)  # the item path names the item and DynamoDB's reason
                else:
                    raise AwsError(f"{self.caller.label}: DynamoDB refused the write of item "
                                   f"{key_text(ch.key)}: {code}: {err.get('Message', '')}")
            if not throttled and not waiting:
                attempt = 0

    # ---- UpdateItem / DeleteItem ------------------------------------------------------------------
    def _one(self, ch: Change | None, counts: Counts) -> None:
        while ch is not None:
            kw = self.statements.item_request(ch)
            method = self.client.delete_item if ch.is_delete else self.client.update_item
            tries: list[int] = []
            try:
                resp = self.caller.call(method, kw, write=True, attempts=tries)
            except ClientError as e:
                code = error_code(e)
                if code in _ITEM_REFUSED:  # e.g. a value of the wrong type for an index key
                    msg = e.response.get("Error", {}).get("Message", "") or code
                    if _TOO_BIG.search(msg):
                        msg += (f" (the write's condition compares the {len(ch.present) + len(ch.absent)} "
                                "attributes the function read; DynamoDB allows at most 300 operators and 4 KB "
                                "in a condition: read only the attributes you use, by name)")
                    verb = "delete" if ch.is_delete else "update"
                    failure = UpdateFailed(f"DynamoDB rejected the {verb} of item {key_text(ch.key)}: {msg}",
                                           ch.key, e)
                    failure.__cause__ = e
                    self._failed(failure, counts)
                    return
                if code != "ConditionalCheckFailedException":
                    raise
                counts.wcu += 1.0
                self.caller.charge(1.0, write=True)
                ch = self._settle(ch, e.response.get("Item"), counts, resent=bool(tries) and tries[-1] > 1)
                continue
            units = consumed(resp, ch.units(self.indexes))
            counts.wcu += units
            self.caller.charge(units, write=True)
            if ch.is_delete:
                counts.deleted += 1
            else:
                counts.updated += 1
            return

    # ---- a failed condition ---------------------------------------------------------------------
    def _settle(self, ch: Change, current: Mapping | None, counts: Counts, resent: bool) -> Change | None:
        """What a failed condition means for this item (module doc); a new Change to write, or
        None when the item is settled."""
        if current is None:  # no ALL_OLD: the item is not there (a strong read makes sure)
            got = self.caller.call(self.client.get_item, {
                "TableName": self.statements.table_name, "Key": ch.key, "ConsistentRead": True}, write=False)
            current = got.get("Item")
        if current is None:
            if ch.is_delete and resent:
                counts.deleted += 1  # our own earlier attempt deleted it; its response was lost
            else:
                counts.gone += 1  # deleted meanwhile: never resurrect it
            return None
        if not ch.is_delete and holds(current, ch.sets, ch.removes):
            counts.updated += 1  # our own earlier attempt landed; its response was lost
            return None
        if self.has_filter and not ch.verified and same_item(current, ch.raw):
            counts.unmatched += 1  # unchanged since we decided, so the filter is what failed
            return None
        counts.conflicts += 1  # changed since read: decide again on what is there now
        if ch.tries + 1 >= MAX_CONFLICTS:
            raise DynError(
                f"item {key_text(ch.key)} changed {MAX_CONFLICTS} times while being migrated; "
                "the checkpoints are kept, run again to resume")
        try:
            nxt = self.plan(current, verified=False)
        except UpdateFailed as e:  # update() fails on the item's new value
            self._failed(e, counts)
            return None
        if nxt is None:
            counts.unchanged += 1
            return None
        if nxt.clash:
            counts.clash(nxt.key, nxt.reason)
            return None
        nxt.tries = ch.tries + 1
        return nxt

    def _failed(self, error: UpdateFailed, counts: Counts) -> None:
        """The item is left untouched: counted ``failed`` within the budget, else the run stops."""
        self.errors.record(error.key, error)
        counts.failed += 1
