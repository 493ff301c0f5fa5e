"""The example's SocialNetwork table: create it, seed it, and query the new access patterns.

    python socialnetwork.py create [--reset]   # the table (PK/SK), as it was before any migration
    python socialnetwork.py seed [--users N]   # users, posts, organizations, repos, issues, PRs
    python socialnetwork.py query              # the access patterns the migrations delivered

The endpoint comes from AWS_ENDPOINT_URL_DYNAMODB (scripts/demo.sh sets it), the region from
AWS_REGION or AWS_DEFAULT_REGION (as dyn reads them); the table name from SOCIAL_TABLE
(default SocialNetwork), as in dyn.toml.
"""
from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlparse

import boto3
from boto3.dynamodb.conditions import Key

TABLE = os.environ.get("SOCIAL_TABLE", "SocialNetwork")


def _region() -> str | None:
    # boto3 reads AWS_DEFAULT_REGION only; the docs (and dyn) say AWS_REGION
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None


def resource():
    return boto3.resource("dynamodb", region_name=_region())


def client():
    return boto3.client("dynamodb", region_name=_region())


def wait_for_endpoint(timeout: float = 60.0) -> None:
    """A DynamoDB Local started a moment ago (`... &`) takes a few seconds to listen."""
    url = os.environ.get("AWS_ENDPOINT_URL_DYNAMODB")
    if not url:
        return
    u = urlparse(url)
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((u.hostname, u.port or 80), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit(f"error: nothing answers at {url}: start DynamoDB Local first") from None
            time.sleep(0.25)


def create_table(client, name: str = TABLE, *, reset: bool = False) -> None:
    """The table before any migration: PK/SK only, no secondary index."""
    if reset:
        try:
            client.delete_table(TableName=name)
            client.get_waiter("table_not_exists").wait(TableName=name, WaiterConfig={"Delay": 1})
        except client.exceptions.ResourceNotFoundException:
            pass
    client.create_table(
        TableName=name,
        AttributeDefinitions=[{"AttributeName": "PK", "AttributeType": "S"},
                              {"AttributeName": "SK", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "PK", "KeyType": "HASH"},
                   {"AttributeName": "SK", "KeyType": "RANGE"}],
        BillingMode="PAY_PER_REQUEST",
    )
    client.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 1})


def sample_items(users: int = 20, posts_per_user: int = 3) -> list[dict]:
    """Deterministic seed data; the first users are alice, bob and carol, the first posts p1, p2."""
    names = ["alice", "bob", "carol"] + [f"user{i:04d}" for i in range(3, users)]
    items: list[dict] = []
    n = 0
    for u in names[:users]:
        items.append({"PK": f"USER#{u}", "SK": f"USER#{u}", "Type": "User", "Username": u})
        for _ in range(posts_per_user):
            n += 1
            items.append({"PK": f"USER#{u}", "SK": f"POST#p{n}", "Type": "Post", "PostId": f"p{n}",
                          "Author": u, "Title": f"Post number {n} by {u}"})
    for org in ("acme", "initech"):
        items.append({"PK": f"ORG#{org}", "SK": f"ORG#{org}", "Type": "Organization", "Name": org.title()})
    for repo in ("acme/rockets", "acme/anvils"):
        items.append({"PK": f"REPO#{repo}", "SK": f"REPO#{repo}", "Type": "Repo", "Repo": repo})
        for i in range(1, 4):
            items.append({"PK": f"ISSUE#{repo}#{i}", "SK": f"ISSUE#{repo}#{i}", "Type": "Issue",
                          "Repo": repo, "Number": i, "Title": f"Issue {i} of {repo}"})
        for i in range(4, 6):
            items.append({"PK": f"PR#{repo}#{i}", "SK": f"PR#{repo}#{i}", "Type": "PullRequest",
                          "Repo": repo, "Number": i, "Title": f"Pull request {i} of {repo}"})
    return items


def seed(name: str = TABLE, users: int = 20, posts_per_user: int = 3, dynamodb=None) -> int:
    items = sample_items(users, posts_per_user)
    table = (dynamodb or resource()).Table(name)
    chunks = [items[i:i + 500] for i in range(0, len(items), 500)]

    def write(chunk):
        with table.batch_writer() as w:
            for it in chunk:
                w.put_item(Item=it)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(write, chunks))
    return len(items)


def post_with_comments(table, post_id: str) -> list[dict]:
    """Situation 4: a post and its comments, one Query on GSI1."""
    return table.query(IndexName="GSI1", KeyConditionExpression=Key("GSI1PK").eq(f"POST#{post_id}"))["Items"]


def repo_with_issues_and_prs(table, repo: str) -> list[dict]:
    """Situation 5: a repository with its issues and pull requests, one Query on GSI2."""
    return table.query(IndexName="GSI2", KeyConditionExpression=Key("GSI2PK").eq(f"REPO#{repo}"))["Items"]


def org_with_members(table, org: str) -> list[dict]:
    """Situation 3: an organization and its memberships, one Query on the base table."""
    return table.query(KeyConditionExpression=Key("PK").eq(f"ORG#{org}"))["Items"]


def projects_of(table, org: str) -> list[dict]:
    """Situation 2: the projects of an organization, their own item collection."""
    return table.query(KeyConditionExpression=Key("PK").eq(f"PROJECTS#{org}"))["Items"]


def run_queries(name: str = TABLE, out=sys.stdout, dynamodb=None) -> dict[str, list[dict]]:
    table = (dynamodb or resource()).Table(name)
    results = {
        "post p1 and its comments (GSI1)": post_with_comments(table, "p1"),
        "repo acme/rockets with its issues and pull requests (GSI2)": repo_with_issues_and_prs(table, "acme/rockets"),
        "organization acme and its members": org_with_members(table, "acme"),
        "projects of acme": projects_of(table, "acme"),
    }
    for title, items in results.items():
        print(f"\n{title}: {len(items)} item(s)", file=out)
        for it in items:
            label = it.get("Title") or it.get("Text") or it.get("Name") or it.get("User") or it.get("Repo")
            print(f"  {it['Type']:<12} {it['SK']:<40} {label}", file=out)
    return results


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("create")
    c.add_argument("--reset", action="store_true", help="drop the table first")
    s = sub.add_parser("seed")
    s.add_argument("--users", type=int, default=20)
    sub.add_parser("query")
    args = p.parse_args(argv)
    if _region() is None and not boto3.session.Session().region_name:
        print("error: no AWS region: export AWS_REGION=us-east-1 (or your region)", file=sys.stderr)
        return 2
    wait_for_endpoint()
    if args.cmd == "create":
        c = client()
        try:
            create_table(c, reset=args.reset)
        except c.exceptions.ResourceInUseException:
            print(f"error: table {TABLE} already exists (an earlier run, or scripts/demo.sh): "
                  f"`python {sys.argv[0]} create --reset` drops and recreates it", file=sys.stderr)
            return 1
        print(f"created table {TABLE}")
    elif args.cmd == "seed":
        print(f"seeded {seed(users=args.users)} items into {TABLE}")
    else:
        results = run_queries()
        if not all(results.values()):
            print("\nsome access patterns returned nothing: is the table at head? (dyn current)", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
