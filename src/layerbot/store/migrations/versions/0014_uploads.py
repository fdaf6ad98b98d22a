"""uploads by agents: each claim of a deployment is numbered, transient failures back off

Revision ID: 0014_uploads
Revises: 0013_singletons
"""

import sqlalchemy as sa
from alembic import op

revision = "0014_uploads"
down_revision = "0013_singletons"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deployments") as batch:
        batch.add_column(sa.Column("attempt", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("retries", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("retry_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deployments") as batch:
        for column in ("retry_at", "retries", "attempt"):
            batch.drop_column(column)
