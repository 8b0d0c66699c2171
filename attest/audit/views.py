"""Auditor pages: the audit log, remediation status (the manual work list), access on a past date,
evidence downloads.

Admins and auditors read all of it; only admins change anything (mark a manual task done, undo a revoke).
"""

from __future__ import annotations

import io
import os
import tempfile
from datetime import UTC, datetime, timedelta

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    send_file,
    url_for,
)
from flask_login import current_user
from sqlalchemy import select

from attest.audit import queries
from attest.auth.permissions import admin_required, read_all_required
from attest.entitlements import history as access_history
from attest.entitlements.models import Identity
from attest.inputs import parse_int
from attest.reviews import remediation
from attest.reviews.models import REMEDIATION_STATUSES, Campaign
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
        return remediation.status_counts(db()).get("reappeared", 0)

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
    if mode and mode not in ("automatic", "manual"):
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
    campaigns = session.execute(select(Campaign.id, Campaign.name).where(Campaign.status != "draft")
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
    from attest.reviews import flagged as flagged_service

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
    from attest.reviews import flagged as flagged_service

    campaign_id = _int_arg("campaign")
    if campaign_id is not None and db().get(Campaign, campaign_id) is None:
        abort(404)
    buf = io.StringIO()
    flagged_service.write_flagged_csv(db(), buf, campaign_id)
    name = f"flagged-campaign-{campaign_id}.csv" if campaign_id else "flagged.csv"
    return Response(buf.getvalue(), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


@bp.post("/remediations/<int:remediation_id>/done")
@admin_required
def mark_done(remediation_id: int):
    note = request.form.get("note", "")
    try:
        with write() as session:
            remediation.mark_done(session, remediation_id, current_user.email, note)
    except remediation.RemediationError as exc:
        flash(str(exc), "danger")
        return redirect(request.referrer or url_for("audit.remediations")), 303
    flash(f"Remediation {remediation_id} marked done; the next sync of its source verifies it.", "success")
    return redirect(url_for("audit.remediations", needs="human")), 303


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
    rows = db().execute(select(Campaign).where(Campaign.status != "draft").order_by(Campaign.id.desc()).limit(500)
                        ).scalars().all()
    from attest.audit.evidence import EvidenceError, key_id, load_signing_key, public_key_pem

    try:
        pub = load_signing_key(settings()).public_key()
        key = {"id": key_id(pub), "pem": public_key_pem(pub)}
    except EvidenceError as exc:
        key = {"error": str(exc)}
    return render_template("audit/evidence.html", campaigns=rows, key=key)


@bp.get("/evidence/public-key")
@read_all_required
def evidence_public_key():
    """The public key that verifies this instance's bundles and audit checkpoints (PEM), for auditors to pin."""
    from attest.audit.evidence import EvidenceError, key_fingerprint, load_signing_key, public_key_pem

    try:
        pub = load_signing_key(settings()).public_key()
    except EvidenceError as exc:
        abort(404, str(exc))
    return Response(public_key_pem(pub), mimetype="application/x-pem-file",
                    headers={"Content-Disposition": 'attachment; filename="attest-evidence-key.pub.pem"',
                             "X-Key-Fingerprint": key_fingerprint(pub)})


@bp.get("/campaigns/<int:campaign_id>/evidence.zip")
@read_all_required
def evidence_download(campaign_id: int):
    from attest.audit.evidence import EvidenceError, export_bundle

    campaign = db().get(Campaign, campaign_id) or abort(404)
    actor, download_name = current_user.email, f"evidence-{campaign.id}-{_slug(campaign.name)}.zip"
    db().rollback()  # the export reads (and records its audit event) in sessions of its own
    directory = tempfile.mkdtemp(prefix="attest-evidence-")
    path = os.path.join(directory, f"evidence-campaign-{campaign_id}.zip")
    try:
        export_bundle(state().factory, settings(), campaign_id, path, actor=actor)
    except EvidenceError as exc:
        os.rmdir(directory)
        flash(str(exc), "danger")
        return redirect(url_for("audit.evidence"))
    response = send_file(path, mimetype="application/zip", as_attachment=True,
                         download_name=download_name, max_age=0)

    def cleanup() -> None:
        try:
            os.unlink(path)
            os.rmdir(directory)
        except OSError:
            current_app.logger.warning("could not remove %s", path)

    response.call_on_close(cleanup)
    return response


def _slug(name: str) -> str:
    out = "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")
    while "--" in out:
        out = out.replace("--", "-")
    return out[:60] or "campaign"
