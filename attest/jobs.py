"""The scheduler (`attest scheduler`) and its job lease.

Jobs (`job_table`): each enabled Source with a `schedule` is synced on its cron; recurring campaign
launches (`schedule.due_to_launch`), closes at the due date (`schedule.due_to_close`), review e-mail
(`notify.send_pending`) and remediation runs (`remediation.run_pending`) run every few minutes; the audit
chain's head is checkpointed outside the database every minute with new events (`audit:checkpoint`); the
evidence bundles asked for on the web are built one at a time (`evidence:export`, attest.audit.export_jobs:
each minute's run keeps looking for new ones every 2 s, so web workers never build a bundle); a
`reconcile` job keeps APScheduler's job list in step with the sources and definitions; the syncs asked
for on the web ("Sync now") run each minute (`sources:sync-requests`) under their source's `sync:<name>` lease.

APScheduler 3 keeps the jobs in the app database (`apscheduler_jobs`, created by migration 0003; the
job store never creates tables here). Several scheduler processes may share it: every run first takes
the job's **lease** (`acquire`: one conditional UPDATE, or an INSERT for a new job), committed at once,
and releases it with the run's status and error. A lease is granted only when it is free and this
occurrence of the job has not started yet, or when its holder crashed (the lease expired), so two
processes never run the same job twice. A running job renews its lease (a heartbeat thread), so a short
TTL is enough and a crashed holder's lease lapses within minutes; every minute the reconcile job of each
scheduler runs the jobs whose holder died at once (`take_over`), so a standby takes over at most
LEASE_TTL plus one minute after the holder's last heartbeat, whatever the job's own interval.

Every job function takes `now`, so tests drive time. Web workers never run jobs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    Column,
    Float,
    LargeBinary,
    String,
    Table,
    Unicode,
    and_,
    func,
    insert,
    inspect,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from attest.db import Base, UTCDateTime, transaction, utcnow
from attest.schedules import cron_trigger, previous_fire_time

log = logging.getLogger("attest.jobs")

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
    success = {"last_succeeded_at": now} if status == "succeeded" else {}
    session.execute(
        update(JobLease)
        .where(JobLease.name == name, JobLease.holder == holder)
        .values(holder=None, expires_at=None, last_finished_at=now, last_status=status,
                last_error=(error or None) and error[:2000], **success)
    )


# --- the job table ---------------------------------------------------------------------------------

ACTOR = "scheduler"
LEASE_TTL = timedelta(minutes=2)  # renewed every HEARTBEAT seconds while a job runs
HEARTBEAT = 30.0
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
    from attest.entitlements.models import Source

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


# --- running one job -------------------------------------------------------------------------------


@dataclass
class JobContext:
    factory: sessionmaker[Session]
    settings: Any  # attest.config.Settings
    holder: str = HOLDER
    scheduler: Any = None  # the APScheduler instance, for the reconcile job
    ttl: timedelta = LEASE_TTL
    heartbeat: float = HEARTBEAT
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
    status: str  # succeeded | failed | skipped
    error: str | None = None
    detail: Any = None


def run_job(ctx: JobContext, spec: JobSpec, now: datetime | None = None, *, use_slot: bool = True) -> JobRun:
    """Run one job under its lease; `skipped` when another process holds it or already ran this occurrence."""
    now = now or utcnow()
    slot = spec.slot(now) if use_slot else None
    with transaction(ctx.factory) as session:
        got = acquire(session, spec.id, ctx.ttl, ctx.holder, now=now, slot=slot)
    if not got:
        log.debug("job %s: lease held or this run already done elsewhere; skipped", spec.id)
        return JobRun(spec.id, ran=False, status="skipped")
    t0 = time.monotonic()
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(ctx, spec.id, now, t0, stop), daemon=True,
                            name=f"lease-{spec.id}")
    beat.start()
    status, error, detail = "failed", "interrupted", None
    try:
        detail = JOBS[spec.kind](ctx, spec, now)
        status, error = "succeeded", None
        log.debug("job %s: %s", spec.id, detail)
    except Exception as exc:
        status, error = "failed", f"{type(exc).__name__}: {exc}" if not isinstance(exc, JobError) else str(exc)
        log.error("job %s failed: %s", spec.id, error, exc_info=not isinstance(exc, JobError))
    finally:
        stop.set()
        beat.join(timeout=10)
        finished = now + timedelta(seconds=time.monotonic() - t0)
        try:
            with transaction(ctx.factory) as session:
                release(session, spec.id, status, error, ctx.holder, now=finished)
        except Exception:
            log.exception("job %s: could not release its lease (it expires in %s)", spec.id, ctx.ttl)
    return JobRun(spec.id, ran=True, status=status, error=error, detail=detail)


def _heartbeat(ctx: JobContext, name: str, now: datetime, t0: float, stop: threading.Event) -> None:
    while not stop.wait(ctx.heartbeat):
        at = now + timedelta(seconds=time.monotonic() - t0)
        try:
            with transaction(ctx.factory) as session:
                if not renew(session, name, ctx.ttl, ctx.holder, now=at):
                    log.warning("job %s: lease lost (taken over after expiry); another process may run it", name)
                    return
        except Exception as exc:
            log.warning("job %s: could not renew the lease: %s", name, exc)


def _transaction(ctx: JobContext):
    return transaction(ctx.factory)


def job_sync(ctx: JobContext, spec: JobSpec, now: datetime) -> str:
    from attest.entitlements.models import Source
    from attest.entitlements.sync import run_sync

    with ctx.factory() as session:
        enabled = session.scalar(select(Source.enabled).where(Source.name == spec.arg))
    if not enabled:
        return f"source {spec.arg} is gone or disabled; not synced"
    result = run_sync(ctx.factory, ctx.settings, spec.arg, triggered_by="scheduler", actor=ACTOR)
    if not result.ok:
        raise JobError(f"sync of {spec.arg} {result.status} (run {result.run_id}): {result.error or 'see the run'}")
    return f"sync of {spec.arg}: {result.status} (run {result.run_id})"


PROGRESS_EVERY = 2.0  # seconds between two writes of a requested sync's progress (the page polls every 2 s)


def _progress_writer(ctx: JobContext, source_name: str) -> Callable[[Any], None]:
    """A run_sync progress callback that keeps the running run's `stats["progress"]` (phase, records, API
    requests, seconds) current for the source page, at most every PROGRESS_EVERY seconds and at each new
    phase; the finished run's stats replace it."""
    from attest.entitlements.models import Source, SyncRun

    last: dict[str, Any] = {"at": 0.0, "phase": None}

    def write(prog: Any) -> None:
        if prog.phase == last["phase"] and time.monotonic() - last["at"] < PROGRESS_EVERY:
            return
        last["at"], last["phase"] = time.monotonic(), prog.phase
        progress = {"phase": prog.phase, "records": prog.records, "requests": prog.requests,
                    "seconds": round(prog.elapsed, 1)}
        try:
            with _transaction(ctx) as session:
                session.execute(update(SyncRun).where(
                    SyncRun.status == "running",
                    SyncRun.source_id == select(Source.id).where(Source.name == source_name).scalar_subquery(),
                ).values(stats={"progress": progress}))
        except Exception as exc:  # progress is for the page only; the run goes on
            log.warning("sync of %s: progress not written: %s", source_name, exc)

    return write


