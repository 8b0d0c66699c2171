"""Charts: one query function per chart, one JSON shape, one route (issue 20, part 3).

Every chart is a dict the page renders as a table ("Show the numbers", templates/charts/_chart.html) and
embeds as JSON beside it for attest/static/js/charts.js to draw with the vendored Chart.js (the same dict
`GET /charts/<name>.json` serves, charts.js's fallback): the picture and the table are the same numbers
by construction.

    {"name", "title", "type": "bar"|"line", "stacked", "horizontal", "unit",
     "labels": [row label, ...], "series": [{"key", "label", "data": [number per label]}, ...]}

Who may read a chart is who may read its page: every chart here belongs to an admin's or auditor's page
(home dashboard, campaign dashboard, remediation, sources), so managers get 403 from the route and
`chart_data` gives them nothing.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from flask import Blueprint, abort, jsonify, request
from flask_login import current_user
from sqlalchemy import String, and_, case, cast, func, select
from sqlalchemy.orm import Session

from attest.auth.permissions import can_read_all, read_all_required
from attest.entitlements.models import Account, Entitlement, Grant, Identity, PersonStatus, Source, SyncRun
from attest.entitlements.risk import RISKS, WEIGHTS
from attest.inputs import parse_int
from attest.reviews.models import (
    DECISIONS,
    REMEDIATION_STATUSES,
    Campaign,
    DecisionValue,
    Remediation,
    ReviewItem,
)
from attest.reviews.queries import RISK_LABELS, has_risk
from attest.web import db

bp = Blueprint("charts", __name__)

MAX_DAYS = 366  # completion over time: at most a year of days, the last ones
SYNC_RUNS = 20  # sync durations: the last runs of each source
DECISION_LABELS = {DecisionValue.APPROVE: "Approved", DecisionValue.REVOKE: "Revoked", DecisionValue.ABSTAIN: "Abstained",
                   None: "Open"}
# home page: each active account grant counted once, under its weightiest cheap signal
ACCESS_RISKS = tuple(sorted(("terminated", "orphaned", "privileged"), key=lambda r: -WEIGHTS[r])) + ("none",)
ACCESS_LABELS = {"terminated": "Person left", "orphaned": "Orphaned account", "privileged": "Privileged",
                 "none": "No such signal"}


def _chart(name: str, title: str, labels: list[str], series: list[dict[str, Any]], *, type: str = "bar",
           stacked: bool = False, horizontal: bool = False, unit: str = "items") -> dict[str, Any]:
    return {"name": name, "title": title, "type": type, "stacked": stacked, "horizontal": horizontal,
            "unit": unit, "labels": labels, "series": series}


def _series(key: str, label: str, data: list[int | float | None]) -> dict[str, Any]:
    return {"key": key, "label": label, "data": data}


# --- campaign dashboard ---------------------------------------------------------------------------------


def campaign_completion(session: Session, campaign: Campaign, now: datetime | None = None) -> dict[str, Any]:
    """Items decided so far at the end of each day (UTC), from launch to today (or the close), by each
    item's current decision time; the campaign's item count beside it."""
    now = now or datetime.now(UTC)
    total = session.scalar(select(func.count()).where(ReviewItem.campaign_id == campaign.id)) or 0
    # bucketed here (a UTC day in SQL is dialect-specific; attest.dialects.utc_day once issue 18 lands it)
    per_day: dict[date, int] = {}
    for (at,) in session.execute(select(ReviewItem.decided_at).where(
            ReviewItem.campaign_id == campaign.id, ReviewItem.decision.is_not(None), ReviewItem.decided_at.is_not(None))):
        day = at.astimezone(UTC).date()
        per_day[day] = per_day.get(day, 0) + 1
    start = (campaign.launched_at or campaign.created_at or now).astimezone(UTC).date()
    end = (campaign.closed_at or now).astimezone(UTC).date()
    if per_day:
        start, end = min(start, min(per_day)), max(end, max(per_day))
    before = 0
    if (end - start).days >= MAX_DAYS:
        cut = end - timedelta(days=MAX_DAYS - 1)
        before = sum(n for d, n in per_day.items() if d < cut)
        start = cut
    labels, decided, items = [], [], []
    running = before
    day = start
    while day <= end:
        running += per_day.get(day, 0)
        labels.append(day.isoformat())
        decided.append(running)
        items.append(total)
        day += timedelta(days=1)
    return _chart("campaign-completion", "Items decided over time", labels,
                  [_series("decided", "Decided (cumulative)", decided), _series("total", "Items in the campaign", items)],
                  type="line")


def campaign_reviewers(session: Session, campaign: Campaign, now: datetime | None = None) -> dict[str, Any]:
    """Decided and open items per reviewer (most open first); items no one reviews as '(no reviewer)'."""
    rows = session.execute(
        select(ReviewItem.reviewer_id, func.count(), func.count(ReviewItem.decision))
        .where(ReviewItem.campaign_id == campaign.id).group_by(ReviewItem.reviewer_id)
    ).all()
    ids = [r[0] for r in rows if r[0] is not None]
    names = {i: n for i, n in session.execute(select(Identity.id, Identity.display_name).where(Identity.id.in_(ids)))} if ids else {}
    table = [((names.get(rid) or f"identity {rid}") if rid is not None else "(no reviewer)", d, n - d)
             for rid, n, d in rows]
    table.sort(key=lambda r: (-r[2], r[0].lower()))
    return _chart("campaign-reviewers", "Progress by reviewer", [r[0] for r in table],
                  [_series("decided", "Decided", [r[1] for r in table]), _series("open", "Open", [r[2] for r in table])],
                  stacked=True, horizontal=True)


def campaign_risks(session: Session, campaign: Campaign, now: datetime | None = None) -> dict[str, Any]:
    """Decisions by risk signal: each signal's items approved, revoked, abstained and open (an item with
    two signals counts under both); items with no signal on their own row. Signals no item has are left out."""
    none = cast(ReviewItem.risks, String).in_(("[]", "null")) | ReviewItem.risks.is_(None)
    columns = [func.sum(case((has_risk(r), 1), else_=0)) for r in RISKS] + [func.sum(case((none, 1), else_=0))]
    counts: dict[str | None, list[int]] = {}
    for decision, *sums in session.execute(
            select(ReviewItem.decision, *columns).where(ReviewItem.campaign_id == campaign.id)
            .group_by(ReviewItem.decision)):
        counts[decision] = [int(n or 0) for n in sums]
    keys = [*RISKS, "none"]
    shown = [i for i, _ in enumerate(keys) if any(v[i] for v in counts.values())]
    labels = [RISK_LABELS.get(keys[i], "no risk signal") for i in shown]
    series = [_series(d or "open", DECISION_LABELS[d], [counts.get(d, [0] * len(keys))[i] for i in shown])
              for d in (*DECISIONS, None) if d in counts]
    return _chart("campaign-risks", "Decisions by risk", labels, series, stacked=True, horizontal=True)


# --- remediation, home, sources --------------------------------------------------------------------------


def remediation_status(session: Session, campaign: Campaign | None = None, now: datetime | None = None) -> dict[str, Any]:
    """Remediations per status (of one campaign, or all), statuses none has left out."""
    stmt = select(Remediation.status, func.count()).group_by(Remediation.status)
    if campaign is not None:
        stmt = stmt.where(Remediation.campaign_id == campaign.id)
    counts = {status: n for status, n in session.execute(stmt)}
    labels = [s for s in REMEDIATION_STATUSES if counts.get(s)]
    return _chart("remediation-status", "Remediation status", [s.replace("_", " ") for s in labels],
                  [_series("remediations", "Remediations", [counts[s] for s in labels])], horizontal=True)


def access_by_source(session: Session, campaign: Campaign | None = None, now: datetime | None = None) -> dict[str, Any]:
    """Active access held by active accounts, per source, each grant under its weightiest signal among
    person left, orphaned account and privileged (the cheap ones; a campaign's launch computes them all)."""
    bucket = case((Identity.status == PersonStatus.TERMINATED, "terminated"), (Account.identity_id.is_(None), "orphaned"),
                  (Entitlement.privileged.is_(True), "privileged"), else_="none")
    rows = session.execute(
        select(Source.name, bucket, func.count())
        .select_from(Grant)
        .join(Account, and_(Account.id == Grant.principal_account_id, Account.ended_at.is_(None)))
        .join(Entitlement, Entitlement.id == Grant.entitlement_id)
        .join(Source, Source.id == Grant.source_id)
        .outerjoin(Identity, Identity.id == Account.identity_id)
        .where(Grant.ended_at.is_(None))
        .group_by(Source.name, bucket)
    ).all()
    sources = sorted({r[0] for r in rows}, key=str.lower)
    counts = {(s, b): n for s, b, n in rows}
    return _chart("access-by-source", "Access by source and risk", sources,
                  [_series(b, ACCESS_LABELS[b], [counts.get((s, b), 0) for s in sources]) for b in ACCESS_RISKS],
                  stacked=True, unit="grants")


def sync_durations(session: Session, campaign: Campaign | None = None, now: datetime | None = None) -> dict[str, Any]:
    """Per source: the last finished sync's seconds, and the median and longest of its last SYNC_RUNS."""
    labels, last, median, longest = [], [], [], []
    for source in session.scalars(select(Source).order_by(Source.name)):
        runs = session.execute(
            select(SyncRun.started_at, SyncRun.finished_at)
            .where(SyncRun.source_id == source.id, SyncRun.finished_at.is_not(None))
            .order_by(SyncRun.id.desc()).limit(SYNC_RUNS)
        ).all()
        seconds = [round((f - s).total_seconds(), 1) for s, f in runs]
        if not seconds:
            continue
        labels.append(source.name)
        last.append(seconds[0])
        median.append(round(statistics.median(seconds), 1))
        longest.append(max(seconds))
    return _chart("sync-durations", "Sync durations per source", labels,
                  [_series("last", "Last run", last), _series("median", f"Median of the last {SYNC_RUNS}", median),
                   _series("longest", f"Longest of the last {SYNC_RUNS}", longest)], unit="seconds")


@dataclass(frozen=True)
class ChartKind:
    build: Callable[..., dict[str, Any]]
    campaign: str  # "required", "optional" or "none": what ?campaign= means to it


CHARTS: dict[str, ChartKind] = {
    "campaign-completion": ChartKind(campaign_completion, "required"),
    "campaign-reviewers": ChartKind(campaign_reviewers, "required"),
    "campaign-risks": ChartKind(campaign_risks, "required"),
    "remediation-status": ChartKind(remediation_status, "optional"),
    "access-by-source": ChartKind(access_by_source, "none"),
    "sync-durations": ChartKind(sync_durations, "none"),
}


def build(session: Session, name: str, campaign_id: int | None = None, now: datetime | None = None) -> dict[str, Any]:
    """The chart `name` (of campaign `campaign_id` where it takes one); LookupError: no such chart or campaign."""
    kind = CHARTS.get(name)
    if kind is None:
        raise LookupError(f"no chart named {name}")
    campaign = None
    if kind.campaign != "none" and campaign_id is not None:
        campaign = session.get(Campaign, campaign_id)
        if campaign is None:
            raise LookupError(f"no campaign {campaign_id}")
    if kind.campaign == "required" and campaign is None:
        raise ValueError("campaign is required")
    return kind.build(session, campaign, now=now)


# --- web ---------------------------------------------------------------------------------------------------


@bp.app_template_global()
def chart_data(name: str, campaign_id: int | None = None) -> dict[str, Any] | None:
    """For a page's template: the chart its table shows (nothing for who may not read charts)."""
    if not can_read_all(current_user):
        return None
    try:
        return build(db(), name, campaign_id)
    except (LookupError, ValueError):
        return None


@bp.get(f"/charts/<any({', '.join(repr(n) for n in CHARTS)}):name>.json")  # an unknown name: 404 before sign-in
@read_all_required
def data(name: str):

    raw = request.args.get("campaign", "").strip()
    campaign_id = parse_int(raw, low=1) if raw else None
    if raw and campaign_id is None:
        abort(400, "campaign must be a whole number")
    try:
        chart = build(db(), name, campaign_id)
    except LookupError:
        abort(404)
    except ValueError as exc:
        abort(400, str(exc))
    return jsonify(chart)
