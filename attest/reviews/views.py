"""The reviews blueprint (`reviews.*`) and its reviewer pages: the inbox (filters, bulk decisions, sign-off),
one item with its history, decide, reassign. The campaign pages (admins; auditors read) are in
campaign_views.py and the definition pages in definition_views.py; both add their routes to this `bp`.

Views parse the request, check permission, call one service, render. A reviewer asking for an item or a
campaign that is not routed to them gets 404, never 403, so nobody learns what exists. htmx requests
(`HX-Request`) get the changed fragment back instead of a redirect.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from flask import (
    Blueprint,
    abort,
    flash,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_login import current_user, login_required
from flask_wtf.csrf import generate_csrf
from sqlalchemy import select

from attest.db import utcnow
from attest.entitlements import history as access_history
from attest.entitlements.models import Grant, Identity
from attest.entitlements.queries import person_by_email
from attest.inputs import parse_int
from attest.reviews import decisions, eligibility, item_notes, queries
from attest.reviews.decisions import DecisionError, StaleItem
from attest.reviews.models import (
    CAMPAIGN_STATUSES,
    Campaign,
    CampaignStatus,
    DecisionValue,
    ReviewerSignoff,
    ReviewItem,
)
from attest.web import db, refusals, write

bp = Blueprint("reviews", __name__)

PAGE_SIZE = 50
# what a bulk decision did, for its flash message
BULK_VERBS = {DecisionValue.APPROVE: "Approved", DecisionValue.REVOKE: "Revoked", DecisionValue.ABSTAIN: "Abstained on"}


@bp.context_processor
def _clock() -> dict[str, Any]:
    return {"now": utcnow}


def _row_context() -> dict[str, Any]:
    """What every item row needs, computed once per response (rows are rendered 50 at a time).

    `csrf`: the token each of a row's forms carries for a browser without JavaScript; None in an answer to htmx,
    which only JavaScript asks for: its rows' forms post through htmx, which sends the page's token in a header
    (static/js/attest.js; tokens do not expire, WTF_CSRF_TIME_LIMIT=None), so they leave out the token, method
    and action that only a plain post needs (reviews/_item_row.html)."""
    return {"item_base": url_for("reviews.item", item_id=0).rsplit("/", 1)[0] + "/",
            "csrf": None if _htmx() else generate_csrf(),
            "risk_labels": queries.RISK_LABELS, "risk_classes": queries.RISK_CLASSES}


def _htmx() -> bool:
    return request.headers.get("HX-Request") == "true"


def _int(value: Any) -> int | None:
    return parse_int(value, low=0)


def _find_person(session, email: str) -> Identity | None:
    return person_by_email(session, email)


def person_named(session, email: str, error: type[Exception] = DecisionError) -> Identity:
    """The person a form names by e-mail (to reassign or delegate to), or `error` saying nobody has it."""
    target = _find_person(session, email)
    if target is None:
        raise error(f"Nobody in the directory has the e-mail {email.strip() or '(empty)'}.")
    return target


# --- the reviewer inbox --------------------------------------------------------------------------------


@bp.get("/reviews")
@login_required
def inbox():
    session = db()
    me = current_user.identity_id
    campaign_id = _int(request.args.get("campaign"))
    # the item list alone (htmx: filters, pages) shows one campaign: only its counts, not every campaign's cards
    items_only = _htmx() and request.headers.get("HX-Target") == "inbox-items"
    mine = [] if items_only and campaign_id is not None else queries.my_campaigns(session, me)
    if campaign_id is None and mine:
        campaign_id = mine[0].campaign.id
    if campaign_id is None:
        return render_template("reviews/inbox.html", campaigns=mine, current=None)
    current = next((m for m in mine if m.campaign.id == campaign_id), None)
    if current is None:
        # a closed campaign of mine stays readable; anyone else's does not exist for this user
        current = queries.my_campaign(session, me, campaign_id, statuses=CAMPAIGN_STATUSES)
        if current is None:
            abort(404)
    filters = queries.InboxFilters.from_args(request.args)
    if "role" not in request.args and current.total == 0 and current.escalated:
        filters.role = "co_reviewer"  # only escalated items here: show those
    try:
        page = queries.inbox(session, me, campaign_id, filters, after=request.args.get("after"), limit=PAGE_SIZE)
    except queries.BadCursor as exc:
        abort(400, str(exc))
    context = inbox_context(session, current, filters, page)
    if items_only:
        return render_template("reviews/_items.html", **context)
    return render_template("reviews/inbox.html", campaigns=mine, **context)


def inbox_context(session, current: queries.MyCampaign, filters: queries.InboxFilters, page,
                   reviewer_id: int | None = None) -> dict[str, Any]:
    """What the inbox page and its item list show of one campaign, for the signed-in user's own items or, given
    `reviewer_id`, for the reviewer they stand in for (team_views.delegated_inbox): one context for both, so
    a delegate reads the rows, counts and bulk bar as the reviewer would."""
    me = current_user.identity_id
    reviewer = me if reviewer_id is None else reviewer_id
    campaign = current.campaign
    counts = current.counts
    # what "Approve N matching" takes: the bulk rules (never flagged, terminated, orphaned or the decider's own
    # access: a delegate's, when standing in)
    takes = decisions.bulk_writable(campaign, me, DecisionValue.APPROVE, False)
    # the bulk bar works on the list shown: the reviewer's own items, or those escalated to them; standing in,
    # the reviewer's items the delegate may take
    if reviewer != me:
        bulk_counts: Any = SimpleNamespace(open_unflagged=queries.selection_counts(
            session, reviewer, campaign.id, queries.InboxFilters(risk="unflagged"), takes)[1])
    elif filters.role == "reviewer":
        bulk_counts = counts
    else:
        bulk_counts = queries.inbox_counts(session, me, campaign.id, filters.role)
    selection = held_back = None
    if filters.active:
        undecided, selection = queries.selection_counts(session, reviewer, campaign.id, filters, takes)
        held_back = undecided - selection
    flagged_in_bulk = decisions.bulk_approve_flagged(campaign)
    return {
        "current": current, "campaign": campaign, "filters": filters, "page": page, "counts": counts,
        "bulk_counts": bulk_counts, "selection": selection, "held_back": held_back, "flagged_in_bulk": flagged_in_bulk,
        "options": queries.filter_options(session, reviewer, campaign.id, filters.role),
        "writable": campaign.status == CampaignStatus.ACTIVE and not (current_user.is_auditor and not current_user.is_admin),
        "signed_off": current.signed_off_at is not None,
        "comment_rule": decisions.comment_rule(campaign),
        **_row_context(), **item_notes.row_notes(session, page.rows),
    }


def _back_to_inbox(campaign_id: int):
    args = {k: v for k, v in request.form.items() if k in ("risk", "source", "resource", "decision", "q", "role") and v}
    return redirect(url_for("reviews.inbox", campaign=campaign_id, **args))


def _row_response(item: ReviewItem, status: int = 200, error: str | None = None):
    session = db()
    me = current_user.identity_id
    # the campaign a decision just checked is still in the session (decisions.decide keeps it on the item)
    campaign = session.get(Campaign, item.campaign_id)
    mine = me is not None and me in (item.reviewer_id, item.co_reviewer_id)
    # a delegate's row: the counts and sign-off are those of the reviewer they decide for
    acting = None if mine else eligibility.acting_for(session, me, item, utcnow())
    reviewer = acting or me
    counts, signed_off = queries.counts_and_signoff(session, reviewer, campaign.id) if reviewer else (None, False)
    return render_template(
        "reviews/_decide_response.html", item=item, campaign=campaign, counts=counts, error=error,
        mine=mine or acting is not None, writable=campaign.status == CampaignStatus.ACTIVE, signed_off=signed_off,
        delegator=acting,
        comment_rule=decisions.comment_rule(campaign),
        **_row_context(), **item_notes.row_notes(session, [item]),
    ), status


@bp.get("/reviews/items/<int:item_id>")
@login_required
def item(item_id: int):
    session = db()
    with refusals():
        row = decisions.load_item_for(session, current_user, item_id)
    campaign = session.get(Campaign, row.campaign_id)
    people = {i.id: i for i in session.scalars(select(Identity).where(
        Identity.id.in_([x for x in (row.reviewer_id, row.co_reviewer_id, row.decided_by_identity_id) if x])))}
    history = queries.item_history(session, item_id)
    hist_people = {i.id: i for i in session.scalars(select(Identity).where(
        Identity.id.in_([i for h in history for i in (h.identity_id, h.on_behalf_of_id) if i])))} if history else {}
    mine = current_user.identity_id in (row.reviewer_id, row.co_reviewer_id)
    grant = session.get(Grant, row.grant_id)
    held_since = access_history.since_of(session, [grant])[grant.id] if grant is not None else None
    return render_template("reviews/item.html", item=row, campaign=campaign, people=people, history=history,
                           hist_people=hist_people, mine=mine, held_since=held_since,
                           risk_labels=queries.RISK_LABELS, risk_classes=queries.RISK_CLASSES)


@bp.post("/reviews/items/<int:item_id>/decide")
@login_required
def decide(item_id: int):
    decision = request.form.get("decision", "")
    comment = request.form.get("comment")
    version = _int(request.form.get("version"))
    try:
        with refusals(), write() as session:
            item = decisions.decide(session, current_user, item_id, decision, comment=comment, expected_version=version)
            campaign_id = item.campaign_id
    except (StaleItem, DecisionError) as exc:
        return _refused(item_id, exc)
    row = db().get(ReviewItem, item_id)
    me = current_user.identity_id
    if row is not None and me not in (row.reviewer_id, row.co_reviewer_id) and \
            eligibility.acting_for(db(), me, row, utcnow()) is None:
        # approved on a stage that is not the last: the item went on to the next stage's reviewer
        nxt = db().get(Identity, row.reviewer_id) if row.reviewer_id else None
        message = f"Decided; passed on to {nxt.display_name if nxt else 'an administrator'} for stage {row.stage + 1}."
        if _htmx():
            return _moved_response(item_id, campaign_id, message)
        flash(message, "success")
        return _back_to_inbox(campaign_id)
    if _htmx():
        return _row_response(row)
    flash("Decision saved.", "success")
    return _back_to_inbox(campaign_id)


def _refused(item_id: int, exc: StaleItem | DecisionError):
    """The answer to a decision or reassignment the rules refused (nothing was changed; `refusals` answers
    404 and 403): 409 with the item as it now is, or 400 with the reason on its row."""
    if isinstance(exc, StaleItem):
        return _conflict(item_id, str(exc))
    if _htmx():
        return _row_error(item_id, str(exc), 400)
    abort(400, str(exc))


def _moved_response(item_id: int, campaign_id: int, message: str):
    """The row of an item that left this reviewer's inbox (reassigned, or on to the next stage)."""
    session = db()
    me = current_user.identity_id
    return render_template(
        "reviews/_moved.html", item_id=item_id, message=message, campaign=session.get(Campaign, campaign_id),
        counts=queries.inbox_counts(session, me, campaign_id) if me else None, writable=True,
        signed_off=bool(me) and session.scalar(select(ReviewerSignoff.id).where(
            ReviewerSignoff.campaign_id == campaign_id, ReviewerSignoff.reviewer_id == me)) is not None,
    )


