"""The evidence bundle of a campaign: a signed zip an auditor can check offline.

Contents (see docs/evidence.md):
- `items.csv`, `items.xlsx`: one row per review item (XlsxWriter constant-memory mode; a new sheet past
  Excel's 1,048,576 rows), streamed from the database (server-side cursor on PostgreSQL): memory stays
  flat whatever the campaign's size.
- `exclusions.csv`: each grant in scope at launch that got no item, with the reason.
- `remediations.csv`: every remediation with what was done (the note of a manual task marked done, by whom,
  when) and the sync run that proved it. Every CSV goes through `attest.exports` (formula neutralisation).
- `report.pdf`: summary, completion over time, decisions by reviewer with rubber-stamp indicators,
  revocations and their verification, exceptions (WeasyPrint, `templates/evidence/report.html`).
- `audit.jsonl`: the campaign's audit events in chain order, each with its seq, prev_hash and hash.
- `signing_key.pub.pem`: the public half of the signing key; `SHA256SUMS`: for `sha256sum -c`.
- `manifest.json`: campaign, definition as launched, controls, dates, reviewers, sync runs used,
  population reconciliation, totals, the audit chain head at export, the SHA-256 and size of every
  other file, and an Ed25519 signature over the canonical manifest.

The signed message is the manifest without its `signature` member, as canonical JSON (UTF-8, keys
sorted, no whitespace). `manifest.json` is written as exactly those bytes with the signature member
appended last, so removing `,"signature":{...}` from the end gives the signed bytes back (docs show how
with sed + openssl); `verify_bundle` re-canonicalises the parsed manifest instead.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import shutil
import socket
import statistics
import tempfile
import time
import zipfile
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import Select, and_, case, cast, false, func, select, true
from sqlalchemy import Text as SAText
from sqlalchemy.orm import Session, aliased, sessionmaker

from attest import __version__, dialects, exports
from attest.audit.log import iter_events, verify_chain
from attest.config import Settings
from attest.db import canonical_json, transaction, utcnow
from attest.entitlements.models import Account, Grant, Identity, Source, SyncRun
from attest.reviews import eligibility, queries
from attest.reviews.models import (
    Campaign,
    CampaignExclusion,
    Remediation,
    ReviewerSignoff,
    ReviewItem,
)
from attest.trail.chain import GENESIS, event_hash
from attest.trail.models import AuditEvent, AuditHead

FORMAT = "attest-evidence-bundle/1"
XLSX_MAX_ROWS = 1_048_576  # Excel's limit per sheet, the header row included
BATCH = 10_000
LIST_LIMIT = 100  # rows of a list in the PDF (bounded cost); full lists are in items.csv and manifest.json
RUBBER_STAMP_MEDIAN_SECONDS = 5.0  # a median under this, over enough decisions, is flagged
RUBBER_STAMP_BULK_SHARE = 0.8  # approvals made in bulk over this share are flagged
RUBBER_STAMP_MIN_DECISIONS = 10
SITTING_GAP_SECONDS = 1800  # a longer pause between two decisions starts a new sitting (not counted)

ITEM_COLUMNS = (
    "item_id", "person", "email", "department", "person_status", "account", "account_kind", "system",
    "resource", "resource_type", "entitlement", "privileged", "via", "risks", "risk_score", "reviewer",
    "reviewer_email", "decision", "comment", "decided_by", "decided_on_behalf_of", "decided_at", "decided_in_bulk", "outcome",
    "outcome_reason", "remediation_mode", "remediation_status", "remediation_executed_at",
    "verification_sync_run", "reappeared_sync_run", "person_identity_id", "decided_by_identity_id",
)
EXCLUSION_COLUMNS = ("grant_id", "system", "grant_key", "account", "reason")


class EvidenceError(ValueError):
    """The bundle cannot be built (unknown campaign, no signing key); nothing was written."""


# export_bundle reports its progress as (phase, items written, items in the campaign)
Progress = Callable[[str, int, int], None]
PHASES = ("starting", "items.csv", "items.xlsx", "exclusions", "audit", "chain", "report", "signing")


def _no_progress(phase: str, done: int, total: int) -> None:
    pass


# --- partial files of an export that was killed -------------------------------------------------------------
# export_bundle writes `.evidence-<host>.<pid>.<random>.zip.part` and a folder `.evidence-<host>.<pid>.<random>/`
# next to its output and renames the zip into place at the end; a killed export leaves both behind.
# `remove_partials` (at the start of each export, of `attest evidence export` and of the scheduler) removes
# those of processes of this host that are gone, and legacy ones (no host and pid) older than an hour.

PARTIAL_PREFIX = ".evidence-"
LEGACY_PARTIAL_AGE = 3600.0  # seconds
_PARTIAL = re.compile(r"^\.evidence-(?P<host>[A-Za-z0-9-]+)\.(?P<pid>\d+)\.")


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:60] or "host"


def _partial_prefix() -> str:
    return f"{PARTIAL_PREFIX}{_host()}.{os.getpid()}."


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return True
    return True


def remove_partials(directory: str | os.PathLike, now: float | None = None) -> list[str]:
    """Remove what killed exports left in `directory`: their `.evidence-*.zip.part` files and `.evidence-*/`
    folders, when the process that wrote them (named in the file name) is no longer running on this host;
    unnamed (older versions') leftovers once they are an hour old. Returns the names removed."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    now = time.time() if now is None else now
    host, removed = _host(), []
    for entry in directory.iterdir():
        name = entry.name
        if not name.startswith(PARTIAL_PREFIX):
            continue
        if not (name.endswith(".zip.part") or entry.is_dir()):
            continue
        m = _PARTIAL.match(name)
        if m:
            if m["host"] != host or _pid_alive(int(m["pid"])):
                continue
        else:
            try:
                if now - entry.lstat().st_mtime < LEGACY_PARTIAL_AGE:
                    continue
            except OSError:
                continue
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        except OSError:
            continue
        removed.append(name)
    return sorted(removed)


# --- keys -----------------------------------------------------------------------------------------


def load_signing_key(settings: Settings) -> Ed25519PrivateKey:
    raw = (settings.signing_key or "").strip()
    if not raw:
        raise EvidenceError("ATTEST_SIGNING_KEY is not set: evidence bundles are signed with an Ed25519 key "
                            "(PEM, or base64 of the raw 32 bytes)")
    try:
        if raw.startswith("-----BEGIN"):
            key = serialization.load_pem_private_key(raw.encode(), password=None)
        else:
            data = base64.b64decode(raw, validate=True)
            if len(data) != 32:
                raise ValueError(f"{len(data)} bytes, not 32")
            key = Ed25519PrivateKey.from_private_bytes(data)
    except Exception as exc:
        raise EvidenceError(f"ATTEST_SIGNING_KEY is not a usable Ed25519 private key ({type(exc).__name__})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise EvidenceError("ATTEST_SIGNING_KEY must be an Ed25519 key")
    return key


def public_key_raw(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_key_pem(key: Ed25519PublicKey) -> str:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def key_id(key: Ed25519PublicKey) -> str:
    """A short fingerprint of the public key: the first 16 hex digits of SHA-256 over its raw bytes."""
    return key_fingerprint(key)[:16]


def key_fingerprint(key: Ed25519PublicKey) -> str:
    """The full fingerprint of the public key: SHA-256 over its raw 32 bytes, 64 hex digits."""
    return hashlib.sha256(public_key_raw(key)).hexdigest()


def load_public_key(text_or_bytes: str | bytes) -> Ed25519PublicKey:
    """A public key given as PEM or base64 raw bytes (what `attest evidence public-key` prints)."""
    data = text_or_bytes.encode() if isinstance(text_or_bytes, str) else text_or_bytes
    data = data.strip()
    if data.startswith(b"-----BEGIN"):
        key = serialization.load_pem_public_key(data)
    else:
        key = Ed25519PublicKey.from_public_bytes(base64.b64decode(data, validate=True))
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("not an Ed25519 public key")
    return key


# --- streaming helpers ------------------------------------------------------------------------------


class _HashingWriter(io.RawIOBase):
    """Passes bytes through to a zip member while counting them and hashing them with SHA-256."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.sha = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        self.sha.update(b)
        self.size += len(b)
        self.inner.write(b)
        return len(b)


@dataclass
class _Member:
    name: str
    sha256: str
    size: int
    rows: int | None = None

    def entry(self) -> dict[str, Any]:
        out: dict[str, Any] = {"sha256": self.sha256, "bytes": self.size}
        if self.rows is not None:
            out["rows"] = self.rows
        return out


class _Text:
    """A text stream into a new zip member (UTF-8), hashed as written."""

    def __init__(self, zf: zipfile.ZipFile, name: str, compress: bool = True) -> None:
        info = zipfile.ZipInfo(name, date_time=time.gmtime()[:6])
        info.compress_type = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
        info.external_attr = 0o644 << 16
        self.name = name
        self._raw = zf.open(info, "w", force_zip64=True)
        self._hash = _HashingWriter(self._raw)
        self._buf = io.BufferedWriter(self._hash, buffer_size=1 << 20)
        self.text = io.TextIOWrapper(self._buf, encoding="utf-8", newline="", write_through=False)

    def close(self, rows: int | None = None) -> _Member:
        self.text.flush()
        self._buf.flush()
        self._raw.close()
        return _Member(self.name, self._hash.sha.hexdigest(), self._hash.size, rows)


def _add_file(zf: zipfile.ZipFile, name: str, path: str | Path, compress: bool) -> _Member:
    info = zipfile.ZipInfo(name, date_time=time.gmtime()[:6])
    info.compress_type = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    info.external_attr = 0o644 << 16
    sha, size = hashlib.sha256(), 0
    with open(path, "rb") as src, zf.open(info, "w", force_zip64=True) as dst:
        while chunk := src.read(1 << 20):
            sha.update(chunk)
            size += len(chunk)
            dst.write(chunk)
    return _Member(name, sha.hexdigest(), size)


def _add_bytes(zf: zipfile.ZipFile, name: str, data: bytes, compress: bool = True) -> _Member:
    info = zipfile.ZipInfo(name, date_time=time.gmtime()[:6])
    info.compress_type = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    info.external_attr = 0o644 << 16
    zf.writestr(info, data)
    return _Member(name, hashlib.sha256(data).hexdigest(), len(data))


# --- the item rows: formatted by the database, streamed ------------------------------------------------


def _ts(col, dialect: str):
    """An ISO-8601 UTC text of a timestamp column, formatted in SQL (no per-row Python work)."""
    return dialects.iso_utc_text(col, dialect)


def _risks(col, dialect: str):
    """["a", "b"] -> "a; b", in SQL."""
    text_ = cast(col, SAText)
    for old, new in (("[", ""), ("]", ""), ('"', ""), (", ", ","), (",", "; ")):
        text_ = func.replace(text_, old, new)
    return text_


def _yes(col):
    return case((col == true(), "yes"), else_="")


def items_query(campaign_id: int, dialect: str) -> Select:
    """One row per item, every value already text or a number, in item id order."""
    ri = ReviewItem.__table__
    rm = Remediation.__table__
    rv = aliased(Identity.__table__, name="rv")
    dv = aliased(Identity.__table__, name="dv")
    fv = aliased(Identity.__table__, name="fv")  # the reviewer a delegate decided for (issue 20)
    return (
        select(
            ri.c.id, ri.c.person_name, ri.c.person_email, ri.c.person_department, ri.c.person_status,
            ri.c.account_login, ri.c.account_kind, ri.c.source_name, ri.c.resource_name, ri.c.resource_type,
            ri.c.entitlement_name, _yes(ri.c.privileged), ri.c.via, _risks(ri.c.risks, dialect), ri.c.risk_score,
            rv.c.display_name, rv.c.email, ri.c.decision, ri.c.comment, dv.c.display_name, fv.c.display_name,
            _ts(ri.c.decided_at, dialect), _yes(ri.c.decided_in_bulk), ri.c.outcome, ri.c.outcome_reason,
            rm.c.mode, rm.c.status, _ts(rm.c.executed_at, dialect), rm.c.verified_run_id, rm.c.reappeared_run_id,
            ri.c.identity_id, ri.c.decided_by_identity_id,
        )
        .select_from(ri)
        .outerjoin(rv, rv.c.id == ri.c.reviewer_id)
        .outerjoin(dv, dv.c.id == ri.c.decided_by_identity_id)
        .outerjoin(fv, fv.c.id == ri.c.decided_for_identity_id)
        .outerjoin(rm, rm.c.item_id == ri.c.id)
        .where(ri.c.campaign_id == campaign_id)
        .order_by(ri.c.id)
    )


def _stream(session: Session, stmt, batch: int = BATCH) -> Iterator[list]:
    """Batches of rows from a server-side cursor (PostgreSQL) / an incremental cursor (SQLite)."""
    result = session.execute(stmt, execution_options={"stream_results": True, "yield_per": batch})
    try:
        yield from result.partitions(batch)
    finally:
        result.close()


def _stream_items(session: Session, campaign_id: int, dialect: str, batch: int = BATCH) -> Iterator[list[tuple]]:
    """The item rows as plain tuples straight from the driver's cursor (a named, server-side cursor on
    PostgreSQL), inside the session's transaction: the hot path of the bundle, as close to a raw dump as
    it gets. The statement has no user input (the campaign id is an int), so it is compiled with its values."""
    conn = session.connection()
    sql = str(items_query(int(campaign_id), dialect).compile(dialect=conn.dialect,
                                                              compile_kwargs={"literal_binds": True}))
    cur = dialects.raw_cursor(conn, batch)
    try:
        cur.execute(sql)
        while rows := cur.fetchmany(batch):
            yield rows
    finally:
        cur.close()


def _write_items_csv(session: Session, zf: zipfile.ZipFile, campaign_id: int, dialect: str,
                     progress: Progress = _no_progress, total: int = 0) -> _Member:
    out = _Text(zf, "items.csv")
    writer = exports.writer(out.text, ITEM_COLUMNS, lineterminator="\n")
    rows = 0
    for part in _stream_items(session, campaign_id, dialect):
        writer.writerows(part)
        rows += len(part)
        progress("items.csv", rows, total)
    return out.close(rows)


def _write_items_xlsx(session: Session, path: str, campaign_id: int, dialect: str, campaign_name: str,
                      progress: Progress = _no_progress, total: int = 0) -> int:
    import xlsxwriter

    wb = xlsxwriter.Workbook(path, {
        "constant_memory": True, "strings_to_formulas": False, "strings_to_urls": False,
        "strings_to_numbers": False, "tmpdir": os.path.dirname(path),
    })
    wb.set_properties({"title": f"Access review items: {campaign_name}", "author": "Attest",
                       "comments": "Evidence bundle; the SHA-256 of this file is in manifest.json"})
    head = wb.add_format({"bold": True, "bg_color": "#E9ECEF", "border": 1})
    widths = {"person": 22, "email": 28, "account": 26, "resource": 28, "entitlement": 22, "via": 24, "risks": 24,
              "reviewer": 20, "reviewer_email": 26, "comment": 30, "decided_by": 20, "decided_on_behalf_of": 20, "decided_at": 20,
              "remediation_executed_at": 20}
    per_sheet = XLSX_MAX_ROWS - 1
    sheet, sheet_rows, sheets, rows = None, per_sheet, 0, 0
    write_string = write_number = None

    def new_sheet():
        nonlocal sheets
        sheets += 1
        ws = wb.add_worksheet("Items" if sheets == 1 else f"Items {sheets}")
        for i, name in enumerate(ITEM_COLUMNS):
            ws.set_column(i, i, widths.get(name, 14))
        ws.freeze_panes(1, 0)
        ws.write_row(0, 0, ITEM_COLUMNS, head)
        return ws

    # typed writes, skipping empty cells: several times cheaper than write_row's per-cell dispatch
    for part in _stream_items(session, campaign_id, dialect):
        for row in part:
            if sheet_rows >= per_sheet:
                sheet, sheet_rows = new_sheet(), 0
                write_string, write_number = sheet.write_string, sheet.write_number
            sheet_rows += 1
            for col, value in enumerate(row):
                if value is None:
                    continue
                if value.__class__ is str:
                    if value:
                        write_string(sheet_rows, col, value, None)
                else:
                    write_number(sheet_rows, col, value, None)
        rows += len(part)
        progress("items.xlsx", rows, total)
    if sheet is None:
        new_sheet()
    wb.close()
    return rows


def _write_exclusions(session: Session, zf: zipfile.ZipFile, campaign_id: int) -> _Member:
    ce = CampaignExclusion.__table__
    stmt = (
        select(ce.c.grant_id, Source.name, Grant.key, Account.login, ce.c.reason)
        .select_from(ce)
        .outerjoin(Grant, Grant.id == ce.c.grant_id)
        .outerjoin(Source, Source.id == Grant.source_id)
        .outerjoin(Account, Account.id == ce.c.account_id)
        .where(ce.c.campaign_id == campaign_id)
        .order_by(ce.c.id)
    )
    out = _Text(zf, "exclusions.csv")
    writer = exports.writer(out.text, EXCLUSION_COLUMNS, lineterminator="\n")
    rows = 0
    for part in _stream(session, stmt):
        writer.writerows(part)
        rows += len(part)
    return out.close(rows)


def _write_remediations(session: Session, zf: zipfile.ZipFile, campaign_id: int) -> _Member:
    """Every remediation of the campaign with what was done: the note given when a manual task was marked
    done, by whom and when, and the sync run that proved it (the web's remediations.csv, same writer)."""
    from attest.reviews.remediation import write_remediations_csv

    out = _Text(zf, "remediations.csv")
    rows = write_remediations_csv(session, out.text, campaign_id, lineterminator="\n")
    return out.close(rows)


def iter_campaign_events(session: Session, campaign_id: int, batch: int = 5000) -> Iterator[dict[str, Any]]:
    return iter_events(session, AuditEvent.campaign_id == campaign_id, batch=batch, expunge=True)


def _write_audit(session: Session, zf: zipfile.ZipFile, campaign_id: int) -> tuple[_Member, dict[str, Any]]:
    out = _Text(zf, "audit.jsonl")
    n, first, last = 0, None, None
    for ev in iter_campaign_events(session, campaign_id):
        out.text.write(canonical_json(ev))
        out.text.write("\n")
        n += 1
        first = ev["seq"] if first is None else first
        last = ev["seq"]
    return out.close(n), {"events": n, "first_seq": first, "last_seq": last}


# --- the figures -------------------------------------------------------------------------------------


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat() if value is not None else None


def _counts(session: Session, col, *where) -> dict[str, int]:
    return {str(k) if k is not None else "none": n
            for k, n in session.execute(select(col, func.count()).where(*where).group_by(col))}


def _epoch(col, dialect: str):
    return dialects.epoch_seconds(col, dialect)


def _day(col, dialect: str):
    return dialects.utc_day(col, dialect)


def reviewer_stats(session: Session, campaign_id: int, dialect: str) -> list[dict[str, Any]]:
    """Decisions by the person who took them, with the rubber-stamp indicators.

    Median seconds per decision: the pauses between a reviewer's consecutive one-by-one decisions
    (pauses over SITTING_GAP_SECONDS start a new sitting and are left out). Bulk share: the share of
    their approvals made with a bulk action.
    """
    ri = ReviewItem.__table__
    who = func.coalesce(ri.c.decided_by_identity_id, ri.c.reviewer_id)
    agg = session.execute(
        select(
            who.label("identity_id"),
            func.count().label("decided"),
            func.sum(case((ri.c.decision == "approve", 1), else_=0)),
            func.sum(case((ri.c.decision == "revoke", 1), else_=0)),
            func.sum(case((ri.c.decision == "abstain", 1), else_=0)),
            func.sum(case((and_(ri.c.decision == "approve", ri.c.decided_in_bulk == true()), 1), else_=0)),
            func.min(ri.c.decided_at), func.max(ri.c.decided_at),
        ).where(ri.c.campaign_id == campaign_id, ri.c.decision.is_not(None)).group_by(who)
    ).all()
    gaps: dict[int | None, array] = {}
    stmt = (
        select(who, _epoch(ri.c.decided_at, dialect))
        .where(ri.c.campaign_id == campaign_id, ri.c.decision.is_not(None), ri.c.decided_in_bulk == false())
        .order_by(who, ri.c.decided_at)
    )
    prev_who, prev_t = object(), 0.0
    for part in _stream(session, stmt):
        for ident, t in part:
            t = float(t)
            if ident == prev_who:
                gap = t - prev_t
                if 0 <= gap <= SITTING_GAP_SECONDS:
                    gaps.setdefault(ident, array("d")).append(gap)
            prev_who, prev_t = ident, t
    names = {i.id: i for i in session.scalars(select(Identity).where(Identity.id.in_([r[0] for r in agg if r[0]])))}
    out = []
    for ident, decided, approved, revoked, abstained, bulk_approved, first, last in agg:
        g = gaps.get(ident)
        median = round(statistics.median(g), 1) if g else None
        bulk_share = round(bulk_approved / approved, 3) if approved else 0.0
        flags = []
        if decided >= RUBBER_STAMP_MIN_DECISIONS and median is not None and median < RUBBER_STAMP_MEDIAN_SECONDS:
            flags.append(f"median {median:g}s per decision")
        if approved >= RUBBER_STAMP_MIN_DECISIONS and bulk_share > RUBBER_STAMP_BULK_SHARE:
            flags.append(f"{bulk_share:.0%} of approvals in bulk")
        if decided >= RUBBER_STAMP_MIN_DECISIONS and not revoked and not abstained:
            flags.append("approved everything")
        person = names.get(ident)
        out.append({
            "identity_id": ident, "name": person.display_name if person else "(unknown)",
            "email": person.email if person else None, "decided": decided, "approved": approved or 0,
            "revoked": revoked or 0, "abstained": abstained or 0, "bulk_approved": bulk_approved or 0,
            "bulk_share": bulk_share, "median_seconds": median,
            "first_decision_at": _iso(_as_dt(first)), "last_decision_at": _iso(_as_dt(last)),
            "rubber_stamp": flags,
        })
    out.sort(key=lambda r: (-r["decided"], r["name"]))
    return out


def _as_dt(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value
    return datetime.fromisoformat(str(value)).replace(tzinfo=UTC)


def assigned_reviewers(session: Session, campaign_id: int) -> list[dict[str, Any]]:
    ri = ReviewItem.__table__
    rows = session.execute(
        select(ri.c.reviewer_id, func.count(), func.sum(case((ri.c.decision.is_not(None), 1), else_=0)))
        .where(ri.c.campaign_id == campaign_id).group_by(ri.c.reviewer_id)
    ).all()
    ids = [r[0] for r in rows if r[0] is not None]
    people = {i.id: i for i in session.scalars(select(Identity).where(Identity.id.in_(ids)))} if ids else {}
    signoffs = dict(session.execute(select(ReviewerSignoff.reviewer_id, ReviewerSignoff.signed_off_at)
                                    .where(ReviewerSignoff.campaign_id == campaign_id)).all())
    out = []
    for rid, items, decided in rows:
        p = people.get(rid)
        out.append({"identity_id": rid, "name": p.display_name if p else "(unroutable)",
                    "email": p.email if p else None, "items": items, "decided": decided or 0,
                    "signed_off_at": _iso(signoffs.get(rid)) if rid in signoffs else None})
    out.sort(key=lambda r: (r["identity_id"] is None, r["name"] or ""))
    return out


def _run_doc(run: SyncRun | None, source_name: str | None = None) -> dict[str, Any] | None:
    if run is None:
        return None
    stats = run.stats or {}
    return {"run_id": run.id, "source": source_name, "status": run.status, "started_at": _iso(run.started_at),
            "finished_at": _iso(run.finished_at), "api_calls": run.api_calls,
            "read": stats.get("read"), "added": stats.get("added"), "ended": stats.get("ended")}


def sync_runs(session: Session, campaign: Campaign) -> dict[str, Any]:
    snapshot = []
    for entry in campaign.sync_runs or []:
        run = session.get(SyncRun, entry.get("run_id")) if entry.get("run_id") else None
        doc = _run_doc(run, entry.get("source")) or {}
        snapshot.append({**entry, **{k: v for k, v in doc.items() if v is not None}})
    ids = set()
    for col in (Remediation.verified_run_id, Remediation.reappeared_run_id):
        ids |= set(session.scalars(select(col).where(Remediation.campaign_id == campaign.id, col.is_not(None))
                                   .distinct()))
    verification = []
    for run_id in sorted(ids):
        run = session.get(SyncRun, run_id)
        verification.append(_run_doc(run, run.source.name if run else None))
    return {"snapshot": snapshot, "verification": verification}


def population(session: Session, campaign: Campaign) -> dict[str, Any]:
    ri = ReviewItem.__table__
    items = session.scalar(select(func.count()).select_from(ri).where(ri.c.campaign_id == campaign.id))
    by_reason = _counts(session, CampaignExclusion.reason, CampaignExclusion.campaign_id == campaign.id)
    excluded = sum(by_reason.values())
    recorded = dict(campaign.population or {})
    in_scope = recorded.get("in_scope")
    return {
        "recorded_at_launch": recorded,
        "in_scope": in_scope,
        "items": items,
        "excluded": excluded,
        "excluded_by_reason": by_reason,
        "balanced": in_scope is not None and in_scope == items + excluded,
        "rule": "grants in scope at launch = items created + grants excluded (each exclusion with its reason)",
    }


def totals(session: Session, campaign_id: int) -> dict[str, Any]:
    ri = ReviewItem.__table__
    where = ri.c.campaign_id == campaign_id
    decisions = _counts(session, ri.c.decision, where)
    outcomes = _counts(session, ri.c.outcome, where)
    remediations = _counts(session, Remediation.status, Remediation.campaign_id == campaign_id)
    items = sum(decisions.values())
    return {
        "items": items,
        "decided": items - decisions.get("none", 0),
        "undecided": decisions.get("none", 0),
        "approved": decisions.get("approve", 0),
        "revoked": decisions.get("revoke", 0),
        "abstained": decisions.get("abstain", 0),
        "decided_in_bulk": session.scalar(select(func.count()).select_from(ri)
                                          .where(where, ri.c.decided_in_bulk == true())),
        "unroutable": session.scalar(select(func.count()).select_from(ri).where(where, ri.c.reviewer_id.is_(None))),
        # decided by the item's own person (must be 0; `evidence verify` recounts it from items.csv)
        "self_decisions": session.scalar(select(func.count()).select_from(ri).where(
            where, eligibility.sql_self_decided())),
        "outcomes": outcomes,
        "remediations": remediations,
        "reappeared": remediations.get("reappeared", 0),
        "risks": {"privileged": session.scalar(select(func.count()).select_from(ri)
                                               .where(where, ri.c.privileged == true()))},
    }


def completion(session: Session, campaign_id: int, dialect: str, total: int) -> list[dict[str, Any]]:
    ri = ReviewItem.__table__
    day = _day(ri.c.decided_at, dialect)
    rows = session.execute(select(day, func.count()).where(ri.c.campaign_id == campaign_id, ri.c.decided_at.is_not(None))
                           .group_by(day).order_by(day)).all()
    out, running = [], 0
    for d, n in rows:
        running += n
        out.append({"date": str(d), "decided": n, "cumulative": running,
                    "percent": round(100.0 * running / total, 1) if total else 0.0})
    return out


def _list(session: Session, stmt, limit: int = LIST_LIMIT) -> list[Any]:
    return list(session.execute(stmt.limit(limit)).all())


def report_context(session: Session, campaign: Campaign, manifest: dict[str, Any], dialect: str) -> dict[str, Any]:
    ri = ReviewItem.__table__
    rm = Remediation.__table__
    revocations = _list(session, select(ri.c.id, ri.c.person_name, ri.c.account_login, ri.c.source_name,
                                        ri.c.resource_name, ri.c.entitlement_name, rm.c.mode, rm.c.status,
                                        rm.c.target, rm.c.last_error, rm.c.verified_run_id, rm.c.reappeared_run_id,
                                        rm.c.note, rm.c.executed_by)
                        .select_from(rm).join(ri, ri.c.id == rm.c.item_id).where(rm.c.campaign_id == campaign.id)
                        .order_by(case((rm.c.status == "reappeared", 0), (rm.c.status.in_(("failed", "refused")), 1),
                                       else_=2), rm.c.id))
    exceptions = _list(session, select(ri.c.id, ri.c.person_name, ri.c.account_login, ri.c.source_name,
                                       ri.c.resource_name, ri.c.entitlement_name, ri.c.outcome, ri.c.outcome_reason,
                                       ri.c.decision, ri.c.comment, ri.c.reviewer_id)
                       .where(ri.c.campaign_id == campaign.id, queries.exception_condition())
                       .order_by(ri.c.id))
    # what was done for each manual remediation marked done (also in remediations.csv, every one)
    manual_notes = _list(session, select(rm.c.id, ri.c.id.label("item_id"), ri.c.person_name, ri.c.account_login,
                                         ri.c.source_name, ri.c.resource_name, ri.c.entitlement_name, rm.c.status,
                                         rm.c.note, rm.c.executed_by, rm.c.executed_at)
                         .select_from(rm).join(ri, ri.c.id == rm.c.item_id)
                         .where(rm.c.campaign_id == campaign.id, rm.c.mode == "manual", rm.c.note.is_not(None))
                         .order_by(rm.c.id))
    from attest.reviews import flagged as flagged_service

    flagged, _ = flagged_service.list_flagged(session, campaign.id, limit=LIST_LIMIT)
    return {
        "m": manifest, "campaign": manifest["campaign"], "totals": manifest["totals"],
        "key": {"id": manifest.get("signing_key_id"), "fingerprint": manifest.get("signing_key_fingerprint")},
        "population": manifest["population"],
        # every reviewer assigned (zero decisions included) and everyone who decided; flagged first
        "reviewers": reviewer_table(manifest["reviewers"], manifest["decisions_by_reviewer"]),
        "manual_notes": manual_notes, "flagged": flagged, "flagged_count": flagged_service.flagged_count(session, campaign.id),
        "completion": manifest["completion"], "revocations": revocations, "exceptions": exceptions,
        "list_limit": LIST_LIMIT, "thresholds": {
            "median": RUBBER_STAMP_MEDIAN_SECONDS, "bulk": RUBBER_STAMP_BULK_SHARE,
            "min": RUBBER_STAMP_MIN_DECISIONS, "sitting": SITTING_GAP_SECONDS},
    }


def reviewer_table(assigned: list[dict[str, Any]], stats: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per reviewer for the report: every identity items were assigned to, with no decision
    included (counts 0), and anyone else who decided (an escalation's co-reviewer); the unroutable items
    last. Rubber-stamp flagged first, then by decisions taken, then by name."""
    by_id = {r["identity_id"]: r for r in stats}
    zero = {"decided": 0, "approved": 0, "revoked": 0, "abstained": 0, "bulk_approved": 0, "bulk_share": 0.0,
            "median_seconds": None, "first_decision_at": None, "last_decision_at": None, "rubber_stamp": []}
    rows = []
    for a in assigned:
        s = by_id.pop(a["identity_id"], None) if a["identity_id"] is not None else None
        rows.append({**zero, **(s or {}), "identity_id": a["identity_id"], "name": a["name"], "email": a["email"],
                     "items": a["items"], "items_decided": a["decided"], "signed_off_at": a["signed_off_at"]})
    for s in by_id.values():
        rows.append({**zero, **s, "items": 0, "items_decided": 0, "signed_off_at": None})
    rows.sort(key=lambda r: (r["identity_id"] is None, not r["rubber_stamp"], -r["decided"], r["name"] or ""))
    return rows


def render_report_pdf(context: dict[str, Any]) -> bytes:
    from weasyprint import HTML

    return HTML(string=render_report_html(context)).write_pdf()


def render_report_html(context: dict[str, Any]) -> str:
    """The report as the HTML WeasyPrint lays out (tests read what the PDF says from it)."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(Path(__file__).resolve().parent.parent / "templates")),
        autoescape=True, trim_blocks=True, lstrip_blocks=True,
    )
    env.filters["num"] = lambda v: f"{v:,}" if isinstance(v, int | float) else ("—" if v is None else v)
    env.filters["short"] = lambda v: (v or "")[:16].replace("T", " ")
    return env.get_template("evidence/report.html").render(**context)


# --- export ------------------------------------------------------------------------------------------


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
        from attest.trail.chain import record

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
    from attest.audit.checkpoints import CheckpointError, open_store, write_checkpoint

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
    from attest.audit.checkpoints import open_store, parse_checkpoint
    from attest.audit.models import AuditCheckpoint

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


def _signed_manifest(manifest: dict[str, Any], key: Ed25519PrivateKey) -> bytes:
    body = canonical_json(manifest).encode()
    pub = key.public_key()
    signature = {
        "algorithm": "Ed25519",
        "key_id": key_id(pub),
        "public_key": base64.b64encode(public_key_raw(pub)).decode(),
        "signed": "the canonical JSON of this manifest without its signature member (UTF-8, keys sorted, "
                  "no whitespace), which is manifest.json with this last member removed",
        "value": base64.b64encode(key.sign(body)).decode(),
    }
    return body[:-1] + b',"signature":' + canonical_json(signature).encode() + b"}"


# --- verify ---------------------------------------------------------------------------------------------


@dataclass
class Verification:
    problems: list[str]
    key_id: str | None = None
    campaign: str | None = None
    files: int = 0
    events: int = 0
    checkpoints: int = 0
    notes: list[str] = field(default_factory=list)


NO_TRUSTED_KEY = ("no trusted key to check the signature against: pass --key FILE (the instance's public key, from "
                  "`attest evidence public-key` or /evidence/public-key) or --fingerprint HEX; the key inside a bundle "
                  "is never trusted")
CHECKPOINT_PREFIX = "checkpoints/"


def verify_bundle(path: str | os.PathLike, trusted_key: Ed25519PublicKey | None = None, *,
                  fingerprint: str | None = None) -> list[str]:
    """Check a bundle offline: file hashes, the signature, the audit events. [] when everything holds."""
    return check_bundle(path, trusted_key, fingerprint=fingerprint).problems


def check_bundle(path: str | os.PathLike, trusted_key: Ed25519PublicKey | None = None, *,
                 fingerprint: str | None = None) -> Verification:
    """Check a bundle against a pinned key: `trusted_key`, or the key whose fingerprint is `fingerprint` (its
    16-hex key id or its 64-hex SHA-256). With neither, the bundle fails: the public key a bundle carries
    proves nothing, anyone can re-sign a changed bundle with a key of their own."""
    problems: list[str] = []
    try:
        zf = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        return Verification([f"{path}: not a readable zip file ({exc})"])
    with zf:
        names = zf.namelist()
        problems.extend(_entry_name_problems(names))
        if "manifest.json" not in names:
            return Verification(problems + ["manifest.json is missing"])
        try:
            raw = zf.read("manifest.json")
            manifest = json.loads(raw)
            if not isinstance(manifest, dict):
                raise ValueError("not a JSON object")
        except (zipfile.BadZipFile, ValueError, OSError) as exc:
            return Verification(problems + [f"manifest.json cannot be read ({exc}): it was altered"])
        result = Verification(problems, campaign=str((manifest.get("campaign") or {}).get("name")))
        sig = manifest.pop("signature", None)
        body = canonical_json(manifest).encode()
        pinned = _check_signature(sig, body, trusted_key, fingerprint, result)
        files = manifest.get("files") or {}
        if not isinstance(files, dict):
            problems.append("manifest.json: `files` is not an object")
            files = {}
        for name, entry in sorted(files.items()):
            if name not in names:
                problems.append(f"{name}: listed in the manifest but missing from the bundle")
                continue
            sha, size = hashlib.sha256(), 0
            try:
                with zf.open(name) as fh:
                    while chunk := fh.read(1 << 20):
                        sha.update(chunk)
                        size += len(chunk)
            except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
                problems.append(f"{name}: cannot be read ({exc}): the file was altered")
                continue
            if sha.hexdigest() != (entry or {}).get("sha256"):
                problems.append(f"{name}: SHA-256 {sha.hexdigest()} does not match the manifest's "
                                f"{(entry or {}).get('sha256')}: the file was changed")
            elif size != entry.get("bytes"):
                problems.append(f"{name}: {size} bytes, the manifest says {entry.get('bytes')}")
            result.files += 1
        for name in dict.fromkeys(names):
            if name not in files and name != "manifest.json":
                problems.append(f"{name}: in the bundle but not listed in the manifest (added)")
        info = manifest.get("audit") or {}
        checkpoints = _check_bundle_checkpoints(zf, files, names, pinned, result)
        if "audit.jsonl" in files and "audit.jsonl" in names:
            result.events, last_seq = _check_audit(zf, info, problems, checkpoints)
            if last_seq is not None and (not checkpoints or max(checkpoints) < last_seq):
                result.notes.append(f"no checkpoint in the bundle covers audit events up to seq {last_seq}: "
                                    "check them with `attest audit verify` on the instance")
        if "items.csv" in files and "items.csv" in names:
            _check_self_decisions(zf, manifest, problems)
    return result


def _entry_name_problems(names: list[str]) -> list[str]:
    """Duplicate entries (`unzip` extracts the first, Python's zipfile reads the last) and names that could
    write outside the directory they are extracted to."""
    out, seen = [], set()
    for name in names:
        if name in seen:
            out.append(f"{name}: the zip holds more than one entry of this name (a second copy can hide a "
                       "changed one: tools disagree about which they extract)")
            continue
        seen.add(name)
        why = _unsafe_name(name)
        if why:
            out.append(f"{name!r}: not a safe entry name ({why})")
    return out


def _unsafe_name(name: str) -> str | None:
    if not name:
        return "empty"
    if "\\" in name:
        return "a backslash"
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return "an absolute path"
    parts = name.split("/")
    if ".." in parts:
        return "a '..' component"
    if any(p in ("", ".") for p in parts):
        return "an empty or '.' component"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "a control character"
    return None


def _check_signature(sig: Any, body: bytes, trusted_key: Ed25519PublicKey | None, fingerprint: str | None,
                     result: Verification) -> Ed25519PublicKey | None:
    """Verify the manifest's signature with the pinned key; return that key (None: not pinned or no match)."""
    problems = result.problems
    embedded = None
    if isinstance(sig, dict):
        try:
            embedded = Ed25519PublicKey.from_public_bytes(base64.b64decode(str(sig.get("public_key") or ""),
                                                                           validate=True))
            result.key_id = key_id(embedded)
        except ValueError:
            embedded = None
    if trusted_key is None and fingerprint:
        want = fingerprint.strip().lower().replace(":", "")
        if len(want) not in (16, 64) or any(c not in "0123456789abcdef" for c in want):
            problems.append(f"--fingerprint {fingerprint!r} is not a key id (16 hex digits) or a SHA-256 "
                            "fingerprint (64 hex digits)")
            return None
        if embedded is None or not key_fingerprint(embedded).startswith(want):
            problems.append(f"manifest.json is signed with key {result.key_id or '(none given)'}, not with the trusted "
                            f"key {want}: the bundle was signed, or re-signed, by someone else")
            return None
        trusted_key = embedded
    if trusted_key is None:
        problems.append(NO_TRUSTED_KEY)
        return None
    if not isinstance(sig, dict) or not sig.get("value"):
        problems.append("manifest.json has no signature")
        return trusted_key
    try:
        trusted_key.verify(base64.b64decode(str(sig["value"]), validate=True), body)
    except InvalidSignature:
        if embedded is None or public_key_raw(embedded) != public_key_raw(trusted_key):
            problems.append(f"manifest.json is signed with key {result.key_id or '(unknown)'}, not with the trusted "
                            f"key {key_id(trusted_key)}: the bundle was signed, or re-signed, by someone else")
        else:
            problems.append("manifest.json: the signature does not match its content (the manifest was changed "
                            "after signing)")
        return trusted_key
    except ValueError as exc:
        problems.append(f"manifest.json: the signature is malformed ({exc})")
        return trusted_key
    result.key_id = key_id(trusted_key)
    return trusted_key


def _check_bundle_checkpoints(zf: zipfile.ZipFile, files: dict[str, Any], names: list[str],
                              pinned: Ed25519PublicKey | None, result: Verification) -> dict[int, str]:
    """The audit-chain checkpoints the bundle carries: each signed by the pinned key. {seq: hash}."""
    from attest.audit.checkpoints import parse_checkpoint

    out: dict[int, str] = {}
    for name in sorted(files):
        if not name.startswith(CHECKPOINT_PREFIX) or name not in names:
            continue
        if pinned is None:
            result.notes.append("the checkpoints were not checked: no trusted key")
            break
        doc, problem = parse_checkpoint(zf.read(name), pinned)
        if problem:
            result.problems.append(f"{name}: {problem}")
            continue
        out[int(doc["seq"])] = doc["hash"]
        result.checkpoints += 1
    return out


def _check_self_decisions(zf: zipfile.ZipFile, manifest: dict[str, Any], problems: list[str]) -> None:
    """Recount from items.csv the items decided by their own person (must be none), against the manifest."""
    import csv as csv_

    found, examples = 0, []
    try:
        with zf.open("items.csv") as fh:
            reader = csv_.reader(io.TextIOWrapper(fh, encoding="utf-8", newline=""))
            header = next(reader, None) or []
            if "person_identity_id" not in header or "decided_by_identity_id" not in header:
                problems.append("items.csv has no person_identity_id and decided_by_identity_id columns: "
                                "self-decisions cannot be checked")
                return
            item, person, decider = (header.index(c) for c in ("item_id", "person_identity_id",
                                                                 "decided_by_identity_id"))
            width = max(item, person, decider)
            for row in reader:
                if len(row) > width and row[decider] and row[decider] == row[person]:
                    found += 1
                    if len(examples) < 5:
                        examples.append(row[item])
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, csv_.Error) as exc:
        problems.append(f"items.csv: cannot be read ({exc})")
        return
    if found:
        problems.append(f"items.csv: {found} item(s) decided by the person whose access they are about "
                        f"(self-decisions, e.g. item {', '.join(examples)}); there must be none")
    recorded = (manifest.get("totals") or {}).get("self_decisions")
    if recorded is None:
        problems.append("manifest.json does not count self-decisions (totals.self_decisions)")
    elif recorded != found:
        problems.append(f"manifest.json counts {recorded} self-decisions, items.csv shows {found}")


def _check_audit(zf: zipfile.ZipFile, info: dict[str, Any], problems: list[str],
                 checkpoints: dict[int, str] | None = None) -> tuple[int, int | None]:
    """Each event's own hash; chain order (seq increasing); the link to the previous event where adjacent;
    the hash a signed checkpoint holds for an event's seq. Returns (events, last seq)."""
    checkpoints = checkpoints or {}
    n, prev = 0, None
    try:
        with zf.open("audit.jsonl") as fh:
            for line_no, line in enumerate(io.TextIOWrapper(fh, encoding="utf-8"), 1):
                if not line.strip():
                    continue
                try:
                    ev = json.loads(line)
                except ValueError:
                    problems.append(f"audit.jsonl line {line_no}: not JSON")
                    return n, None
                n += 1
                seq = ev.get("seq")
                where = f"audit.jsonl line {line_no} (event seq {seq}, {ev.get('action')})"
                if event_hash(ev) != ev.get("hash"):
                    problems.append(f"{where}: its content does not match its hash (edited)")
                if seq in checkpoints and checkpoints[seq] != ev.get("hash"):
                    problems.append(f"{where}: its hash differs from the signed checkpoint of seq {seq} "
                                    "(the chain was rewritten and re-hashed)")
                if prev is not None:
                    if not isinstance(seq, int) or seq <= prev["seq"]:
                        problems.append(f"{where}: out of chain order after seq {prev['seq']} (inserted or reordered)")
                    elif seq == prev["seq"] + 1 and ev.get("prev_hash") != prev.get("hash"):
                        problems.append(f"{where}: its prev_hash does not match the event before it (seq {prev['seq']})")
                elif seq == 1 and ev.get("prev_hash") != GENESIS:
                    problems.append(f"{where}: the first event of the chain must follow the genesis hash")
                prev = ev
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        problems.append(f"audit.jsonl: cannot be read ({exc})")
        return n, None
    if info.get("events") is not None and n != info["events"]:
        problems.append(f"audit.jsonl holds {n} events, the manifest says {info['events']}")
    head = (info.get("chain_head_at_export") or {}).get("seq")
    if prev is not None and head is not None and prev["seq"] > head:
        problems.append(f"audit.jsonl: event seq {prev['seq']} is newer than the chain head at export ({head})")
    return n, prev["seq"] if prev is not None and isinstance(prev.get("seq"), int) else None
