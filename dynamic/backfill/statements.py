"""The requests that carry a :class:`~dynamic.backfill.plan.Change`: a PartiQL statement for
``BatchExecuteStatement`` (the default path: 25 conditional writes a call), or UpdateItem /
DeleteItem arguments (``write_mode = "item"``, and any write a statement cannot express).

Both carry the same condition: the key exists (an item deleted meanwhile is never
resurrected), every attribute the user's code read is as it was (present ones equal, absent
ones still absent), and the filter still matches.
"""
from __future__ import annotations

import threading
from typing import Any

from boto3.dynamodb.conditions import ConditionBase

from ..dynamo import TableInfo
from .conditions import quote, to_expression, to_partiql
from .plan import Change

MAX_STATEMENT = 8192  # characters DynamoDB accepts in one PartiQL statement
_NULL_TYPE = {"S": "NULL"}


class Statements:
    """Builds the requests of one operation on one table (statement texts are cached by shape)."""

    def __init__(self, table: TableInfo, filter: ConditionBase | None = None):
        self.table_name = table.name
        self.key_names = table.key_names
        self._table_q = quote(table.name)
        self._key_sql = " AND ".join(f"{quote(k)} = ?" for k in self.key_names)
        self._exists_sql = f"{quote(self.key_names[0])} IS NOT MISSING"
        if filter is not None:
            text, self._filter_params = to_partiql(filter)
            self._filter_sql = f" AND {text}"
            self._filter_expr = to_expression(filter, "f")
        else:
            self._filter_sql, self._filter_params, self._filter_expr = "", [], None
        self._texts: dict[tuple, str | None] = {}
        self._exprs: dict[tuple, tuple[str | None, str, dict]] = {}
        self._lock = threading.Lock()

    # ---- PartiQL ----------------------------------------------------------------------------
    def statement(self, ch: Change) -> dict | None:
        """``{"Statement", "Parameters", ...}`` for BatchExecuteStatement, or None when the write
        cannot be one statement (too long): the item path takes it."""
        nulls = tuple(ch.raw[n].get("NULL") is True for n in ch.present)
        shape = (ch.sets is None, tuple(ch.sets or ()), tuple(ch.removes), ch.present, nulls, ch.absent)
        text = self._texts.get(shape, "")
        if text == "":
            text = self._text(ch, nulls)
            with self._lock:
                if len(self._texts) < 4096:
                    self._texts[shape] = text
        if text is None:
            return None
        params: list[dict] = []
        if ch.sets:
            params.extend(ch.sets.values())
        params.extend(ch.key[k] for k in self.key_names)
        for n, is_null in zip(ch.present, nulls):
            params.append(_NULL_TYPE if is_null else ch.raw[n])
        params.extend(self._filter_params)
        return {"Statement": text, "Parameters": params, "ReturnValuesOnConditionCheckFailure": "ALL_OLD"}

    def _text(self, ch: Change, nulls: tuple) -> str | None:
        where = [self._key_sql, self._exists_sql]
        for n, is_null in zip(ch.present, nulls):
            # NULL = NULL is not true in PartiQL: ask for the type instead
            where.append(f"attribute_type({quote(n)}, ?)" if is_null else f"{quote(n)} = ?")
        where.extend(f"{quote(n)} IS MISSING" for n in ch.absent)
        cond = " AND ".join(where) + self._filter_sql
        if ch.sets is None:
            text = f"DELETE FROM {self._table_q} WHERE {cond}"
        else:
            clauses = [f"SET {quote(n)} = ?" for n in ch.sets]
            clauses += [f"REMOVE {quote(n)}" for n in ch.removes]
            text = f"UPDATE {self._table_q} {' '.join(clauses)} WHERE {cond}"
        return text if len(text) <= MAX_STATEMENT else None

    # ---- UpdateItem / DeleteItem --------------------------------------------------------------
    def item_request(self, ch: Change) -> dict:
        """Keyword arguments of UpdateItem (or DeleteItem, for a delete)."""
        shape = (ch.sets is None, tuple(ch.sets or ()), tuple(ch.removes), ch.present, ch.absent)
        got = self._exprs.get(shape)
        if got is None:
            got = self._expression(ch)
            with self._lock:
                if len(self._exprs) < 4096:
                    self._exprs[shape] = got
        update_expr, cond_expr, names = got
        values: dict[str, Any] = {f":s{i}": v for i, v in enumerate((ch.sets or {}).values())}
        for i, n in enumerate(ch.present):
            values[f":c{i}"] = ch.raw[n]
        kw: dict[str, Any] = {
            "TableName": self.table_name,
            "Key": ch.key,
            "ConditionExpression": cond_expr,
            "ExpressionAttributeNames": names,
            "ReturnConsumedCapacity": "TOTAL",
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
        if update_expr is not None:
            kw["UpdateExpression"] = update_expr
        if self._filter_expr is not None:
            values.update(self._filter_expr[2])
        if values:
            kw["ExpressionAttributeValues"] = values
        return kw

    def _expression(self, ch: Change) -> tuple[str | None, str, dict]:
        names: dict[str, str] = {}
        update_expr = None
        if ch.sets is not None:
            parts = []
            if ch.sets:
                clauses = []
                for i, n in enumerate(ch.sets):
                    names[f"#s{i}"] = n
                    clauses.append(f"#s{i} = :s{i}")
                parts.append("SET " + ", ".join(clauses))
            if ch.removes:
                clauses = []
                for i, n in enumerate(ch.removes):
                    names[f"#d{i}"] = n
                    clauses.append(f"#d{i}")
                parts.append("REMOVE " + ", ".join(clauses))
            update_expr = " ".join(parts)
        names["#k"] = self.key_names[0]
        cond = ["attribute_exists(#k)"]
        for i, n in enumerate(ch.present):
            names[f"#c{i}"] = n
            cond.append(f"#c{i} = :c{i}")
        for i, n in enumerate(ch.absent):
            names[f"#a{i}"] = n
            cond.append(f"attribute_not_exists(#a{i})")
        if self._filter_expr is not None:
            expr, fnames, _ = self._filter_expr
            names.update(fnames)
            # boto3 already parenthesises And/Or/Not, and DynamoDB refuses "((...))"
            cond.append(expr if expr.startswith("(") else f"({expr})")
        return update_expr, " AND ".join(cond), names
