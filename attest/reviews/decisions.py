"""Reviewer decisions: decide, bulk_decide, reassign, sign_off.

The rules (every function takes the session first and never commits):

- **Who may decide**: only the item's current reviewer or co-reviewer (added by escalation), through the
  User linked to that Identity. Anyone else gets `NotFound` (a reviewer never learns that someone else's
  item exists); admins and auditors, who may read every item, get `Forbidden` instead. A user holding the
  auditor role (and not admin) never writes anything.
- **Comments**: the campaign's `rules.comment_required` decides: `on_revoke` (the default) needs a comment
  to revoke, `always` needs one for every decision, `never` needs none.
- **Repeats are no-ops**: the same decision (and no new comment) returns the item unchanged; no Decision
  row, no audit event.
- **Changeable until sign-off**: a reviewer may change a decision as often as they like while the
  campaign is active, until they sign off; then their decided items are locked. Items that reach them
  later (reassigned, escalated, next stage) can still be decided while undecided.
- **Stages**: a revoke at any stage is final (the item is completed and goes no further). An approve or
  an abstain on a stage that is not the last hands the item on to the next stage's reviewer at once
  (`campaigns.route_item_to_stage`); on the last stage any decision completes the item.
- **Optimistic locking** (`ReviewItem.version`): a caller passes the version it showed the user; if the
  item changed since (someone else decided it), `StaleItem` is raised and nothing is written. A write that
  races past that check is stopped by the version column (`StaleDataError`), also reported as `StaleItem`.
- **The common case**, a reviewer's first decision on their own undecided item with the version the page
  showed, is one conditional UPDATE ... RETURNING (`_first_decision`: the request reviewers make most,
  issue 19); any other case, and any refusal, takes the general path with the same checks and answers.
- **Sign-off** is refused while an item the reviewer reviews is undecided.
- Every decision, reassignment and sign-off is an AuditEvent with the campaign id (bulk decisions too:
  one event per item, `bulk: true`).

Why one module of some 740 lines: decide, undo, bulk_decide, reassign and sign_off are one idea, a
reviewer's write to an item, and share the rules above through the same checks (`_check_writer`,
`_active_campaign`, `_require_active`, `_signed_off`). Splitting bulk or reassignment
out would scatter those rules over modules that import each other's private helpers.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Integer, Select, Update, and_, bindparam, func, literal, or_, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, lazyload, load_only
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.exc import StaleDataError

from attest.auth.models import User
from attest.db import utcnow
from attest.entitlements.models import Identity, PersonStatus
from attest.reviews import campaigns as campaigns_service
from attest.reviews import eligibility, queries
from attest.reviews.chunks import chunks as _chunks  # IN (...) lists of at most chunks.IN_LIST_SIZE ids
from attest.reviews.models import (
    DECISIONS,
    Campaign,
    CampaignStatus,
    Decision,
    Remediation,
    ReviewerSignoff,
    ReviewItem,
)
from attest.trail.chain import record as audit
from attest.trail.chain import record_many as audit_many

MAX_COMMENT = 4000


class DecisionError(ValueError):
    """A decision the rules refuse (bad input, closed campaign, missing comment...). Nothing was changed."""


class StaleItem(Exception):  # noqa: N818 - the name is the contract
    """Someone else changed the item since it was shown: reload and decide again. Nothing was changed."""

    def __init__(self, message: str, item_id: int | None = None) -> None:
        super().__init__(message)
        self.item_id = item_id


class NotFound(Exception):  # noqa: N818
    """The item or campaign does not exist, or is not routed to this user (the two look the same)."""


class Forbidden(Exception):  # noqa: N818
    """The user may see the object but their role does not allow this change (auditors, admins deciding)."""


# --- helpers -----------------------------------------------------------------------------------------


def _actor(user: User) -> str:
    return user.email


def _check_writer(user: User) -> None:
    if user.is_auditor and not user.is_admin:
        raise Forbidden("Auditors read everything and change nothing.")


def _stages(campaign: Campaign) -> list[dict[str, Any]]:
    return list((campaign.spec or {}).get("stages") or [{"reviewer": "manager"}])


def comment_rule(campaign: Campaign) -> str:
    """When a decision needs a comment (the campaign's `rules.comment_required`; the pages show it too)."""
    return ((campaign.spec or {}).get("rules") or {}).get("comment_required") or "on_revoke"


def _clean_comment(comment: str | None) -> str | None:
    if comment is None:
        return None
    comment = comment.strip()
    if len(comment) > MAX_COMMENT:
        raise DecisionError(f"Your comment is too long ({len(comment)} characters; at most {MAX_COMMENT}).")
    return comment or None


def _check_decision(campaign: Campaign, decision: str, comment: str | None) -> None:
    if decision not in DECISIONS:
        raise DecisionError(f"Unknown decision {decision!r}: use approve, revoke or abstain.")
    rule = comment_rule(campaign)
    if comment is None and (rule == "always" or (rule == "on_revoke" and decision == "revoke")):
        what = "every decision" if rule == "always" else "a revoke"
        raise DecisionError(f"This campaign needs a comment for {what}: say why.")


def _active_campaign(session: Session, campaign_id: int) -> Campaign:
    campaign = session.get(Campaign, campaign_id)
    if campaign is None:
        raise NotFound("No such campaign.")
    return campaign


def _require_active(campaign: Campaign) -> None:
    if campaign.status != CampaignStatus.ACTIVE:
        raise DecisionError(f"This campaign ({campaign.name}) is {campaign.status}: decisions can no longer be changed.")


def _signed_off(session: Session, campaign_id: int, identity_ids: Iterable[int | None]) -> ReviewerSignoff | None:
    ids = [i for i in identity_ids if i is not None]
    if not ids:
        return None
    return session.scalar(
        select(ReviewerSignoff).where(ReviewerSignoff.campaign_id == campaign_id, ReviewerSignoff.reviewer_id.in_(ids)).limit(1)
    )


def _is_final_stage(campaign: Campaign, stage: int) -> bool:
    return stage >= len(_stages(campaign)) - 1


def _is_stale_write(exc: OperationalError) -> bool:
    # PostgreSQL under REPEATABLE READ or SERIALIZABLE: another writer changed the row first. (SQLite's
    # "database is locked" is not staleness: writes begin IMMEDIATE and wait their turn; see db.begin_write.)
    text = str(exc.orig).lower() if exc.orig is not None else str(exc).lower()
    return "could not serialize" in text


def _set_decision(item: ReviewItem, decision: str | None = None, comment: str | None = None,
                  user: User | None = None, at: datetime | None = None, on_behalf_of: int | None = None,
                  completed: bool = False) -> None:
    """Write (or, with no arguments, clear) the decision an item carries: one place for its decision fields."""
    item.decision = decision
    item.comment = comment
    item.decided_by_user_id = user.id if user is not None else None
    item.decided_by_identity_id = user.identity_id if user is not None else None
    item.decided_for_identity_id = on_behalf_of
    item.decided_at = at
    item.decided_in_bulk = False
    item.completed = completed


def _flush_item(session: Session, item_id: int, *, serialization_is_stale: bool = False) -> None:
    """Flush an item's change; a version clash (someone changed the item meanwhile) is StaleItem, and so is a
    PostgreSQL serialization failure when `serialization_is_stale`."""
    try:
        session.flush()
    except StaleDataError as exc:
        raise StaleItem(_stale_message(None), item_id) from exc
    except OperationalError as exc:
        if serialization_is_stale and _is_stale_write(exc):
            raise StaleItem(_stale_message(None), item_id) from exc
        raise


def load_item_for(session: Session, user: User, item_id: int, *, for_update: bool = False) -> ReviewItem:
    """The item if the user may see it (its reviewer or co-reviewer, or an admin/auditor); else NotFound.

    Every service that acts on an item calls this before it looks at its input, so a refusal (too long a
    comment, an unknown reassignee, a stale version) is only ever about an item the user may see; an item
    that is someone else's and one that does not exist both answer NotFound.
    """
    stmt = select(ReviewItem).where(ReviewItem.id == item_id)
    if for_update:
        stmt = stmt.with_for_update().execution_options(populate_existing=True)
    item = session.scalar(stmt)
    if item is None:
        raise NotFound("No such item.")
    mine = user.identity_id is not None and user.identity_id in (item.reviewer_id, item.co_reviewer_id)
    if not mine and not user.can_read_all and eligibility.acting_for(session, user.identity_id, item, utcnow()) is None:
        raise NotFound("No such item.")
    return item


def _load_for_decision(session: Session, user: User, item_id: int) -> tuple[ReviewItem, Campaign, int | None]:
    """The item, its campaign, and the reviewer the user decides for (None: their own item; else the
    delegator, while the user is their active delegate)."""
    item = load_item_for(session, user, item_id, for_update=True)
    mine = user.identity_id is not None and user.identity_id in (item.reviewer_id, item.co_reviewer_id)
    on_behalf_of = None if mine else eligibility.acting_for(session, user.identity_id, item, utcnow())
    if not mine and on_behalf_of is None:
        raise Forbidden("Only the item's reviewer can decide it; reassign it to change who reviews it.")
    _check_writer(user)
    _check_eligible(session, user.identity_id, item, "decide")
    campaign = session.get(Campaign, item.campaign_id)
    assert campaign is not None
    return item, campaign, on_behalf_of


def _check_eligible(session: Session, identity_id: int | None, item: ReviewItem, what: str) -> None:
    """The eligibility rule (one home: `eligibility`): nobody decides or takes an item about their own access."""
    try:
        eligibility.check(identity_id, eligibility.item_subjects(session, item), what)
    except eligibility.SelfReview as exc:
        raise DecisionError(str(exc)) from exc


# --- decide ------------------------------------------------------------------------------------------


def decide(session: Session, user: User, item_id: int, decision: str, comment: str | None = None,
           expected_version: int | None = None) -> ReviewItem:
    """Record `decision` on one item for its current stage. See the module docstring for the rules."""
    first = _first_decision(session, user, item_id, decision, comment, expected_version)
    if first is not None:
        return first
    item, campaign = _decide(session, user, item_id, decision, comment, expected_version)
    _keep_campaign(item, campaign)
    return item


def _keep_campaign(item: ReviewItem, campaign: Campaign) -> None:
    """Keep the campaign the decision checked on the item (no change to write): the answer to the decision
    shows it, and the session's identity map holds objects only while something refers to them."""
    set_committed_value(item, "campaign", campaign)


def _decide(session: Session, user: User, item_id: int, decision: str, comment: str | None,
            expected_version: int | None) -> tuple[ReviewItem, Campaign]:
    # who may decide comes first: input checks answer only about an item the user may see
    item, campaign, on_behalf_of = _load_for_decision(session, user, item_id)
    decision = (decision or "").strip().lower()
    comment = _clean_comment(comment)
    _require_active(campaign)
    if expected_version is not None and item.version != expected_version:
        raise StaleItem(_stale_message(item), item.id)
    _check_decision(campaign, decision, comment)
    if item.decision == decision and (comment is None or comment == item.comment):
        return item, campaign  # a repeat: nothing to do
    if decision == "approve" and comment is None and set(item.risks or ()) & set(NEEDS_ITEM_COMMENT):
        who = "a person who has left" if "terminated" in (item.risks or ()) else "an orphaned account (no owner)"
        raise DecisionError(f"Approving the access of {who} needs a comment on this item: say why it should stay.")
    if item.decision is not None:
        signoff = _signed_off(session, campaign.id, (item.reviewer_id, item.co_reviewer_id))
        if signoff is not None:
            raise DecisionError(
                f"This decision was signed off on {signoff.signed_off_at:%Y-%m-%d %H:%M} UTC and can no longer be changed."
            )
    before = {"decision": item.decision, "comment": item.comment, "stage": item.stage, "reviewer_id": item.reviewer_id}
    now = utcnow()
    stage = item.stage
    final = decision == "revoke" or _is_final_stage(campaign, stage)
    _set_decision(item, decision, comment, user, now, on_behalf_of, completed=final)
    _flush_item(session, item_id, serialization_is_stale=True)
    session.add(Decision(item_id=item.id, campaign_id=campaign.id, stage=stage, decision=decision, comment=comment,
                         user_id=user.id, identity_id=user.identity_id, bulk=False, at=now,
                         on_behalf_of_id=on_behalf_of))
    after: dict[str, Any] = {"decision": decision, "comment": comment, "stage": stage, "bulk": False,
                             "completed": final}
    if on_behalf_of is not None:
        after["on_behalf_of_id"] = on_behalf_of  # decided by a delegate (the actor) for this reviewer
    if not final:
        _advance(session, campaign, item, stage + 1)
        after["next_stage"] = item.stage
        after["next_reviewer_id"] = item.reviewer_id
    audit(session, actor=_actor(user), action="review.decide", object_type="review_item", object_id=str(item.id),
          before=before, after=after, campaign_id=campaign.id)
    session.flush()
    return item, campaign


_INSERT_DECISION = Decision.__table__.insert()


@functools.cache
def _campaign_of_item() -> Select[tuple[Campaign]]:
    """The campaign of the item `:item_id`, as much of it as the common case reads (its definition, population,
    sync runs and summary are loaded only if something asks for them). Built once: building a statement
    costs more CPU than running it."""
    return (select(Campaign).options(load_only(Campaign.id, Campaign.name, Campaign.status, Campaign.spec),
                                     lazyload(Campaign.definition))
            .where(Campaign.id == select(ReviewItem.campaign_id)
                   .where(ReviewItem.id == bindparam("item_id", type_=Integer)).scalar_subquery()))


@functools.cache
def _first_decision_update(only_final_stage: bool, no_item_comment_needed: bool) -> Update:
    """The conditional UPDATE ... RETURNING of `_first_decision` (its docstring says what each condition is
    for), one per combination of the conditions that depend on the decision; built once."""
    me = bindparam("me", type_=Integer)
    conds: list[Any] = [ReviewItem.id == bindparam("item_id", type_=Integer),
                        ReviewItem.version == bindparam("expected_version", type_=Integer),
                        or_(ReviewItem.reviewer_id == me, ReviewItem.co_reviewer_id == me),
                        ReviewItem.decision.is_(None), ReviewItem.comment.is_(None), eligibility.sql_not_about(me)]
    if only_final_stage:
        conds.append(ReviewItem.stage >= bindparam("last_stage", type_=Integer))
    if no_item_comment_needed:
        conds.append(~_needs_item_comment())
    columns = ReviewItem.__table__.c
    return (update(ReviewItem).where(*conds)
            .values(decision=bindparam("new_decision", type_=columns.decision.type),
                    comment=bindparam("new_comment", type_=columns.comment.type),
                    decided_by_user_id=bindparam("user_id", type_=Integer), decided_by_identity_id=me,
                    decided_for_identity_id=None, decided_at=bindparam("now", type_=columns.decided_at.type),
                    decided_in_bulk=False, completed=True, version=ReviewItem.version + 1)
            .returning(ReviewItem)
            .execution_options(synchronize_session=False, populate_existing=True))


def _first_decision(session: Session, user: User, item_id: int, decision: str, comment: str | None,
                    expected_version: int | None) -> ReviewItem | None:
    """The common case, the reviewer's first decision on their own undecided item, in one conditional UPDATE
    ... RETURNING (no SELECT ... FOR UPDATE, no separate eligibility read); None when the item is not that
    case, and `decide` then takes the general path, which checks and answers exactly as before.

    The UPDATE takes the item only if, at the moment of the write, every rule of the general path lets the
    decision through without a refusal, a repeat, a sign-off check or a hand-on to the next stage: the user's
    own item (reviewer or co-reviewer, not as a delegate), still at `expected_version`, undecided and without
    a comment, not about the user (`eligibility.sql_not_about`, the SQL of `eligibility.check`), on its last
    stage or revoked, and, for an approval without a comment, of no leaver or orphaned account. The input
    and the campaign (active, comment rule) are checked before it, in Python; a refusal of any of them is
    left to the general path, so its order of checks (who may see the item first) is kept. The writes are
    the general path's: the item's decision fields and version, one Decision row, one audit event.

    Only with `expected_version`: the campaign is read before the item is locked (the general path reads it
    after), and what makes that safe is the version: closing or cancelling a campaign bumps the version of
    every item in the same transaction, so an UPDATE that waited for that transaction, or came after it,
    no longer matches (PostgreSQL re-checks the WHERE on the row's newest version) and the general path
    answers. Without a version to hold on to, the general path decides.
    """
    me = user.identity_id
    if me is None or expected_version is None or (user.is_auditor and not user.is_admin):
        return None
    decision = (decision or "").strip().lower()
    try:
        comment = _clean_comment(comment)
    except DecisionError:
        return None
    campaign = session.scalar(_campaign_of_item(), {"item_id": item_id})
    if campaign is None or campaign.status != CampaignStatus.ACTIVE:
        return None
    try:
        _check_decision(campaign, decision, comment)
    except DecisionError:
        return None
    now = utcnow()
    stmt = _first_decision_update(only_final_stage=decision != "revoke",  # else handed on to the next stage
                                  no_item_comment_needed=decision == "approve" and comment is None)
    params = {"item_id": item_id, "expected_version": expected_version, "me": me, "last_stage": len(_stages(campaign)) - 1,
              "new_decision": decision, "new_comment": comment, "user_id": user.id, "now": now}
    try:
        item = session.scalars(stmt, params).one_or_none()
    except OperationalError as exc:
        if _is_stale_write(exc):
            raise StaleItem(_stale_message(None), item_id) from exc
        raise
    if item is None:
        return None
    _keep_campaign(item, campaign)
    session.execute(_INSERT_DECISION, {
        "item_id": item.id, "campaign_id": campaign.id, "stage": item.stage, "decision": decision, "comment": comment,
        "user_id": user.id, "identity_id": me, "bulk": False, "at": now, "on_behalf_of_id": None})
    audit_many(session, [{
        "actor": _actor(user), "action": "review.decide", "object_type": "review_item", "object_id": str(item.id),
        "campaign_id": campaign.id,
        "before": {"decision": None, "comment": None, "stage": item.stage, "reviewer_id": item.reviewer_id},
        "after": {"decision": decision, "comment": comment, "stage": item.stage, "bulk": False, "completed": True},
    }])
    return item


def _advance(session: Session, campaign: Campaign, item: ReviewItem, next_stage: int) -> None:
    """Hand an item approved (or abstained) on a non-final stage to the next stage's reviewer."""
    item.stage = next_stage
    item.co_reviewer_id = None
    item.reassigned_reason = None
    _set_decision(item)
    campaigns_service.route_item_to_stage(session, item, next_stage)
    session.flush()


def _stale_message(item: ReviewItem | None) -> str:
    if item is not None and item.decision:
        return (f"Someone else changed this item at the same time (it is now '{item.decision}'). "
                "Your decision was not saved: reload and decide again.")
    return "Someone else changed this item at the same time. Your decision was not saved: reload and decide again."


# --- undo --------------------------------------------------------------------------------------------


def undo(session: Session, user: User, item_id: int, expected_version: int | None = None) -> ReviewItem:
    """Take back the item's current decision: the item is undecided again, the Decision row is marked
    undone (kept, as every decision is), and the undo is audited (`review.undo`).

    Only the person who took the decision may undo it (anyone else who may see the item: Forbidden), and
    only while it could still be changed: the campaign active, the reviewer not signed off, no remediation
    for the item. A decision that handed the item to the next stage cannot be undone (that stage is the
    next reviewer's now: the item has no decision of this user's any more)."""
    item = load_item_for(session, user, item_id, for_update=True)
    _check_writer(user)
    campaign = session.get(Campaign, item.campaign_id)
    assert campaign is not None
    if item.decision is None:
        raise DecisionError("This item has no decision to undo.")
    if item.decided_by_user_id != user.id:
        raise Forbidden("Only the person who took a decision can undo it.")
    _require_active(campaign)
    if expected_version is not None and item.version != expected_version:
        raise StaleItem(_stale_message(item), item.id)
    signoff = _signed_off(session, campaign.id, (item.reviewer_id, item.co_reviewer_id))
    if signoff is not None:
        raise DecisionError(
            f"This decision was signed off on {signoff.signed_off_at:%Y-%m-%d %H:%M} UTC and can no longer be undone.")
    if session.scalar(select(Remediation.id).where(Remediation.item_id == item.id)) is not None:
        raise DecisionError("Remediation of this item has started: the decision can no longer be undone.")
    before = {"decision": item.decision, "comment": item.comment, "stage": item.stage,
              "decided_at": item.decided_at.isoformat() if item.decided_at else None,
              "bulk": item.decided_in_bulk, "on_behalf_of_id": item.decided_for_identity_id}
    now = utcnow()
    _set_decision(item)
    _flush_item(session, item_id)
    last = session.scalar(select(Decision).where(Decision.item_id == item.id, Decision.stage == item.stage,
                                                 Decision.undone_at.is_(None)).order_by(Decision.id.desc()).limit(1))
    if last is not None:
        last.undone_at = now
    audit(session, actor=_actor(user), action="review.undo", object_type="review_item", object_id=str(item.id),
          before=before, after={"decision": None, "stage": item.stage}, campaign_id=campaign.id)
    session.flush()
    return item


# --- bulk --------------------------------------------------------------------------------------------


NEEDS_ITEM_COMMENT = ("terminated", "orphaned")  # approving these always needs a comment on the item itself

SKIP_REASONS = {
    "decided": "already decided (bulk decisions never replace a decision)",
    "changed": "changed by someone else while this ran (decided, reassigned or escalated)",
    "flagged": "flagged for a closer look (privileged, dormant, no MFA...): decide them one by one",
    "flagged_needs_comment": "flagged: this campaign allows approving flagged access in bulk only with a comment",
    "needs_item_comment": "a terminated person's or an orphaned account's access: approve only one by one, with a comment",
    "own_access": "your own access: someone else must decide it",
    "not_yours": "not routed to you",
}


@dataclass(frozen=True)
class BulkResult:
    """What a bulk decision did: how many items it decided, and how many of the selection it left, by reason
    (keys of SKIP_REASONS)."""

    changed: int
    skipped: dict[str, int] = field(default_factory=dict)

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())

    def explain(self) -> list[str]:
        return [f"{n:,} {SKIP_REASONS[k]}" for k, n in sorted(self.skipped.items()) if n]


