"""Review items: list (a reviewer's own, or every item for admins and auditors), get, decide, bulk decide,
reassign.

Everything goes through the services the UI and the CLI use: attest/reviews/decisions.py (which holds the
visibility and eligibility rules: a reviewer's token sees and decides only the items routed to its user)
and queries/. The campaigns, their definitions and the remediations have modules of their own
(campaigns.py, definitions.py, remediations.py beside this one).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import request
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from attest.api.core import (
    ApiError,
    Paging,
    Routes,
    bad_cursors,
    caller,
    decode_cursor,
    encode_cursor,
    if_match,
    model_of,
    one_of,
    out,
    page_of,
    refusals,
    set_etag,
)
from attest.reviews import decisions, queries
from attest.reviews.decisions import MAX_COMMENT, DecisionError, StaleItem
from attest.reviews.definitions import find_identity
from attest.reviews.models import Campaign, DecisionValue, ReviewItem
from attest.web import db, write

routes = Routes("review items")


# an item as the reviewer saw it at launch (attest/reviews/models.py: ReviewItem's columns, typed there)
ItemOut = model_of(ReviewItem, "ItemOut", "id campaign_id version person_name person_email identity_id account_id "
                   "account_login source_name resource_id resource_name resource_type entitlement_name privileged via "
                   "risks stage reviewer_id co_reviewer_id decision comment decided_at completed outcome")


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
    decision: str = Field(pattern=one_of(DecisionValue))
    comment: str | None = Field(default=None, max_length=MAX_COMMENT)


class BulkIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    item_ids: list[int] = Field(min_length=1, max_length=5000)
    decision: str = Field(pattern=one_of(DecisionValue))
    comment: str | None = Field(default=None, max_length=MAX_COMMENT)


class BulkOut(BaseModel):
    changed: int
    skipped: dict[str, int]
    left: list[str]


class ReassignIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    to_email: str = Field(min_length=3, max_length=320)
    reason: str = Field(min_length=1, max_length=2000)


def item_out(i: ReviewItem) -> dict[str, Any]:
    return out(ItemOut, i, risks=list(i.risks or []))


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


def _refused(exc: StaleItem | DecisionError, item_id: int | None = None) -> ApiError:
    """A decision the rules refuse (400), or a stale item: 412 with If-Match, else 409, with its current ETag."""
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
        with refusals(), write() as session:
            decisions.load_item_for(session, caller().user, item_id)
            change(session, _expected_version(item_id))
    except (StaleItem, DecisionError) as exc:
        raise _refused(exc, item_id) from None
    return _item_response(db().get(ReviewItem, item_id))


@routes.get("/campaigns/<int:campaign_id>/items", "reviews:read", query=ItemQuery, resp=ItemList)
def list_items(campaign_id: int):
    """A campaign's items by person: every item for admins and auditors, else only the items routed to the
    token's user (as their inbox shows them). Keyset-paged: pass `next` as `after`."""
    q: ItemQuery = request.context.query
    c = caller()
    args = {k: v for k, v in q.model_dump().items() if isinstance(v, str)}
    after = decode_cursor("items", q.after, of=str)
    session = db()
    with bad_cursors():
        if c.user.can_read_all:
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
    return {"data": [item_out(i) for i in rows], "next": encode_cursor("items", next_after)}


def _visible_item(item_id: int) -> ReviewItem:
    with refusals():
        return decisions.load_item_for(db(), caller().user, item_id)


@routes.get("/items/<int:item_id>", "reviews:read", resp=ItemOut)
def get_item(item_id: int):
    """One item, if it is routed to the token's user (or the user reads everything); its ETag is its version."""
    return _item_response(_visible_item(item_id))


@routes.post("/items/<int:item_id>/decision", "reviews:write", "reviewer", json=DecideIn, resp=ItemOut)
def decide(item_id: int):
    """Approve, revoke or abstain on an item routed to the token's user. If-Match with the item's ETag:
    412 when someone changed it since (without If-Match, a concurrent change is 409)."""
    body: DecideIn = request.context.json
    user = caller().user
    return _change_item(item_id, lambda session, version: decisions.decide(
        session, user, item_id, body.decision, comment=body.comment, expected_version=version))


@routes.post("/campaigns/<int:campaign_id>/decisions", "reviews:write", "reviewer", json=BulkIn, resp=BulkOut)
def bulk_decide(campaign_id: int):
    """Decide many of the token's user's undecided items at once; items decided or changed meanwhile, and
    items that need a comment of their own, are left (counted in `skipped`)."""
    body: BulkIn = request.context.json
    c = caller()
    if not queries.is_my_campaign(db(), c.user.identity_id, campaign_id):
        raise ApiError(404)
    try:
        with refusals(), write() as session:
            result = decisions.bulk_decide(session, c.user, campaign_id, sorted(set(body.item_ids)), body.decision,
                                           comment=body.comment)
    except DecisionError as exc:
        raise _refused(exc) from None
    return {"changed": result.changed, "skipped": dict(result.skipped), "left": result.explain()}


@routes.post("/items/<int:item_id>/reassign", "reviews:write", json=ReassignIn, resp=ItemOut)
def reassign(item_id: int):
    """Route an undecided item to another person (by e-mail) with a reason: its reviewer may hand it on,
    admins may move any item; never to the person whose access it is."""
    body: ReassignIn = request.context.json
    c = caller()
    if c.is_service and not c.user.is_admin:
        raise ApiError(403)

    def hand_on(session: Session, version: int | None) -> None:
        target = find_identity(session, body.to_email.strip())
        if target is None:
            raise DecisionError(f"Nobody in the directory has the e-mail {body.to_email.strip()}.")
        decisions.reassign(session, c.user, item_id, target.id, body.reason, expected_version=version)

    return _change_item(item_id, hand_on)

