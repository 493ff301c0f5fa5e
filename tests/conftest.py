"""Shared fixtures: DynamoDB Local for the session, moto, and table factories.

Integration tests run against DynamoDB Local (the real engine); the ``ddb`` fixture is
parametrized over both beds where a test proves something both must do.
"""
from __future__ import annotations

import os
import uuid

import boto3
import pytest

from dynamic import local

for k, v in local.LOCAL_ENV.items():
    os.environ.setdefault(k, v)
os.environ.pop("AWS_PROFILE", None)


@pytest.fixture(scope="session")
def ddb_local(dyn_local):
    """The session's DynamoDB Local (in memory, shared db), the one dynamic.testing starts."""
    return dyn_local


@pytest.fixture
def local_client(ddb_local):
    return boto3.client("dynamodb", endpoint_url=ddb_local.endpoint_url, region_name="us-east-1")


@pytest.fixture
def moto_client():
    from moto import mock_aws

    with mock_aws():
        yield boto3.client("dynamodb", region_name="us-east-1")


@pytest.fixture(params=["moto", "local"])
def any_client(request):
    """The same test on both beds: moto (fast) and DynamoDB Local (real rules)."""
    return request.getfixturevalue(f"{request.param}_client")


def create_table(client, *, sort_key: bool = True, name: str | None = None, pk="PK", sk="SK",
                 pk_type="S", provisioned: bool = False) -> str:
    """Create a fresh table (PK/SK strings by default) and wait until it is active."""
    name = name or f"t-{uuid.uuid4().hex[:12]}"
    attrs = [{"AttributeName": pk, "AttributeType": pk_type}]
    keys = [{"AttributeName": pk, "KeyType": "HASH"}]
    if sort_key:
        attrs.append({"AttributeName": sk, "AttributeType": "S"})
        keys.append({"AttributeName": sk, "KeyType": "RANGE"})
    kw = (
        {"BillingMode": "PROVISIONED",
         "ProvisionedThroughput": {"ReadCapacityUnits": 100, "WriteCapacityUnits": 100}}
        if provisioned else {"BillingMode": "PAY_PER_REQUEST"}
    )
    client.create_table(TableName=name, AttributeDefinitions=attrs, KeySchema=keys, **kw)
    client.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 0.2, "MaxAttempts": 100})
    return name


@pytest.fixture
def make_table():
    return create_table


def scan_all(client, table: str) -> list[dict]:
    """Every item, raw, sorted by key, for before/after byte-for-byte comparisons."""
    items, kw = [], {"TableName": table, "ConsistentRead": True}
    while True:
        r = client.scan(**kw)
        items.extend(r["Items"])
        if "LastEvaluatedKey" not in r:
            break
        kw["ExclusiveStartKey"] = r["LastEvaluatedKey"]
    return sorted(items, key=lambda i: repr(sorted((k, repr(v)) for k, v in i.items() if k in ("PK", "SK", "pk", "sk", "id"))))


def add_index(client, table: str, attr: str = "G", name: str = "byG") -> None:
    """A keys-only global secondary index on string attribute ``attr``, waited for until ACTIVE
    (DynamoDB Local refuses writes to an index still being created)."""
    import time

    client.update_table(
        TableName=table, AttributeDefinitions=[{"AttributeName": attr, "AttributeType": "S"}],
        GlobalSecondaryIndexUpdates=[{"Create": {"IndexName": name, "KeySchema": [
            {"AttributeName": attr, "KeyType": "HASH"}], "Projection": {"ProjectionType": "KEYS_ONLY"}}}])
    while any(g["IndexStatus"] != "ACTIVE" for g in
              client.describe_table(TableName=table)["Table"].get("GlobalSecondaryIndexes", [])):
        time.sleep(0.1)
