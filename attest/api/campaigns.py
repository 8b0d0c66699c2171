"""Campaigns: list, status and progress (per decision, per reviewer, risks, population), close and cancel.

Through attest/reviews/campaigns.py (the lifecycle) and queries/ (the dashboard the campaign page shows).
Admins change; auditors read. Close and cancel honour If-Match (412 when the campaign changed).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import request
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from attest.api.core import (
    ApiError,
    Routes,
    caller,
    check_if_match,
    iso,
    locked_or_404,
    make_etag,
    model_of,
    one_of,
    out,
    page_of,
    refused_as,
    set_etag,
)
from attest.reviews import campaigns as campaigns_service
from attest.reviews import queries
from attest.reviews.models import Campaign, CampaignStatus
from attest.reviews.queries.campaign_pages import ReviewerProgress
from attest.web import db, write

routes = Routes("campaigns")


# a campaign (attest/reviews/models.py: Campaign's columns) with its progress, and one reviewer's progress
# (attest/reviews/queries: ReviewerProgress)
CampaignOut = model_of(Campaign, "CampaignOut", "id name status definition_id created_by created_at launched_at due_at "
                       "closed_at closed_by total decided percent overdue", total=int, decided=int, percent=int,
                       overdue=bool)
ReviewerProgressOut = model_of(ReviewerProgress, "ReviewerProgressOut", "reviewer_id name email total decided "
                               "revoked escalated signed_off_at overdue", overdue=bool)


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
    status: str | None = Field(default=None, pattern=one_of(CampaignStatus))


class CancelIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=1, max_length=2000)


def _campaign_core(c: Campaign, total: int, decided: int, overdue: bool) -> dict[str, Any]:
    return out(CampaignOut, c, total=total, decided=decided, overdue=overdue,
               percent=100 if not total else int(decided * 100 / total))


def _campaign_etag(c: Campaign) -> str:
    return make_etag("campaign", c.id, c.status, iso(c.closed_at), iso(c.launched_at))


def campaign_detail(campaign_id: int, full: bool = True) -> dict[str, Any]:
    """The campaign with its progress (and, `full`, per decision, per reviewer, risks), its ETag set."""
    dash = queries.campaign_dashboard(db(), campaign_id)
    if dash is None:
        raise ApiError(404)
    c = dash.campaign
    set_etag(_campaign_etag(c))
    answer = _campaign_core(c, dash.total, dash.decided, dash.overdue)
    if full:
        answer.update(by_decision=dict(dash.by_decision), unroutable=dash.unroutable,
                      risk_counts=dict(dash.risk_counts), population=dict(c.population or {}),
                      summary=dict(c.summary or {}), reviewers=[out(ReviewerProgressOut, r, name=r.name or "") for r in dash.reviewers])
    return answer


@routes.get("/campaigns", "reviews:read", "read_all", query=CampaignQuery, resp=CampaignList)
def list_campaigns():
    """Campaigns, newest first (the latest 200), with progress."""
    q: CampaignQuery = request.context.query
    rows = queries.campaign_list(db(), status=q.status)
    return {"data": [_campaign_core(r.campaign, r.total, r.decided, r.overdue) for r in rows], "next": None}


@routes.get("/campaigns/<int:campaign_id>", "reviews:read", "read_all", resp=CampaignDetail)
def get_campaign(campaign_id: int):
    """Status and progress: per decision, per reviewer (overdue, escalated, signed off), risks, population."""
    return campaign_detail(campaign_id)


def _change_campaign(campaign_id: int, change: Callable[[Session], object]) -> dict[str, Any]:
    """Run `change(session)` on the campaign, locked, in one transaction: 404 when there is none, 412 when an
    If-Match names another version, 409 when the lifecycle refuses. Returns the campaign afterwards."""
    with refused_as(409, campaigns_service.CampaignError), write() as session:
        check_if_match(_campaign_etag(locked_or_404(session, Campaign, campaign_id)))
        change(session)
    return campaign_detail(campaign_id)


@routes.post("/campaigns/<int:campaign_id>/close", "reviews:write", "admin", resp=CampaignDetail)
def close_campaign(campaign_id: int):
    """Close: outcomes recorded, revocations queued for remediation. If-Match: 412 when it changed."""
    actor = caller().actor
    return _change_campaign(campaign_id, lambda session: campaigns_service.close(session, campaign_id, actor))


@routes.post("/campaigns/<int:campaign_id>/cancel", "reviews:write", "admin", json=CancelIn, resp=CampaignDetail)
def cancel_campaign(campaign_id: int):
    """Cancel a draft or active campaign (no outcomes, no remediation); the reason is audited."""
    body: CancelIn = request.context.json
    actor = caller().actor
    return _change_campaign(campaign_id, lambda session: campaigns_service.cancel(session, campaign_id, actor,
                                                                                   body.reason))
