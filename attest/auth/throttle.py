"""Failed password sign-ins: shared counters with exponential back-off, and no permanent lock-out.

Why a table and not Flask-Limiter: Flask-Limiter needs a shared storage to limit across several gunicorn
workers (its memory storage counts per process, so N workers allow N times the limit), and Attest's
only shared store is its database; Redis or memcached would be a new service to run for one form. And
the rule wanted here is not a fixed window but a back-off that depends on the account's state, which
is a few rows, read and written inside the sign-in's own transaction (so two workers cannot both let
the same attempt through). Throttled attempts write nothing, so the table grows only with failures.

Three counters of consecutive failures, each forgotten after FORGET_FACTOR times the longest back-off
without a failure:
- **pair** (e-mail, client address): ATTEST_LOGIN_MAX_FAILURES (5) failures, then blocked;
- **address** (client address, any e-mail): ATTEST_LOGIN_ADDRESS_MAX_FAILURES (20), then blocked;
- **account** (e-mail, any address, a distributed guess): ATTEST_LOGIN_ACCOUNT_MAX_FAILURES (50).
A counter at its limit blocks for 30 s, then doubles at each further failure, up to
ATTEST_LOGIN_LOCKOUT_MINUTES (15): nothing is ever locked for longer than that after the last failure.

The e-mail is counted whether or not an account exists, so an unknown e-mail is throttled exactly like a
known one (no answer tells which accounts exist). A block on the pair or the address refuses before the
password is looked at. A block on the account refuses everyone, except a sign-in from an address the
user signed in from before (`attest.auth.sessions.known_address`): an attacker spraying from many
addresses can slow a break-glass admin's account, never lock its owner out at their usual address (where
the owner meets only that address's own counters), and never for longer than the cap elsewhere.
A success clears only its pair: clearing the address or the account would let a guesser with an account
of their own reset their counters between guesses.

Client address: `request.remote_addr`, which honours ATTEST_PROXY_COUNT through werkzeug's ProxyFix.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from attest.auth.models import LoginThrottle
from attest.config import Settings

FIRST_DELAY = timedelta(seconds=30)
FORGET_FACTOR = 4
KINDS = ("pair", "address", "account")


@dataclass(frozen=True)
class Policy:
    limits: dict[str, int]
    max_delay: timedelta

    @property
    def forget_after(self) -> timedelta:
        return self.max_delay * FORGET_FACTOR

    def delay(self, kind: str, failures: int) -> timedelta | None:
        over = failures - self.limits[kind]
        if over < 0:
            return None
        return min(self.max_delay, FIRST_DELAY * (2 ** min(over, 20)))


def policy(settings: Settings) -> Policy:
    return Policy({"pair": settings.login_max_failures, "address": settings.login_address_max_failures,
                   "account": settings.login_account_max_failures},
                  timedelta(minutes=settings.login_lockout_minutes))


def keys(email: str, address: str | None) -> dict[str, str]:
    address = address or "-"

    def digest(*parts: str) -> str:
        return hashlib.sha256("\x1f".join(parts).encode("utf-8", "replace")).hexdigest()

    return {"pair": digest("pair", email, address), "address": digest("address", address),
            "account": digest("account", email)}


def blocked(session: Session, key_map: dict[str, str], now: datetime) -> dict[str, datetime]:
    """The kinds blocked at `now`, each with the moment its block ends."""
    rows = session.scalars(select(LoginThrottle).where(LoginThrottle.key.in_(list(key_map.values()))))
    by_key = {row.key: row for row in rows}
    out = {}
    for kind, key in key_map.items():
        row = by_key.get(key)
        if row is not None and row.blocked_until is not None and row.blocked_until > now:
            out[kind] = row.blocked_until
    return out


def retry_after(until: dict[str, datetime], now: datetime) -> int:
    """Seconds until every block in `until` is over (the Retry-After header)."""
    return max(1, math.ceil(max((t - now).total_seconds() for t in until.values())))


def _locked_row(session: Session, kind: str, key: str, now: datetime) -> LoginThrottle:
    stmt = select(LoginThrottle).where(LoginThrottle.key == key).with_for_update()
    row = session.scalar(stmt)
    if row is None:
        try:
            with session.begin_nested():  # another worker may insert the same key at the same moment
                row = LoginThrottle(key=key, kind=kind, failures=0, last_failure_at=now)
                session.add(row)
        except IntegrityError:
            row = session.scalar(stmt.execution_options(populate_existing=True))
    return row


def record_failure(session: Session, pol: Policy, key_map: dict[str, str], now: datetime) -> dict[str, datetime]:
    """Count a failed sign-in on every key; returns the kinds this failure blocked, with their ends."""
    started = {}
    for kind in KINDS:
        row = _locked_row(session, kind, key_map[kind], now)
        if row.failures and now - row.last_failure_at > pol.forget_after:
            row.failures = 0
        row.failures += 1
        row.last_failure_at = now
        delay = pol.delay(kind, row.failures)
        if delay is not None:
            row.blocked_until = now + delay
            started[kind] = row.blocked_until
    session.flush()
    return started


def clear(session: Session, key: str) -> None:
    row = session.scalar(select(LoginThrottle).where(LoginThrottle.key == key))
    if row is not None:
        session.delete(row)
        session.flush()


def purge(session: Session, now: datetime, quiet_for: timedelta = timedelta(days=1)) -> int:
    """Delete counters with no failure for `quiet_for` and no block still running: an address or an
    e-mail that stopped failing starts clean. Returns how many went."""
    return session.execute(delete(LoginThrottle).where(
        LoginThrottle.last_failure_at < now - quiet_for,
        or_(LoginThrottle.blocked_until.is_(None), LoginThrottle.blocked_until < now),
    ).execution_options(synchronize_session=False)).rowcount
