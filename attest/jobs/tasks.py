"""The job functions, one per kind: sync a source, run the syncs asked for on the web, launch and close
campaigns, send review e-mail, run remediations, checkpoint the audit chain, build evidence bundles, purge.
Each takes `now`, so tests drive time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    select,
    update,
)

from attest.audit import export_jobs
from attest.audit.checkpoints import CheckpointError, open_store, write_checkpoint
from attest.audit.evidence import EvidenceError, load_signing_key
from attest.audit.models import ExportStatus
from attest.auth import sessions, throttle
from attest.db import transaction
from attest.entitlements.models import RunStatus, Source, SyncRun
from attest.entitlements.sync import SyncError, run_sync
from attest.jobs.lease import JobStatus, acquire, release
from attest.jobs.table import ACTOR, JobContext, JobError, JobSpec, log
from attest.reviews import campaigns, notify, remediation, schedule
from attest.reviews.models import Campaign


def _transaction(ctx: JobContext):
    return transaction(ctx.factory)


def job_sync(ctx: JobContext, spec: JobSpec, now: datetime) -> str:
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
                    SyncRun.status == RunStatus.RUNNING,
                    SyncRun.source_id == select(Source.id).where(Source.name == source_name).scalar_subquery(),
                ).values(stats={"progress": progress}))
        except Exception as exc:  # progress is for the page only; the run goes on
            log.warning("sync of %s: progress not written: %s", source_name, exc)

    return write


def job_sync_requests(ctx: JobContext, spec: JobSpec, now: datetime) -> list[str]:
    """Run the syncs asked for on the web ("Sync now", `sources.request_sync`), oldest request first, each under
    its source's `sync:<name>` lease, so it never runs beside the source's scheduled sync (a source whose
    lease is held keeps its request for the next minute). The request is cleared when the lease is taken."""
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
        status, error = JobStatus.SUCCEEDED, None
        try:
            if not enabled:
                continue
            result = run_sync(ctx.factory, ctx.settings, name, triggered_by=f"sync now by {requested_by}", actor=ACTOR,
                              progress=_progress_writer(ctx, name))
            if not result.ok:
                status, error = JobStatus.FAILED, f"sync of {name} {result.status} (run {result.run_id}): {result.error or 'see the run'}"
            done.append(f"{name}: {result.status} (run {result.run_id})")
        except SyncError as exc:
            status, error = JobStatus.FAILED, f"sync of {name}: {exc}"
        except Exception as exc:
            status, error = JobStatus.FAILED, f"sync of {name}: {type(exc).__name__}: {exc}"
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
    with _transaction(ctx) as session:
        due = schedule.due_to_launch(session, now)
    launched, errors = [], []
    for definition_id in due:
        lease = f"campaigns:launch:{definition_id}"
        with _transaction(ctx) as session:
            if not acquire(session, lease, ctx.ttl, ctx.holder, now=now, slot=now - LAUNCH_RETRY):
                continue
        status, error = JobStatus.SUCCEEDED, None
        try:
            with _transaction(ctx) as session:
                campaign = campaigns.create_campaign(session, definition_id, ACTOR)
                campaigns.launch(session, campaign.id, ACTOR, now=now)
                campaign_id = campaign.id
            launched.append(campaign_id)
            log.info("launched campaign %s from definition %s", campaign_id, definition_id)
        except Exception as exc:
            status, error = JobStatus.FAILED, str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"
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
    with notify.Mailer(ctx.settings) as mailer:
        sent = notify.send_due(ctx.factory, ctx.settings, now, mailer=mailer, actor=ACTOR)
    if mailer.down:
        raise JobError(f"{sent} mails sent; the mail server failed, the rest will be retried on the next run")
    return sent


def job_remediation(ctx: JobContext, spec: JobSpec, now: datetime) -> Any:
    run_pending = ctx.run_remediation or remediation.run_pending
    return run_pending(ctx.factory, ctx.settings, now=now, actor=ACTOR)


def job_checkpoint(ctx: JobContext, spec: JobSpec, now: datetime) -> str:
    """Sign the audit chain's head and write it outside the database, when events were written since the
    last checkpoint (at most one a minute; see attest.audit.checkpoints)."""
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
    def wait(seconds: float) -> None:
        with ctx.runs:
            ctx.runs.wait_for(lambda: ctx.stopping, timeout=seconds)

    out = export_jobs.run_pending(ctx.factory, ctx.settings, ctx.holder, now,
                                  linger=EVIDENCE_LINGER if ctx.scheduler is not None else 0.0,
                                  stopping=lambda: ctx.stopping, wait=wait)
    failed = [str(i) for i, outcome in out["built"] if outcome == ExportStatus.FAILED]
    if failed:
        raise JobError(f"evidence exports failed: {', '.join(failed)} (the error is on each export)")
    return out


def job_purge(ctx: JobContext, spec: JobSpec, now: datetime) -> dict[str, int]:
    """Daily: old sign-in session rows and quiet sign-in throttle counters go."""
    with _transaction(ctx) as session:
        return {"sessions": sessions.purge(session, now), "throttle": throttle.purge(session, now)}
