"""The work list: every remediation as a row (filtered, keyset-ordered), status counts, the CSV
exports (all remediations; the manual ones for administrators), and marking a manual one done with a note.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TextIO

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from attest import exports
from attest.db import utcnow
from attest.reviews.models import Campaign, Remediation, RemediationMode, RemediationStatus, ReviewItem
from attest.reviews.remediation.planning import OPEN, STUCK, RemediationError
from attest.trail.chain import record as audit

NEEDS_HUMAN = or_(and_(Remediation.mode == RemediationMode.MANUAL, Remediation.status.in_(OPEN)),
                  Remediation.status.in_(STUCK))


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
