"""Campaign definitions (create from the YAML/JSON schema, preview, launch), campaigns (list, status and
progress, close, cancel), review items (list, get, decide, bulk decide, reassign) and remediations.

Everything goes through the services the UI and the CLI use: attest/reviews/definitions.py, campaigns.py,
decisions.py (which holds the visibility and eligibility rules: a reviewer's token sees and decides only
the items routed to its user), queries/ and remediation/.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import yaml
from flask import request
from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema
from sqlalchemy import select
from sqlalchemy.orm import Session

from attest.api.core import (
    ApiError,
    Paging,
    bp,
    caller,
    check_if_match,
    decode_cursor,
    encode_cursor,
    if_match,
    iso,
    make_etag,
    page_of,
    requires,
    responses,
    set_etag,
    spec,
)
from attest.reviews import campaigns as campaigns_service
from attest.reviews import decisions, queries, remediation
from attest.reviews import definitions as defs
from attest.reviews.decisions import MAX_COMMENT, DecisionError, Forbidden, NotFound, StaleItem
from attest.reviews.definitions import find_identity
from attest.reviews.models import Campaign, CampaignDefinition, ReviewItem
from attest.web import db, write

TAG_DEF, TAG_CAMP, TAG_ITEMS, TAG_REM = ["campaign definitions"], ["campaigns"], ["review items"], ["remediations"]
ID = Field(ge=1, le=2**31 - 1)


# --- models ------------------------------------------------------------------------------------------------


# The definition's schema is attest/reviews/definition_schema.py's CampaignDefinitionSpec (added to the
# document's components by attest/api/docs.py, which puts its $ref where this marker stands: pydantic would
# try to resolve a $ref itself); the body is validated by definitions.py, which adds line numbers, its own
# messages and the checks that need the database (named people and sources exist).
DEFINITION_MARK = {"x-attest-schema": "CampaignDefinitionSpec"}
SpecObject = Annotated[dict[str, Any], WithJsonSchema(DEFINITION_MARK)]


class DefinitionIn(BaseModel):
    """A campaign definition: `yaml` (the text of examples/campaigns/*.yaml) or `definition` (the same as a
    JSON object: CampaignDefinitionSpec)."""

    model_config = ConfigDict(extra="forbid")
    yaml: str | None = Field(default=None, max_length=65536)
    definition: Annotated[dict[str, Any] | None, WithJsonSchema({"anyOf": [DEFINITION_MARK, {"type": "null"}]})] = None


class DefinitionOut(BaseModel):
    id: int
    name: str
    description: str | None = None
    spec: SpecObject
    schedule: str | None = None
    enabled: bool
    created_by: str
    created_at: str
    updated_at: str
    last_launched_at: str | None = None


DefinitionList = page_of(DefinitionOut, "DefinitionList")


class Preview(BaseModel):
    items: int
    in_scope: int
    excluded: int
    excluded_by_reason: dict[str, int]
    per_reviewer: list[dict[str, Any]]
    reviewers: int
    unroutable: int
    self_review_reassigned: int
    routed_by: dict[str, int]
    risk_counts: dict[str, int]
    fallback_reviewer: Any = None
    last_review_at: str | None = None
    stages: list[Any]


class LaunchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, max_length=300)


class CampaignOut(BaseModel):
    id: int
    name: str
    status: str
    definition_id: int | None = None
    created_by: str
    created_at: str
    launched_at: str | None = None
    due_at: str | None = None
    closed_at: str | None = None
    closed_by: str | None = None
    total: int
    decided: int
    percent: int
    overdue: bool


class ReviewerProgressOut(BaseModel):
    reviewer_id: int | None = None
    name: str
    email: str | None = None
    total: int
    decided: int
    revoked: int
    escalated: int
    signed_off_at: str | None = None
    overdue: bool


class CampaignDetail(CampaignOut):
    by_decision: dict[str, int]
    unroutable: int
    risk_counts: dict[str, int]
    reviewers: list[ReviewerProgressOut]
    population: dict[str, Any]
    summary: dict[str, Any]


CampaignList = page_of(CampaignOut, "CampaignList")


class CampaignQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: str | None = Field(default=None, pattern="^(draft|active|closed|cancelled)$")


class CancelIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=1, max_length=2000)


class ItemOut(BaseModel):
    id: int
    campaign_id: int
    version: int
    person_name: str | None = None
    person_email: str | None = None
    identity_id: int | None = None
    account_id: int
    account_login: str | None = None
    source_name: str
    resource_id: int | None = None
    resource_name: str | None = None
    resource_type: str | None = None
    entitlement_name: str
    privileged: bool
    via: str | None = None
    risks: list[str]
    stage: int
    reviewer_id: int | None = None
    co_reviewer_id: int | None = None
    decision: str | None = None
    comment: str | None = None
    decided_at: str | None = None
    completed: bool
    outcome: str | None = None


ItemList = page_of(ItemOut, "ItemList")


class ItemQuery(Paging):
    risk: str | None = Field(default=None, max_length=50)
    source: str | None = Field(default=None, max_length=200)
    resource: str | None = Field(default=None, max_length=200)
    decision: str | None = Field(default=None, max_length=20)
    q: str | None = Field(default=None, max_length=200)
    reviewer: str | None = Field(default=None, max_length=20, description="admins/auditors: an identity id or none")
    outcome: str | None = Field(default=None, max_length=20)
    role: str | None = Field(default=None, pattern="^(reviewer|co_reviewer)$",
                             description="reviewers: co_reviewer lists the items escalated to them")


class DecideIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    decision: str = Field(pattern="^(approve|revoke|abstain)$")
    comment: str | None = Field(default=None, max_length=MAX_COMMENT)


class BulkIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    item_ids: list[int] = Field(min_length=1, max_length=5000)
    decision: str = Field(pattern="^(approve|revoke|abstain)$")
    comment: str | None = Field(default=None, max_length=MAX_COMMENT)


class BulkOut(BaseModel):
    changed: int
    skipped: dict[str, int]
    left: list[str]


class ReassignIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    to_email: str = Field(min_length=3, max_length=320)
    reason: str = Field(min_length=1, max_length=2000)


class RemediationOut(BaseModel):
    id: int
    campaign_id: int
    campaign_name: str
    mode: str
    status: str
    source: str
    person: str | None = None
    person_email: str | None = None
    identity_id: int | None = None
    account: str | None = None
    resource: str | None = None
    entitlement: str
    via: str | None = None
    target: str | None = None
    attempts: int
    last_error: str | None = None
    note: str | None = None
    calls: list[Any]
    created_at: str
    executed_at: str | None = None
    executed_by: str | None = None
    verified_run_id: int | None = None
    reappeared_run_id: int | None = None
    undone_at: str | None = None
    comment: str | None = None
    launched_at: str | None = None


RemediationList = page_of(RemediationOut, "RemediationList")


class RemediationQuery(Paging):
    campaign_id: int | None = Field(default=None, ge=1, le=2**31 - 1)
    status: str | None = Field(default=None, max_length=20)
    mode: str | None = Field(default=None, pattern="^(automatic|manual)$")


# --- helpers --------------------------------------------------------------------------------------------


def definition_out(d: CampaignDefinition) -> dict[str, Any]:
    return {"id": d.id, "name": d.name, "description": d.description, "spec": d.spec or {}, "schedule": d.schedule,
            "enabled": bool(d.enabled), "created_by": d.created_by, "created_at": iso(d.created_at),
            "updated_at": iso(d.updated_at), "last_launched_at": iso(d.last_launched_at)}


def _campaign_core(c: Campaign, total: int, decided: int, overdue: bool) -> dict[str, Any]:
    return {"id": c.id, "name": c.name, "status": c.status, "definition_id": c.definition_id,
            "created_by": c.created_by, "created_at": iso(c.created_at), "launched_at": iso(c.launched_at),
            "due_at": iso(c.due_at), "closed_at": iso(c.closed_at), "closed_by": c.closed_by, "total": total,
            "decided": decided, "percent": 100 if not total else int(decided * 100 / total), "overdue": overdue}


def _campaign_etag(c: Campaign) -> str:
    return make_etag("campaign", c.id, c.status, iso(c.closed_at), iso(c.launched_at))


def item_out(i: ReviewItem) -> dict[str, Any]:
    return {"id": i.id, "campaign_id": i.campaign_id, "version": i.version, "person_name": i.person_name,
            "person_email": i.person_email, "identity_id": i.identity_id, "account_id": i.account_id,
            "account_login": i.account_login, "source_name": i.source_name, "resource_id": i.resource_id,
            "resource_name": i.resource_name, "resource_type": i.resource_type,
            "entitlement_name": i.entitlement_name, "privileged": bool(i.privileged), "via": i.via,
            "risks": list(i.risks or []), "stage": i.stage, "reviewer_id": i.reviewer_id,
            "co_reviewer_id": i.co_reviewer_id, "decision": i.decision, "comment": i.comment,
            "decided_at": iso(i.decided_at), "completed": bool(i.completed), "outcome": i.outcome}


def item_etag(i: ReviewItem) -> str:
    return f'"item-{i.id}-v{i.version}"'


def _expected_version(item_id: int) -> int | None:
    """The item version an If-Match names (`"item-<id>-v<version>"`); 412 for an ETag of another item."""
    wanted = if_match()
    if wanted is None or "*" in wanted:
        return None
    for tag in wanted:
        prefix = f'"item-{item_id}-v'
        if tag.startswith(prefix) and tag.endswith('"') and tag[len(prefix):-1].isdigit():
            return int(tag[len(prefix):-1])
    raise ApiError(412, "If-Match does not name a version of this item.")


def _refused(exc: Exception, item_id: int | None = None):
    if isinstance(exc, NotFound):
        return ApiError(404)
    if isinstance(exc, Forbidden):
        return ApiError(403, str(exc))
    if isinstance(exc, StaleItem):
        details = None
        if item_id is not None:
            db().rollback()
            fresh = db().get(ReviewItem, item_id)
            details = {"etag": item_etag(fresh)} if fresh is not None else None
        return ApiError(412 if if_match() is not None else 409, str(exc), details=details)
    return ApiError(400, str(exc))


def _item_response(row: ReviewItem) -> dict[str, Any]:
    """An item as the API returns it, with its version as the ETag."""
    set_etag(item_etag(row))
    return item_out(row)


def _change_item(item_id: int, change: Callable[[Session, int | None], object]) -> dict[str, Any]:
    """Run `change(session, expected_version)` on an item routed to the token's user (the version an If-Match
    names, or None) in one transaction; refusals become API errors (412/409 for a stale item). Returns the
    item afterwards."""
    try:
        with write() as session:
            decisions.load_item_for(session, caller().user, item_id)
            change(session, _expected_version(item_id))
    except (NotFound, Forbidden, StaleItem, DecisionError) as exc:
        raise _refused(exc, item_id) from None
    return _item_response(db().get(ReviewItem, item_id))


def _spec_from(body: DefinitionIn) -> str | dict[str, Any]:
    if (body.yaml is None) == (body.definition is None):
        raise ApiError(422, "Give exactly one of `yaml` (text) or `definition` (an object).")
    return body.yaml if body.yaml is not None else body.definition  # type: ignore[return-value]


def _definition_error(exc: Exception) -> ApiError:
    return ApiError(422, str(exc), details={"field": getattr(exc, "field", None), "line": getattr(exc, "line", None)})


# --- definitions ----------------------------------------------------------------------------------------


@bp.get("/campaign-definitions")
@requires("reviews:read", "read_all")
@spec.validate(resp=responses(DefinitionList), tags=TAG_DEF)
def list_definitions():
    rows = db().scalars(select(CampaignDefinition).order_by(CampaignDefinition.name)).all()
    return {"data": [definition_out(d) for d in rows], "next": None}


@bp.post("/campaign-definitions")
@requires("reviews:write", "admin")
@spec.validate(json=DefinitionIn, resp=responses(DefinitionOut, 201), tags=TAG_DEF)
def create_definition():
    """Store a definition given as YAML text or as an object (422 names the offending field and line)."""
    submitted = _spec_from(request.context.json)
    c = caller()
    try:
        with write() as session:
            row = defs.create_definition(session, submitted, c.actor, owner_user_id=c.user.id)
            definition_id = row.id
    except (defs.DefinitionError, yaml.YAMLError) as exc:  # YAMLError: text PyYAML's reader refuses outright
        raise _definition_error(exc) from None
    return definition_out(db().get(CampaignDefinition, definition_id)), 201


@bp.get("/campaign-definitions/<int:definition_id>")
@requires("reviews:read", "read_all")
@spec.validate(resp=responses(DefinitionOut), tags=TAG_DEF)
def get_definition(definition_id: int):
    row = db().get(CampaignDefinition, definition_id)
    if row is None:
        raise ApiError(404)
    return definition_out(row)


def _preview(spec_or_id: Any) -> dict[str, Any]:

    session = db()
    try:
        if not isinstance(spec_or_id, int):
            parsed = defs.parse_definition(spec_or_id)
            defs.check_references(session, parsed)
            spec_or_id = parsed
        out = campaigns_service.preview(session, spec_or_id)
    except (defs.DefinitionError, yaml.YAMLError) as exc:
        session.rollback()
        raise _definition_error(exc) from None
    except campaigns_service.CampaignError as exc:
        session.rollback()
        raise ApiError(400, str(exc)) from None
    session.rollback()
    out = dict(out)
    last = out.get("last_review_at")
    out["last_review_at"] = iso(last) if last is not None and not isinstance(last, str) else last
    return out


@bp.post("/campaign-definitions/preview")
@requires("reviews:read", "admin")
@spec.validate(json=DefinitionIn, resp=responses(Preview), tags=TAG_DEF)
def preview_unsaved():
    """What launching this (unsaved) definition would produce now: items per reviewer, unroutable, excluded."""
    return _preview(_spec_from(request.context.json))


@bp.post("/campaign-definitions/<int:definition_id>/preview")
@requires("reviews:read", "admin")
@spec.validate(resp=responses(Preview), tags=TAG_DEF)
def preview_definition(definition_id: int):
    if db().get(CampaignDefinition, definition_id) is None:
        raise ApiError(404)
    return _preview(definition_id)


@bp.post("/campaign-definitions/<int:definition_id>/launch")
@requires("reviews:write", "admin")
@spec.validate(json=LaunchIn, resp=responses(CampaignOut, 201), tags=TAG_DEF)
def launch(definition_id: int):
    """Create a campaign from the definition and launch it (snapshot of the in-scope grants); 201."""
    body: LaunchIn = request.context.json
    name = (body.name or "").strip() or None
    try:
        with write() as session:
            if session.get(CampaignDefinition, definition_id) is None:
                raise ApiError(404)
            draft = campaigns_service.create_campaign(session, definition_id, caller().actor, name=name)
            launched = campaigns_service.launch(session, draft.id, caller().actor)
            campaign_id = launched.id
    except campaigns_service.CampaignError as exc:
        raise ApiError(409, str(exc)) from None
    return _campaign_detail(campaign_id, full=False), 201


# --- campaigns ------------------------------------------------------------------------------------------


def _campaign_detail(campaign_id: int, full: bool = True) -> dict[str, Any]:
    dash = queries.campaign_dashboard(db(), campaign_id)
    if dash is None:
        raise ApiError(404)
    c = dash.campaign
    set_etag(_campaign_etag(c))
    out = _campaign_core(c, dash.total, dash.decided, dash.overdue)
    if full:
        out.update(by_decision=dict(dash.by_decision), unroutable=dash.unroutable, risk_counts=dict(dash.risk_counts),
                   population=dict(c.population or {}), summary=dict(c.summary or {}),
                   reviewers=[{"reviewer_id": r.reviewer_id, "name": r.name or "", "email": r.email, "total": r.total,
                               "decided": r.decided, "revoked": r.revoked, "escalated": r.escalated,
                               "signed_off_at": iso(r.signed_off_at), "overdue": r.overdue} for r in dash.reviewers])
    return out


@bp.get("/campaigns")
@requires("reviews:read", "read_all")
@spec.validate(query=CampaignQuery, resp=responses(CampaignList), tags=TAG_CAMP)
def list_campaigns():
    """Campaigns, newest first (the latest 200), with progress."""
    q: CampaignQuery = request.context.query
    rows = queries.campaign_list(db(), status=q.status)
    return {"data": [_campaign_core(r.campaign, r.total, r.decided, r.overdue) for r in rows], "next": None}


@bp.get("/campaigns/<int:campaign_id>")
@requires("reviews:read", "read_all")
@spec.validate(resp=responses(CampaignDetail), tags=TAG_CAMP)
def get_campaign(campaign_id: int):
    """Status and progress: per decision, per reviewer (overdue, escalated, signed off), risks, population."""
    return _campaign_detail(campaign_id)


@bp.post("/campaigns/<int:campaign_id>/close")
@requires("reviews:write", "admin")
@spec.validate(resp=responses(CampaignDetail), tags=TAG_CAMP)
def close_campaign(campaign_id: int):
    """Close: outcomes recorded, revocations queued for remediation. If-Match: 412 when it changed."""
    try:
        with write() as session:
            row = session.scalar(select(Campaign).where(Campaign.id == campaign_id).with_for_update(of=Campaign)
                                 .execution_options(populate_existing=True))
            if row is None:
                raise ApiError(404)
            check_if_match(_campaign_etag(row))
            campaigns_service.close(session, campaign_id, caller().actor)
    except campaigns_service.CampaignError as exc:
        raise ApiError(409, str(exc)) from None
    return _campaign_detail(campaign_id)


@bp.post("/campaigns/<int:campaign_id>/cancel")
@requires("reviews:write", "admin")
@spec.validate(json=CancelIn, resp=responses(CampaignDetail), tags=TAG_CAMP)
def cancel_campaign(campaign_id: int):
    """Cancel a draft or active campaign (no outcomes, no remediation); the reason is audited."""
    body: CancelIn = request.context.json
    try:
        with write() as session:
            row = session.scalar(select(Campaign).where(Campaign.id == campaign_id).with_for_update(of=Campaign)
                                 .execution_options(populate_existing=True))
            if row is None:
                raise ApiError(404)
            check_if_match(_campaign_etag(row))
            campaigns_service.cancel(session, campaign_id, caller().actor, body.reason)
    except campaigns_service.CampaignError as exc:
        raise ApiError(409, str(exc)) from None
    return _campaign_detail(campaign_id)


# --- items -----------------------------------------------------------------------------------------------


@bp.get("/campaigns/<int:campaign_id>/items")
@requires("reviews:read")
@spec.validate(query=ItemQuery, resp=responses(ItemList), tags=TAG_ITEMS)
def list_items(campaign_id: int):
    """A campaign's items by person: every item for admins and auditors, else only the items routed to the
    token's user (as their inbox shows them). Keyset-paged: pass `next` as `after`."""
    q: ItemQuery = request.context.query
    c = caller()
    args = {k: v for k, v in q.model_dump().items() if isinstance(v, str)}
    after = decode_cursor("items", q.after)
    if after is not None and not isinstance(after, str):
        raise ApiError(400, "bad cursor", code="bad_cursor")
    session = db()
    try:
        if c.can_read_all:
            if session.get(Campaign, campaign_id) is None:
                raise ApiError(404)
            rows, next_after = queries.campaign_items(session, campaign_id, queries.ItemFilters.from_args(args),
                                                      after, q.limit)
        else:
            me = c.user.identity_id
            if c.is_service or me is None or not queries.is_my_campaign(session, me, campaign_id):
                raise ApiError(404)
            page = queries.inbox(session, me, campaign_id, queries.InboxFilters.from_args(args), after, q.limit)
            rows, next_after = page.rows, page.next_after
    except queries.BadCursor as exc:
        raise ApiError(400, str(exc), code="bad_cursor") from None
    return {"data": [item_out(i) for i in rows], "next": encode_cursor("items", next_after)}


def _visible_item(item_id: int) -> ReviewItem:
    c = caller()
    try:
        return decisions.load_item_for(db(), c.user, item_id)
    except NotFound:
        raise ApiError(404) from None


@bp.get("/items/<int:item_id>")
@requires("reviews:read")
@spec.validate(resp=responses(ItemOut), tags=TAG_ITEMS)
def get_item(item_id: int):
    """One item, if it is routed to the token's user (or the user reads everything); its ETag is its version."""
    return _item_response(_visible_item(item_id))


@bp.post("/items/<int:item_id>/decision")
@requires("reviews:write", "reviewer")
@spec.validate(json=DecideIn, resp=responses(ItemOut), tags=TAG_ITEMS)
def decide(item_id: int):
    """Approve, revoke or abstain on an item routed to the token's user. If-Match with the item's ETag:
    412 when someone changed it since (without If-Match, a concurrent change is 409)."""
    body: DecideIn = request.context.json
    user = caller().user
    return _change_item(item_id, lambda session, version: decisions.decide(
        session, user, item_id, body.decision, comment=body.comment, expected_version=version))


@bp.post("/campaigns/<int:campaign_id>/decisions")
@requires("reviews:write", "reviewer")
@spec.validate(json=BulkIn, resp=responses(BulkOut), tags=TAG_ITEMS)
def bulk_decide(campaign_id: int):
    """Decide many of the token's user's undecided items at once; items decided or changed meanwhile, and
    items that need a comment of their own, are left (counted in `skipped`)."""
    body: BulkIn = request.context.json
    c = caller()
    if not queries.is_my_campaign(db(), c.user.identity_id, campaign_id):
        raise ApiError(404)
    try:
        with write() as session:
            result = decisions.bulk_decide(session, c.user, campaign_id, sorted(set(body.item_ids)), body.decision,
                                           comment=body.comment)
    except (NotFound, Forbidden, DecisionError) as exc:
        raise _refused(exc) from None
    return {"changed": result.changed, "skipped": dict(result.skipped), "left": result.explain()}


@bp.post("/items/<int:item_id>/reassign")
@requires("reviews:write")
@spec.validate(json=ReassignIn, resp=responses(ItemOut), tags=TAG_ITEMS)
def reassign(item_id: int):
    """Route an undecided item to another person (by e-mail) with a reason: its reviewer may hand it on,
    admins may move any item; never to the person whose access it is."""
    body: ReassignIn = request.context.json
    c = caller()
    if c.is_service and not c.is_admin:
        raise ApiError(403)

    def hand_on(session: Session, version: int | None) -> None:
        target = find_identity(session, body.to_email.strip())
        if target is None:
            raise DecisionError(f"Nobody in the directory has the e-mail {body.to_email.strip()}.")
        decisions.reassign(session, c.user, item_id, target.id, body.reason, expected_version=version)

    return _change_item(item_id, hand_on)


# --- remediations ---------------------------------------------------------------------------------------


@bp.get("/remediations")
@requires("reviews:read", "read_all")
@spec.validate(query=RemediationQuery, resp=responses(RemediationList), tags=TAG_REM)
def list_remediations():
    """Remediations by id, filterable by campaign, status and mode."""
    q: RemediationQuery = request.context.query
    after = decode_cursor("remediations", q.after)
    if after is not None and not isinstance(after, int):
        raise ApiError(400, "bad cursor", code="bad_cursor")
    rows, next_after = remediation.list_remediations(db(), campaign_id=q.campaign_id, status=q.status, mode=q.mode,
                                                     after=after, limit=q.limit)
    return {"data": [r.as_dict() for r in rows], "next": encode_cursor("remediations", next_after)}


@bp.get("/remediations/<int:remediation_id>")
@requires("reviews:read", "read_all")
@spec.validate(resp=responses(RemediationOut), tags=TAG_REM)
def get_remediation(remediation_id: int):

    rows, _next = remediation.list_remediations(db(), after=remediation_id - 1, limit=1)
    if not rows or rows[0].id != remediation_id:
        raise ApiError(404)
    return rows[0].as_dict()
