"""review_item: drop the indexes nothing reads; the co-reviewer index only holds escalated items

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29 00:30:00

Items are read by campaign, by reviewer or co-reviewer, or by id; never by grant, account or identity
(those columns are the snapshot an auditor reads with the item). Their three indexes cost a launch of a
million items three index builds and every later launch three index insertions per item. Only escalated
items have a co-reviewer: the co-reviewer index becomes partial (WHERE co_reviewer_id IS NOT NULL),
which `co_reviewer_id = :me` lookups use on SQLite and PostgreSQL alike.
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

UNREAD = ("grant_id", "account_id", "identity_id")
ESCALATED = sa.text("co_reviewer_id IS NOT NULL")


def upgrade() -> None:
    for column in UNREAD:
        op.drop_index(f"ix_review_item_{column}", table_name="review_item")
    op.drop_index("ix_review_item_co_reviewer", table_name="review_item")
    op.create_index("ix_review_item_co_reviewer", "review_item", ["co_reviewer_id", "campaign_id"],
                    sqlite_where=ESCALATED, postgresql_where=ESCALATED)


def downgrade() -> None:
    op.drop_index("ix_review_item_co_reviewer", table_name="review_item")
    op.create_index("ix_review_item_co_reviewer", "review_item", ["co_reviewer_id", "campaign_id"])
    for column in UNREAD:
        op.create_index(f"ix_review_item_{column}", "review_item", [column])
