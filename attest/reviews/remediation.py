"""Remediation: carry out revocations, verify them on the next sync, undo them within a window.

Each item whose outcome is revoke gets a Remediation at close (`campaigns.close`):

- **automatic**: `run_pending` (the scheduler, or `attest remediation run`) calls the source connector's
  `revoke(grant_ref, dry_run)`. Guards come before anything is called: access that the source would
  re-create (held through a group, a rule-managed group, a group-assigned app) is routed to the manual
  work list naming where it really comes from (`target`); the connector's own refusals (last org owner,
  last super admin...) end as `refused` with the reason; more revocations than
  ATTEST_REMEDIATION_MAX_PER_RUN stop the run until it is confirmed (`--yes`); a dry run lists the calls
  and changes nothing. A failed call is retried with back-off (`attempts`, `next_attempt_at`) and ends
  as `failed` with the error once the attempts are used up.
- **manual**: a work list for the system's administrators (CSV export) with "mark done" and a note.

Verification: `verify_after_sync` runs inside every successful sync's apply transaction (an after-apply
hook of the sync engine, registered when this module is imported). A done
remediation whose access the run no longer sees becomes `verified` with that SyncRun as proof; one whose
access is still there (or comes back in a later run: a new active grant with the same key) becomes
`reappeared`. Only runs that started after the revoke count, so a sync that read the source before the
call cannot flag it. A connector says `done` only when a follow-up read showed the access gone; a call the
upstream accepted while it still shows the access is `unconfirmed` (verified or flagged like a done one).

Undo: within ATTEST_REMEDIATION_UNDO_DAYS an automatic revoke can be reversed through the connector's
`grant(...)`, re-granting exactly the grant that was revoked. An undo the upstream answers with an
invitation the person still has to accept (GitHub's 201) ends as `invited`, not `undone`.

Every change is an audit event carrying the campaign id. Like `sync.run_sync`, `run_pending` and `undo`
take the session factory: connector calls happen outside any database transaction (a slow upstream must
not hold the database's write lock), and each remediation's outcome commits on its own.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TextIO

from sqlalchemy import and_, exists, func, or_, select, update
from sqlalchemy.orm import Session, aliased, sessionmaker

from attest import exports
from attest.config import Settings
from attest.connectors.base import GrantRef, RevokeRefused, RevokeResult
from attest.db import begin_write, utcnow
from attest.entitlements.models import Account, Grant, Resource, Source, SyncRun
from attest.entitlements.queries import effective_access
from attest.entitlements.sources import build_connector
from attest.entitlements.sync import SyncResult, after_apply
from attest.redact import install_filter, redact
from attest.reviews.chunks import chunks
from attest.reviews.models import Campaign, Remediation, RemediationMode, RemediationStatus, ReviewItem
from attest.trail.chain import record as audit
from attest.trail.chain import record_many

log = install_filter(logging.getLogger(__name__))

MAX_ATTEMPTS = 4
# wait after the 1st, 2nd, 3rd failed attempt; the 4th failure is final
BACKOFF = (timedelta(minutes=5), timedelta(minutes=30), timedelta(hours=2))
# a claimed remediation whose outcome was never written (the process died mid-call) is retried after this
CLAIM_LEASE = timedelta(minutes=15)
ALREADY_GONE = "already gone upstream: nothing was removed"
OPEN = (RemediationStatus.PENDING, RemediationStatus.IN_PROGRESS)
STUCK = (RemediationStatus.REFUSED, RemediationStatus.FAILED)  # a person must carry these out (or give up)
# carried out upstream, waiting for a sync to confirm the access gone
CARRIED_OUT = (RemediationStatus.DONE, RemediationStatus.UNCONFIRMED)
NEEDS_HUMAN = or_(and_(Remediation.mode == RemediationMode.MANUAL, Remediation.status.in_(OPEN)),
                  Remediation.status.in_(STUCK))

# Attribute names connectors use to say who really grants a membership or assignment (see
# `_managed_elsewhere`). Okta marks groups filled by an ACTIVE rule (`rule_managed`, `rules` on the group
# and its member entitlement), imported/built-in groups (`mastered_by`) and app assignments (`scope`).
RULE_KEYS = ("managed_by_rule", "group_rule", "rule", "rule_name", "rules")
GROUP_ASSIGNMENT_KEYS = ("assigned_via_groups", "via_groups", "assigned_via_group")


class RemediationError(ValueError):
    """A user-caused problem (wrong state, missing note, closed undo window); nothing was changed."""


class UndoError(RemediationError):
    pass


@dataclass
class Planned:
    """One remediation in a run: what was (or would be) called and what came of it."""

    id: int
    campaign_id: int
    source: str
    principal: str
    resource: str
    entitlement: str
    action: str  # revoke | manual | refused | skip
    outcome: str = ""  # done | unconfirmed | refused | retry | failed | manual | would_revoke | would_refuse | error
    calls: list[str] = field(default_factory=list)
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


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


# --- building what the connector needs ------------------------------------------------------------


def grant_ref(session: Session, grant: Grant, source: Source) -> GrantRef:
    """The connector's view of one grant, built from the database (works for ended grants too)."""
    ent = grant.entitlement
    res = ent.resource if ent.resource_id is not None else None
    if grant.principal_type == "account":
        acc = grant.account
        principal_ref, login = acc.external_id, acc.login or acc.email
    else:
        grp = grant.group
        principal_ref, login = grp.external_id, grp.name
    return GrantRef(
        source_kind=source.kind,
        key=grant.key,
        entitlement_ref=ent.external_id,
        entitlement_name=ent.name,
        resource_ref=ent.resource_ref,
        resource_type=res.type if res is not None else "",
        principal_type=grant.principal_type,
        principal_ref=principal_ref,
        principal_login=login,
        resource_attributes=dict(res.attributes or {}) if res is not None else {},
        entitlement_attributes=dict(ent.attributes or {}),
        grant_attributes=dict(grant.attributes or {}),
        part=grant.part,
    )


