"""Choosing what is due at `now`: launch notices, the latest reminder due, escalations (and who they go
to), closing summaries; nothing is sent or written here (`plan` returns a Plan). Also the escalation forecast
and the figures of a campaign's summary.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, exists, func, select
from sqlalchemy.orm import Session

from attest.auth.models import User
from attest.config import Settings
from attest.entitlements.models import Identity
from attest.entitlements.queries import person_by_email
from attest.reviews import eligibility
from attest.reviews.models import (
    Campaign,
    CampaignDefinition,
    CampaignStatus,
    Delegation,
    ReviewerNotice,
    ReviewerSignoff,
    ReviewItem,
)
from attest.reviews.notify.rendering import _campaign_ctx, _date, campaign_url, inbox_url

SUMMARY_WINDOW = timedelta(days=7)


@dataclass
class Notice:
    campaign_id: int
    kind: str
    to: str
    to_name: str
    template: str
    subject: str
    context: dict[str, Any]
    identity_id: int | None = None
    user_id: int | None = None


@dataclass
class Escalation:
    campaign_id: int
    reviewer_id: int
    co_reviewer_id: int | None
    items: int
    overdue_days: int
    applied: bool = False  # an earlier run already made the co-reviewer (only the mails are left)


@dataclass
class Plan:
    notices: list[Notice] = field(default_factory=list)
    escalations: list[Escalation] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # why someone could not be mailed (no address)


def _undecided():
    return and_(ReviewItem.decision.is_(None), ReviewItem.completed.is_(False))


def _open_counts(session: Session, campaign_ids: list[int]) -> dict[tuple[int, int], int]:
    """(campaign, reviewer) -> undecided items, for reviewers who have not signed off."""
    if not campaign_ids:
        return {}
    signed = exists().where(ReviewerSignoff.campaign_id == ReviewItem.campaign_id,
                            ReviewerSignoff.reviewer_id == ReviewItem.reviewer_id)
    rows = session.execute(
        select(ReviewItem.campaign_id, ReviewItem.reviewer_id, func.count())
        .where(ReviewItem.campaign_id.in_(campaign_ids), ReviewItem.reviewer_id.is_not(None), _undecided(), ~signed)
        .group_by(ReviewItem.campaign_id, ReviewItem.reviewer_id)
    )
    return {(c, r): n for c, r, n in rows}


def _sent(session: Session, campaign_ids: list[int]) -> dict[tuple[int, int | None, str], datetime]:
    if not campaign_ids:
        return {}
    rows = session.execute(
        select(ReviewerNotice.campaign_id, ReviewerNotice.identity_id, ReviewerNotice.kind, ReviewerNotice.sent_at)
        .where(ReviewerNotice.campaign_id.in_(campaign_ids), ReviewerNotice.identity_id.is_not(None))
    )
    return {(c, i, k): at for c, i, k, at in rows}


def _identities(session: Session, ids: set[int]) -> dict[int, Identity]:
    if not ids:
        return {}
    return {i.id: i for i in session.scalars(select(Identity).where(Identity.id.in_(ids)))}


def _timing(campaign: Campaign) -> dict[str, Any]:
    return (campaign.spec or {}).get("timing") or {}


def _fallback_identity(session: Session, campaign: Campaign) -> int | None:
    email = (campaign.spec or {}).get("fallback_reviewer")
    if not email:
        return None
    person = person_by_email(session, str(email))
    return person.id if person is not None else None


def _name(identity: Identity) -> str:
    return identity.display_name or identity.email or identity.external_id


def plan(session: Session, settings: Settings, now: datetime) -> Plan:
    """Everything due at `now` and not yet sent (reads only)."""
    out = Plan()
    active = list(session.scalars(select(Campaign).where(Campaign.status == CampaignStatus.ACTIVE).order_by(Campaign.id)))
    ids = [c.id for c in active]
    open_counts = _open_counts(session, ids)
    sent = _sent(session, ids)
    per_campaign: dict[int, dict[int, int]] = defaultdict(dict)
    for (cid, rid), n in open_counts.items():
        per_campaign[cid][rid] = n

    wanted: list[tuple[Campaign, int, str, dict[str, Any]]] = []  # (campaign, identity, kind, extra)
    escalations: list[tuple[Campaign, int, int, int]] = []  # campaign, reviewer, items, overdue days
    for c in active:
        reviewers = per_campaign.get(c.id, {})
        timing = _timing(c)
        for rid, n in sorted(reviewers.items()):
            if (c.id, rid, "launch") not in sent:
                wanted.append((c, rid, "launch", {"items": n}))
                continue  # the launch notice comes first; reminders only after it
            if c.due_at is None:
                continue
            launched = sent[(c.id, rid, "launch")]
            due_days = [d for d in timing.get("reminders_days_before_due") or []
                        if c.due_at - timedelta(days=d) <= now < c.due_at
                        and launched < c.due_at - timedelta(days=d)
                        and (c.launched_at is None or c.launched_at <= c.due_at - timedelta(days=d))]
            if due_days:
                d = min(due_days)
                if (c.id, rid, f"reminder:{d}") not in sent:
                    wanted.append((c, rid, f"reminder:{d}", {"items": n, "days": d}))
            esc = timing.get("escalate_after_days_overdue")
            if esc is not None and now >= c.due_at + timedelta(days=int(esc)) \
                    and (c.id, rid, "escalation") not in sent:
                escalations.append((c, rid, n, max(0, (now - c.due_at).days)))

    # a reviewer away: their delegate gets the same launch notice and reminders, for the delegated inbox
    # (reviews/delegation.py; the reviewer still gets theirs), once per delegate, reviewer and notice
    delegates: dict[int, list[int]] = defaultdict(list)
    rids = {rid for _, rid, kind, _ in wanted}
    if rids:
        for d in session.scalars(select(Delegation).where(Delegation.delegator_id.in_(rids),
                                                          eligibility.sql_delegation_active(now))
                                 .order_by(Delegation.id)):
            if d.delegate_id not in delegates[d.delegator_id]:
                delegates[d.delegator_id].append(d.delegate_id)
    # escalations: the co-reviewer is the one already set on the items, else the manager, else the fallback
    people = _identities(session, {rid for _, rid, _, _ in wanted} | {rid for _, rid, _, _ in escalations}
                         | {d for ds in delegates.values() for d in ds})
    for c, rid, n, overdue in escalations:
        existing = session.scalar(
            select(ReviewItem.co_reviewer_id).where(ReviewItem.campaign_id == c.id, ReviewItem.reviewer_id == rid,
                                                    ReviewItem.co_reviewer_id.is_not(None)).limit(1))
        co = existing or escalation_target(session, c, rid)
        out.escalations.append(Escalation(c.id, rid, co, n, overdue, applied=existing is not None))
    co_people = _identities(session, {e.co_reviewer_id for e in out.escalations if e.co_reviewer_id} - set(people))
    people.update(co_people)

    def add(c: Campaign, identity_id: int, kind: str, template: str, subject: str, **ctx: Any) -> None:
        person = people.get(identity_id)
        if person is None:
            return
        if not person.email:
            out.skipped.append(f"campaign {c.id}: {_name(person)} has no e-mail address ({kind} not sent)")
            return
        out.notices.append(Notice(
            campaign_id=c.id, kind=kind, to=person.email, to_name=_name(person), template=template,
            subject=subject, identity_id=identity_id,
            context={"campaign": _campaign_ctx(c), "inbox_url": inbox_url(settings, c.id),
                     "settings_base_url": settings.base_url, "on_behalf_of": None, **ctx},
        ))

    for c, rid, kind, extra in wanted:
        if kind == "launch":
            add(c, rid, kind, "launch", f"Access review: {c.name} — {extra['items']} items to review", **extra)
        else:
            add(c, rid, kind, "reminder",
                f"Reminder: {extra['items']} items to review in {c.name}, due {_date(c.due_at)}", **extra)
        reviewer = people.get(rid)
        for delegate in delegates.get(rid, []):
            for_kind = f"{kind}:for:{rid}"
            if (c.id, delegate, for_kind) in sent or reviewer is None:
                continue
            add(c, delegate, for_kind, "launch" if kind == "launch" else "reminder",
                f"{'Access review' if kind == 'launch' else 'Reminder'}: {c.name} — you review for "
                f"{_name(reviewer)} while they are away", **extra, on_behalf_of=_name(reviewer),
                inbox_url=f"{settings.base_url}/reviews/for/{rid}?campaign={c.id}")
    by_id = {c.id: c for c in active}
    for e in out.escalations:
        c = by_id[e.campaign_id]
        reviewer = people.get(e.reviewer_id)
        co = people.get(e.co_reviewer_id) if e.co_reviewer_id else None
        add(c, e.reviewer_id, "escalation", "escalation",
            f"Overdue: {c.name} — {e.items} items still need your decision",
            items=e.items, overdue_days=e.overdue_days, role="reviewer",
            reviewer_name=_name(reviewer) if reviewer else "", co_name=_name(co) if co else None)
        if co is not None and (c.id, co.id, f"escalation:{e.reviewer_id}") not in sent:
            add(c, co.id, f"escalation:{e.reviewer_id}", "escalation",
                f"Escalation: {_name(reviewer) if reviewer else 'a reviewer'}'s review in {c.name} is overdue",
                items=e.items, overdue_days=e.overdue_days, role="co_reviewer",
                reviewer_name=_name(reviewer) if reviewer else "", co_name=_name(co))

    out.notices.extend(_summary_notices(session, settings, now, out))
    return out


def _owner(session: Session, c: Campaign) -> User | None:
    user_id = c.owner_user_id
    if user_id is None and c.definition_id is not None:
        user_id = session.scalar(select(CampaignDefinition.owner_user_id)
                                 .where(CampaignDefinition.id == c.definition_id))
    return session.get(User, user_id) if user_id is not None else None


def campaign_stats(session: Session, campaign_id: int) -> dict[str, Any]:
    """Completion, decisions, outcomes and per-reviewer figures for the closing summary."""
    total = session.scalar(select(func.count()).where(ReviewItem.campaign_id == campaign_id)) or 0
    decisions = {d or "none": n for d, n in session.execute(
        select(ReviewItem.decision, func.count()).where(ReviewItem.campaign_id == campaign_id)
        .group_by(ReviewItem.decision))}
    outcomes = {o or "none": n for o, n in session.execute(
        select(ReviewItem.outcome, func.count()).where(ReviewItem.campaign_id == campaign_id)
        .group_by(ReviewItem.outcome))}
    decided = total - decisions.get("none", 0)
    rows = session.execute(
        select(Identity.display_name, Identity.email, func.count(),
               func.count(ReviewItem.decision))
        .join(Identity, Identity.id == ReviewItem.reviewer_id)
        .where(ReviewItem.campaign_id == campaign_id)
        .group_by(Identity.id, Identity.display_name, Identity.email)
        .order_by((func.count() - func.count(ReviewItem.decision)).desc(), Identity.display_name)
    ).all()
    reviewers = [{"name": name or email, "total": n, "decided": d,
                  "percent": round(100 * d / n) if n else 100} for name, email, n, d in rows]
    return {
        "total": total, "decided": decided, "percent": round(100 * decided / total) if total else 100,
        "approved": decisions.get("approve", 0), "revoked": decisions.get("revoke", 0),
        "abstained": decisions.get("abstain", 0), "no_response": decisions.get("none", 0),
        "outcome_keep": outcomes.get("keep", 0), "outcome_revoke": outcomes.get("revoke", 0),
        "outcome_flag": outcomes.get("flag", 0), "reviewers": reviewers,
    }


def _summary_notices(session: Session, settings: Settings, now: datetime, out: Plan) -> list[Notice]:
    closed = list(session.scalars(
        select(Campaign).where(Campaign.status == CampaignStatus.CLOSED, Campaign.closed_at >= now - SUMMARY_WINDOW)
        .order_by(Campaign.id)))
    notices = []
    for c in closed:
        owner = _owner(session, c)
        if owner is None:
            continue
        if session.scalar(select(ReviewerNotice.id).where(
                ReviewerNotice.campaign_id == c.id, ReviewerNotice.user_id == owner.id,
                ReviewerNotice.kind == "summary")) is not None:
            continue
        if not owner.email:
            out.skipped.append(f"campaign {c.id}: owner user {owner.id} has no e-mail address")
            continue
        stats = campaign_stats(session, c.id)
        notices.append(Notice(
            campaign_id=c.id, kind="summary", to=owner.email, to_name=owner.display_name or "",
            template="summary", subject=f"Closed: {c.name} — {stats['percent']}% reviewed, "
                                        f"{stats['outcome_revoke']} to revoke",
            user_id=owner.id, identity_id=None,
            context={"campaign": _campaign_ctx(c), "stats": stats, "campaign_url": campaign_url(settings, c.id),
                     "settings_base_url": settings.base_url},
        ))
    return notices


def escalation_target(session: Session, campaign: Campaign, reviewer_id: int,
                      directory: eligibility.Directory | None = None) -> int | None:
    """Who a late reviewer's items are escalated to: the first eligible person up the reviewer's manager
    chain, else the campaign's fallback reviewer (never the reviewer themself)."""
    d = directory or eligibility.Directory(session)
    fallback = _fallback_identity(session, campaign)
    return eligibility.first_eligible([*eligibility.manager_chain(reviewer_id, d.manager_of), fallback],
                                      [reviewer_id], d.eligible)


