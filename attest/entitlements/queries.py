"""Read queries the pages and the API run: effective access, people, resources, findings.

Effective access expands grants held by a group to the group's members (nested groups too), cycle-safe
and depth-limited, keeping the path of groups so a page can say "via team X".
Listings paginate by keyset (`after` = the last row's sort key), never by OFFSET.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import and_, case, func, or_, select
from sqlalchemy.orm import Session

from attest.dialects import text_with_dates
from attest.entitlements.models import Account, Entitlement, Grant, Identity, PersonStatus, Resource, Source
from attest.entitlements.sources import active_counts
from attest.inputs import parse_int

MAX_DEPTH = 10

# All groups each account is a member of, directly or through nested groups, with the path of group ids.
MEMBERSHIP_CTE = f"""
WITH RECURSIVE membership(account_id, group_id, depth, path) AS (
    SELECT g.principal_account_id, e.resource_id, 1, '/' || CAST(e.resource_id AS TEXT) || '/'
    FROM access_grant g JOIN entitlement e ON e.id = g.entitlement_id
    WHERE g.principal_type = 'account' AND e.is_membership = :true AND e.resource_id IS NOT NULL
      AND {{grant_window}} AND g.principal_account_id IN ({{accounts}})
  UNION ALL
    SELECT m.account_id, e.resource_id, m.depth + 1, m.path || CAST(e.resource_id AS TEXT) || '/'
    FROM membership m
    JOIN access_grant g ON g.principal_type = 'resource' AND g.principal_resource_id = m.group_id
    JOIN entitlement e ON e.id = g.entitlement_id AND e.is_membership = :true AND e.resource_id IS NOT NULL
    WHERE {{grant_window}} AND m.depth < {MAX_DEPTH}
      AND m.path NOT LIKE '%/' || CAST(e.resource_id AS TEXT) || '/%'
)
"""


@dataclass
class HeldGrant:
    grant: Grant
    account: Account
    via: list[Resource] = field(default_factory=list)  # outermost group last

    @property
    def how(self) -> str:
        # a path the source names in the grant (AWS role assumption: "role assumption: user X -> role Y
        # in account Z", attest.connectors.aws.trust), then the groups it is held through
        path = (self.grant.attributes or {}).get("via_path")
        parts = [f"via {path}"] if isinstance(path, str) and path else []
        if self.via:
            parts.append("via " + " → ".join(g.name for g in self.via))
        return ", ".join(parts) or "direct"


def _window(at: datetime | None, params: dict[str, Any]) -> str:
    if at is None:
        return "g.ended_at IS NULL"
    params["at"] = at
    return "g.first_seen_at <= :at AND (g.ended_at IS NULL OR g.ended_at > :at)"


def normalized_email(email: str | None) -> str | None:
    """An e-mail as people are looked up by it: trimmed, lower-case; None when empty."""
    email = (email or "").strip().lower()
    if not email or "\x00" in email:
        return None
    return email


def person_by_email(session: Session, email: str | None, *, humans_only: bool = False) -> Identity | None:
    """The one person with this e-mail (case-insensitive on the normalized address): the live identity
    (not ended) whose `email_normalized` matches, or None. Two live identities can share an address (the
    HR system and a directory both list the person, a rehire, a shared mailbox), so the one rule that
    decides is, in order:

    1. status: active before suspended (any other status), before terminated;
    2. the authoritative source's identity before any other's;
    3. the lowest id (the oldest row).

    `humans_only`: service identities never match (single sign-on links people only).
    Every lookup of a person by e-mail (sign-in, user admin, account linking, campaign definitions,
    reviewer hand-offs, notices) calls this function.
    """
    address = normalized_email(email)
    if address is None:
        return None
    stmt = (
        select(Identity)
        .outerjoin(Source, Source.id == Identity.source_id)
        .where(Identity.email_normalized == address, Identity.ended_at.is_(None))
        .order_by(case((Identity.status == PersonStatus.ACTIVE, 0), (Identity.status == PersonStatus.TERMINATED, 2),
                       else_=1),
                  case((Source.authoritative.is_(True), 0), else_=1), Identity.id)
        .limit(1)
    )
    if humans_only:
        stmt = stmt.where(Identity.kind == "human")
    return session.scalars(stmt).first()


def effective_access(session: Session, account_ids: Sequence[int], at: datetime | None = None) -> list[HeldGrant]:
    """Every grant the accounts hold, directly and through groups, now or at a past moment `at`."""
    if not account_ids:
        return []
    params: dict[str, Any] = {"true": True}
    names = []
    for i, aid in enumerate(account_ids):
        params[f"a{i}"] = aid
        names.append(f":a{i}")
    window = _window(at, params)
    cte = MEMBERSHIP_CTE.format(grant_window=window, accounts=", ".join(names))
    rows = session.execute(
        text_with_dates(
            cte
            + f"""
            SELECT g.id AS grant_id, g.principal_account_id AS account_id, '' AS path
            FROM access_grant g WHERE g.principal_type = 'account' AND {window} AND g.principal_account_id IN ({', '.join(names)})
            UNION ALL
            SELECT g.id, m.account_id, m.path FROM membership m
            JOIN access_grant g ON g.principal_type = 'resource' AND g.principal_resource_id = m.group_id
            WHERE {window}
            """,
            params,
        ),
        params,
    ).all()
    grant_ids = {r.grant_id for r in rows}
    group_ids = {int(x) for r in rows for x in r.path.strip("/").split("/") if x}
    grants = {g.id: g for g in session.scalars(select(Grant).where(Grant.id.in_(grant_ids)))} if grant_ids else {}
    accounts = {a.id: a for a in session.scalars(select(Account).where(Account.id.in_(account_ids)))}
    groups = {r.id: r for r in session.scalars(select(Resource).where(Resource.id.in_(group_ids)))} if group_ids else {}
    out: list[HeldGrant] = []
    seen: set[tuple[int, int, str]] = set()
    for r in rows:
        key = (r.grant_id, r.account_id, r.path)
        if key in seen:
            continue
        seen.add(key)
        path = [groups[int(x)] for x in r.path.strip("/").split("/") if x]
        path.reverse()  # the group that holds the grant first, the account's own group last
        out.append(HeldGrant(grants[r.grant_id], accounts[r.account_id], path))
    out.sort(key=lambda h: (h.account.source_id, h.grant.entitlement.resource.name if h.grant.entitlement.resource else "",
                            h.grant.entitlement.name, len(h.via)))
    return out


@dataclass
class Page:
    rows: list[Any]
    next_after: str | None
    total: int | None = None


class BadCursor(ValueError):
    """An `after=` page link that is not one Attest made (the pages answer 400)."""


def name_cursor(after: str) -> tuple[str, int]:
    """The (name, id) of a `name\\x1fid` page link; BadCursor for anything else."""
    name, sep, raw_id = after.rpartition("\x1f")
    last_id = parse_int(raw_id)
    if not sep or last_id is None or len(name) > 1000:
        raise BadCursor("That page link is not valid any more: start from the first page.")
    return name, last_id


def name_page(session: Session, stmt: Any, name_col: Any, after: str | None, limit: int, *,
              entity: Any = lambda row: row, scalars: bool = False) -> Page:
    """One page of `stmt` in (name, id) order: the rows after the `name\x1fid` link `after` (BadCursor when it
    is not one) and the link of the next page; `entity` picks the named object of a row."""
    id_col = name_col.class_.id
    if after:
        name, last_id = name_cursor(after)
        stmt = stmt.where(or_(name_col > name, and_(name_col == name, id_col > last_id)))
    stmt = stmt.order_by(name_col, id_col).limit(limit + 1)
    rows = list(session.scalars(stmt) if scalars else session.execute(stmt))
    last = entity(rows[limit - 1]) if len(rows) > limit else None
    next_after = f"{getattr(last, name_col.key)}\x1f{last.id}" if last is not None else None
    return Page(rows[:limit], next_after)


def search_identities(session: Session, q: str = "", after: str | None = None, limit: int = 50,
                      status: str | None = None, department: str | None = None) -> Page:
    stmt = select(Identity).where(Identity.ended_at.is_(None))
    if q:
        like = f"%{q.lower()}%"
        stmt = stmt.where(or_(func.lower(Identity.display_name).like(like), Identity.email_normalized.like(like),
                              func.lower(Identity.employee_id).like(like)))
    if status:
        stmt = stmt.where(Identity.status == status)
    if department:
        stmt = stmt.where(Identity.department == department)
    return name_page(session, stmt, Identity.display_name, after, limit, scalars=True)


def identity_accounts(session: Session, identity_id: int) -> list[Account]:
    return list(session.scalars(
        select(Account).where(Account.identity_id == identity_id).order_by(Account.ended_at.is_not(None), Account.source_id)
    ))


def manager_chain(session: Session, identity: Identity, limit: int = 12) -> list[Identity]:
    chain, seen = [], {identity.id}
    current = identity
    while current.manager_id and len(chain) < limit:
        current = session.get(Identity, current.manager_id)
        if current is None or current.id in seen:
            break
        seen.add(current.id)
        chain.append(current)
    return chain


def direct_reports(session: Session, identity_id: int) -> list[Identity]:
    return list(session.scalars(
        select(Identity).where(Identity.manager_id == identity_id, Identity.ended_at.is_(None)).order_by(Identity.display_name)
    ))


def list_resources(session: Session, q: str = "", source_id: int | None = None, rtype: str | None = None,
                   after: str | None = None, limit: int = 50) -> Page:
    grants = (
        select(Entitlement.resource_id, func.count(Grant.id).label("n"))
        .join(Grant, Grant.entitlement_id == Entitlement.id)
        .where(Grant.ended_at.is_(None))
        .group_by(Entitlement.resource_id)
        .subquery()
    )
    stmt = (
        select(Resource, func.coalesce(grants.c.n, 0))
        .outerjoin(grants, grants.c.resource_id == Resource.id)
        .where(Resource.ended_at.is_(None))
    )
    if q:
        stmt = stmt.where(func.lower(Resource.name).like(f"%{q.lower()}%"))
    if source_id:
        stmt = stmt.where(Resource.source_id == source_id)
    if rtype:
        stmt = stmt.where(Resource.type == rtype)
    page = name_page(session, stmt, Resource.name, after, limit, entity=lambda row: row[0])
    return Page([(r[0], r[1]) for r in page.rows], page.next_after)


def resource_types(session: Session) -> list[str]:
    return list(session.scalars(select(Resource.type).where(Resource.ended_at.is_(None)).distinct().order_by(Resource.type)))


def resource_grants(session: Session, resource_id: int, after: int | None = None, limit: int = 100,
                    at: datetime | None = None) -> Page:
    """Who holds the resource directly: now, or at a past moment `at`."""
    stmt = (
        select(Grant)
        .join(Entitlement, Entitlement.id == Grant.entitlement_id)
        .where(Entitlement.resource_id == resource_id)
    )
    if at is None:
        stmt = stmt.where(Grant.ended_at.is_(None))
    else:
        stmt = stmt.where(Grant.first_seen_at <= at, or_(Grant.ended_at.is_(None), Grant.ended_at > at))
    if after:
        stmt = stmt.where(Grant.id > after)
    rows = session.scalars(stmt.order_by(Grant.id).limit(limit + 1)).all()
    return Page(list(rows[:limit]), str(rows[limit - 1].id) if len(rows) > limit else None)


def resource_entitlements(session: Session, resource_id: int) -> list[tuple[Entitlement, int]]:
    stmt = (
        select(Entitlement, func.count(Grant.id))
        .outerjoin(Grant, and_(Grant.entitlement_id == Entitlement.id, Grant.ended_at.is_(None)))
        .where(Entitlement.resource_id == resource_id, Entitlement.ended_at.is_(None))
        .group_by(Entitlement.id)
        .order_by(Entitlement.privileged.desc(), Entitlement.name)
    )
    return [(e, n) for e, n in session.execute(stmt).all()]


def orphaned_accounts(session: Session, after: int | None = None, limit: int = 50, source_id: int | None = None) -> Page:
    held = (
        select(Grant.principal_account_id, func.count().label("n"))
        .where(Grant.ended_at.is_(None), Grant.principal_type == "account")
        .group_by(Grant.principal_account_id)
        .subquery()
    )
    stmt = (
        select(Account, func.coalesce(held.c.n, 0))
        .outerjoin(held, held.c.principal_account_id == Account.id)
        .where(Account.ended_at.is_(None), Account.identity_id.is_(None))
    )
    if source_id:
        stmt = stmt.where(Account.source_id == source_id)
    if after:
        stmt = stmt.where(Account.id > after)
    rows = session.execute(stmt.order_by(Account.id).limit(limit + 1)).all()
    return Page([(a, n) for a, n in rows[:limit]], str(rows[limit - 1][0].id) if len(rows) > limit else None)


def terminated_with_access(session: Session, after: int | None = None, limit: int = 50) -> Page:
    """People the IdP says are terminated whose accounts still hold active grants."""
    held = (
        select(Account.identity_id, func.count(func.distinct(Account.id)).label("accounts"),
               func.count(Grant.id).label("grants"))
        .join(Grant, and_(Grant.principal_account_id == Account.id, Grant.ended_at.is_(None)))
        .where(Account.ended_at.is_(None), Account.identity_id.is_not(None))
        .group_by(Account.identity_id)
        .subquery()
    )
    stmt = (
        select(Identity, held.c.accounts, held.c.grants)
        .join(held, held.c.identity_id == Identity.id)
        .where(Identity.status == PersonStatus.TERMINATED)
    )
    if after:
        stmt = stmt.where(Identity.id > after)
    rows = session.execute(stmt.order_by(Identity.id).limit(limit + 1)).all()
    return Page([(i, a, g) for i, a, g in rows[:limit]], str(rows[limit - 1][0].id) if len(rows) > limit else None)


def stats(session: Session) -> list[dict[str, Any]]:

    counts = active_counts(session)
    out = []
    for source in session.scalars(select(Source).order_by(Source.name)):
        row = {"source": source.name, "kind": source.kind, "enabled": source.enabled}
        for label in ("identities", "accounts", "orphaned_accounts", "resources", "entitlements", "grants"):
            row[label] = counts.get(source.id, {}).get(label, 0)
        out.append(row)
    return out
