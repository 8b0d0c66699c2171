"""Building the bundle: `export_bundle` writes every file through the writers, checkpoints the audit
chain first and carries the checkpoints that cover the campaign, fills the manifest and signs it, into a
temp file renamed into place.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from attest import __version__, dialects, exports
from attest.audit.checkpoints import CheckpointError, open_store, parse_checkpoint, write_checkpoint
from attest.audit.evidence.members import _add_bytes, _add_file, _Member
from attest.audit.evidence.partials import _partial_prefix, remove_partials
from attest.audit.evidence.report import (
    RUBBER_STAMP_BULK_SHARE,
    RUBBER_STAMP_MEDIAN_SECONDS,
    RUBBER_STAMP_MIN_DECISIONS,
    SITTING_GAP_SECONDS,
    _iso,
    assigned_reviewers,
    completion,
    population,
    render_report_pdf,
    report_context,
    reviewer_stats,
    sync_runs,
    totals,
)
from attest.audit.evidence.signing import EvidenceError, _signed_manifest, load_signing_key
from attest.audit.evidence.writers import (
    Progress,
    _no_progress,
    _write_audit,
    _write_exclusions,
    _write_items_csv,
    _write_items_xlsx,
    _write_remediations,
)
from attest.audit.log import verify_chain
from attest.audit.models import AuditCheckpoint
from attest.config import Settings
from attest.db import transaction, utcnow
from attest.reviews.models import (
    Campaign,
    ReviewItem,
)
from attest.signing import key_fingerprint, key_id, public_key_pem
from attest.trail.chain import GENESIS, record
from attest.trail.models import AuditEvent, AuditHead

FORMAT = "attest-evidence-bundle/1"


@dataclass
class ExportResult:
    path: str
    campaign_id: int
    items: int
    bytes: int
    manifest_sha256: str
    seconds: dict[str, float] = field(default_factory=dict)
    problems_at_export: list[str] = field(default_factory=list)

    @property
    def csv_rows_per_second(self) -> float:
        return self.items / self.seconds["items.csv"] if self.seconds.get("items.csv") else 0.0

    @property
    def xlsx_rows_per_second(self) -> float:
        return self.items / self.seconds["items.xlsx"] if self.seconds.get("items.xlsx") else 0.0


def campaign_doc(campaign: Campaign) -> dict[str, Any]:
    spec = campaign.spec or {}
    return {
        "id": campaign.id, "name": campaign.name, "status": campaign.status,
        "description": spec.get("description"),
        "definition_id": campaign.definition_id,
        "definition_name": campaign.definition.name if campaign.definition else spec.get("name"),
        "created_by": campaign.created_by, "created_at": _iso(campaign.created_at),
        "launched_at": _iso(campaign.launched_at), "due_at": _iso(campaign.due_at),
        "closed_at": _iso(campaign.closed_at), "closed_by": campaign.closed_by,
        "summary_at_close": campaign.summary or {},
    }


def export_bundle(
    session_factory: sessionmaker[Session],
    settings: Settings,
    campaign_id: int,
    out_path: str | os.PathLike,
    actor: str = "system",
    check_chain: bool = True,
    progress: Progress | None = None,
) -> ExportResult:
    """Write the signed evidence zip of a campaign to `out_path` (atomically: a temp file, then rename).

    The zip (mode 0600) and a scratch folder for items.xlsx are written next to `out_path`, named after this
    process (`remove_partials` removes them once it is gone). `progress(phase, items written, items)` is
    called at each phase (PHASES) and after each batch of items, from this thread."""
    report = progress or _no_progress
    key = load_signing_key(settings)
    pub = key.public_key()
    checkpoint_error = _checkpoint_before_export(session_factory, settings, key)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    t_all = time.perf_counter()
    with session_factory() as session:
        campaign = session.get(Campaign, campaign_id)
        if campaign is None:
            raise EvidenceError(f"no campaign with id {campaign_id}")
        if campaign.status == "draft":
            raise EvidenceError(f"campaign {campaign_id} ({campaign.name}) has not been launched: there is no evidence yet")
        dialect = dialects.name(session)
        dialects.small_page_cache(session)  # a streaming scan gains nothing from a big page cache
        n_items = session.scalar(select(func.count()).select_from(ReviewItem.__table__)
                                 .where(ReviewItem.__table__.c.campaign_id == campaign_id)) or 0
        report("starting", 0, n_items)
        remove_partials(out_path.parent)
        fd, tmp_zip = tempfile.mkstemp(prefix=_partial_prefix(), suffix=".zip.part", dir=out_path.parent)
        os.close(fd)
        tmpdir = tempfile.mkdtemp(prefix=_partial_prefix(), dir=out_path.parent)
        try:
            members: list[_Member] = []
            with zipfile.ZipFile(tmp_zip, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1,
                                 allowZip64=True) as zf:
                t = time.perf_counter()
                items_member = _write_items_csv(session, zf, campaign_id, dialect, report, n_items)
                members.append(items_member)
                seconds["items.csv"] = time.perf_counter() - t

                t = time.perf_counter()
                xlsx_path = os.path.join(tmpdir, "items.xlsx")
                report("items.xlsx", 0, n_items)
                _write_items_xlsx(session, xlsx_path, campaign_id, dialect, campaign.name, report, n_items)
                m = _add_file(zf, "items.xlsx", xlsx_path, compress=False)
                m.rows = items_member.rows
                members.append(m)
                os.unlink(xlsx_path)
                seconds["items.xlsx"] = time.perf_counter() - t

                t = time.perf_counter()
                report("exclusions", n_items, n_items)
                members.append(_write_exclusions(session, zf, campaign_id))
                members.append(_write_remediations(session, zf, campaign_id))
                report("audit", n_items, n_items)
                audit_member, audit_info = _write_audit(session, zf, campaign_id)
                members.append(audit_member)
                cp_members, cp_info = _write_checkpoints(session, zf, settings, pub, campaign_id, checkpoint_error)
                members.extend(cp_members)
                seconds["exclusions+audit"] = time.perf_counter() - t

                t = time.perf_counter()
                report("chain", n_items, n_items)
                head = session.execute(select(AuditHead.seq, AuditHead.last_hash).where(AuditHead.id == 1)).first()
                problem = verify_chain(session) if check_chain else None
                seconds["chain_check"] = time.perf_counter() - t

                t = time.perf_counter()
                report("report", n_items, n_items)
                total = totals(session, campaign_id)
                manifest: dict[str, Any] = {
                    "format": FORMAT,
                    "generated_at": _iso(utcnow()),
                    "generated_by": actor,
                    "attest_version": __version__,
                    "campaign": campaign_doc(campaign),
                    "signing_key_id": key_id(pub),
                    "signing_key_fingerprint": key_fingerprint(pub),
                    "definition": campaign.spec or {},
                    "controls": list((campaign.spec or {}).get("controls") or []),
                    "reviewers": assigned_reviewers(session, campaign_id),
                    "decisions_by_reviewer": reviewer_stats(session, campaign_id, dialect),
                    "sync_runs": sync_runs(session, campaign),
                    "population": population(session, campaign),
                    "totals": total,
                    "completion": completion(session, campaign_id, dialect, total["items"]),
                    "audit": {
                        **audit_info,
                        "chain_head_at_export": {"seq": int(head[0]), "hash": head[1]} if head else
                        {"seq": 0, "hash": GENESIS},
                        "chain_checked_at_export": check_chain,
                        "chain_intact_at_export": (problem is None) if check_chain else None,
                        "chain_problem_at_export": str(problem) if problem else None,
                        "checkpoints": cp_info,
                    },
                    "csv_neutralisation": {"rule": exports.RULE, "guidance": exports.OWASP},
                    "rubber_stamp_rules": {
                        "median_seconds_below": RUBBER_STAMP_MEDIAN_SECONDS,
                        "bulk_approval_share_above": RUBBER_STAMP_BULK_SHARE,
                        "minimum_decisions": RUBBER_STAMP_MIN_DECISIONS,
                        "pauses_longer_than_seconds_ignored": SITTING_GAP_SECONDS,
                    },
                }
                pdf = render_report_pdf(report_context(session, campaign, manifest, dialect))
                members.append(_add_bytes(zf, "report.pdf", pdf, compress=False))
                seconds["report.pdf"] = time.perf_counter() - t

                report("signing", n_items, n_items)
                pem = public_key_pem(pub).encode()
                members.append(_add_bytes(zf, "signing_key.pub.pem", pem))
                sums = "".join(f"{m.sha256}  {m.name}\n" for m in members).encode()
                members.append(_add_bytes(zf, "SHA256SUMS", sums))
                manifest["files"] = {m.name: m.entry() for m in members}
                data = _signed_manifest(manifest, key)
                _add_bytes(zf, "manifest.json", data)
            os.replace(tmp_zip, out_path)
        except BaseException:
            if os.path.exists(tmp_zip):
                os.unlink(tmp_zip)
            raise
        finally:
            shutil.rmtree(tmpdir, ignore_errors=True)
    manifest_sha = hashlib.sha256(data).hexdigest()
    with transaction(session_factory) as s:
        record(s, actor=actor, action="evidence.exported", object_type="campaign", object_id=str(campaign_id),
               campaign_id=campaign_id,
               after={"manifest_sha256": manifest_sha, "items": items_member.rows, "key_id": key_id(pub),
                      "bytes": out_path.stat().st_size})
    seconds["total"] = time.perf_counter() - t_all
    return ExportResult(str(out_path), campaign_id, items_member.rows or 0, out_path.stat().st_size, manifest_sha,
                        {k: round(v, 3) for k, v in seconds.items()},
                        [str(problem)] if check_chain and problem else [])


def _checkpoint_before_export(session_factory: sessionmaker[Session], settings: Settings,
                              key: Ed25519PrivateKey) -> str | None:
    """Checkpoint the chain now, so that a checkpoint covers every event the bundle carries. The error, if any."""
    try:
        with transaction(session_factory) as s:
            write_checkpoint(s, key, open_store(settings), once_per_minute=False)
    except CheckpointError as exc:
        return str(exc)
    return None


def _write_checkpoints(session: Session, zf: zipfile.ZipFile, settings: Settings, pub: Ed25519PublicKey,
                       campaign_id: int, error: str | None) -> tuple[list[_Member], dict[str, Any]]:
    """The signed checkpoints that cover the campaign's events, as `checkpoints/NAME`: those taken right after
    one of its events (the bundle's own event then carries the checkpointed hash) and the first one at or
    after its last event (which signs the whole chain up to there)."""
    store = open_store(settings)
    last = session.scalar(select(func.max(AuditEvent.seq)).where(AuditEvent.campaign_id == campaign_id))
    rows: dict[str, int] = {}
    if last is not None:
        on_events = select(AuditCheckpoint.name, AuditCheckpoint.seq).join(
            AuditEvent, AuditEvent.seq == AuditCheckpoint.seq).where(AuditEvent.campaign_id == campaign_id)
        rows.update({n: s for n, s in session.execute(on_events)})
        covering = session.execute(select(AuditCheckpoint.name, AuditCheckpoint.seq).where(AuditCheckpoint.seq >= last)
                                   .order_by(AuditCheckpoint.seq, AuditCheckpoint.id).limit(1)).first()
        if covering is not None:
            rows[covering[0]] = covering[1]
    members, listed, problems = [], [], [error] if error else []
    for name, _seq in sorted(rows.items(), key=lambda r: (r[1], r[0])):
        try:
            data = store.get(name)
        except Exception as exc:
            problems.append(f"checkpoint {name} cannot be read from {store.describe()} ({type(exc).__name__})")
            continue
        doc, why = parse_checkpoint(data, pub)
        if why:
            problems.append(f"checkpoint {name} in {store.describe()}: {why}")
            continue
        members.append(_add_bytes(zf, CHECKPOINT_PREFIX + name, data))
        listed.append({"file": CHECKPOINT_PREFIX + name, "seq": doc["seq"], "hash": doc["hash"], "at": doc["at"]})
    covered = bool(listed) and last is not None and listed[-1]["seq"] >= last
    return members, {"store": store.describe(), "files": listed, "covers_last_event": covered,
                     "problems": problems}


CHECKPOINT_PREFIX = "checkpoints/"
