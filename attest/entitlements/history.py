"""Access at a past moment, told truthfully: what Attest knows, what it cannot know, and since when.

Three rules, each with its one home here:

- **When**: `resolve_as_of` turns what a person asked for into one UTC instant. A day (`on=2026-03-31`,
  or `at=2026-03-31` as older links have it) means the *end* of that day in the organisation's time zone
  (ATTEST_TIMEZONE), so access granted at 23:30 local time that day is in it; an exact timestamp
  (`at=2026-03-31T17:05:00Z`) is taken as given, and one without an offset is read in the organisation's
  zone. Anything else is an `AsOfError` (the pages answer 400).
- **Unknown before the first read**: before a source's first successful sync (`SUCCESSFUL_RUN_STATUSES`)
  Attest has no record of it, so the answer for that source is "unknown: Attest first read SOURCE on
  DATE" (or "has not read SOURCE yet"), never "no access". Sources read by then are answered as usual.
- **Held since**: where the source says when the access was granted (a grant attribute in
  `SOURCE_GRANTED_AT`: Okta app assignments carry `assigned_at`), that date; else the time Attest first
  saw the grant, and for a grant seen by the source's first read, that it was already held then.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from attest.entitlements.models import SUCCESSFUL_RUN_STATUSES, Account, Grant, Source, SyncRun
from attest.entitlements.queries import HeldGrant, effective_access

# grant attributes in which a connector reports when the source granted the access (ISO 8601):
# `granted_at` for any connector, `assigned_at` as the Okta connector stores an app user's `created`
SOURCE_GRANTED_AT = ("granted_at", "assigned_at")

_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:?\d{2})?", re.IGNORECASE)
_MAX_LENGTH = 40


class AsOfError(ValueError):
    """What was asked for is not a day or a moment Attest can look up; the message says what is expected."""


@dataclass(frozen=True)
class AsOf:
    """A moment asked for: `instant` (UTC) is what the queries use; `day` is set when a day was asked."""

    instant: datetime
    zone: str
    day: date | None = None
    param: str = "at"  # the query argument it came from, so links and redirects keep it

    @property
    def value(self) -> str:
        return self.day.isoformat() if self.day is not None else instant_param(self.instant)

    @property
    def query(self) -> dict[str, str]:
        return {self.param: self.value}

    @property
    def label(self) -> str:
        if self.day is not None:
            return f"the end of {self.day.isoformat()} ({self.zone})"
        return self.instant.strftime("%Y-%m-%d %H:%M:%S") + (
            f".{self.instant.microsecond:06d}" if self.instant.microsecond else "") + " UTC"


def instant_param(value: datetime) -> str:
    """An exact moment as a query value (`2026-03-31T17:05:00.123456Z`), for links such as "at launch"."""
    return value.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def end_of_day(day: date, zone: ZoneInfo) -> datetime:
    """The last microsecond of `day` in `zone`, in UTC: the next local day's first instant, less 1 µs.

    (Computed from the next midnight, so a day that ends at a daylight-saving change ends when it does.)
    """
    try:
        next_midnight = datetime.combine(day + timedelta(days=1), time(), tzinfo=zone)
        return next_midnight.astimezone(UTC) - timedelta(microseconds=1)
    except (OverflowError, ValueError):
        raise AsOfError(f"{day.isoformat()} is outside the dates Attest can look up") from None


def day_bounds(name: str, raw: str, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """A day given as a filter (`since=`, `until=`): its first instant and the next day's, in UTC."""
    day = _day(name, raw.strip())
    try:
        end = end_of_day(day, zone) + timedelta(microseconds=1)
        return datetime.combine(day, time(), tzinfo=zone).astimezone(UTC), end
    except (AsOfError, OverflowError, ValueError):
        raise AsOfError(f"{name}={day.isoformat()} is outside the dates Attest can look up") from None


def _day(name: str, raw: str) -> date:
    if not _DAY.fullmatch(raw):
        raise AsOfError(f"{name} must be a date like 2026-03-31, not {raw!r}")
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise AsOfError(f"{name}={raw} is not a date in the calendar") from None


def _timestamp(name: str, raw: str, zone: ZoneInfo) -> datetime:
    if not _TIMESTAMP.fullmatch(raw):
        raise AsOfError(f"{name} must be a date like 2026-03-31 or a timestamp like 2026-03-31T17:05:00Z, "
                        f"not {raw!r}")
    try:
        value = datetime.fromisoformat(raw.upper())
        if value.tzinfo is None:  # a wall-clock time: the organisation's
            value = value.replace(tzinfo=zone)
        return value.astimezone(UTC)
    except (OverflowError, ValueError):
        raise AsOfError(f"{name}={raw} is not a moment Attest can look up") from None


def resolve_as_of(args: Mapping[str, str], zone: ZoneInfo) -> AsOf | None:
    """The one reading of `on=DAY` / `at=DAY|TIMESTAMP` in a request; None when neither is given."""
    on = (args.get("on") or "").strip()
    at = (args.get("at") or "").strip()
    if not on and not at:
        return None
    if on and at:
        raise AsOfError("give either on=DATE (the end of that day) or at=TIMESTAMP (an exact moment), not both")
    name, raw = ("on", on) if on else ("at", at)
    if len(raw) > _MAX_LENGTH:
        raise AsOfError(f"{name} is too long to be a date or a timestamp")
    zone_name = str(zone.key)
    if name == "on" or _DAY.fullmatch(raw):
        day = _day(name, raw)
        try:
            return AsOf(end_of_day(day, zone), zone_name, day, name)
        except AsOfError:
            raise AsOfError(f"{name}={raw} is outside the dates Attest can look up") from None
    return AsOf(_timestamp(name, raw, zone), zone_name, None, name)


