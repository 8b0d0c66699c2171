"""review_item: no foreign keys on the snapshot columns

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28 23:30:00

A launch writes one review_item per access in scope, a million and more, by one INSERT ... SELECT
that copies each id from the row it names. The rows named by the snapshot columns (grant, account,
identity, source, resource, entitlement, via_resource) are never deleted: they end or are disabled.
Their foreign keys could not fail, but checked (and on PostgreSQL locked) seven referenced rows per
item, more work than writing the item. The keys that items are changed through (campaign, reviewer,
co-reviewer, decided by) stay. On SQLite the table is rebuilt (batch mode).
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

SNAPSHOT_FKS = (
    ("grant_id", "access_grant"),
    ("account_id", "account"),
    ("identity_id", "identity"),
    ("source_id", "source"),
    ("resource_id", "resource"),
    ("entitlement_id", "entitlement"),
    ("via_resource_id", "resource"),
)


def upgrade() -> None:
    with op.batch_alter_table("review_item") as batch:
        for column, table in SNAPSHOT_FKS:
            batch.drop_constraint(f"fk_review_item_{column}_{table}", type_="foreignkey")


def downgrade() -> None:
    with op.batch_alter_table("review_item") as batch:
        for column, table in SNAPSHOT_FKS:
            batch.create_foreign_key(f"fk_review_item_{column}_{table}", table, [column], ["id"])
