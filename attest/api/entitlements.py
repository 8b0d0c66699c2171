"""People (identities), accounts with effective access now or as of a moment, resources, entitlements and
grants: keyset-paged and filterable, through attest/entitlements/queries.py and history.py (the people and
resource pages' own queries). Admins and auditors (scope `entitlements:read`).
"""

from __future__ import annotations

from typing import Any

from flask import request
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import or_, select

from attest.api.core import (
    ApiError,
    Id,
    Paging,
    Routes,
    bad_cursors,
    caller,
    check_if_match,
    decode_cursor,
    encode_cursor,
    get_or_404,
    id_page,
    iso,
    locked_or_404,
    make_etag,
    model_of,
    out,
    page_of,
    set_etag,
)
from attest.entitlements import correlation, history, queries
from attest.entitlements.models import AccessChange, Account, Entitlement, Grant, Identity, Resource
from attest.web import db, settings, write

routes = Routes("entitlements")
people = Routes("identities")


class IdentityQuery(Paging):
    q: str = Field(default="", max_length=200)
    status: str | None = Field(default=None, max_length=30)
    department: str | None = Field(default=None, max_length=200)


class AsOfQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    at: str | None = Field(default=None, max_length=64, description="a day (end of that day) or a timestamp")


class ResourceQuery(Paging):
    q: str = Field(default="", max_length=200)
    source_id: Id | None = None
    type: str | None = Field(default=None, max_length=50)


class EntitlementQuery(Paging):
    source_id: Id | None = None
    resource_id: Id | None = None
    privileged: bool | None = None


class GrantQuery(Paging):
    source_id: Id | None = None
    entitlement_id: Id | None = None
    resource_id: Id | None = None
    account_id: Id | None = None
    at: str | None = Field(default=None, max_length=64, description="held at this moment (default: now)")


# the answers about rows: the columns named here, typed as attest/entitlements/models.py declares them
IdentityOut = model_of(Identity, "IdentityOut", "id display_name email employee_id department title manager_id "
                       "status kind first_seen_at ended_at")
AccountOut = model_of(Account, "AccountOut", "id source_id external_id login email display_name status kind "
                      "identity_id link_method mfa_enabled last_login_at first_seen_at ended_at")


class HeldOut(BaseModel):
    grant_id: int
    account_id: int
    entitlement_id: int
    entitlement: str
    resource_id: int | None = None
    resource: str | None = None
    privileged: bool
    how: str
    via: list[int]
    first_seen_at: str
    ended_at: str | None = None
    held_since: str | None = None
    held_since_basis: str | None = None


class Access(BaseModel):
    as_of: str | None = None
    held: list[HeldOut]
    unknown_sources: list[str]


class IdentityDetail(IdentityOut):
    accounts: list[AccountOut]
    access: Access


class AccountDetail(AccountOut):
    access: Access


IdentityList = page_of(IdentityOut, "IdentityList")


ResourceOut = model_of(Resource, "ResourceOut", "id source_id external_id type name description is_group parent_id "
                       "active_grants first_seen_at ended_at", active_grants=int | None)
ResourceList = page_of(ResourceOut, "ResourceList")


EntitlementOut = model_of(Entitlement, "EntitlementOut", "id source_id resource_id name display_name purpose "
                          "privileged first_seen_at ended_at")
EntitlementList = page_of(EntitlementOut, "EntitlementList")


GrantOut = model_of(Grant, "GrantOut", "id source_id entitlement_id principal_type principal_account_id "
                    "principal_resource_id first_seen_at ended_at ended_reason")
ChangeOut = model_of(AccessChange, "ChangeOut", "id at change reason grant_id entitlement_id sync_run_id source_id",
                     entitlement_id=int)
ChangeList = page_of(ChangeOut, "ChangeList")


class ChangeQuery(Paging):
    since: str | None = Field(default=None, max_length=64, description="only changes at or after this moment")


class ResourceGrantQuery(Paging):
    at: str | None = Field(default=None, max_length=64, description="held at this moment (default: now)")


class LinkIn(BaseModel):
    """The person the account belongs to (an identity id), or null to unlink it; later syncs keep it."""

    model_config = ConfigDict(extra="forbid")
    identity_id: Id | None


GrantList = page_of(GrantOut, "GrantList")


def identity_out(i: Identity) -> dict[str, Any]:
    return out(IdentityOut, i)


def account_out(a: Account) -> dict[str, Any]:
    return out(AccountOut, a)