def bulk_approve_flagged(campaign: Campaign) -> bool:
    """Whether bulk approval may take flagged items (with a comment): the campaign's `rules.bulk_approve_flagged`."""
    return bool(((campaign.spec or {}).get("rules") or {}).get("bulk_approve_flagged"))


def _needs_item_comment():
    return or_(*(queries.has_risk(r) for r in NEEDS_ITEM_COMMENT))


def bulk_writable(campaign: Campaign, me: int, decision: str, with_comment: bool) -> list[Any]:
    """The conditions an item must meet, at the moment of the write, to be decided in bulk by `me` (the
    one home of the bulk rules; the inbox counts what a bulk approval would take with them).

    The conditions the inbox index answers (decision, risk score) come first: SQLite reads an item's row only
    when a condition needs it, so an item they already rule out costs no table read. The filtered inbox page
    counts what "Approve N matching" would take over the reviewer's matches (queries.selection_counts): at
    200,000 items (bench.reviews_inbox, risk = flagged) 177 pages read a request with the row's conditions
    first, 2 with the index's."""
    conds: list[Any] = [ReviewItem.decision.is_(None)]
    if decision == "approve" and not (bulk_approve_flagged(campaign) and with_comment):
        conds.append(~queries.flagged_condition())
    conds += [ReviewItem.completed.is_(False), eligibility.sql_not_about(me)]
    if decision == "approve":
        conds.append(~_needs_item_comment())
    return conds


