"""Remediations: the revocations of closed campaigns, automatic or manual, by id (attest/reviews/remediation/)."""

from __future__ import annotations

from typing import Any

from flask import request
from pydantic import BaseModel, Field

from attest.api.core import (
    ApiError,
    Id,
    Paging,
    Routes,
    decode_cursor,
    encode_cursor,
    one_of,
    page_of,
)
from attest.reviews import remediation
from attest.reviews.models import RemediationMode
from attest.web import db

routes = Routes("remediations")


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
    campaign_id: Id | None = None
    status: str | None = Field(default=None, max_length=20)
    mode: str | None = Field(default=None, pattern=one_of(RemediationMode))



@routes.get("/remediations", "reviews:read", "read_all", query=RemediationQuery, resp=RemediationList)
def list_remediations():
    """Remediations by id, filterable by campaign, status and mode."""
    q: RemediationQuery = request.context.query
    after = decode_cursor("remediations", q.after, of=int)
    rows, next_after = remediation.list_remediations(db(), campaign_id=q.campaign_id, status=q.status, mode=q.mode,
                                                     after=after, limit=q.limit)
    return {"data": [r.as_dict() for r in rows], "next": encode_cursor("remediations", next_after)}


@routes.get("/remediations/<int:remediation_id>", "reviews:read", "read_all", resp=RemediationOut)
def get_remediation(remediation_id: int):

    rows, _next = remediation.list_remediations(db(), after=remediation_id - 1, limit=1)
    if not rows or rows[0].id != remediation_id:
        raise ApiError(404)
    return rows[0].as_dict()
