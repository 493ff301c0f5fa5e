"""dyn.toml / [tool.dyn] / DYN_<KEY> environment / flags, resolved into one frozen Config.

Precedence, lowest to highest: defaults, the config file, DYN_<KEY>, command-line flags.
String values expand ``${VAR}`` and ``${VAR:-default}`` so one project serves
dev/staging/prod tables (``table = "app-${STAGE}"``).
"""
from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlsplit

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from .errors import ConfigError

CONFIG_FILE = "dyn.toml"


@dataclass(frozen=True)
class Config:
    """Everything a command needs to know about the project and the table it migrates."""

    table: str | None = None
    script_location: str = "migrations"
    region: str | None = None
    endpoint_url: str | None = None
    profile: str | None = None
    meta_pk: str = "_dyn"
    lock_lease_seconds: float = 60.0
    lock_timeout: float = 600.0
    workers: int | None = None
    segments: int | None = None
    page_size: int | None = None
    max_wcu: float | None = None
    max_rcu: float | None = None
    retry_mode: str = "standard"
    write_mode: str = "batch"  # batch: 25 PartiQL statements a call; item: one UpdateItem each
    processes: int | None = None  # worker processes of a data operation; None: one per core
    dask_scheduler: str | None = None  # run the segments as tasks on this Dask cluster
    checkpoint_interval: float = 2.0  # seconds between two checkpoint flushes of a data operation
    # production safety (docs/production.md)
    backup: str = "none"  # none | pitr | on-demand
    protected: bool = False  # upgrade/downgrade/stamp/unlock need --yes
    max_errors: int = 0  # failing update() calls a backfill records and skips before it stops
    errors_file: str = "dyn-errors.jsonl"
    # on-demand list prices in USD per million request units: us-east-1, Standard table class, as
    # published on aws.amazon.com/dynamodb/pricing/on-demand/ after the 1 November 2024 price cut
    write_price: float = 0.625
    read_price: float = 0.125
    # where the config came from; script_location is relative to root
    path: Path | None = field(default=None, compare=False)
    root: Path = field(default_factory=Path.cwd, compare=False)

    @property
    def script_dir(self) -> Path:
        p = Path(self.script_location)
        return p if p.is_absolute() else self.root / p

    def require_table(self) -> str:
        if not self.table:
            raise ConfigError(
                "no table configured: set `table` in dyn.toml, DYN_TABLE, or pass --table"
            )
        return self.table


KEYS: dict[str, type] = {
    f.name: f.type for f in fields(Config) if f.name not in ("path", "root")  # type: ignore[misc]
}
_BOOLS = {"true": True, "1": True, "yes": True, "on": True,
          "false": False, "0": False, "no": False, "off": False, "": False}
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand(value: str, key: str, env: Mapping[str, str]) -> str:
    """Expand ${VAR} / ${VAR:-default}; an unset VAR without default is an error naming it."""

    def sub(m: re.Match) -> str:
        name, default = m.group(1), m.group(2)
        if name in env and env[name] != "":
            return env[name]
        if default is not None:
            return default
        raise ConfigError(
            f"config key {key!r} uses ${{{name}}}, which is not set: export {name} "
            f"or write ${{{name}:-default}}"
        )

    return _VAR.sub(sub, value)


def _coerce(key: str, value: Any, source: str) -> Any:
    kind = KEYS[key]
    kind_s = kind if isinstance(kind, str) else getattr(kind, "__name__", str(kind))
    if value is None:
        return None
    try:
        if "bool" in kind_s:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.strip().lower() in _BOOLS:
                return _BOOLS[value.strip().lower()]
            raise ValueError
        if ("float" in kind_s or "int" in kind_s) and isinstance(value, bool):
            raise ValueError  # TOML's true is not 1
        if "float" in kind_s:
            return float(value) if value != "" else None
        if "int" in kind_s:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            if isinstance(value, str) and value.strip() and not value.strip().lstrip("+-").isdigit():
                raise ValueError
            return int(value) if value != "" else None
        if isinstance(value, (int, float)) and key == "meta_pk":
            return str(value)
        if not isinstance(value, str):
            raise ValueError
        return value
    except (TypeError, ValueError):
        want = ("true or false" if "bool" in kind_s else "a number" if "float" in kind_s else
                "a whole number" if "int" in kind_s else "a string")
        raise ConfigError(f"config key {key!r} from {source} must be {want}, got {value!r}") from None


def find_config(start: Path) -> tuple[Path | None, dict]:
    """Walk up from ``start`` to the first dyn.toml, or pyproject.toml with [tool.dyn]."""
    for d in [start, *start.parents]:
        f = d / CONFIG_FILE
        if f.is_file():
            return f, _section(f, ("dyn",))
        pp = d / "pyproject.toml"
        if pp.is_file():
            data = _read_toml(pp)
            if isinstance(data.get("tool"), dict) and "dyn" in data["tool"]:
                return pp, data["tool"]["dyn"]
    return None, {}


def _read_toml(path: Path) -> dict:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from None
    except OSError as e:
        raise ConfigError(f"cannot read config {path}: {e.strerror}") from None


def _section(path: Path, names: tuple[str, ...]) -> dict:
    data = _read_toml(path)
    if path.name == "pyproject.toml":
        sec = data.get("tool", {}).get("dyn")
        if sec is None:
            raise ConfigError(f"{path} has no [tool.dyn] table")
        return sec
    for n in names:
        if n in data:
            return data[n]
    raise ConfigError(f"{path} has no [dyn] table: start it with a line `[dyn]`")


