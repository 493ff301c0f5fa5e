"""Moving items to new keys: DynamoDB cannot update a key, so each move puts the new item and
deletes the old one, in one ``TransactWriteItems``.

* **The put** is conditioned on the new key being free. When it is taken by an item exactly
  equal to the new one, the old item is deleted together with a check that the new one is
  still as seen (``already_moved``); taken by anything else, the old item stays and the key
  is named in the result (a clash: never overwritten).
* **The delete** is conditioned like any write of the engine: the old item exists, every
  attribute ``transform`` read is unchanged, the filter still matches. A failed condition
  is settled from the item DynamoDB returns: gone (with its new item there: moved before, by
  us or anyone; without: deleted meanwhile, never resurrected), or changed: ``transform`` runs
  again on what is there now.
* **Retries.** A call whose answer is lost is sent again as it was, with the same
  ``ClientRequestToken``, so DynamoDB answers a transaction that had landed with its success
  (for 10 minutes, the engine's retry budget) instead of running it again. A transaction
  cancelled for throttling or a conflicting transaction is sent again after a backoff, with
  a new token: a cancelled one wrote nothing.
* **The scan never moves an item twice.** New keys land in segments the scan has not reached
  yet, so the scan meets the items this step writes. Before writing, the plan applies
  ``transform`` to the new item itself: it must say "leave it" (``None``, or the item's own
  key), else the move is refused with an error naming the item. So every item this step
  writes is one that ``transform`` leaves alone when the scan meets it: correct whatever
  segment it lands in, across processes and crashes, at the cost of one more call of a
  Python function per item.
"""
from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import Any, Callable

from botocore.exceptions import ClientError

from ..dynamo import TableInfo, error_code
from ..errors import AwsError, DynError, UsageError
from .failures import errors_of
from .plan import MAX_CONFLICTS, Change, call_user
from .ratelimit import Stopped
from .result import Counts, UpdateFailed
from .retry import Caller, consumed, delay
from .statements import Statements
from .values import REMOVE, ItemView, av_equal, deserializer, item_size, key_text, one_line, plain, same_item, \
    serializer, write_cost, write_units

MAX_ITEM_BYTES = 400 * 1024  # DynamoDB's item size limit
# reasons of a cancelled transaction worth sending it again (with a new token) after a backoff
_RETRY_REASONS = frozenset({"TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded",
                            "RequestLimitExceeded", "InternalServerError"})
_KEY_TYPES = {"S": "a string", "N": "a number", "B": "binary"}


def new_token() -> str:
    return str(uuid.uuid4())


class MoveChange:
    """One planned move: ``delete`` is the old item's conditional delete (a Change), ``new``
    the new item (raw AttributeValues), ``token`` the ClientRequestToken of the attempt."""

    __slots__ = ("delete", "new", "new_key", "tries", "token")
    is_move = True
    is_delete = False
    clash = False
    whole = False  # a transform copies the whole item by nature: the docs say what that cannot see

    def __init__(self, delete: Change, new: dict, new_key: dict, tries: int = 0):
        self.delete = delete
        self.new = new
        self.new_key = new_key
        self.tries = tries
        self.token = new_token()

    @property
    def raw(self) -> Mapping:
        return self.delete.raw

    @property
    def key(self) -> dict:
        return self.delete.key

    @property
    def verified(self) -> bool:
        return self.delete.verified

    def sample(self) -> dict:
        """Only what the move changes (the key, and the attributes it adds, changes or leaves
        out): an attribute carried over as it was says nothing."""
        names = [*self.delete.key, *sorted(n for n in {*self.raw, *self.new} if n not in self.delete.key)]
        before, after = {}, {}
        for n in names:
            old, new = self.raw.get(n), self.new.get(n)
            if old is not None and new is not None and av_equal(old, new):
                continue
            if old is not None:
                before[n] = deserializer.deserialize(old)
            after[n] = REMOVE if new is None else deserializer.deserialize(new)
        return {"key": plain(self.key), "before": before, "after": after}

    def units(self, indexes: tuple = ()) -> float:
        """Write units of the move: a put and a delete in a transaction, which bills both twice."""
        return 2 * (write_cost({}, self.new, indexes) + write_cost(self.raw, None, indexes))


