"""Exception types. Each carries the one line a user sees and the exit code the CLI returns.

The CLI prints ``error: <message>`` to stderr and exits with ``exit_code``; a traceback is
shown only with ``--debug``. Exit codes are part of the contract (see README).
"""
from __future__ import annotations

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NOT_AT_HEAD = 3
EXIT_LOCKED = 4
EXIT_DIRTY = 5
EXIT_CHECKSUM = 6
EXIT_DRIFT = 7
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for Ctrl-C


class DynError(Exception):
    """Base class: a failure the user can act on, with a one-line message."""

    exit_code = EXIT_ERROR

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UsageError(DynError):
    """Bad arguments or configuration."""

    exit_code = EXIT_USAGE


class ConfigError(UsageError):
    """dyn.toml / pyproject / environment problems."""


class ScriptError(DynError):
    """A revision file cannot be loaded (syntax error, missing attributes, duplicates)."""


class GraphError(DynError):
    """The revision graph is inconsistent (cycle, missing parent) or a target is unresolvable."""


class MultipleHeads(GraphError):
    """One head was needed and there are several."""


class UnknownRevision(GraphError):
    """No revision matches an identifier, or several do."""


class TableError(DynError):
    """The table cannot be used: missing, unreachable, wrong key shape, newer format."""


class AwsError(DynError):
    """An AWS call failed in a way the user must fix (credentials, permissions, endpoint)."""


class NotAtHead(DynError):
    """`dyn check`: the table has pending revisions."""

    exit_code = EXIT_NOT_AT_HEAD


class LockTimeout(DynError):
    """Another runner held the lock for longer than --lock-timeout."""

    exit_code = EXIT_LOCKED


class LeaseLost(DynError):
    """This runner's lease was taken over; it must stop before writing anything else."""

    exit_code = EXIT_LOCKED


class StepRunning(DynError):
    """`dyn check`: a step is in progress and a live runner holds the lock: it is being
    applied right now (retry later, as for a lock held past --lock-timeout)."""

    exit_code = EXIT_LOCKED


class DirtyState(DynError):
    """A step was left in progress and cannot be resumed automatically."""

    exit_code = EXIT_DIRTY


class ChecksumMismatch(DynError):
    """An applied revision's file changed or disappeared since it ran."""

    exit_code = EXIT_CHECKSUM


class Drifted(DynError):
    """`dyn check --drift`: the table's indexes, TTL or settings differ from what its applied
    revisions declare. ``differences`` holds them (dicts, as ``--json`` prints them)."""

    exit_code = EXIT_DRIFT

    def __init__(self, message: str, differences: list[dict] | None = None):
        super().__init__(message)
        self.differences = list(differences or [])


class MigrationError(DynError):
    """A revision's upgrade/downgrade raised; the step is left dirty for a resume."""


class Interrupted(DynError):
    """Ctrl-C (SIGINT) stopped a run; the message says what the table is left with."""

    exit_code = EXIT_INTERRUPTED


class Irreversible(DynError):
    """Raised by a revision's downgrade (or ``op.irreversible(why)``): it cannot be undone.

    ``dyn downgrade`` past such a revision stops before doing anything.
    """

    def __init__(self, reason: str = "declared irreversible"):
        reason = reason if isinstance(reason, str) and reason else str(reason or "declared irreversible")
        super().__init__(reason)
        self.reason = reason


class ProtectedTable(UsageError):
    """A protected stage needs --yes (or an interactive confirmation)."""
