"""fleet: agents, and the lease of each job

Revision ID: 0012_fleet
Revises: 0011_web_authz
"""

import sqlalchemy as sa
from alembic import op

revision = "0012_fleet"
down_revision = "0011_web_authz"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "agents",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("cluster", sa.String(length=100), nullable=False),
        sa.Column("builtin", sa.Boolean(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=True),
        sa.Column("token_prefix", sa.String(length=16), nullable=True),
        sa.Column("created_by", sa.String(length=100), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("paused", sa.Boolean(), nullable=False),
        sa.Column("draining", sa.Boolean(), nullable=False),
        sa.Column("protocol", sa.Integer(), nullable=True),
        sa.Column("version", sa.String(length=40), nullable=True),
        sa.Column("capabilities", sa.JSON(), nullable=True),
        sa.Column("registered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("load", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("name"),
        sa.UniqueConstraint("token_hash", name="uq_agent_token_hash"),
    )
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("agent", sa.String(length=100), nullable=True))
        batch.add_column(sa.Column("lease_id", sa.String(length=40), nullable=True))
        batch.add_column(sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("report_seq", sa.Integer(), nullable=False,
                                   server_default="0"))
        batch.add_column(sa.Column("agent_filter", sa.String(length=200), nullable=True))
    op.create_index("ix_jobs_agent", "jobs", ["agent", "state"])
    # Jobs from before the fleet were built by the instance itself: they are its built-in
    # agent's (named after the instance unless agent.name says otherwise), so the agent
    # goes on watching the ones still in the batch system after the upgrade.
    op.execute("UPDATE jobs SET agent = instance, lease_id = 'before-fleet' "
               "WHERE state <> 'queued'")


def downgrade() -> None:
    op.drop_index("ix_jobs_agent", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        for column in ("agent_filter", "report_seq", "lease_until", "lease_id", "agent"):
            batch.drop_column(column)
    op.drop_table("agents")
