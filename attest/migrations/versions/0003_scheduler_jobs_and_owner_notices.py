"""scheduler job store table; closing-summary notices to owner users

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 20:00:00

- `apscheduler_jobs`: APScheduler's SQLAlchemyJobStore table, created here (with the exact shape the
  job store declares) so the app never creates tables itself; the job store only checks it exists.
- `reviewer_notice.user_id`: the closing summary goes to the campaign owner, a user who may have no
  identity, so `identity_id` becomes nullable and (campaign, user, kind) is unique too.
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "apscheduler_jobs",
        sa.Column("id", sa.Unicode(length=191), nullable=False),
        sa.Column("next_run_time", sa.Float(precision=25), nullable=True),
        sa.Column("job_state", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_apscheduler_jobs")),
    )
    op.create_index(op.f("ix_apscheduler_jobs_next_run_time"), "apscheduler_jobs", ["next_run_time"])
    with op.batch_alter_table("reviewer_notice") as batch_op:
        batch_op.add_column(sa.Column("user_id", sa.Integer(), nullable=True))
        batch_op.alter_column("identity_id", existing_type=sa.Integer(), nullable=True)
        batch_op.create_foreign_key(op.f("fk_reviewer_notice_user_id_app_user"), "app_user", ["user_id"], ["id"])
        batch_op.create_unique_constraint(
            op.f("uq_reviewer_notice_campaign_id_user_id_kind"), ["campaign_id", "user_id", "kind"]
        )


def downgrade() -> None:
    with op.batch_alter_table("reviewer_notice") as batch_op:
        batch_op.drop_constraint(op.f("uq_reviewer_notice_campaign_id_user_id_kind"), type_="unique")
        batch_op.drop_constraint(op.f("fk_reviewer_notice_user_id_app_user"), type_="foreignkey")
        batch_op.drop_column("user_id")
        batch_op.alter_column("identity_id", existing_type=sa.Integer(), nullable=False)
    op.drop_index(op.f("ix_apscheduler_jobs_next_run_time"), table_name="apscheduler_jobs")
    op.drop_table("apscheduler_jobs")
