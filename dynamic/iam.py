"""The least-privilege IAM policy for a project: exactly the DynamoDB actions dyn will call.

dyn's own bookkeeping (version record, lock, history, checkpoints) needs a fixed set; each
`op.*` call found in the revision files adds what it uses. TransactWriteItems is authorized
per item, as PutItem / UpdateItem / DeleteItem / ConditionCheckItem; BatchExecuteStatement per
statement, as PartiQLUpdate / PartiQLDelete.
"""
from __future__ import annotations

import re
from typing import Iterable

# action -> what dyn uses it for (docs/iam.md shows this table)
READ = {
    "dynamodb:DescribeTable": "read the key schema, indexes and size; wait for index changes",
    "dynamodb:GetItem": "read the version record (heads, lock, step in progress)",
    "dynamodb:Query": "read history records (`dyn history --applied`, `dyn current -v`)",
    "dynamodb:BatchGetItem": "read history and checkpoints on partition-key-only tables",
    "dynamodb:DescribeTimeToLive": "compare TTL with what the revisions declare (`dyn check --drift`)",
}
BOOKKEEPING = {
    "dynamodb:PutItem": "create the version record; write history and checkpoint records",
    "dynamodb:UpdateItem": "take, renew and release the lock; record heads and the step in progress",
    "dynamodb:DeleteItem": "drop a finished step's checkpoints",
    "dynamodb:ConditionCheckItem": "fence history/checkpoint writes on still holding the lock",
}
OPS: dict[str, dict[str, str]] = {
    "backfill": {"dynamodb:Scan": "parallel scan of the items to backfill",
                 "dynamodb:PartiQLUpdate": "conditional updates, 25 a call (BatchExecuteStatement)",
                 "dynamodb:UpdateItem": "conditional per-item updates (write_mode = \"item\")",
                 "dynamodb:GetItem": "re-read an item after a conflicting write"},
    "remove_attributes": {"dynamodb:Scan": "scan the items to change",
                          "dynamodb:PartiQLUpdate": "conditional updates, 25 a call (BatchExecuteStatement)",
                          "dynamodb:UpdateItem": "conditional per-item updates (write_mode = \"item\")",
                          "dynamodb:GetItem": "re-read an item after a conflicting write"},
    "delete_items": {"dynamodb:Scan": "scan the items to delete",
                     "dynamodb:PartiQLDelete": "conditional deletes, 25 a call (BatchExecuteStatement)",
                     "dynamodb:DeleteItem": "conditional per-item deletes (write_mode = \"item\")",
                     "dynamodb:GetItem": "re-read an item after a conflicting delete"},
    "rename_attribute": {"dynamodb:Scan": "scan the items that have the old attribute",
                         "dynamodb:DescribeTable": "refuse to rename an index's key attribute",
                         "dynamodb:PartiQLUpdate": "conditional renames, 25 a call (BatchExecuteStatement)",
                         "dynamodb:UpdateItem": "conditional per-item renames (write_mode = \"item\")",
                         "dynamodb:GetItem": "re-read an item after a conflicting write"},
    "move_items": {"dynamodb:Scan": "scan the items to move",
                   "dynamodb:PutItem": "put each new item (in a TransactWriteItems with the delete)",
                   "dynamodb:DeleteItem": "delete each old item (in the same TransactWriteItems)",
                   "dynamodb:ConditionCheckItem": "check a new item already there stays as it is",
                   "dynamodb:GetItem": "re-read an old or new item after a cancelled move"},
    "put_items": {"dynamodb:BatchWriteItem": "write new items 25 at a time",
                  "dynamodb:PutItem": "BatchWriteItem puts are authorized as PutItem"},
    "create_gsi": {"dynamodb:UpdateTable": "add a global secondary index"},
    "delete_gsi": {"dynamodb:UpdateTable": "drop a global secondary index"},
    "update_table": {"dynamodb:UpdateTable": "other table changes"},
    "update_ttl": {"dynamodb:UpdateTimeToLive": "turn TTL on or off",
                   "dynamodb:DescribeTimeToLive": "see whether TTL is already set"},
}
BACKUP = {
    "pitr": {"dynamodb:DescribeContinuousBackups": "refuse to run unless point-in-time recovery is on"},
    "on-demand": {"dynamodb:CreateBackup": "take a backup before a run's first step"},
}
_OP_CALL = re.compile(r"\bop\.(\w+)\s*\(")


def ops_used(sources: Iterable[str]) -> set[str]:
    """The `op.*` operations the revision files call (by name, from their source)."""
    return {m for src in sources for m in _OP_CALL.findall(src) if m in OPS}


def actions(sources: Iterable[str], *, backup: str = "none", read_only: bool = False) -> dict[str, str]:
    out = dict(READ)
    if read_only:
        return out
    out.update(BOOKKEEPING)
    for op in sorted(ops_used(sources)):
        for a, why in OPS[op].items():
            out.setdefault(a, why)
    out.update(BACKUP.get(backup, {}))
    return out


def policy(table: str, sources: Iterable[str], *, region: str | None = None, account: str = "*",
           backup: str = "none", read_only: bool = False) -> dict:
    """An IAM policy document for ``table`` covering exactly what dyn will call."""
    acts = actions(list(sources), backup=backup, read_only=read_only)
    arn = f"arn:aws:dynamodb:{region or '*'}:{account}:table/{table}"
    resources = [arn]
    if "dynamodb:CreateBackup" in acts:
        resources.append(f"{arn}/backup/*")
    return {
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "DynMigrations" + ("ReadOnly" if read_only else ""),
            "Effect": "Allow",
            "Action": sorted(acts),
            "Resource": resources,
        }],
    }
