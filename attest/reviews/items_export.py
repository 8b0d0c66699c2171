"""A campaign's items as CSV: exactly the rows the items page shows for the same filters, in its order.

Streamed: the rows are read in keyset batches (`queries.campaign_items`, plain columns, not ORM objects)
and each batch is written and handed on before the next is read, so memory stays flat whatever the
campaign's size. Every cell goes through `attest.exports` (formula neutralisation). Each export is an
audit event naming the filters (`record_export`, in the caller's write transaction).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from attest import exports
from attest.entitlements.models import Identity
from attest.reviews import queries
from attest.reviews.models import ReviewItem
from attest.trail.chain import record as audit

BATCH = 1000
COLUMNS = (
    "item_id", "person", "email", "department", "person_status", "account", "account_kind", "system", "resource",
    "resource_type", "entitlement", "privileged", "via", "risks", "risk_score", "reviewer", "reviewer_email",
    "decision", "comment", "decided_at", "decided_in_bulk", "outcome", "outcome_reason",
)
_SELECT = (
    ReviewItem.id, ReviewItem.person_name, ReviewItem.person_email, ReviewItem.person_department,
    ReviewItem.person_status, ReviewItem.account_login, ReviewItem.account_kind, ReviewItem.source_name,
    ReviewItem.resource_name, ReviewItem.resource_type, ReviewItem.entitlement_name, ReviewItem.privileged,
    ReviewItem.via, ReviewItem.risks, ReviewItem.risk_score, ReviewItem.reviewer_id, ReviewItem.decision,
    ReviewItem.comment, ReviewItem.decided_at, ReviewItem.decided_in_bulk, ReviewItem.outcome,
    ReviewItem.outcome_reason,
)


def record_export(session: Session, actor: str, campaign_id: int, filters: queries.ItemFilters) -> None:
    audit(session, actor=actor, action="campaign.items_exported", object_type="campaign", object_id=str(campaign_id),
          campaign_id=campaign_id, after={"filters": filters.as_args(), "format": "csv"})


class _Csv:
    """The writer of one export: its buffer (emptied after each batch) and the reviewers looked up so far."""

    def __init__(self) -> None:
        self.buf = io.StringIO()
        self.writer = exports.writer(self.buf, COLUMNS, lineterminator="\r\n")
        self.reviewers: dict[int, tuple[str | None, str | None]] = {}

    def batch(self, session: Session, campaign_id: int, filters: queries.ItemFilters, after: str | None,
              size: int) -> tuple[str, str | None]:
        """The CSV text of the next batch of rows after `after` (the header with the first), and the next cursor."""
        rows, after = queries.campaign_items(session, campaign_id, filters, after, size, columns=_SELECT)
        wanted = {r.reviewer_id for r in rows if r.reviewer_id is not None} - set(self.reviewers)
        if wanted:
            self.reviewers.update((i, (n, e)) for i, n, e in session.execute(
                select(Identity.id, Identity.display_name, Identity.email).where(Identity.id.in_(wanted))))
        for r in rows:
            self.writer.writerow(_row(r, self.reviewers.get(r.reviewer_id, (None, None))))
        text = self.buf.getvalue()
        self.buf.seek(0)
        self.buf.truncate()
        return text, after


def iter_csv(session: Session, campaign_id: int, filters: queries.ItemFilters, batch: int | None = None) -> Iterator[str]:
    """The CSV text on one session, one chunk per batch of rows (the header with the first)."""
    out, after = _Csv(), None
    while True:
        text, after = out.batch(session, campaign_id, filters, after, batch or BATCH)
        yield text
        if after is None:
            return


def stream_csv(session: Session, factory: Callable[[], Session], campaign_id: int, filters: queries.ItemFilters,
               batch: int | None = None) -> Iterator[str]:
    """The response body: the first batch read now, on the request's session (a failure is still an error
    page, not a cut file); the rest, if any, read as the client takes it, on a session of its own that is
    closed when the stream ends or is dropped (the body outlives the request and its session)."""
    out = _Csv()
    first, after = out.batch(session, campaign_id, filters, None, batch or BATCH)

    def body() -> Iterator[str]:
        yield first
        if after is None:
            return
        own = factory()
        try:
            cursor: str | None = after
            while cursor is not None:
                text, cursor = out.batch(own, campaign_id, filters, cursor, batch or BATCH)
                yield text
        finally:
            own.close()

    return body()


def _row(r: Any, reviewer: tuple[str | None, str | None]) -> list[Any]:
    return [r.id, r.person_name, r.person_email, r.person_department, r.person_status, r.account_login,
            r.account_kind, r.source_name, r.resource_name, r.resource_type, r.entitlement_name,
            "yes" if r.privileged else "", r.via, "; ".join(r.risks or []), r.risk_score, reviewer[0], reviewer[1],
            r.decision, r.comment, r.decided_at.isoformat() if r.decided_at else None,
            "yes" if r.decided_in_bulk else "", r.outcome, r.outcome_reason]