def job_sync_requests(ctx: JobContext, spec: JobSpec, now: datetime) -> list[str]:
    """Run the syncs asked for on the web ("Sync now", `sources.request_sync`), oldest request first, each under
    its source's `sync:<name>` lease, so it never runs beside the source's scheduled sync (a source whose
    lease is held keeps its request for the next minute). The request is cleared when the lease is taken."""
    from attest.entitlements.models import Source
    from attest.entitlements.sync import SyncError, run_sync

    with ctx.factory() as session:
        queued = session.execute(select(Source.name, Source.sync_requested_by).where(
            Source.sync_requested_at.is_not(None)).order_by(Source.sync_requested_at, Source.id)).all()
    done, errors = [], []
    for name, requested_by in queued:
        lease = f"sync:{name}"
        with _transaction(ctx) as session:
            if not acquire(session, lease, ctx.ttl, ctx.holder, now=now):
                continue
            session.execute(update(Source).where(Source.name == name).values(sync_requested_at=None,
                                                                               sync_requested_by=None))
            enabled = session.scalar(select(Source.enabled).where(Source.name == name))
        status, error = "succeeded", None
        try:
            if not enabled:
                continue
            result = run_sync(ctx.factory, ctx.settings, name, triggered_by=f"sync now by {requested_by}", actor=ACTOR,
                              progress=_progress_writer(ctx, name))
            if not result.ok:
                status, error = "failed", f"sync of {name} {result.status} (run {result.run_id}): {result.error or 'see the run'}"
            done.append(f"{name}: {result.status} (run {result.run_id})")
        except SyncError as exc:
            status, error = "failed", f"sync of {name}: {exc}"
        except Exception as exc:
            status, error = "failed", f"sync of {name}: {type(exc).__name__}: {exc}"
            log.exception("requested sync of %s failed", name)
        finally:
            with _transaction(ctx) as session:
                release(session, lease, status, error, ctx.holder, now=now)
        if error:
            errors.append(error)
    if errors:
        raise JobError("; ".join(errors))
    return done


