"""What the scheduler runs: a job's spec (id, kind, cron, argument), the fixed jobs, the job table read from
the sources and definitions, and the context and result of a run.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from attest.entitlements.models import Source
from attest.jobs.lease import HOLDER
from attest.schedules import cron_trigger, previous_fire_time

log = logging.getLogger("attest.jobs")


ACTOR = "scheduler"
# A running job renews its lease every HEARTBEAT seconds; a holder that stops renewing (killed, hung, cut off
# from the database) loses it LEASE_TTL after its last renewal, and a standby's takeover watch (scheduler.py)
# runs the job at that moment: within 60 s of the holder's death. A live holder keeps
# its lease through 3 missed heartbeats (a 45 s stall) before another process could run the job.
LEASE_TTL = timedelta(seconds=60)
HEARTBEAT = 15.0
MISFIRE_GRACE = 3600  # seconds: a run missed while no scheduler was up still happens (once) within an hour


class JobError(RuntimeError):
    """A job ran but did not (entirely) succeed; the message is stored on the lease row."""


class SchedulerError(RuntimeError):
    """The scheduler cannot start (the message says what to do)."""


@dataclass(frozen=True)
class JobSpec:
    id: str  # also the lease name: "sync:<source>", "campaigns:launch", ...
    kind: str  # a key of JOBS
    cron: str
    arg: str | None = None

    def trigger(self):
        return cron_trigger(self.cron)

    def slot(self, now: datetime) -> datetime | None:
        return previous_fire_time(self.cron, now)

    @property
    def args(self) -> list[Any]:
        return [self.id, self.kind, self.cron, self.arg]


RECONCILE = JobSpec("scheduler:reconcile", "reconcile", "* * * * *")
FIXED_JOBS = (
    RECONCILE,
    JobSpec("campaigns:launch", "launch", "* * * * *"),
    JobSpec("campaigns:close", "close", "* * * * *"),
    JobSpec("notify:send", "notify", "*/2 * * * *"),
    JobSpec("audit:checkpoint", "checkpoint", "* * * * *"),
    JobSpec("evidence:export", "evidence", "* * * * *"),
    JobSpec("auth:purge", "purge", "17 3 * * *"),
    JobSpec("sources:sync-requests", "sync_requests", "* * * * *"),
)


REMEDIATION = JobSpec("remediation:run", "remediation", "*/5 * * * *")


def job_table(session: Session) -> list[JobSpec]:
    """The jobs the scheduler should have: the fixed ones and a sync per enabled source with a schedule."""
    specs = [*FIXED_JOBS, REMEDIATION]
    rows = session.execute(select(Source.name, Source.schedule).where(
        Source.enabled.is_(True), Source.schedule.is_not(None), Source.schedule != "").order_by(Source.name))
    for name, schedule in rows:
        try:
            cron_trigger(schedule.strip())
        except ValueError as exc:
            log.warning("source %s: schedule %r is not a valid cron expression (%s); not scheduled",
                        name, schedule, exc)
            continue
        specs.append(JobSpec(f"sync:{name}", "sync", schedule.strip(), name))
    return specs


@dataclass
class JobContext:
    factory: sessionmaker[Session]
    settings: Any  # attest.config.Settings
    holder: str = HOLDER
    scheduler: Any = None  # the APScheduler instance, for the reconcile job
    ttl: timedelta = LEASE_TTL
    heartbeat: float = HEARTBEAT
    # seconds since some moment, for how long a run has run (its heartbeats and release times): a test hands a
    # fake and moves it, instead of waiting out the lease
    clock: Callable[[], float] = time.monotonic
    # the scheduler's runs in progress and whether it is stopping (no run starts then), under `runs`
    running: list[str] = field(default_factory=list)
    stopping: bool = False
    runs: threading.Condition = field(default_factory=threading.Condition, repr=False, compare=False)
    # the remediation job's runner: attest.reviews.remediation.run_pending unless a test hands another
    run_remediation: Callable[..., Any] | None = None


@dataclass
class JobRun:
    job: str
    ran: bool
    status: str  # a JobStatus (attest.jobs.lease)
    error: str | None = None
    detail: Any = None
