"""Who may review an item: the one eligibility rule (DESIGN's first invariant).

Nobody reviews, co-reviews or is handed an item about their own access: the item's person (its frozen
`identity_id`), or the person an account is linked to now (an orphaned account linked later to the
reviewer is still their own access). A candidate must also be able to review at all: an active human who
has not left the directory (`eligible`, given by the caller from the directory it holds).

When the rule removes the chosen reviewer, the item goes up the manager chain above them, then to the
definition's fallback reviewer, then to the admin queue (`reviewer_id` None, `routed_by` ADMIN_QUEUE).

Every place that picks or checks a reviewer calls this module: launch and stage advance (through
`routing`), escalation (`notify`), reassignment by admins and by reviewers, decisions single and bulk
(`decisions`), delegation while away (`delegation`), and the evidence export that counts self-decisions
(must be 0).

**Delegation**: while a delegation is active (`starts_at` <= now < `ends_at`, not ended early), the
delegate may see and decide the delegator's items, except items about the delegate themself: those stay
with the delegator (who is eligible for them, or the rule already moved them up the chain at routing).
A delegate must be a person who can review at all, and never the delegator.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from datetime import datetime

from sqlalchemy import and_, exists, or_, select
from sqlalchemy.sql.elements import ColumnElement

from attest.entitlements.models import Account, Identity, PersonStatus
from attest.reviews.models import Delegation, ReviewItem

ADMIN_QUEUE = "admin_queue"  # routed_by of an item nobody eligible could take: an admin must assign it
MAX_CHAIN = 64  # a manager chain longer than this is a loop in the directory


class SelfReview(ValueError):  # noqa: N818 - the name is the contract
    """The person would review (or decide) their own access. Nothing was changed."""


def _always(_identity_id: int) -> bool:
    return True


def can_review_at_all(status: str | None, kind: str | None, ended_at: object) -> bool:
    """A person who can review anything: still in the directory, active, a human."""
    return ended_at is None and status == PersonStatus.ACTIVE and kind == "human"


class Directory:
    """Managers and reviewer eligibility read from the database on demand (cached for the session's
    work): for the few items a stage advance or an escalation routes one by one."""

    def __init__(self, session) -> None:
        self.session = session
        self._rows: dict[int, tuple[int | None, bool]] = {}
        self._whole = False

    @classmethod
    def whole(cls, session) -> Directory:
        """Every person read at once (one query), for a launch that routes the whole directory; a person
        it did not read is not in the directory (no manager, not eligible) without asking again."""
        directory = cls(session)
        for iid, mid, status, kind, ended in session.execute(
            select(Identity.id, Identity.manager_id, Identity.status, Identity.kind, Identity.ended_at)
        ):
            directory._rows[iid] = (mid, can_review_at_all(status, kind, ended))
        directory._whole = True
        return directory

    def people(self) -> list[int]:
        """The ids of the people read so far (everyone, for `whole`), in the order they were read."""
        return list(self._rows)

    def _row(self, identity_id: int) -> tuple[int | None, bool]:
        if identity_id not in self._rows:
            if self._whole:
                return None, False
            row = self.session.execute(
                select(Identity.manager_id, Identity.status, Identity.kind, Identity.ended_at)
                .where(Identity.id == identity_id)).first()
            self._rows[identity_id] = (None, False) if row is None else (
                row.manager_id, can_review_at_all(row.status, row.kind, row.ended_at))
        return self._rows[identity_id]

    def manager_of(self, identity_id: int) -> int | None:
        return self._row(identity_id)[0]

    def eligible(self, identity_id: int) -> bool:
        return self._row(identity_id)[1]


def may_review(candidate: int | None, subjects: Iterable[int | None],
               eligible: Callable[[int], bool] = _always) -> bool:
    """True when `candidate` may review an item about `subjects` (the item's person and the person its
    account is linked to now): a real, eligible person who is none of them."""
    return candidate is not None and candidate not in {s for s in subjects if s is not None} and eligible(candidate)


def manager_chain(start: int | None, manager_of: Callable[[int], int | None]) -> Iterator[int]:
    """The managers above `start`, nearest first (cycle-safe; `start` itself is not yielded)."""
    seen = {start}
    current = start
    for _ in range(MAX_CHAIN):
        if current is None:
            return
        boss = manager_of(current)
        if boss is None or boss in seen:
            return
        seen.add(boss)
        yield boss
        current = boss


def first_eligible(candidates: Iterable[int | None], subjects: Iterable[int | None],
                   eligible: Callable[[int], bool] = _always) -> int | None:
    subjects = [s for s in subjects if s is not None]
    for c in candidates:
        if may_review(c, subjects, eligible):
            return c
    return None


def replacement(removed: int | None, subjects: Iterable[int | None], *, fallback_id: int | None,
                manager_of: Callable[[int], int | None], eligible: Callable[[int], bool] = _always,
                ) -> tuple[int | None, str]:
    """Who takes an item when the rule removes `removed` (the person themself, or a reviewer who may not
    take it): the manager chain above `removed`, then the fallback reviewer (then the chain above the
    fallback, when the fallback is the person), else the admin queue. Returns (reviewer, how) with how
    in manager_chain | fallback | admin_queue."""
    subjects = [s for s in subjects if s is not None]
    boss = first_eligible(manager_chain(removed, manager_of), subjects, eligible)
    if boss is not None:
        return boss, "manager_chain"
    if may_review(fallback_id, subjects, eligible):
        return fallback_id, "fallback"
    if fallback_id is not None:
        boss = first_eligible(manager_chain(fallback_id, manager_of), subjects, eligible)
        if boss is not None:
            return boss, "manager_chain"
    return None, ADMIN_QUEUE


def check(reviewer_id: int | None, subjects: Iterable[int | None], what: str = "review") -> None:
    """Raise SelfReview when `reviewer_id` is one of the item's subjects."""
    if reviewer_id is not None and reviewer_id in {s for s in subjects if s is not None}:
        raise SelfReview(f"Nobody may {what} their own access: this item is about you. "
                         "It has to be decided by someone else.")