class MovePlan:
    """``transform(item)`` -> a MoveChange, or None (no new item, or the item's own key)."""

    def __init__(self, transform: Callable[[Mapping], Mapping | None], table: TableInfo,
                 is_meta: Callable[[dict], bool] | None = None):
        if not callable(transform):
            raise UsageError(f"transform must be a callable taking the item, got {type(transform).__name__}")
        self.transform = transform
        self.table = table
        self.key_names = table.key_names
        self.key_set = frozenset(table.key_names)
        self.key_types = {table.pk_name: table.pk_type, **({table.sk_name: table.sk_type} if table.sk_name else {})}
        self.is_meta = is_meta

    def __call__(self, raw: Mapping, verified: bool = True) -> MoveChange | None:
        key = {k: raw[k] for k in self.key_names}
        view = ItemView(raw)
        out = call_user(self.transform, "transform", view, key)
        if out is None:
            return None
        new = self._item(out, key)
        new_key = {k: new[k] for k in self.key_names}
        if all(av_equal(new_key[k], key[k]) for k in self.key_names):
            return None  # its own key: it stays where it is
        self._settled(new, new_key, key)
        present, absent = view.reads(self.key_set)
        return MoveChange(Change(raw, key, None, [], present, absent, verified), new, new_key)

    def _item(self, out: Any, key: dict) -> dict:
        """The new item as raw AttributeValues, checked as DynamoDB would (one line naming the
        old item's key for whatever it would refuse)."""
        where = f"on item {key_text(key)}"
        if not isinstance(out, Mapping):
            raise UpdateFailed(f"transform() must return the new item (a dict) or None, got "
                               f"{type(out).__name__} {where}", key)
        new: dict = {}
        for name, value in out.items():
            if value is REMOVE:
                raise UpdateFailed(f"transform() returned dynamic.REMOVE for {name!r} {where}: it returns the "
                                   "whole new item, so leave the attribute out instead", key)
            try:
                new[name] = serializer.serialize(value)
            except Exception as e:  # float, unsupported type, empty set...
                raise UpdateFailed(f"transform() returned an unstorable value for {name!r} "
                                   f"({type(e).__name__}: {one_line(e)}) {where}", key, e) from e
        for k in self.key_names:
            av = new.get(k)
            if av is None:
                raise UpdateFailed(f"transform() returned an item without the table's key attribute {k!r} "
                                   f"{where}", key)
            kind, v = next(iter(av.items()))
            want = self.key_types.get(k) or "S"
            if kind != want:
                raise UpdateFailed(f"transform() returned {k} as {_KEY_TYPES.get(kind, kind)} {where}, but the "
                                   f"table {self.table.name} keys {k} as {_KEY_TYPES[want]}", key)
            if kind in ("S", "B") and not v:
                raise UpdateFailed(f"transform() returned an empty {k} {where}: key values cannot be empty", key)
        if self.is_meta is not None and self.is_meta(new):
            raise UpdateFailed(f"transform() returned a key in dyn's reserved partition "
                               f"({key_text({k: new[k] for k in self.key_names})}) {where}", key)
        size = item_size(new)
        if size > MAX_ITEM_BYTES:
            raise UpdateFailed(f"the new item for {key_text(key)} would be {size:,} bytes, more than DynamoDB's "
                               "400 KB item size limit", key)
        return new

    def _settled(self, new: dict, new_key: dict, key: dict) -> None:
        """``transform`` must leave alone the item it makes: the scan can meet it."""
        why = ("the scan can meet the items this step writes, so transform must return None (or the "
               "item's own key) for an item already in the new shape")
        try:
            again = self.transform(ItemView(new))
        except Exception as e:
            raise UpdateFailed(f"transform() raised {type(e).__name__}: {one_line(e)} on the new item it made "
                               f"for {key_text(key)}: {why}", key, e) from e
        if again is None:
            return
        try:
            moved = isinstance(again, Mapping) and all(
                k in again and av_equal(serializer.serialize(again[k]), new_key[k]) for k in self.key_names)
        except Exception:  # noqa: BLE001 - unstorable: not its own key either
            moved = False
        if not moved:
            there = {k: serializer.serialize(again[k]) for k in self.key_names
                     if isinstance(again, Mapping) and k in again}
            raise UpdateFailed(f"transform() would move the new item it made for {key_text(key)} again "
                               f"(from {key_text(new_key)} to {key_text(there)}): {why}", key)


