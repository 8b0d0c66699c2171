"""Who owns a resource, as people: a named identity, or the person behind an owner account that has not
ended (the reading routing's resource_owner stage uses, at launch and at a stage advance)."""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from attest.entitlements.models import Account, ResourceOwner

_OWNER = func.coalesce(ResourceOwner.identity_id, Account.identity_id)
_OWNER_ACCOUNT_HELD = (Account.id.is_(None)) | (Account.ended_at.is_(None))  # named, or through a live account


def resource_owners(session: Session) -> dict[int, set[int]]:
    """Every resource's owners (resource id -> identity ids); resources with none are left out."""
    owners: dict[int, set[int]] = defaultdict(set)
    rows = session.execute(
        select(ResourceOwner.resource_id, _OWNER)
        .outerjoin(Account, Account.id == ResourceOwner.account_id)
        .where(_OWNER_ACCOUNT_HELD)
    )
    for rid, iid in rows:
        if iid is not None:
            owners[rid].add(iid)
    return dict(owners)


def owners_of(session: Session, resource_id: int | None) -> set[int]:
    """One resource's owners (identity ids); none for no resource."""
    if resource_id is None:
        return set()
    rows = session.execute(
        select(_OWNER)
        .outerjoin(Account, Account.id == ResourceOwner.account_id)
        .where(ResourceOwner.resource_id == resource_id, _OWNER_ACCOUNT_HELD)
    )
    return {iid for (iid,) in rows if iid is not None}
