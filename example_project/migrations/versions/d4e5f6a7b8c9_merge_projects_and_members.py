"""merge the projects and members branches

Two teams added revisions on top of the same parent; this merge joins the two heads so the
chain has one head again (`dyn merge -m "..." heads` wrote it).

Revision ID: d4e5f6a7b8c9
Revises: b2c3d4e5f6a7, c3d4e5f6a7b8
"""
revision = "d4e5f6a7b8c9"
down_revision = ("b2c3d4e5f6a7", "c3d4e5f6a7b8")
branch_labels = None
depends_on = None


def upgrade(op):
    pass


def downgrade(op):
    pass
