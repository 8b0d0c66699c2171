"""Pages for sources, people, resources and findings (orphaned accounts, terminated with access).

Admins and auditors read these; only admins change anything (manual account links).
"""

from __future__ import annotations

from datetime import datetime
from typing import TypeVar

from flask import Blueprint, abort, flash, make_response, redirect, render_template, request, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from wtforms import IntegerField, StringField
from wtforms.validators import DataRequired, NumberRange, Optional

from attest.auth.permissions import admin_required, read_all_required
from attest.connectors import registry
from attest.connectors.managed import managed_elsewhere
from attest.db import utcnow
from attest.entitlements import correlation, history, queries
from attest.entitlements import sources as sources_service
from attest.entitlements.models import Account, Identity, Resource, RunStatus, Source, SyncRun
from attest.entitlements.sources import secret_names as read_secret_names
from attest.inputs import MAX_ID, parse_int
from attest.jobs import SCHEDULER_SEEN_WITHIN, JobLease, scheduler_last_seen
from attest.schedules import cron_trigger
from attest.trail.chain import record as audit_record
from attest.web import db, settings, write

bp = Blueprint("entitlements", __name__)


T = TypeVar("T")


def as_of_arg() -> history.AsOf | None:
    """The moment a page is asked about (`on=DAY`, `at=DAY|TIMESTAMP`), or None for now; 400 when unreadable."""
    try:
        return history.resolve_as_of(request.args, settings().zone)
    except history.AsOfError as exc:
        abort(400, str(exc))


@bp.app_template_filter("instant")
def instant_filter(value: datetime | None) -> str | None:
    """An exact moment as a link's `at=` value: `url_for(..., at=campaign.launched_at|instant)`."""
    return history.instant_param(value) if value is not None else None


@bp.app_template_filter("run_phases")
def run_phases_filter(run) -> list[tuple[str, float]]:
    """A sync run's per-phase seconds in the order the phases run (`sources.run_phases`)."""
    return sources_service.run_phases(run)


def _int_arg(name: str) -> int | None:
    return parse_int(request.args.get(name, ""))


def _page(query, *args, **kwargs):
    """A keyset-paged query; 400 for an `after=` link Attest did not make."""
    try:
        return query(*args, **kwargs)
    except queries.BadCursor as exc:
        abort(400, str(exc))


@bp.get("/sources")
@read_all_required
def sources():
    session = db()
    counts = queries.stats(session)
    last_runs = {
        run.source_id: run
        for run in session.scalars(
            select(SyncRun).where(SyncRun.id.in_(select(func.max(SyncRun.id)).group_by(SyncRun.source_id)))
        )
    }
    rows = session.scalars(select(Source).order_by(Source.name)).all()
    return render_template("entitlements/sources.html", sources=rows, counts={c["source"]: c for c in counts},
                           last_runs=last_runs)


@bp.get("/sources/<int:source_id>")
@read_all_required
def source_detail(source_id: int):
    session = db()
    source = session.get(Source, source_id) or abort(404)
    secret_names, secrets_error = read_secret_names(settings(), source.secrets_encrypted)
    counts = next((c for c in queries.stats(session) if c["source"] == source.name), {})
    cls = registry.connector_class(source.kind)
    return render_template("entitlements/source.html", source=source, runs=_runs(source), secret_names=secret_names,
                           secrets_error=secrets_error, counts=counts, specs=cls.SETTINGS, secret_specs=cls.SECRETS,
                           form=CsrfForm(), next_sync=_next_sync(source), **_sync_state(source))


RUNS_PER_PAGE = 20


def _runs(source: Source) -> sources_service.RunsPage:
    """The page of the source's runs asked for (`runs_before=RUN_ID`: older than that run), newest first."""
    return sources_service.runs_page(db(), source.id, before=parse_int(request.args.get("runs_before", "")),
                                     limit=RUNS_PER_PAGE)


def _next_sync(source: Source) -> datetime | None:
    """When the scheduler next syncs the source on its schedule (None: no schedule, or disabled)."""
    if not source.schedule or not source.enabled:
        return None
    try:
        return cron_trigger(source.schedule).get_next_fire_time(None, utcnow())
    except (ValueError, AttributeError, TypeError):
        return None


@bp.get("/sources/<int:source_id>/runs")
@read_all_required
def source_runs(source_id: int):
    """The runs table of a source page (newest first, paged with `runs_before=`); htmx swaps it in when a
    sync ends and for older pages."""
    source = _source_or_404(source_id)
    return render_template("entitlements/_source_runs.html", source=source, runs=_runs(source))


ADD_TEMPLATE = "entitlements/source_new.html"


