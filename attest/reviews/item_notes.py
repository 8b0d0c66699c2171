"""What an item row says beyond its frozen snapshot, read for a page of items at once:

- `revoke_notes`: before a revoke, what will happen when the access is held through a group or a rule:
  the manual task that closing the campaign will create (the same words as the Remediation's `target`,
  from `remediation_targets.targets`).
- `last_used`: the app's last use where the source records it (Okta: the last SSO into the app, from the
  System Log, `last_sso_at` on the grant; present but empty = none within the look-back).
- `labels`: the entitlement's readable name where the source gives one beside its raw name (an Okta custom
  admin role: "Help desk admin (resource set ...)" instead of "CUSTOM on iamEDNIaDbgHJQ0Db2d1").
- `other_paths`: the other ways the same person's account holds the same access in the same list (the same
  app through two groups): every path is named on each row.
- `merged` / `folded` (`same_access`): one row per distinct access: items of one reviewer that are the same
  access of the same account and stand alike show as one row listing every path; deciding it decides each.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, select, tuple_
from sqlalchemy.orm import Session

from attest.entitlements.models import Entitlement, Grant
from attest.entitlements.risk import _parse_iso
from attest.reviews.models import ReviewItem
from attest.reviews.remediation_targets import ITEM_COLUMNS, targets


def revoke_notes(session: Session, items: Sequence[ReviewItem]) -> dict[int, str]:
    """{item id: the manual task a revoke becomes} for items held through a group or managed elsewhere: the
    target closing the campaign will give the Remediation (`remediation_targets.targets`), word for word."""
    return targets(session, [{c.key: getattr(i, c.key) for c in ITEM_COLUMNS} for i in items])


def use_and_labels(session: Session, items: Sequence[ReviewItem]) -> tuple[dict[int, tuple[datetime | None]], dict[int, str]]:
    """`last_used` and `labels` read together: one statement over the items' entitlements and, joined to each,
    the items' grants (an item's entitlement is its grant's, copied at launch), instead of one each."""
    if not items:
        return {}, {}
    rows = session.execute(
        select(Entitlement.id, Entitlement.display_name, Grant.id, Grant.attributes).select_from(Entitlement)
        .outerjoin(Grant, and_(Grant.entitlement_id == Entitlement.id, Grant.id.in_({i.grant_id for i in items})))
        .where(Entitlement.id.in_({i.entitlement_id for i in items}))).all()
    names = {ent_id: name for ent_id, name, _grant_id, _attrs in rows if name}
    attrs = {grant_id: a for _ent_id, _name, grant_id, a in rows if grant_id is not None}
    used: dict[int, tuple[datetime | None]] = {}
    for item in items:
        a = attrs.get(item.grant_id) or {}
        if isinstance(a, dict) and "last_sso_at" in a:
            used[item.id] = (_parse_iso(a.get("last_sso_at")),)
    readable = {i.id: names[i.entitlement_id] for i in items
                if names.get(i.entitlement_id) and names[i.entitlement_id] != i.entitlement_name}
    return used, readable


def last_used(session: Session, items: Sequence[ReviewItem]) -> dict[int, tuple[datetime | None]]:
    """{item id: (the app's last use or None when none was recorded)} for items whose source records use."""
    return use_and_labels(session, items)[0]


def labels(session: Session, items: Sequence[ReviewItem]) -> dict[int, str]:
    """{item id: the entitlement's readable name} where it differs from the raw name the item froze."""
    return use_and_labels(session, items)[1]


def same_access(session: Session, items: Sequence[ReviewItem]) -> tuple[dict[int, list[ReviewItem]], set[int]]:
    """One row per distinct access: the items of one reviewer that are the same access of the same account
    (the same entitlement reached through two groups, or directly and through a group) and stand alike
    (the same decision, or all undecided). Returns ({first item's id: the other items}, the ids folded
    into a first item, which the inbox does not show on their own). A decision on the row decides them all."""
    keys = {(i.campaign_id, i.reviewer_id, i.account_id, i.entitlement_id) for i in items if i.reviewer_id is not None}
    if not keys:
        return {}, set()
    found: list[ReviewItem] = []
    for campaign_id, reviewer_id in {(k[0], k[1]) for k in keys}:
        pairs = sorted({(k[2], k[3]) for k in keys if k[:2] == (campaign_id, reviewer_id)})
        found += session.scalars(select(ReviewItem).where(
            ReviewItem.campaign_id == campaign_id, ReviewItem.reviewer_id == reviewer_id,
            tuple_(ReviewItem.account_id, ReviewItem.entitlement_id).in_(pairs)).order_by(ReviewItem.id)).all()
    groups: dict[tuple[int, int, int, int], list[ReviewItem]] = {}
    for item in found:
        groups.setdefault((item.campaign_id, item.reviewer_id or 0, item.account_id, item.entitlement_id), []).append(item)
    merged: dict[int, list[ReviewItem]] = {}
    folded: set[int] = set()
    for same in groups.values():
        if len(same) > 1 and len({i.decision for i in same}) == 1:
            merged[same[0].id] = same[1:]
            folded |= {i.id for i in same[1:]}
    return merged, folded


def alike(session: Session, item: ReviewItem) -> list[ReviewItem]:
    """The other items of `item`'s row (same_access): what a decision on the row decides with it."""
    merged, _folded = same_access(session, [item])
    for first_id, rest in merged.items():
        ids = {first_id} | {r.id for r in rest}
        if item.id in ids:
            return [row for row in (session.get(ReviewItem, i) for i in sorted(ids - {item.id})) if row is not None]
    return []


def other_paths(items: Sequence[ReviewItem]) -> dict[int, list[str]]:
    """{item id: the other paths (via ... or "direct") by which the same account holds the same access}."""
    by_access: dict[tuple[int, int], list[ReviewItem]] = {}
    for item in items:
        by_access.setdefault((item.account_id, item.entitlement_id), []).append(item)
    out: dict[int, list[str]] = {}
    for same in by_access.values():
        if len(same) < 2:
            continue
        for item in same:
            out[item.id] = [o.via or "direct" for o in same if o.id != item.id]
    return out


def row_notes(session: Session, items: Sequence[ReviewItem]) -> dict[str, Any]:
    """Everything above for one page (or one row) of items: template context."""
    items = list(items)
    merged, folded = same_access(session, items)
    paths = other_paths(items)
    for first, rest in merged.items():
        paths[first] = [o.via or "direct" for o in rest]
    used, readable = use_and_labels(session, items)
    return {"revoke_notes": revoke_notes(session, items), "last_used": used, "labels": readable,
            "other_paths": paths, "merged": merged, "folded": folded}
