"""Link accounts to identities, and identities to their managers.

Identities come from the source marked authoritative (the IdP). An account is linked, in this order, by:
1. a manual link (never changed by a sync),
2. `authoritative`: the account *is* the identity's account in the authoritative source,
3. `saml_nameid`: the account's SAML NameID is an identity's e-mail or login,
4. `email`: case-insensitive, after mapping alias domains (ATTEST_ALIAS_DOMAINS=alias.example=example.com),
5. `tag`: an e-mail from a tag (an AWS IAM user's `email` tag),
6. `username`: the account's login is an identity's login or the local part of its e-mail.
Unlinked accounts are orphaned. Only rows whose link changes are written.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from attest.config import Settings
from attest.db import utcnow
from attest.dialects import bulk_update, text_with_dates
from attest.entitlements.models import Account, Identity, Resource, ResourceOwner, Source
from attest.trail.chain import record as audit


def email_normalizer(settings: Settings) -> Callable[[str | None], str | None]:
    aliases = dict(settings.alias_domains)

    def normalize(email: str | None) -> str | None:
        if not email or "@" not in email:
            return None
        local, _, domain = email.strip().lower().rpartition("@")
        return f"{local}@{aliases.get(domain, domain)}"

    return normalize


STREAM_ROWS = 10_000  # identities read per round trip while building the lookup tables


class _Index:
    """Lookup tables over active identities; ambiguous keys (two people, one key) map to None.

    Only the keys the accounts being matched (`rows`, as `match` reads them) can ask for are kept, and the
    identities are streamed: the tables grow with those accounts (the few that are not the IdP's own),
    not with the directory (at a million people, every key of every person took about 900 MB)."""

    def __init__(self, session: Session, normalize: Callable[[str | None], str | None], rows: Sequence[Any]) -> None:
        self.by_source_ext: dict[tuple[int, str], int] = {}
        self.by_email: dict[str, int | None] = {}
        self.by_login: dict[str, int | None] = {}
        self.by_local: dict[str, int | None] = {}
        want_ext: set[tuple[int, str]] = set()
        want_email: set[str] = set()
        want_login: set[str] = set()
        want_local: set[str] = set()
        for _, source_id, identity_ref, saml, email, tag_email, login in rows:
            if identity_ref:
                want_ext.add((source_id, identity_ref))
            want_email.update(normalize(v) or "" for v in (saml, email, tag_email))
            if saml:
                want_login.add(saml.strip().lower())
            if login:
                key = login.strip().lower()
                want_login.add(key)
                if "@" in key:
                    want_email.add(normalize(key) or "")
                else:
                    want_local.add(key)
        want_email.discard("")
        identities = session.execute(
            select(Identity.id, Identity.source_id, Identity.external_id, Identity.email, Identity.login).where(
                Identity.ended_at.is_(None)
            ).execution_options(yield_per=STREAM_ROWS)
        )
        for iid, sid, ext, email, login in identities:
            if sid is not None and (sid, ext) in want_ext:
                self.by_source_ext[(sid, ext)] = iid
            norm = normalize(email)
            if norm:
                if norm in want_email:
                    self._put(self.by_email, norm, iid)
                local = norm.split("@", 1)[0]
                if local in want_local:
                    self._put(self.by_local, local, iid)
            if login:
                key = login.strip().lower()
                if key in want_login:
                    self._put(self.by_login, key, iid)
                lnorm = normalize(login)
                if lnorm and lnorm in want_email and lnorm not in self.by_email:
                    self._put(self.by_email, lnorm, iid)

    @staticmethod
    def _put(table: dict[str, int | None], key: str, iid: int) -> None:
        if key in table and table[key] != iid:
            table[key] = None  # ambiguous: never guess between two people
        else:
            table[key] = iid


def match(
    index: _Index, normalize: Callable[[str | None], str | None], authoritative_id: int | None, row: Any
) -> tuple[int | None, str | None]:
    _, source_id, identity_ref, saml, email, tag_email, login = row
    if authoritative_id is not None and source_id == authoritative_id and identity_ref:
        iid = index.by_source_ext.get((source_id, identity_ref))
        if iid:
            return iid, "authoritative"
    if saml:
        iid = index.by_email.get(normalize(saml) or "") or index.by_login.get(saml.strip().lower())
        if iid:
            return iid, "saml_nameid"
    if email:
        iid = index.by_email.get(normalize(email) or "")
        if iid:
            return iid, "email"
    if tag_email:
        iid = index.by_email.get(normalize(tag_email) or "")
        if iid:
            return iid, "tag"
    if login:
        key = login.strip().lower()
        iid = index.by_login.get(key) or (index.by_email.get(normalize(key) or "") if "@" in key else None)
        if not iid and "@" not in key:
            iid = index.by_local.get(key)
        if iid:
            return iid, "username"
    return None, None


def own_person_sql(account: str, source_param: str) -> str:
    """SQL for the id of the active identity an account of the authoritative source names (its
    identity_ref), NULL when none: the `authoritative` link. `source_param` is the bound source id."""
    return (f"(SELECT i.id FROM identity i WHERE i.source_id = :{source_param} "
            f"AND i.external_id = {account}.identity_ref AND i.ended_at IS NULL)")


def authoritative_source_id(session: Session) -> int | None:
    """The source whose identities accounts are linked to (the first authoritative, enabled one)."""
    return session.scalar(select(Source.id).where(Source.authoritative.is_(True), Source.enabled.is_(True))
                          .order_by(Source.id).limit(1))


def correlate(session: Session, settings: Settings, source_ids: Sequence[int] | None = None) -> int:
    """Re-link the active, not manually linked accounts of these sources (all when None).

    The authoritative source's own accounts (an account naming its identity) are linked set-based in
    SQL: they are most of the accounts, and their link outranks every other method. The others are
    matched in Python against lookup tables of the active identities. Returns how many accounts changed link.
    """
    normalize = email_normalizer(settings)
    authoritative_id = authoritative_source_id(session)
    now = utcnow()
    linked = 0
    params = {"auth": authoritative_id, "now": now}
    scope = "" if source_ids is None else " AND a.source_id IN ({})".format(
        ", ".join(str(int(s)) for s in source_ids))
    own = f"a.source_id = :auth AND {own_person_sql('a', 'auth')} IS NOT NULL"
    not_manual = "a.ended_at IS NULL AND (a.link_method IS NULL OR a.link_method <> 'manual')"
    if authoritative_id is not None and (source_ids is None or authoritative_id in source_ids):
        linked += session.execute(text_with_dates(
            "UPDATE account AS a SET identity_id = i.id, link_method = 'authoritative', linked_at = :now "
            f"FROM identity i WHERE {not_manual} AND a.source_id = :auth AND i.source_id = :auth "
            "AND i.external_id = a.identity_ref AND i.ended_at IS NULL AND (a.link_method IS NULL "
            "OR a.link_method <> 'authoritative' OR a.identity_id IS NULL OR a.identity_id <> i.id)", params
        ), params).rowcount
    rest = session.execute(text(
        "SELECT a.id, a.source_id, a.identity_ref, a.saml_nameid, a.email, a.tag_email, a.login, a.identity_id, "
        f"a.link_method FROM account a WHERE {not_manual}{scope}"
        + (f" AND NOT ({own})" if authoritative_id is not None else "")
    ), params).all()
    if not rest:
        return linked
    index = _Index(session, normalize, [row[:7] for row in rest])
    changes: list[tuple] = []
    for row in rest:
        iid, method = match(index, normalize, authoritative_id, row[:7])
        if (iid, method) != (row[7], row[8]):
            changes.append((row[0], iid, method, now if iid else None))
    bulk_update(session, "account", ("identity_id", "link_method", "linked_at"), changes)
    return linked + len(changes)


def resolve_managers(session: Session, source_id: int) -> int:
    """Set Identity.manager_id from manager_ref (an external id, login or e-mail) within the source.

    References by external id (nearly all) are resolved set-based in SQL; the rest (a login or an
    e-mail, a cleared reference) in Python."""
    changed = session.execute(text(
        "UPDATE identity AS i SET manager_id = m.id FROM identity m WHERE i.source_id = :sid "
        "AND m.source_id = :sid AND m.external_id = i.manager_ref AND m.id <> i.id "
        "AND (i.manager_id IS NULL OR i.manager_id <> m.id)"
    ), {"sid": source_id}).rowcount
    rest = session.execute(text(  # an anti-join: a NOT EXISTS under OR would be a subquery per person
        "SELECT i.id, i.manager_ref, i.manager_id FROM identity i LEFT JOIN identity m ON m.source_id = i.source_id "
        "AND m.external_id = i.manager_ref AND m.id <> i.id WHERE i.source_id = :sid "
        "AND ((i.manager_ref IS NULL AND i.manager_id IS NOT NULL) OR (i.manager_ref IS NOT NULL AND m.id IS NULL))"
    ), {"sid": source_id}).all()
    if not rest:
        return changed
    rows = session.execute(
        select(Identity.id, Identity.external_id, Identity.login, Identity.email).where(Identity.source_id == source_id)
    ).all()
    ext = {r.external_id: r.id for r in rows}
    by_login = {r.login.lower(): r.id for r in rows if r.login}
    by_email = {r.email.lower(): r.id for r in rows if r.email}
    changes = []
    for iid, manager_ref, manager_id in rest:
        ref = (manager_ref or "").strip()
        target = None
        if ref:
            target = ext.get(ref) or by_login.get(ref.lower()) or by_email.get(ref.lower())
        if target == iid:
            target = None
        if target != manager_id:
            changes.append((iid, target))
    bulk_update(session, "identity", ("manager_id",), changes)
    return changed + len(changes)


def sync_resource_owners(session: Session, source_id: int) -> None:
    """Make the `sync` owner rows of the source's resources match their owner_refs (account external ids)."""
    accounts = dict(
        session.execute(
            select(Account.external_id, Account.id).where(Account.source_id == source_id, Account.ended_at.is_(None))
        ).all()
    )
    wanted: set[tuple[int, int]] = set()
    for rid, refs in session.execute(
        select(Resource.id, Resource.owner_refs).where(Resource.source_id == source_id, Resource.ended_at.is_(None))
    ):
        for ref in refs or []:
            aid = accounts.get(ref)
            if aid:
                wanted.add((rid, aid))
    existing = {
        (r.resource_id, r.account_id): r.id
        for r in session.execute(
            select(ResourceOwner.id, ResourceOwner.resource_id, ResourceOwner.account_id)
            .join(Resource, Resource.id == ResourceOwner.resource_id)
            .where(Resource.source_id == source_id, ResourceOwner.origin == "sync")
        )
    }
    stale = [oid for key, oid in existing.items() if key not in wanted]
    if stale:
        session.execute(ResourceOwner.__table__.delete().where(ResourceOwner.id.in_(stale)))
    new = [{"resource_id": rid, "account_id": aid, "origin": "sync", "created_at": utcnow()}
           for rid, aid in wanted - set(existing)]
    if new:
        session.execute(ResourceOwner.__table__.insert(), new)


def link_manually(session: Session, account_id: int, identity_id: int | None, actor: str) -> Account:
    """Link (or unlink, with None) an account by hand; later syncs keep it."""
    account = session.get(Account, account_id)
    if account is None:
        raise ValueError(f"no account {account_id}")
    if identity_id is not None and session.get(Identity, identity_id) is None:
        raise ValueError(f"no identity {identity_id}")
    before = {"identity_id": account.identity_id, "link_method": account.link_method}
    account.identity_id = identity_id
    account.link_method = "manual"  # a manual unlink also sticks: the sync will not re-link it
    account.linked_at = utcnow()
    account.linked_by = actor
    audit(session, actor=actor, action="account.link", object_type="account", object_id=str(account.id),
          before=before, after={"identity_id": identity_id, "link_method": account.link_method})
    return account