LAUNCH_RETRY = timedelta(hours=1)  # a recurring launch that failed is tried again at most this often


def job_launch(ctx: JobContext, spec: JobSpec, now: datetime) -> list[int]:
    """Launch a campaign for every definition whose cron schedule fired since its last launch.

    Each launch runs in its own transaction under a per-definition lease: a launch that fails (say, items
    nobody can review and no fallback reviewer) changes nothing, is logged with its reason on the lease
    row `campaigns:launch:<definition id>`, and is retried at most once per LAUNCH_RETRY.
    """
    from attest.reviews import campaigns, schedule

    with _transaction(ctx) as session:
        due = schedule.due_to_launch(session, now)
    launched, errors = [], []
    for definition_id in due:
        lease = f"campaigns:launch:{definition_id}"
        with _transaction(ctx) as session:
            if not acquire(session, lease, ctx.ttl, ctx.holder, now=now, slot=now - LAUNCH_RETRY):
                continue
        status, error = "succeeded", None
        try:
            with _transaction(ctx) as session:
                campaign = campaigns.create_campaign(session, definition_id, ACTOR)
                campaigns.launch(session, campaign.id, ACTOR, now=now)
                campaign_id = campaign.id
            launched.append(campaign_id)
            log.info("launched campaign %s from definition %s", campaign_id, definition_id)
        except Exception as exc:
            status, error = "failed", str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"
            log.error("definition %s: recurring launch failed (retried in %s): %s", definition_id, LAUNCH_RETRY,
                      error, exc_info=not isinstance(exc, ValueError))
            errors.append(f"definition {definition_id}: {error}")
        finally:
            with _transaction(ctx) as session:
                release(session, lease, status, error, ctx.holder, now=now)
    if errors:
        raise JobError("; ".join(errors))
    return launched


def auto_close_at(campaign: Any) -> datetime | None:
    """When the scheduler closes an active campaign.

    At its due date, unless the campaign escalates overdue reviews (`timing.escalate_after_days_overdue`
    = N): then reviewers keep N days after the due date before their manager is added as co-reviewer,
    and the co-reviewer gets N more days (at least one) before the campaign closes. A campaign can always
    be closed earlier by hand.
    """
    if campaign.due_at is None:
        return None
    escalate = ((campaign.spec or {}).get("timing") or {}).get("escalate_after_days_overdue")
    if escalate is None:
        return campaign.due_at
    return campaign.due_at + timedelta(days=int(escalate) + max(int(escalate), 1))


