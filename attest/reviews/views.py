"""Review pages: the reviewer inbox (decide, bulk approve, revoke with a comment, reassign, sign off)
and the admin pages (definitions by form or YAML with a live preview, launch, campaign dashboard with
remind-now, reassign and close). Auditors see campaigns read-only.

Views parse the request, check permission, call one service, render. A reviewer asking for an item or a
campaign that is not routed to them gets 404, never 403, so nobody learns what exists. htmx requests
(`HX-Request`) get the changed fragment back instead of a redirect.
"""

from __future__ import annotations

from typing import Any

from flask import (
    Blueprint,
    Response,
    abort,
    flash,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_login import current_user, login_required
from flask_wtf.csrf import generate_csrf
from sqlalchemy import func, select

from attest.auth.permissions import admin_required, read_all_required
from attest.db import utcnow
from attest.entitlements import history as access_history
from attest.entitlements.models import Grant, Identity, Resource, Source
from attest.entitlements.queries import person_by_email
from attest.inputs import parse_int
from attest.reviews import campaigns as campaigns_service
from attest.reviews import decisions, eligibility, item_notes, items_export, notify, queries, remediation
from attest.reviews import definitions as defs
from attest.reviews.decisions import DecisionError, Forbidden, NotFound, StaleItem
from attest.reviews.definition_schema import DEFAULT_REMINDERS
from attest.reviews.models import CAMPAIGN_STATUSES, Campaign, CampaignDefinition, ReviewerSignoff, ReviewItem
from attest.web import db, settings, state, write

bp = Blueprint("reviews", __name__)

PAGE_SIZE = 50


@bp.context_processor
def _clock() -> dict[str, Any]:
    return {"now": utcnow}


def _row_context() -> dict[str, Any]:
    """What every item row needs, computed once per response (rows are rendered 50 at a time)."""
    return {"item_base": url_for("reviews.item", item_id=0).rsplit("/", 1)[0] + "/", "csrf": generate_csrf(),
            "risk_labels": queries.RISK_LABELS, "risk_classes": queries.RISK_CLASSES}


def _htmx() -> bool:
    return request.headers.get("HX-Request") == "true"


def _int(value: Any) -> int | None:
    return parse_int(value, low=0)


def _find_person(session, email: str) -> Identity | None:
    return person_by_email(session, email)


# --- the reviewer inbox --------------------------------------------------------------------------------


@bp.get("/reviews")
@login_required
def inbox():
    session = db()
    me = current_user.identity_id
    mine = queries.my_campaigns(session, me)
    campaign_id = _int(request.args.get("campaign"))
    if campaign_id is None and mine:
        campaign_id = mine[0].campaign.id
    if campaign_id is None:
        return render_template("reviews/inbox.html", campaigns=mine, current=None)
    current = next((m for m in mine if m.campaign.id == campaign_id), None)
    if current is None:
        # a closed campaign of mine stays readable; anyone else's does not exist for this user
        everything = queries.my_campaigns(session, me, statuses=CAMPAIGN_STATUSES)
        current = next((m for m in everything if m.campaign.id == campaign_id), None)
        if current is None:
            abort(404)
    filters = queries.InboxFilters.from_args(request.args)
    if "role" not in request.args and current.total == 0 and current.escalated:
        filters.role = "co_reviewer"  # only escalated items here: show those
    try:
        page = queries.inbox(session, me, campaign_id, filters, after=request.args.get("after"), limit=PAGE_SIZE)
    except queries.BadCursor as exc:
        abort(400, str(exc))
    context = _inbox_context(session, current, filters, page)
    if _htmx() and request.headers.get("HX-Target") == "inbox-items":
        return render_template("reviews/_items.html", **context)
    return render_template("reviews/inbox.html", campaigns=mine, **context)


def _inbox_context(session, current: queries.MyCampaign, filters: queries.InboxFilters, page) -> dict[str, Any]:
    me = current_user.identity_id
    campaign = current.campaign
    counts = current.counts
    # the bulk bar works on the list shown: the reviewer's own items, or those escalated to them
    bulk_counts = counts if filters.role == "reviewer" else queries.inbox_counts(session, me, campaign.id, filters.role)
    selection = held_back = None
    if filters.active:
        # what "Approve N matching" takes: the bulk rules (never flagged, terminated, orphaned or own access)
        undecided, selection = queries.selection_counts(session, me, campaign.id, filters,
                                                        decisions.bulk_writable(campaign, me, "approve", False))
        held_back = undecided - selection
    flagged_in_bulk = bool(((campaign.spec or {}).get("rules") or {}).get("bulk_approve_flagged"))
    return {
        "current": current, "campaign": campaign, "filters": filters, "page": page, "counts": counts,
        "bulk_counts": bulk_counts, "selection": selection, "held_back": held_back, "flagged_in_bulk": flagged_in_bulk,
        "options": queries.filter_options(session, me, campaign.id, filters.role),
        "writable": campaign.status == "active" and not (current_user.is_auditor and not current_user.is_admin),
        "signed_off": current.signed_off_at is not None,
        "comment_rule": ((campaign.spec or {}).get("rules") or {}).get("comment_required", "on_revoke"),
        **_row_context(), **item_notes.row_notes(session, page.rows),
    }


def _back_to_inbox(campaign_id: int):
    args = {k: v for k, v in request.form.items() if k in ("risk", "source", "resource", "decision", "q", "role") and v}
    return redirect(url_for("reviews.inbox", campaign=campaign_id, **args))


def _row_response(item: ReviewItem, status: int = 200, error: str | None = None):
    session = db()
    me = current_user.identity_id
    campaign = session.get(Campaign, item.campaign_id)
    mine = me is not None and me in (item.reviewer_id, item.co_reviewer_id)
    # a delegate's row: the counts and sign-off are those of the reviewer they decide for
    acting = None if mine else eligibility.acting_for(session, me, item, utcnow())
    reviewer = acting or me
    counts = queries.inbox_counts(session, reviewer, campaign.id) if reviewer else None
    signed_off = bool(reviewer) and session.scalar(select(ReviewerSignoff.id).where(
        ReviewerSignoff.campaign_id == campaign.id, ReviewerSignoff.reviewer_id == reviewer)) is not None
    return render_template(
        "reviews/_decide_response.html", item=item, campaign=campaign, counts=counts, error=error,
        mine=mine or acting is not None, writable=campaign.status == "active", signed_off=signed_off,
        delegator=acting,
        comment_rule=((campaign.spec or {}).get("rules") or {}).get("comment_required", "on_revoke"),
        **_row_context(), **item_notes.row_notes(session, [item]),
    ), status


@bp.get("/reviews/items/<int:item_id>")
@login_required
def item(item_id: int):
    session = db()
    try:
        row = decisions.load_item_for(session, current_user, item_id)
    except NotFound:
        abort(404)
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
        with write() as session:
            item = decisions.decide(session, current_user, item_id, decision, comment=comment, expected_version=version)
            campaign_id = item.campaign_id
    except (NotFound, Forbidden, StaleItem, DecisionError) as exc:
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


def _refused(item_id: int, exc: Exception):
    """The answer to a decision or reassignment the service refused (nothing was changed): 404 for an item
    that is not the user's, 403, 409 with the item as it now is, or 400 with the reason on its row."""
    if isinstance(exc, NotFound):
        abort(404)
    if isinstance(exc, Forbidden):
        abort(403, str(exc))
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
    try:
        return decisions.load_item_for(session, current_user, item_id)
    except NotFound:
        abort(404)


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
        with write() as session:
            decisions.load_item_for(session, current_user, item_id)  # may see it: before reading the input
            target = _find_person(session, email)
            if target is None:
                raise DecisionError(f"Nobody in the directory has the e-mail {email.strip() or '(empty)'}.")
            row = decisions.reassign(session, current_user, item_id, target.id, reason, expected_version=version)
            campaign_id, name = row.campaign_id, target.display_name
    except (NotFound, Forbidden, StaleItem, DecisionError) as exc:
        return _refused(item_id, exc)
    if _htmx():
        return _moved_response(item_id, campaign_id, f"Reassigned to {name}.")
    flash(f"Reassigned to {name}.", "success")
    if current_user.identity_id and queries.is_my_campaign(db(), current_user.identity_id, campaign_id):
        return redirect(url_for("reviews.inbox", campaign=campaign_id))
    return redirect(url_for("reviews.campaign", campaign_id=campaign_id))


@bp.post("/reviews/campaigns/<int:campaign_id>/bulk")
@login_required
def bulk(campaign_id: int):
    session = db()
    me = current_user.identity_id
    if not queries.is_my_campaign(session, me, campaign_id):
        abort(404)
    filters = queries.InboxFilters.from_args(request.form)
    scope = request.form.get("scope", "unflagged")
    if scope == "unflagged":
        filters.risk = "unflagged" if filters.risk in (None, "unflagged") else filters.risk
        if filters.risk != "unflagged":
            abort(400, "Approve all not flagged cannot be combined with a risk filter.")
    elif scope != "filtered":
        abort(400, "Unknown selection.")
    decision = request.form.get("bulk_decision", "approve")
    comment = request.form.get("comment")
    try:
        with write() as session:
            ids = queries.selection_ids(session, me, campaign_id, filters)
            result = decisions.bulk_decide(session, current_user, campaign_id, ids, decision, comment=comment)
    except NotFound:
        abort(404)
    except Forbidden as exc:
        abort(403, str(exc))
    except DecisionError as exc:
        abort(400, str(exc))
    verb = {"approve": "Approved", "revoke": "Revoked", "abstain": "Abstained on"}.get(decision, "Decided")
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
        with write() as session:
            decisions.sign_off(session, current_user, campaign_id)
    except NotFound:
        abort(404)
    except Forbidden as exc:
        abort(403, str(exc))
    except DecisionError as exc:
        flash(str(exc), "warning")
        return redirect(url_for("reviews.inbox", campaign=campaign_id))
    flash("Signed off. Thank you: your review of this campaign is complete.", "success")
    return redirect(url_for("reviews.inbox", campaign=campaign_id))


# --- admin: campaigns and definitions ------------------------------------------------------------------


@bp.get("/campaigns")
@read_all_required
def campaigns():
    session = db()
    status = request.args.get("status") or None
    rows = queries.campaign_list(session, status=status if status in ("draft", "active", "closed", "cancelled") else None)
    show_archived = request.args.get("archived") == "1"
    stmt = select(CampaignDefinition).order_by(CampaignDefinition.name)
    if not show_archived:
        stmt = stmt.where(CampaignDefinition.archived_at.is_(None))
    definitions = session.scalars(stmt).all()
    archived = session.scalar(select(func.count()).select_from(CampaignDefinition)
                              .where(CampaignDefinition.archived_at.is_not(None)))
    return render_template("reviews/campaigns.html", rows=rows, definitions=definitions, status=status,
                           show_archived=show_archived, archived_count=archived,
                           launched_today=_launched_today(session, [d.id for d in definitions]))


def _launched_today(session, definition_ids: list[int]) -> dict[int, list[str]]:
    """{definition id: names of its campaigns created today}, for the warning before a second launch."""
    now = utcnow()
    out = {}
    for definition_id in definition_ids:
        names = [c.name for c in campaigns_service.launched_on(session, definition_id, now)]
        if names:
            out[definition_id] = names
    return out


@bp.get("/campaigns/<int:campaign_id>")
@read_all_required
def campaign(campaign_id: int):
    session = db()
    dash = queries.campaign_dashboard(session, campaign_id)
    if dash is None:
        abort(404)
    threshold = settings().escalation_warn_items
    heavy = notify.escalation_forecast(session, dash.campaign, threshold)
    closed = None
    if dash.campaign.summary and dash.campaign.status == "closed":

        closed = {"remediation": remediation.status_counts(session, campaign_id),
                  "exceptions": queries.exception_count(session, campaign_id)}
    return render_template("reviews/campaign.html", dash=dash, campaign=dash.campaign, closed=closed,
                           close_needs_reason=dash.percent < settings().close_reason_below_percent,
                           close_threshold=settings().close_reason_below_percent,
                           escalation_load=heavy, escalation_threshold=threshold,
                           can_remind=current_user.is_admin and dash.campaign.status == "active",
                           risk_labels=queries.RISK_LABELS, risk_classes=queries.RISK_CLASSES)


@bp.get("/campaigns/<int:campaign_id>/items")
@read_all_required
def campaign_items(campaign_id: int):
    """Every item of one campaign, whoever reviews it, filtered and keyset-paged (admins and auditors)."""
    session = db()
    campaign = session.get(Campaign, campaign_id) or abort(404)
    filters = queries.ItemFilters.from_args(request.args)
    try:
        rows, next_after = queries.campaign_items(session, campaign_id, filters, request.args.get("after"), PAGE_SIZE)
    except queries.BadCursor as exc:
        abort(400, str(exc))
    reviewers = queries.campaign_reviewers(session, campaign_id)
    names = dict(reviewers)
    return render_template(
        "reviews/campaign_items.html", campaign=campaign, filters=filters, rows=rows, next_after=next_after,
        reviewers=reviewers, reviewer_names=names, first_page=not request.args.get("after"),
        options=queries.filter_options(session, 0, campaign_id), no_reviewer=queries.NO_REVIEWER,
        risk_labels=queries.RISK_LABELS, risk_classes=queries.RISK_CLASSES)


@bp.get("/campaigns/<int:campaign_id>/items.csv")
@read_all_required
def campaign_items_csv(campaign_id: int):
    """The filtered items as CSV, streamed in keyset batches; each export is audited with its filters."""
    filters = queries.ItemFilters.from_args(request.args)
    with write() as session:
        if session.get(Campaign, campaign_id) is None:
            abort(404)
        items_export.record_export(session, current_user.email, campaign_id, filters)
    name = f"campaign-{campaign_id}-items{'-filtered' if filters.active else ''}.csv"
    return Response(items_export.stream_csv(db(), state().factory, campaign_id, filters), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"})


@bp.post("/campaigns/<int:campaign_id>/close")
@admin_required
def close(campaign_id: int):

    reason = (request.form.get("reason") or "").strip()
    try:
        with write() as session:
            dash = queries.campaign_dashboard(session, campaign_id)
            if dash is None:
                abort(404)
            threshold = settings().close_reason_below_percent
            if dash.campaign.status == "active" and dash.percent < threshold and not reason:
                raise campaigns_service.CampaignError(
                    f"Only {dash.percent}% of the items are decided (below {threshold}%): say why the campaign is "
                    "closed now; the reason is kept in the audit trail.")
            row = campaigns_service.close(session, campaign_id, current_user.email, reason=reason or None)
            name = row.name
    except campaigns_service.CampaignError as exc:
        flash(str(exc), "danger")
        return redirect(url_for("reviews.campaign", campaign_id=campaign_id))
    flash(f"Closed {name}: outcomes recorded, revocations queued for remediation.", "success")
    return redirect(url_for("reviews.campaign", campaign_id=campaign_id))


@bp.post("/campaigns/<int:campaign_id>/remind")
@admin_required
def remind(campaign_id: int):

    try:
        with write() as session:
            if session.get(Campaign, campaign_id) is None:
                abort(404)
            sent = notify.remind_now(session, settings(), campaign_id, current_user.email)
    except notify.NotifyError as exc:
        flash(str(exc), "danger")
        return redirect(url_for("reviews.campaign", campaign_id=campaign_id))
    flash(f"Sent {sent} reminder{'s' if sent != 1 else ''}." if sent else "Nobody needed a reminder.", "success" if sent else "info")
    return redirect(url_for("reviews.campaign", campaign_id=campaign_id))


@bp.post("/campaigns/<int:campaign_id>/reassign")
@admin_required
def reassign_reviewer(campaign_id: int):
    raw_from = request.form.get("from_reviewer", "")
    from_id = _int(raw_from)
    try:
        with write() as session:
            if session.get(Campaign, campaign_id) is None:
                abort(404)
            target = _find_person(session, request.form.get("to", ""))
            if target is None:
                raise DecisionError(f"Nobody in the directory has the e-mail {request.form.get('to', '').strip() or '(empty)'}.")
            if from_id is None and raw_from != "unroutable":
                raise DecisionError("Choose whose items to move.")
            moved = decisions.reassign_reviewer(session, current_user, campaign_id, from_id, target.id,
                                                request.form.get("reason", ""))
            name = target.display_name
    except (DecisionError, NotFound) as exc:
        flash(str(exc), "danger")
        return redirect(url_for("reviews.campaign", campaign_id=campaign_id))
    except Forbidden as exc:
        abort(403, str(exc))
    flash(f"Moved {moved:,} open item{'s' if moved != 1 else ''} to {name}.", "success")
    return redirect(url_for("reviews.campaign", campaign_id=campaign_id))


# definitions --------------------------------------------------------------------------------------------

LIST_FIELDS = ("resource_types", "resource_names", "entitlements")
BOOL_FIELDS = ("privileged_only", "include_orphaned", "include_service_accounts", "include_inherited", "delta")


def _split(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").replace("\n", ",").split(",") if v.strip()]


def _form_number(raw: str) -> Any:
    """A whole number typed in the form, or the text itself (the validator reports it with its field)."""
    digits = raw[1:] if raw.startswith("-") else raw
    if digits.isascii() and digits.isdigit() and len(digits) <= 18:
        return int(raw)
    return raw


def spec_from_form(form: Any) -> dict[str, Any]:
    """The definition described by the form's fields (validated by definitions.parse_definition)."""
    stages = []
    for n in (1, 2, 3):
        kind = (form.get(f"stage{n}") or "").strip()
        if not kind:
            continue
        stages.append({"reviewer": kind, "identity": (form.get(f"stage{n}_identity") or "").strip() or None})

    def num(name: str, default: int) -> Any:
        raw = (form.get(name) or "").strip()
        if not raw:
            return default
        return _form_number(raw)

    # empty: the default reminders fitted to the duration (the form shows them empty when they are that);
    # "none": no reminders
    raw_reminders = (form.get("reminders_days_before_due") or "").strip()
    reminders = ([] if raw_reminders.lower() == "none" else [_form_number(r) for r in _split(raw_reminders)])
    return {
        "name": (form.get("name") or "").strip() or None,
        "description": (form.get("description") or "").strip() or None,
        "scope": {
            "sources": form.getlist("sources") if hasattr(form, "getlist") else _split(form.get("sources")),
            **{f: _split(form.get(f)) for f in LIST_FIELDS},
            **{f: form.get(f) in ("on", "true", "1", "y") for f in BOOL_FIELDS},
            "identity": {"department": _split(form.get("department")), "status": form.getlist("status") if hasattr(form, "getlist") else [],
                         "kind": form.getlist("kind") if hasattr(form, "getlist") else []},
        },
        "stages": stages or [{"reviewer": "manager", "identity": None}],
        "fallback_reviewer": (form.get("fallback_reviewer") or "").strip() or None,
        "self_review": form.get("self_review") or "reassign",
        "timing": {
            "duration_days": num("duration_days", 14),
            **({"reminders_days_before_due": reminders} if raw_reminders else {}),
            "escalate_after_days_overdue": num("escalate_after_days_overdue", 2),
            "no_response": form.get("no_response") or "keep",
        },
        "rules": {"comment_required": form.get("comment_required") or "on_revoke",
                  "remediation": form.get("remediation") or "manual"},
        "risk": {"dormant_days": num("dormant_days", 90), "stale_key_days": num("stale_key_days", 90)},
        "controls": _split(form.get("controls")),
        "schedule": (form.get("schedule") or "").strip() or None,
    }


def _submitted_spec() -> tuple[str, Any]:
    """("yaml", text) or ("form", dict) from the definition form."""
    if request.form.get("mode") == "yaml":
        return "yaml", request.form.get("yaml", "")
    return "form", spec_from_form(request.form)


def _definition_page(definition: CampaignDefinition | None, spec: dict[str, Any] | None, yaml_text: str,
                     mode: str, error: Any = None, status: int = 200):

    session = db()
    # suggestions (a datalist each): the resource types synced, and the people who can be named reviewers
    resource_types = session.scalars(select(Resource.type).distinct().order_by(Resource.type).limit(200)).all()
    people = session.execute(
        select(Identity.email, Identity.display_name).where(Identity.email.is_not(None), Identity.status == "active",
                                                            Identity.kind == "human")
        .order_by(Identity.display_name).limit(1000)).all()
    launched_today = _launched_today(session, [definition.id]).get(definition.id, []) if definition else []
    return render_template(
        "reviews/definition_form.html", definition=definition, spec=spec or defs.DEFAULTS, yaml_text=yaml_text,
        mode=mode, error=error, sources=session.scalars(select(Source.name).order_by(Source.name)).all(),
        resource_types=resource_types, people=people, launched_today=launched_today,
        default_reminders=list(DEFAULT_REMINDERS),
    ), status


@bp.get("/campaigns/definitions/new")
@admin_required
def definition_new():

    spec = {**defs.DEFAULTS, "name": ""}
    return _definition_page(None, spec, _example_yaml(), request.args.get("mode", "form"))


def _example_yaml() -> str:
    return (
        "name: Quarterly manager review\n"
        "description: Every person's access, certified by their manager\n"
        "scope:\n  sources: []\n  privileged_only: false\n  include_orphaned: true\n"
        "stages:\n  - reviewer: manager\n"
        "fallback_reviewer: null\n"
        "timing:\n  duration_days: 14\n  reminders_days_before_due: [7, 2]\n  escalate_after_days_overdue: 2\n"
        "  no_response: keep\n"
        "rules:\n  comment_required: on_revoke\n  remediation: manual\n"
        'controls: ["SOC 2 CC6.2"]\n'
        "schedule: null\n"
    )


@bp.post("/campaigns/definitions/new")
@admin_required
def definition_create():

    mode, submitted = _submitted_spec()
    try:
        with write() as session:
            definition = defs.create_definition(session, submitted, current_user.email, owner_user_id=current_user.id)
            definition_id, name = definition.id, definition.name
    except defs.DefinitionError as exc:
        db().rollback()
        return _definition_page(None, submitted if mode == "form" else None,
                                submitted if mode == "yaml" else request.form.get("yaml", ""), mode, exc, 400)
    flash(f"Saved the definition {name}. Preview it, then launch.", "success")
    return redirect(url_for("reviews.definition_edit", definition_id=definition_id))


@bp.get("/campaigns/definitions/<int:definition_id>")
@admin_required
def definition_edit(definition_id: int):

    definition = db().get(CampaignDefinition, definition_id) or abort(404)
    text = definition.source_yaml or defs.dump_yaml(definition.spec)
    return _definition_page(definition, definition.spec, text, request.args.get("mode", "form"))


@bp.post("/campaigns/definitions/<int:definition_id>")
@admin_required
def definition_update(definition_id: int):

    definition = db().get(CampaignDefinition, definition_id) or abort(404)
    mode, submitted = _submitted_spec()
    try:
        with write() as session:
            defs.update_definition(session, definition_id, submitted, current_user.email)
    except defs.DefinitionError as exc:
        db().rollback()
        definition = db().get(CampaignDefinition, definition_id)
        return _definition_page(definition, submitted if mode == "form" else definition.spec,
                                submitted if mode == "yaml" else request.form.get("yaml", ""), mode, exc, 400)
    flash("Saved.", "success")
    return redirect(url_for("reviews.definition_edit", definition_id=definition_id))


@bp.post("/campaigns/definitions/preview")
@admin_required
def definition_preview():
    """The live preview (htmx): validate what is in the form and show who would review what."""
    mode, submitted = _submitted_spec()
    if mode == "form" and not submitted.get("name"):
        submitted["name"] = "(not named yet)"  # no "name: is required" before anything is typed; Save refuses
    session = db()
    try:
        spec = defs.parse_definition(submitted)
        defs.check_references(session, spec)
        preview = campaigns_service.preview(session, spec)
    except defs.DefinitionError as exc:
        session.rollback()
        return render_template("reviews/_preview.html", error=exc, preview=None)
    except campaigns_service.CampaignError as exc:
        session.rollback()
        return render_template("reviews/_preview.html", error=exc, preview=None)
    session.rollback()
    return render_template("reviews/_preview.html", error=None, preview=preview, spec=spec,
                           risk_labels=queries.RISK_LABELS, risk_classes=queries.RISK_CLASSES)


@bp.post("/campaigns/definitions/<int:definition_id>/launch")
@admin_required
def launch(definition_id: int):

    name = (request.form.get("name") or "").strip() or None
    try:
        with write() as session:
            if session.get(CampaignDefinition, definition_id) is None:
                abort(404)
            today = campaigns_service.launched_on(session, definition_id, utcnow())
            if today and request.form.get("again") != "1":
                raise campaigns_service.CampaignError(
                    f"Already launched today as {', '.join(c.name for c in today)}. Nothing was launched; "
                    "use \"Launch again today\" to start another campaign.")
            draft = campaigns_service.create_campaign(session, definition_id, current_user.email, name=name)
            launched = campaigns_service.launch(session, draft.id, current_user.email)
            campaign_id, campaign_name = launched.id, launched.name
            items = (launched.population or {}).get("items")
    except campaigns_service.CampaignError as exc:
        flash(str(exc), "danger")
        return redirect(url_for("reviews.definition_edit", definition_id=definition_id))
    flash(f"Launched {campaign_name}" + (f" with {items:,} items." if isinstance(items, int) else "."), "success")
    return redirect(url_for("reviews.campaign", campaign_id=campaign_id))


@bp.post("/campaigns/definitions/<int:definition_id>/archive")
@admin_required
def definition_archive(definition_id: int):
    """Archive a definition: hidden from the list, not launchable (nor by its schedule); campaigns kept."""
    return _set_archived(definition_id, True)


@bp.post("/campaigns/definitions/<int:definition_id>/unarchive")
@admin_required
def definition_unarchive(definition_id: int):
    return _set_archived(definition_id, False)


def _set_archived(definition_id: int, archived: bool):

    with write() as session:
        if session.get(CampaignDefinition, definition_id) is None:
            abort(404)
        definition = campaigns_service.set_archived(session, definition_id, archived, current_user.email)
        name = definition.name
    if archived:
        flash(f"Archived {name}: hidden from the list and not launchable; its campaigns are kept.", "success")
        return redirect(url_for("reviews.campaigns"))
    flash(f"Unarchived {name}.", "success")
    return redirect(url_for("reviews.definition_edit", definition_id=definition_id))
