"""The reviewer inbox and the campaign's items: filters, opaque keyset cursors, the risk and exception
conditions, a page of items grouped by person, the selection a bulk action covers, and the inbox counts.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Integer, Select, String, and_, bindparam, case, cast, func, or_, select, tuple_
from sqlalchemy.orm import Session, aliased
from sqlalchemy.sql.elements import ColumnElement

from attest import dialects
from attest.entitlements.models import Identity, Source
from attest.entitlements.queries import BadCursor  # one kind of bad page link, pages and API alike
from attest.entitlements.risk import WEIGHTS
from attest.inputs import parse_int
from attest.reviews import eligibility
from attest.reviews.models import RISKS, Campaign, ReviewerSignoff, ReviewItem

# risk signals that flag an item for a closer look; "via_group" only says how the access is held
FLAG_RISKS = tuple(r for r in RISKS if r != "via_group")
FLAG_SCORE = min(WEIGHTS[r] for r in FLAG_RISKS)


assert all(WEIGHTS[r] < FLAG_SCORE for r in RISKS if r not in FLAG_RISKS)


DECISION_FILTERS = ("undecided", "decided", "approve", "revoke", "abstain")
ROLES = ("reviewer", "co_reviewer")
RISK_LABELS = {
    "privileged": "privileged", "dormant": "dormant", "orphaned": "orphaned account", "terminated": "person left",
    "service_account": "service account", "new_since_last_review": "new", "via_group": "via group",
    "stale_access_key": "stale key", "no_mfa": "no MFA",
    "trust_outside_org": "trusted outside the org", "wildcard_trust": "wildcard trust",
}


RISK_CLASSES = {
    "privileged": "danger", "terminated": "danger", "orphaned": "warning", "dormant": "warning",
    "stale_access_key": "warning", "no_mfa": "warning", "service_account": "info", "new_since_last_review": "primary",
    "via_group": "light border", "trust_outside_org": "danger", "wildcard_trust": "danger",
}


class Progress:
    """Decided out of total, for every progress bar (the dataclasses below have `total` and `decided`)."""

    total: int
    decided: int

    @property
    def open(self) -> int:
        return self.total - self.decided

    @property
    def percent(self) -> int:
        return 100 if not self.total else int(self.decided * 100 / self.total)


@dataclass
class InboxFilters:
    risk: str | None = None  # a risk name, "flagged" or "unflagged"
    source: str | None = None  # source name
    resource: str | None = None  # part of the resource name
    decision: str | None = None  # undecided | decided | approve | revoke | abstain
    q: str | None = None  # text: person, e-mail, login, resource, entitlement
    role: str = "reviewer"  # reviewer | co_reviewer (escalated to me)

    @classmethod
    def from_args(cls, args: Any) -> InboxFilters:
        def get(name: str) -> str | None:
            value = (args.get(name) or "").strip()
            return value[:200] or None

        risk = get("risk")
        if risk not in (None, "flagged", "unflagged", *RISKS):
            risk = None
        decision = get("decision")
        if decision not in (None, *DECISION_FILTERS):
            decision = None
        role = get("role") or "reviewer"
        return cls(risk=risk, source=get("source"), resource=get("resource"), decision=decision, q=get("q"),
                   role=role if role in ROLES else "reviewer")

    def as_args(self) -> dict[str, str]:
        out = {k: v for k, v in self.__dict__.items() if v}
        if out.get("role") == "reviewer":
            out.pop("role")
        return out

    @property
    def active(self) -> bool:
        return bool(self.risk or self.source or self.resource or self.decision or self.q)


OUTCOME_FILTERS = ("keep", "revoke", "flag", "exception")
NO_REVIEWER = "none"  # the reviewer filter's value for unroutable items (the admin queue)


@dataclass
class ItemFilters(InboxFilters):
    """The inbox's filters plus what only an admin or auditor picks over a whole campaign: the reviewer
    (an identity id, or "none" for items nobody could be routed to) and the outcome at close."""

    reviewer: str | None = None
    outcome: str | None = None  # keep | revoke | flag | exception

    @classmethod
    def from_args(cls, args: Any) -> ItemFilters:
        base = InboxFilters.from_args(args)
        reviewer = (args.get("reviewer") or "").strip()
        if reviewer != NO_REVIEWER:
            number = parse_int(reviewer, low=1)
            reviewer = "" if number is None else str(number)  # "007" and "7" are one reviewer
        outcome = (args.get("outcome") or "").strip()
        return cls(risk=base.risk, source=base.source, resource=base.resource, decision=base.decision, q=base.q,
                   reviewer=reviewer or None, outcome=outcome if outcome in OUTCOME_FILTERS else None)

    def as_args(self) -> dict[str, str]:
        out = super().as_args()
        out.pop("role", None)  # a campaign's items are every item, whoever reviews them
        return out

    @property
    def active(self) -> bool:
        return super().active or bool(self.reviewer or self.outcome)


@dataclass
class InboxPage:
    rows: list[ReviewItem]
    next_after: str | None
    groups: list[PersonGroup] = field(default_factory=list)


@dataclass
class PersonGroup:
    key: str
    name: str
    email: str | None
    department: str | None
    title: str | None
    status: str | None
    items: list[ReviewItem]

    @property
    def risks(self) -> list[str]:
        seen: list[str] = []
        for item in self.items:
            for r in item.risks or []:
                if r not in seen:
                    seen.append(r)
        return sorted(seen, key=lambda r: RISKS.index(r) if r in RISKS else 99)

    @property
    def open(self) -> int:
        return sum(1 for i in self.items if i.decision is None)


def encode_cursor(name: str | None, item_id: int) -> str:
    return base64.urlsafe_b64encode(json.dumps([name, item_id], ensure_ascii=False).encode()).decode().rstrip("=")


MAX_CURSOR = 2048  # a person's name (at most a few hundred characters) and an id, JSON in base64


def decode_cursor(cursor: str | None) -> tuple[str | None, int] | None:
    """The (person_name, id) an `after=` link holds; BadCursor for anything else (too long, not base64 or
    JSON, nested, an id the database cannot hold, a NUL character)."""
    if not cursor:
        return None
    bad = BadCursor("That page link is not valid any more: start from the first page.")
    if len(cursor) > MAX_CURSOR:
        raise bad
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        name, item_id = json.loads(raw)
    except (ValueError, binascii.Error, TypeError, RecursionError) as exc:
        raise bad from exc
    if parse_int(item_id) is None or not (name is None or (isinstance(name, str) and "\x00" not in name)):
        raise bad
    return name, item_id


def _like(value: str) -> str:
    return "%" + value.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def has_risk(risk: str) -> ColumnElement[bool]:
    # risks is a JSON list of known names: '"name"' appears in its text exactly when the list holds it
    return cast(ReviewItem.risks, String).like(f'%"{risk}"%')


def flagged_condition() -> ColumnElement[bool]:
    # every flag weighs at least FLAG_SCORE in the risk score; "via_group" alone weighs less
    return ReviewItem.risk_score >= FLAG_SCORE


def _filter_conditions(filters: InboxFilters) -> list[ColumnElement[bool]]:
    conds: list[ColumnElement[bool]] = []
    if filters.risk == "flagged":
        conds.append(flagged_condition())
    elif filters.risk == "unflagged":
        conds.append(~flagged_condition())
    elif filters.risk:
        conds.append(has_risk(filters.risk))
    if filters.source:
        conds.append(ReviewItem.source_name == filters.source)
    if filters.resource:
        conds.append(func.lower(ReviewItem.resource_name).like(_like(filters.resource), escape="\\"))
    if filters.decision == "undecided":
        conds.append(ReviewItem.decision.is_(None))
    elif filters.decision == "decided":
        conds.append(ReviewItem.decision.is_not(None))
    elif filters.decision:
        conds.append(ReviewItem.decision == filters.decision)
    if filters.q:
        pattern = _like(filters.q)
        conds.append(or_(*(func.lower(col).like(pattern, escape="\\") for col in (
            ReviewItem.person_name, ReviewItem.person_email, ReviewItem.account_login, ReviewItem.resource_name,
            ReviewItem.entitlement_name,
        ))))
    if isinstance(filters, ItemFilters):
        if filters.reviewer == NO_REVIEWER:
            conds.append(ReviewItem.reviewer_id.is_(None))
        elif filters.reviewer:
            conds.append(ReviewItem.reviewer_id == int(filters.reviewer))
        if filters.outcome == "exception":
            conds.append(exception_condition())
        elif filters.outcome:
            conds.append(ReviewItem.outcome == filters.outcome)
    return conds


def exception_condition() -> ColumnElement[bool]:
    """An exception of a closed campaign: flagged at close, closed without a response, abstained, or no
    reviewer could be found for it (the evidence report's list and the summary's count)."""
    return or_(ReviewItem.outcome == "flag", ReviewItem.outcome_reason == "no_response",
               ReviewItem.reviewer_id.is_(None), ReviewItem.decision == "abstain")


def _scope(identity_id: int | ColumnElement[int], campaign_id: int | ColumnElement[int],
           role: str) -> list[ColumnElement[bool]]:
    if role == "co_reviewer":
        return [ReviewItem.co_reviewer_id == identity_id, ReviewItem.campaign_id == campaign_id]
    return [ReviewItem.reviewer_id == identity_id, ReviewItem.campaign_id == campaign_id]


def inbox(session: Session, identity_id: int, campaign_id: int, filters: InboxFilters | None = None,
          after: str | None = None, limit: int = 50, not_about: int | None = None) -> InboxPage:
    """One page of the items `identity_id` reviews in a campaign (or that were escalated to them, with
    `filters.role == "co_reviewer"`), ordered by person then id, keyset-paginated. `not_about`: leave out
    the items about that person (a delegate's view of the reviewer's items: eligibility.sql_not_about), in
    the query, so every page is full."""
    filters = filters or InboxFilters()
    base = _scope(identity_id, campaign_id, filters.role) + _filter_conditions(filters)
    if not_about is not None:
        base.append(eligibility.sql_not_about(not_about))
    rows, next_after = keyset_page(session, base, after, min(int(limit), 500))
    return InboxPage(rows, next_after, group_by_person(rows))


def keyset_page(session: Session, conds: Sequence[ColumnElement[bool]], after: str | None = None, limit: int = 50,
                columns: Sequence[Any] | None = None) -> tuple[list[Any], str | None]:
    """One keyset page of the items meeting `conds`, by person then id (orphaned items last, by id), and
    the cursor of the next page (None on the last). `columns` selects those columns (rows with at least
    `id` and `person_name`) instead of ReviewItem objects. BadCursor for a cursor that is not one of ours."""
    limit = max(1, min(int(limit), 5000))
    cursor = decode_cursor(after)

    def fetch(where: ColumnElement[bool], *order: Any, n: int) -> list[Any]:
        stmt = (select(*columns) if columns else select(ReviewItem)).where(where).order_by(*order).limit(n)
        return list(session.execute(stmt).all() if columns else session.scalars(stmt))

    rows: list[Any] = []
    if cursor is None or cursor[0] is not None:
        named = and_(*conds, ReviewItem.person_name.is_not(None))
        if cursor is not None:
            name, last_id = cursor
            # a row-value comparison: one index range scan on SQLite and PostgreSQL (an OR would filter)
            named = and_(named, tuple_(ReviewItem.person_name, ReviewItem.id) > tuple_(name, last_id))
        rows = fetch(named, ReviewItem.person_name, ReviewItem.id, n=limit + 1)
    if len(rows) <= limit:
        nameless = and_(*conds, ReviewItem.person_name.is_(None))
        if cursor is not None and cursor[0] is None:
            nameless = and_(nameless, ReviewItem.id > cursor[1])
        rows += fetch(nameless, ReviewItem.id, n=limit + 1 - len(rows))
    next_after = encode_cursor(rows[limit - 1].person_name, rows[limit - 1].id) if len(rows) > limit else None
    return rows[:limit], next_after


def campaign_items(session: Session, campaign_id: int, filters: ItemFilters, after: str | None = None,
                   limit: int = 50, columns: Sequence[Any] | None = None) -> tuple[list[Any], str | None]:
    """One keyset page of a campaign's items (every reviewer's) meeting the filters: the items page."""
    return keyset_page(session, [ReviewItem.campaign_id == campaign_id, *_filter_conditions(filters)], after, limit,
                       columns)


def exception_count(session: Session, campaign_id: int) -> int:
    return session.scalar(select(func.count()).select_from(ReviewItem).where(
        ReviewItem.campaign_id == campaign_id, exception_condition())) or 0


def campaign_reviewers(session: Session, campaign_id: int) -> list[tuple[int, str]]:
    """(identity id, name) of everyone reviewing items of the campaign, by name: the reviewer filter's choices."""
    return [(i, n) for i, n in session.execute(
        select(Identity.id, Identity.display_name).where(Identity.id.in_(
            select(ReviewItem.reviewer_id).where(ReviewItem.campaign_id == campaign_id,
                                                 ReviewItem.reviewer_id.is_not(None)).distinct()))
        .order_by(Identity.display_name, Identity.id))]


