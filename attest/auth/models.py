"""Users (people who sign in) and API tokens.

Every signed-in user can review what is routed to their identity; `admin` and `auditor` are extra roles,
from the IdP's groups claim at sign-in (`idp_roles`) or granted in Attest (`local_roles`, audited).
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Float, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from attest.db import Base, JSONType, UTCDateTime, utcnow
from attest.entitlements.models import Identity

ROLES = ("admin", "auditor")


class User(Base):
    __tablename__ = "app_user"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    display_name: Mapped[str] = mapped_column(String(255), default="")
    password_hash: Mapped[str | None] = mapped_column(String(300))  # break-glass local accounts only
    oidc_subject: Mapped[str | None] = mapped_column(String(255), unique=True)
    identity_id: Mapped[int | None] = mapped_column(ForeignKey("identity.id"), index=True)
    local_roles: Mapped[list[str]] = mapped_column(JSONType, default=list)
    idp_roles: Mapped[list[str]] = mapped_column(JSONType, default=list)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # bumped to invalidate every session of the user (logout everywhere, password change, deactivation)
    session_generation: Mapped[int] = mapped_column(Integer, default=0)
    preferences: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)

    identity: Mapped[Identity | None] = relationship(lazy="joined")

    # Flask-Login protocol
    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def is_active(self) -> bool:
        return self.active

    @property
    def is_anonymous(self) -> bool:
        return False

    def get_id(self) -> str:
        return f"{self.id}:{self.session_generation}"

    @property
    def roles(self) -> set[str]:
        return set(self.local_roles or []) | set(self.idp_roles or [])

    def has_role(self, role: str) -> bool:
        return role in self.roles

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles

    @property
    def is_auditor(self) -> bool:
        return "auditor" in self.roles

    @property
    def can_read_all(self) -> bool:
        """Admins and auditors read everything; reviewers read only what is routed to them."""
        return self.is_admin or self.is_auditor

    @property
    def label(self) -> str:
        return self.display_name or self.email


class UserSession(Base):
    """One signed-in browser session, checked on every request (see `attest.auth.sessions`).

    The cookie carries a random token; only its SHA-256 is stored. Sign-out, the idle and the absolute
    time-outs end the row (`ended_at`, `ended_reason`), so every copy of the cookie stops working at once.
    Rows are kept as the record of who signed in from where (and `attest.auth.throttle` reads them:
    an address a user signed in from before is "known" to that user).
    """

    __tablename__ = "user_session"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("app_user.id"), index=True)
    method: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ended_reason: Mapped[str | None] = mapped_column(String(40))
    ip: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(300))


class LoginThrottle(Base):
    """Failed password sign-ins counted per key (see `attest.auth.throttle`), in the database so that
    every web worker shares them. `key` is a SHA-256 of the kind and what it counts (e-mail, address)."""

    __tablename__ = "login_throttle"

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(10))  # pair | address | account
    failures: Mapped[int] = mapped_column(Integer, default=0)
    last_failure_at: Mapped[datetime] = mapped_column(UTCDateTime)
    blocked_until: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ApiToken(Base):
    """An API token (`Authorization: Bearer <token>` on /api/v1; attest/api/auth.py).

    - `personal`: acts as its user, within that user's roles at the time of each call (an OIDC user's
      roles as of their last sign-in); stops working when the user is deactivated.
    - `service`: owned by an admin, named, acts within its scopes only as an administrator or auditor would
      (it reviews nothing: it has no identity); stops working when its owner is no longer an active admin.

    Only the SHA-256 of the token is stored; the token itself is shown once, at creation. `prefix` (the
    first characters) lets a user tell their tokens apart. `rate_tokens`/`rate_at` are the token's rate
    limit bucket, shared by every web worker.
    """

    __tablename__ = "api_token"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("app_user.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(12))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    kind: Mapped[str] = mapped_column(String(10), default="personal", server_default="personal")  # personal | service
    scopes: Mapped[list[str]] = mapped_column(JSONType, default=list)
    revoked_by: Mapped[str | None] = mapped_column(String(320))
    rate_tokens: Mapped[float | None] = mapped_column(Float)
    rate_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    user: Mapped[User] = relationship(lazy="joined")

    @staticmethod
    def hash_token(token: str) -> str:
        return hashlib.sha256(token.encode()).hexdigest()
