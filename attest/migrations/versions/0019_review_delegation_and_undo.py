"""reviewer delegation and decision undo (issue 20, part 4)

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-06 15:30:00

- `review_delegation`: a reviewer (delegator) hands their review work to a delegate for a period
  (`starts_at` .. `ends_at`, ended early by `ended_at`/`ended_by`), with a reason; never to themselves.
- `review_item.decided_for_identity_id`, `review_decision.on_behalf_of_id`: a decision taken by a delegate
  records both who decided (`decided_by_identity_id` / `identity_id`) and for whom.
- `review_decision.undone_at`: the decision was undone by the person who took it (the item went back to
  undecided); the row stays, as every decision does.
"""

import sqlalchemy as sa
from alembic import op

import attest.db

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "review_delegation",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("delegator_id", sa.Integer(), nullable=False),
        sa.Column("delegate_id", sa.Integer(), nullable=False),
        sa.Column("starts_at", attest.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("ends_at", attest.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("created_by", sa.String(length=320), nullable=False),
        sa.Column("created_at", attest.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("ended_at", attest.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("ended_by", sa.String(length=320), nullable=True),
        sa.CheckConstraint("delegator_id <> delegate_id", name=op.f("ck_review_delegation_not_self")),
        sa.CheckConstraint("ends_at > starts_at", name=op.f("ck_review_delegation_period")),
        sa.ForeignKeyConstraint(["delegator_id"], ["identity.id"], name=op.f("fk_review_delegation_delegator_id_identity")),
        sa.ForeignKeyConstraint(["delegate_id"], ["identity.id"], name=op.f("fk_review_delegation_delegate_id_identity")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_review_delegation")),
    )
    with op.batch_alter_table("review_delegation") as batch:
        batch.create_index("ix_review_delegation_delegate", ["delegate_id", "ends_at"], unique=False)
        batch.create_index("ix_review_delegation_delegator", ["delegator_id", "ends_at"], unique=False)
    with op.batch_alter_table("review_item") as batch:
        batch.add_column(sa.Column("decided_for_identity_id", sa.Integer(), nullable=True))
        batch.create_foreign_key(op.f("fk_review_item_decided_for_identity_id_identity"), "identity",
                                 ["decided_for_identity_id"], ["id"])
    with op.batch_alter_table("review_decision") as batch:
        batch.add_column(sa.Column("on_behalf_of_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("undone_at", attest.db.UTCDateTime(timezone=True), nullable=True))
        batch.create_foreign_key(op.f("fk_review_decision_on_behalf_of_id_identity"), "identity",
                                 ["on_behalf_of_id"], ["id"])


def downgrade() -> None:
    with op.batch_alter_table("review_decision") as batch:
        batch.drop_constraint(op.f("fk_review_decision_on_behalf_of_id_identity"), type_="foreignkey")
        batch.drop_column("undone_at")
        batch.drop_column("on_behalf_of_id")
    with op.batch_alter_table("review_item") as batch:
        batch.drop_constraint(op.f("fk_review_item_decided_for_identity_id_identity"), type_="foreignkey")
        batch.drop_column("decided_for_identity_id")
    with op.batch_alter_table("review_delegation") as batch:
        batch.drop_index("ix_review_delegation_delegator")
        batch.drop_index("ix_review_delegation_delegate")
    op.drop_table("review_delegation")
