"""Managing the people who sign in: listing users and linking a user to a person (Identity).

Role grants go through `attest.auth.login.set_local_roles` (audited `user.roles`). Services take the
session first and never commit.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from attest.auth.login import UserError, find_identity_by_email, set_local_roles
from attest.auth.models import ROLES, User
from attest.entitlements.models import Identity
from attest.inputs import parse_int
from attest.trail.chain import record as audit

PAGE_SIZE = 100


@dataclass
class UserPage:
    rows: list[User]
    next_after: str | None


def list_users(session: Session, q: str = "", after: str | None = None, limit: int = PAGE_SIZE) -> UserPage:
    """Users by e-mail, keyset-paged (`after` = the last e-mail shown); `q` matches e-mail or name."""
    stmt = select(User).order_by(User.email)
    if q:
        like = f"%{q.strip().lower()}%"
        stmt = stmt.where(or_(func.lower(User.email).like(like), func.lower(User.display_name).like(like)))
    if after:
        stmt = stmt.where(User.email > after)
    rows = list(session.scalars(stmt.limit(limit + 1)).unique())
    return UserPage(rows[:limit], rows[limit - 1].email if len(rows) > limit else None)


def change_local_roles(session: Session, user_id: int, roles: list[str], actor: User) -> User:
    """Grant or remove Attest's own roles. An admin cannot take their own admin role away (ask another
    admin), so Attest always keeps at least the admin making changes."""
    user = session.get(User, user_id)
    if user is None:
        raise UserError(f"no user {user_id}")
    if user.id == actor.id and "admin" in (user.local_roles or []) and "admin" not in roles \
            and "admin" not in (user.idp_roles or []):
        raise UserError("You cannot remove your own admin role: ask another administrator.")
    return set_local_roles(session, user_id, [r for r in roles if r in ROLES], actor=actor.email)


def link_identity(session: Session, user_id: int, person: str, actor: str) -> User:
    """Link a user to the active person with this e-mail (or Identity id), or unlink with an empty value."""
    user = session.get(User, user_id)
    if user is None:
        raise UserError(f"no user {user_id}")
    person = (person or "").strip()
    identity: Identity | None = None
    if person:
        if person.isdigit():
            number = parse_int(person)  # an id the database can hold, in ASCII digits; else nobody
            identity = session.get(Identity, number) if number is not None else None
            if identity is not None and identity.ended_at is not None:
                identity = None
        else:
            identity = find_identity_by_email(session, person)
        if identity is None:
            raise UserError(f"No person with the e-mail or id {person!r} in the directory. Nothing was changed.")
    new_id = identity.id if identity else None
    if new_id != user.identity_id:
        audit(session, actor=actor, action="user.link", object_type="user", object_id=str(user.id),
              before={"identity_id": user.identity_id}, after={"identity_id": new_id, "by": "admin"})
        user.identity_id = new_id
        session.flush()
        session.refresh(user)
    return user
