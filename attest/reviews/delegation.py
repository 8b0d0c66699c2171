"""A reviewer's own hand-offs: delegation while away, and reassigning all (or a filtered set) of their items.

- **Delegation**: a reviewer names a delegate and a period (from, until) with an optional reason. While it
  is in force the delegate sees and decides the reviewer's items (`decisions` asks
  `eligibility.acting_for`), each decision recording both who decided and for whom; items about the
  delegate stay with the reviewer (the one eligibility rule). A reviewer has at most one delegation in
  force or planned at a time; they may end it early. Creating and ending are audited
  (`review.delegate`, `review.delegation_end`).
- **Reassign mine**: every undecided item of the reviewer's selection in one campaign goes to another
  person, each through `decisions.reassign` (the same checks and the same audit event as one by one);
  items about that person are left where they are and counted.

Functions take the session first and never commit.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Integer, Select, and_, bindparam, exists, literal, or_, select
from sqlalchemy.orm import Session, aliased

from attest.auth.models import User
from attest.db import UTCDateTime, utcnow
from attest.entitlements.models import Identity
from attest.reviews import decisions, eligibility
from attest.reviews.decisions import DecisionError, Forbidden, NotFound
from attest.reviews.models import Delegation, ReviewItem
from attest.trail.chain import record as audit

MAX_DAYS = 366  # a delegation longer than a year is a reassignment, not an absence
MAX_REASON = 1000
CHUNK = 900  # ids per IN (...) list: well below every engine's bound-parameter limit


class DelegationError(ValueError):
    """A delegation the rules refuse (yourself, someone who cannot review, bad dates...). Nothing changed."""


def _writer(user: User) -> int:
    if user.is_auditor and not user.is_admin:
        raise Forbidden("Auditors read everything and change nothing.")
    if user.identity_id is None:
        raise DelegationError(eligibility.delegation_problem(None, None) or "")
    return user.identity_id


def given(session: Session, delegator_id: int | None, now: datetime | None = None) -> list[Delegation]:
    """The reviewer's delegations in force or planned (not ended, not over), soonest first."""
    if delegator_id is None:
        return []
    now = now or utcnow()
    return list(session.scalars(select(Delegation).where(
        Delegation.delegator_id == delegator_id, Delegation.ended_at.is_(None), Delegation.ends_at > now)
        .order_by(Delegation.starts_at, Delegation.id)))


def received(session: Session, delegate_id: int | None, now: datetime | None = None) -> list[Delegation]:
    """The delegations in force to `delegate_id` now (whose reviews they stand in for)."""
    if delegate_id is None:
        return []
    now = now or utcnow()
    return list(session.scalars(select(Delegation).where(
        Delegation.delegate_id == delegate_id, eligibility.sql_delegation_active(now))
        .order_by(Delegation.starts_at, Delegation.id)))


@functools.cache
def _menu_statement() -> Select[Any]:
    """The statement of `menu` for `:identity_id` at `:now`, built once."""
    me, now = bindparam("identity_id", type_=Integer), bindparam("now", type_=UTCDateTime)
    delegator = aliased(Identity)
    one = select(literal(1).label("one")).subquery()
    return (select(exists().where(Identity.manager_id == me, Identity.ended_at.is_(None)), Delegation, delegator)
            .select_from(one)
            .outerjoin(Delegation, and_(Delegation.delegate_id == me, eligibility.sql_delegation_active(now)))
            .outerjoin(delegator, delegator.id == Delegation.delegator_id)
            .order_by(Delegation.starts_at, Delegation.id))


def menu(session: Session, identity_id: int | None, now: datetime | None = None
         ) -> tuple[bool, list[tuple[Delegation, Identity | None]]]:
    """What the menu and the inbox's side column ask of every page, in one statement: whether `identity_id` has
    reports (anyone still in the directory whose manager they are: "My team"), and the delegations in force to them
    (`received`), each with its delegator."""
    if identity_id is None:
        return False, []
    rows = session.execute(_menu_statement(), {"identity_id": identity_id, "now": now or utcnow()}).all()
    return bool(rows[0][0]), [(d, who) for _reports, d, who in rows if d is not None]


