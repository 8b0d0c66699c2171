"""PostgreSQL planner hints for the campaign snapshot (a preview's count, a launch's INSERT ... SELECT).

Both read the whole in-scope population in one query whose recursive group-membership CTE no planner can
estimate; these helpers make PostgreSQL plan it for what it is. SQLite needs none: both are no-ops there.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.orm import Session

from attest import dialects

SNAPSHOT_TABLES = ("access_grant", "account", "identity", "entitlement", "resource", "resource_owner", "source")


def refresh_planner_stats(session: Session) -> None:
    """PostgreSQL: ANALYZE the tables the snapshot joins when a sync changed them a lot since their last
    analyze, or they have no statistics (right after a big first sync autovacuum may not have run, and a
    plan made on default estimates nests loops over a million rows)."""
    dialects.refresh_stats(session, SNAPSHOT_TABLES)


@contextmanager
def whole_population_plan(session: Session) -> Iterator[None]:
    """PostgreSQL: plan the scope query for what it is, a read of every in-scope grant.
    - No nested loops: the planner cannot estimate the recursive group-membership CTE (thousands of rows
      estimated, a million read) and so looks routing and grants up row by row; hash joins read each
      table once (the launch's query at a million items: 23 s -> 14 s).
    - No JIT: the same misestimate makes the query look costly enough to compile with inlining and
      optimization, which takes longer than it saves here (about a second at a million items).
    Back to the defaults right after; a rollback undoes them too."""
    with dialects.whole_population_plan(session):
        yield