def job_close(ctx: JobContext, spec: JobSpec, now: datetime) -> list[int]:
    """Close every active campaign that is due (see `auto_close_at` for campaigns that escalate)."""
    from attest.reviews import campaigns, schedule
    from attest.reviews.models import Campaign

    with _transaction(ctx) as session:
        due = [cid for cid in schedule.due_to_close(session, now)
               if (at := auto_close_at(session.get(Campaign, cid))) is not None and at <= now]
    closed, errors = [], []
    for campaign_id in due:
        try:
            with _transaction(ctx) as session:
                campaigns.close(session, campaign_id, ACTOR, now=now)
            closed.append(campaign_id)
            log.info("closed campaign %s (due)", campaign_id)
        except Exception as exc:
            log.error("campaign %s: close failed: %s", campaign_id, exc, exc_info=not isinstance(exc, ValueError))
            errors.append(f"campaign {campaign_id}: {exc}")
    if errors:
        raise JobError("; ".join(errors))
    return closed


def job_notify(ctx: JobContext, spec: JobSpec, now: datetime) -> int:
    """Send the review e-mail due at `now`, each mail recorded as soon as it was accepted (notify.send_due)."""
    from attest.reviews import notify

    with notify.Mailer(ctx.settings) as mailer:
        sent = notify.send_due(ctx.factory, ctx.settings, now, mailer=mailer, actor=ACTOR)
    if mailer.down:
        raise JobError(f"{sent} mails sent; the mail server failed, the rest will be retried on the next run")
    return sent


def job_remediation(ctx: JobContext, spec: JobSpec, now: datetime) -> Any:
    from attest.reviews import remediation

    run_pending = ctx.run_remediation or remediation.run_pending
    return run_pending(ctx.factory, ctx.settings, now=now, actor=ACTOR)


def job_checkpoint(ctx: JobContext, spec: JobSpec, now: datetime) -> str:
    """Sign the audit chain's head and write it outside the database, when events were written since the
    last checkpoint (at most one a minute; see attest.audit.checkpoints)."""
    from attest.audit.checkpoints import CheckpointError, open_store, write_checkpoint
    from attest.audit.evidence import EvidenceError, load_signing_key

    try:
        key = load_signing_key(ctx.settings)
    except EvidenceError as exc:
        raise JobError(f"audit checkpoints are not written: {exc}") from None
    try:
        with _transaction(ctx) as session:
            written = write_checkpoint(session, key, open_store(ctx.settings), now)
    except CheckpointError as exc:
        raise JobError(str(exc)) from None
    return f"checkpoint {written.name} (seq {written.seq})" if written else "no new audit events"


EVIDENCE_LINGER = 50.0  # seconds a scheduler's evidence job keeps looking for new exports (every 2 s)


def job_evidence(ctx: JobContext, spec: JobSpec, now: datetime) -> dict[str, Any]:
    """Build the evidence bundles asked for on the web (attest.audit.export_jobs), one at a time, under this
    job's lease; in a scheduler process, keep looking for new ones for most of the minute so an export
    starts within seconds of being asked for. Also requeues exports whose process died and removes
    expired bundles and partial files."""
    from attest.audit import export_jobs

    def wait(seconds: float) -> None:
        with ctx.runs:
            ctx.runs.wait_for(lambda: ctx.stopping, timeout=seconds)

    out = export_jobs.run_pending(ctx.factory, ctx.settings, ctx.holder, now,
                                  linger=EVIDENCE_LINGER if ctx.scheduler is not None else 0.0,
                                  stopping=lambda: ctx.stopping, wait=wait)
    failed = [str(i) for i, outcome in out["built"] if outcome == "failed"]
    if failed:
        raise JobError(f"evidence exports failed: {', '.join(failed)} (the error is on each export)")
    return out


SCHEDULER_SEEN_WITHIN = timedelta(minutes=3)


