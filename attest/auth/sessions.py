"""Server-side sessions: a signed-in browser is a `UserSession` row, checked on every request.

Flask's cookie is signed, not secret-bound to the server: on its own, a copy taken before sign-out would
keep working until it expires. So the cookie also carries a random token (`sid`) and only its SHA-256 is
stored; every request reads the row with the user (`user_and_session`) and `judge` refuses a session that
was ended (sign-out), has been idle longer than ATTEST_SESSION_IDLE_MINUTES, or is older than ATTEST_SESSION_MAX_HOURS. Ending
one session leaves the user's other sessions (other browsers) alone; bumping `User.session_generation`
still ends them all (password reset, deactivation).

`last_seen_at` is written at most once a minute (TOUCH_EVERY) so a busy page does not write a row per
request; the idle time-out is therefore exact to that minute. Times come from `clock()`, which tests
replace through `app.config["ATTEST_CLOCK"]` (no sleeps). Services take the session first and never commit.
"""

from __future__ import annotations

import functools
import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Integer, Select, String, bindparam, delete, select, update
from sqlalchemy.orm import Session

from attest.auth.models import User, UserSession
from attest.config import Settings
from attest.db import utcnow

TOUCH_EVERY = timedelta(seconds=60)
COOKIE_KEY = "sid"


def clock() -> datetime:
    """Now, in UTC: `app.config["ATTEST_CLOCK"]` when set (tests), else the system clock."""
    from flask import current_app, has_app_context

    if has_app_context():
        return current_app.config.get("ATTEST_CLOCK", utcnow)()
    return utcnow()


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def start(session: Session, user_id: int, method: str, now: datetime, ip: str | None = None,
          user_agent: str | None = None) -> str:
    """A new session row; returns the token to put in the cookie (never stored as such)."""
    token = secrets.token_urlsafe(32)
    session.add(UserSession(token_hash=_hash(token), user_id=user_id, method=method[:20], created_at=now,
                            last_seen_at=now, ip=(ip or None) and ip[:64],
                            user_agent=(user_agent or None) and user_agent[:300]))
    session.flush()
    return token


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str = ""  # why refused: missing | unknown | ended | idle | expired | other user
    row: UserSession | None = None
    touch: bool = False  # last_seen_at is old enough to be written again

    @property
    def timed_out(self) -> bool:
        return self.reason in ("idle", "expired")


def user_and_session(session: Session, user_id: int, token: str | None) -> tuple[User | None, UserSession | None]:
    """The user `user_id` and the session row this cookie's token names (None: no such row, or no token), in
    one statement: what every signed-in request reads first. Judge the row with `judge`."""
    if not token or not isinstance(token, str):
        return session.get(User, user_id), None
    row = session.execute(_user_and_session(), {"user_id": user_id, "token_hash": _hash(token)}).first()
    return (row[0], row[1]) if row is not None else (None, None)


@functools.cache
def _user_and_session() -> Select[tuple[User, UserSession]]:
    # built once (a statement costs more CPU to build than to run); the session is joined by its token only,
    # so a row of another user is found and refused as such
    return (select(User, UserSession).outerjoin(UserSession, UserSession.token_hash == bindparam("token_hash", type_=String))
            .where(User.id == bindparam("user_id", type_=Integer)))


def judge(settings: Settings, token: str | None, row: UserSession | None, user_id: int, now: datetime) -> Verdict:
    """The verdict on the session row the cookie's `token` found (None: none found) for this user at `now`."""
    if not token or not isinstance(token, str):
        return Verdict(False, "missing")
    if row is None:
        return Verdict(False, "unknown")
    if row.user_id != user_id:
        return Verdict(False, "other user", row)
    if row.ended_at is not None:
        return Verdict(False, "ended", row)
    if now - row.created_at > timedelta(hours=settings.session_max_hours):
        return Verdict(False, "expired", row)
    if now - row.last_seen_at > timedelta(minutes=settings.session_idle_minutes):
        return Verdict(False, "idle", row)
    return Verdict(True, row=row, touch=now - row.last_seen_at >= TOUCH_EVERY)


def touch(session: Session, row_id: int, now: datetime) -> None:
    session.execute(update(UserSession).where(UserSession.id == row_id, UserSession.ended_at.is_(None))
                    .values(last_seen_at=now))


def end(session: Session, token: str | None, reason: str, now: datetime) -> bool:
    """End the session this token names (sign-out, time-out). True when a live session was ended."""
    if not token or not isinstance(token, str):
        return False
    result = session.execute(update(UserSession)
                             .where(UserSession.token_hash == _hash(token), UserSession.ended_at.is_(None))
                             .values(ended_at=now, ended_reason=reason[:40]))
    return bool(result.rowcount)


def known_address(session: Session, user_id: int, ip: str | None, now: datetime, days: int = 90) -> bool:
    """Did this user sign in from this address in the last `days` days?"""
    if not ip:
        return False
    return session.scalar(
        select(UserSession.id).where(UserSession.user_id == user_id, UserSession.ip == ip[:64],
                                     UserSession.created_at >= now - timedelta(days=days)).limit(1)
    ) is not None


KEEP_DAYS = 100  # longer than known_address's 90-day look-back; sign-ins and sign-outs stay in the audit trail


def purge(session: Session, now: datetime, keep_days: int = KEEP_DAYS) -> int:
    """Delete session rows started more than `keep_days` ago (long ended or timed out by then: a session
    lives at most ATTEST_SESSION_MAX_HOURS). Returns how many went."""
    return session.execute(delete(UserSession).where(UserSession.created_at < now - timedelta(days=keep_days))
                           .execution_options(synchronize_session=False)).rowcount
