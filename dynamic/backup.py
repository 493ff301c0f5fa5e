"""Backups before data changes: refuse without point-in-time recovery, or take an on-demand one.

``backup = "pitr"`` checks DescribeContinuousBackups before a run; ``"on-demand"`` takes a
CreateBackup named after the revision before the first step and returns its ARN for the
history record. An endpoint without backups (DynamoDB Local) gets a clear line, not a stack.
"""
from __future__ import annotations

import datetime as _dt
import re
from typing import Any

from botocore.exceptions import ClientError

from .dynamo import endpoint_of, error_code
from .errors import DynError, UsageError

MODES = ("none", "pitr", "on-demand")
_UNSUPPORTED = ("UnknownOperationException", "UnrecognizedClientException", "NotImplemented",
                "InvalidAction", "UnsupportedOperationException")


class BackupError(DynError):
    """Backups are required by config and cannot be had."""


def _unsupported(e: ClientError, client: Any, what: str) -> BackupError:
    return BackupError(
        f"{what} is not supported by the endpoint {endpoint_of(client)} ({error_code(e)}); "
        "DynamoDB Local has no backups: set backup = \"none\" (or DYN_BACKUP=none) for local runs")


def require_pitr(client: Any, table: str) -> None:
    """Refuse unless point-in-time recovery is on for ``table``."""
    try:
        desc = client.describe_continuous_backups(TableName=table)["ContinuousBackupsDescription"]
    except ClientError as e:
        if error_code(e) in _UNSUPPORTED or "not supported" in str(e).lower():
            raise _unsupported(e, client, "DescribeContinuousBackups") from None
        raise
    except NotImplementedError:
        raise BackupError(f"point-in-time recovery cannot be checked at {endpoint_of(client)}") from None
    status = (desc.get("PointInTimeRecoveryDescription") or {}).get("PointInTimeRecoveryStatus")
    if status != "ENABLED":
        raise BackupError(
            f"backup = \"pitr\" but point-in-time recovery is {status or 'DISABLED'} on table {table}: "
            f"enable it (aws dynamodb update-continuous-backups --table-name {table} "
            "--point-in-time-recovery-specification PointInTimeRecoveryEnabled=true) or set another backup mode")


def backup_name(table: str, revision: str, now: _dt.datetime | None = None) -> str:
    stamp = (now or _dt.datetime.now(_dt.timezone.utc)).strftime("%Y%m%dT%H%M%SZ")
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", f"dyn-{table}-{revision}-{stamp}")
    return name[:255]


def create_backup(client: Any, table: str, revision: str) -> str:
    """Take an on-demand backup before a run's first step; returns its ARN."""
    try:
        r = client.create_backup(TableName=table, BackupName=backup_name(table, revision))
    except ClientError as e:
        if error_code(e) in _UNSUPPORTED or "not supported" in str(e).lower():
            raise _unsupported(e, client, "CreateBackup") from None
        msg = e.response.get("Error", {}).get("Message", str(e))
        raise BackupError(f"CreateBackup of table {table} failed: {error_code(e)}: {msg}") from None
    return r["BackupDetails"]["BackupArn"]


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise UsageError(f"backup must be one of {', '.join(MODES)}, got {mode!r}")
    return mode
