"""Carrying remediations out through the connectors: `run_pending` claims what is due, calls each
source connector's `revoke` outside any database transaction (a dry run only lists the calls), retries a
failed call with back-off, stops past ATTEST_REMEDIATION_MAX_PER_RUN until confirmed, and writes each outcome
on its own; `undo` re-grants an automatic revoke within ATTEST_REMEDIATION_UNDO_DAYS.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from attest.config import Settings
from attest.connectors.base import GrantRef, RevokeRefused, RevokeResult
from attest.db import begin_write, utcnow
from attest.entitlements.models import Grant, Source
from attest.entitlements.sources import build_connector
from attest.redact import install_filter, redact
from attest.reviews.models import Campaign, Remediation, RemediationMode, RemediationStatus, ReviewItem
from attest.reviews.remediation.planning import (
    CARRIED_OUT,
    OPEN,
    Planned,
    RemediationError,
    UndoError,
    _via_target,
    grant_ref,
    managed_target,
)
from attest.trail.chain import record as audit

log = install_filter(logging.getLogger("attest.reviews.remediation"))


MAX_ATTEMPTS = 4


# wait after the 1st, 2nd, 3rd failed attempt; the 4th failure is final
BACKOFF = (timedelta(minutes=5), timedelta(minutes=30), timedelta(hours=2))


# a claimed remediation whose outcome was never written (the process died mid-call) is retried after this
CLAIM_LEASE = timedelta(minutes=15)
ALREADY_GONE = "already gone upstream: nothing was removed"


@dataclass
class RunReport:
    dry_run: bool
    cap: int
    planned: list[Planned] = field(default_factory=list)
    stopped_for_cap: bool = False
    message: str = ""

    def count(self, outcome: str) -> int:
        return sum(1 for p in self.planned if p.outcome == outcome)

    @property
    def to_revoke(self) -> int:
        return sum(1 for p in self.planned if p.action == "revoke")

    def as_dict(self) -> dict[str, Any]:
        return {"dry_run": self.dry_run, "cap": self.cap, "stopped_for_cap": self.stopped_for_cap,
                "message": self.message, "planned": [p.as_dict() for p in self.planned]}


@dataclass
class _Ctx:
    rem_id: int
    campaign_id: int
    source_id: int
    source: Source
    ref: GrantRef
    planned: Planned
    attempts: int
    target: str | None
    refusal: str | None


def _context(session: Session, rem: Remediation) -> _Ctx:
    item = session.get(ReviewItem, rem.item_id)
    grant = session.get(Grant, rem.grant_id)
    source = session.get(Source, rem.source_id)
    ref = grant_ref(session, grant, source)
    principal = (item.account_login or ref.principal_login or ref.principal_ref) if item else ref.principal_ref
    resource = (item.resource_name if item else None) or ref.resource_ref
    planned = Planned(rem.id, rem.campaign_id, source.name, principal, resource,
                      item.entitlement_name if item else ref.entitlement_name, "revoke")
    target = rem.target
    if target is None and item is not None and (item.via_resource_id is not None or grant.principal_type == "resource"):
        target = _via_target(session, item, grant)
    if target is None:
        target = managed_target(ref, principal, resource)
    refusal = None
    if not source.enabled:
        refusal = f"source {source.name!r} is disabled; enable it or carry the revoke out by hand"
    return _Ctx(rem.id, rem.campaign_id, rem.source_id, source, ref, planned, rem.attempts, target, refusal)


def _due(campaign_id: int | None, now: datetime):
    stmt = select(Remediation).where(
        Remediation.mode == RemediationMode.AUTOMATIC,
        Remediation.status.in_(OPEN),
        or_(Remediation.next_attempt_at.is_(None), Remediation.next_attempt_at <= now),
    )
    if campaign_id is not None:
        stmt = stmt.where(Remediation.campaign_id == campaign_id)
    return stmt.order_by(Remediation.id)


def _connector(cache: dict[int, Any], ctx: _Ctx, settings: Settings):
    """The source's connector (built once per run), or a reason it cannot revoke."""
    if ctx.source_id not in cache:
        try:
            cache[ctx.source_id] = build_connector(ctx.source, settings)
        except Exception as exc:  # bad secrets, unknown kind: said on each remediation of the source
            cache[ctx.source_id] = exc
    conn = cache[ctx.source_id]
    if isinstance(conn, Exception):
        return None, redact(f"cannot build the {ctx.source.kind} connector: {conn}")
    if not callable(getattr(conn, "revoke", None)):
        return None, f"the {ctx.source.kind} connector cannot revoke; it is on the manual work list"
    return conn, None


