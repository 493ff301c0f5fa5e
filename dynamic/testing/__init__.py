"""Test your dyn migrations with pytest: fixtures and ready-made checks (see docs/testing.md).

Installed with dyn and registered as the pytest plugin ``dynamic``, so the fixtures are there
in every suite; nothing starts until a test asks for a fixture. In a test module::

    from dynamic.testing import test_single_head_revision, test_upgrade, test_up_down_consistency

Fixtures (override any of them in your conftest.py):

- ``dyn_config``: the project's Config, from the dyn.toml (or ``[tool.dyn]``) found by walking
  up from the test file's folder, or from the ``dyn_config`` ini option.
- ``dyn_backend``: ``"local"`` (DynamoDB Local, the default) or ``"moto"``; set it with
  ``--dyn-backend`` or the ``dyn_backend`` ini option, or parametrize the fixture.
- ``dyn_local``: DynamoDB Local, started once per session (or ``--dyn-endpoint-url`` to use a
  running one).
- ``dyn_client``: a DynamoDB client on the chosen backend.
- ``dyn_table_schema``: CreateTable arguments of the test table (``dyn_table_keys`` ini
  option, default ``PK:S SK:S``); ``dyn_seed_items``: items put into it when it is created
  (a ``check_data`` given its own ``seed`` starts from those alone).
- ``dyn_table``: a fresh, uniquely named table, deleted after the test.
- ``dyn_project``: a :class:`DynProject` on that table, at base.

Checks, plain functions taking a DynProject: :func:`check_single_head`,
:func:`check_upgrade`, :func:`check_up_down_consistency`, :func:`check_data`.

This module imports only the standard library and pytest at load time; dyn's own modules,
boto3 and moto are imported when a fixture or check runs.
"""
from __future__ import annotations

import uuid
import warnings
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import pytest

__all__ = [
    "DynProject",
    "DynTestWarning",
    "check_data",
    "check_single_head",
    "check_up_down_consistency",
    "check_upgrade",
    "snapshot",
    "table_schema",
    "test_single_head_revision",
    "test_up_down_consistency",
    "test_upgrade",
]

BACKENDS = ("local", "moto")
# DynamoDB Local keeps one database per access key unless -sharedDb; fixed fake credentials
# make every client of a test session see the same tables (same values as dynamic.local).
_LOCAL_CREDENTIALS = {"aws_access_key_id": "dynlocal", "aws_secret_access_key": "dynlocal",
                      "region_name": "us-east-1"}


class DynTestWarning(UserWarning):
    """A check left something out for a reason that is not a failure (a downgrade that cannot run)."""


# ---- plugin hooks ---------------------------------------------------------------------

def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("dynamic", "dyn migration tests (dynamic.testing)")
    group.addoption("--dyn-backend", choices=BACKENDS, default=None,
                    help="where dyn_table lives: local (DynamoDB Local, default) or moto")
    group.addoption("--dyn-endpoint-url", default=None,
                    help="use this running DynamoDB Local instead of starting one")
    parser.addini("dyn_backend", "dyn_table backend: local (default) or moto", default="")
    parser.addini("dyn_endpoint_url", "a running DynamoDB Local to use instead of starting one", default="")
    parser.addini("dyn_config", "dyn.toml or pyproject.toml of the project under test, relative to "
                  "the rootdir (default: found from each test file's folder)", default="")
    parser.addini("dyn_table_keys", "key schema of dyn_table: 'PK:S SK:S' (default) or 'id:S'", default="")


# ---- helpers (no I/O at import) -------------------------------------------------------

def table_schema(partition_key: tuple[str, str] = ("PK", "S"), sort_key: tuple[str, str] | None = ("SK", "S"),
                 **create_table: Any) -> dict:
    """CreateTable arguments for a table with these keys (on-demand unless ``create_table``
    says otherwise, e.g. ``BillingMode="PROVISIONED", ProvisionedThroughput={...}``)."""
    keys = [(partition_key, "HASH")] + ([(sort_key, "RANGE")] if sort_key else [])
    out: dict[str, Any] = {
        "AttributeDefinitions": [{"AttributeName": a, "AttributeType": t} for (a, t), _ in keys],
        "KeySchema": [{"AttributeName": a, "KeyType": kt} for (a, _), kt in keys],
        "BillingMode": "PAY_PER_REQUEST",
    }
    out.update(create_table)
    return out