def _fresh_item(item_id: int) -> ReviewItem:
    """The item as it now is, for its row in an answer: only if the user may see it (else 404)."""
    session = db()
    session.rollback()
    with refusals():
        return decisions.load_item_for(session, current_user, item_id)


def _conflict(item_id: int, message: str):
    row = _fresh_item(item_id)
    if _htmx():
        return _row_response(row, 409, message)
    abort(409, message)


def _row_error(item_id: int, message: str, status: int):
    return _row_response(_fresh_item(item_id), status, message)


@bp.post("/reviews/items/<int:item_id>/reassign")
@login_required
def reassign(item_id: int):
    reason = request.form.get("reason", "")
    email = request.form.get("to", "")
    version = _int(request.form.get("version"))
    try:
        with refusals(), write() as session:
            decisions.load_item_for(session, current_user, item_id)  # may see it: before reading the input
            target = person_named(session, email)
            row = decisions.reassign(session, current_user, item_id, target.id, reason, expected_version=version)
            campaign_id, name = row.campaign_id, target.display_name
    except (StaleItem, DecisionError) as exc:
        return _refused(item_id, exc)
    if _htmx():
        return _moved_response(item_id, campaign_id, f"Reassigned to {name}.")
    flash(f"Reassigned to {name}.", "success")
    if current_user.identity_id and queries.is_my_campaign(db(), current_user.identity_id, campaign_id):
        return redirect(url_for("reviews.inbox", campaign=campaign_id))
    return redirect(url_for("reviews.campaign", campaign_id=campaign_id))


