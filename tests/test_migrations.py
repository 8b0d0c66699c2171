"""The migrations and the models describe the same schema."""

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from attest.models import metadata


def test_migrations_match_models(engine):
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": False}), metadata)
    assert diff == [], f"models and migrations disagree; generate a migration: {diff}"


def test_audit_events_refuse_update_and_delete_in_the_database(engine):
    import pytest
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    now = "now()" if engine.dialect.name == "postgresql" else "CURRENT_TIMESTAMP"
    with engine.connect() as conn, conn.begin():
        conn.execute(text(
            "INSERT INTO audit_event (seq, at, actor, action, prev_hash, hash) "
            f"VALUES (999999, {now}, 'x', 'x', 'p', 'h')"))
        with pytest.raises(DBAPIError, match="append-only"), conn.begin_nested():
            conn.execute(text("UPDATE audit_event SET actor = 'y' WHERE seq = 999999"))
        with pytest.raises(DBAPIError, match="append-only"), conn.begin_nested():
            conn.execute(text("DELETE FROM audit_event WHERE seq = 999999"))
        conn.rollback()
