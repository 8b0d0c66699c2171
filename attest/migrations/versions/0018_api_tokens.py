"""api tokens: kind (personal | service), scopes, revocation, per-token rate-limit bucket (issue 19)

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-06 15:30:00

- `api_token.kind`: `personal` (acts as its user, within that user's roles) or `service` (owned by an
  admin, named, acting only within its scopes; stops when the owner is no longer an active admin).
- `api_token.scopes`: a JSON list such as ["reviews:read", "reviews:write"].
- `api_token.revoked_by`: who revoked it (revoked_at existed already).
- `api_token.rate_tokens`, `api_token.rate_at`: the token bucket of the API rate limit, in the database so
  that every web worker shares one budget per token (attest/api/auth.py).
"""

import sqlalchemy as sa
from alembic import op

import attest.db

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_token") as batch:
        batch.add_column(sa.Column("kind", sa.String(length=10), nullable=False, server_default="personal"))
        batch.add_column(sa.Column("scopes", attest.db.JSONType, nullable=False, server_default=sa.text("'[]'")))
        batch.add_column(sa.Column("revoked_by", sa.String(length=320), nullable=True))
        batch.add_column(sa.Column("rate_tokens", sa.Float(), nullable=True))
        batch.add_column(sa.Column("rate_at", attest.db.UTCDateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("api_token") as batch:
        batch.drop_column("rate_at")
        batch.drop_column("rate_tokens")
        batch.drop_column("revoked_by")
        batch.drop_column("scopes")
        batch.drop_column("kind")