def _parse_keys(spec: str) -> dict:
    parts = spec.split()
    if not 1 <= len(parts) <= 2 or not all(p.count(":") == 1 and all(p.split(":")) for p in parts):
        raise pytest.UsageError(f"dyn_table_keys = {spec!r}: write 'PK:S SK:S' or 'id:S' (name:type, S/N/B)")
    keys = [tuple(p.split(":")) for p in parts]
    for name, typ in keys:
        if typ not in ("S", "N", "B"):
            raise pytest.UsageError(f"dyn_table_keys: type of {name!r} must be S, N or B, got {typ!r}")
    return table_schema(keys[0], keys[1] if len(keys) > 1 else None)


def _plain(value: Any) -> Any:
    """Floats become Decimal (DynamoDB numbers), recursively, so seed data is easy to write."""
    if isinstance(value, float):
        return Decimal(str(value))
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _serialize(item: Mapping) -> dict:
    from boto3.dynamodb.types import TypeSerializer

    ser = TypeSerializer()
    return {k: ser.serialize(_plain(v)) for k, v in item.items()}


def _deserialize(item: Mapping) -> dict:
    from boto3.dynamodb.types import TypeDeserializer

    de = TypeDeserializer()
    return {k: de.deserialize(v) for k, v in item.items()}


def _put_raw(client: Any, table: str, items: Iterable[Mapping]) -> int:
    """BatchWriteItem in 25s, unprocessed items retried."""
    return _write_raw(client, table, [{"PutRequest": {"Item": _serialize(it)}} for it in items])


def _write_raw(client: Any, table: str, requests: list[dict]) -> int:
    """BatchWriteItem requests in 25s, unprocessed ones retried."""
    import time

    for i in range(0, len(requests), 25):
        pending = {table: requests[i:i + 25]}
        for attempt in range(50):
            pending = client.batch_write_item(RequestItems=pending).get("UnprocessedItems") or {}
            if not pending:
                break
            time.sleep(min(1.0, 0.02 * 2 ** attempt))
        else:
            raise RuntimeError(f"could not write items into {table}: still unprocessed after retries")
    return len(requests)


def _unique_name(base: str | None) -> str:
    import re

    prefix = re.sub(r"[^A-Za-z0-9_.-]", "-", base or "dyn")[:200] or "dyn"
    return f"{prefix}-test-{uuid.uuid4().hex[:10]}"


def _create_table(client: Any, name: str, schema: Mapping) -> None:
    client.create_table(TableName=name, **schema)
    client.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 0.2, "MaxAttempts": 300})


def _local_client(endpoint_url: str) -> Any:
    import boto3
    from botocore.config import Config as BotoConfig

    return boto3.session.Session(**_LOCAL_CREDENTIALS).client(
        "dynamodb", endpoint_url=endpoint_url,
        config=BotoConfig(retries={"mode": "standard", "max_attempts": 10}, max_pool_connections=64))


class _Endpoint:
    """A DynamoDB Local someone else runs (``--dyn-endpoint-url``)."""

    def __init__(self, endpoint_url: str):
        self.endpoint_url = endpoint_url

    def stop(self) -> None:
        pass


# ---- the project under test -----------------------------------------------------------

