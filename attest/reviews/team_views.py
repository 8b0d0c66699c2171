"""A manager's daily pages beside the inbox: My team (reports' access, risk first, with its history),
delegation while away (and the delegate's view of the items they stand in for), undo of a decision, and
reassigning all or a filtered set of one's items.

Views parse, check permission, call one service (`team`, `delegation`, `decisions`), render. A manager
asking about a person who is not below them, a delegation that is not theirs, or a reviewer they do not
stand in for gets 404, never 403 (nobody learns what exists).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, time, timedelta
from typing import Any

from flask import Blueprint, abort, flash, g, redirect, render_template, request, url_for
from flask_login import current_user, login_required
from sqlalchemy import select
from sqlalchemy.orm import Session

from attest.db import utcnow
from attest.entitlements import history as access_history
from attest.entitlements import team as team_service
from attest.entitlements.models import Identity
from attest.entitlements.queries import identity_accounts
from attest.inputs import parse_int
from attest.reviews import decisions, delegation, eligibility, item_notes, queries
from attest.reviews import views as review_views
from attest.reviews.decisions import DecisionError, StaleItem
from attest.reviews.models import DecisionValue, Delegation, ReviewItem
from attest.reviews.views import person_named
from attest.web import db, refusals, settings, write

bp = Blueprint("team", __name__)

PAGE_SIZE = 50


@bp.context_processor
def _clock() -> dict[str, Any]:
    return {"now": utcnow}


@bp.app_context_processor
def _menu() -> dict[str, Any]:
    """`has_reports()` for the menu and `standing_in_for()` for the inbox, asked only when drawn, and read together
    in one statement once per request (`delegation.menu`)."""

    def facts() -> tuple[bool, list[tuple[Delegation, Identity | None]]]:
        if "attest_menu" not in g:
            me = getattr(current_user, "identity_id", None) if current_user.is_authenticated else None
            g.attest_menu = delegation.menu(db(), me)
        return g.attest_menu

    def has_reports() -> bool:
        return facts()[0]

    def standing_in_for() -> list[tuple[Delegation, Identity | None]]:
        return facts()[1]

    return {"has_reports": has_reports, "standing_in_for": standing_in_for, "risk_help": RISK_HELP}


# --- My team ----------------------------------------------------------------------------------------------


@bp.get("/team")
@login_required
def index():
    session = db()
    me = current_user.identity_id
    reports = team_service.team(session, me) if me is not None else []
    return render_template("reviews/team.html", reports=reports, summary=team_service.summary(reports),
                           risk_labels=queries.RISK_LABELS, risk_classes=queries.RISK_CLASSES,
                           risk_help=RISK_HELP)


@bp.get("/team/<int:identity_id>")
@login_required
def person(identity_id: int):
    """One report's access now, or on a past day (?on=YYYY-MM-DD): only for people below the manager."""
    session = db()
    if not team_service.is_report(session, current_user.identity_id, identity_id):
        abort(404)
    identity = session.get(Identity, identity_id) or abort(404)
    try:
        as_of = access_history.resolve_as_of(request.args, settings().zone)
    except access_history.AsOfError as exc:
        abort(400, str(exc))
    accounts = identity_accounts(session, identity_id)
    access = access_history.access_at(session, accounts, as_of)
    rows = team_service.access_of(accounts, access.held, {identity.id: identity})
    return render_template("reviews/team_person.html", identity=identity, accounts=accounts, access=access,
                           rows=rows, as_of=as_of, risk_labels=queries.RISK_LABELS,
                           risk_classes=queries.RISK_CLASSES, risk_help=RISK_HELP)


# --- delegation -------------------------------------------------------------------------------------------


@bp.get("/reviews/delegation")
@login_required
def delegation_page(error: str | None = None, status: int = 200):
    session = db()
    me = current_user.identity_id
    return render_template("reviews/delegation.html", given=delegation.given(session, me),
                           received=delegation.received(session, me), people=_people(session),
                           today=utcnow().date(), error=error, form=request.form if error else {}), status


def _people(session) -> dict[int, Identity]:
    me = current_user.identity_id
    rows = delegation.given(session, me) + delegation.received(session, me)
    ids = {d.delegator_id for d in rows} | {d.delegate_id for d in rows}
    return {i.id: i for i in session.scalars(select(Identity).where(Identity.id.in_(ids)))} if ids else {}


def _day(raw: str | None, field: str) -> datetime:
    try:
        day = datetime.strptime((raw or "").strip(), "%Y-%m-%d").date()
    except ValueError as exc:
        raise delegation.DelegationError(f"Give the {field} date as YYYY-MM-DD.") from exc
    return datetime.combine(day, time.min, tzinfo=UTC)


