"""The campaign's figures (reviewers, decisions by reviewer with the rubber-stamp indicators, sync runs,
population, totals, completion over time), written into the manifest, and the report PDF drawn from them
(WeasyPrint, `templates/evidence/report.html`).
"""

from __future__ import annotations

import statistics
from array import array
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import and_, case, false, func, select, true
from sqlalchemy.orm import Session

from attest import dialects
from attest.audit.evidence.writers import _stream
from attest.entitlements.models import Identity, SyncRun
from attest.reviews import eligibility, queries
from attest.reviews import flagged as flagged_service
from attest.reviews.models import (
    Campaign,
    CampaignExclusion,
    Remediation,
    RemediationStatus,
    ReviewerSignoff,
    ReviewItem,
)

LIST_LIMIT = 100  # rows of a list in the PDF (bounded cost); full lists are in items.csv and manifest.json
RUBBER_STAMP_MEDIAN_SECONDS = 5.0  # a median under this, over enough decisions, is flagged
RUBBER_STAMP_BULK_SHARE = 0.8  # approvals made in bulk over this share are flagged
RUBBER_STAMP_MIN_DECISIONS = 10
SITTING_GAP_SECONDS = 1800  # a longer pause between two decisions starts a new sitting (not counted)


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat() if value is not None else None


def _counts(session: Session, col, *where) -> dict[str, int]:
    return {str(k) if k is not None else "none": n
            for k, n in session.execute(select(col, func.count()).where(*where).group_by(col))}


def _epoch(col, dialect: str):
    return dialects.epoch_seconds(col, dialect)


def _day(col, dialect: str):
    return dialects.utc_day(col, dialect)


def reviewer_stats(session: Session, campaign_id: int, dialect: str) -> list[dict[str, Any]]:
    """Decisions by the person who took them, with the rubber-stamp indicators.

    Median seconds per decision: the pauses between a reviewer's consecutive one-by-one decisions
    (pauses over SITTING_GAP_SECONDS start a new sitting and are left out). Bulk share: the share of
    their approvals made with a bulk action.
    """
    ri = ReviewItem.__table__
    who = func.coalesce(ri.c.decided_by_identity_id, ri.c.reviewer_id)
    agg = session.execute(
        select(
            who.label("identity_id"),
            func.count().label("decided"),
            func.sum(case((ri.c.decision == "approve", 1), else_=0)),
            func.sum(case((ri.c.decision == "revoke", 1), else_=0)),
            func.sum(case((ri.c.decision == "abstain", 1), else_=0)),
            func.sum(case((and_(ri.c.decision == "approve", ri.c.decided_in_bulk == true()), 1), else_=0)),
            func.min(ri.c.decided_at), func.max(ri.c.decided_at),
        ).where(ri.c.campaign_id == campaign_id, ri.c.decision.is_not(None)).group_by(who)
    ).all()
    gaps: dict[int | None, array] = {}
    stmt = (
        select(who, _epoch(ri.c.decided_at, dialect))
        .where(ri.c.campaign_id == campaign_id, ri.c.decision.is_not(None), ri.c.decided_in_bulk == false())
        .order_by(who, ri.c.decided_at)
    )
    prev_who, prev_t = object(), 0.0
    for part in _stream(session, stmt):
        for ident, t in part:
            t = float(t)
            if ident == prev_who:
                gap = t - prev_t
                if 0 <= gap <= SITTING_GAP_SECONDS:
                    gaps.setdefault(ident, array("d")).append(gap)
            prev_who, prev_t = ident, t
    names = {i.id: i for i in session.scalars(select(Identity).where(Identity.id.in_([r[0] for r in agg if r[0]])))}
    out = []
    for ident, decided, approved, revoked, abstained, bulk_approved, first, last in agg:
        g = gaps.get(ident)
        median = round(statistics.median(g), 1) if g else None
        bulk_share = round(bulk_approved / approved, 3) if approved else 0.0
        flags = []
        if decided >= RUBBER_STAMP_MIN_DECISIONS and median is not None and median < RUBBER_STAMP_MEDIAN_SECONDS:
            flags.append(f"median {median:g}s per decision")
        if approved >= RUBBER_STAMP_MIN_DECISIONS and bulk_share > RUBBER_STAMP_BULK_SHARE:
            flags.append(f"{bulk_share:.0%} of approvals in bulk")
        if decided >= RUBBER_STAMP_MIN_DECISIONS and not revoked and not abstained:
            flags.append("approved everything")
        person = names.get(ident)
        out.append({
            "identity_id": ident, "name": person.display_name if person else "(unknown)",
            "email": person.email if person else None, "decided": decided, "approved": approved or 0,
            "revoked": revoked or 0, "abstained": abstained or 0, "bulk_approved": bulk_approved or 0,
            "bulk_share": bulk_share, "median_seconds": median,
            "first_decision_at": _iso(_as_dt(first)), "last_decision_at": _iso(_as_dt(last)),
            "rubber_stamp": flags,
        })
    out.sort(key=lambda r: (-r["decided"], r["name"]))
    return out