def scheduler_last_seen(session: Session) -> datetime | None:
    """When a scheduler process last started a job that every scheduler runs each minute (its reconcile, or
    the evidence job): None when none ever did. Pages that wait for the scheduler tell it apart from a
    scheduler that is not running."""
    names = (RECONCILE.id, "evidence:export")
    return session.scalar(select(func.max(JobLease.last_started_at)).where(JobLease.name.in_(names)))


def job_purge(ctx: JobContext, spec: JobSpec, now: datetime) -> dict[str, int]:
    """Daily: old sign-in session rows and quiet sign-in throttle counters go."""
    from attest.auth import sessions, throttle

    with _transaction(ctx) as session:
        return {"sessions": sessions.purge(session, now), "throttle": throttle.purge(session, now)}


def job_reconcile(ctx: JobContext, spec: JobSpec, now: datetime) -> dict[str, list[str]]:
    if ctx.scheduler is None:
        return {"added": [], "changed": [], "removed": [], "taken_over": []}
    with ctx.factory() as session:
        specs = job_table(session)
    out: dict[str, list[str]] = reconcile(ctx.scheduler, ctx.factory, specs)
    out["taken_over"] = take_over(ctx.scheduler, ctx.factory, now, specs)
    from attest.entitlements.sync import sweep_interrupted

    with transaction(ctx.factory) as session:  # syncs whose process died: their sources may sync again
        out["interrupted_runs"] = [str(run_id) for run_id in sweep_interrupted(session, utcnow())]
    return out


def stale_leases(session: Session, now: datetime, names: Iterable[str]) -> list[str]:
    """Jobs whose lease is still held but expired at `now`: their holder died (or hung) mid-run."""
    names = list(names)
    if not names:
        return []
    return list(session.scalars(select(JobLease.name).where(
        JobLease.name.in_(names), JobLease.holder.is_not(None), JobLease.expires_at < now).order_by(JobLease.name)))


def take_over(scheduler: Any, factory: sessionmaker[Session], now: datetime, specs: list[JobSpec]) -> list[str]:
    """Run at once every job whose holder died mid-run, instead of waiting for its next occurrence (a
    daily sync would otherwise wait a day). The reconcile job calls this every minute, so a standby
    takes over at most LEASE_TTL plus one minute after the holder's last heartbeat, whatever the job's
    interval. The lease still decides: of several standbys, one runs it."""
    by_id = {spec.id: spec for spec in specs if spec.kind != "reconcile"}
    with factory() as session:
        stale = stale_leases(session, now, by_id)
    for job_id in stale:
        spec = by_id[job_id]
        log.warning("job %s: its holder stopped renewing the lease; taking over now", job_id)
        scheduler.add_job(scheduled_run, trigger="date", run_date=now, args=spec.args, id=f"{job_id}:takeover",
                          name=f"{job_id} (takeover)", replace_existing=True, misfire_grace_time=MISFIRE_GRACE,
                          jobstore="local")
    return stale


JOBS: dict[str, Callable[[JobContext, JobSpec, datetime], Any]] = {
    "sync": job_sync,
    "sync_requests": job_sync_requests,
    "launch": job_launch,
    "close": job_close,
    "notify": job_notify,
    "remediation": job_remediation,
    "reconcile": job_reconcile,
    "purge": job_purge,
    "checkpoint": job_checkpoint,
    "evidence": job_evidence,
}


# --- the scheduler ---------------------------------------------------------------------------------

_RUNTIME: JobContext | None = None


def scheduled_run(job_id: str, kind: str, cron: str, arg: str | None = None) -> None:
    """What APScheduler calls (a textual reference in the job store): run the job under its lease."""
    ctx = _RUNTIME
    if ctx is None:  # pragma: no cover - only a scheduler process registers jobs
        log.error("job %s fired outside a running scheduler; ignored", job_id)
        return
    with ctx.runs:
        if ctx.stopping:
            log.info("job %s: not started, the scheduler is stopping", job_id)
            return
        ctx.running.append(job_id)
    try:
        run_job(ctx, JobSpec(job_id, kind, cron, arg))
    finally:
        with ctx.runs:
            ctx.running.remove(job_id)
            ctx.runs.notify_all()


