"""memberships live in their organization's item collection

Situation 3: a new entity into an existing item collection. A Membership takes its
Organization's partition key (ORG#<org>), so one Query fetches the organization and its
members. Existing items do not change.

Revision ID: c3d4e5f6a7b8
Revises: a1b2c3d4e5f6
"""
from boto3.dynamodb.conditions import Attr

revision = "c3d4e5f6a7b8"
down_revision = "a1b2c3d4e5f6"
branch_labels = ("members",)
depends_on = None

MEMBERS = [("acme", "alice", "owner"), ("acme", "bob", "member"), ("initech", "carol", "owner")]


def upgrade(op):
    op.put_items(
        {"PK": f"ORG#{org}", "SK": f"MEMBER#{user}", "Type": "Membership", "User": user, "Role": role}
        for org, user, role in MEMBERS
    )


def downgrade(op):
    op.delete_items(filter=Attr("Type").eq("Membership"))
