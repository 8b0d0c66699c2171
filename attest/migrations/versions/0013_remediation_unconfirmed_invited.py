"""remediation statuses: unconfirmed and invited (issue 17)

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07 12:00:00

- `unconfirmed`: the upstream accepted a revoke but a follow-up read still shows the access (a connector
  says `done` only when the read shows it gone).
- `invited`: an undo the upstream answered with an invitation the person still has to accept (GitHub's
  201 for a repository collaborator, `state: pending` for a membership), not a re-grant.
"""

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

OLD = ("pending", "in_progress", "done", "verified", "reappeared", "failed", "refused", "undone")
NEW = (*OLD, "unconfirmed", "invited")


def _status_check(values: tuple[str, ...]) -> None:
    with op.batch_alter_table("remediation") as batch:
        batch.drop_constraint(op.f("ck_remediation_status"), type_="check")
        batch.create_check_constraint("status", "status IN (" + ", ".join(f"'{v}'" for v in values) + ")")


def upgrade() -> None:
    _status_check(NEW)


def downgrade() -> None:
    op.execute("UPDATE remediation SET status = 'done' WHERE status = 'unconfirmed'")
    op.execute("UPDATE remediation SET status = 'undone' WHERE status = 'invited'")
    _status_check(OLD)
