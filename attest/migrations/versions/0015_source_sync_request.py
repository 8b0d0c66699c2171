"""sources: a queued "sync now" request (issue 20, part 1)

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06 14:30:00

- `source.sync_requested_at`, `source.sync_requested_by`: an admin asked on the web for a sync of this
  source; the scheduler's `sources:sync-requests` job (every minute) runs it under the source's
  `sync:<name>` lease and clears the request. Web workers never sync.
"""

import sqlalchemy as sa
from alembic import op

import attest.db

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("source") as batch:
        batch.add_column(sa.Column("sync_requested_at", attest.db.UTCDateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("sync_requested_by", sa.String(length=200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("source") as batch:
        batch.drop_column("sync_requested_by")
        batch.drop_column("sync_requested_at")
