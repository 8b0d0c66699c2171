"""sign-in: server-side sessions and shared failed-sign-in counters

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 13:00:00

- `user_session`: one row per signed-in browser session; the cookie carries a random token whose SHA-256
  is `token_hash`. Every request checks the row, so sign-out and the idle/absolute time-outs end every
  copy of the cookie. Sessions signed in before this migration (cookies without a token) must sign in again.
- `login_throttle`: failed password sign-ins per (account, address) pair, per address and per account,
  in the database so that every web worker shares them (`attest.auth.throttle`).
"""

import sqlalchemy as sa
from alembic import op

import attest.db

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "user_session",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("method", sa.String(length=20), nullable=False),
        sa.Column("created_at", attest.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", attest.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("ended_at", attest.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("ended_reason", sa.String(length=40), nullable=True),
        sa.Column("ip", sa.String(length=64), nullable=True),
        sa.Column("user_agent", sa.String(length=300), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["app_user.id"], name=op.f("fk_user_session_user_id_app_user")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_user_session")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_user_session_token_hash")),
    )
    op.create_index(op.f("ix_user_session_user_id"), "user_session", ["user_id"])
    op.create_table(
        "login_throttle",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("last_failure_at", attest.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("blocked_until", attest.db.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_login_throttle")),
        sa.UniqueConstraint("key", name=op.f("uq_login_throttle_key")),
    )


def downgrade() -> None:
    op.drop_table("login_throttle")
    op.drop_index(op.f("ix_user_session_user_id"), table_name="user_session")
    op.drop_table("user_session")
