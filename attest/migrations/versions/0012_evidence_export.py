"""evidence exports as a scheduler job

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 10:00:00

- `evidence_export`: one evidence bundle asked for on the web. The web inserts a `queued` row; the
  scheduler claims it (`running`, `holder`, `heartbeat_at`), writes the bundle under
  `<instance>/evidence/` and marks it `done` (file path relative to the instance folder, size, SHA-256)
  or `failed`; the file is removed at `expires_at` (`expired`). Web workers never build a bundle again.
"""

import sqlalchemy as sa
from alembic import op

import attest.db

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "evidence_export",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("requested_by", sa.String(length=320), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("phase", sa.String(length=40), nullable=True),
        sa.Column("items_done", sa.Integer(), nullable=False),
        sa.Column("items_total", sa.Integer(), nullable=True),
        sa.Column("file_path", sa.String(length=500), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("manifest_sha256", sa.String(length=64), nullable=True),
        sa.Column("error", sa.String(length=2000), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("holder", sa.String(length=200), nullable=True),
        sa.Column("heartbeat_at", attest.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", attest.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("started_at", attest.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("finished_at", attest.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("expires_at", attest.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["campaign_id"], ["campaign.id"], name=op.f("fk_evidence_export_campaign_id_campaign")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_evidence_export")),
    )
    op.create_index(op.f("ix_evidence_export_campaign_id"), "evidence_export", ["campaign_id"])
    op.create_index("ix_evidence_export_status_id", "evidence_export", ["status", "id"])


def downgrade() -> None:
    op.drop_index("ix_evidence_export_status_id", table_name="evidence_export")
    op.drop_index(op.f("ix_evidence_export_campaign_id"), table_name="evidence_export")
    op.drop_table("evidence_export")
