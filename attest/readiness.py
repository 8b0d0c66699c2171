"""Is this instance ready to serve (GET /readyz, and `attest` operators' checks)?

Ready = the database answers and its schema is this version's (the Alembic head). The scheduler is
reported, not required: pages work without one, but jobs (syncs, mail, closes) only run while some
scheduler process takes its minute reconcile lease.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.engine import Engine

from attest.db import unavailable, unmigrated, utcnow
from attest.jobs import RECONCILE, JobLease

SCHEDULER_SILENT_AFTER = timedelta(minutes=3)  # the reconcile lease is taken every minute


@lru_cache(maxsize=1)
def schema_head() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory(str(Path(__file__).parent / "migrations")).get_current_head()


def check(engine: Engine, now: datetime | None = None) -> dict[str, Any]:

    now = now or utcnow()
    head = schema_head()
    report: dict[str, Any] = {"ready": False, "database": "unknown", "schema": {"expected": head, "current": None},
                              "scheduler": {"running": False, "last_reconcile": None}}
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
            report["database"] = "ok"
            try:
                current = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
            except Exception as exc:
                if not unmigrated(exc):
                    raise
                current = None
            report["schema"]["current"] = current
            if current != head:
                report["schema"]["message"] = ("the database is not at this version's schema: run `attest db upgrade`"
                                               if current is None or current < (head or "") else
                                               "the database is newer than this version of Attest: upgrade Attest")
                return report
            last = conn.execute(select(JobLease.last_started_at).where(JobLease.name == RECONCILE.id)).scalar()
            report["scheduler"] = {"running": last is not None and now - last < SCHEDULER_SILENT_AFTER,
                                   "last_reconcile": last.isoformat() if last else None}
            report["ready"] = True
    except Exception as exc:
        if not unavailable(exc):
            raise
        report["database"] = "unavailable"
        report["message"] = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0][:300]
    return report