class DynProject:
    """A dyn project pointed at one test table: the ``dyn_project`` fixture.

    ``project`` is the :class:`dynamic.commands.Project` the commands take, so anything in the
    Python API works on it (``commands.current(p.project)``); the methods here are the few a
    migration test needs. Targets are the CLI's (``head``, ``+1``, a revision, ``label@head``).
    """

    def __init__(self, config: Any, client: Any, table_name: str):
        from dynamic import commands
        from dynamic.config import with_overrides

        # a throwaway table: no stage protection, no backups (DynamoDB Local and moto have none)
        safety = {k: v for k, v in (("protected", False), ("backup", "none")) if hasattr(config, k)}
        self.config = with_overrides(config, table=table_name, **safety)
        self.client = client
        self.table_name = table_name
        self.project = commands.Project(self.config, client=client)
        self._resource = None

    def __repr__(self) -> str:
        return f"DynProject(table={self.table_name!r}, migrations={str(self.config.script_dir)!r})"

    @property
    def graph(self):
        """The revision graph of the project's files."""
        return self.project.graph

    # -- moving the table ---------------------------------------------------------------
    def upgrade(self, target: str = "heads", **kw: Any):
        """``dyn upgrade TARGET`` (default: every head); returns the RunResult."""
        from dynamic import commands

        return commands.upgrade(self.project, target, **kw)

    def downgrade(self, target: str, **kw: Any):
        """``dyn downgrade TARGET``; returns the RunResult."""
        from dynamic import commands

        return commands.downgrade(self.project, target, **kw)

    def stamp(self, target: str, **kw: Any):
        """``dyn stamp TARGET``: record heads without running anything."""
        from dynamic import commands

        return commands.stamp(self.project, target, **kw)

    def current(self) -> tuple[str, ...]:
        """The revisions the table records as its heads (``()`` is base)."""
        return tuple(self.project.store.read().heads)

    def applied(self) -> set[str]:
        """Every revision applied to the table."""
        return self.graph.closure(self.current())

    def upgrade_before(self, revision: str) -> None:
        """Bring the table to just below ``revision``: everything it needs applied, it not."""
        g = self.graph
        rid = g.resolve_id(revision)
        if rid in self.applied():
            raise AssertionError(f"revision {rid} is already applied to {self.table_name}: "
                                 "upgrade_before needs a table below it")
        for h in g.heads_of(g.closure([rid]) - {rid}):
            self.upgrade(h)

    def revert(self, revision: str):
        """Downgrade so that ``revision`` is no longer applied, removing as few other revisions
        as a single downgrade target allows (on a branch, a sibling may have to go too)."""
        rid = self.graph.resolve_id(revision)
        target = self._revert_target(rid)
        return self.downgrade(target)

    def _revert_target(self, rid: str) -> str:
        from dynamic.errors import DynError

        g = self.graph
        heads = self.current()
        applied = g.closure(heads)
        if rid not in applied:
            raise AssertionError(f"revision {rid} is not applied to {self.table_name}")
        rev = g.get(rid)
        candidates = list(dict.fromkeys([*rev.down_revision, *g.heads_of(applied - {rid}),
                                         *sorted(g.closure(rev.down_revision))]))
        best: tuple[int, str] | None = None
        for c in candidates:
            try:
                removed = {s.revision.revision for s in g.downgrade_plan(heads, (c,))}
            except DynError:
                continue
            if rid in removed and (best is None or len(removed) < best[0]):
                best = (len(removed), c)
        return best[1] if best else "base"

    # -- reading and writing items ------------------------------------------------------
    def clear_items(self) -> int:
        """Delete every application item (dyn's own records stay); returns how many."""
        keys = self.project.table.key_names
        raw_keys: list[dict] = []
        kw: dict[str, Any] = {"TableName": self.table_name, "ConsistentRead": True}
        while True:
            r = self.client.scan(**kw)
            raw_keys += [{k: i[k] for k in keys} for i in r["Items"] if not self.is_meta(i)]
            if "LastEvaluatedKey" not in r:
                break
            kw["ExclusiveStartKey"] = r["LastEvaluatedKey"]
        _write_raw(self.client, self.table_name, [{"DeleteRequest": {"Key": k}} for k in raw_keys])
        return len(raw_keys)

    def put_items(self, items: Iterable[Mapping]) -> int:
        """Put items given as plain Python values (floats are turned into Decimal)."""
        return _put_raw(self.client, self.table_name, items)

    def is_meta(self, raw_item: Mapping) -> bool:
        """Whether a raw (client-format) item is one of dyn's own records."""
        return bool(self.project.store.layout.is_meta(raw_item))

    def items(self, filter: Any = None) -> list[dict]:
        """Every application item (dyn's own records left out) as plain Python values, sorted
        by key; ``filter`` is a boto3 condition such as ``Attr("Type").eq("Post")``."""
        kw: dict[str, Any] = {"TableName": self.table_name, "ConsistentRead": True}
        if filter is not None:
            from boto3.dynamodb.conditions import ConditionExpressionBuilder

            expr = ConditionExpressionBuilder().build_expression(filter)
            kw["FilterExpression"] = expr.condition_expression
            kw["ExpressionAttributeNames"] = expr.attribute_name_placeholders
            if expr.attribute_value_placeholders:
                kw["ExpressionAttributeValues"] = _serialize(expr.attribute_value_placeholders)
        out = []
        while True:
            r = self.client.scan(**kw)
            out.extend(_deserialize(i) for i in r["Items"] if not self.is_meta(i))
            if "LastEvaluatedKey" not in r:
                break
            kw["ExclusiveStartKey"] = r["LastEvaluatedKey"]
        keys = self.project.table.key_names
        return sorted(out, key=lambda i: tuple(str(i.get(k)) for k in keys))

    def get_item(self, **key: Any) -> dict | None:
        """The item with this key (``get_item(PK="USER#alice", SK="USER#alice")``), or None."""
        r = self.client.get_item(TableName=self.table_name, Key=_serialize(key), ConsistentRead=True)
        return _deserialize(r["Item"]) if "Item" in r else None

    def describe(self) -> dict:
        """DescribeTable's ``Table``."""
        return self.client.describe_table(TableName=self.table_name)["Table"]

    def index_names(self) -> list[str]:
        """The table's global secondary indexes."""
        return sorted(g["IndexName"] for g in self.describe().get("GlobalSecondaryIndexes", []))

    @property
    def resource(self) -> Any:
        """A boto3 DynamoDB service resource on the same endpoint, region and credentials.

        It has a client of its own: a resource installs its (de)serializing handlers on its
        client, which must not happen to the raw client dyn uses."""
        if self._resource is None:
            import boto3

            creds = getattr(getattr(self.client, "_request_signer", None), "_credentials", None)
            keys = ({"aws_access_key_id": creds.access_key, "aws_secret_access_key": creds.secret_key,
                     "aws_session_token": creds.token} if creds is not None else
                    {k: v for k, v in _LOCAL_CREDENTIALS.items() if k != "region_name"})
            self._resource = boto3.session.Session(**keys).resource(
                "dynamodb", region_name=self.client.meta.region_name,
                endpoint_url=self.client.meta.endpoint_url)
        return self._resource

    @property
    def table(self) -> Any:
        """A boto3 ``Table`` resource for the test table (``.query(IndexName=..., ...)``)."""
        return self.resource.Table(self.table_name)