def run_pending(
    session_factory: sessionmaker[Session],
    settings: Settings,
    campaign_id: int | None = None,
    dry_run: bool = False,
    confirm_over_cap: bool = False,
    now: datetime | None = None,
    actor: str = "system",
) -> RunReport:
    """Carry out due automatic remediations (or, with dry_run, list the calls and change nothing)."""
    now = now or utcnow()
    cap = settings.remediation_max_per_run
    report = RunReport(dry_run=dry_run, cap=cap)
    with session_factory() as session:
        if campaign_id is not None and session.get(Campaign, campaign_id) is None:
            raise RemediationError(f"no campaign with id {campaign_id}")
        contexts = [_context(session, rem) for rem in session.scalars(_due(campaign_id, now))]

    connectors: dict[int, Any] = {}
    try:
        actionable: list[tuple[_Ctx, Any]] = []
        reroute: list[_Ctx] = []
        for ctx in contexts:
            report.planned.append(ctx.planned)
            if ctx.refusal:
                ctx.planned.action, ctx.planned.detail = "refused", ctx.refusal
                continue
            if ctx.target:
                ctx.planned.action, ctx.planned.detail = "manual", ctx.target
                reroute.append(ctx)
                continue
            conn, why = _connector(connectors, ctx, settings)
            if conn is None:
                ctx.planned.action, ctx.planned.detail = "manual", why
                reroute.append(ctx)
                continue
            actionable.append((ctx, conn))

        if dry_run:
            for ctx, conn in actionable:
                _dry_run_one(ctx, conn)
            for ctx in contexts:
                if ctx.planned.action == "manual":
                    ctx.planned.outcome = "would_route_manual"
                elif ctx.planned.action == "refused":
                    ctx.planned.outcome = "would_refuse"
            report.message = _dry_message(report, len(actionable), cap)
            return report

        if len(actionable) > cap and not confirm_over_cap:
            report.stopped_for_cap = True
            report.message = (
                f"{len(actionable):,} revocations are due, more than ATTEST_REMEDIATION_MAX_PER_RUN={cap}. "
                "Nothing was called or changed. Check the list with --dry-run, then confirm with --yes."
            )
            return report

        for ctx in contexts:
            if ctx.planned.action == "refused":
                _finish(session_factory, ctx, "refused", actor, error=ctx.refusal)
        for ctx in reroute:
            _finish(session_factory, ctx, "manual", actor, target=ctx.target, error=ctx.planned.detail)
        for ctx, conn in actionable:
            _revoke_one(session_factory, ctx, conn, now, actor)
        done, refused = report.count("done"), report.count("refused")
        retry, failed, manual = report.count("retry"), report.count("failed"), report.count("manual")
        unconfirmed = report.count("unconfirmed")
        report.message = (f"{done} revoked, {manual} routed to the manual work list, {refused} refused, "
                          f"{retry} to retry, {failed} failed")
        if unconfirmed:
            report.message += f", {unconfirmed} accepted upstream but not confirmed gone (unconfirmed)"
        return report
    finally:
        for conn in connectors.values():
            if not isinstance(conn, Exception):
                try:
                    conn.close()
                except Exception:  # closing must not hide the run's outcome
                    log.warning("closing a connector failed", exc_info=True)


def _dry_message(report: RunReport, n: int, cap: int) -> str:
    text_ = f"dry run: {n} revocations would be called; nothing was changed"
    if n > cap:
        text_ += f" (more than ATTEST_REMEDIATION_MAX_PER_RUN={cap}: the real run needs --yes)"
    return text_


def _dry_run_one(ctx: _Ctx, conn: Any) -> None:
    try:
        result: RevokeResult = conn.revoke(ctx.ref, dry_run=True)
        ctx.planned.calls = list(result.calls)
        ctx.planned.outcome = "would_revoke"
        ctx.planned.detail = ALREADY_GONE if result.already_gone else result.detail
    except RevokeRefused as exc:
        target = getattr(exc, "target", None)
        ctx.planned.action = "manual" if target else "refused"
        ctx.planned.outcome = "would_route_manual" if target else "would_refuse"
        ctx.planned.detail = str(target or exc)
    except Exception as exc:
        ctx.planned.outcome = "error"
        ctx.planned.detail = _error(exc, conn)