@dataclass
class EscalationLoad:
    """What the escalation of a campaign would hand one person: items of the late reviewers below them."""

    identity_id: int
    name: str
    items: int
    reviewers: int
    at: datetime | None  # when the escalation is due (the due date plus the escalation delay)


def escalation_forecast(session: Session, campaign: Campaign, threshold: int) -> list[EscalationLoad]:
    """The people an escalation of `campaign` would hand more than `threshold` undecided items (each late
    reviewer's open items go to their escalation target, as `send_pending` would route them), largest
    first. Read only; the campaign page warns with it before the escalation happens."""
    esc = _timing(campaign).get("escalate_after_days_overdue")
    if campaign.status != CampaignStatus.ACTIVE or esc is None:
        return []
    at = campaign.due_at + timedelta(days=int(esc)) if campaign.due_at else None
    d = eligibility.Directory(session)
    load: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    for (_cid, reviewer), n in _open_counts(session, [campaign.id]).items():
        target = escalation_target(session, campaign, reviewer, d)
        if target is not None:
            load[target][0] += n
            load[target][1] += 1
    heavy = {k: v for k, v in load.items() if v[0] > threshold}
    people = _identities(session, set(heavy))
    return sorted((EscalationLoad(k, _name(people[k]) if k in people else str(k), n, r, at)
                   for k, (n, r) in heavy.items()), key=lambda e: (-e.items, e.name))