def _add_form_values(kind: str) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """What the add form sent for a kind: non-empty settings, non-empty secrets, and everything typed (settings
    only, to fill the form again; secrets are never sent back to the browser)."""
    cls = registry.connector_class(kind)
    values, secrets, typed = {}, {}, {}
    for spec in cls.SETTINGS:
        raw = request.form.get(f"setting-{spec.name}", "").strip()
        typed[spec.name] = raw
        if raw:
            values[spec.name] = raw
    for spec in cls.SECRETS:
        raw = request.form.get(f"secret-{spec.name}", "")
        if raw.strip():
            secrets[spec.name] = raw.strip()
    return values, secrets, typed


def _render_add(kind: str | None, errors: dict[str, str] | None = None, typed: dict[str, str] | None = None,
                status: int = 200):
    cls = registry.connector_class(kind) if kind else None
    return render_template(ADD_TEMPLATE, kinds=sources_service.source_kinds(), kind=kind,
                           specs=cls.SETTINGS if cls else (), secret_specs=cls.SECRETS if cls else (),
                           errors=errors or {}, typed=typed or {}, form=CsrfForm()), status


@bp.get("/sources/new")
@admin_required
def source_new():
    """Add a source: pick a kind, then a form generated from its connector's settings and secrets. No error is
    shown before anything was sent."""
    kind = request.args.get("kind") or None
    if kind is not None and kind not in sources_service.source_kinds():
        kind = None
    return _render_add(kind)


@bp.post("/sources/new")
@admin_required
def source_create():
    """Add the source through `sources.add_source` (the CLI's rule); a refused form shows each error next to
    its field (422) and changes nothing; secrets are stored encrypted and must be typed again after an error."""
    form = CsrfForm()
    if not form.validate_on_submit():
        abort(400)
    kind = request.form.get("kind", "")
    if kind not in sources_service.source_kinds():
        return _render_add(None, {"kind": "choose one of the kinds listed"}, status=422)
    values, secrets, typed = _add_form_values(kind)
    name = request.form.get("name", "").strip()
    schedule = request.form.get("schedule", "").strip() or None
    authoritative = {"yes": True, "no": False}.get(request.form.get("authoritative", ""))
    typed.update({"name": name, "schedule": schedule or "", "authoritative": request.form.get("authoritative", "")})
    try:
        with write() as session:
            source = sources_service.add_source(session, settings(), kind, name, values, secrets, schedule=schedule,
                                                authoritative=authoritative, actor=current_user.email)
            source_id = source.id
    except sources_service.SourceError as exc:
        return _render_add(kind, exc.errors, typed, 422)
    flash(f"Source {name} added. Test the connection, then sync it.", "success")
    return redirect(url_for("entitlements.source_detail", source_id=source_id), 303)


@bp.post("/sources/<int:source_id>/test")
@admin_required
def source_test(source_id: int):
    """Test the connection with the stored credentials (the connector's own check, as `attest sources test`);
    the result names what is missing. Audited as `source.tested` (outcome only, never a secret)."""
    source = _posted_source(source_id)
    try:
        result = sources_service.test_connection(db(), settings(), source.name)
    except sources_service.SourceError as exc:
        result = sources_service.ConnectionTest(False, str(exc))
    with write() as session:
        audit_record(session, actor=current_user.email, action="source.tested", object_type="source",
                     object_id=str(source_id), after={"ok": result.ok, "message": result.message[:500]})
    if request.headers.get("HX-Request"):
        return render_template("entitlements/_source_test.html", result=result)
    flash(("Connection ok: " if result.ok else "Connection failed: ") + result.message,
          "success" if result.ok else "danger")
    return _back(source)


@bp.post("/sources/<int:source_id>/schedule")
@admin_required
def source_schedule(source_id: int):
    """Set (cron, UTC) or clear (`clear=1` or an empty field) the source's sync schedule."""
    source = _posted_source(source_id)
    schedule = None if request.form.get("clear") else (request.form.get("schedule", "").strip() or None)
    try:
        with write() as session:
            _source, changed = sources_service.update_source(session, settings(), source.name, schedule=schedule,
                                                             actor=current_user.email)
    except sources_service.SourceError as exc:
        flash(f"Nothing was changed: {exc}", "danger")
        return _back(source)
    if not changed:
        flash("Schedule unchanged.", "info")
    else:
        flash(f"Schedule set: {schedule} (UTC)." if schedule else "Schedule cleared: the source syncs only when asked.",
              "success")
    return _back(source)