def _error(exc: BaseException, conn: Any = None) -> str:
    """A failed revoke's error as stored, audited and shown: redacted of the connector's secrets and of
    anything that looks like a secret (an upstream error page may echo the request's Authorization)."""
    text_ = (str(exc) or type(exc).__name__) if isinstance(exc, RevokeRefused) else f"{type(exc).__name__}: {exc}"
    return redact(text_, getattr(conn, "secrets", None))[:2000]


def _claim(session_factory: sessionmaker[Session], ctx: _Ctx, now: datetime) -> bool:
    """Mark the remediation in progress (one more attempt); False if another runner took it first."""
    with session_factory() as session, begin_write(session):
        claimed = session.execute(
            update(Remediation)
            .where(Remediation.id == ctx.rem_id, Remediation.status.in_(OPEN),
                   Remediation.attempts == ctx.attempts, Remediation.mode == "automatic")
            .values(status="in_progress", attempts=ctx.attempts + 1, next_attempt_at=now + CLAIM_LEASE)
            .execution_options(synchronize_session=False)
        ).rowcount
    return bool(claimed)


def _revoke_one(session_factory: sessionmaker[Session], ctx: _Ctx, conn: Any, now: datetime, actor: str) -> None:
    if not _claim(session_factory, ctx, now):
        ctx.planned.action, ctx.planned.outcome, ctx.planned.detail = "skip", "skipped", "taken by another run"
        return
    attempt = ctx.attempts + 1
    try:
        result: RevokeResult = conn.revoke(ctx.ref, dry_run=False)
    except RevokeRefused as exc:
        target = getattr(exc, "target", None)
        if target:
            ctx.planned.action, ctx.planned.detail = "manual", str(target)
            _finish(session_factory, ctx, "manual", actor, target=str(target), error=str(exc))
        else:
            ctx.planned.detail = str(exc)
            _finish(session_factory, ctx, "refused", actor, error=_error(exc, conn))
        return
    except Exception as exc:
        ctx.planned.detail = _error(exc, conn)
        if attempt >= MAX_ATTEMPTS:
            _finish(session_factory, ctx, "failed", actor, error=ctx.planned.detail, attempt=attempt)
        else:
            retry_at = now + BACKOFF[min(attempt - 1, len(BACKOFF) - 1)]
            _finish(session_factory, ctx, "retry", actor, error=ctx.planned.detail, attempt=attempt,
                    retry_at=retry_at)
        return
    ctx.planned.calls = list(result.calls)
    ctx.planned.detail = ALREADY_GONE if result.already_gone else result.detail
    # "done" only when the upstream confirmed the access gone; "unconfirmed" when it accepted the call but a
    # follow-up read still shows the access (the next sync verifies it or flags it as reappeared)
    _finish(session_factory, ctx, "unconfirmed" if result.outcome == "unconfirmed" else "done", actor,
            result=result, attempt=attempt)


