"""audit trail: checkpoint bookkeeping; the append-only trigger fires in every replication role

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30 10:00:00

- `audit_checkpoint`: what the checkpoint job last wrote to the checkpoint store (outside the database).
  It proves nothing by itself: `attest audit verify` reads the signed checkpoints from the store.
- PostgreSQL: `audit_event_append_only` and `audit_event_no_truncate` become `ENABLE ALWAYS` triggers. An
  ordinary trigger does not fire while `session_replication_role = replica`, so a role allowed to set it
  could UPDATE or DELETE audit events; an ALWAYS trigger fires whatever the replication role.
"""

import sqlalchemy as sa
from alembic import op

import attest.db

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

TRIGGERS = ("audit_event_append_only", "audit_event_no_truncate")


def upgrade() -> None:
    op.create_table(
        "audit_checkpoint",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("at", attest.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_checkpoint")),
    )
    op.create_index(op.f("ix_audit_checkpoint_seq"), "audit_checkpoint", ["seq"])
    if op.get_bind().dialect.name == "postgresql":
        for trigger in TRIGGERS:
            op.execute(f"ALTER TABLE audit_event ENABLE ALWAYS TRIGGER {trigger}")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for trigger in TRIGGERS:
            op.execute(f"ALTER TABLE audit_event ENABLE TRIGGER {trigger}")
    op.drop_index(op.f("ix_audit_checkpoint_seq"), table_name="audit_checkpoint")
    op.drop_table("audit_checkpoint")
