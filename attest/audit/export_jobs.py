"""Evidence exports as a background job: the web asks, the scheduler builds, the web streams the file.

A web request never builds a bundle (a 341k-item campaign takes about 30 s, gunicorn's whole timeout):
`request_export` inserts a `queued` EvidenceExport row; the scheduler's `evidence:export` job
(`attest.jobs.job_evidence`) claims queued rows one at a time (`claim_next`: a conditional UPDATE, so a
row is built once), runs `export_bundle` into `<instance>/evidence/` and reports its progress on the row;
the page polls the row and, once `done`, offers the file, which `bundle_path` resolves for `send_file`.

Liveness: a running export beats `heartbeat_at` (with each progress report and from a thread every
HEARTBEAT seconds). `sweep` (every run of the job and at scheduler start) requeues a running export whose
beat is older than STALE (its process died), at most MAX_ATTEMPTS times in all, then marks it failed;
removes the partial files of dead processes; removes finished bundles at `expires_at`
(ATTEST_EVIDENCE_RETENTION_DAYS) and any file in the folder that no live export owns.
The folder is 0700 and each bundle 0600: review data is never world-readable.

Service functions take the session first and never commit; the runner (`run_pending`) opens its own
short transactions, like the other scheduler jobs.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from attest.audit import evidence
from attest.audit.models import EvidenceExport, ExportStatus
from attest.db import transaction, utcnow
from attest.redact import redact
from attest.reviews.models import Campaign
from attest.trail.chain import record

log = logging.getLogger("attest.evidence")

EXPORT_DIR = "evidence"  # under the instance folder
STALE = timedelta(minutes=2)  # a running export whose last beat is older lost its process
HEARTBEAT = 20.0  # seconds between beats of a running export (besides its progress reports)
PROGRESS_EVERY = 1.0  # seconds: progress is written at most this often (a new phase is written at once)
MAX_ATTEMPTS = 2  # an export whose process died is started again once, then failed
ACTIVE = (ExportStatus.QUEUED, ExportStatus.RUNNING)
_FILE = re.compile(r"^export-(\d+)\.zip$")


class ExportRequestError(ValueError):
    """The export cannot be asked for (the campaign has not been launched); nothing was written."""


class LostClaim(RuntimeError):
    """The row was requeued or failed by a sweep while this process still worked on it (it was presumed dead)."""


def export_dir(settings: Any, create: bool = True) -> Path:
    """`<instance>/evidence`, mode 0700."""
    path = Path(settings.instance_path) / EXPORT_DIR
    if create:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(path, 0o700)
    return path


def _relative(export_id: int) -> str:
    return f"{EXPORT_DIR}/export-{export_id}.zip"


# --- the web's side ------------------------------------------------------------------------------------------


def request_export(session: Session, campaign_id: int, actor: str, now: datetime | None = None
                   ) -> tuple[EvidenceExport, bool] | None:
    """Queue an export of a campaign's evidence for `actor`: (row, True). An export of that campaign already
    queued or running is returned instead (row, False), so repeated clicks build one bundle. None: no such
    campaign. Raises ExportRequestError for a campaign not launched yet."""
    campaign = session.get(Campaign, campaign_id)
    if campaign is None:
        return None
    if campaign.status == "draft":
        raise ExportRequestError(f"campaign {campaign.id} ({campaign.name}) has not been launched: there is no "
                                 "evidence yet")
    active = session.scalars(select(EvidenceExport).where(EvidenceExport.campaign_id == campaign_id,
                                                          EvidenceExport.status.in_(ACTIVE))
                             .order_by(EvidenceExport.id).limit(1)).first()
    if active is not None:
        return active, False
    now = now or utcnow()
    row = EvidenceExport(campaign_id=campaign_id, requested_by=actor, status=ExportStatus.QUEUED, items_done=0, attempts=0,
                         created_at=now)
    session.add(row)
    session.flush()
    record(session, actor=actor, action="evidence.export_requested", object_type="evidence_export",
           object_id=str(row.id), campaign_id=campaign_id)
    return row, True


def get_export(session: Session, export_id: int) -> EvidenceExport | None:
    return session.get(EvidenceExport, export_id)


def recent_exports(session: Session, limit: int = 50) -> list[EvidenceExport]:
    return list(session.scalars(select(EvidenceExport).order_by(EvidenceExport.id.desc()).limit(limit)))


def queue_position(session: Session, row: EvidenceExport) -> int:
    """How many queued exports go before this one (0: it is next)."""
    if row.status != ExportStatus.QUEUED:
        return 0
    return session.scalar(select(func.count()).select_from(EvidenceExport).where(
        EvidenceExport.status == ExportStatus.QUEUED, EvidenceExport.id < row.id)) or 0


def is_available(row: EvidenceExport, now: datetime | None = None) -> bool:
    now = now or utcnow()
    return row.status == ExportStatus.DONE and bool(row.file_path) and (row.expires_at is None or row.expires_at > now)


def bundle_path(settings: Any, row: EvidenceExport, now: datetime | None = None) -> Path | None:
    """The finished bundle's file, for streaming; None when it is not (or no longer) there."""
    if not is_available(row, now):
        return None
    base = export_dir(settings, create=False).resolve()
    path = (Path(settings.instance_path) / row.file_path).resolve()
    if path.parent != base or not path.is_file():
        return None
    return path