def _names(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ", ".join(str(_names(v)) for v in value)
    if isinstance(value, dict):
        return str(value.get("name") or value.get("id") or value)
    return str(value)


def _managed_elsewhere(ref: GrantRef, principal: str, resource: str) -> str | None:
    """Where the access really comes from, when the connector's records say the source re-creates it."""
    rule_sources = (ref.grant_attributes, ref.entitlement_attributes, ref.resource_attributes)
    for key in RULE_KEYS:
        value = next((attrs.get(key) for attrs in rule_sources if attrs.get(key)), None)
        if value is None and key == "rules" and ref.resource_attributes.get("rule_managed"):
            value = "(unnamed)"
        if value:
            return (f"{resource}: {principal} is added by group rule {_names(value)}; removing the membership "
                    f"would be undone by the rule. Change the rule (or the profile attribute it matches).")
    for key in GROUP_ASSIGNMENT_KEYS:
        value = ref.grant_attributes.get(key)
        if value:
            return (f"{resource}: {principal} is assigned through group {_names(value)}; remove {principal} "
                    f"from that group (or unassign the group) instead.")
    if str(ref.grant_attributes.get("scope", "")).upper() == "GROUP":
        return (f"{resource}: {principal} is assigned through a group (assignment scope GROUP); remove "
                f"{principal} from the assigning group, or unassign that group from {resource}.")
    master = ref.resource_attributes.get("mastered_by") or (
        ref.resource_attributes.get("type") if ref.resource_attributes.get("type") == "APP_GROUP" else None)
    if master:
        return (f"{resource}: membership is mastered by {_names(master)} (the group is imported); remove "
                f"{principal} from the group in {_names(master)}.")
    return None


def _via_target(session: Session, item: ReviewItem, grant: Grant) -> str:
    """The manual task for access held through a group: name the account's own group and the path."""
    account = session.get(Account, item.account_id)
    who = account.label if account else f"account {item.account_id}"
    what = f"{item.entitlement_name} on {item.resource_name or 'the resource'}"
    path = None
    for held in effective_access(session, [item.account_id]):
        if held.grant.id == grant.id and held.via:
            path = held.via
            break
    if path:
        own, holder = path[-1], path[0]
        chain = " → ".join(g.name for g in reversed(path))
        text_ = (f"{who} holds {what} through group membership ({who} → {chain}). Remove {who} from group "
                 f"{own.name!r}")
        if holder.id != own.id:
            text_ += f", or stop {holder.name!r} holding {what} (that affects every member)"
        return text_ + "."
    holder = session.get(Resource, item.via_resource_id) if item.via_resource_id else grant.group
    name = holder.name if holder else (item.via or "the group")
    return (f"{who} holds {what} through group {name!r}. Remove {who} from {name!r} (revoking the group's own "
            f"grant would remove it from every member).")


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
        target = _managed_elsewhere(ref, principal, resource)
    refusal = None
    if not source.enabled:
        refusal = f"source {source.name!r} is disabled; enable it or carry the revoke out by hand"
    return _Ctx(rem.id, rem.campaign_id, rem.source_id, source, ref, planned, rem.attempts, target, refusal)


# --- running ----------------------------------------------------------------------------------------


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


# --- manual work ----------------------------------------------------------------------------------


def mark_done(session: Session, remediation_id: int, actor: str, note: str, now: datetime | None = None) -> Remediation:
    """An administrator carried the revoke out by hand; the next sync verifies it."""
    note = (note or "").strip()
    if not note:
        raise RemediationError("say what was done (a note is required to mark a remediation done)")
    if len(note) > 2000:
        raise RemediationError("the note is longer than 2,000 characters")
    rem = session.get(Remediation, remediation_id)
    if rem is None:
        raise RemediationError(f"no remediation with id {remediation_id}")
    if not ((rem.mode == RemediationMode.MANUAL and rem.status in OPEN) or rem.status in STUCK):
        raise RemediationError(
            f"remediation {remediation_id} is {rem.mode} and {rem.status}: only open manual tasks and refused "
            "or failed ones can be marked done by hand")
    before = {"status": rem.status, "mode": rem.mode}
    rem.status, rem.executed_at, rem.executed_by, rem.note = RemediationStatus.DONE, now or utcnow(), actor, note
    rem.next_attempt_at = None
    session.flush()
    audit(session, actor=actor, action="remediation.marked_done", object_type="remediation",
          object_id=str(rem.id), before=before, after={"status": "done", "note": note},
          campaign_id=rem.campaign_id)
    return rem


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


# --- verification (called by the sync engine) -------------------------------------------------------


def verify_after_sync(session: Session, source_id: int, run_id: int) -> dict[str, int]:
    """Inside a successful sync's apply transaction: verify done remediations, flag reappeared ones.

    Set-based: one query finds the remediations of this source whose state changes (a done one whose
    grant key has no active grant any more, or a done/verified one whose key is active again); only
    access held through a group needs the membership expanded, and only for those rows.
    """
    run = session.get(SyncRun, run_id)
    if run is None:
        return {"verified": 0, "reappeared": 0}
    active = aliased(Grant)
    still = (
        exists()
        .where(active.source_id == Grant.source_id, active.key == Grant.key, active.ended_at.is_(None))
        .correlate(Grant)
    )
    base = (
        select(Remediation.id, Remediation.status, ReviewItem.via_resource_id, ReviewItem.account_id,
               Grant.id.label("grant_id"), Grant.key, Grant.principal_type, still.label("still"))
        .join(Grant, Grant.id == Remediation.grant_id)
        .join(ReviewItem, ReviewItem.id == Remediation.item_id)
        .where(Remediation.source_id == source_id, Remediation.status.in_((*CARRIED_OUT, RemediationStatus.VERIFIED)),
               Remediation.executed_at <= run.started_at)
    )
    direct = and_(ReviewItem.via_resource_id.is_(None), Grant.principal_type == "account")
    rows = session.execute(
        base.where(or_(~direct, and_(Remediation.status.in_(CARRIED_OUT), ~still), still))
    ).all()
    verified: list[int] = []
    reappeared: list[int] = []
    via_rows = [r for r in rows if not (r.via_resource_id is None and r.principal_type == "account")]
    via_ids = {r.id for r in via_rows}
    held_by_account: dict[int, set[int]] = {}
    if via_rows:

        for account_id in {r.account_id for r in via_rows}:
            held_by_account[account_id] = {h.grant.id for h in effective_access(session, [account_id])}
    for r in rows:
        if r.id in via_ids:
            if not r.still:
                present = False
            else:
                # the group's grant is active: does this account still reach it through a membership?
                keys = _active_ids_for_key(session, source_id, r.key)
                present = bool(keys & held_by_account.get(r.account_id, set()))
        else:
            present = bool(r.still)
        if present:
            reappeared.append(r.id)
        elif r.status in CARRIED_OUT:
            verified.append(r.id)
    now = utcnow()
    for ids, values, action in (
        (verified, {"status": RemediationStatus.VERIFIED, "verified_at": now, "verified_run_id": run_id}, "remediation.verified"),
        (reappeared, {"status": RemediationStatus.REAPPEARED, "reappeared_at": now, "reappeared_run_id": run_id},
         "remediation.reappeared"),
    ):
        for chunk in chunks(ids, 500):
            session.execute(update(Remediation).where(Remediation.id.in_(chunk)).values(**values)
                            .execution_options(synchronize_session=False))
        record_many(session, ({"actor": "system", "action": action, "object_type": "remediation",
                               "object_id": str(rem.id), "campaign_id": rem.campaign_id,
                               "after": {"status": values["status"], "sync_run_id": run_id}}
                              for rem in _load(session, ids)))
    return {"verified": len(verified), "reappeared": len(reappeared)}


@after_apply  # registered at import (attest/reviews/__init__.py imports this module): every sync verifies
def _verify_after_apply(session: Session, source_id: int, run_id: int, result: SyncResult) -> None:
    verify_after_sync(session, source_id, run_id)


def _active_ids_for_key(session: Session, source_id: int, key: str) -> set[int]:
    return set(session.scalars(select(Grant.id).where(Grant.source_id == source_id, Grant.key == key,
                                                      Grant.ended_at.is_(None))))


def _load(session: Session, ids: list[int]) -> Iterator[Any]:
    for chunk in chunks(ids, 500):
        yield from session.execute(
            select(Remediation.id, Remediation.campaign_id).where(Remediation.id.in_(chunk)).order_by(Remediation.id)
        ).all()


# --- reading --------------------------------------------------------------------------------------


@dataclass
class RemediationRow:
    id: int
    campaign_id: int
    campaign_name: str
    mode: str
    status: str
    source: str
    person: str | None
    person_email: str | None
    identity_id: int | None
    account: str | None
    resource: str | None
    entitlement: str
    via: str | None
    target: str | None
    attempts: int
    last_error: str | None
    note: str | None
    calls: list[str]
    created_at: datetime
    executed_at: datetime | None
    executed_by: str | None
    verified_run_id: int | None
    reappeared_run_id: int | None
    undone_at: datetime | None
    comment: str | None
    launched_at: datetime | None

    def as_dict(self) -> dict[str, Any]:
        return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in self.__dict__.items()}