def bulk_decide(session: Session, user: User, campaign_id: int, item_ids: Sequence[int], decision: str,
                comment: str | None = None, on_behalf_of: int | None = None) -> BulkResult:
    """Decide many undecided items of one campaign at once (a filtered selection).

    Bulk decisions never replace a decision and never race one: each chunk is ONE conditional UPDATE
    that takes only items which, at the moment of the write, are still undecided, still the user's to
    decide, not about the user's own access and (for approvals) not flagged, and returns the ids it
    took; the Decision rows and audit events (`bulk: true`, one per item) are written for exactly those.
    A single decision saved a moment earlier in another tab is never overwritten: its item is skipped.

    Approvals leave out flagged items (risk score at or above the flag threshold) unless the campaign's
    `rules.bulk_approve_flagged` is true and a comment is given; access of a terminated person or of an
    orphaned account is never approved in bulk (it needs its own comment). Items on a stage that is not
    their last are handed on one by one (routing needs each item's person).

    `on_behalf_of`: the user decides as the active delegate of that reviewer (eligibility.delegators_of):
    the reviewer's items are taken, never one about the user, and each records both.
    """
    _check_writer(user)
    campaign = _active_campaign(session, campaign_id)
    me = user.identity_id
    if me is None:
        raise NotFound("No such campaign.")
    if on_behalf_of is not None and on_behalf_of not in eligibility.delegators_of(session, me, utcnow()):
        raise NotFound("No such campaign.")
    whose = me if on_behalf_of is None else on_behalf_of  # the reviewer whose items are decided
    owned = session.scalar(
        select(ReviewItem.id).where(ReviewItem.campaign_id == campaign_id,
                                    or_(ReviewItem.reviewer_id == whose, ReviewItem.co_reviewer_id == whose)).limit(1)
    )
    if owned is None:
        raise NotFound("No such campaign.")
    # input is checked only once the campaign is known to be the user's (a refusal says nothing about others')
    decision = (decision or "").strip().lower()
    comment = _clean_comment(comment)
    _require_active(campaign)
    _check_decision(campaign, decision, comment)
    ids = sorted({int(i) for i in item_ids})
    if not ids:
        return BulkResult(0)
    last_stage = len(_stages(campaign)) - 1
    mine = and_(ReviewItem.campaign_id == campaign_id,
                or_(ReviewItem.reviewer_id == whose, ReviewItem.co_reviewer_id == whose))
    flagged = queries.flagged_condition()
    flagged_ok = decision != "approve" or (bulk_approve_flagged(campaign) and comment is not None)
    # what the write may take: checked by the UPDATE itself, at the moment of the write
    writable = [mine, *bulk_writable(campaign, me, decision, comment is not None)]

    # why the rest is left (read first, for the report; the UPDATE decides)
    skipped: dict[str, int] = {}
    expected = 0
    for chunk in _chunks(ids):
        rows = session.execute(select(
            ReviewItem.id, ReviewItem.decision, eligibility.sql_not_about(me),
            _needs_item_comment() if decision == "approve" else literal(False), flagged,
        ).where(ReviewItem.id.in_(chunk), mine)).all()
        skipped["not_yours"] = skipped.get("not_yours", 0) + len(chunk) - len(rows)
        for _id, decided, not_mine, item_comment, is_flagged in rows:
            reason = ("decided" if decided is not None else "own_access" if not not_mine
                      else "needs_item_comment" if item_comment
                      else ("flagged_needs_comment" if bulk_approve_flagged(campaign) else "flagged")
                      if is_flagged and not flagged_ok else None)
            if reason:
                skipped[reason] = skipped.get(reason, 0) + 1
            else:
                expected += 1

    now = utcnow()
    values = dict(decision=decision, comment=comment, decided_by_user_id=user.id, decided_by_identity_id=me,
                  decided_for_identity_id=on_behalf_of, decided_at=now, decided_in_bulk=True, version=ReviewItem.version + 1)
    final = or_(literal(decision == "revoke"), ReviewItem.stage >= last_stage)
    taken: list[tuple[int, int, int | None, bool]] = []  # id, stage, reviewer, completed
    # a revoke, or a campaign of one stage, completes every item it takes: one UPDATE per chunk
    passes = (True,) if decision == "revoke" or last_stage == 0 else (True, False)
    for chunk in _chunks(ids):
        for completes in passes:
            stmt = (update(ReviewItem)
                    .where(ReviewItem.id.in_(chunk), *writable, final if completes else ~final)
                    .values(completed=completes, **values)
                    .returning(ReviewItem.id, ReviewItem.stage, ReviewItem.reviewer_id)
                    .execution_options(synchronize_session=False))
            taken.extend((r[0], r[1], r[2], completes) for r in session.execute(stmt))
    if expected > len(taken):
        skipped["changed"] = expected - len(taken)
    skipped = {k: v for k, v in skipped.items() if v}
    if not taken:
        return BulkResult(0, skipped)
    taken.sort()
    session.execute(Decision.__table__.insert(), [
        {"item_id": i, "campaign_id": campaign_id, "stage": stage, "decision": decision, "comment": comment,
         "user_id": user.id, "identity_id": me, "bulk": True, "at": now, "on_behalf_of_id": on_behalf_of}
        for i, stage, _r, _c in taken
    ])
    # objects loaded before the UPDATE must not keep stale decision/version values
    taken_ids = {t[0] for t in taken}
    for obj in list(session.identity_map.values()):
        if isinstance(obj, ReviewItem) and obj.id in taken_ids:
            session.expire(obj)
    moved: dict[int, tuple[int, int | None]] = {}
    for i, stage, _r, completes in taken:
        if not completes:
            item = session.get(ReviewItem, i, populate_existing=True)
            assert item is not None
            _advance(session, campaign, item, stage + 1)
            moved[i] = (item.stage, item.reviewer_id)
    events = []
    for i, stage, reviewer, _c in taken:
        after: dict[str, Any] = {"decision": decision, "comment": comment, "stage": stage, "bulk": True,
                                 "completed": i not in moved}
        if i in moved:
            after["next_stage"], after["next_reviewer_id"] = moved[i]
        if on_behalf_of is not None:
            after["on_behalf_of_id"] = on_behalf_of
        events.append({"actor": _actor(user), "action": "review.decide", "object_type": "review_item",
                       "object_id": str(i), "campaign_id": campaign_id,
                       "before": {"decision": None, "comment": None, "stage": stage, "reviewer_id": reviewer},
                       "after": after})
    audit_many(session, events)
    return BulkResult(len(taken), skipped)


