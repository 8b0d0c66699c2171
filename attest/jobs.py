"""The scheduler's job lease: a row per job name that at most one scheduler process holds at a time.

`acquire()` takes the lease when it is free or expired (a crashed holder's lease lapses), in one
conditional UPDATE (or INSERT for a new job), so two scheduler processes never run the same job at once.
"""

from __future__ import annotations

import os
import socket
import uuid
from datetime import datetime, timedelta

from sqlalchemy import String, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from attest.db import Base, UTCDateTime, utcnow

HOLDER = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class JobLease(Base):
    __tablename__ = "job_lease"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    holder: Mapped[str | None] = mapped_column(String(200))
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_status: Mapped[str | None] = mapped_column(String(20))
    last_error: Mapped[str | None] = mapped_column(String(2000))


def acquire(session: Session, name: str, ttl: timedelta, holder: str = HOLDER, now: datetime | None = None) -> bool:
    """Try to take the lease on `name` for `ttl`. Commit right after; True when this holder has it."""
    now = now or utcnow()
    taken = session.execute(
        update(JobLease)
        .where(JobLease.name == name, (JobLease.expires_at.is_(None)) | (JobLease.expires_at < now) | (JobLease.holder == holder))
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


def release(session: Session, name: str, status: str, error: str | None = None, holder: str = HOLDER) -> None:
    session.execute(
        update(JobLease)
        .where(JobLease.name == name, JobLease.holder == holder)
        .values(holder=None, expires_at=None, last_finished_at=utcnow(), last_status=status,
                last_error=(error or None) and error[:2000])
    )
