"""API tokens: create (shown once), list, revoke, and check a presented token (one home for the rules).

- A token is `attest_` + 43 random URL-safe characters; only its SHA-256 is stored (`ApiToken.token_hash`)
  with its first 12 characters (`prefix`) so its owner can tell tokens apart.
- Scopes are read/write per area (`SCOPES`); a token acts only within its scopes AND its user's roles at
  the time of the call (a personal token of someone who lost the admin role loses the admin routes;
  attest/api/auth.py checks both). Which scopes a user may put on a token follows from their roles
  (`allowed_scopes`): reviewers (everyone) `reviews:read`/`reviews:write` for their own items, auditors
  every read scope, admins everything.
- Service tokens are created by admins only; they belong to their creator (the owner), have a name and
  scopes, act as an administrator (or, with read scopes only, as an auditor) and review nothing.
- Expiry is mandatory for nobody but bounded (`MAX_DAYS`); revocation is immediate; every create and
  revoke is audited (never the token itself).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from attest.auth.models import ApiToken, User
from attest.db import utcnow
from attest.trail.chain import record as audit

AREAS = ("sources", "entitlements", "reviews", "audit")
SCOPES = tuple(f"{area}:{level}" for area in AREAS for level in ("read", "write"))
KINDS = ("personal", "service")
TOKEN_PREFIX = "attest_"
MAX_DAYS = 366
NAME_MAX = 100


class TokenError(ValueError):
    """A token request that cannot be honoured; the message says why. Nothing was changed."""


@dataclass
class CreatedToken:
    row: ApiToken
    token: str  # the only time it exists in clear


def allowed_scopes(user: User, kind: str = "personal") -> list[str]:
    """The scopes `user` may put on a token of `kind`."""
    if kind == "service":
        return list(SCOPES) if user.is_admin else []
    if user.is_admin:
        return list(SCOPES)
    allowed = ["reviews:read", "reviews:write"]
    if user.is_auditor:
        allowed = sorted({*allowed, *(f"{a}:read" for a in AREAS)})
    return [s for s in SCOPES if s in allowed]


def create_token(session: Session, user: User, name: str, scopes: list[str], *, kind: str = "personal",
                 days: int | None = 90, now: datetime | None = None) -> CreatedToken:
    now = now or utcnow()
    name = (name or "").strip()
    if not name or len(name) > NAME_MAX:
        raise TokenError(f"A token needs a name of 1-{NAME_MAX} characters.")
    if kind not in KINDS:
        raise TokenError("A token is personal or service.")
    if not user.active:
        raise TokenError("This user is deactivated.")
    scopes = sorted(set(scopes))
    if not scopes:
        raise TokenError("Choose at least one scope.")
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown:
        raise TokenError(f"Unknown scope {unknown[0]!r}; known scopes: {', '.join(SCOPES)}.")
    allowed = allowed_scopes(user, kind)
    if kind == "service" and not allowed:
        raise TokenError("Only administrators create service tokens.")
    refused = [s for s in scopes if s not in allowed]
    if refused:
        raise TokenError(f"Your role does not allow the scope {refused[0]!r} on a {kind} token.")
    if days is not None and not 1 <= days <= MAX_DAYS:
        raise TokenError(f"A token expires after 1 to {MAX_DAYS} days.")
    if session.scalar(select(ApiToken.id).where(ApiToken.user_id == user.id, ApiToken.name == name,
                                                ApiToken.revoked_at.is_(None))) is not None:
        raise TokenError(f"You already have a token named {name!r}: revoke it first or choose another name.")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(user_id=user.id, name=name, token_hash=ApiToken.hash_token(token), prefix=token[:12],
                   created_at=now, expires_at=now + timedelta(days=days) if days is not None else None,
                   kind=kind, scopes=scopes)
    session.add(row)
    session.flush()
    audit(session, actor=user.email, action="api_token.create", object_type="api_token", object_id=str(row.id),
          after={"name": name, "kind": kind, "scopes": scopes, "prefix": row.prefix,
                 "expires_at": row.expires_at.isoformat() if row.expires_at else None})
    return CreatedToken(row, token)


def visible_tokens(session: Session, user: User) -> list[ApiToken]:
    """The tokens a user manages: their own; admins also every service token (any admin may revoke one,
    so that an automation's token can be stopped while its owner is away)."""
    mine = ApiToken.user_id == user.id
    where = or_(mine, ApiToken.kind == "service") if user.is_admin else mine
    return list(session.scalars(select(ApiToken).where(where)
                                .order_by(ApiToken.revoked_at.is_not(None), ApiToken.created_at.desc(), ApiToken.id)))


def revoke_token(session: Session, user: User, token_id: int, now: datetime | None = None) -> ApiToken | None:
    """Revoke one of the user's tokens (admins may revoke any service token). None: no such token of theirs.
    Revoking a revoked token changes nothing."""
    row = session.get(ApiToken, token_id)
    if row is None or not (row.user_id == user.id or (user.is_admin and row.kind == "service")):
        return None
    if row.revoked_at is None:
        row.revoked_at = now or utcnow()
        row.revoked_by = user.email
        session.flush()
        audit(session, actor=user.email, action="api_token.revoke", object_type="api_token", object_id=str(row.id),
              before={"revoked_at": None}, after={"name": row.name, "kind": row.kind, "owner": row.user.email,
                                                  "revoked_at": row.revoked_at.isoformat()})
    return row


@dataclass
class Refusal:
    reason: str  # invalid | expired | revoked | user_inactive | owner_not_admin


def check_token(session: Session, presented: str, now: datetime) -> ApiToken | Refusal:
    """The token row for a presented token if it may be used now, else why not."""
    if not presented.startswith(TOKEN_PREFIX) or len(presented) > 200:
        return Refusal("invalid")
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == ApiToken.hash_token(presented)))
    if row is None:
        return Refusal("invalid")
    if row.revoked_at is not None:
        return Refusal("revoked")
    if row.expires_at is not None and row.expires_at <= now:
        return Refusal("expired")
    if not row.user.active:
        return Refusal("user_inactive")
    if row.kind == "service" and not row.user.is_admin:
        return Refusal("owner_not_admin")
    return row


def token_actor(row: ApiToken) -> str:
    """Who an API call acts as, in the audit trail and in `*_by` columns."""
    if row.kind == "service":
        return f"{row.user.email} (service token {row.name})"
    return row.user.email