def create(session: Session, user: User, delegate_id: int | None, starts_at: datetime, ends_at: datetime,
           reason: str | None = None, now: datetime | None = None) -> Delegation:
    """The signed-in reviewer hands their reviews to `delegate_id` from `starts_at` until `ends_at`."""
    me = _writer(user)
    now = now or utcnow()
    problem = eligibility.delegation_problem(me, delegate_id, eligibility.Directory(session).eligible)
    if problem:
        raise DelegationError(problem)
    assert delegate_id is not None
    if ends_at <= starts_at:
        raise DelegationError("The delegation must end after it starts.")
    if ends_at <= now:
        raise DelegationError("That period is already over: choose an end in the future.")
    if ends_at - starts_at > timedelta(days=MAX_DAYS):
        raise DelegationError(f"A delegation lasts at most {MAX_DAYS} days; for longer, reassign your items.")
    reason = (reason or "").strip() or None
    if reason and len(reason) > MAX_REASON:
        raise DelegationError(f"The reason is too long (at most {MAX_REASON} characters).")
    overlapping = [d for d in given(session, me, now) if d.starts_at < ends_at and starts_at < d.ends_at]
    if overlapping:
        d = overlapping[0]
        raise DelegationError(f"You already delegate to {_name(session, d.delegate_id)} until "
                              f"{d.ends_at:%Y-%m-%d %H:%M} UTC: end that delegation first.")
    row = Delegation(delegator_id=me, delegate_id=delegate_id, starts_at=max(starts_at, now) if starts_at < now else starts_at,
                     ends_at=ends_at, reason=reason, created_by=user.email, created_at=now)
    session.add(row)
    session.flush()
    audit(session, actor=user.email, action="review.delegate", object_type="delegation", object_id=str(row.id),
          after={"delegator_id": me, "delegate_id": delegate_id, "delegate": _email(session, delegate_id),
                 "starts_at": row.starts_at.isoformat(), "ends_at": ends_at.isoformat(), "reason": reason})
    return row


def end(session: Session, user: User, delegation_id: int, now: datetime | None = None) -> Delegation:
    """End a delegation now (the delegator, or an admin). Ending one already over changes nothing."""
    now = now or utcnow()
    row = session.get(Delegation, delegation_id)
    if row is None or not (row.delegator_id == user.identity_id or user.is_admin):
        raise NotFound("No such delegation.")
    if user.is_auditor and not user.is_admin:
        raise Forbidden("Auditors read everything and change nothing.")
    if row.ended_at is not None or row.ends_at <= now:
        return row
    before = {"ends_at": row.ends_at.isoformat()}
    row.ended_at = now
    row.ended_by = user.email
    session.flush()
    audit(session, actor=user.email, action="review.delegation_end", object_type="delegation", object_id=str(row.id),
          before=before, after={"ended_at": now.isoformat(), "delegator_id": row.delegator_id,
                                "delegate_id": row.delegate_id})
    return row


def _name(session: Session, identity_id: int) -> str:
    person = session.get(Identity, identity_id)
    return person.display_name if person else f"identity {identity_id}"


def _email(session: Session, identity_id: int) -> str | None:
    person = session.get(Identity, identity_id)
    return person.email if person else None


# --- reassign all or a filtered set of my items -----------------------------------------------------------


@dataclass
class ReassignResult:
    moved: int = 0
    skipped: dict[str, int] = field(default_factory=dict)  # own_access | decided

    def explain(self) -> list[str]:
        text = {"own_access": "about the new reviewer's own access (nobody reviews their own access)",
                "decided": "already decided"}
        return [f"{n:,} {text.get(k, k)}" for k, n in sorted(self.skipped.items()) if n]


def reassign_mine(session: Session, user: User, campaign_id: int, item_ids: Sequence[int], to_identity_id: int,
                  reason: str) -> ReassignResult:
    """Move the reviewer's undecided items among `item_ids` (their selection in one campaign) to
    `to_identity_id`, each through `decisions.reassign`. Items about the new reviewer stay."""
    me = user.identity_id
    if me is None:
        raise NotFound("No such campaign.")
    if user.is_auditor and not user.is_admin:
        raise Forbidden("Auditors read everything and change nothing.")
    reason = (reason or "").strip()
    if not reason:
        raise DecisionError("Say why you reassign these items (the reason is kept in the audit trail).")
    if len(reason) > decisions.MAX_COMMENT:
        raise DecisionError(f"Your reason is too long (at most {decisions.MAX_COMMENT} characters).")
    target = decisions._target_identity(session, to_identity_id)
    if target.id == me:
        raise DecisionError("These items are already yours: choose someone else.")
    ids = sorted({int(i) for i in item_ids})
    rows = []
    for start in range(0, len(ids), CHUNK):
        rows += session.execute(select(ReviewItem.id, ReviewItem.decision, eligibility.sql_not_about(target.id))
                                .where(ReviewItem.id.in_(ids[start:start + CHUNK]),
                                       ReviewItem.campaign_id == campaign_id,
                                       or_(ReviewItem.reviewer_id == me, ReviewItem.co_reviewer_id == me))).all()
    result = ReassignResult()
    for item_id, decided, not_about in sorted(rows):
        if decided is not None:
            result.skipped["decided"] = result.skipped.get("decided", 0) + 1
        elif not not_about:
            result.skipped["own_access"] = result.skipped.get("own_access", 0) + 1
        else:
            decisions.reassign(session, user, item_id, target.id, reason)
            result.moved += 1
    return result
