"""review_item: one index serves a reviewer's inbox pages and their progress counts

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29 02:30:00

`ix_review_item_inbox (reviewer_id, campaign_id, person_name, id)` orders the inbox's keyset pages and
`ix_review_item_reviewer_progress (reviewer_id, campaign_id, decision, risk_score)` answered the progress
counts from the index alone. The inbox index now carries decision and risk_score after id (id is unique,
so they change no order): the counts read it alone, the flagged filter is tested in the index, and a
launch builds, and every decision updates, one index fewer.
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_review_item_reviewer_progress", table_name="review_item")
    op.drop_index("ix_review_item_inbox", table_name="review_item")
    op.create_index("ix_review_item_inbox", "review_item",
                    ["reviewer_id", "campaign_id", "person_name", "id", "decision", "risk_score"])


def downgrade() -> None:
    op.drop_index("ix_review_item_inbox", table_name="review_item")
    op.create_index("ix_review_item_inbox", "review_item", ["reviewer_id", "campaign_id", "person_name", "id"])
    op.create_index("ix_review_item_reviewer_progress", "review_item",
                    ["reviewer_id", "campaign_id", "decision", "risk_score"])