def item_subjects(session, item: ReviewItem) -> tuple[int | None, int | None]:
    """The persons an item is about: its person at launch, and the person its account is linked to now."""
    linked = session.scalar(select(Account.identity_id).where(Account.id == item.account_id))
    return item.identity_id, linked


def sql_not_about(identity: ColumnElement | int) -> ColumnElement[bool]:
    """SQL over review_item: the item is not about `identity` (a column or an id): neither its person at
    launch nor the person its account is linked to now."""
    about_now = exists().where(Account.id == ReviewItem.account_id, Account.identity_id == identity)
    return and_(or_(ReviewItem.identity_id.is_(None), ReviewItem.identity_id != identity), ~about_now)


def sql_self_decided() -> ColumnElement[bool]:
    """SQL over review_item: the item was decided by its own person as the item records them (the person
    at launch): a self-decision. Decisions refuse them (`check`, with the account's current link too);
    the evidence counts them from the item's own columns, so `evidence verify` can recount them offline."""
    return and_(ReviewItem.decided_by_identity_id.is_not(None),
                ReviewItem.decided_by_identity_id == ReviewItem.identity_id)


# --- delegation while away ------------------------------------------------------------------------------


def delegation_problem(delegator_id: int | None, delegate_id: int | None,
                       eligible: Callable[[int], bool] = _always) -> str | None:
    """Why `delegate_id` may not stand in for `delegator_id` (None: they may)."""
    if delegator_id is None:
        return "Your sign-in is not linked to a person in the directory, so you have no reviews to delegate."
    if delegate_id is None:
        return "Choose the person who reviews for you while you are away."
    if delegate_id == delegator_id:
        return "You cannot delegate to yourself: choose a colleague."
    if not eligible(delegate_id):
        return "That person cannot review (they have left, are inactive, or are not a person)."
    return None


def sql_delegation_active(now: datetime) -> ColumnElement[bool]:
    """SQL over review_delegation: the delegation is in force at `now`."""
    return and_(Delegation.starts_at <= now, Delegation.ends_at > now, Delegation.ended_at.is_(None))


def delegators_of(session, delegate_id: int | None, now: datetime) -> list[int]:
    """The reviewers `delegate_id` currently stands in for (ordered by id)."""
    if delegate_id is None:
        return []
    return sorted(set(session.scalars(select(Delegation.delegator_id).where(
        Delegation.delegate_id == delegate_id, sql_delegation_active(now)))))


def acting_for(session, identity_id: int | None, item: ReviewItem, now: datetime) -> int | None:
    """The reviewer of `item` on whose behalf `identity_id` may act now (their active delegate), or None.
    Never for an item about `identity_id` itself: that stays with the delegator."""
    if identity_id is None:
        return None
    for reviewer in (item.reviewer_id, item.co_reviewer_id):
        if reviewer is None or reviewer == identity_id:
            continue
        if reviewer in delegators_of(session, identity_id, now):
            if not may_review(identity_id, item_subjects(session, item)):
                return None
            return reviewer
    return None
