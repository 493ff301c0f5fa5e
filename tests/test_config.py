"""Config: file discovery, [tool.dyn], env overrides, ${VAR} expansion, errors naming the key."""
from pathlib import Path

import pytest

from dynamic.config import load_config
from dynamic.errors import ConfigError


def write(p: Path, text: str) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return p


def test_walks_up_to_dyn_toml(tmp_path):
    write(tmp_path / "dyn.toml", '[dyn]\ntable = "orders"\nscript_location = "mig"\nlock_lease_seconds = 5\n')
    sub = tmp_path / "a" / "b"
    sub.mkdir(parents=True)
    cfg = load_config(cwd=sub, env={})
    assert cfg.table == "orders"
    assert cfg.lock_lease_seconds == 5.0
    assert cfg.script_dir == tmp_path / "mig"


def test_pyproject_tool_dyn(tmp_path):
    write(tmp_path / "pyproject.toml", '[project]\nname="x"\n[tool.dyn]\ntable = "t-${STAGE:-dev}"\n')
    assert load_config(cwd=tmp_path, env={}).table == "t-dev"
    assert load_config(cwd=tmp_path, env={"STAGE": "prod"}).table == "t-prod"


def test_pyproject_without_tool_dyn_is_skipped(tmp_path):
    write(tmp_path / "pyproject.toml", '[project]\nname="x"\n')
    cfg = load_config(cwd=tmp_path, env={})
    assert cfg.table is None and cfg.path is None


def test_env_overrides_file_and_flags_override_env(tmp_path):
    write(tmp_path / "dyn.toml", '[dyn]\ntable = "file-t"\nworkers = 4\n')
    cfg = load_config(cwd=tmp_path, env={"DYN_TABLE": "env-t", "DYN_WORKERS": "8"})
    assert (cfg.table, cfg.workers) == ("env-t", 8)
    cfg = load_config(cwd=tmp_path, env={"DYN_TABLE": "env-t"}, overrides={"table": "flag-t"})
    assert cfg.table == "flag-t"


def test_lock_lease_env_override(tmp_path):
    write(tmp_path / "dyn.toml", "[dyn]\n")
    assert load_config(cwd=tmp_path, env={"DYN_LOCK_LEASE_SECONDS": "2.5"}).lock_lease_seconds == 2.5


def test_unknown_key_is_named(tmp_path):
    write(tmp_path / "dyn.toml", '[dyn]\ntabel = "x"\n')
    with pytest.raises(ConfigError, match="unknown config key 'tabel'"):
        load_config(cwd=tmp_path, env={})


def test_unset_variable_is_named(tmp_path):
    write(tmp_path / "dyn.toml", '[dyn]\ntable = "app-${STAGE}"\n')
    with pytest.raises(ConfigError, match=r"\$\{STAGE\}"):
        load_config(cwd=tmp_path, env={})


def test_bad_number_names_the_source(tmp_path):
    write(tmp_path / "dyn.toml", "[dyn]\n")
    with pytest.raises(ConfigError, match="DYN_WORKERS"):
        load_config(cwd=tmp_path, env={"DYN_WORKERS": "many"})


def test_invalid_toml_and_missing_section(tmp_path):
    write(tmp_path / "dyn.toml", "[dyn\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(cwd=tmp_path, env={})
    write(tmp_path / "dyn.toml", "[other]\n")
    with pytest.raises(ConfigError, match=r"no \[dyn\] table"):
        load_config(cwd=tmp_path, env={})


def test_explicit_config_path_must_exist(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml", env={})


def test_invalid_table_name(tmp_path):
    write(tmp_path / "dyn.toml", '[dyn]\ntable = "a b"\n')
    with pytest.raises(ConfigError, match="not a valid DynamoDB table name"):
        load_config(cwd=tmp_path, env={})
