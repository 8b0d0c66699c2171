"""What an item row says beyond its frozen snapshot, read for a page of items at once:

- `revoke_notes`: before a revoke, what will happen when the access is held through a group or a rule:
  the manual task that closing the campaign will create (the same words as the Remediation's `target`:
  `campaigns` names it at close, `remediation` for a rule the grant's own records name).
- `last_used`: the app's last use where the source records it (Okta: the last SSO into the app, from the
  System Log, `last_sso_at` on the grant; present but empty = none within the look-back).
- `labels`: the entitlement's readable name where the source gives one beside its raw name (an Okta custom
  admin role: "Help desk admin (resource set ...)" instead of "CUSTOM on iamEDNIaDbgHJQ0Db2d1").
- `other_paths`: the other ways the same person's account holds the same access in the same list (the same
  app through two groups): every path is named on each row.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from attest.entitlements.models import Entitlement, Grant, Resource, Source
from attest.entitlements.risk import _parse_iso
from attest.reviews.models import ReviewItem
from attest.reviews.remediation_targets import remediation_target


def _close_target(item: ReviewItem, groups: dict[int, Resource]) -> str | None:
    return remediation_target({"via_resource_id": item.via_resource_id, "via": item.via,
                               "account_login": item.account_login, "resource_id": item.resource_id}, groups)


def revoke_notes(session: Session, items: Sequence[ReviewItem]) -> dict[int, str]:
    """{item id: the manual task a revoke becomes} for items held through a group or managed by a rule."""
    from attest.reviews.remediation import _managed_elsewhere, grant_ref

    if not items:
        return {}
    group_ids = {i.via_resource_id for i in items if i.via_resource_id} | {i.resource_id for i in items if i.resource_id}
    groups = {g.id: g for g in session.scalars(select(Resource).where(Resource.id.in_(group_ids)))} if group_ids else {}
    out: dict[int, str] = {}
    rest = []
    for item in items:
        target = _close_target(item, groups)
        if target:
            out[item.id] = target
        else:
            rest.append(item)
    if rest:
        grants = {g.id: g for g in session.scalars(select(Grant).where(Grant.id.in_({i.grant_id for i in rest})))}
        sources = {s.id: s for s in session.scalars(select(Source).where(Source.id.in_({i.source_id for i in rest})))}
        for item in rest:
            grant, source = grants.get(item.grant_id), sources.get(item.source_id)
            if grant is None or source is None or grant.principal_type != "account":
                continue
            target = _managed_elsewhere(grant_ref(session, grant, source), item.account_login or "the account",
                                        item.resource_name or "the resource")
            if target:
                out[item.id] = target
    return out


def last_used(session: Session, items: Sequence[ReviewItem]) -> dict[int, tuple[datetime | None]]:
    """{item id: (the app's last use or None when none was recorded)} for items whose source records use."""
    if not items:
        return {}
    attrs = dict(session.execute(select(Grant.id, Grant.attributes).where(Grant.id.in_({i.grant_id for i in items}))).all())
    out: dict[int, tuple[datetime | None]] = {}
    for item in items:
        a = attrs.get(item.grant_id) or {}
        if isinstance(a, dict) and "last_sso_at" in a:
            out[item.id] = (_parse_iso(a.get("last_sso_at")),)
    return out


def labels(session: Session, items: Sequence[ReviewItem]) -> dict[int, str]:
    """{item id: the entitlement's readable name} where it differs from the raw name the item froze."""
    if not items:
        return {}
    names = dict(session.execute(select(Entitlement.id, Entitlement.display_name).where(
        Entitlement.id.in_({i.entitlement_id for i in items}), Entitlement.display_name.is_not(None))).all())
    return {i.id: names[i.entitlement_id] for i in items
            if names.get(i.entitlement_id) and names[i.entitlement_id] != i.entitlement_name}


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
    return {"revoke_notes": revoke_notes(session, items), "last_used": last_used(session, items),
            "labels": labels(session, items), "other_paths": other_paths(items)}
