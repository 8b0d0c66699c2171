"""review items: an index for a campaign's items page and CSV export (issue 20, part 2)

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06 14:40:00

- `ix_review_item_campaign_person (campaign_id, person_name, id)`: the items page and its CSV export page
  through every item of one campaign by person, then id (keyset); without it each page sorts the whole
  campaign (the inbox's index leads with the reviewer).
"""

from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_review_item_campaign_person", "review_item", ["campaign_id", "person_name", "id"])


def downgrade() -> None:
    op.drop_index("ix_review_item_campaign_person", table_name="review_item")
