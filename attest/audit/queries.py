"""Read queries for the auditor pages: the audit log search (keyset pages, newest first)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from attest.trail.models import AuditEvent


@dataclass
class EventFilters:
    actor: str = ""
    action: str = ""
    object_type: str = ""
    object_id: str = ""
    campaign_id: int | None = None
    since: datetime | None = None
    until: datetime | None = None  # exclusive

    def active(self) -> bool:
        return any((self.actor, self.action, self.object_type, self.object_id, self.campaign_id, self.since, self.until))


@dataclass
class EventPage:
    rows: list[AuditEvent]
    next_after: int | None


def search_events(session: Session, f: EventFilters, after: int | None = None, limit: int = 50) -> EventPage:
    """Audit events matching the filters, newest first; `after` is the last seq of the previous page.

    actor matches a part of the actor (case-insensitive); action matches a prefix ("remediation." finds every
    remediation event); object type, object id and campaign match exactly; dates bound `at`.
    """
    stmt = select(AuditEvent)
    if f.actor:
        stmt = stmt.where(func.lower(AuditEvent.actor).contains(f.actor.lower(), autoescape=True))
    if f.action:
        stmt = stmt.where(AuditEvent.action.startswith(f.action, autoescape=True))
    if f.object_type:
        stmt = stmt.where(AuditEvent.object_type == f.object_type)
    if f.object_id:
        stmt = stmt.where(AuditEvent.object_id == f.object_id)
    if f.campaign_id is not None:
        stmt = stmt.where(AuditEvent.campaign_id == f.campaign_id)
    if f.since is not None:
        stmt = stmt.where(AuditEvent.at >= f.since)
    if f.until is not None:
        stmt = stmt.where(AuditEvent.at < f.until)
    if after is not None:
        stmt = stmt.where(AuditEvent.seq < after)
    rows = list(session.scalars(stmt.order_by(AuditEvent.seq.desc()).limit(limit + 1)))
    return EventPage(rows[:limit], rows[limit - 1].seq if len(rows) > limit else None)


def object_types(session: Session) -> list[str]:
    return [t for t in session.scalars(select(AuditEvent.object_type).distinct().order_by(AuditEvent.object_type)) if t]


def event_link(ev: AuditEvent) -> dict[str, Any] | None:
    """Where an event's object lives in the UI, as (endpoint, kwargs), when it has a page."""
    if not ev.object_id or not ev.object_id.isdigit():
        return None
    oid = int(ev.object_id)
    return {
        "identity": ("entitlements.identity_detail", {"identity_id": oid}),
        "source": ("entitlements.source_detail", {"source_id": oid}),
        "campaign": ("reviews.campaign", {"campaign_id": oid}),
        "remediation": ("audit.remediations", {"id": oid}),
    }.get(ev.object_type or "")
