"""The job lease: one row per job (`job_lease`), taken with one conditional UPDATE (or an INSERT for a new
job) when it is free and this occurrence has not started yet, or when its holder's lease expired; renewed
by a heartbeat while the job runs; released with the run's status. Also APScheduler's job table, which
migration 0003 creates (the job store never creates tables here).
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import (
    Column,
    Float,
    LargeBinary,
    String,
    Table,
    Unicode,
    and_,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from attest.db import Base, UTCDateTime, utcnow


class JobStatus(StrEnum):
    """A job run's status (JobRun.status, JobLease.last_status). Members equal their strings: stored as them."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"  # another process holds the lease, or already ran this occurrence


HOLDER = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class JobLease(Base):
    __tablename__ = "job_lease"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    holder: Mapped[str | None] = mapped_column(String(200))
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_succeeded_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # kept when later runs fail
    last_status: Mapped[str | None] = mapped_column(String(20))
    last_error: Mapped[str | None] = mapped_column(String(2000))


# APScheduler's job store table, declared with the exact shape SQLAlchemyJobStore gives it so the
# migrations (0003 creates it) and the models agree; the job store then only checks that it exists.
APSCHEDULER_TABLE = "apscheduler_jobs"


apscheduler_jobs = Table(
    APSCHEDULER_TABLE,
    Base.metadata,
    Column("id", Unicode(191), primary_key=True),
    Column("next_run_time", Float(25), index=True),
    Column("job_state", LargeBinary, nullable=False),
)


def acquire(session: Session, name: str, ttl: timedelta, holder: str = HOLDER, now: datetime | None = None,
            slot: datetime | None = None) -> bool:
    """Try to take the lease on `name` for `ttl`. Commit right after; True when this holder has it.

    The lease is free when released, or expired (its holder crashed or hung). With `slot` (the scheduled
    time of the occurrence being run) a released lease is granted only if no run started at or after
    that time, so a second scheduler process that fires the same occurrence a moment later skips it.
    """
    now = now or utcnow()
    free = JobLease.holder.is_(None)
    if slot is not None:
        free = and_(free, or_(JobLease.last_started_at.is_(None), JobLease.last_started_at < slot))
    crashed = and_(JobLease.holder.is_not(None), or_(JobLease.expires_at.is_(None), JobLease.expires_at < now))
    taken = session.execute(
        update(JobLease)
        .where(JobLease.name == name, or_(free, crashed))
        .values(holder=holder, expires_at=now + ttl, last_started_at=now)
    ).rowcount
    if taken:
        return True
    if session.scalar(select(JobLease.name).where(JobLease.name == name)) is not None:
        return False
    try:
        with session.begin_nested():
            session.execute(insert(JobLease).values(name=name, holder=holder, expires_at=now + ttl, last_started_at=now))
        return True
    except IntegrityError:
        return False


def renew(session: Session, name: str, ttl: timedelta, holder: str = HOLDER, now: datetime | None = None) -> bool:
    """Extend a lease this holder has (the heartbeat of a long run). False when it was lost."""
    now = now or utcnow()
    return bool(session.execute(
        update(JobLease).where(JobLease.name == name, JobLease.holder == holder).values(expires_at=now + ttl)
    ).rowcount)


def release(session: Session, name: str, status: str, error: str | None = None, holder: str = HOLDER,
            now: datetime | None = None) -> None:
    now = now or utcnow()
    success = {"last_succeeded_at": now} if status == JobStatus.SUCCEEDED else {}
    session.execute(
        update(JobLease)
        .where(JobLease.name == name, JobLease.holder == holder)
        .values(holder=None, expires_at=None, last_finished_at=now, last_status=status,
                last_error=(error or None) and error[:2000], **success)
    )


def lapsing_leases(session: Session, before: datetime, names: Iterable[str]) -> list[tuple[str, datetime]]:
    """Leases among `names` still held but expiring before `before`, (name, expiry) soonest first: those
    already expired are a dead (or hung) holder's; the rest lapse then unless their holder renews them."""
    names = list(names)
    if not names:
        return []
    return [(name, expires) for name, expires in session.execute(
        select(JobLease.name, JobLease.expires_at).where(
            JobLease.name.in_(names), JobLease.holder.is_not(None), JobLease.expires_at < before)
        .order_by(JobLease.expires_at, JobLease.name))]


def stale_leases(session: Session, now: datetime, names: Iterable[str]) -> list[str]:
    """Jobs whose lease is still held but expired at `now`: their holder died (or hung) mid-run."""
    return sorted(name for name, _ in lapsing_leases(session, now, names))