def group_by_person(rows: Sequence[ReviewItem]) -> list[PersonGroup]:
    groups: list[PersonGroup] = []
    for item in rows:
        key = f"i{item.identity_id}" if item.identity_id else f"a{item.account_id}"
        if not groups or groups[-1].key != key:
            groups.append(PersonGroup(
                key=key, name=item.person_name or item.account_login or "Unknown account",
                email=item.person_email if item.identity_id else None, department=item.person_department,
                title=item.person_title, status=item.person_status, items=[],
            ))
        groups[-1].items.append(item)
    return groups


def _undecided(session: Session) -> ColumnElement[bool]:
    """`decision IS NULL` beside the reviewer's scope, in a form that leaves the scope's index to the planner
    (dialects.not_an_index_term)."""
    return dialects.not_an_index_term(session, ReviewItem.decision).is_(None)


def selection_ids(session: Session, identity_id: int, campaign_id: int, filters: InboxFilters,
                  undecided_only: bool = True, cap: int = 50_000) -> list[int]:
    """Ids of every item matching the filters (all pages), for a bulk decision over the selection."""
    conds = _scope(identity_id, campaign_id, filters.role) + _filter_conditions(filters)
    if undecided_only:
        conds.append(_undecided(session))
    return list(session.scalars(select(ReviewItem.id).where(*conds).order_by(ReviewItem.id).limit(cap)))