def _row_select():
    return (
        select(Remediation, ReviewItem, Campaign.name, Campaign.launched_at)
        .join(ReviewItem, ReviewItem.id == Remediation.item_id)
        .join(Campaign, Campaign.id == Remediation.campaign_id)
    )


def _to_row(rem: Remediation, item: ReviewItem, campaign_name: str, launched_at: datetime | None) -> RemediationRow:
    return RemediationRow(
        id=rem.id, campaign_id=rem.campaign_id, campaign_name=campaign_name, mode=rem.mode, status=rem.status,
        source=item.source_name, person=item.person_name, person_email=item.person_email,
        identity_id=item.identity_id, account=item.account_login, resource=item.resource_name,
        entitlement=item.entitlement_name, via=item.via, target=rem.target, attempts=rem.attempts,
        last_error=rem.last_error, note=rem.note, calls=list(rem.calls or []), created_at=rem.created_at,
        executed_at=rem.executed_at, executed_by=rem.executed_by, verified_run_id=rem.verified_run_id,
        reappeared_run_id=rem.reappeared_run_id, undone_at=rem.undone_at, comment=item.comment,
        launched_at=launched_at,
    )


def list_remediations(
    session: Session,
    campaign_id: int | None = None,
    status: str | None = None,
    mode: str | None = None,
    needs_human: bool = False,
    after: int | None = None,
    limit: int = 50,
) -> tuple[list[RemediationRow], int | None]:
    """A page of remediations, newest campaign first then by id (keyset on id: `after` = last id)."""
    stmt = _row_select()
    if campaign_id is not None:
        stmt = stmt.where(Remediation.campaign_id == campaign_id)
    if status:
        stmt = stmt.where(Remediation.status == status)
    if mode:
        stmt = stmt.where(Remediation.mode == mode)
    if needs_human:
        stmt = stmt.where(NEEDS_HUMAN)
    if after is not None:
        stmt = stmt.where(Remediation.id > after)
    rows = session.execute(stmt.order_by(Remediation.id).limit(limit + 1)).all()
    out = [_to_row(*r) for r in rows[:limit]]
    return out, (out[-1].id if len(rows) > limit else None)