def record_download(session: Session, row: EvidenceExport, actor: str) -> None:
    record(session, actor=actor, action="evidence.downloaded", object_type="evidence_export",
           object_id=str(row.id), campaign_id=row.campaign_id,
           after={"sha256": row.sha256, "manifest_sha256": row.manifest_sha256, "bytes": row.size})


# --- the scheduler's side ------------------------------------------------------------------------------------


def claim_next(session: Session, holder: str, now: datetime) -> int | None:
    """Take the oldest queued export for `holder` (running, attempts + 1). Its id, or None."""
    for export_id in session.scalars(select(EvidenceExport.id).where(EvidenceExport.status == ExportStatus.QUEUED)
                                     .order_by(EvidenceExport.id).limit(5)):
        taken = session.execute(
            update(EvidenceExport).where(EvidenceExport.id == export_id, EvidenceExport.status == ExportStatus.QUEUED)
            .values(status=ExportStatus.RUNNING, holder=holder, heartbeat_at=now, started_at=now, phase="starting",
                    items_done=0, attempts=EvidenceExport.attempts + 1, error=None)
        ).rowcount
        if taken:
            return export_id
    return None


def _beat(session: Session, export_id: int, holder: str, values: dict[str, Any]) -> None:
    done = session.execute(update(EvidenceExport).where(EvidenceExport.id == export_id,
                                                        EvidenceExport.status == ExportStatus.RUNNING,
                                                        EvidenceExport.holder == holder).values(**values)).rowcount
    if not done:
        raise LostClaim(f"evidence export {export_id} was taken from {holder} (presumed dead)")