def selection_counts(session: Session, identity_id: int, campaign_id: int, filters: InboxFilters,
                     takes: Sequence[ColumnElement[bool]]) -> tuple[int, int]:
    """(undecided items matching the filters, those of them meeting `takes`), in one pass: what a bulk
    action over the selection would take and what it would leave."""
    conds = _scope(identity_id, campaign_id, filters.role) + _filter_conditions(filters)
    conds.append(_undecided(session))
    row = session.execute(select(func.count(), func.coalesce(func.sum(case((and_(*takes), 1), else_=0)), 0))
                          .select_from(ReviewItem).where(*conds)).one()
    return int(row[0]), int(row[1])


@dataclass
class InboxCounts(Progress):
    total: int = 0
    decided: int = 0
    approve: int = 0
    revoke: int = 0
    abstain: int = 0
    open_unflagged: int = 0
    open_flagged: int = 0
    escalated_to_me: int = 0


def _count_columns() -> tuple[Any, ...]:
    def n(cond: ColumnElement[bool]) -> Any:
        # an aggregate FILTER (SQLite 3.30+, PostgreSQL): over a 10,000-item inbox on SQLite, 1.0 ms CPU where a
        # sum of CASEs took 1.5 (counted on every inbox page and every decision's answer)
        return func.count().filter(cond)

    return (func.count(), func.count(ReviewItem.decision), n(ReviewItem.decision == "approve"),
            n(ReviewItem.decision == "revoke"), n(ReviewItem.decision == "abstain"),
            n(and_(ReviewItem.decision.is_(None), flagged_condition())))


