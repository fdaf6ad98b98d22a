"""pipelines: a target's steps are jobs of its plan job, pinned to its agent

Revision ID: 0015_pipelines
Revises: 0014_uploads
"""

import sqlalchemy as sa
from alembic import op

revision = "0015_pipelines"
down_revision = "0014_uploads"
branch_labels = None
depends_on = None

COLUMNS = ("pipeline_id", "step_id", "needs", "cache_key", "reused_from", "pinned_agent",
           "priority")


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("pipeline_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("step_id", sa.String(64), nullable=True))
        batch.add_column(sa.Column("needs", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("cache_key", sa.String(200), nullable=True))
        batch.add_column(sa.Column("reused_from", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("pinned_agent", sa.String(100), nullable=True))
        batch.add_column(sa.Column("priority", sa.Integer(), nullable=False, server_default="0"))
    op.create_index("ix_jobs_pipeline", "jobs", ["pipeline_id"])
    op.create_index("ix_jobs_cache", "jobs", ["cache_key"])


def downgrade() -> None:
    op.drop_index("ix_jobs_cache", "jobs")
    op.drop_index("ix_jobs_pipeline", "jobs")
    with op.batch_alter_table("jobs") as batch:
        for column in reversed(COLUMNS):
            batch.drop_column(column)
