"""The scheduler process: `run_job` runs a job under its lease with a heartbeat, the job registry (`JOBS`),
APScheduler kept in step with the job table (the reconcile job, which also takes over the jobs whose holder
died), the process's start and stop, and the status and run-now of the CLI.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.base import JobLookupError
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import (
    func,
    inspect,
    select,
)
from sqlalchemy.orm import Session, sessionmaker

from attest.audit.export_jobs import sweep
from attest.db import transaction, utcnow
from attest.entitlements.sync import sweep_interrupted
from attest.jobs import tasks
from attest.jobs.lease import (
    APSCHEDULER_TABLE,
    HOLDER,
    JobLease,
    JobStatus,
    acquire,
    lapsing_leases,
    release,
    renew,
)
from attest.jobs.table import (
    MISFIRE_GRACE,
    RECONCILE,
    JobContext,
    JobError,
    JobRun,
    JobSpec,
    SchedulerError,
    job_table,
    log,
)


def run_job(ctx: JobContext, spec: JobSpec, now: datetime | None = None, *, use_slot: bool = True) -> JobRun:
    """Run one job under its lease; `skipped` when another process holds it or already ran this occurrence."""
    now = now or utcnow()
    slot = spec.slot(now) if use_slot else None
    with transaction(ctx.factory) as session:
        got = acquire(session, spec.id, ctx.ttl, ctx.holder, now=now, slot=slot)
    if not got:
        log.debug("job %s: lease held or this run already done elsewhere; skipped", spec.id)
        return JobRun(spec.id, ran=False, status=JobStatus.SKIPPED)
    # which scheduled occurrence this run is (a run outside the schedule: "unscheduled"), in its log lines, so
    # that two runs of one occurrence show in the logs
    occurrence = slot.isoformat() if slot is not None else "unscheduled"
    t0 = ctx.clock()
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(ctx, spec.id, now, t0, stop), daemon=True,
                            name=f"lease-{spec.id}")
    beat.start()
    status, error, detail = JobStatus.FAILED, "interrupted", None
    try:
        detail = JOBS[spec.kind](ctx, spec, now)
        status, error = JobStatus.SUCCEEDED, None
        log.debug("job %s finished (occurrence %s): %s", spec.id, occurrence, detail)
    except Exception as exc:
        status, error = JobStatus.FAILED, f"{type(exc).__name__}: {exc}" if not isinstance(exc, JobError) else str(exc)
        log.error("job %s failed (occurrence %s): %s", spec.id, occurrence, error, exc_info=not isinstance(exc, JobError))
    finally:
        stop.set()
        beat.join(timeout=10)
        finished = now + timedelta(seconds=ctx.clock() - t0)
        try:
            with transaction(ctx.factory) as session:
                release(session, spec.id, status, error, ctx.holder, now=finished)
        except Exception:
            log.exception("job %s: could not release its lease (it expires in %s)", spec.id, ctx.ttl)
    return JobRun(spec.id, ran=True, status=status, error=error, detail=detail)


def _heartbeat(ctx: JobContext, name: str, now: datetime, t0: float, stop: threading.Event) -> None:
    while not stop.wait(ctx.heartbeat):
        at = now + timedelta(seconds=ctx.clock() - t0)
        try:
            with transaction(ctx.factory) as session:
                if not renew(session, name, ctx.ttl, ctx.holder, now=at):
                    log.warning("job %s: lease lost (taken over after expiry); another process may run it", name)
                    return
        except Exception as exc:
            log.warning("job %s: could not renew the lease: %s", name, exc)


SCHEDULER_SEEN_WITHIN = timedelta(minutes=3)


def scheduler_last_seen(session: Session) -> datetime | None:
    """When a scheduler process last started a job that every scheduler runs each minute (its reconcile, or
    the evidence job): None when none ever did. Pages that wait for the scheduler tell it apart from a
    scheduler that is not running."""
    names = (RECONCILE.id, "evidence:export")
    return session.scalar(select(func.max(JobLease.last_started_at)).where(JobLease.name.in_(names)))


def job_reconcile(ctx: JobContext, spec: JobSpec, now: datetime) -> dict[str, list[str]]:
    if ctx.scheduler is None:
        return {"added": [], "changed": [], "removed": []}
    with ctx.factory() as session:
        specs = job_table(session)
    out: dict[str, list[str]] = reconcile(ctx.scheduler, ctx.factory, specs)
    with transaction(ctx.factory) as session:  # syncs whose process died: their sources may sync again
        out["interrupted_runs"] = [str(run_id) for run_id in sweep_interrupted(session, utcnow())]
    return out


def take_over(ctx: JobContext, now: datetime, specs: list[JobSpec]) -> list[str]:
    """Run at once every job whose holder died mid-run, instead of waiting for its next occurrence (a
    daily sync would otherwise wait a day). `watch_takeovers` calls this every TAKEOVER_EVERY seconds, and
    once more at the moment a held lease lapses before the next look (a live holder renews its lease to a
    full LEASE_TTL every HEARTBEAT, so a lease that lapses within seconds is one its holder stopped renewing):
    a standby takes over within LEASE_TTL (and LAPSE_MARGIN) of the holder's last heartbeat, whatever the
    job's interval. The lease still decides: of several standbys, one runs it."""
    # every job, the reconcile too: a dead holder's reconcile lease would otherwise wait for the standby's next
    # minute, up to two minutes after the death (the load benchmark saw 119.8 s)
    by_id = {spec.id: spec for spec in specs}
    with ctx.factory() as session:
        lapsing = lapsing_leases(session, now + timedelta(seconds=TAKEOVER_EVERY), by_id)
    stale = sorted(name for name, expires in lapsing if expires < now)
    for job_id in stale:
        spec = by_id[job_id]
        log.warning("job %s: its holder stopped renewing the lease; taking over now", job_id)
        ctx.scheduler.add_job(scheduled_run, trigger="date", run_date=now, args=spec.args, id=f"{job_id}:takeover",
                              name=f"{job_id} (takeover)", replace_existing=True, misfire_grace_time=MISFIRE_GRACE,
                              jobstore="local")
    soon = [expires for _, expires in lapsing if expires >= now]
    if soon:
        ctx.scheduler.add_job(watch_takeovers, trigger="date", run_date=min(soon) + LAPSE_MARGIN, args=[ctx],
                              id=TAKEOVER_AT_LAPSE, name=TAKEOVER_AT_LAPSE, replace_existing=True,
                              misfire_grace_time=MISFIRE_GRACE, jobstore="local")
    return stale


