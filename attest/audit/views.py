"""Auditor pages: the audit log, remediation status (the manual work list), access on a past date,
evidence downloads.

Admins and auditors read all of it; only admins change anything (mark a manual task done, undo a revoke).
"""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

from flask import (
    Blueprint,
    Response,
    abort,
    flash,
    redirect,
    render_template,
    request,
    send_file,
    url_for,
)
from flask_login import current_user
from sqlalchemy import select

from attest.audit import export_jobs, queries
from attest.audit.evidence import EvidenceError, key_fingerprint, key_id, load_signing_key, public_key_pem
from attest.auth.permissions import admin_required, read_all_required
from attest.entitlements import history as access_history
from attest.entitlements.models import Identity
from attest.inputs import parse_int
from attest.jobs import SCHEDULER_SEEN_WITHIN, scheduler_last_seen
from attest.reviews import flagged as flagged_service
from attest.reviews import remediation
from attest.reviews.models import (
    REMEDIATION_MODES,
    REMEDIATION_STATUSES,
    Campaign,
    CampaignStatus,
    RemediationStatus,
)
from attest.web import db, settings, state, write

bp = Blueprint("audit", __name__)

NAV = [("audit.remediations", "Remediation"), ("audit.evidence", "Evidence"), ("audit.log", "Audit log"),
       ("audit.history", "Access history")]


@bp.record_once
def _add_nav(setup_state) -> None:
    setup_state.app.extensions.setdefault("attest_nav", []).extend(NAV)


@bp.app_context_processor
def _remediation_alerts() -> dict:
    """`reappeared_count()` for any page (the home dashboard includes `audit/_dashboard_alert.html`)."""

    def reappeared_count() -> int:
        if not getattr(current_user, "is_authenticated", False) or not current_user.can_read_all:
            return 0
        return remediation.status_counts(db()).get(RemediationStatus.REAPPEARED, 0)

    return {"reappeared_count": reappeared_count}


def _int_arg(name: str) -> int | None:
    value = request.args.get(name, "").strip()
    if not value:
        return None
    number = parse_int(value, low=0)
    if number is None:
        abort(400, f"{name} must be a whole number")
    return number


def _date_arg(name: str, end: bool = False) -> datetime | None:
    """A day filter: its start (or, with `end`, the next day's start) in the organisation's time zone."""
    value = request.args.get(name, "").strip()
    if not value:
        return None
    try:
        return access_history.day_bounds(name, value, settings().zone)[1 if end else 0]
    except access_history.AsOfError as exc:
        abort(400, str(exc))


# --- audit log ------------------------------------------------------------------------------------------


@bp.get("/audit")
@read_all_required
def log():
    filters = queries.EventFilters(
        actor=request.args.get("actor", "").strip()[:320], action=request.args.get("action", "").strip()[:100],
        object_type=request.args.get("object_type", "").strip()[:50],
        object_id=request.args.get("object_id", "").strip()[:100], campaign_id=_int_arg("campaign"),
        since=_date_arg("since"), until=_date_arg("until", end=True),
    )
    session = db()
    page = queries.search_events(session, filters, after=_int_arg("after"))
    return render_template("audit/log.html", page=page, filters=filters, links={e.id: queries.event_link(e)
                                                                                for e in page.rows},
                           object_types=queries.object_types(session))


# --- remediation ------------------------------------------------------------------------------------------


@bp.get("/remediations")
@read_all_required
def remediations():
    status = request.args.get("status") or None
    if status and status not in REMEDIATION_STATUSES:
        abort(400, f"status must be one of {', '.join(REMEDIATION_STATUSES)}")
    mode = request.args.get("mode") or None
    if mode and mode not in REMEDIATION_MODES:
        abort(400, "mode must be automatic or manual")
    campaign_id = _int_arg("campaign")
    session = db()
    one = _int_arg("id")
    if one is not None:
        rows, next_after = remediation.list_remediations(session, after=one - 1, limit=1)
        rows = [r for r in rows if r.id == one]
    else:
        rows, next_after = remediation.list_remediations(
            session, campaign_id, status=status, mode=mode, needs_human=request.args.get("needs") == "human",
            after=_int_arg("after"))
    campaigns = session.execute(select(Campaign.id, Campaign.name).where(Campaign.status != CampaignStatus.DRAFT)
                                .order_by(Campaign.id.desc()).limit(200)).all()
    undo_until = datetime.now(UTC) - timedelta(days=settings().remediation_undo_days)
    return render_template("audit/remediations.html", rows=rows, next_after=next_after,
                           counts=remediation.status_counts(session, campaign_id), campaigns=campaigns,
                           statuses=REMEDIATION_STATUSES, undo_until=undo_until, campaign_id=campaign_id)


