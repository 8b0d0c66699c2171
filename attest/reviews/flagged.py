"""The flagged work list: items a closed campaign left with the outcome `flag`, and who must act on each.

An item is flagged at close (`campaigns.close`) when nobody answered it and the definition's no-response
outcome is `flag` (`outcome_reason` = no_response), or when the last stage abstained (`decision`). The
access is neither kept on purpose nor revoked: someone has to decide. Each row names the item, the person
and account, the reviewer who did not respond (and the co-reviewer escalation added, if any), and who is
expected to resolve it: the resource's owners where the source or an admin names them, otherwise the
campaign's owner (the admin who launched it).

Admins and auditors read it (web page and CSV, neutralised by `attest.exports`); the evidence PDF lists
the first of them. Managers never see it: it is about other people's access across the campaign.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TextIO

from sqlalchemy import func, select
from sqlalchemy.orm import Session, aliased

from attest import exports
from attest.auth.models import User
from attest.entitlements.models import Account, Identity, ResourceOwner
from attest.reviews.models import Campaign, ReviewItem

REASONS = {"no_response": "no response", "decision": "abstained at the last stage"}
COLUMNS = ("item_id", "campaign_id", "campaign", "closed_at", "why_flagged", "person", "email", "account",
           "system", "resource", "entitlement", "privileged", "via", "reviewer", "reviewer_email", "co_reviewer",
           "co_reviewer_email", "reviewer_comment", "to_resolve", "resolver_role")


@dataclass
class FlaggedRow:
    item_id: int
    campaign_id: int
    campaign_name: str
    closed_at: datetime | None
    reason: str
    person: str | None
    person_email: str | None
    account: str | None
    source: str
    resource: str | None
    entitlement: str
    privileged: bool
    via: str | None
    reviewer: str | None
    reviewer_email: str | None
    co_reviewer: str | None
    co_reviewer_email: str | None
    comment: str | None
    resolvers: list[str] = field(default_factory=list)  # "Name <email>" of each, or an e-mail
    resolver_role: str = "campaign owner"  # resource owner | campaign owner

    def as_dict(self) -> dict[str, Any]:
        return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in self.__dict__.items()}


def flagged_condition():
    return ReviewItem.outcome == "flag"


def flagged_count(session: Session, campaign_id: int | None = None) -> int:
    stmt = select(func.count()).select_from(ReviewItem).where(flagged_condition())
    if campaign_id is not None:
        stmt = stmt.where(ReviewItem.campaign_id == campaign_id)
    return int(session.scalar(stmt) or 0)


def _owners(session: Session, resource_ids: set[int]) -> dict[int, list[str]]:
    """The owners of each resource as people: a named identity, or the person behind an owner account that
    has not ended (the same reading as routing's resource_owner stage, `owners.owners_of`)."""
    if not resource_ids:
        return {}
    who = func.coalesce(ResourceOwner.identity_id, Account.identity_id)
    rows = session.execute(
        select(ResourceOwner.resource_id, Identity.display_name, Identity.email)
        .outerjoin(Account, Account.id == ResourceOwner.account_id)
        .join(Identity, Identity.id == who)
        .where(ResourceOwner.resource_id.in_(resource_ids), (Account.id.is_(None)) | (Account.ended_at.is_(None)))
        .order_by(ResourceOwner.resource_id, Identity.display_name, Identity.id)
    ).all()
    out: dict[int, list[str]] = {}
    for rid, name, email in rows:
        label = f"{name} <{email}>" if name and email else (email or name or "?")
        if label not in out.setdefault(rid, []):
            out[rid].append(label)
    return out


def list_flagged(session: Session, campaign_id: int | None = None, after: int | None = None,
                 limit: int = 50) -> tuple[list[FlaggedRow], int | None]:
    """A page of flagged items in item id order (keyset: `after` = the last item id shown)."""
    rv = aliased(Identity, name="rv")
    co = aliased(Identity, name="co")
    stmt = (
        select(ReviewItem, Campaign.name, Campaign.closed_at, Campaign.created_by, User.email,
               rv.display_name, rv.email, co.display_name, co.email)
        .join(Campaign, Campaign.id == ReviewItem.campaign_id)
        .outerjoin(User, User.id == Campaign.owner_user_id)
        .outerjoin(rv, rv.id == ReviewItem.reviewer_id)
        .outerjoin(co, co.id == ReviewItem.co_reviewer_id)
        .where(flagged_condition())
    )
    if campaign_id is not None:
        stmt = stmt.where(ReviewItem.campaign_id == campaign_id)
    if after is not None:
        stmt = stmt.where(ReviewItem.id > after)
    rows = session.execute(stmt.order_by(ReviewItem.id).limit(limit + 1)).all()
    page = rows[:limit]
    owners = _owners(session, {r[0].resource_id for r in page if r[0].resource_id is not None})
    out = []
    for item, cname, closed_at, created_by, owner_email, rv_name, rv_email, co_name, co_email in page:
        resolvers = owners.get(item.resource_id or -1, [])
        role = "resource owner" if resolvers else "campaign owner"
        out.append(FlaggedRow(
            item_id=item.id, campaign_id=item.campaign_id, campaign_name=cname, closed_at=closed_at,
            reason=REASONS.get(item.outcome_reason or "", item.outcome_reason or "flagged"),
            person=item.person_name, person_email=item.person_email, account=item.account_login,
            source=item.source_name, resource=item.resource_name, entitlement=item.entitlement_name,
            privileged=bool(item.privileged), via=item.via, reviewer=rv_name, reviewer_email=rv_email,
            co_reviewer=co_name, co_reviewer_email=co_email, comment=item.comment,
            resolvers=resolvers or [owner_email or created_by], resolver_role=role,
        ))
    return out, (out[-1].item_id if len(rows) > limit else None)


def iter_flagged(session: Session, campaign_id: int | None = None, batch: int = 1000) -> Iterator[FlaggedRow]:
    after = None
    while True:
        page, after = list_flagged(session, campaign_id, after=after, limit=batch)
        yield from page
        if after is None:
            return


def write_flagged_csv(session: Session, out: TextIO, campaign_id: int | None = None) -> int:
    """The flagged work list as CSV (through `attest.exports`); returns the row count."""
    writer = exports.writer(out, COLUMNS)
    n = 0
    for r in iter_flagged(session, campaign_id):
        writer.writerow([r.item_id, r.campaign_id, r.campaign_name, r.closed_at.isoformat() if r.closed_at else None,
                         r.reason, r.person, r.person_email, r.account, r.source, r.resource, r.entitlement,
                         "yes" if r.privileged else "", r.via, r.reviewer, r.reviewer_email, r.co_reviewer,
                         r.co_reviewer_email, r.comment, "; ".join(r.resolvers), r.resolver_role])
        n += 1
    return n
