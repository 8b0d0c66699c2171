"""Signing in: local break-glass passwords (throttled, never locked for good) and the session rules.

Sessions are Flask's signed cookies plus a server-side record (`attest.auth.sessions`): the session is
cleared and re-issued at sign-in (so a pre-login session cannot be fixated), its row is checked on every
request (sign-out, idle and absolute time-outs end every copy of the cookie), and the user's
`session_generation` is part of the login id, so bumping it ends every session of that user. Failed
sign-ins are throttled per (account, address), per address and per account with exponential back-off
(`attest.auth.throttle`); unknown e-mails, wrong passwords and throttled accounts get the same answers.
OIDC single sign-on lives in `attest.auth.oidc`.
"""

from __future__ import annotations

import secrets
from datetime import datetime
from urllib.parse import urlsplit

from sqlalchemy import func, select
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from attest.auth import passwords, sessions, throttle
from attest.auth.models import ROLES, User
from attest.config import Settings
from attest.db import utcnow
from attest.entitlements.models import Identity
from attest.entitlements.queries import person_by_email
from attest.trail.chain import record as audit

MIN_PASSWORD = passwords.MIN_CHARACTERS
WRONG = "Wrong e-mail or password."
# a hash to compare against when the user does not exist, so timing does not reveal which e-mails exist
_DUMMY_HASH = generate_password_hash(secrets.token_urlsafe(16))


class LoginError(Exception):
    """Shown to the user as is: never says whether the e-mail exists."""


class Throttled(LoginError):
    """Too many failed sign-ins for this account or from this address: try again in `retry_after` s."""

    def __init__(self, retry_after: int) -> None:
        minutes = max(1, -(-retry_after // 60))
        super().__init__(f"Too many failed sign-ins for this e-mail or from this address. Try again in "
                         f"{minutes} minute{'s' if minutes != 1 else ''}.")
        self.retry_after = retry_after


class UserError(ValueError):
    pass


def hash_password(password: str) -> str:
    """The stored hash of a new password; refuses what the policy refuses (`attest.auth.passwords`)."""
    message = passwords.problem(password)
    if message:
        raise UserError(message)
    return generate_password_hash(password)


def find_identity_by_email(session: Session, email: str) -> Identity | None:
    return person_by_email(session, email)


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
    throttle.clear(session, throttle.keys(email, None)["account"])  # an operator's reset lifts the account's block
    session.flush()
    audit(session, actor=actor, action="user.create_admin" if created else "user.reset_password",
          object_type="user", object_id=str(user.id), after={"email": email, "local_roles": user.local_roles})
    return user


def authenticate_local(session: Session, settings: Settings, email: str, password: str,
                       address: str | None = None, now: datetime | None = None) -> User:
    """Check a local password from the client `address`. Raises LoginError (Throttled when a counter of
    `attest.auth.throttle` blocks). Unknown e-mails, wrong passwords and throttled accounts answer alike;
    failures and the start of each block are audited. Never commits."""
    if not settings.local_login:
        raise LoginError("Password sign-in is turned off here: use single sign-on.")
    now = now or utcnow()
    email = (email or "").strip().lower()
    password = password or ""
    pol = throttle.policy(settings)
    key_map = throttle.keys(email, address)
    blocks = throttle.blocked(session, key_map, now)
    own = {kind: until for kind, until in blocks.items() if kind != "account"}
    if own:  # this address, or this address on this e-mail: refused before the password is looked at
        raise Throttled(throttle.retry_after(own, now))
    user = None if "\x00" in email else session.scalar(select(User).where(func.lower(User.email) == email))
    if user is not None and not user.password_hash:
        user = None  # an SSO-only user has no password to guess
    if "account" in blocks and (user is None or not sessions.known_address(session, user.id, address, now)):
        # a guess spread over many addresses: only an address the owner signed in from before gets through
        raise Throttled(throttle.retry_after(blocks, now))
    if user is None:
        check_password_hash(_DUMMY_HASH, password)  # the same time as a real check
        ok = False
    else:
        ok = check_password_hash(user.password_hash, password)
    if not ok:
        started = throttle.record_failure(session, pol, key_map, now)
        after = {"method": "password", "reason": "wrong password" if user else "unknown user or no password"}
        audit(session, actor=email or "anonymous", action="login.failed", object_type="user",
              object_id=str(user.id) if user else None, after=after)
        if started:
            audit(session, actor=email or "anonymous", action="login.throttle", object_type="user",
                  object_id=str(user.id) if user else None,
                  after={"method": "password", "blocked": {k: v.isoformat() for k, v in started.items()}})
        raise LoginError(WRONG)
    if not user.active:
        audit(session, actor=email, action="login.failed", object_type="user", object_id=str(user.id),
              after={"method": "password", "reason": "deactivated"})
        raise LoginError("This account is deactivated.")
    throttle.clear(session, key_map["pair"])
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
