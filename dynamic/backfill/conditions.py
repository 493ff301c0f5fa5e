"""boto3 conditions (``Attr('Type').eq('Post')``) in the three forms the engine sends them:
a Scan ``FilterExpression``, a condition of an ``UpdateItem``, and a PartiQL ``WHERE`` clause.

The PartiQL translation is the engine's own (boto3 has none); it follows boto3's expression
builder case by case -- the same operators, the same attribute paths (``a.b[0]``) -- and
quotes every name, so reserved words and odd names work. Tests hold it against DynamoDB
Local: for random items and conditions, the Scan filter and the PartiQL condition agree.
"""
from __future__ import annotations

import re
from typing import Any

from boto3.dynamodb import conditions as c
from boto3.dynamodb.conditions import ConditionBase, ConditionExpressionBuilder

from ..errors import UsageError
from .values import serializer

_PATH_PART = c.ATTR_NAME_REGEX  # boto3's own: the names in "a.b[0]" are "a" and "b"
_COMPARISONS = {
    c.Equals: "=", c.NotEquals: "<>", c.LessThan: "<", c.LessThanEquals: "<=",
    c.GreaterThan: ">", c.GreaterThanEquals: ">=",
}
_FUNCTIONS = {c.BeginsWith: "begins_with", c.Contains: "contains", c.AttributeType: "attribute_type"}


def check(cond: Any, what: str = "filter") -> None:
    """A filter must be a boto3 condition; anything else is a usage error naming the fix."""
    if cond is not None and not isinstance(cond, ConditionBase):
        raise UsageError(
            f"{what} must be a boto3 condition such as Attr('Type').eq('Post'), not {type(cond).__name__}")


def combine(*conds: Any) -> ConditionBase | None:
    """``a & b & ...`` of the conditions that are not None."""
    out = None
    for cond in conds:
        if cond is None:
            continue
        check(cond)
        out = cond if out is None else out & cond
    return out


def scan_filter(cond: ConditionBase | None) -> dict:
    """``FilterExpression`` (+ names/values) for a Scan, via boto3's own builder."""
    if cond is None:
        return {}
    built = ConditionExpressionBuilder().build_expression(cond, is_key_condition=False)
    kw: dict = {
        "FilterExpression": built.condition_expression,
        "ExpressionAttributeNames": built.attribute_name_placeholders,
    }
    if built.attribute_value_placeholders:
        kw["ExpressionAttributeValues"] = _serialize(built.attribute_value_placeholders)
    return kw


def to_expression(cond: ConditionBase, prefix: str = "f") -> tuple[str, dict, dict]:
    """``(ConditionExpression, names, values)`` with placeholders ``#<prefix>N`` / ``:<prefix>N``,
    so the clause can join an expression that uses other placeholders."""
    built = ConditionExpressionBuilder().build_expression(cond, is_key_condition=False)
    names = {f"#{prefix}{k[1:]}": v for k, v in built.attribute_name_placeholders.items()}
    values = {f":{prefix}{k[1:]}": v for k, v in _serialize(built.attribute_value_placeholders).items()}
    expr = re.sub(r"([#:])([nv]\d+)", lambda m: f"{m.group(1)}{prefix}{m.group(2)}", built.condition_expression)
    return expr, names, values


def _serialize(values: dict) -> dict:
    out = {}
    for k, v in values.items():
        try:
            out[k] = serializer.serialize(v)
        except TypeError as e:
            raise UsageError(f"a filter value cannot be stored in DynamoDB ({e}): use Decimal, not float") from None
    return out


# ---- PartiQL ------------------------------------------------------------------------------------
def quote(name: str) -> str:
    """A PartiQL identifier: double quotes, inner ones doubled."""
    return '"' + name.replace('"', '""') + '"'


def path(name: str) -> str:
    """An attribute path as boto3 reads it (``a.b[0]``: map ``a``, key ``b``, element 0), quoted."""
    return _PATH_PART.sub(lambda m: quote(m.group(0)), name)


def to_partiql(cond: ConditionBase) -> tuple[str, list[dict]]:
    """``(WHERE clause, parameters)`` for a boto3 condition; parameters in order of the ``?``."""
    params: list[dict] = []
    return _sql(cond, params), params


def _operand(v: Any, params: list[dict]) -> str:
    if isinstance(v, c.Size):
        return f"size({_operand(v._values[0], params)})"
    if isinstance(v, c.AttributeBase):
        return path(v.name)
    params.extend(_serialize({"v": v}).values())
    return "?"


def _sql(cond: Any, params: list[dict]) -> str:
    v = cond._values
    kind = type(cond)
    if kind in _COMPARISONS:
        left = _operand(v[0], params)
        return f"{left} {_COMPARISONS[kind]} {_operand(v[1], params)}"
    if kind is c.In:
        left = _operand(v[0], params)
        return f"{left} IN [{', '.join(_operand(x, params) for x in v[1])}]"
    if kind is c.Between:
        left = _operand(v[0], params)
        low = _operand(v[1], params)
        return f"{left} BETWEEN {low} AND {_operand(v[2], params)}"
    if kind in _FUNCTIONS:
        left = _operand(v[0], params)
        return f"{_FUNCTIONS[kind]}({left}, {_operand(v[1], params)})"
    if kind is c.AttributeExists:
        return f"{_operand(v[0], params)} IS NOT MISSING"
    if kind is c.AttributeNotExists:
        return f"{_operand(v[0], params)} IS MISSING"
    if kind is c.And or kind is c.Or:
        left = _sql(v[0], params)
        return f"({left} {cond.expression_operator} {_sql(v[1], params)})"
    if kind is c.Not:
        return f"(NOT {_sql(v[0], params)})"
    raise UsageError(f"dyn cannot translate the condition {type(cond).__name__} to PartiQL")


def describe(cond: Any) -> str:
    """A condition for humans: ``where Type = 'Post'``."""
    if cond is None:
        return ""
    try:
        built = ConditionExpressionBuilder().build_expression(cond)
        s = built.condition_expression
        for k, v in sorted(built.attribute_name_placeholders.items(), key=lambda kv: -len(kv[0])):
            s = s.replace(k, v)
        for k, v in sorted(built.attribute_value_placeholders.items(), key=lambda kv: -len(kv[0])):
            s = s.replace(k, repr(v))
        return f"where {s}"
    except Exception:
        return "where <filter>"
