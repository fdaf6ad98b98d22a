"""events: inbox identity (replay-proof de-duplication), latest push per pull request

Revision ID: 0007_events_identity
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0007_events_identity"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("inbox_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("identity", sa.String(length=64), nullable=True))
        batch_op.create_unique_constraint("uq_inbox_identity", ["instance", "identity"])
    op.create_table(
        "pull_pushes",
        sa.Column("instance", sa.String(length=100), nullable=False),
        sa.Column("repo", sa.String(length=200), nullable=False),
        sa.Column("pr", sa.Integer(), nullable=False),
        sa.Column("head_sha", sa.String(length=64), nullable=False),
        sa.Column("pushed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("instance", "repo", "pr"),
    )


def downgrade() -> None:
    op.drop_table("pull_pushes")
    with op.batch_alter_table("inbox_events", schema=None) as batch_op:
        batch_op.drop_constraint("uq_inbox_identity", type_="unique")
        batch_op.drop_column("identity")