def resource_out(r: Resource, n: int | None = None) -> dict[str, Any]:
    return out(ResourceOut, r, active_grants=n)


def entitlement_out(e: Entitlement) -> dict[str, Any]:
    return out(EntitlementOut, e)


def grant_out(g: Grant) -> dict[str, Any]:
    return out(GrantOut, g)


def change_out(c: AccessChange, entitlement_id: int) -> dict[str, Any]:
    return out(ChangeOut, c, entitlement_id=entitlement_id)


def _as_of(raw: str | None) -> history.AsOf | None:
    try:
        return history.resolve_as_of({"at": raw or ""}, settings().zone)
    except history.AsOfError as exc:
        raise ApiError(400, str(exc), code="bad_timestamp") from None


def _access(accounts: list[Account], as_of: history.AsOf | None) -> dict[str, Any]:
    found = history.access_at(db(), accounts, as_of)
    held = []
    for h in found.held:
        g, e = h.grant, h.grant.entitlement
        since = found.since.get(g.id)
        resource = e.resource if e is not None else None
        held.append({"grant_id": g.id, "account_id": h.account.id, "entitlement_id": g.entitlement_id,
                     "entitlement": e.name, "resource_id": e.resource_id,
                     "resource": resource.name if resource is not None else None, "privileged": bool(e.privileged),
                     "how": h.how, "via": [r.id for r in h.via], "first_seen_at": iso(g.first_seen_at),
                     "ended_at": iso(g.ended_at), "held_since": iso(since.at) if since else None,
                     "held_since_basis": since.basis if since else None})
    return {"as_of": iso(as_of.instant) if as_of else None, "held": held,
            "unknown_sources": [f.source_name for f in found.unknown]}


@people.get("/identities", "entitlements:read", "read_all", query=IdentityQuery, resp=IdentityList)
def list_identities():
    """People (active identities) by name; `q` searches name, e-mail and employee id."""
    q: IdentityQuery = request.context.query
    after = decode_cursor("identities", q.after, of=str)
    with bad_cursors():
        page = queries.search_identities(db(), q=q.q.strip(), after=after, limit=q.limit, status=q.status or None,
                                         department=q.department or None)
    return {"data": [identity_out(i) for i in page.rows], "next": encode_cursor("identities", page.next_after)}


@people.get("/identities/<int:identity_id>", "entitlements:read", "read_all", query=AsOfQuery, resp=IdentityDetail)
def get_identity(identity_id: int):
    """A person with their accounts and effective access now, or as of `at` (a day or a timestamp)."""
    q: AsOfQuery = request.context.query
    identity = get_or_404(Identity, identity_id)
    as_of = _as_of(q.at)
    accounts = queries.identity_accounts(db(), identity_id)
    return {**identity_out(identity), "accounts": [account_out(a) for a in accounts],
            "access": _access(accounts, as_of)}


@people.get("/accounts/<int:account_id>", "entitlements:read", "read_all", query=AsOfQuery, resp=AccountDetail)
def get_account(account_id: int):
    """An account with its effective access (direct and through groups) now, or as of `at`."""
    q: AsOfQuery = request.context.query
    account = get_or_404(Account, account_id)
    set_etag(_account_etag(account))
    return {**account_out(account), "access": _access([account], _as_of(q.at))}


def _account_etag(account: Account) -> str:
    return make_etag("account", account.id, account.identity_id, account.link_method)


@people.put("/accounts/<int:account_id>/link", "entitlements:write", "admin", json=LinkIn, resp=AccountOut)
def link_account(account_id: int):
    """Link an account to a person by hand (an orphaned account, a wrong automatic link), or unlink it with
    null: as the orphaned-accounts page does (attest/entitlements/correlation.py); audited. If-Match: 412 when
    its link changed since it was read."""
    body: LinkIn = request.context.json
    with write() as session:
        account = locked_or_404(session, Account, account_id)
        check_if_match(_account_etag(account))
        if body.identity_id is not None:
            person = session.get(Identity, body.identity_id)
            if person is None or person.ended_at is not None:
                raise ApiError(400, f"No current person has the id {body.identity_id}.")
        correlation.link_manually(session, account_id, body.identity_id, caller().actor)
    account = db().get(Account, account_id)
    set_etag(_account_etag(account))
    return account_out(account)