# --- reassign ----------------------------------------------------------------------------------------


def _target_identity(session: Session, to_identity_id: int) -> Identity:
    target = session.get(Identity, to_identity_id)
    if target is None or target.ended_at is not None:
        raise DecisionError("That person is not in the directory (or has left it), so they cannot review.")
    if target.status == PersonStatus.TERMINATED:
        raise DecisionError(f"{target.display_name} has left (terminated) and cannot review.")
    return target


def reassign(session: Session, user: User, item_id: int, to_identity_id: int, reason: str,
             expected_version: int | None = None) -> ReviewItem:
    """Route an undecided item to another person, with a reason. The item's reviewer (or co-reviewer)
    may hand it on; admins may reassign any item. Never to the person whose access it is."""
    reason = (reason or "").strip()
    item = load_item_for(session, user, item_id, for_update=True)
    _check_writer(user)
    mine = user.identity_id is not None and user.identity_id in (item.reviewer_id, item.co_reviewer_id)
    if not (mine or user.is_admin):
        raise Forbidden("Only the item's reviewer or an admin can reassign it.")
    campaign = session.get(Campaign, item.campaign_id)
    assert campaign is not None
    _require_active(campaign)
    if expected_version is not None and item.version != expected_version:
        raise StaleItem(_stale_message(item), item.id)
    if not reason:
        raise DecisionError("Say why you reassign this item (the reason is kept in the audit trail).")
    if len(reason) > MAX_COMMENT:
        raise DecisionError(f"Your reason is too long (at most {MAX_COMMENT} characters).")
    if item.decision is not None:
        raise DecisionError("This item is already decided; only undecided items can be reassigned.")
    target = _target_identity(session, to_identity_id)
    try:
        eligibility.check(target.id, eligibility.item_subjects(session, item), "review")
    except eligibility.SelfReview as exc:
        raise DecisionError("Nobody reviews their own access: choose someone other than the person it belongs to.") from exc
    if target.id == item.reviewer_id:
        raise DecisionError(f"{target.display_name} already reviews this item.")
    before = {"reviewer_id": item.reviewer_id, "co_reviewer_id": item.co_reviewer_id, "routed_by": item.routed_by}
    item.reviewer_id = target.id
    if item.co_reviewer_id == target.id:
        item.co_reviewer_id = None
    item.routed_by = "reassigned"
    item.reassigned_reason = reason
    _flush_item(session, item_id)
    audit(session, actor=_actor(user), action="review.reassign", object_type="review_item", object_id=str(item.id),
          before=before, after={"reviewer_id": target.id, "reviewer": target.email, "reason": reason,
                                "co_reviewer_id": item.co_reviewer_id},
          campaign_id=campaign.id)
    return item


