"""PostgreSQL planner hints for the campaign snapshot (a preview's count, a launch's INSERT ... SELECT).

Both read the whole in-scope population in one query whose recursive group-membership CTE no planner can
estimate; these helpers make PostgreSQL plan it for what it is. SQLite needs none: both are no-ops there.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import text
from sqlalchemy.orm import Session

SNAPSHOT_TABLES = ("access_grant", "account", "identity", "entitlement", "resource", "resource_owner", "source")


def refresh_planner_stats(session: Session) -> None:
    """PostgreSQL: ANALYZE the tables the snapshot joins when a sync changed them a lot since their last
    analyze, or they have no statistics (right after a big first sync autovacuum may not have run, and a
    plan made on default estimates nests loops over a million rows)."""
    if session.get_bind().dialect.name != "postgresql":
        return
    rows = session.execute(text(
        "SELECT s.relname FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid WHERE s.relname = ANY(:names)"
        " AND (s.n_mod_since_analyze > 0.1 * GREATEST(s.n_live_tup, 1000)"
        " OR (s.n_live_tup > 1000 AND (c.reltuples < 0.5 * s.n_live_tup"
        # an ANALYZE whose transaction rolled back (a preview) reset the counters but left no statistics
        "   OR NOT EXISTS (SELECT 1 FROM pg_stats p WHERE p.schemaname = s.schemaname AND p.tablename = s.relname))))"),
        {"names": list(SNAPSHOT_TABLES)}).all()
    for (name,) in rows:
        session.execute(text(f"ANALYZE {name}"))


@contextmanager
def whole_population_plan(session: Session) -> Iterator[None]:
    """PostgreSQL: plan the scope query for what it is, a read of every in-scope grant.
    - No nested loops: the planner cannot estimate the recursive group-membership CTE (thousands of rows
      estimated, a million read) and so looks routing and grants up row by row; hash joins read each
      table once (the launch's query at a million items: 23 s -> 14 s).
    - No JIT: the same misestimate makes the query look costly enough to compile with inlining and
      optimization, which takes longer than it saves here (about a second at a million items).
    Back to the defaults right after; a rollback undoes them too."""
    pg = session.get_bind().dialect.name == "postgresql"
    if pg:
        session.execute(text("SET LOCAL enable_nestloop = off"))
        session.execute(text("SET LOCAL jit = off"))
    yield
    if pg:
        session.execute(text("SET LOCAL enable_nestloop TO DEFAULT"))
        session.execute(text("SET LOCAL jit TO DEFAULT"))