def _counts(row: Sequence[Any], escalated_to_me: int = 0) -> InboxCounts:
    total, decided, approve, revoke, abstain, open_flagged = (int(v or 0) for v in row)
    return InboxCounts(total=total, decided=decided, approve=approve, revoke=revoke, abstain=abstain,
                       open_flagged=open_flagged, open_unflagged=total - decided - open_flagged,
                       escalated_to_me=escalated_to_me)


def count_about(session: Session, identity_id: int, campaign_id: int, about: int) -> int:
    """How many of `identity_id`'s items in the campaign are about `about` (what a delegate does not see)."""
    return session.scalar(select(func.count()).select_from(ReviewItem).where(
        *_scope(identity_id, campaign_id, "reviewer"), ~eligibility.sql_not_about(about))) or 0


def inbox_counts(session: Session, identity_id: int, campaign_id: int, role: str = "reviewer") -> InboxCounts:
    """One pass over the reviewer's items in the campaign (index-only: ix_review_item_inbox), and for the
    reviewer's own list the items escalated to them, in the same statement (the decide answer asks for these
    on every decision). (The inbox page has them already: my_campaigns counts every campaign in one pass.)"""
    return _inbox_counts(session, identity_id, campaign_id, role)[0]


def counts_and_signoff(session: Session, identity_id: int, campaign_id: int) -> tuple[InboxCounts, bool]:
    """The reviewer's own counts (as `inbox_counts`) and whether they signed the campaign off, in one
    statement: what the answer to each decision shows (progress bar, sign-off button)."""
    counts, signed_off_at = inbox_counts_and_signoff_time(session, identity_id, campaign_id)
    return counts, signed_off_at is not None