def reassign_reviewer(session: Session, user: User, campaign_id: int, from_identity_id: int | None,
                      to_identity_id: int, reason: str) -> int:
    """Admin: move every undecided item of one reviewer in a campaign to another person (leave, departure);
    `from_identity_id=None` routes the campaign's unroutable items (no reviewer found at launch).

    Items whose person is the new reviewer stay where they are (nobody reviews their own access).
    Returns how many items moved; each move is audited like `reassign`.
    """
    _check_writer(user)
    if not user.is_admin:
        raise Forbidden("Only admins can move a reviewer's items.")
    reason = (reason or "").strip()
    if not reason:
        raise DecisionError("Say why you reassign these items (the reason is kept in the audit trail).")
    campaign = _active_campaign(session, campaign_id)
    _require_active(campaign)
    target = _target_identity(session, to_identity_id)
    if target.id == from_identity_id:
        raise DecisionError(f"{target.display_name} already reviews these items.")
    who = ReviewItem.reviewer_id.is_(None) if from_identity_id is None else ReviewItem.reviewer_id == from_identity_id
    cond = and_(ReviewItem.campaign_id == campaign_id, who,
                ReviewItem.decision.is_(None),
                eligibility.sql_not_about(target.id))
    ids = list(session.scalars(select(ReviewItem.id).where(cond).order_by(ReviewItem.id)))
    if not ids:
        return 0
    for chunk in _chunks(ids):
        session.execute(
            update(ReviewItem).where(ReviewItem.id.in_(chunk), cond)
            .values(reviewer_id=target.id, routed_by="reassigned", reassigned_reason=reason,
                    version=ReviewItem.version + 1)
            .execution_options(synchronize_session=False)
        )
        session.execute(
            update(ReviewItem).where(ReviewItem.id.in_(chunk), ReviewItem.co_reviewer_id == target.id)
            .values(co_reviewer_id=None).execution_options(synchronize_session=False)
        )
    audit_many(session, [
        {"actor": _actor(user), "action": "review.reassign", "object_type": "review_item", "object_id": str(i),
         "campaign_id": campaign_id, "before": {"reviewer_id": from_identity_id},
         "after": {"reviewer_id": target.id, "reviewer": target.email, "reason": reason}}
        for i in ids
    ])
    idset = set(ids)
    for obj in list(session.identity_map.values()):
        if isinstance(obj, ReviewItem) and obj.id in idset:
            session.expire(obj)
    return len(ids)