# --- what Attest knew -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class FirstRead:
    """A source's first successful sync: when Attest first knew what it holds (None: not read yet)."""

    source_id: int
    source_name: str
    run_id: int | None
    at: datetime | None

    def known_at(self, instant: datetime) -> bool:
        return self.at is not None and instant >= self.at

    @property
    def unknown_text(self) -> str:
        if self.at is None:
            return f"unknown: Attest has not read {self.source_name} yet"
        return f"unknown: Attest first read {self.source_name} on {_fmt(self.at)}"


def first_reads(session: Session, source_ids: Iterable[int]) -> dict[int, FirstRead]:
    """Each source's first successful run (the time it finished, when its rows were in place)."""
    ids = sorted(set(source_ids))
    if not ids:
        return {}
    first = (select(SyncRun.source_id, func.min(SyncRun.id).label("run_id"))
             .where(SyncRun.source_id.in_(ids), SyncRun.status.in_(SUCCESSFUL_RUN_STATUSES))
             .group_by(SyncRun.source_id).subquery())
    rows = session.execute(
        select(Source.id, Source.name, SyncRun.id, func.coalesce(SyncRun.finished_at, SyncRun.started_at))
        .outerjoin(first, first.c.source_id == Source.id)
        .outerjoin(SyncRun, SyncRun.id == first.c.run_id)
        .where(Source.id.in_(ids))
    ).all()
    out = {}
    for sid, name, run_id, at in rows:
        if isinstance(at, str):  # coalesce() loses the column type on SQLite
            at = datetime.fromisoformat(at)
        if at is not None and at.tzinfo is None:
            at = at.replace(tzinfo=UTC)
        out[sid] = FirstRead(sid, name, run_id, at)
    return out


@dataclass(frozen=True)
class HeldSince:
    """Since when a grant is held, and on what that rests."""

    at: datetime
    basis: str  # source: the source says so | first_read: already held at the first read | first_seen
    source_name: str

    @property
    def text(self) -> str:
        if self.basis == "source":
            return f"{_fmt(self.at)} (as {self.source_name} reports)"
        if self.basis == "first_read":
            return (f"already held when Attest first read {self.source_name} on {_fmt(self.at)} "
                    f"({self.source_name} does not say since when)")
        return f"first seen {_fmt(self.at)} (when Attest first saw it in {self.source_name})"


def source_granted_at(attributes: Mapping[str, Any] | None) -> datetime | None:
    """When the source says the access was granted, if it says so in a form that can be read."""
    for key in SOURCE_GRANTED_AT:
        raw = (attributes or {}).get(key)
        if not isinstance(raw, str) or not raw:
            continue
        try:
            value = datetime.fromisoformat(raw)
        except ValueError:
            continue
        if value.tzinfo is not None:
            return value.astimezone(UTC)
    return None


def held_since(grant: Grant, first: FirstRead | None, source_name: str = "") -> HeldSince:
    name = first.source_name if first is not None else source_name
    granted = source_granted_at(grant.attributes)
    if granted is not None and granted <= grant.first_seen_at:
        return HeldSince(granted, "source", name)
    if first is not None and first.at is not None and (
            grant.first_seen_run_id == first.run_id
            or (grant.first_seen_run_id is None and grant.first_seen_at <= first.at)):
        return HeldSince(first.at, "first_read", name)
    return HeldSince(grant.first_seen_at, "first_seen", name)


@dataclass
class AccessAt:
    """A person's (or some accounts') access now or at `as_of`, with the sources Attest cannot answer for."""

    as_of: AsOf | None
    held: list[HeldGrant]
    unknown: list[FirstRead] = field(default_factory=list)  # sources not read yet at `as_of`
    since: dict[int, HeldSince] = field(default_factory=dict)  # grant id -> held since


def access_at(session: Session, accounts: Sequence[Account], as_of: AsOf | None) -> AccessAt:
    """Effective access of the accounts now, or at `as_of` for the sources Attest had read by then."""
    firsts = first_reads(session, {a.source_id for a in accounts})
    unknown: list[FirstRead] = []
    known = list(accounts)
    if as_of is not None:
        unknown = sorted((f for f in firsts.values() if not f.known_at(as_of.instant)), key=lambda f: f.source_name)
        blind = {f.source_id for f in unknown}
        known = [a for a in accounts if a.source_id not in blind]
    held = effective_access(session, [a.id for a in known], at=as_of.instant if as_of else None)
    return AccessAt(as_of, held, unknown, since_of(session, [h.grant for h in held], firsts))


def since_of(session: Session, grants: Sequence[Grant],
             firsts: dict[int, FirstRead] | None = None) -> dict[int, HeldSince]:
    """Held since, for each grant (by id)."""
    firsts = dict(firsts or {})
    missing = {g.source_id for g in grants} - set(firsts)
    if missing:
        firsts.update(first_reads(session, missing))
    return {g.id: held_since(g, firsts.get(g.source_id)) for g in grants}


def _fmt(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
