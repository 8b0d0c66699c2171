"""The campaign pages' reads: a reviewer's campaigns, the admin campaign list, a campaign's dashboard
with progress per reviewer, and an item's history.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, case, func, or_, select
from sqlalchemy.orm import Session

from attest.db import utcnow
from attest.entitlements.models import Identity
from attest.reviews.models import (
    CAMPAIGN_STATUSES,
    RISKS,
    Campaign,
    CampaignStatus,
    Decision,
    ReviewerSignoff,
    ReviewItem,
)
from attest.reviews.queries.inbox import (
    InboxCounts,
    Progress,
    _count_columns,
    _counts,
    has_risk,
    inbox_counts_and_signoff_time,
)


def is_my_campaign(session: Session, identity_id: int | None, campaign_id: int) -> bool:
    if identity_id is None:
        return False
    return session.scalar(select(ReviewItem.id).where(
        ReviewItem.campaign_id == campaign_id,
        or_(ReviewItem.reviewer_id == identity_id, ReviewItem.co_reviewer_id == identity_id)).limit(1)) is not None


@dataclass
class MyCampaign(Progress):
    campaign: Campaign
    signed_off_at: datetime | None
    counts: InboxCounts  # as inbox_counts(..., role="reviewer")

    @property
    def total(self) -> int:
        return self.counts.total

    @property
    def decided(self) -> int:
        return self.counts.decided

    @property
    def escalated(self) -> int:
        return self.counts.escalated_to_me

    @property
    def overdue(self) -> bool:
        due = self.campaign.due_at
        return due is not None and due < utcnow() and self.open > 0

    @property
    def days_left(self) -> int | None:
        due = self.campaign.due_at
        return None if due is None else (due - utcnow()).days


def my_campaigns(session: Session, identity_id: int | None, statuses: Sequence[str] = (CampaignStatus.ACTIVE,)) -> list[MyCampaign]:
    """The campaigns in `statuses` where `identity_id` has items to review (or escalated to them), soonest due
    first, each with the reviewer's counts: one pass over their items in those campaigns (index-only), one
    over the escalated ones."""
    if identity_id is None:
        return []
    # only the items of campaigns in `statuses`: a reviewer's closed campaigns pile up quarter after quarter,
    # and every inbox page would count them again
    wanted = ReviewItem.campaign_id.in_(select(Campaign.id).where(Campaign.status.in_(list(statuses))))
    mine = {row[0]: row[1:] for row in session.execute(
        select(ReviewItem.campaign_id, *_count_columns())
        .where(ReviewItem.reviewer_id == identity_id, wanted).group_by(ReviewItem.campaign_id)
    )}
    escalated = dict(((c, n) for c, n in session.execute(
        select(ReviewItem.campaign_id, func.count()).where(ReviewItem.co_reviewer_id == identity_id, wanted)
        .group_by(ReviewItem.campaign_id)
    )))
    ids = set(mine) | set(escalated)
    if not ids:
        return []
    rows = session.execute(
        select(Campaign, ReviewerSignoff.signed_off_at)
        .outerjoin(ReviewerSignoff, and_(ReviewerSignoff.campaign_id == Campaign.id,
                                         ReviewerSignoff.reviewer_id == identity_id))
        .where(Campaign.id.in_(ids), Campaign.status.in_(list(statuses)))
    ).all()
    out = [MyCampaign(c, signed_off_at, _counts(mine.get(c.id, (0,) * 6), escalated.get(c.id, 0)))
           for c, signed_off_at in rows]
    far = datetime.max.replace(tzinfo=utcnow().tzinfo)
    return sorted(out, key=lambda m: (m.campaign.due_at or far, m.campaign.id))


def my_campaign(session: Session, identity_id: int | None, campaign_id: int,
                statuses: Sequence[str] = CAMPAIGN_STATUSES) -> MyCampaign | None:
    """The one campaign of `my_campaigns(session, identity_id, statuses)` whose id is `campaign_id`, or None when
    it is not among them (in another status, or no item of it is the reviewer's or escalated to them), counting
    only that campaign's items: what a page showing one campaign needs (the inbox's item list, answering htmx)."""
    if identity_id is None:
        return None
    counts, signed_off_at = inbox_counts_and_signoff_time(session, identity_id, campaign_id)
    if not counts.total and not counts.escalated_to_me:
        return None
    campaign = session.get(Campaign, campaign_id)
    if campaign is None or campaign.status not in statuses:
        return None
    return MyCampaign(campaign, signed_off_at, counts)


@dataclass
class CampaignRow(Progress):
    campaign: Campaign
    total: int
    decided: int


    @property
    def overdue(self) -> bool:
        due = self.campaign.due_at
        return self.campaign.status == CampaignStatus.ACTIVE and due is not None and due < utcnow() and self.decided < self.total


def campaign_list(session: Session, status: str | None = None, limit: int = 200) -> list[CampaignRow]:
    stmt = select(Campaign).order_by(Campaign.id.desc()).limit(limit)
    if status:
        stmt = stmt.where(Campaign.status == status)
    campaigns = session.scalars(stmt).all()
    if not campaigns:
        return []
    counts = dict(((c, (t, d)) for c, t, d in session.execute(
        select(ReviewItem.campaign_id, func.count(), func.count(ReviewItem.decision))
        .where(ReviewItem.campaign_id.in_([c.id for c in campaigns])).group_by(ReviewItem.campaign_id)
    )))
    return [CampaignRow(c, *counts.get(c.id, (0, 0))) for c in campaigns]


@dataclass
class ReviewerProgress(Progress):
    reviewer_id: int | None
    name: str
    email: str | None
    total: int
    decided: int
    revoked: int
    escalated: int
    co_reviewer_names: list[str]
    signed_off_at: datetime | None
    campaign_overdue: bool


    @property
    def overdue(self) -> bool:
        return self.campaign_overdue and self.open > 0


@dataclass
class CampaignDashboard(Progress):
    campaign: Campaign
    total: int
    decided: int
    by_decision: dict[str, int]
    unroutable: int
    reviewers: list[ReviewerProgress]
    risk_counts: dict[str, int]


    @property
    def overdue(self) -> bool:
        due = self.campaign.due_at
        return self.campaign.status == CampaignStatus.ACTIVE and due is not None and due < utcnow() and self.decided < self.total

    @property
    def overdue_reviewers(self) -> list[ReviewerProgress]:
        return [r for r in self.reviewers if r.overdue]

    @property
    def escalated_reviewers(self) -> list[ReviewerProgress]:
        return [r for r in self.reviewers if r.escalated]

    @property
    def signed_off(self) -> int:
        return sum(1 for r in self.reviewers if r.signed_off_at)


def campaign_dashboard(session: Session, campaign_id: int) -> CampaignDashboard | None:
    """Progress per reviewer, overdue reviewers and escalations of one campaign."""
    campaign = session.get(Campaign, campaign_id)
    if campaign is None:
        return None
    now = utcnow()
    campaign_overdue = campaign.status == CampaignStatus.ACTIVE and campaign.due_at is not None and campaign.due_at < now
    by_decision: dict[str, int] = {}
    total = decided = 0
    for decision, n in session.execute(
        select(ReviewItem.decision, func.count()).where(ReviewItem.campaign_id == campaign_id).group_by(ReviewItem.decision)
    ):
        total += n
        if decision:
            decided += n
            by_decision[decision] = n
    per = session.execute(
        select(ReviewItem.reviewer_id, func.count(), func.count(ReviewItem.decision),
               func.sum(case((ReviewItem.decision == "revoke", 1), else_=0)),
               func.sum(case((ReviewItem.co_reviewer_id.is_not(None), 1), else_=0)))
        .where(ReviewItem.campaign_id == campaign_id).group_by(ReviewItem.reviewer_id)
    ).all()
    co = session.execute(
        select(ReviewItem.reviewer_id, ReviewItem.co_reviewer_id).where(
            ReviewItem.campaign_id == campaign_id, ReviewItem.co_reviewer_id.is_not(None)).distinct()
    ).all()
    ids = {r[0] for r in per if r[0] is not None} | {c[1] for c in co}
    people = {i.id: i for i in session.scalars(select(Identity).where(Identity.id.in_(ids)))} if ids else {}
    signoffs = dict(((r, at) for r, at in session.execute(
        select(ReviewerSignoff.reviewer_id, ReviewerSignoff.signed_off_at).where(ReviewerSignoff.campaign_id == campaign_id)
    )))
    co_names: dict[int, list[str]] = {}
    for reviewer_id, co_id in co:
        if reviewer_id is not None and co_id in people:
            co_names.setdefault(reviewer_id, []).append(people[co_id].display_name)
    reviewers, unroutable = [], 0
    for reviewer_id, n, d, revoked, escalated in per:
        if reviewer_id is None:
            unroutable = n
            continue
        person = people.get(reviewer_id)
        reviewers.append(ReviewerProgress(
            reviewer_id, person.display_name if person else f"identity {reviewer_id}", person.email if person else None,
            n, d, int(revoked or 0), int(escalated or 0), sorted(co_names.get(reviewer_id, [])),
            signoffs.get(reviewer_id), campaign_overdue,
        ))
    reviewers.sort(key=lambda r: (-(r.open), r.name.lower()))
    sums = session.execute(
        select(*(func.sum(case((has_risk(r), 1), else_=0)) for r in RISKS)).where(ReviewItem.campaign_id == campaign_id)
    ).one()
    risk_counts = {r: int(n) for r, n in zip(RISKS, sums, strict=True) if n}
    return CampaignDashboard(campaign, total, decided, by_decision, unroutable, reviewers, risk_counts)


def item_history(session: Session, item_id: int) -> list[Any]:

    return list(session.scalars(select(Decision).where(Decision.item_id == item_id).order_by(Decision.id)))