# --- sign-off ----------------------------------------------------------------------------------------


def sign_off(session: Session, user: User, campaign_id: int) -> ReviewerSignoff:
    """The reviewer confirms their review of a campaign is complete. Refused while an item they review
    is undecided; afterwards their decisions are locked. Signing off twice returns the first sign-off."""
    me = user.identity_id
    campaign = session.get(Campaign, campaign_id)
    if campaign is None or me is None:
        raise NotFound("No such campaign.")
    base = select(ReviewItem.id).where(ReviewItem.campaign_id == campaign_id, ReviewItem.reviewer_id == me)
    if session.scalar(base.limit(1)) is None:
        raise NotFound("No such campaign.")
    _check_writer(user)
    existing = _signed_off(session, campaign_id, [me])
    _require_active(campaign)
    open_count = session.scalar(
        select(func.count()).select_from(ReviewItem)
        .where(ReviewItem.campaign_id == campaign_id, ReviewItem.reviewer_id == me, ReviewItem.decision.is_(None))
    ) or 0
    if open_count:
        raise DecisionError(
            f"{open_count:,} item{'s still need' if open_count != 1 else ' still needs'} a decision before you can sign off."
        )
    if existing is not None:
        return existing
    signoff = ReviewerSignoff(campaign_id=campaign_id, reviewer_id=me, user_id=user.id, signed_off_at=utcnow())
    session.add(signoff)
    session.flush()
    counts = dict(session.execute(
        select(ReviewItem.decision, func.count()).where(ReviewItem.campaign_id == campaign_id, ReviewItem.reviewer_id == me)
        .group_by(ReviewItem.decision)
    ).all())
    audit(session, actor=_actor(user), action="review.sign_off", object_type="campaign", object_id=str(campaign_id),
          after={"reviewer_id": me, "decisions": {k: v for k, v in counts.items() if k}}, campaign_id=campaign_id)
    return signoff
