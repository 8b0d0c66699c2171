"""Campaign definitions: list, get, create (from the YAML/JSON schema), preview (saved or not) and launch.

Through attest/reviews/definitions.py (parsing and checks, with the line the user wrote) and campaigns.py
(preview and launch), as the definition pages and `attest campaigns ...` do. Admins; auditors read.
"""

from __future__ import annotations

from typing import Annotated, Any

import yaml
from flask import request
from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema
from sqlalchemy import select

from attest.api.campaigns import CampaignOut, campaign_detail
from attest.api.core import (
    ApiError,
    Routes,
    caller,
    get_or_404,
    iso,
    model_of,
    out,
    page_of,
    refused_as,
)
from attest.reviews import campaigns as campaigns_service
from attest.reviews import definitions as defs
from attest.reviews.models import CampaignDefinition
from attest.web import db, write

routes = Routes("campaign definitions")


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


DefinitionOut = model_of(CampaignDefinition, "DefinitionOut", "id name description spec schedule enabled created_by "
                         "created_at updated_at last_launched_at", spec=SpecObject)
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



def definition_out(d: CampaignDefinition) -> dict[str, Any]:
    return out(DefinitionOut, d, spec=d.spec or {})


def _spec_from(body: DefinitionIn) -> str | dict[str, Any]:
    if (body.yaml is None) == (body.definition is None):
        raise ApiError(422, "Give exactly one of `yaml` (text) or `definition` (an object).")
    return body.yaml if body.yaml is not None else body.definition  # type: ignore[return-value]


def _definition_error(exc: Exception) -> ApiError:
    return ApiError(422, str(exc), details={"field": getattr(exc, "field", None), "line": getattr(exc, "line", None)})


@routes.get("/campaign-definitions", "reviews:read", "read_all", resp=DefinitionList)
def list_definitions():
    rows = db().scalars(select(CampaignDefinition).order_by(CampaignDefinition.name)).all()
    return {"data": [definition_out(d) for d in rows], "next": None}


@routes.post("/campaign-definitions", "reviews:write", "admin", json=DefinitionIn, resp=DefinitionOut, status=201)
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


@routes.get("/campaign-definitions/<int:definition_id>", "reviews:read", "read_all", resp=DefinitionOut)
def get_definition(definition_id: int):
    row = get_or_404(CampaignDefinition, definition_id)
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


@routes.post("/campaign-definitions/preview", "reviews:read", "admin", json=DefinitionIn, resp=Preview)
def preview_unsaved():
    """What launching this (unsaved) definition would produce now: items per reviewer, unroutable, excluded."""
    return _preview(_spec_from(request.context.json))


@routes.post("/campaign-definitions/<int:definition_id>/preview", "reviews:read", "admin", resp=Preview)
def preview_definition(definition_id: int):
    get_or_404(CampaignDefinition, definition_id)
    return _preview(definition_id)


@routes.post("/campaign-definitions/<int:definition_id>/launch", "reviews:write", "admin", json=LaunchIn, resp=CampaignOut, status=201)
def launch(definition_id: int):
    """Create a campaign from the definition and launch it (snapshot of the in-scope grants); 201."""
    body: LaunchIn = request.context.json
    name = (body.name or "").strip() or None
    with refused_as(409, campaigns_service.CampaignError), write() as session:
        if session.get(CampaignDefinition, definition_id) is None:
            raise ApiError(404)
        draft = campaigns_service.create_campaign(session, definition_id, caller().actor, name=name)
        campaign_id = campaigns_service.launch(session, draft.id, caller().actor).id
    return campaign_detail(campaign_id, full=False), 201