def _as_dt(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value
    return datetime.fromisoformat(str(value)).replace(tzinfo=UTC)


def assigned_reviewers(session: Session, campaign_id: int) -> list[dict[str, Any]]:
    ri = ReviewItem.__table__
    rows = session.execute(
        select(ri.c.reviewer_id, func.count(), func.sum(case((ri.c.decision.is_not(None), 1), else_=0)))
        .where(ri.c.campaign_id == campaign_id).group_by(ri.c.reviewer_id)
    ).all()
    ids = [r[0] for r in rows if r[0] is not None]
    people = {i.id: i for i in session.scalars(select(Identity).where(Identity.id.in_(ids)))} if ids else {}
    signoffs = dict(session.execute(select(ReviewerSignoff.reviewer_id, ReviewerSignoff.signed_off_at)
                                    .where(ReviewerSignoff.campaign_id == campaign_id)).all())
    out = []
    for rid, items, decided in rows:
        p = people.get(rid)
        out.append({"identity_id": rid, "name": p.display_name if p else "(unroutable)",
                    "email": p.email if p else None, "items": items, "decided": decided or 0,
                    "signed_off_at": _iso(signoffs.get(rid)) if rid in signoffs else None})
    out.sort(key=lambda r: (r["identity_id"] is None, r["name"] or ""))
    return out


def _run_doc(run: SyncRun | None, source_name: str | None = None) -> dict[str, Any] | None:
    if run is None:
        return None
    stats = run.stats or {}
    return {"run_id": run.id, "source": source_name, "status": run.status, "started_at": _iso(run.started_at),
            "finished_at": _iso(run.finished_at), "api_calls": run.api_calls,
            "read": stats.get("read"), "added": stats.get("added"), "ended": stats.get("ended")}


def sync_runs(session: Session, campaign: Campaign) -> dict[str, Any]:
    snapshot = []
    for entry in campaign.sync_runs or []:
        run = session.get(SyncRun, entry.get("run_id")) if entry.get("run_id") else None
        doc = _run_doc(run, entry.get("source")) or {}
        snapshot.append({**entry, **{k: v for k, v in doc.items() if v is not None}})
    ids = set()
    for col in (Remediation.verified_run_id, Remediation.reappeared_run_id):
        ids |= set(session.scalars(select(col).where(Remediation.campaign_id == campaign.id, col.is_not(None))
                                   .distinct()))
    verification = []
    for run_id in sorted(ids):
        run = session.get(SyncRun, run_id)
        verification.append(_run_doc(run, run.source.name if run else None))
    return {"snapshot": snapshot, "verification": verification}


def population(session: Session, campaign: Campaign) -> dict[str, Any]:
    ri = ReviewItem.__table__
    items = session.scalar(select(func.count()).select_from(ri).where(ri.c.campaign_id == campaign.id))
    by_reason = _counts(session, CampaignExclusion.reason, CampaignExclusion.campaign_id == campaign.id)
    excluded = sum(by_reason.values())
    recorded = dict(campaign.population or {})
    in_scope = recorded.get("in_scope")
    return {
        "recorded_at_launch": recorded,
        "in_scope": in_scope,
        "items": items,
        "excluded": excluded,
        "excluded_by_reason": by_reason,
        "balanced": in_scope is not None and in_scope == items + excluded,
        "rule": "grants in scope at launch = items created + grants excluded (each exclusion with its reason)",
    }


def totals(session: Session, campaign_id: int) -> dict[str, Any]:
    ri = ReviewItem.__table__
    where = ri.c.campaign_id == campaign_id
    decisions = _counts(session, ri.c.decision, where)
    outcomes = _counts(session, ri.c.outcome, where)
    remediations = _counts(session, Remediation.status, Remediation.campaign_id == campaign_id)
    items = sum(decisions.values())
    return {
        "items": items,
        "decided": items - decisions.get("none", 0),
        "undecided": decisions.get("none", 0),
        "approved": decisions.get("approve", 0),
        "revoked": decisions.get("revoke", 0),
        "abstained": decisions.get("abstain", 0),
        "decided_in_bulk": session.scalar(select(func.count()).select_from(ri)
                                          .where(where, ri.c.decided_in_bulk == true())),
        "unroutable": session.scalar(select(func.count()).select_from(ri).where(where, ri.c.reviewer_id.is_(None))),
        # decided by the item's own person (must be 0; `evidence verify` recounts it from items.csv)
        "self_decisions": session.scalar(select(func.count()).select_from(ri).where(
            where, eligibility.sql_self_decided())),
        "outcomes": outcomes,
        "remediations": remediations,
        "reappeared": remediations.get("reappeared", 0),
        "risks": {"privileged": session.scalar(select(func.count()).select_from(ri)
                                               .where(where, ri.c.privileged == true()))},
    }


def completion(session: Session, campaign_id: int, dialect: str, total: int) -> list[dict[str, Any]]:
    ri = ReviewItem.__table__
    day = _day(ri.c.decided_at, dialect)
    rows = session.execute(select(day, func.count()).where(ri.c.campaign_id == campaign_id, ri.c.decided_at.is_not(None))
                           .group_by(day).order_by(day)).all()
    out, running = [], 0
    for d, n in rows:
        running += n
        out.append({"date": str(d), "decided": n, "cumulative": running,
                    "percent": round(100.0 * running / total, 1) if total else 0.0})
    return out


def _list(session: Session, stmt, limit: int = LIST_LIMIT) -> list[Any]:
    return list(session.execute(stmt.limit(limit)).all())


def report_context(session: Session, campaign: Campaign, manifest: dict[str, Any], dialect: str) -> dict[str, Any]:
    ri = ReviewItem.__table__
    rm = Remediation.__table__
    revocations = _list(session, select(ri.c.id, ri.c.person_name, ri.c.account_login, ri.c.source_name,
                                        ri.c.resource_name, ri.c.entitlement_name, rm.c.mode, rm.c.status,
                                        rm.c.target, rm.c.last_error, rm.c.verified_run_id, rm.c.reappeared_run_id,
                                        rm.c.note, rm.c.executed_by)
                        .select_from(rm).join(ri, ri.c.id == rm.c.item_id).where(rm.c.campaign_id == campaign.id)
                        .order_by(case((rm.c.status == RemediationStatus.REAPPEARED, 0),
                                       (rm.c.status.in_((RemediationStatus.FAILED, RemediationStatus.REFUSED)), 1),
                                       else_=2), rm.c.id))
    exceptions = _list(session, select(ri.c.id, ri.c.person_name, ri.c.account_login, ri.c.source_name,
                                       ri.c.resource_name, ri.c.entitlement_name, ri.c.outcome, ri.c.outcome_reason,
                                       ri.c.decision, ri.c.comment, ri.c.reviewer_id)
                       .where(ri.c.campaign_id == campaign.id, queries.exception_condition())
                       .order_by(ri.c.id))
    # what was done for each manual remediation marked done (also in remediations.csv, every one)
    manual_notes = _list(session, select(rm.c.id, ri.c.id.label("item_id"), ri.c.person_name, ri.c.account_login,
                                         ri.c.source_name, ri.c.resource_name, ri.c.entitlement_name, rm.c.status,
                                         rm.c.note, rm.c.executed_by, rm.c.executed_at)
                         .select_from(rm).join(ri, ri.c.id == rm.c.item_id)
                         .where(rm.c.campaign_id == campaign.id, rm.c.mode == "manual", rm.c.note.is_not(None))
                         .order_by(rm.c.id))
    flagged, _ = flagged_service.list_flagged(session, campaign.id, limit=LIST_LIMIT)
    return {
        "m": manifest, "campaign": manifest["campaign"], "totals": manifest["totals"],
        "key": {"id": manifest.get("signing_key_id"), "fingerprint": manifest.get("signing_key_fingerprint")},
        "population": manifest["population"],
        # every reviewer assigned (zero decisions included) and everyone who decided; flagged first
        "reviewers": reviewer_table(manifest["reviewers"], manifest["decisions_by_reviewer"]),
        "manual_notes": manual_notes, "flagged": flagged, "flagged_count": flagged_service.flagged_count(session, campaign.id),
        "completion": manifest["completion"], "revocations": revocations, "exceptions": exceptions,
        "list_limit": LIST_LIMIT, "thresholds": {
            "median": RUBBER_STAMP_MEDIAN_SECONDS, "bulk": RUBBER_STAMP_BULK_SHARE,
            "min": RUBBER_STAMP_MIN_DECISIONS, "sitting": SITTING_GAP_SECONDS},
    }


def reviewer_table(assigned: list[dict[str, Any]], stats: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per reviewer for the report: every identity items were assigned to, with no decision
    included (counts 0), and anyone else who decided (an escalation's co-reviewer); the unroutable items
    last. Rubber-stamp flagged first, then by decisions taken, then by name."""
    by_id = {r["identity_id"]: r for r in stats}
    zero = {"decided": 0, "approved": 0, "revoked": 0, "abstained": 0, "bulk_approved": 0, "bulk_share": 0.0,
            "median_seconds": None, "first_decision_at": None, "last_decision_at": None, "rubber_stamp": []}
    rows = []
    for a in assigned:
        s = by_id.pop(a["identity_id"], None) if a["identity_id"] is not None else None
        rows.append({**zero, **(s or {}), "identity_id": a["identity_id"], "name": a["name"], "email": a["email"],
                     "items": a["items"], "items_decided": a["decided"], "signed_off_at": a["signed_off_at"]})
    for s in by_id.values():
        rows.append({**zero, **s, "items": 0, "items_decided": 0, "signed_off_at": None})
    rows.sort(key=lambda r: (r["identity_id"] is None, not r["rubber_stamp"], -r["decided"], r["name"] or ""))
    return rows


def render_report_pdf(context: dict[str, Any]) -> bytes:
    from weasyprint import HTML

    return HTML(string=render_report_html(context)).write_pdf()


def render_report_html(context: dict[str, Any]) -> str:
    """The report as the HTML WeasyPrint lays out (tests read what the PDF says from it)."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(Path(__file__).resolve().parent.parent.parent / "templates")),
        autoescape=True, trim_blocks=True, lstrip_blocks=True,
    )
    env.filters["num"] = lambda v: f"{v:,}" if isinstance(v, int | float) else ("—" if v is None else v)
    env.filters["short"] = lambda v: (v or "")[:16].replace("T", " ")
    return env.get_template("evidence/report.html").render(**context)
