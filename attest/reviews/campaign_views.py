"""Campaign pages of the reviews blueprint (admins; auditors read): the list of campaigns and definitions,
a campaign's dashboard (progress per reviewer, remind now, move a reviewer's items, close), every item of a
campaign, filtered and keyset-paged, and its CSV export.

The blueprint is attest/reviews/views.py's `bp` (its endpoints are `reviews.*`); the definition pages are
in definition_views.py, the reviewer's inbox in views.py.
"""

from __future__ import annotations

from flask import Response, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import func, select

from attest.auth.permissions import admin_required, read_all_required
from attest.reviews import campaigns as campaigns_service
from attest.reviews import decisions, items_export, notify, queries, remediation
from attest.reviews.decisions import DecisionError, Forbidden, NotFound
from attest.reviews.definition_views import launched_today
from attest.reviews.models import CAMPAIGN_STATUSES, Campaign, CampaignDefinition, CampaignStatus
from attest.reviews.views import PAGE_SIZE, _int, bp, person_named
from attest.web import db, settings, state, write


@bp.get("/campaigns")
@read_all_required
def campaigns():
    session = db()
    status = request.args.get("status") or None
    rows = queries.campaign_list(session, status=status if status in CAMPAIGN_STATUSES else None)
    show_archived = request.args.get("archived") == "1"
    stmt = select(CampaignDefinition).order_by(CampaignDefinition.name)
    if not show_archived:
        stmt = stmt.where(CampaignDefinition.archived_at.is_(None))
    definitions = session.scalars(stmt).all()
    archived = session.scalar(select(func.count()).select_from(CampaignDefinition)
                              .where(CampaignDefinition.archived_at.is_not(None)))
    return render_template("reviews/campaigns.html", rows=rows, definitions=definitions, status=status,
                           show_archived=show_archived, archived_count=archived,
                           launched_today=launched_today(session, [d.id for d in definitions]))



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
    if dash.campaign.summary and dash.campaign.status == CampaignStatus.CLOSED:

        closed = {"remediation": remediation.status_counts(session, campaign_id),
                  "exceptions": queries.exception_count(session, campaign_id)}
    return render_template("reviews/campaign.html", dash=dash, campaign=dash.campaign, closed=closed,
                           close_needs_reason=dash.percent < settings().close_reason_below_percent,
                           close_threshold=settings().close_reason_below_percent,
                           escalation_load=heavy, escalation_threshold=threshold,
                           can_remind=current_user.is_admin and dash.campaign.status == CampaignStatus.ACTIVE,
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
            if dash.campaign.status == CampaignStatus.ACTIVE and dash.percent < threshold and not reason:
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
            target = person_named(session, request.form.get("to", ""))
            if from_id is None and raw_from != "unroutable":
                raise DecisionError("Choose whose items to move.")
            moved = decisions.reassign_reviewer(session, current_user, campaign_id, from_id, target.id,
                                                request.form.get("reason", ""))
            name = target.display_name
    except (DecisionError, NotFound) as exc:  # NotFound: the campaign went meanwhile, said on its page
        flash(str(exc), "danger")
        return redirect(url_for("reviews.campaign", campaign_id=campaign_id))
    except Forbidden as exc:
        abort(403, str(exc))
    flash(f"Moved {moved:,} open item{'s' if moved != 1 else ''} to {name}.", "success")
    return redirect(url_for("reviews.campaign", campaign_id=campaign_id))

