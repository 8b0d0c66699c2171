"""review_item: covering index for a reviewer's progress

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28 20:30:00

The reviewer inbox shows, on every page, how many of the reviewer's items are decided, approved,
revoked and flagged-but-open in each campaign. `ix_review_item_reviewer_progress (reviewer_id,
campaign_id, decision, risk_score)` answers those counts from the index alone (10,000 items: a few
milliseconds instead of a visit to every row).
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_review_item_reviewer_progress", "review_item",
                    ["reviewer_id", "campaign_id", "decision", "risk_score"])


def downgrade() -> None:
    op.drop_index("ix_review_item_reviewer_progress", table_name="review_item")
