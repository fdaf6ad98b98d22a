"""singletons: locks that let one replica at a time run a loop (sender, delivery recovery)

Revision ID: 0013_singletons
Revises: 0011_web_authz
"""

import sqlalchemy as sa
from alembic import op

revision = "0013_singletons"
down_revision = "0011_web_authz"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "singleton_locks",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("holder", sa.String(length=200), nullable=False),
        sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )


def downgrade() -> None:
    op.drop_table("singleton_locks")
