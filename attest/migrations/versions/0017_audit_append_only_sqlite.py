"""audit trail: append-only in the database on SQLite too

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-06 17:00:00

PostgreSQL has refused UPDATE and DELETE on `audit_event` in a trigger since 0001 (ENABLE ALWAYS since
0008); SQLite relied on the ORM guard alone, so any connection could edit the trail with plain SQL. Two
triggers now refuse it there too. (Whoever can drop them can still rewrite the file: the signed
checkpoints outside the database catch that.)
"""

from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

TRIGGERS = {
    "audit_event_append_only_update": "UPDATE",
    "audit_event_append_only_delete": "DELETE",
}


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for name, operation in TRIGGERS.items():
        op.execute(f"CREATE TRIGGER {name} BEFORE {operation} ON audit_event "
                   f"BEGIN SELECT RAISE(ABORT, 'audit_event is append-only: {operation} refused'); END")


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for name in TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS {name}")