@bp.post("/sources/<int:source_id>/enabled")
@admin_required
def source_enabled(source_id: int):
    """Disable (`enabled=no`: no scheduled or requested sync; data and history kept) or enable (`enabled=yes`)."""
    source = _source_or_404(source_id)
    form = CsrfForm()
    wanted = request.form.get("enabled")
    if not form.validate_on_submit() or wanted not in ("yes", "no"):
        abort(400)
    try:
        with write() as session:
            if wanted == "yes":
                sources_service.enable_source(session, source.name, actor=current_user.email)
            else:
                sources_service.disable_source(session, source.name, actor=current_user.email)
    except sources_service.SourceError as exc:
        flash(f"Nothing was changed: {exc}", "danger")
        return _back(source)
    flash(f"{source.name} enabled: it syncs on its schedule and when asked." if wanted == "yes"
          else f"{source.name} disabled: it is no longer synced; its data and history are kept.", "success")
    return _back(source)


class CsrfForm(FlaskForm):
    """The source page's admin forms: their fields come from the connector's SETTINGS; this checks CSRF."""


def _sync_state(source: Source) -> dict:
    """What the source page's sync panel shows: a queued request, the running run (with its progress), the
    latest run, and whether a scheduler is there to pick the request up."""
    session = db()
    latest = session.scalar(select(SyncRun).where(SyncRun.source_id == source.id).order_by(SyncRun.id.desc()).limit(1))
    running = latest if latest is not None and latest.status == RunStatus.RUNNING else None
    lease_held = session.scalar(select(JobLease.holder).where(JobLease.name == f"sync:{source.name}")) is not None
    seen = scheduler_last_seen(session)
    return {"latest": latest, "running": running, "queued": source.sync_requested_at is not None, "now": utcnow(),
            "busy": running is not None or lease_held or source.sync_requested_at is not None,
            "scheduler": {"last_seen": seen, "within_minutes": int(SCHEDULER_SEEN_WITHIN.total_seconds() // 60),
                          "alive": seen is not None and seen >= utcnow() - SCHEDULER_SEEN_WITHIN}}


def _source_or_404(source_id: int) -> Source:
    return db().get(Source, source_id) or abort(404)


def _posted_source(source_id: int) -> Source:
    """The source a form posts to: 404 when there is none, 400 when the form's CSRF token does not validate."""
    source = _source_or_404(source_id)
    if not CsrfForm().validate_on_submit():
        abort(400)
    return source


def _back(source: Source):
    return redirect(url_for("entitlements.source_detail", source_id=source.id), 303)


@bp.get("/sources/<int:source_id>/status")
@read_all_required
def source_status(source_id: int):
    """The sync panel the source page polls (htmx, every 2 s while a sync is queued or running)."""
    source = _source_or_404(source_id)
    state = _sync_state(source)
    response = make_response(render_template("entitlements/_source_status.html", source=source, form=CsrfForm(),
                                             **state))
    if request.headers.get("HX-Trigger") == "source-sync" and not state["busy"]:
        response.headers["HX-Trigger"] = "sync-finished"  # the polled sync ended: the runs table reloads
    return response


@bp.post("/sources/<int:source_id>/settings")
@admin_required
def source_update(source_id: int):
    """Change a source's settings and schedule (fields generated from the connector's SETTINGS); an empty
    optional field goes back to its default."""
    source = _posted_source(source_id)
    values, unset = {}, []
    schedule = (request.form.get("schedule", "").strip() or None) if "schedule" in request.form \
        else sources_service.UNCHANGED  # the schedule has its own form; a settings form without it keeps it
    for spec in registry.connector_class(source.kind).SETTINGS:
        key = f"setting-{spec.name}"
        if key not in request.form:
            continue
        raw = request.form.get(key, "").strip()
        if raw == "":
            unset.append(spec.name)
        else:
            values[spec.name] = raw
    try:
        with write() as session:
            _source, changed = sources_service.update_source(
                session, settings(), source.name, values, unset=unset, schedule=schedule, actor=current_user.email)
    except sources_service.SourceError as exc:
        flash(f"Nothing was changed: {exc}", "danger")
        return _back(source)
    flash("Settings saved." if changed else "Nothing changed.", "success" if changed else "info")
    return _back(source)


@bp.post("/sources/<int:source_id>/secret")
@admin_required
def source_secret(source_id: int):
    """Replace one of a source's secrets; the value is stored encrypted and never shown back."""
    source = _posted_source(source_id)
    name = request.form.get("secret_name", "").strip()
    value = request.form.get("secret_value", "")
    if not value.strip():
        flash("Nothing was changed: enter the new secret.", "danger")
        return _back(source)
    try:
        with write() as session:
            _source, changed = sources_service.update_source(session, settings(), source.name, secrets={name: value},
                                                             actor=current_user.email)
    except sources_service.SourceError as exc:
        flash(f"Nothing was changed: {exc}", "danger")
        return _back(source)
    flash(f"Secret {name} replaced: run a sync to check it." if changed else f"Secret {name} is unchanged.",
          "success" if changed else "info")
    return _back(source)


@bp.post("/sources/<int:source_id>/sync")
@admin_required
def source_sync(source_id: int):
    """Sync now: queue a sync for the scheduler (never run in the web worker)."""
    source = _posted_source(source_id)
    try:
        with write() as session:
            _source, queued = sources_service.request_sync(session, source.name, actor=current_user.email)
    except sources_service.SourceError as exc:
        flash(str(exc), "danger")
        return _back(source)
    if request.headers.get("HX-Request"):
        return source_status(source_id)
    flash("Sync queued: the scheduler starts it within a minute." if queued else "A sync is already queued.", "success")
    return _back(source)


@bp.get("/identities")
@read_all_required
def identities():
    session = db()
    page = _page(
        queries.search_identities, session, q=request.args.get("q", "").strip(), after=request.args.get("after"),
        status=request.args.get("status") or None, department=request.args.get("department") or None,
    )
    departments = session.scalars(
        select(Identity.department).where(Identity.department.is_not(None)).distinct().order_by(Identity.department)
    ).all()
    return render_template("entitlements/identities.html", page=page, departments=departments)


def _subject(model: type[T], key: int) -> tuple[Session, T, history.AsOf | None]:
    """A detail page's row (404 when there is none) and the moment it is shown at (?as_of=; None: now)."""
    session = db()
    return session, session.get(model, key) or abort(404), as_of_arg()


@bp.get("/identities/<int:identity_id>")
@read_all_required
def identity_detail(identity_id: int):
    session, identity, as_of = _subject(Identity, identity_id)
    accounts = queries.identity_accounts(session, identity_id)
    access = history.access_at(session, accounts, as_of)
    return render_template(
        "entitlements/identity.html", identity=identity, accounts=accounts, access=access, as_of=as_of,
        chain=queries.manager_chain(session, identity), reports=queries.direct_reports(session, identity_id),
    )


@bp.get("/resources")
@read_all_required
def resources():
    session = db()
    page = _page(
        queries.list_resources, session, q=request.args.get("q", "").strip(), source_id=_int_arg("source"),
        rtype=request.args.get("type") or None, after=request.args.get("after"),
    )
    # the one reader of the managed-elsewhere contract (attest/connectors/managed.py): a badge on the row
    managed = {r.id: found for r, _ in page.rows if (found := managed_elsewhere(None, None, r.attributes))}
    return render_template("entitlements/resources.html", page=page, types=queries.resource_types(session),
                           sources=session.scalars(select(Source).order_by(Source.name)).all(), managed=managed)


@bp.get("/resources/<int:resource_id>")
@read_all_required
def resource_detail(resource_id: int):
    session, resource, as_of = _subject(Resource, resource_id)
    first = history.first_reads(session, [resource.source_id])[resource.source_id]
    unknown = as_of is not None and not first.known_at(as_of.instant)
    page = (queries.Page([], None) if unknown else
            queries.resource_grants(session, resource_id, after=_int_arg("after"), at=as_of.instant if as_of else None))
    return render_template("entitlements/resource.html", resource=resource, page=page, as_of=as_of,
                           unknown=[first] if unknown else [], since=history.since_of(session, page.rows, {first.source_id: first}),
                           entitlements=queries.resource_entitlements(session, resource_id),
                           managed=managed_elsewhere(None, None, resource.attributes))


class LinkForm(FlaskForm):
    account_id = IntegerField(validators=[DataRequired(), NumberRange(1, MAX_ID)])
    identity_email = StringField(validators=[Optional()])


@bp.get("/findings/orphaned")
@read_all_required
def orphaned():
    session = db()
    page = queries.orphaned_accounts(session, after=_int_arg("after"), source_id=_int_arg("source"))
    return render_template("entitlements/orphaned.html", page=page, form=LinkForm())


@bp.get("/findings/terminated")
@read_all_required
def terminated():
    page = queries.terminated_with_access(db(), after=_int_arg("after"))
    return render_template("entitlements/terminated.html", page=page)


@bp.post("/accounts/link")
@admin_required
def link_account():
    form = LinkForm()
    if not form.validate_on_submit():
        abort(400)
    email = (form.identity_email.data or "").strip().lower()
    with write() as session:
        account = session.get(Account, form.account_id.data) or abort(404)
        identity = None
        if email:
            identity = queries.person_by_email(session, email)
            if identity is None:
                flash(f"No person with the e-mail {email}.", "danger")
                return redirect(url_for("entitlements.orphaned"))
        correlation.link_manually(session, account.id, identity.id if identity else None, current_user.email)
    flash(f"Linked {account.label} to {identity.display_name}." if identity else f"Unlinked {account.label}.", "success")
    return redirect(url_for("entitlements.orphaned"))
