"""boto3 client factory and the few DynamoDB facts every layer needs.

Region, endpoint and credentials come from boto3's own chain (AWS_PROFILE, AWS_REGION,
AWS_ENDPOINT_URL_DYNAMODB, ...); explicit values from config or flags win.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import Any

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import (
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    InvalidRegionError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
)

from .errors import AwsError, TableError, UsageError

THROTTLE_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "InternalServerError",
        "ServiceUnavailable",
        "LimitExceededException",
    }
)


def make_client(
    *,
    region: str | None = None,
    endpoint_url: str | None = None,
    profile: str | None = None,
    max_pool_connections: int = 32,
    retry_mode: str = "standard",
    max_attempts: int = 10,
    connect_timeout: float = 5,
    read_timeout: float = 30,
    engine: bool = False,
) -> Any:
    """A DynamoDB client whose pool fits the backfill's concurrency and whose retries back off.

    ``engine=True``: the client of the backfill engine's data calls, with botocore's own
    retries off -- the engine retries each call on its own thread with a short jittered
    backoff (botocore's standard mode waits ~0.5 s before its first retry; its adaptive mode
    slows every thread of the client when one call is throttled)."""
    retries = {"mode": retry_mode, "total_max_attempts": 1} if engine else {
        "mode": retry_mode, "max_attempts": max_attempts}
    cfg = BotoConfig(
        retries=retries,
        max_pool_connections=max_pool_connections,
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        # the engine builds every request itself: botocore's checking of them is pure overhead
        parameter_validation=not engine,
    )
    # one session per profile and AWS environment: a second client (and a worker process's,
    # after fork) reuses its loaded service model instead of parsing it again (~70 ms of CPU)
    key = (profile, tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("AWS_"))))
    with _sessions_lock:
        session = _sessions.get(key)
        if session is None:
            session = _sessions[key] = (boto3.session.Session(profile_name=profile) if profile
                                        else boto3.session.Session())
        # AWS_REGION is what the SDKs document; older botocore only reads AWS_DEFAULT_REGION
        region = region or session.region_name or os.environ.get("AWS_REGION") or None
        try:
            return session.client(
                "dynamodb", region_name=region, endpoint_url=endpoint_url or None, config=cfg
            )
        except NoRegionError:
            raise AwsError(
                "no AWS region configured: set AWS_REGION, `region` in dyn.toml, or pass --region"
            ) from None
        except InvalidRegionError as e:
            raise UsageError(f"{e} (--region, region in dyn.toml, or AWS_REGION)") from None
        except ValueError as e:  # botocore: "Invalid endpoint: ..." (e.g. from AWS_ENDPOINT_URL_DYNAMODB)
            raise UsageError(f"{e}: give a URL such as http://localhost:8000 (--endpoint-url, endpoint_url in "
                             "dyn.toml, or AWS_ENDPOINT_URL_DYNAMODB)") from None


_sessions: dict[tuple, Any] = {}
_sessions_lock = threading.Lock()


@dataclass(frozen=True)
class ClientSpec:
    """How to make the backfill engine's client again in another process (clients cannot be
    shared across processes): a picklable recipe, called as ``spec()``."""

    region: str | None = None
    endpoint_url: str | None = None
    profile: str | None = None
    retry_mode: str = "standard"
    max_pool_connections: int = 36

    @classmethod
    def of(cls, client: Any) -> "ClientSpec":
        """The recipe of an existing client (its credentials come from boto3's chain again)."""
        meta = client.meta
        return cls(region=meta.region_name, endpoint_url=meta.endpoint_url,
                   retry_mode=(meta.config.retries or {}).get("mode", "standard"),
                   max_pool_connections=meta.config.max_pool_connections or 36)

    def __call__(self) -> Any:
        return make_client(region=self.region, endpoint_url=self.endpoint_url, profile=self.profile,
                           retry_mode=self.retry_mode, max_pool_connections=self.max_pool_connections,
                           engine=True)


@dataclass(frozen=True)
class TableInfo:
    """What DescribeTable says that the engine needs: key names and types, billing, size."""

    name: str
    pk_name: str
    pk_type: str
    sk_name: str | None = None
    sk_type: str | None = None
    billing_mode: str = "PAY_PER_REQUEST"
    item_count: int = 0
    size_bytes: int = 0
    status: str = "ACTIVE"
    gsis: dict[str, dict] = field(default_factory=dict)
    provisioned: dict[str, int] | None = None
    lsis: dict[str, dict] = field(default_factory=dict)
    attribute_types: dict[str, str] = field(default_factory=dict)  # AttributeDefinitions: name -> S | N | B

    @property
    def key_names(self) -> tuple[str, ...]:
        return (self.pk_name,) if self.sk_name is None else (self.pk_name, self.sk_name)

    def index_keys(self) -> dict[str, str]:
        """Each attribute in an index's key schema (global or local) -> that index's name."""
        out: dict[str, str] = {}
        for name, index in (*self.gsis.items(), *self.lsis.items()):
            for k in index.get("KeySchema", ()):
                out.setdefault(k["AttributeName"], name)
        return out

    def index_key_types(self) -> dict[str, tuple[str, str]]:
        """Each attribute an index keys on -> (that index's name, the type it must have)."""
        return {attr: (index, self.attribute_types[attr]) for attr, index in self.index_keys().items()
                if attr in self.attribute_types}

    def key_of(self, item: dict) -> dict:
        """The primary key of an item (in whatever representation the item is in)."""
        return {k: item[k] for k in self.key_names}


def table_info_from_description(desc: dict) -> TableInfo:
    types = {a["AttributeName"]: a["AttributeType"] for a in desc.get("AttributeDefinitions", [])}
    pk = sk = None
    for k in desc["KeySchema"]:
        if k["KeyType"] == "HASH":
            pk = k["AttributeName"]
        else:
            sk = k["AttributeName"]
    billing = (desc.get("BillingModeSummary") or {}).get("BillingMode")
    pt = desc.get("ProvisionedThroughput") or {}
    if billing is None:
        billing = "PROVISIONED" if pt.get("WriteCapacityUnits") else "PAY_PER_REQUEST"
    provisioned = None
    if billing == "PROVISIONED":
        provisioned = {
            "ReadCapacityUnits": int(pt.get("ReadCapacityUnits") or 1),
            "WriteCapacityUnits": int(pt.get("WriteCapacityUnits") or 1),
        }
    return TableInfo(
        name=desc["TableName"],
        pk_name=pk,
        pk_type=types.get(pk, "S"),
        sk_name=sk,
        sk_type=types.get(sk) if sk else None,
        billing_mode=billing,
        item_count=int(desc.get("ItemCount") or 0),
        size_bytes=int(desc.get("TableSizeBytes") or 0),
        status=desc.get("TableStatus", "ACTIVE"),
        gsis={g["IndexName"]: g for g in desc.get("GlobalSecondaryIndexes", [])},
        provisioned=provisioned,
        lsis={i["IndexName"]: i for i in desc.get("LocalSecondaryIndexes", [])},
        attribute_types=types,
    )


def describe_table(client: Any, table_name: str) -> TableInfo:
    """DescribeTable, with AWS failures turned into one actionable line."""
    return table_info_from_description(describe_table_raw(client, table_name))


def describe_table_raw(client: Any, table_name: str) -> dict:
    """DescribeTable's ``Table``, with AWS failures turned into one actionable line."""
    try:
        return client.describe_table(TableName=table_name)["Table"]
    except ClientError as e:
        if error_code(e) == "ResourceNotFoundException":
            raise TableError(
                f"table {table_name!r} does not exist at {endpoint_of(client)}: "
                "create it first, or check --table / DYN_TABLE and the region/endpoint"
            ) from None
        raise translate(e, table_name, client) from None
    except Exception as e:  # connection, credentials
        raise translate(e, table_name, client) from None


def describe_ttl(client: Any, table_name: str) -> dict:
    """DescribeTimeToLive's ``TimeToLiveDescription``, failures as one line."""
    try:
        return client.describe_time_to_live(TableName=table_name).get("TimeToLiveDescription") or {}
    except Exception as e:
        raise translate(e, table_name, client) from None


def error_code(e: BaseException) -> str:
    if isinstance(e, ClientError):
        return e.response.get("Error", {}).get("Code", "")
    return ""


def endpoint_of(client: Any) -> str:
    return f"{client.meta.endpoint_url} ({client.meta.region_name})"


def translate(e: BaseException, table_name: str, client: Any) -> AwsError:
    """Map a boto/botocore failure to a one-line AwsError naming what to check."""
    where = endpoint_of(client)
    if isinstance(e, (NoCredentialsError, PartialCredentialsError)):
        return AwsError(
            f"no AWS credentials found for {where}: set AWS_PROFILE or AWS_ACCESS_KEY_ID/"
            "AWS_SECRET_ACCESS_KEY"
        )
    if isinstance(e, (EndpointConnectionError, ConnectTimeoutError)):
        return AwsError(
            f"cannot reach DynamoDB at {where}: check the endpoint (--endpoint-url, endpoint_url in dyn.toml, "
            "AWS_ENDPOINT_URL_DYNAMODB) and the region (--region, region, AWS_REGION), and that the server is running"
        )
    code = error_code(e)
    if code in ("AccessDeniedException", "UnrecognizedClientException"):
        return AwsError(
            f"access denied on table {table_name!r} at {where} ({code}): check the credentials "
            "and the IAM policy (`dyn iam-policy` prints one)"
        )
    if code == "ResourceNotFoundException":
        return AwsError(f"table {table_name!r} not found at {where}")
    msg = str(e).splitlines()[0] if str(e) else type(e).__name__
    return AwsError(f"DynamoDB call failed on table {table_name!r} at {where}: {msg}")