def load_config(
    config_path: str | os.PathLike | None = None,
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Find and merge the configuration; ``overrides`` are flag values (None = not given)."""
    env = os.environ if env is None else env
    cwd = Path(cwd) if cwd else Path.cwd()
    if config_path:
        path = Path(config_path)
        if not path.is_absolute():
            path = cwd / path
        if not path.is_file():
            raise ConfigError(f"config file {config_path} does not exist")
        raw = _section(path, ("dyn",))
    else:
        path, raw = find_config(cwd)
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}  # where each value came from, for the messages
    for key, value in raw.items():
        if key not in KEYS:
            raise ConfigError(
                f"unknown config key {key!r} in {path}: known keys are {', '.join(sorted(KEYS))}"
            )
        if isinstance(value, str):
            value = expand(value, key, env)
        values[key], sources[key] = _coerce(key, value, str(path)), str(path)
    for key in KEYS:
        ev = env.get(f"DYN_{key.upper()}")
        if ev is not None:
            source = f"DYN_{key.upper()}"
            values[key], sources[key] = _coerce(key, expand(ev, key, env), source), source
    for key, value in (overrides or {}).items():
        if value is not None:
            if key not in KEYS:
                raise ConfigError(f"unknown config key {key!r}")
            source = f"--{key.replace('_', '-')}"
            values[key], sources[key] = _coerce(key, value, source), source
    root = path.parent if path else cwd
    cfg = Config(path=path, root=root, **values)
    _validate(cfg, sources)
    return cfg


def _is_url(text: str) -> bool:
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises on a port out of range
    except ValueError:  # "Invalid IPv6 URL", "Port out of range"
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _validate(cfg: Config, sources: Mapping[str, str] | None = None) -> None:
    """Values in range, or one line naming the key, where it came from and what to give."""
    sources = sources or {}

    def bad(key: str, text: str) -> ConfigError:
        where = f" (from {sources[key]})" if key in sources else ""
        return ConfigError(f"{key}{where} {text}")

    if cfg.lock_lease_seconds <= 0:
        raise bad("lock_lease_seconds", f"must be positive, got {cfg.lock_lease_seconds}")
    if cfg.lock_timeout < 0:
        raise bad("lock_timeout", f"must be zero or positive, got {cfg.lock_timeout}")
    for k in ("workers", "segments", "page_size", "processes"):
        v = getattr(cfg, k)
        if v is not None and v < 1:
            raise bad(k, f"must be at least 1, got {v}")
    for k in ("max_wcu", "max_rcu"):
        v = getattr(cfg, k)
        if v is not None and v <= 0:
            raise bad(k, f"must be positive, got {v}")
    if cfg.backup not in ("none", "pitr", "on-demand"):
        raise bad("backup", f"must be none, pitr or on-demand, got {cfg.backup!r}")
    if cfg.max_errors < 0:
        raise bad("max_errors", "is how many failing items a step may skip (--max-errors): give 0 or more, "
                                f"got {cfg.max_errors}")
    for k in ("read_price", "write_price"):
        if getattr(cfg, k) < 0:
            raise bad(k, f"is USD per million request units: give 0 or more, got {getattr(cfg, k)}")
    if cfg.retry_mode not in ("standard", "adaptive", "legacy"):
        raise bad("retry_mode", f"must be standard, adaptive or legacy, got {cfg.retry_mode!r}")
    if cfg.write_mode not in ("batch", "item"):
        raise bad("write_mode", f"must be batch or item, got {cfg.write_mode!r}")
    if cfg.dask_scheduler is not None and cfg.processes not in (None, 1):
        raise bad("processes", f"= {cfg.processes} and dask_scheduler"
                  f"{' (from ' + sources['dask_scheduler'] + ')' if 'dask_scheduler' in sources else ''} are two "
                  "ways to run the segments: set one (on a Dask cluster, the cluster's workers and threads are "
                  "the processes)")
    if cfg.dask_scheduler is not None and not cfg.dask_scheduler.strip():
        raise bad("dask_scheduler", "is empty: give the scheduler's address, e.g. tcp://10.0.0.5:8786")
    if not str(cfg.meta_pk).strip():
        raise bad("meta_pk", "is empty: it names the partition of dyn's own records; leave it unset for the "
                             "default \"_dyn\"")
    if cfg.endpoint_url and not _is_url(cfg.endpoint_url):
        raise bad("endpoint_url", f"must be a URL such as http://localhost:8000, got {cfg.endpoint_url!r}")
    if cfg.checkpoint_interval <= 0:
        raise bad("checkpoint_interval", f"must be positive (seconds), got {cfg.checkpoint_interval}")
    if cfg.table is not None and not re.fullmatch(r"[A-Za-z0-9_.-]{3,255}", cfg.table):
        raise ConfigError(
            f"table name {cfg.table!r}{' (from ' + sources['table'] + ')' if 'table' in sources else ''} is not a "
            "valid DynamoDB table name (3-255 characters: letters, digits, _ . -)"
        )


def with_overrides(cfg: Config, **kw: Any) -> Config:
    """A copy with some values replaced (flags given after loading)."""
    kw = {k: v for k, v in kw.items() if v is not None}
    new = replace(cfg, **kw)
    _validate(new)
    return new