@routes.get("/resources", "entitlements:read", "read_all", query=ResourceQuery, resp=ResourceList)
def list_resources():
    """Active resources by name, with their count of active grants."""
    q: ResourceQuery = request.context.query
    after = decode_cursor("resources", q.after, of=str)
    with bad_cursors():
        page = queries.list_resources(db(), q=q.q.strip(), source_id=q.source_id, rtype=q.type, after=after,
                                      limit=q.limit)
    return {"data": [resource_out(r, n) for r, n in page.rows], "next": encode_cursor("resources", page.next_after)}


@routes.get("/resources/<int:resource_id>", "entitlements:read", "read_all", resp=ResourceOut)
def get_resource(resource_id: int):
    resource = get_or_404(Resource, resource_id)
    return resource_out(resource)


@routes.get("/entitlements", "entitlements:read", "read_all", query=EntitlementQuery, resp=EntitlementList)
def list_entitlements():
    """Active entitlements by id, filterable by source, resource and privileged."""
    q: EntitlementQuery = request.context.query
    after = decode_cursor("entitlements", q.after, of=int)
    stmt = select(Entitlement).where(Entitlement.ended_at.is_(None))
    if q.source_id:
        stmt = stmt.where(Entitlement.source_id == q.source_id)
    if q.resource_id:
        stmt = stmt.where(Entitlement.resource_id == q.resource_id)
    if q.privileged is not None:
        stmt = stmt.where(Entitlement.privileged.is_(q.privileged))
    return id_page("entitlements", stmt, Entitlement.id, after, q.limit, entitlement_out)


@routes.get("/grants", "entitlements:read", "read_all", query=GrantQuery, resp=GrantList)
def list_grants():
    """Direct grants held now (or at `at`), by id; filter by source, entitlement, resource or account."""
    q: GrantQuery = request.context.query
    after = decode_cursor("grants", q.after, of=int)
    as_of = _as_of(q.at)
    stmt = select(Grant)
    if as_of is None:
        stmt = stmt.where(Grant.ended_at.is_(None))
    else:
        stmt = stmt.where(Grant.first_seen_at <= as_of.instant,
                          or_(Grant.ended_at.is_(None), Grant.ended_at > as_of.instant))
    if q.source_id:
        stmt = stmt.where(Grant.source_id == q.source_id)
    if q.entitlement_id:
        stmt = stmt.where(Grant.entitlement_id == q.entitlement_id)
    if q.resource_id:
        stmt = stmt.where(Grant.entitlement_id.in_(select(Entitlement.id).where(Entitlement.resource_id == q.resource_id)))
    if q.account_id:
        stmt = stmt.where(Grant.principal_account_id == q.account_id)
    return id_page("grants", stmt, Grant.id, after, q.limit, grant_out)


@people.get("/accounts/<int:account_id>/changes", "entitlements:read", "read_all", query=ChangeQuery, resp=ChangeList)
def account_changes(account_id: int):
    """The account's access history: every grant it was seen to gain or lose, newest first (one row per
    grant added or ended by a sync, or ended by remediation), with the run that saw it."""
    q: ChangeQuery = request.context.query
    get_or_404(Account, account_id)
    after = decode_cursor("changes", q.after, of=int)
    since = _as_of(q.since)
    stmt = (select(AccessChange, Grant.entitlement_id).join(Grant, Grant.id == AccessChange.grant_id)
            .where(Grant.principal_account_id == account_id))
    if since is not None:
        stmt = stmt.where(AccessChange.at >= since.instant)
    return id_page("changes", stmt, AccessChange.id, after, q.limit, change_out, newest_first=True)


@routes.get("/resources/<int:resource_id>/grants", "entitlements:read", "read_all", query=ResourceGrantQuery, resp=GrantList)
def resource_grants(resource_id: int):
    """Who holds the resource directly, now or at `at` (the resource page's query); 409 when Attest had not
    read the resource's source yet at that moment (it cannot say who held it then)."""
    q: ResourceGrantQuery = request.context.query
    session = db()
    resource = get_or_404(Resource, resource_id)
    after = decode_cursor("resource_grants", q.after, of=int)
    as_of = _as_of(q.at)
    if as_of is not None:
        first = history.first_reads(session, [resource.source_id])[resource.source_id]
        if not first.known_at(as_of.instant):
            raise ApiError(409, f"Attest had not read {first.source_name} yet at that moment.",
                           code="unknown_at_that_moment")
    page = queries.resource_grants(session, resource_id, after=after, limit=q.limit,
                                   at=as_of.instant if as_of else None)
    next_after = int(page.next_after) if page.next_after else None
    return {"data": [grant_out(g) for g in page.rows], "next": encode_cursor("resource_grants", next_after)}