def iter_remediations(session: Session, campaign_id: int | None = None, needs_human: bool = False,
                      batch: int = 1000) -> Iterator[RemediationRow]:
    """Every matching remediation, in id order, a batch at a time (flat memory)."""
    after = None
    while True:
        page, after = list_remediations(session, campaign_id, needs_human=needs_human, after=after, limit=batch)
        yield from page
        if after is None:
            return


def status_counts(session: Session, campaign_id: int | None = None) -> dict[str, int]:
    stmt = select(Remediation.status, func.count()).group_by(Remediation.status)
    if campaign_id is not None:
        stmt = stmt.where(Remediation.campaign_id == campaign_id)
    return {s: n for s, n in session.execute(stmt)}


MANUAL_COLUMNS = ("remediation_id", "campaign", "status", "person", "email", "account", "system", "resource",
                  "entitlement", "via", "where_to_change_it", "why_manual", "reviewer_comment", "created_at")
# what was done: the admin's note when a manual task was marked done (or the connector's detail), by whom, when,
# and the sync run that proved it gone or saw it again
REMEDIATION_COLUMNS = MANUAL_COLUMNS + ("mode", "executed_at", "executed_by", "note", "verified_sync_run",
                                        "reappeared_sync_run")


def write_remediations_csv(session: Session, out: TextIO, campaign_id: int | None = None, needs_human: bool = False,
                           lineterminator: str = "\r\n") -> int:
    """Remediations as CSV (every one, or only the work list), neutralised by `attest.exports`; returns the row count."""
    writer = exports.writer(out, REMEDIATION_COLUMNS, lineterminator=lineterminator)
    n = 0
    for r in iter_remediations(session, campaign_id, needs_human=needs_human):
        why = r.last_error or ("manual remediation" if r.mode == "manual" else "")
        writer.writerow([r.id, r.campaign_name, r.status, r.person, r.person_email, r.account, r.source, r.resource,
                         r.entitlement, r.via, r.target, why, r.comment, r.created_at.isoformat(), r.mode,
                         r.executed_at.isoformat() if r.executed_at else None, r.executed_by, r.note,
                         r.verified_run_id, r.reappeared_run_id])
        n += 1
    return n


def write_manual_csv(session: Session, out: TextIO, campaign_id: int | None = None) -> int:
    """The manual work list (open manual tasks, refused and failed revokes) as CSV; returns the row count."""
    return write_remediations_csv(session, out, campaign_id, needs_human=True)


def describe(rows: Iterable[Planned]) -> Iterator[str]:
    """Human lines for a run report (the CLI prints them)."""
    for p in rows:
        head = f"#{p.id} {p.source}: {p.principal} — {p.entitlement} on {p.resource}"
        yield f"{head} [{p.outcome or p.action}]"
        for call in p.calls:
            yield f"    {call}"
        if p.detail:
            yield f"    {p.detail}"