@bp.get("/remediations.csv")
@read_all_required
def remediations_csv():
    campaign_id = _int_arg("campaign")
    every = request.args.get("all") == "1"  # every remediation with its note; else the open work list
    buf = io.StringIO()
    remediation.write_remediations_csv(db(), buf, campaign_id, needs_human=not every)
    stem = "remediations" if every else "manual-remediation"
    name = f"{stem}-campaign-{campaign_id}.csv" if campaign_id else f"{stem}.csv"
    return Response(buf.getvalue(), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


# --- flagged items (no-response outcome "flag"): who must act -------------------------------------------------


@bp.get("/flagged")
@read_all_required
def flagged():
    campaign_id = _int_arg("campaign")
    session = db()
    campaign = None
    if campaign_id is not None:
        campaign = session.get(Campaign, campaign_id) or abort(404)
    rows, next_after = flagged_service.list_flagged(session, campaign_id, after=_int_arg("after"))
    return render_template("audit/flagged.html", rows=rows, next_after=next_after, campaign=campaign,
                           campaign_id=campaign_id, total=flagged_service.flagged_count(session, campaign_id))


@bp.get("/flagged.csv")
@read_all_required
def flagged_csv():
    campaign_id = _int_arg("campaign")
    if campaign_id is not None and db().get(Campaign, campaign_id) is None:
        abort(404)
    buf = io.StringIO()
    flagged_service.write_flagged_csv(db(), buf, campaign_id)
    name = f"flagged-campaign-{campaign_id}.csv" if campaign_id else "flagged.csv"
    return Response(buf.getvalue(), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


def _remediations_again(**fallback: str):
    """The remediation list with the filters it was showing (the form's hidden `back_*` fields), so an
    action keeps the list the admin was working through; `fallback` when it had none."""
    kept = {k: v for k in ("campaign", "status", "mode", "needs")
            if (v := (request.form.get(f"back_{k}") or "").strip()[:50])}
    return redirect(url_for("audit.remediations", **(kept or fallback))), 303


@bp.post("/remediations/<int:remediation_id>/done")
@admin_required
def mark_done(remediation_id: int):
    note = request.form.get("note", "")
    try:
        with write() as session:
            remediation.mark_done(session, remediation_id, current_user.email, note)
    except remediation.RemediationError as exc:
        flash(str(exc), "danger")
        return _remediations_again(needs="human")
    flash(f"Remediation {remediation_id} marked done; the next sync of its source verifies it.", "success")
    return _remediations_again(needs="human")


@bp.post("/remediations/<int:remediation_id>/undo")
@admin_required
def undo(remediation_id: int):
    try:
        remediation.undo(state().factory, settings(), remediation_id, current_user.email)
    except remediation.UndoError as exc:
        flash(str(exc), "danger")
        return redirect(url_for("audit.remediations", id=remediation_id)), 303
    flash(f"Remediation {remediation_id} undone: the access was granted again.", "success")
    return redirect(url_for("audit.remediations", id=remediation_id)), 303


# --- access on a past date ----------------------------------------------------------------------------------


@bp.get("/history")
@read_all_required
def history():
    q = request.args.get("q", "").strip()[:200]
    try:
        as_of = access_history.resolve_as_of(request.args, settings().zone)
    except access_history.AsOfError as exc:
        abort(400, str(exc))
    people = []
    if q:
        like = f"%{q.lower()}%"
        people = db().scalars(
            select(Identity).where((Identity.email_normalized.like(like)) | (Identity.display_name.ilike(like))
                                   | (Identity.employee_id.ilike(like)))
            .order_by(Identity.display_name, Identity.id).limit(50)).all()
        if len(people) == 1 and as_of is not None:
            return redirect(url_for("entitlements.identity_detail", identity_id=people[0].id, **as_of.query))
    return render_template("audit/history.html", q=q, as_of=as_of, people=people)


# --- evidence -----------------------------------------------------------------------------------------------


@bp.get("/evidence")
@read_all_required
def evidence():
    session = db()
    rows = session.execute(select(Campaign).where(Campaign.status != CampaignStatus.DRAFT).order_by(Campaign.id.desc()).limit(500)
                           ).scalars().all()
    exports = export_jobs.recent_exports(session)
    latest: dict[int, object] = {}
    for row in exports:
        latest.setdefault(row.campaign_id, row)
    try:
        pub = load_signing_key(settings()).public_key()
        key = {"id": key_id(pub), "pem": public_key_pem(pub)}
    except EvidenceError as exc:
        key = {"error": str(exc)}
    names = dict(session.execute(select(Campaign.id, Campaign.name).where(
        Campaign.id.in_({r.campaign_id for r in exports}))).all()) if exports else {}
    return render_template("audit/evidence.html", campaigns=rows, key=key, exports=exports, latest=latest,
                           names=names, available=export_jobs.is_available, scheduler=_scheduler_state(),
                           retention_days=settings().evidence_retention_days)


def _scheduler_state() -> dict:
    """Whether a scheduler process has run lately: exports wait for one (`attest scheduler`)."""
    seen = scheduler_last_seen(db())
    return {"last_seen": seen, "alive": seen is not None and seen >= datetime.now(UTC) - SCHEDULER_SEEN_WITHIN,
            "within_minutes": int(SCHEDULER_SEEN_WITHIN.total_seconds() // 60)}


@bp.get("/evidence/public-key")
@read_all_required
def evidence_public_key():
    """The public key that verifies this instance's bundles and audit checkpoints (PEM), for auditors to pin."""
    try:
        pub = load_signing_key(settings()).public_key()
    except EvidenceError as exc:
        abort(404, str(exc))
    return Response(public_key_pem(pub), mimetype="application/x-pem-file",
                    headers={"Content-Disposition": 'attachment; filename="attest-evidence-key.pub.pem"',
                             "X-Key-Fingerprint": key_fingerprint(pub)})


@bp.post("/campaigns/<int:campaign_id>/evidence")
@read_all_required
def evidence_export_start(campaign_id: int):
    """Ask for a campaign's evidence bundle: queued for the scheduler, never built in the request."""
    try:
        with write() as session:
            asked = export_jobs.request_export(session, campaign_id, current_user.email)
            if asked is None:
                abort(404)
            row, created = asked
            export_id = row.id
    except export_jobs.ExportRequestError as exc:
        flash(str(exc), "danger")
        return redirect(url_for("audit.evidence")), 303
    if not created:
        flash("An export of this campaign is already under way; here it is.", "info")
    return redirect(url_for("audit.evidence_export", export_id=export_id)), 303


def _export_or_404(export_id: int):
    return export_jobs.get_export(db(), export_id) or abort(404)


def _export_context(row) -> dict:
    session = db()
    campaign = session.get(Campaign, row.campaign_id)
    percent = None
    if row.items_total:
        percent = min(100, int(100 * (row.items_done or 0) / row.items_total))
    return {"row": row, "campaign": campaign, "percent": percent, "available": export_jobs.is_available(row),
            "ahead": export_jobs.queue_position(session, row), "scheduler": _scheduler_state(),
            "phases": EXPORT_PHASES}


EXPORT_PHASES = {
    "starting": "Starting", "items.csv": "Writing items.csv", "items.xlsx": "Writing items.xlsx",
    "exclusions": "Writing exclusions and remediations", "audit": "Writing the audit events",
    "chain": "Checking the audit chain", "report": "Writing the PDF report", "signing": "Signing the manifest",
    "done": "Done",
}


@bp.get("/evidence/exports/<int:export_id>")
@read_all_required
def evidence_export(export_id: int):
    row = _export_or_404(export_id)
    return render_template("audit/evidence_export.html", **_export_context(row))


@bp.get("/evidence/exports/<int:export_id>/status")
@read_all_required
def evidence_export_status(export_id: int):
    """The progress fragment the export page polls (htmx, every 2 s while queued or running)."""
    row = _export_or_404(export_id)
    return render_template("audit/_evidence_export_status.html", **_export_context(row))


@bp.get("/evidence/exports/<int:export_id>/download")
@read_all_required
def evidence_export_download(export_id: int):
    """The finished bundle, streamed from the instance folder (never read into memory); each download audited."""
    row = _export_or_404(export_id)
    path = export_jobs.bundle_path(settings(), row)
    if path is None:
        flash("This bundle is not available (not finished yet, failed, or removed after its retention period): "
              "prepare a new one.", "warning")
        return redirect(url_for("audit.evidence_export", export_id=row.id)), 303
    campaign = db().get(Campaign, row.campaign_id)
    download_name = f"evidence-{row.campaign_id}-{_slug(campaign.name if campaign else '')}.zip"
    with write() as session:
        export_jobs.record_download(session, row, current_user.email)
    return send_file(path, mimetype="application/zip", as_attachment=True, download_name=download_name,
                     max_age=0, etag=row.sha256 or True)


@bp.get("/campaigns/<int:campaign_id>/evidence.zip")
@read_all_required
def evidence_download(campaign_id: int):
    """The old download link: the campaign's latest finished bundle, or the evidence page to prepare one."""
    session = db()
    session.get(Campaign, campaign_id) or abort(404)
    for row in export_jobs.recent_exports(session, limit=200):
        if row.campaign_id == campaign_id and export_jobs.is_available(row):
            return redirect(url_for("audit.evidence_export_download", export_id=row.id)), 303
    flash("Evidence bundles are prepared in the background: use Prepare evidence, then download it when ready.",
          "info")
    return redirect(url_for("audit.evidence", _anchor=f"campaign-{campaign_id}")), 303


def _slug(name: str) -> str:
    out = "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")
    while "--" in out:
        out = out.replace("--", "-")
    return out[:60] or "campaign"