class MoveWrites:
    """Writes the moves of one worker, one TransactWriteItems each; every item ends moved,
    already moved, a clash, gone, unmatched or unchanged (``transform`` decided again)."""

    def __init__(self, client: Any, caller: Caller, statements: Statements, plan: MovePlan, *,
                 has_filter: bool = False, max_retry_seconds: float = 600.0, errors: Any = None):
        self.client = client
        self.caller = caller
        self.statements = statements
        self.table_name = statements.table_name
        self.plan = plan
        self.has_filter = has_filter
        self.max_retry_seconds = max_retry_seconds
        self.pk = plan.key_names[0]
        self.errors = errors_of(errors)  # record(key, error): skip an item DynamoDB refuses, or raise

    def apply(self, changes: list, counts: Counts) -> None:
        for ch in changes:
            try:
                self._move(ch, counts)
            except UpdateFailed as e:  # DynamoDB refused this move (or transform failed on its new
                self.errors.record(e.key or ch.key, e)  # value): within the budget, left as it is
                counts.failed += 1

    def _move(self, ch: MoveChange, counts: Counts) -> None:
        waits = 0
        first_wait = 0.0
        adopt: dict | None = None  # the new item, when it is already there, exactly
        while ch is not None:
            outcome, resp = self._send(ch, adopt)
            if outcome == "done":
                units = consumed(resp, 2 * (write_units(item_size(ch.new)) + write_units(item_size(ch.raw))))
                counts.wcu += units
                self.caller.charge(units, write=True)
                if adopt is None:
                    counts.moved += 1
                else:
                    counts.already_moved += 1
                return
            if outcome == "cancelled":
                counts.wcu += 2.0  # a cancelled transaction is billed too
                self.caller.charge(2.0, write=True)
                codes = [r.get("Code") or "None" for r in resp] + ["None", "None"]
                new_code, old_code = codes[0], codes[1]
                if new_code not in _RETRY_REASONS and old_code not in _RETRY_REASONS:
                    waits = 0
                    if "ValidationError" in (new_code, old_code):
                        msg = next(r.get("Message", "") for r in resp if r.get("Code") == "ValidationError")
                        raise UpdateFailed(f"DynamoDB rejected the move of item {key_text(ch.key)} to "
                                           f"{key_text(ch.new_key)}: {msg}", ch.key)
                    if old_code == "ConditionalCheckFailed":
                        ch, adopt = self._old_failed(ch, resp[1].get("Item"), new_code, adopt, counts), None
                    elif new_code == "ConditionalCheckFailed":
                        ch, adopt = self._new_taken(ch, resp[0].get("Item"), adopt, counts)
                    else:
                        raise AwsError(f"{self.caller.label}: DynamoDB cancelled the move of item "
                                       f"{key_text(ch.key)} ({new_code}, {old_code})")
                    continue
                ch.token = new_token()  # the cancelled attempt wrote nothing
            # throttled or in conflict with another transaction, or an earlier attempt with this
            # token still running: the same transaction again, after a backoff
            waits += 1
            now = time.monotonic()
            if waits == 1:
                first_wait = now
            elif now - first_wait > self.max_retry_seconds:
                raise AwsError(f"{self.caller.label}: DynamoDB kept refusing the move of item {key_text(ch.key)} "
                               f"for {self.max_retry_seconds:.0f}s; the checkpoints are kept, run again to resume")
            if self.caller.stop.wait(delay(waits)):
                raise Stopped()

    def _send(self, ch: MoveChange, adopt: dict | None) -> tuple[str, Any]:
        """One attempt: ``("done", response)``, ``("cancelled", reasons)``, or ``("wait", None)``
        when an earlier attempt with this token still runs."""
        delete = self.statements.item_request(ch.delete)
        delete.pop("ReturnConsumedCapacity", None)
        if adopt is None:
            first = {"Put": {"TableName": self.table_name, "Item": ch.new,
                             "ConditionExpression": "attribute_not_exists(#k)",
                             "ExpressionAttributeNames": {"#k": self.pk},
                             "ReturnValuesOnConditionCheckFailure": "ALL_OLD"}}
        else:
            first = {"ConditionCheck": self._unchanged(ch.new_key, adopt)}
        kw = {"TransactItems": [first, {"Delete": delete}], "ClientRequestToken": ch.token,
              "ReturnConsumedCapacity": "TOTAL"}
        try:
            # a lost answer is sent again as it is, token included: a transaction that landed
            # answers with its success instead of running again
            return "done", self.caller.call(self.client.transact_write_items, kw, write=True)
        except ClientError as e:
            code = error_code(e)
            if code == "TransactionCanceledException":
                return "cancelled", list(e.response.get("CancellationReasons") or [])
            if code == "TransactionInProgressException":
                return "wait", None
            if code == "IdempotentParameterMismatchException":  # a token is never sent otherwise; be safe
                ch.token = new_token()
                return "wait", None
            if code == "ValidationException":  # e.g. a value of the wrong type for an index key
                msg = e.response.get("Error", {}).get("Message", "")
                raise UpdateFailed(f"DynamoDB rejected the move of item {key_text(ch.key)} to "
                                   f"{key_text(ch.new_key)}: {msg}", ch.key, e) from e
            raise

    def _unchanged(self, key: dict, item: dict) -> dict:
        """A ConditionCheck that ``item`` (at ``key``) still holds every value it held."""
        names, values, cond = {"#k": self.pk}, {}, ["attribute_exists(#k)"]
        for i, (n, v) in enumerate(sorted((n, v) for n, v in item.items() if n not in key)):
            names[f"#n{i}"] = n
            values[f":n{i}"] = v
            cond.append(f"#n{i} = :n{i}")
        check = {"TableName": self.table_name, "Key": key, "ConditionExpression": " AND ".join(cond),
                 "ExpressionAttributeNames": names, "ReturnValuesOnConditionCheckFailure": "ALL_OLD"}
        if values:
            check["ExpressionAttributeValues"] = values
        return check

    def _get(self, key: dict) -> dict | None:
        got = self.caller.call(self.client.get_item, {"TableName": self.table_name, "Key": key,
                                                      "ConsistentRead": True}, write=False)
        return got.get("Item")

    def _old_failed(self, ch: MoveChange, current: Mapping | None, new_code: str, adopt: dict | None,
                    counts: Counts) -> MoveChange | None:
        """The old item is not as it was: gone, or changed (decide again)."""
        if current is None:
            current = self._get(ch.key)
        if current is None:
            if adopt is None:
                there = new_code == "ConditionalCheckFailed"  # the put found the new key taken
            else:
                there = self._get(ch.new_key) is not None
            if there:
                counts.already_moved += 1  # moved before: by an earlier run, or by anyone
            else:
                counts.gone += 1  # deleted meanwhile: never resurrected
            return None
        if self.has_filter and not ch.verified and same_item(current, ch.raw):
            counts.unmatched += 1  # unchanged since we decided, so the filter is what failed
            return None
        return self._again(ch, current, counts)

    def _new_taken(self, ch: MoveChange, there: Mapping | None, adopt: dict | None,
                   counts: Counts) -> tuple[MoveChange | None, dict | None]:
        """The old item is as it was, the new key is taken (or, adopting, the new item changed):
        exactly the new item -> adopt it (delete the old one, checking the new one stays);
        another item -> a clash; nothing any more -> put again."""
        if there is None:
            there = self._get(ch.new_key)
        if there is not None and not same_item(there, ch.new):
            counts.clash(ch.key, f"its new key {key_text(ch.new_key)} holds another item")
            return None, None
        if adopt is not None or there is None:  # it changed under us: try again, a bounded number of times
            counts.conflicts += 1
            ch.tries += 1
            if ch.tries >= MAX_CONFLICTS:
                raise DynError(f"the new key {key_text(ch.new_key)} of item {key_text(ch.key)} changed "
                               f"{MAX_CONFLICTS} times while being moved; the checkpoints are kept, run again")
        ch.token = new_token()
        return ch, (dict(there) if there is not None else None)

    def _again(self, ch: MoveChange, current: Mapping, counts: Counts) -> MoveChange | None:
        counts.conflicts += 1  # changed since read: decide again on what is there now
        if ch.tries + 1 >= MAX_CONFLICTS:
            raise DynError(f"item {key_text(ch.key)} changed {MAX_CONFLICTS} times while being moved; "
                           "the checkpoints are kept, run again to resume")
        nxt = self.plan(current, verified=False)
        if nxt is None:
            counts.unchanged += 1
            return None
        nxt.tries = ch.tries + 1
        return nxt
