"""The summary a campaign keeps when it closes (`Campaign.summary`): items decided and how, outcomes,
no-response count and outcome, revocations and remediations, and per reviewer their items, decisions,
completion, share approved in bulk, median seconds between consecutive decisions and sign-off."""

from __future__ import annotations

import statistics
from collections import defaultdict
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from attest.entitlements.models import Identity
from attest.reviews.models import Campaign, Decision, ReviewerSignoff, ReviewItem


def close_summary(session: Session, campaign: Campaign, now: datetime, remediations: int) -> dict[str, Any]:
    """The summary of `campaign` as it closes at `now` with `remediations` pending remediations."""
    cid = campaign.id
    decisions = {d or "none": int(n) for d, n in session.execute(
        select(ReviewItem.decision, func.count()).where(ReviewItem.campaign_id == cid).group_by(ReviewItem.decision))}
    outcomes = {o: int(n) for o, n in session.execute(
        select(ReviewItem.outcome, func.count()).where(ReviewItem.campaign_id == cid).group_by(ReviewItem.outcome))}
    no_response = session.scalar(select(func.count()).select_from(ReviewItem).where(
        ReviewItem.campaign_id == cid, ReviewItem.outcome_reason == "no_response")) or 0
    total = sum(decisions.values())
    decided = total - no_response
    per: dict[int | None, dict[str, Any]] = {}
    rows = session.execute(
        select(ReviewItem.reviewer_id, ReviewItem.decision, ReviewItem.decided_in_bulk, func.count())
        .where(ReviewItem.campaign_id == cid).group_by(ReviewItem.reviewer_id, ReviewItem.decision, ReviewItem.decided_in_bulk))
    for rid, decision, bulk, n in rows:
        p = per.setdefault(rid, {"reviewer_id": rid, "items": 0, "decided": 0, "approved": 0, "revoked": 0,
                                 "abstained": 0, "approved_in_bulk": 0})
        p["items"] += n
        if decision:
            p["decided"] += n
            p[{"approve": "approved", "revoke": "revoked", "abstain": "abstained"}[decision]] += n
            if decision == "approve" and bulk:
                p["approved_in_bulk"] += n
    # median seconds between a reviewer's consecutive decisions (how long each decision took them)
    gaps: dict[int, list[float]] = defaultdict(list)
    last: dict[int, datetime] = {}
    for iid, at in session.execute(
        select(Decision.identity_id, Decision.at).where(Decision.campaign_id == cid, Decision.identity_id.is_not(None))
        .order_by(Decision.identity_id, Decision.at)
    ):
        if iid in last:
            gaps[iid].append((at - last[iid]).total_seconds())
        last[iid] = at
    signed = set(session.scalars(select(ReviewerSignoff.reviewer_id).where(ReviewerSignoff.campaign_id == cid)))
    ids = [rid for rid in per if rid is not None]
    people = {i.id: i for i in session.scalars(select(Identity).where(Identity.id.in_(ids)))} if ids else {}
    reviewers = []
    for rid, p in per.items():
        person = people.get(rid)
        p["name"] = person.display_name if person else None
        p["email"] = person.email if person else None
        p["completion"] = round(100.0 * p["decided"] / p["items"], 1) if p["items"] else 100.0
        p["approved_in_bulk_share"] = round(p["approved_in_bulk"] / p["approved"], 3) if p["approved"] else 0.0
        p["median_seconds_between_decisions"] = round(statistics.median(gaps[rid]), 1) if gaps.get(rid) else None
        p["signed_off"] = rid in signed
        reviewers.append(p)
    reviewers.sort(key=lambda p: (-p["items"], p["name"] or ""))
    return {
        "items": total, "decided": decided, "completion": round(100.0 * decided / total, 1) if total else 100.0,
        "decisions": {k: decisions.get(k, 0) for k in ("approve", "revoke", "abstain", "none")},
        "outcomes": {k: outcomes.get(k, 0) for k in ("keep", "revoke", "flag")},
        "no_response": int(no_response), "no_response_outcome": campaign.spec["timing"]["no_response"],
        "revocations": outcomes.get("revoke", 0), "remediations": remediations,
        "remediation_mode": campaign.spec["rules"]["remediation"],
        "reviewers": reviewers, "closed_at": now.isoformat(),
        "launched_at": campaign.launched_at.isoformat() if campaign.launched_at else None,
        "due_at": campaign.due_at.isoformat() if campaign.due_at else None,
    }