@bp.post("/reviews/delegation")
@login_required
def delegate():

    if current_user.is_auditor and not current_user.is_admin:
        abort(403, "Auditors read everything and change nothing.")
    try:
        with refusals(), write() as session:
            target = person_named(session, request.form.get("to", ""), delegation.DelegationError)
            starts = _day(request.form.get("starts"), "from")
            # "until" is the last day away, inclusive: the delegation ends at the end of that day
            ends = _day(request.form.get("ends"), "until") + timedelta(days=1)
            row = delegation.create(session, current_user, target.id, starts, ends, request.form.get("reason"))
            name, until = target.display_name, row.ends_at
    except delegation.DelegationError as exc:
        db().rollback()
        return delegation_page(str(exc), 400)  # nothing was changed; the form keeps what was typed
    flash(f"{name} reviews for you until {until:%Y-%m-%d %H:%M} UTC. You can end it at any time.", "success")
    return redirect(url_for("team.delegation_page")), 303


@bp.post("/reviews/delegation/<int:delegation_id>/end")
@login_required
def end_delegation(delegation_id: int):
    with refusals(), write() as session:
        delegation.end(session, current_user, delegation_id)
    flash("Delegation ended: your items are yours alone again.", "success")
    return redirect(url_for("team.delegation_page")), 303


@bp.get("/reviews/for/<int:delegator_id>")
@login_required
def delegated_inbox(delegator_id: int):
    """The items of a reviewer the signed-in user stands in for (an active delegation), except items
    about the delegate themself, which stay with the reviewer."""
    session = db()
    me = current_user.identity_id
    if delegator_id not in eligibility.delegators_of(session, me, utcnow()):
        abort(404)
    delegator = session.get(Identity, delegator_id) or abort(404)
    theirs = queries.my_campaigns(session, delegator_id)
    campaign_id = parse_int(request.args.get("campaign"), low=0)
    if campaign_id is None and theirs:
        campaign_id = theirs[0].campaign.id
    current = next((m for m in theirs if m.campaign.id == campaign_id), None)
    if campaign_id is not None and current is None:
        abort(404)
    context: dict[str, Any] = {"campaigns": theirs, "current": current, "delegator": delegator}
    if current is not None:
        filters = queries.InboxFilters.from_args(request.args)
        filters.role = "reviewer"
        try:
            # the items about the delegate stay with the reviewer: left out by the query (full pages), counted
            page = queries.inbox(session, delegator_id, current.campaign.id, filters,
                                 after=request.args.get("after"), limit=PAGE_SIZE, not_about=me)
        except queries.BadCursor as exc:
            abort(400, str(exc))
        context.update(review_views.inbox_context(session, current, filters, page, reviewer_id=delegator_id),
                       hidden_about_me=queries.count_about(session, delegator_id, current.campaign.id, me))
        if request.headers.get("HX-Request") == "true" and request.headers.get("HX-Target") == "inbox-items":
            return render_template("reviews/_items.html", **context)
    return render_template("reviews/inbox.html", **context)


@bp.post("/reviews/for/<int:delegator_id>/campaigns/<int:campaign_id>/bulk")
@login_required
def delegated_bulk(delegator_id: int, campaign_id: int):
    """The bulk bar of a delegated inbox: the reviewer's undecided items of the selection, decided by the
    delegate on their behalf (decisions.bulk_decide's rules; never an item about the delegate)."""
    session = db()
    me = current_user.identity_id
    if delegator_id not in eligibility.delegators_of(session, me, utcnow()) or \
            not queries.is_my_campaign(session, delegator_id, campaign_id):
        abort(404)
    filters = review_views.bulk_selection(queries.InboxFilters.from_args(request.form))
    filters.role = "reviewer"
    decision = request.form.get("bulk_decision", DecisionValue.APPROVE)
    try:
        with refusals(), write() as session:
            ids = queries.selection_ids(session, delegator_id, campaign_id, filters)
            result = decisions.bulk_decide(session, current_user, campaign_id, ids, decision,
                                           comment=request.form.get("comment"), on_behalf_of=delegator_id)
    except DecisionError as exc:
        abort(400, str(exc))
    n = result.changed
    verb = review_views.BULK_VERBS.get(decision, "Decided")
    left = result.explain()
    flash((f"{verb} {n:,} item{'s' if n != 1 else ''} on behalf of the reviewer." if n else "Nothing was decided.")
          + (" Left to decide one by one: " + "; ".join(left) + "." if left else ""),
          "success" if n and not left else "warning" if left else "info")
    return redirect(url_for("team.delegated_inbox", delegator_id=delegator_id, campaign=campaign_id)), 303


# --- one row per distinct access ------------------------------------------------------------------------------