@functools.cache
def _counts_statement(role: str, with_signoff: bool) -> Select[Any]:
    """The statement of `_inbox_counts` for `:identity_id` and `:campaign_id`, built once per kind (building it
    cost more CPU than running it: a dozen expressions and, for the escalated items, an alias of review_item)."""
    me, campaign_id = bindparam("identity_id", type_=Integer), bindparam("campaign_id", type_=Integer)
    columns: tuple[Any, ...] = _count_columns()
    if role == "reviewer":
        escalated = aliased(ReviewItem)
        columns += (select(func.count()).select_from(escalated).where(
            escalated.co_reviewer_id == me, escalated.campaign_id == campaign_id).scalar_subquery(),)
    if with_signoff:
        columns += (select(ReviewerSignoff.signed_off_at).where(
            ReviewerSignoff.campaign_id == campaign_id, ReviewerSignoff.reviewer_id == me).scalar_subquery(),)
    return select(*columns).where(*_scope(me, campaign_id, role))


def _inbox_counts(session: Session, identity_id: int, campaign_id: int, role: str,
                  with_signoff: bool = False) -> tuple[InboxCounts, datetime | None]:
    row = session.execute(_counts_statement(role, with_signoff),
                          {"identity_id": identity_id, "campaign_id": campaign_id}).one()
    counts = _counts(row[:6], escalated_to_me=int(row[6] or 0) if role == "reviewer" else 0)
    return counts, row[-1] if with_signoff else None


def inbox_counts_and_signoff_time(session: Session, identity_id: int, campaign_id: int
                                  ) -> tuple[InboxCounts, datetime | None]:
    """The reviewer's own counts, the items escalated to them, and when they signed the campaign off (None:
    not yet), in one statement: `counts_and_signoff`, and `my_campaign` for a page of one campaign."""
    return _inbox_counts(session, identity_id, campaign_id, "reviewer", with_signoff=True)


def filter_options(session: Session, identity_id: int, campaign_id: int, role: str = "reviewer") -> dict[str, list[str]]:
    """Choices for the filter form: the campaign's sources (from launch), else every source; the risks."""
    campaign = session.get(Campaign, campaign_id)
    sources = sorted({r.get("source") for r in (campaign.sync_runs or []) if r.get("source")}) if campaign else []
    if not sources:
        sources = list(session.scalars(select(Source.name).order_by(Source.name)))
    return {"sources": sources, "risks": list(RISKS)}
