"""api tokens: scopes, kind (personal/service), audit of calls (issue 19)

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-06 15:30:00

Reserved so that work in progress on several issues chains in a fixed order; the session that fills it in
renames the file and replaces this docstring.
"""

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