@dataclass
class _Runner:
    """Runs one claimed export: progress to the row, a heartbeat thread, the outcome."""

    factory: sessionmaker[Session]
    settings: Any
    export_id: int
    holder: str
    now: datetime
    heartbeat: float | None = HEARTBEAT
    t0: float = field(default_factory=time.monotonic)
    last_phase: str | None = None
    last_write: float = 0.0
    lost: bool = False

    def at(self) -> datetime:
        return self.now + timedelta(seconds=time.monotonic() - self.t0)

    def progress(self, phase: str, done: int, total: int) -> None:
        if self.lost:
            raise LostClaim(f"evidence export {self.export_id} was taken from {self.holder}")
        t = time.monotonic()
        if phase == self.last_phase and t - self.last_write < PROGRESS_EVERY:
            return
        self.last_phase, self.last_write = phase, t
        with transaction(self.factory) as session:
            _beat(session, self.export_id, self.holder,
                  {"phase": phase, "items_done": done, "items_total": total, "heartbeat_at": self.at()})

    def _beats(self, stop: threading.Event) -> None:
        while not stop.wait(self.heartbeat or HEARTBEAT):
            try:
                with transaction(self.factory) as session:
                    _beat(session, self.export_id, self.holder, {"heartbeat_at": self.at()})
            except LostClaim:
                self.lost = True
                return
            except Exception as exc:
                log.warning("evidence export %s: heartbeat failed: %s", self.export_id, exc)

    def run(self) -> str:
        with self.factory() as session:
            row = session.get(EvidenceExport, self.export_id)
            campaign_id, actor = row.campaign_id, row.requested_by
        target = Path(self.settings.instance_path) / _relative(self.export_id)
        export_dir(self.settings)
        stop = threading.Event()
        beat = None
        if self.heartbeat:
            beat = threading.Thread(target=self._beats, args=(stop,), daemon=True,
                                    name=f"evidence-export-{self.export_id}")
            beat.start()
        try:
            result = evidence.export_bundle(self.factory, self.settings, campaign_id, target, actor=actor,
                                   progress=self.progress)
            os.chmod(target, 0o600)
            sha = _sha256(target)
        except LostClaim:
            _unlink(target)
            log.warning("evidence export %s: taken over by a sweep; this run stops", self.export_id)
            return "lost"
        except evidence.EvidenceError as exc:
            _unlink(target)
            self._finish(ExportStatus.FAILED, error=str(exc))
            return ExportStatus.FAILED
        except Exception as exc:
            _unlink(target)
            log.error("evidence export %s failed", self.export_id, exc_info=True)
            self._finish(ExportStatus.FAILED, error=_error_text(exc))
            return ExportStatus.FAILED
        finally:
            stop.set()
            if beat is not None:
                beat.join(timeout=10)
        finished = self.at()
        days = int(self.settings.evidence_retention_days)
        self._finish(ExportStatus.DONE, at=finished, phase="done", items_done=result.items, items_total=result.items,
                     file_path=_relative(self.export_id), size=result.bytes, sha256=sha,
                     manifest_sha256=result.manifest_sha256, expires_at=finished + timedelta(days=days))
        log.info("evidence export %s of campaign %s: %s items, %s bytes", self.export_id, campaign_id,
                 result.items, result.bytes)
        return ExportStatus.DONE

    def _finish(self, status: str, at: datetime | None = None, **values: Any) -> None:
        at = at or self.at()
        try:
            with transaction(self.factory) as session:
                _beat(session, self.export_id, self.holder,
                      {"status": status, "finished_at": at, "heartbeat_at": at, "holder": None, **values})
                if status == ExportStatus.FAILED:
                    row = session.get(EvidenceExport, self.export_id)
                    record(session, actor="scheduler", action="evidence.export_failed",
                           object_type="evidence_export", object_id=str(self.export_id),
                           campaign_id=row.campaign_id, after={"error": values.get("error")})
        except LostClaim:
            log.warning("evidence export %s: taken over by a sweep before it finished", self.export_id)
            _unlink(Path(self.settings.instance_path) / _relative(self.export_id))


def _error_text(exc: BaseException) -> str:
    return redact(f"{type(exc).__name__}: {exc}")[:2000]


