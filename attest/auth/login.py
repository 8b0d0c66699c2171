"""Signing in: local break-glass passwords (rate-limited, with lock-out) and the session rules.

Sessions are Flask's signed cookies, hardened: the session is cleared and re-issued at sign-in (so a
pre-login session cannot be fixated), it carries its sign-in time and last activity for the absolute and
idle time-outs, and the user's `session_generation` is part of the login id, so bumping it ends every
session of that user. OIDC single sign-on lives in `attest.auth.oidc`.
"""

from __future__ import annotations

import secrets
from datetime import timedelta
from urllib.parse import urlsplit

from sqlalchemy import func, select
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from attest.audit.log import record as audit
from attest.auth.models import ROLES, User
from attest.config import Settings
from attest.db import utcnow
from attest.entitlements.models import Identity

MIN_PASSWORD = 12
# a hash to compare against when the user does not exist, so timing does not reveal which e-mails exist
_DUMMY_HASH = generate_password_hash(secrets.token_urlsafe(16))


class LoginError(Exception):
    """Shown to the user as is: never says whether the e-mail exists."""


class UserError(ValueError):
    pass


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise UserError(f"a password must be at least {MIN_PASSWORD} characters")
    return generate_password_hash(password)


def find_identity_by_email(session: Session, email: str) -> Identity | None:
    return session.scalar(
        select(Identity).where(Identity.email_normalized == email.strip().lower(), Identity.ended_at.is_(None)).limit(1)
    )


def create_admin(session: Session, email: str, password: str, display_name: str = "", actor: str = "cli") -> User:
    """A break-glass local admin. Linked to the identity with the same e-mail, when there is one."""
    email = email.strip().lower()
    if "@" not in email:
        raise UserError(f"{email!r} is not an e-mail address")
    user = session.scalar(select(User).where(func.lower(User.email) == email))
    created = user is None
    if user is None:
        user = User(email=email, display_name=display_name or email.split("@")[0], local_roles=["admin"], idp_roles=[])
        session.add(user)
    user.password_hash = hash_password(password)
    if "admin" not in (user.local_roles or []):
        user.local_roles = sorted(set(user.local_roles or []) | {"admin"})
    identity = find_identity_by_email(session, email)
    if identity is not None:
        user.identity_id = identity.id
    user.session_generation = (user.session_generation or 0) + (0 if created else 1)
    session.flush()
    audit(session, actor=actor, action="user.create_admin" if created else "user.reset_password",
          object_type="user", object_id=str(user.id), after={"email": email, "local_roles": user.local_roles})
    return user


def authenticate_local(session: Session, settings: Settings, email: str, password: str) -> User:
    """Check a local password. Raises LoginError; failures and lock-outs are audited."""
    if not settings.local_login:
        raise LoginError("Password sign-in is turned off here: use single sign-on.")
    email = (email or "").strip().lower()
    user = session.scalar(select(User).where(func.lower(User.email) == email))
    now = utcnow()
    if user is None or not user.password_hash:
        check_password_hash(_DUMMY_HASH, password or "")
        audit(session, actor=email or "anonymous", action="login.failed", object_type="user",
              after={"method": "password", "reason": "unknown user or no password"})
        raise LoginError("Wrong e-mail or password.")
    if user.locked_until and user.locked_until > now:
        audit(session, actor=email, action="login.locked", object_type="user", object_id=str(user.id),
              after={"method": "password", "locked_until": user.locked_until.isoformat()})
        raise LoginError("Too many failed attempts: this account is locked for a while. Try again later.")
    if not check_password_hash(user.password_hash, password or ""):
        user.failed_logins = (user.failed_logins or 0) + 1
        after = {"method": "password", "reason": "wrong password", "failures": user.failed_logins}
        if user.failed_logins >= settings.login_max_failures:
            user.locked_until = now + timedelta(minutes=settings.login_lockout_minutes)
            user.failed_logins = 0
            after["locked_until"] = user.locked_until.isoformat()
            audit(session, actor=email, action="login.lockout", object_type="user", object_id=str(user.id), after=after)
        else:
            audit(session, actor=email, action="login.failed", object_type="user", object_id=str(user.id), after=after)
        raise LoginError("Wrong e-mail or password.")
    if not user.active:
        audit(session, actor=email, action="login.failed", object_type="user", object_id=str(user.id),
              after={"method": "password", "reason": "deactivated"})
        raise LoginError("This account is deactivated.")
    user.failed_logins = 0
    user.locked_until = None
    user.last_login_at = now
    audit(session, actor=email, action="login.success", object_type="user", object_id=str(user.id),
          after={"method": "password"})
    return user


def set_local_roles(session: Session, user_id: int, roles: list[str], actor: str) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise UserError(f"no user {user_id}")
    unknown = set(roles) - set(ROLES)
    if unknown:
        raise UserError(f"unknown roles: {', '.join(sorted(unknown))}; roles are {', '.join(ROLES)}")
    before = sorted(user.local_roles or [])
    user.local_roles = sorted(set(roles))
    if before != user.local_roles:
        audit(session, actor=actor, action="user.roles", object_type="user", object_id=str(user.id),
              before={"local_roles": before}, after={"local_roles": user.local_roles})
    return user


def safe_next(target: str | None, default: str = "/") -> str:
    """Only same-site relative paths: no scheme, no host, no protocol-relative or backslash tricks."""
    if not target:
        return default
    target = target.strip()
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return default
    if any(ord(c) < 32 for c in target):
        return default
    return target
