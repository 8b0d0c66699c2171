"""campaign definitions archive and admin papercuts (issue 20)

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-06 15:30:00

Reserved so that work in progress on several issues chains in a fixed order; the session that fills it in
renames the file and replaces this docstring.
"""

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
