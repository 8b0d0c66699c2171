"""AuditEvent: append-only and hash-chained.

Each event stores the hash of the previous one and its own hash, SHA-256 over a canonical JSON of the
event (see `attest.audit.log.event_hash`). The single row of AuditHead holds the chain's last sequence
number and hash; appending locks it, so concurrent writers cannot fork the chain. The ORM refuses updates
and deletes of AuditEvent; on PostgreSQL a trigger does too (see the migration).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, event
from sqlalchemy.orm import Mapped, mapped_column

from attest.db import Base, JSONType, UTCDateTime


class AuditEvent(Base):
    __tablename__ = "audit_event"

    id: Mapped[int] = mapped_column(primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, unique=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    actor: Mapped[str] = mapped_column(String(320))
    action: Mapped[str] = mapped_column(String(100))
    object_type: Mapped[str | None] = mapped_column(String(50))
    object_id: Mapped[str | None] = mapped_column(String(100))
    campaign_id: Mapped[int | None] = mapped_column(Integer, index=True)
    before: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    request_id: Mapped[str | None] = mapped_column(String(64))
    ip: Mapped[str | None] = mapped_column(String(64))
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))

    __table_args__ = (
        Index("ix_audit_event_object", "object_type", "object_id"),
        Index("ix_audit_event_action_at", "action", "at"),
        Index("ix_audit_event_actor", "actor"),
    )


class AuditHead(Base):
    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, default=0)
    last_hash: Mapped[str] = mapped_column(String(64))


class AppendOnlyError(RuntimeError):
    pass


@event.listens_for(AuditEvent, "before_update")
def _refuse_update(mapper, connection, target) -> None:
    raise AppendOnlyError("audit events are append-only: updates are refused")


@event.listens_for(AuditEvent, "before_delete")
def _refuse_delete(mapper, connection, target) -> None:
    raise AppendOnlyError("audit events are append-only: deletes are refused")


class AuditCheckpoint(Base):
    """Bookkeeping of the signed checkpoints written outside the database (`attest.audit.checkpoints`).

    Only tells the checkpoint job what it last wrote and the evidence export which checkpoints to carry; it
    proves nothing: `attest audit verify` reads the checkpoints from their store, never from this table.
    """

    __tablename__ = "audit_checkpoint"

    id: Mapped[int] = mapped_column(primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, index=True)
    hash: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    name: Mapped[str] = mapped_column(String(200))


EXPORT_STATUSES = ("queued", "running", "done", "failed", "expired")


class EvidenceExport(Base):
    """One evidence bundle asked for on the web, built by the scheduler (`attest.audit.export_jobs`).

    The web only inserts a `queued` row and later streams the finished file; the scheduler claims the row
    (`running`, `holder`, `heartbeat_at` beaten while it works), writes the bundle under
    `<instance>/evidence/` (`file_path`, relative to the instance folder) and marks it `done` with its size
    and SHA-256, or `failed` with the error. A row whose holder stopped beating is requeued once, then
    failed. A finished bundle is removed at `expires_at` (ATTEST_EVIDENCE_RETENTION_DAYS): `expired`.
    """

    __tablename__ = "evidence_export"

    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaign.id"), index=True)
    requested_by: Mapped[str] = mapped_column(String(320))
    status: Mapped[str] = mapped_column(String(20), default="queued")
    phase: Mapped[str | None] = mapped_column(String(40))
    items_done: Mapped[int] = mapped_column(Integer, default=0)
    items_total: Mapped[int | None] = mapped_column(Integer)
    file_path: Mapped[str | None] = mapped_column(String(500))
    size: Mapped[int | None] = mapped_column(BigInteger)
    sha256: Mapped[str | None] = mapped_column(String(64))
    manifest_sha256: Mapped[str | None] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(String(2000))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    holder: Mapped[str | None] = mapped_column(String(200))
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_evidence_export_status_id", "status", "id"),)