def snapshot(project: DynProject) -> dict:
    """What a downgrade must restore: the application items and the indexes' definitions."""
    gsis = {
        g["IndexName"]: (g["KeySchema"], g.get("Projection"))
        for g in project.describe().get("GlobalSecondaryIndexes", [])
    }
    return {"items": project.items(), "indexes": gsis}


def _diff(before: dict, after: dict, limit: int = 5) -> str:
    lines = []
    if before["indexes"] != after["indexes"]:
        lines.append(f"indexes {sorted(before['indexes'])} became {sorted(after['indexes'])}")
    b = {repr(sorted(i.items())): i for i in before["items"]}
    a = {repr(sorted(i.items())): i for i in after["items"]}
    gone = [v for k, v in b.items() if k not in a]
    new = [v for k, v in a.items() if k not in b]
    if gone:
        lines.append(f"{len(gone)} item(s) no longer as they were, e.g. {gone[:limit]}")
    if new:
        lines.append(f"{len(new)} item(s) new or changed, e.g. {new[:limit]}")
    return "; ".join(lines)


# ---- checks ---------------------------------------------------------------------------

def check_single_head(project: DynProject) -> None:
    """The revision files have exactly one head (else two branches wait for `dyn merge`)."""
    heads = project.graph.heads
    assert len(heads) == 1, (
        f"expected a single head, found {len(heads)}: {', '.join(heads) or 'none'}; "
        "join them with `dyn merge -m MSG heads`")