def reconcile(scheduler: Any, factory: sessionmaker[Session], specs: list[JobSpec] | None = None,
              ) -> dict[str, list[str]]:
    """Make the scheduler's jobs match `job_table` (or `specs`, read from it already): add new ones,
    update changed crons, drop the rest."""
    from apscheduler.jobstores.base import JobLookupError

    if specs is None:
        with factory() as session:
            specs = job_table(session)
    wanted = {spec.id: spec for spec in specs}
    current = {job.id: job for job in scheduler.get_jobs()}
    out: dict[str, list[str]] = {"added": [], "changed": [], "removed": []}
    for spec in specs:
        job = current.get(spec.id)
        if job is not None and list(job.args) == spec.args:
            continue
        scheduler.add_job(scheduled_run, trigger=spec.trigger(), args=spec.args, id=spec.id, name=spec.id,
                          replace_existing=True, coalesce=True, max_instances=1, misfire_grace_time=MISFIRE_GRACE)
        out["changed" if job is not None else "added"].append(spec.id)
    for job_id in sorted(current.keys() - wanted.keys()):
        if job_id.endswith(":takeover"):
            continue  # a one-off run of a job whose holder died (take_over): it removes itself once run
        with contextlib.suppress(JobLookupError):  # another scheduler process removed it first
            scheduler.remove_job(job_id)
        out["removed"].append(job_id)
    if any(out.values()):
        log.info("scheduler jobs: %s", ", ".join(f"{k} {', '.join(v)}" for k, v in out.items() if v))
    return out


def _shared_job_store(engine: Any):
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore

    class SharedJobStore(SQLAlchemyJobStore):
        """The job store several scheduler processes share.

        Storing a job's next run time must not stop the scheduler loop: the job may have just been
        removed by another process's reconcile, or SQLite may be busy with a long sync. The run itself
        is safe either way (the lease lets each occurrence run once), so such a failure is only logged.
        """

        def update_job(self, job) -> None:
            try:
                super().update_job(job)
            except Exception as exc:
                log.debug("job %s: next run time not stored (%s: %s)", job.id, type(exc).__name__, exc)

    return SharedJobStore(engine=engine, tablename=APSCHEDULER_TABLE)


def make_scheduler(engine: Any, factory: sessionmaker[Session], settings: Any, holder: str = HOLDER):
    """A paused-ready BackgroundScheduler on the app database's job store, and its JobContext."""
    from apscheduler.executors.pool import ThreadPoolExecutor
    from apscheduler.jobstores.memory import MemoryJobStore
    from apscheduler.schedulers.background import BackgroundScheduler

    if not inspect(engine).has_table(APSCHEDULER_TABLE):
        raise SchedulerError("the database has no scheduler tables yet: run `attest db upgrade` first")
    scheduler = BackgroundScheduler(
        # "local": this process's one-off runs (take_over), which no other scheduler may see or remove
        jobstores={"default": _shared_job_store(engine), "local": MemoryJobStore()},
        executors={"default": ThreadPoolExecutor(max_workers=8)},
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": MISFIRE_GRACE},
        timezone=UTC,
    )
    return scheduler, JobContext(factory, settings, holder, scheduler)


def run_scheduler(settings: Any, engine: Any, factory: sessionmaker[Session], *, holder: str = HOLDER,
                  stop: threading.Event | None = None):
    """Start the scheduler (`attest scheduler`): reconcile the job list, then run jobs until stopped.

    Returns after SIGINT/SIGTERM or `stop` is set, having waited for running jobs (`_stop`). (It never
    hands out the running scheduler: its plain `shutdown(wait=True)` can deadlock on a running reconcile.)
    """
    global _RUNTIME
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    scheduler, ctx = make_scheduler(engine, factory, settings, holder)
    _RUNTIME = ctx
    _start_sweep(factory, settings)
    scheduler.start(paused=True)
    try:
        run_job(ctx, RECONCILE, use_slot=False)
    finally:
        scheduler.resume()
    log.info("scheduler %s started: %d jobs", holder, len(scheduler.get_jobs()))
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
    try:
        while not stop.wait(15):
            loop = getattr(scheduler, "_thread", None)
            if loop is not None and not loop.is_alive():
                log.error("scheduler %s: the scheduling loop stopped unexpectedly; exiting so it is restarted", holder)
                raise SchedulerError("the scheduling loop stopped unexpectedly (see the log above)")
    finally:
        _stop(scheduler, ctx)
        _RUNTIME = None
    return scheduler


