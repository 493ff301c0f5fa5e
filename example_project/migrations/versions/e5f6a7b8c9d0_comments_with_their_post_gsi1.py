"""comments with their post, in a new item collection on GSI1

Situation 4: a new entity into a new item collection. The access pattern "get a post and
its comments" needs a collection that does not exist: GSI1. Every existing Post gets
GSI1PK/GSI1SK = POST#<id> (a backfill: derived from the item, so idempotent), and Comments
are written with GSI1PK = POST#<id>, GSI1SK = COMMENT#<time>.

Revision ID: e5f6a7b8c9d0
Revises: d4e5f6a7b8c9
"""
from boto3.dynamodb.conditions import Attr

revision = "e5f6a7b8c9d0"
down_revision = "d4e5f6a7b8c9"
branch_labels = None
depends_on = None

COMMENTS = [
    ("p1", "2026-01-02T10:00:00Z", "bob", "Great post!"),
    ("p1", "2026-01-02T11:30:00Z", "carol", "Agreed."),
    ("p2", "2026-01-03T09:15:00Z", "alice", "Nice one."),
]


def post_keys(item):
    return {"GSI1PK": f"POST#{item['PostId']}", "GSI1SK": f"POST#{item['PostId']}"}


def upgrade(op):
    op.create_gsi("GSI1", partition_key=("GSI1PK", "S"), sort_key=("GSI1SK", "S"))
    op.backfill(post_keys, filter=Attr("Type").eq("Post"))
    op.put_items(
        {"PK": f"COMMENT#{post}#{ts}", "SK": f"COMMENT#{post}#{ts}", "Type": "Comment",
         "GSI1PK": f"POST#{post}", "GSI1SK": f"COMMENT#{ts}", "Author": who, "Text": text}
        for post, ts, who, text in COMMENTS
    )


def downgrade(op):
    op.delete_items(filter=Attr("Type").eq("Comment"))
    op.remove_attributes(["GSI1PK", "GSI1SK"], filter=Attr("Type").eq("Post"))
    op.delete_gsi("GSI1")
