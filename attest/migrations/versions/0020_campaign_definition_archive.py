"""campaign definitions can be archived (issue 20, part 6)

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-06 15:30:00

An archived definition is hidden from the definitions list by default and cannot be launched (by hand or
by its schedule); its campaigns are kept. `archived_at` is NULL for a definition in use.
"""

import sqlalchemy as sa
from alembic import op

import attest.db

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("campaign_definition") as batch:
        batch.add_column(sa.Column("archived_at", attest.db.UTCDateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("campaign_definition") as batch:
        batch.drop_column("archived_at")