@bp.get("/reviews/items/<int:item_id>/reassign")
@login_required
def reassign_form(item_id: int):
    """Reassign's form for one item, asked for when the reviewer opens a row's Reassign box (htmx: the form
    alone, into the box) or follows its link without JavaScript (a page of its own). It carries the version
    of the row as shown (`version`), so the reassignment is refused if the item changed since."""
    with refusals():
        item = decisions.load_item_for(db(), current_user, item_id)
    version = _int(request.args.get("version"))
    context = {"item": item, "version": item.version if version is None else version, **_row_context()}
    if _htmx():
        return render_template("reviews/_reassign_form.html", **context)
    return render_template("reviews/reassign.html", **context)


def reviewer_in(campaign_id: int) -> int:
    """The signed-in user's identity id; 404 unless they review items of this campaign (nobody learns
    what exists)."""
    me = current_user.identity_id
    if not queries.is_my_campaign(db(), me, campaign_id):
        abort(404)
    return me


def bulk_selection(filters: queries.InboxFilters) -> queries.InboxFilters:
    """What the bulk bar's `scope` takes: `unflagged` (every item not flagged; no other risk filter) or
    `filtered` (the items the filters show); 400 for anything else."""
    scope = request.form.get("scope", "unflagged")
    if scope == "unflagged":
        if filters.risk not in (None, "unflagged"):
            abort(400, "Approve all not flagged cannot be combined with a risk filter.")
        filters.risk = "unflagged"
    elif scope != "filtered":
        abort(400, "Unknown selection.")
    return filters