def _finish(session_factory: sessionmaker[Session], ctx: _Ctx, outcome: str, actor: str, *,
            error: str | None = None, target: str | None = None, result: RevokeResult | None = None,
            attempt: int | None = None, retry_at: datetime | None = None) -> None:
    """Write one remediation's outcome and its audit event in one transaction."""
    ctx.planned.outcome = outcome
    with session_factory() as session, begin_write(session):
        rem = session.get(Remediation, ctx.rem_id)
        before = {"status": rem.status, "mode": rem.mode, "attempts": rem.attempts}
        action = f"remediation.{outcome}"
        if outcome in ("done", "unconfirmed"):
            rem.status, rem.executed_at, rem.executed_by = outcome, utcnow(), actor
            rem.calls, rem.last_error, rem.next_attempt_at = list(result.calls), None, None
            rem.note = ALREADY_GONE if result.already_gone else (result.detail or None)
            action = "remediation.revoked" if outcome == "done" else "remediation.unconfirmed"
        elif outcome == "refused":
            rem.status, rem.last_error, rem.next_attempt_at = RemediationStatus.REFUSED, error, None
        elif outcome == "manual":
            rem.mode, rem.status, rem.next_attempt_at = RemediationMode.MANUAL, RemediationStatus.IN_PROGRESS, None
            rem.target = target or rem.target
            rem.last_error = error if error and error != target else None
            action = "remediation.routed_manual"
        elif outcome == "retry":
            rem.status, rem.last_error, rem.next_attempt_at = RemediationStatus.IN_PROGRESS, error, retry_at
            action = "remediation.attempt_failed"
        elif outcome == "failed":
            rem.status, rem.last_error, rem.next_attempt_at = RemediationStatus.FAILED, error, None
        after: dict[str, Any] = {"status": rem.status, "mode": rem.mode, "attempts": rem.attempts}
        if result is not None:
            after["calls"] = list(result.calls)
            after["already_gone"] = result.already_gone
        if error:
            after["error"] = error
        if target:
            after["target"] = target
        if retry_at:
            after["next_attempt_at"] = retry_at.isoformat()
        after.update(grant_key=ctx.ref.key, source=ctx.source.name)
        audit(session, actor=actor, action=action, object_type="remediation", object_id=str(rem.id),
              before=before, after=after, campaign_id=rem.campaign_id)


def undo(
    session_factory: sessionmaker[Session],
    settings: Settings,
    remediation_id: int,
    actor: str,
    now: datetime | None = None,
) -> Remediation:
    """Re-grant exactly what an automatic revoke removed, within ATTEST_REMEDIATION_UNDO_DAYS."""
    now = now or utcnow()
    with session_factory() as session:
        rem = session.get(Remediation, remediation_id)
        if rem is None:
            raise UndoError(f"no remediation with id {remediation_id}")
        if rem.mode != RemediationMode.AUTOMATIC or rem.status not in (*CARRIED_OUT, RemediationStatus.VERIFIED):
            why = ("it was carried out by hand: re-grant it by hand" if rem.mode == RemediationMode.MANUAL
                   else f"it is {rem.status}")
            raise UndoError(f"remediation {remediation_id} cannot be undone: {why}")
        if rem.note == ALREADY_GONE:
            raise UndoError(f"remediation {remediation_id} cannot be undone: the access was already gone, "
                            "nothing was revoked")
        window = timedelta(days=settings.remediation_undo_days)
        if rem.executed_at is None or now - rem.executed_at > window:
            closed = (rem.executed_at + window).strftime("%Y-%m-%d %H:%M UTC") if rem.executed_at else "—"
            raise UndoError(
                f"the undo window (ATTEST_REMEDIATION_UNDO_DAYS={settings.remediation_undo_days}) for remediation "
                f"{remediation_id} closed on {closed}; grant the access again through the normal request process")
        grant = session.get(Grant, rem.grant_id)
        source = session.get(Source, rem.source_id)
        ref = grant_ref(session, grant, source)
        campaign_id = rem.campaign_id
    conn = build_connector(source, settings)
    try:
        if not callable(getattr(conn, "grant", None)):
            raise UndoError(f"the {source.kind} connector cannot grant access; re-grant it by hand")
        try:
            result: RevokeResult = conn.grant(ref, dry_run=False)
        except RevokeRefused as exc:
            raise UndoError(f"the {source.kind} connector refused to re-grant: {exc}") from None
        except UndoError:
            raise
        except Exception as exc:
            raise UndoError(f"re-granting failed, nothing was changed: {_error(exc, conn)}") from None
    finally:
        conn.close()
    # an undo the upstream answered with an invitation (GitHub's 201) is "invited": the access comes back
    # only when the person accepts it
    status = RemediationStatus.INVITED if result.outcome == "invited" else RemediationStatus.UNDONE
    with session_factory() as session, begin_write(session):
        rem = session.get(Remediation, remediation_id)
        before = {"status": rem.status}
        rem.status, rem.undone_at, rem.undone_by = status, utcnow(), actor
        if result.detail:
            rem.note = result.detail[:2000]
        audit(session, actor=actor, action="remediation.undone", object_type="remediation",
              object_id=str(rem.id), before=before,
              after={"status": status, "outcome": result.outcome, "calls": list(result.calls), "grant_key": ref.key,
                     "source": source.name, **({"detail": result.detail} if result.detail else {})},
              campaign_id=campaign_id)
        return rem
