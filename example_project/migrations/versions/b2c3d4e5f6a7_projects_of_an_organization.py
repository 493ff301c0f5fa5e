"""projects of an organization, in their own item collection

Situation 2: a new entity without relations to fetch together. Projects share the partition
key PROJECTS#<org>, a new item collection; no existing item changes. We seed a few.

Revision ID: b2c3d4e5f6a7
Revises: a1b2c3d4e5f6
"""
from boto3.dynamodb.conditions import Attr

revision = "b2c3d4e5f6a7"
down_revision = "a1b2c3d4e5f6"
branch_labels = ("projects",)
depends_on = None

PROJECTS = [
    ("acme", "rocket", "Rocket-powered skates"),
    ("acme", "magnet", "Giant magnet"),
    ("initech", "tps", "TPS report cover sheets"),
]


def upgrade(op):
    op.put_items(
        {"PK": f"PROJECTS#{org}", "SK": f"PROJECT#{pid}", "Type": "Project", "Org": org, "Name": name}
        for org, pid, name in PROJECTS
    )


def downgrade(op):
    op.delete_items(filter=Attr("Type").eq("Project"))
