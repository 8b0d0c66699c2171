"""The audit layer's own tables: the signed checkpoints' bookkeeping and the evidence export jobs.

The trail itself (AuditEvent, AuditHead) is attest/trail/models.py.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from attest.db import Base, UTCDateTime


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


class ExportStatus(StrEnum):
    """An evidence export's status (EvidenceExport.status). Members equal their strings: stored as the strings."""

    QUEUED = "queued"  # asked for on the web, waiting for the scheduler's evidence job
    RUNNING = "running"  # a scheduler process is building it (holder, heartbeat_at)
    DONE = "done"  # the bundle is in <instance>/evidence/ until expires_at
    FAILED = "failed"  # error says why
    EXPIRED = "expired"  # the finished bundle was removed at expires_at


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
    status: Mapped[str] = mapped_column(String(20), default=ExportStatus.QUEUED.value)
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
