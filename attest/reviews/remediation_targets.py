"""At close, every item whose outcome is revoke becomes a pending Remediation, with its target: where
the access really comes from when revoking the grant itself would be wrong or undone (a group rule, or
the group the access is held through)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from attest.entitlements.models import Resource
from attest.reviews.chunks import chunks
from attest.reviews.models import Campaign, Remediation, ReviewItem

INSERT_BATCH = 5000


def remediation_target(item: Mapping[str, Any], groups: Mapping[int, Resource]) -> str | None:
    """Where the access really comes from, when revoking the grant itself would be wrong or undone."""

    def rules(res: Resource) -> str | None:
        attrs = res.attributes or {}
        names = attrs.get("rules") or attrs.get("group_rules")
        if names:
            if isinstance(names, list | tuple):
                names = ", ".join(str(n.get("name", n) if isinstance(n, Mapping) else n) for n in names)
            return f'group rule {names} assigns membership of group "{res.name}": change the rule or the person\'s attributes'
        if attrs.get("rule_managed"):
            return f'group "{res.name}" is managed by a group rule: change the rule or the person\'s attributes'
        return None

    via = groups.get(item["via_resource_id"]) if item["via_resource_id"] else None
    if via is not None:
        why = rules(via)
        return why or (f'group "{via.name}": the access is held through this group ({item["via"]}); remove '
                       f'{item["account_login"]} from it rather than the group\'s own access')
    own = groups.get(item["resource_id"]) if item["resource_id"] else None
    if own is not None and own.is_group:
        return rules(own)
    return None


def add_pending(session: Session, campaign: Campaign, now: datetime) -> int:
    """A pending Remediation (the definition's mode, its target) for each item of the campaign whose
    outcome is revoke; returns how many."""
    revoked = session.execute(
        select(ReviewItem.id, ReviewItem.grant_id, ReviewItem.source_id, ReviewItem.resource_id,
               ReviewItem.via_resource_id, ReviewItem.via, ReviewItem.account_login)
        .where(ReviewItem.campaign_id == campaign.id, ReviewItem.outcome == "revoke").order_by(ReviewItem.id)
    ).mappings().all()
    group_ids = {r["via_resource_id"] for r in revoked if r["via_resource_id"]} | {r["resource_id"] for r in revoked if r["resource_id"]}
    groups = {g.id: g for g in session.scalars(select(Resource).where(Resource.id.in_(group_ids)))} if group_ids else {}
    mode = campaign.spec["rules"]["remediation"]
    rows = [{"campaign_id": campaign.id, "item_id": r["id"], "grant_id": r["grant_id"], "source_id": r["source_id"],
             "mode": mode, "status": "pending", "target": remediation_target(r, groups), "attempts": 0, "calls": [],
             "created_at": now} for r in revoked]
    for batch in chunks(rows, INSERT_BATCH):
        session.execute(Remediation.__table__.insert(), batch)
    return len(rows)
