"""users get a bio attribute (lazy: nothing to migrate)

Situation 1 of the reference text: a new attribute on an existing entity. The application
starts writing `Bio` on User items and treats a missing one as empty; no existing item is
rewritten. The empty revision documents the change in the chain.

Revision ID: a1b2c3d4e5f6
Revises: <base>
"""
revision = "a1b2c3d4e5f6"
down_revision = None
branch_labels = None
depends_on = None


def upgrade(op):
    pass


def downgrade(op):
    pass