@bp.post("/reviews/campaigns/<int:campaign_id>/bulk")
@login_required
def bulk(campaign_id: int):
    me = reviewer_in(campaign_id)
    filters = bulk_selection(queries.InboxFilters.from_args(request.form))
    decision = request.form.get("bulk_decision", DecisionValue.APPROVE)
    comment = request.form.get("comment")
    try:
        with refusals(), write() as session:
            ids = queries.selection_ids(session, me, campaign_id, filters)
            result = decisions.bulk_decide(session, current_user, campaign_id, ids, decision, comment=comment)
    except DecisionError as exc:
        abort(400, str(exc))
    verb = BULK_VERBS.get(decision, "Decided")
    n = result.changed
    done = f"{verb} {n:,} item{'s' if n != 1 else ''}." if n else "Nothing was decided."
    left = result.explain()
    flash(done + (" Left for you to decide one by one: " + "; ".join(left) + "." if left else ""),
          "success" if n and not left else "warning" if left else "info")
    target = url_for("reviews.inbox", campaign=campaign_id, **{k: v for k, v in request.form.items()
                                                                if k in ("source", "resource", "q", "role") and v})
    if _htmx():
        return "", 204, {"HX-Redirect": target}
    return redirect(target)


@bp.post("/reviews/campaigns/<int:campaign_id>/signoff")
@login_required
def sign_off(campaign_id: int):
    try:
        with refusals(), write() as session:
            decisions.sign_off(session, current_user, campaign_id)
    except DecisionError as exc:
        flash(str(exc), "warning")
        return redirect(url_for("reviews.inbox", campaign=campaign_id))
    flash("Signed off. Thank you: your review of this campaign is complete.", "success")
    return redirect(url_for("reviews.inbox", campaign=campaign_id))
