"""Remediations: the revocations of closed campaigns, automatic or manual, by id (attest/reviews/remediation/)."""

from __future__ import annotations

from flask import request
from pydantic import Field

from attest.api.core import (
    ApiError,
    Id,
    Paging,
    Routes,
    decode_cursor,
    encode_cursor,
    model_of,
    one_of,
    page_of,
)
from attest.reviews import remediation
from attest.reviews.models import RemediationMode
from attest.reviews.remediation.worklist import RemediationRow
from attest.web import db

routes = Routes("remediations")


# the work list's row as every answer here gives it (RemediationRow.as_dict): one declaration of its fields
RemediationOut = model_of(RemediationRow, "RemediationOut")
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