def _change_access(item_id: int, version: int | None, change: Callable[[Session, int, int | None], ReviewItem],
                   mine_only: bool = False) -> None:
    """`change(session, item id, expected version)` on the row's item (at the version the page showed) and on
    the alike items of the same access (its other paths; `mine_only`: those this user decided), in one
    transaction: all or nothing. Refusals are raised (404 and 403 answered by `refusals`)."""
    with refusals(), write() as session:
        first = decisions.load_item_for(session, current_user, item_id, for_update=True)
        others = [o for o in item_notes.alike(session, first) if not mine_only or o.decided_by_user_id == current_user.id]
        change(session, item_id, version)
        for other in others:
            change(session, other.id, None)


def _row_answer(row: ReviewItem, saved: str):
    """The answer to a change made from an item's row: the row again (htmx), else the inbox with `saved`."""
    if request.headers.get("HX-Request") == "true":
        return review_views._row_response(row)
    flash(saved, "success")
    return redirect(url_for("reviews.inbox", campaign=row.campaign_id)), 303


@bp.post("/reviews/items/<int:item_id>/decide-access")
@login_required
def decide_access(item_id: int):
    """Decide one access held by several paths: the row's item and the alike items of the same access, in
    one transaction (each decided, recorded and audited as if one by one; all or nothing)."""
    decision = request.form.get("decision", "")
    comment = request.form.get("comment")
    version = parse_int(request.form.get("version"), low=0)
    try:
        _change_access(item_id, version, lambda session, one, expected: decisions.decide(
            session, current_user, one, decision, comment=comment, expected_version=expected))
    except (StaleItem, DecisionError) as exc:
        return review_views._refused(item_id, exc)
    row = decisions.load_item_for(db(), current_user, item_id)
    me = current_user.identity_id
    if me not in (row.reviewer_id, row.co_reviewer_id) and eligibility.acting_for(db(), me, row, utcnow()) is None:
        return review_views._moved_response(item_id, row.campaign_id, "Decided; passed on to the next stage.")
    return _row_answer(row, "Decision saved.")


# --- undo ---------------------------------------------------------------------------------------------------


@bp.post("/reviews/items/<int:item_id>/undo")
@login_required
def undo(item_id: int):

    version = parse_int(request.form.get("version"), low=0)
    try:
        # the same access on its other paths, where this user decided it with the row's item
        _change_access(item_id, version, lambda session, one, expected: decisions.undo(
            session, current_user, one, expected_version=expected), mine_only=True)
    except (StaleItem, DecisionError) as exc:
        return review_views._refused(item_id, exc)
    return _row_answer(decisions.load_item_for(db(), current_user, item_id), "Decision undone: the item is undecided again.")


# --- reassign all or a filtered set of my items ----------------------------------------------------------------


@bp.post("/reviews/campaigns/<int:campaign_id>/reassign-mine")
@login_required
def reassign_mine(campaign_id: int):
    me = review_views.reviewer_in(campaign_id)
    filters = queries.InboxFilters.from_args(request.form)
    back = url_for("reviews.inbox", campaign=campaign_id, **filters.as_args())
    try:
        with refusals(), write() as session:
            target = person_named(session, request.form.get("to", ""))
            ids = queries.selection_ids(session, me, campaign_id, filters)
            result = delegation.reassign_mine(session, current_user, campaign_id, ids, target.id,
                                              request.form.get("reason", ""))
            name = target.display_name
    except DecisionError as exc:
        db().rollback()
        flash(str(exc), "danger")
        return redirect(back), 303
    n = result.moved
    left = result.explain()
    flash(f"Reassigned {n:,} item{'s' if n != 1 else ''} to {name}." + (" Left with you: " + "; ".join(left) + "." if left else ""),
          "success" if not left else "warning")
    return redirect(url_for("reviews.inbox", campaign=campaign_id)), 303


# what makes each risk badge: the legend on the inbox and on My team (attest/entitlements/risk.py's rules)
RISK_HELP = {
    "privileged": "the permission is an administrator, owner or other privileged one",
    "dormant": "the account (or the app, where the source records its use) has not been used for 90 days or more",
    "orphaned": "the account belongs to no person in the directory",
    "terminated": "the person has left (terminated in the identity provider) but still holds the access",
    "service_account": "a non-human account",
    "new_since_last_review": "granted after the previous review of this kind",
    "via_group": "held through a group rather than directly (revoking it means a group change)",
    "stale_access_key": "an active access key unused for 90 days or more",
    "no_mfa": "the source says the account has no multi-factor authentication",
    "trust_outside_org": "a role that a principal outside the organisation may assume",
    "wildcard_trust": "a role whose trust policy allows any principal (*)",
}
HIGH_RISKS = ("privileged", "terminated", "trust_outside_org", "wildcard_trust")  # the red badges
