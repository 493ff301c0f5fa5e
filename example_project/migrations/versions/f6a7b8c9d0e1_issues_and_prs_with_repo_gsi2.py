"""issues and pull requests join their repository on GSI2

Situation 5: joining existing items into a new item collection. Repositories, Issues and
Pull Requests each live in their own partition; the new access pattern "a repository with
its open issues and pull requests" needs them together. A backfill gives each of them
GSI2PK = REPO#<owner>#<name> and a GSI2SK that sorts the repo first, then issues, then PRs.

Revision ID: f6a7b8c9d0e1
Revises: e5f6a7b8c9d0
"""
from boto3.dynamodb.conditions import Attr

revision = "f6a7b8c9d0e1"
down_revision = "e5f6a7b8c9d0"
branch_labels = None
depends_on = None

KINDS = ["Repo", "Issue", "PullRequest"]


def repo_collection(item):
    repo = f"REPO#{item['Repo']}"
    if item["Type"] == "Repo":
        return {"GSI2PK": repo, "GSI2SK": "#REPO"}  # "#" sorts before the letters
    prefix = "ISSUE" if item["Type"] == "Issue" else "PR"
    return {"GSI2PK": repo, "GSI2SK": f"{prefix}#{int(item['Number']):08d}"}


def upgrade(op):
    op.create_gsi("GSI2", partition_key=("GSI2PK", "S"), sort_key=("GSI2SK", "S"))
    op.backfill(repo_collection, filter=Attr("Type").is_in(KINDS))


def downgrade(op):
    op.remove_attributes(["GSI2PK", "GSI2SK"], filter=Attr("Type").is_in(KINDS))
    op.delete_gsi("GSI2")
