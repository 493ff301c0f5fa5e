"""dynamic: Alembic-style versioned schema and data migrations for Amazon DynamoDB."""
from __future__ import annotations

__version__ = "0.1.0"
FORMAT_VERSION = "1"  # of the records dyn keeps in the table; bump on incompatible change

from .backfill import REMOVE  # noqa: E402
from .errors import DynError, Irreversible  # noqa: E402

__all__ = ["REMOVE", "DynError", "Irreversible", "__version__", "FORMAT_VERSION"]