TAKEOVER_EVERY = 5.0  # seconds between two looks for a dead holder's lease (one small SELECT)
TAKEOVER_WATCH = "scheduler:takeover-watch"
TAKEOVER_AT_LAPSE = "scheduler:takeover-at-lapse"  # the one look at the moment a lease lapses between two looks
LAPSE_MARGIN = timedelta(milliseconds=200)  # after the lapse: the look's `expires_at < now` holds on either clock


def watch_takeovers(ctx: JobContext, now: datetime | None = None) -> list[str]:
    """Each scheduler process's own look for jobs whose holder died (`take_over`), every TAKEOVER_EVERY
    seconds and when a lease lapses in between. It takes no lease: it only queues a one-off run, and that run's
    lease lets one process run the job. So a takeover never waits behind the reconcile job, whose lease a dead
    scheduler may hold too."""
    now = now or utcnow()
    try:
        with ctx.factory() as session:
            specs = job_table(session)
        return take_over(ctx, now, specs)
    except Exception as exc:  # the database is away: the next look, seconds later, tries again
        log.warning("scheduler %s: could not look for jobs to take over: %s", ctx.holder, exc)
        return []


JOBS: dict[str, Callable[[JobContext, JobSpec, datetime], Any]] = {
    "sync": tasks.job_sync,
    "sync_requests": tasks.job_sync_requests,
    "launch": tasks.job_launch,
    "close": tasks.job_close,
    "notify": tasks.job_notify,
    "remediation": tasks.job_remediation,
    "reconcile": job_reconcile,
    "purge": tasks.job_purge,
    "checkpoint": tasks.job_checkpoint,
    "evidence": tasks.job_evidence,
}


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
    if specs is None:
        with factory() as session:
            specs = job_table(session)
    wanted = {spec.id: spec for spec in specs}
    # the shared store only: the "local" one holds this process's takeover runs and its takeover watch
    current = {job.id: job for job in scheduler.get_jobs(jobstore="default")}
    out: dict[str, list[str]] = {"added": [], "changed": [], "removed": []}
    for spec in specs:
        job = current.get(spec.id)
        if job is not None and list(job.args) == spec.args:
            continue
        scheduler.add_job(scheduled_run, trigger=spec.trigger(), args=spec.args, id=spec.id, name=spec.id,
                          replace_existing=True, coalesce=True, max_instances=1, misfire_grace_time=MISFIRE_GRACE)
        out["changed" if job is not None else "added"].append(spec.id)
    for job_id in sorted(current.keys() - wanted.keys()):
        with contextlib.suppress(JobLookupError):  # another scheduler process removed it first
            scheduler.remove_job(job_id)
        out["removed"].append(job_id)
    if any(out.values()):
        log.info("scheduler jobs: %s", ", ".join(f"{k} {', '.join(v)}" for k, v in out.items() if v))
    return out


def _shared_job_store(engine: Any):
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
    if not inspect(engine).has_table(APSCHEDULER_TABLE):
        raise SchedulerError("the database has no scheduler tables yet: run `attest db upgrade` first")
    scheduler = BackgroundScheduler(
        # "local": this process's takeover watch and one-off runs (take_over), which no other scheduler may
        # see or remove
        jobstores={"default": _shared_job_store(engine), "local": MemoryJobStore()},
        executors={"default": ThreadPoolExecutor(max_workers=8)},
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": MISFIRE_GRACE},
        timezone=UTC,
    )
    ctx = JobContext(factory, settings, holder, scheduler)
    scheduler.add_job(watch_takeovers, trigger="interval", seconds=TAKEOVER_EVERY, args=[ctx], id=TAKEOVER_WATCH,
                      name=TAKEOVER_WATCH, jobstore="local", coalesce=True, max_instances=1)
    return scheduler, ctx


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


def status(session: Session, now: datetime | None = None) -> list[dict[str, Any]]:
    """Each job's schedule, next run, last run and last success (from its lease row), for `attest scheduler
    --status`, the Jobs page (/admin/jobs) and /metrics."""
    now = now or utcnow()
    specs = {spec.id: spec for spec in job_table(session)}
    leases = {row.name: row for row in session.scalars(select(JobLease).order_by(JobLease.name))}
    out = []
    for name in sorted(specs.keys() | leases.keys()):
        spec, row = specs.get(name), leases.get(name)
        if spec is None and name.startswith("campaigns:launch:") and row is not None and row.last_status == JobStatus.SUCCEEDED:
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
