"""secrets: the key check value (a known plaintext encrypted with the key the stored secrets need)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 15:00:00

- `key_check`: one row (`name` = 'source_secrets') holding a known plaintext encrypted with the key that
  encrypted the sources' secrets, and that key's fingerprint. Start-up decrypts it, so a wrong
  ATTEST_ENCRYPTION_KEYS is refused at once instead of failing the first page that decrypts
  (attest/entitlements/keys.py). The migration has no key: a database that already holds secrets gets its
  check value at the first start that decrypts them.
"""

import sqlalchemy as sa
from alembic import op

import attest.db

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "key_check",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=40), nullable=False),
        sa.Column("token", sa.Text(), nullable=False),
        sa.Column("key_fingerprint", sa.String(length=16), nullable=False),
        sa.Column("updated_at", attest.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_key_check")),
        sa.UniqueConstraint("name", name=op.f("uq_key_check_name")),
    )


def downgrade() -> None:
    op.drop_table("key_check")