def _sha256(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            sha.update(chunk)
    return sha.hexdigest()


def _unlink(path: Path) -> bool:
    try:
        path.unlink()
        return True
    except FileNotFoundError:
        return False
    except OSError as exc:
        log.warning("could not remove %s: %s", path, exc)
        return False


def run_one(factory: sessionmaker[Session], settings: Any, holder: str, now: datetime,
            heartbeat: float | None = HEARTBEAT) -> tuple[int, str] | None:
    """Claim the oldest queued export and build it. (export id, outcome) or None when nothing is queued."""
    with transaction(factory) as session:
        export_id = claim_next(session, holder, now)
    if export_id is None:
        return None
    return export_id, _Runner(factory, settings, export_id, holder, now, heartbeat).run()


def run_pending(factory: sessionmaker[Session], settings: Any, holder: str, now: datetime, *,
                linger: float = 0.0, stopping: Callable[[], bool] = lambda: False,
                wait: Callable[[float], None] | None = None, heartbeat: float | None = HEARTBEAT,
                ) -> dict[str, Any]:
    """What the scheduler's `evidence:export` job does: sweep, then build every queued export; with `linger`
    (seconds), keep looking for new ones every 2 s until then, so an export asked for waits seconds rather
    than the next minute's run. Returns what was swept and built."""
    t0 = time.monotonic()
    out: dict[str, Any] = {"swept": sweep(factory, settings, now), "built": []}
    wait = wait or (lambda seconds: time.sleep(seconds))
    while not stopping():
        at = now + timedelta(seconds=time.monotonic() - t0)
        ran = run_one(factory, settings, holder, at, heartbeat)
        if ran is not None:
            out["built"].append(ran)
            continue
        if time.monotonic() - t0 >= linger:
            break
        wait(2.0)
    return out


def sweep(factory: sessionmaker[Session], settings: Any, now: datetime) -> dict[str, list[str]]:
    """Requeue (or fail) exports whose process died, remove partial files of dead processes, expired bundles
    and files no export owns. Runs at every evidence job and at scheduler start."""
    out: dict[str, list[str]] = {"requeued": [], "failed": [], "expired": [], "removed": []}
    folder = export_dir(settings)
    with transaction(factory) as session:
        dead = session.scalars(select(EvidenceExport).where(
            EvidenceExport.status == ExportStatus.RUNNING,
            (EvidenceExport.heartbeat_at.is_(None)) | (EvidenceExport.heartbeat_at < now - STALE))
            .order_by(EvidenceExport.id).with_for_update()).all()
        for row in dead:
            last = row.heartbeat_at.isoformat(timespec="seconds") if row.heartbeat_at else "never"
            if row.attempts < MAX_ATTEMPTS:
                row.error = f"interrupted on {row.holder or '?'} (last sign of life {last}); queued again"
                row.status, row.holder, row.phase = ExportStatus.QUEUED, None, None
                out["requeued"].append(str(row.id))
            else:
                row.status, row.finished_at = ExportStatus.FAILED, now
                row.error = (f"interrupted: the process building it ({row.holder or '?'}) stopped (last sign of "
                             f"life {last}), {row.attempts} times; ask for it again")
                row.holder = None
                out["failed"].append(str(row.id))
                record(session, actor="scheduler", action="evidence.export_failed", object_type="evidence_export",
                       object_id=str(row.id), campaign_id=row.campaign_id, after={"error": row.error})
            log.warning("evidence export %s: %s", row.id, row.error)
        expired = session.scalars(select(EvidenceExport).where(EvidenceExport.status == ExportStatus.DONE,
                                                               EvidenceExport.expires_at <= now)
                                  .order_by(EvidenceExport.id)).all()
        for row in expired:
            if row.file_path:
                _unlink(Path(settings.instance_path) / row.file_path)
            row.status, row.file_path = ExportStatus.EXPIRED, None
            out["expired"].append(str(row.id))
            record(session, actor="scheduler", action="evidence.export_expired", object_type="evidence_export",
                   object_id=str(row.id), campaign_id=row.campaign_id, after={"sha256": row.sha256})
        live = {str(Path(p).name) for p in session.scalars(select(EvidenceExport.file_path).where(
            EvidenceExport.status == ExportStatus.DONE, EvidenceExport.file_path.is_not(None)))}
        building = set(session.scalars(select(EvidenceExport.id).where(EvidenceExport.status.in_(ACTIVE))))
    for entry in folder.iterdir():
        m = _FILE.match(entry.name)
        if m and entry.name not in live and int(m[1]) not in building and _unlink(entry):
            out["removed"].append(entry.name)
    out["removed"].extend(evidence.remove_partials(folder))
    if any(out.values()):
        log.info("evidence exports swept: %s", {k: v for k, v in out.items() if v})
    return out