def check_upgrade(project: DynProject) -> None:
    """From base, `upgrade heads` applies every revision and leaves the table at head."""
    g = project.graph
    assert project.current() == (), f"{project.table_name} is not at base: {project.current()}"
    result = project.upgrade("heads")
    applied = [s.revision for s in result.steps]
    assert sorted(applied) == sorted(g.revisions), f"applied {applied}, expected every revision"
    assert set(project.current()) == set(g.heads), (
        f"after upgrading to heads the table records {project.current()}, expected {g.heads}")


_HOW = {
    "irreversible =": "it is declared irreversible (irreversible = ...)",
    "op.irreversible()": "its downgrade calls op.irreversible()",
    "NotImplementedError": "its downgrade raises NotImplementedError",
}


def _one_way(project: DynProject, rid: str) -> str | None:
    """Why revision ``rid`` cannot be downgraded, worded by how it says so; None if it can."""
    from dynamic.runner import irreversible_how

    how = irreversible_how(project.project.scripts.get(rid))
    return f"{_HOW.get(how[0], how[0])}: {how[1]}" if how else None


def check_up_down_consistency(project: DynProject, *, compare_state: bool = True) -> list[str]:
    """Walk from base to the heads one revision at a time: upgrade it, downgrade it, upgrade
    it again. With ``compare_state``, the downgrade must restore the items and indexes as they
    were before the upgrade, and the second upgrade must give what the first one gave.

    A revision that cannot be downgraded (``op.irreversible(...)``, ``irreversible = ...``, or
    ``NotImplementedError`` in its downgrade) is upgraded only, with a DynTestWarning saying
    why; the walk goes on with the revisions above it, each checked down to it.
    Returns the revisions walked (up, down and up again).
    """
    from dynamic.errors import Irreversible

    g = project.graph
    assert project.current() == (), f"{project.table_name} is not at base: {project.current()}"
    walked: list[str] = []
    for step in g.upgrade_plan((), g.heads):
        rid = step.revision.revision
        before = snapshot(project) if compare_state else None
        project.upgrade(rid)
        assert set(project.current()) == set(step.heads_after), (
            f"after upgrading {rid} the table records {project.current()}, expected {step.heads_after}")
        one_way = _one_way(project, rid)
        if one_way:
            warnings.warn(DynTestWarning(
                f"revision {rid} was upgraded but not downgraded: {one_way}; the walk goes on above it"),
                stacklevel=2)
            continue
        after_up = snapshot(project) if compare_state else None
        try:
            result = project.revert(rid)
        except Irreversible as e:
            # on a branch, taking rid out may take a sibling above an irreversible revision too
            warnings.warn(DynTestWarning(f"revision {rid} was upgraded but not downgraded: {e}"), stacklevel=2)
            continue
        assert rid not in project.applied(), f"downgrading {rid} left it applied: {project.current()}"
        reverted = [s.revision for s in result.steps]
        if compare_state and reverted == [rid]:
            now = snapshot(project)
            assert now == before, f"downgrade of {rid} did not restore the table: {_diff(before, now)}"
        for h in step.heads_after:
            if h not in project.applied():
                project.upgrade(h)
        assert set(project.current()) == set(step.heads_after), (
            f"re-upgrading {rid} left the table at {project.current()}, expected {step.heads_after}")
        if compare_state:
            now = snapshot(project)
            assert now == after_up, f"upgrading {rid} a second time gave another table: {_diff(after_up, now)}"
        walked.append(rid)
    return walked


def check_data(project: DynProject, revision: str, *, seed: Iterable[Mapping] | None = None,
               verify: Callable[[DynProject], Any], verify_downgrade: Callable[[DynProject], Any] | None = None):
    """Bring the table just below ``revision``, put the ``seed`` items, upgrade to it, and
    ``verify(project)``; with ``verify_downgrade``, downgrade it again and
    ``verify_downgrade(project)``. Returns the upgrade's RunResult.

    With ``seed`` given (even ``[]``), the check starts from those items alone: what the table
    held before (``dyn_seed_items`` included) is deleted first, so a data check brings its
    own starting items whatever the fixtures put in. Without it, the table's items are kept."""
    if seed is not None:
        project.clear_items()
    project.upgrade_before(revision)
    project.put_items(list(seed or ()))
    result = project.upgrade(project.graph.resolve_id(revision))
    verify(project)
    if verify_downgrade is not None:
        project.revert(revision)
        verify_downgrade(project)
    return result


