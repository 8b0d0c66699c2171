"""Campaign definition pages of the reviews blueprint (admins): the definition form (fields or YAML) with
a live preview of who would review what, save, launch (warned before a second launch the same day),
archive and unarchive.

The blueprint is attest/reviews/views.py's `bp` (its endpoints are `reviews.*`); the definitions are
parsed and checked by attest/reviews/definitions.py, the one schema is definition_schema.py.
"""

from __future__ import annotations

from typing import Any

from flask import abort, flash, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import select

from attest.auth.permissions import admin_required
from attest.db import utcnow
from attest.entitlements.models import Identity, PersonStatus, Resource, Source
from attest.reviews import campaigns as campaigns_service
from attest.reviews import definitions as defs
from attest.reviews import queries
from attest.reviews.definition_schema import DEFAULT_REMINDERS
from attest.reviews.models import CampaignDefinition, Outcome, RemediationMode
from attest.reviews.views import bp
from attest.web import db, write

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
            "no_response": form.get("no_response") or Outcome.KEEP.value,
        },
        "rules": {"comment_required": form.get("comment_required") or "on_revoke",
                  "remediation": form.get("remediation") or RemediationMode.MANUAL.value},
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
        select(Identity.email, Identity.display_name).where(Identity.email.is_not(None), Identity.status == PersonStatus.ACTIVE,
                                                            Identity.kind == "human")
        .order_by(Identity.display_name).limit(1000)).all()
    today = launched_today(session, [definition.id]).get(definition.id, []) if definition else []
    return render_template(
        "reviews/definition_form.html", definition=definition, spec=spec or defs.DEFAULTS, yaml_text=yaml_text,
        mode=mode, error=error, sources=session.scalars(select(Source.name).order_by(Source.name)).all(),
        resource_types=resource_types, people=people, launched_today=today,
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



def launched_today(session, definition_ids: list[int]) -> dict[int, list[str]]:
    """{definition id: names of its campaigns created today}, for the warning before a second launch."""
    now = utcnow()
    out = {}
    for definition_id in definition_ids:
        names = [c.name for c in campaigns_service.launched_on(session, definition_id, now)]
        if names:
            out[definition_id] = names
    return out
