"""job leases: when each job last succeeded (issue 19, part 4)

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-08 10:00:00

- `job_lease.last_succeeded_at`: the finish time of the job's last successful run, kept when later runs
  fail, so the jobs page and /metrics show how long a failing job has not done its work.
  Existing rows whose last run succeeded start with that run's finish time.
"""

import sqlalchemy as sa
from alembic import op

import attest.db

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("job_lease") as batch:
        batch.add_column(sa.Column("last_succeeded_at", attest.db.UTCDateTime(timezone=True), nullable=True))
    op.execute("UPDATE job_lease SET last_succeeded_at = last_finished_at WHERE last_status = 'succeeded'")


def downgrade() -> None:
    with op.batch_alter_table("job_lease") as batch:
        batch.drop_column("last_succeeded_at")
