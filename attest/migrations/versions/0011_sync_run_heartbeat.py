"""sync runs: a heartbeat, so a run whose process died is marked interrupted within two minutes

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06 16:00:00

- `sync_run.heartbeat_at`: a running sync's last sign of life (written every 20 s from a thread);
  `sync_run.holder`: the process running it (host:pid). A run still `running` whose last beat is over a
  minute old lost its process: the next sync of its source and the scheduler mark it failed
  ("interrupted") instead of refusing new syncs for six hours.
"""

import sqlalchemy as sa
from alembic import op

import attest.db

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sync_run") as batch:
        batch.add_column(sa.Column("heartbeat_at", attest.db.UTCDateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("holder", sa.String(length=200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sync_run") as batch:
        batch.drop_column("holder")
        batch.drop_column("heartbeat_at")