def _start_sweep(factory: sessionmaker[Session], settings: Any) -> None:
    """At start: what a killed evidence export left behind (its partial files; its row, requeued or failed)."""
    from attest.audit.export_jobs import sweep

    try:
        swept = sweep(factory, settings, utcnow())
    except Exception as exc:
        log.warning("scheduler start: the evidence export sweep failed (it runs again each minute): %s", exc)
        return
    if any(swept.values()):
        log.info("scheduler start: evidence exports %s", {k: v for k, v in swept.items() if v})


def _stop(scheduler: Any, ctx: JobContext) -> None:
    """Stop the scheduler: no job starts any more; the running ones finish and release their leases.

    The running jobs are waited for here, not by `shutdown(wait=True)` alone: APScheduler waits for them
    while holding its job store lock, which a running reconcile job needs (`get_jobs`, `add_job`), so a
    reconcile that fired just before the stop deadlocked it for good.
    """
    scheduler.pause()  # the loop hands out no more due jobs
    with ctx.runs:
        ctx.stopping = True  # and one handed out a moment ago does not start
        log.info("scheduler %s stopping%s", ctx.holder,
                 f" (waiting for {', '.join(sorted(ctx.running))})" if ctx.running else "")
        ctx.runs.wait_for(lambda: not ctx.running)
    scheduler.shutdown(wait=True)  # what is left are runs that return at once
    log.info("scheduler %s stopped", ctx.holder)


# --- operators: status and run-now ------------------------------------------------------------------


def status(session: Session, now: datetime | None = None) -> list[dict[str, Any]]:
    """Each job's schedule, next run, last run and last success (from its lease row), for `attest scheduler
    --status`, the Jobs page (/admin/jobs) and /metrics."""
    now = now or utcnow()
    specs = {spec.id: spec for spec in job_table(session)}
    leases = {row.name: row for row in session.scalars(select(JobLease).order_by(JobLease.name))}
    out = []
    for name in sorted(specs.keys() | leases.keys()):
        spec, row = specs.get(name), leases.get(name)
        if spec is None and name.startswith("campaigns:launch:") and row is not None and row.last_status == "succeeded":
            continue  # per-definition launch leases: only failures are worth showing
        out.append({
            "job": name,
            "schedule": spec.cron if spec else None,
            "next_run_at": spec.trigger().get_next_fire_time(None, now) if spec else None,
            "running_on": row.holder if row and row.holder and row.expires_at and row.expires_at >= now else None,
            "last_status": row.last_status if row else None,
            "last_started_at": row.last_started_at if row else None,
            "last_finished_at": row.last_finished_at if row else None,
            "last_succeeded_at": row.last_succeeded_at if row else None,
            "last_error": row.last_error if row else None,
        })
    return out


def run_now(factory: sessionmaker[Session], settings: Any, job_id: str, holder: str = HOLDER) -> JobRun:
    """Run one job at once under its lease (an operator's `attest scheduler --run JOB`)."""
    with factory() as session:
        specs = {spec.id: spec for spec in job_table(session)}
    spec = specs.get(job_id)
    if spec is None:
        raise SchedulerError(f"no job {job_id!r}; jobs: {', '.join(sorted(specs))}")
    if spec.kind == "reconcile":
        raise SchedulerError("scheduler:reconcile runs inside a scheduler process; start `attest scheduler`")
    return run_job(JobContext(factory, settings, holder), spec, use_slot=False)