# ---- ready-made tests: `from dynamic.testing import test_upgrade` ---------------------

def test_single_head_revision(dyn_project: DynProject) -> None:
    """The migrations have exactly one head."""
    check_single_head(dyn_project)


def test_upgrade(dyn_project: DynProject) -> None:
    """base → head works on a fresh table."""
    check_upgrade(dyn_project)


def test_up_down_consistency(dyn_project: DynProject) -> None:
    """Every revision upgrades, downgrades and upgrades again, one at a time."""
    check_up_down_consistency(dyn_project)


# ---- fixtures -------------------------------------------------------------------------

@pytest.fixture(scope="session")
def dyn_local(request: pytest.FixtureRequest):
    """DynamoDB Local for the session (in memory), or the one ``--dyn-endpoint-url`` names."""
    url = request.config.getoption("dyn_endpoint_url") or request.config.getini("dyn_endpoint_url")
    if url:
        yield _Endpoint(url)
        return
    from dynamic import local

    server = local.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def dyn_backend(request: pytest.FixtureRequest) -> str:
    """``"local"`` or ``"moto"``: ``--dyn-backend``, else the ``dyn_backend`` ini option, else local."""
    value = request.config.getoption("dyn_backend") or request.config.getini("dyn_backend") or "local"
    if value not in BACKENDS:
        raise pytest.UsageError(f"dyn_backend = {value!r}: use one of {', '.join(BACKENDS)}")
    return value


@pytest.fixture
def dyn_client(request: pytest.FixtureRequest, dyn_backend: str):
    """A DynamoDB client on the chosen backend (moto's mock is active while the test runs)."""
    if dyn_backend == "moto":
        import boto3
        from botocore.config import Config as BotoConfig
        from moto import mock_aws

        with mock_aws():
            # an AWS_ENDPOINT_URL_DYNAMODB in the environment would route around the mock
            yield boto3.session.Session(**_LOCAL_CREDENTIALS).client(
                "dynamodb", config=BotoConfig(ignore_configured_endpoint_urls=True))
        return
    yield _local_client(request.getfixturevalue("dyn_local").endpoint_url)


@pytest.fixture
def dyn_config(request: pytest.FixtureRequest):
    """The project's configuration (its ``table`` is replaced by ``dyn_table``'s)."""
    from dynamic.config import load_config

    ini = request.config.getini("dyn_config")
    if ini:
        return load_config(Path(request.config.rootpath) / ini)
    return load_config(cwd=Path(request.path).parent)


@pytest.fixture
def dyn_table_schema(request: pytest.FixtureRequest) -> dict:
    """CreateTable arguments (without TableName) for ``dyn_table``."""
    spec = request.config.getini("dyn_table_keys")
    return _parse_keys(spec) if spec else table_schema()


@pytest.fixture
def dyn_seed_items() -> list[dict]:
    """Items (plain Python values) put into ``dyn_table`` when it is created; none by default."""
    return []


@pytest.fixture
def dyn_table(dyn_client: Any, dyn_config: Any, dyn_table_schema: dict, dyn_seed_items: Sequence[Mapping]):
    """A fresh table named after the configured one plus a random suffix; deleted afterwards."""
    name = _unique_name(dyn_config.table)
    _create_table(dyn_client, name, dyn_table_schema)
    if dyn_seed_items:
        _put_raw(dyn_client, name, dyn_seed_items)
    yield name
    try:
        dyn_client.delete_table(TableName=name)
    except Exception:  # the backend may already be gone (moto's mock ended, Local stopped)
        pass


@pytest.fixture
def dyn_project(dyn_config: Any, dyn_client: Any, dyn_table: str, dyn_backend: str) -> DynProject:
    """The project's migrations pointed at ``dyn_table`` (at base)."""
    if dyn_backend == "moto":
        from dynamic.config import with_overrides

        # moto's in-memory tables are not safe for a parallel scan writing as it goes, and moto
        # does not evaluate the conditions of PartiQL statements: one UpdateItem at a time
        dyn_config = with_overrides(dyn_config, workers=1, processes=1, write_mode="item")
    return DynProject(dyn_config, dyn_client, dyn_table)
