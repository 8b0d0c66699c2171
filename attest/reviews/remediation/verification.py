"""Verification after a sync: an after-apply hook of the sync engine (registered when this module is
imported, inside every successful sync's apply transaction) marks a done remediation `verified` when the run
no longer sees its access, `reappeared` when it does (or when it comes back later).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sqlalchemy import and_, exists, or_, select, update
from sqlalchemy.orm import Session, aliased

from attest.db import utcnow
from attest.entitlements.models import Grant, SyncRun
from attest.entitlements.queries import effective_access
from attest.entitlements.sync import SyncResult, after_apply
from attest.reviews.chunks import chunks
from attest.reviews.models import Remediation, RemediationStatus, ReviewItem
from attest.reviews.remediation.planning import CARRIED_OUT
from attest.trail.chain import record_many


def verify_after_sync(session: Session, source_id: int, run_id: int) -> dict[str, int]:
    """Inside a successful sync's apply transaction: verify done remediations, flag reappeared ones.

    Set-based: one query finds the remediations of this source whose state changes (a done one whose
    grant key has no active grant any more, or a done/verified one whose key is active again); only
    access held through a group needs the membership expanded, and only for those rows.
    """
    run = session.get(SyncRun, run_id)
    if run is None:
        return {"verified": 0, "reappeared": 0}
    active = aliased(Grant)
    still = (
        exists()
        .where(active.source_id == Grant.source_id, active.key == Grant.key, active.ended_at.is_(None))
        .correlate(Grant)
    )
    base = (
        select(Remediation.id, Remediation.status, ReviewItem.via_resource_id, ReviewItem.account_id,
               Grant.id.label("grant_id"), Grant.key, Grant.principal_type, still.label("still"))
        .join(Grant, Grant.id == Remediation.grant_id)
        .join(ReviewItem, ReviewItem.id == Remediation.item_id)
        .where(Remediation.source_id == source_id, Remediation.status.in_((*CARRIED_OUT, RemediationStatus.VERIFIED)),
               Remediation.executed_at <= run.started_at)
    )
    direct = and_(ReviewItem.via_resource_id.is_(None), Grant.principal_type == "account")
    rows = session.execute(
        base.where(or_(~direct, and_(Remediation.status.in_(CARRIED_OUT), ~still), still))
    ).all()
    verified: list[int] = []
    reappeared: list[int] = []
    via_rows = [r for r in rows if not (r.via_resource_id is None and r.principal_type == "account")]
    via_ids = {r.id for r in via_rows}
    held_by_account: dict[int, set[int]] = {}
    if via_rows:

        for account_id in {r.account_id for r in via_rows}:
            held_by_account[account_id] = {h.grant.id for h in effective_access(session, [account_id])}
    for r in rows:
        if r.id in via_ids:
            if not r.still:
                present = False
            else:
                # the group's grant is active: does this account still reach it through a membership?
                keys = _active_ids_for_key(session, source_id, r.key)
                present = bool(keys & held_by_account.get(r.account_id, set()))
        else:
            present = bool(r.still)
        if present:
            reappeared.append(r.id)
        elif r.status in CARRIED_OUT:
            verified.append(r.id)
    now = utcnow()
    for ids, values, action in (
        (verified, {"status": RemediationStatus.VERIFIED, "verified_at": now, "verified_run_id": run_id}, "remediation.verified"),
        (reappeared, {"status": RemediationStatus.REAPPEARED, "reappeared_at": now, "reappeared_run_id": run_id},
         "remediation.reappeared"),
    ):
        for chunk in chunks(ids, 500):
            session.execute(update(Remediation).where(Remediation.id.in_(chunk)).values(**values)
                            .execution_options(synchronize_session=False))
        record_many(session, ({"actor": "system", "action": action, "object_type": "remediation",
                               "object_id": str(rem.id), "campaign_id": rem.campaign_id,
                               "after": {"status": values["status"], "sync_run_id": run_id}}
                              for rem in _load(session, ids)))
    return {"verified": len(verified), "reappeared": len(reappeared)}


@after_apply  # registered at import (attest/reviews/__init__.py imports this module): every sync verifies
def _verify_after_apply(session: Session, source_id: int, run_id: int, result: SyncResult) -> None:
    verify_after_sync(session, source_id, run_id)


def _active_ids_for_key(session: Session, source_id: int, key: str) -> set[int]:
    return set(session.scalars(select(Grant.id).where(Grant.source_id == source_id, Grant.key == key,
                                                      Grant.ended_at.is_(None))))


def _load(session: Session, ids: list[int]) -> Iterator[Any]:
    for chunk in chunks(ids, 500):
        yield from session.execute(
            select(Remediation.id, Remediation.campaign_id).where(Remediation.id.in_(chunk)).order_by(Remediation.id)
        ).all()
