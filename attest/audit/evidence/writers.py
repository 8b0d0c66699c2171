"""The bundle's data files, streamed: items.csv and items.xlsx (one row per item, formatted by the
database and read from a server-side cursor on PostgreSQL; XlsxWriter constant-memory, a new sheet past
Excel's row limit), exclusions.csv, remediations.csv and audit.jsonl. Memory stays flat whatever the size.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Callable, Iterator
from typing import Any

from sqlalchemy import Select, case, cast, func, select, true
from sqlalchemy import Text as SAText
from sqlalchemy.orm import Session, aliased

from attest import dialects, exports
from attest.audit.evidence.members import _Member, _Text
from attest.audit.log import iter_events
from attest.db import canonical_json
from attest.entitlements.models import Account, Grant, Identity, Source
from attest.reviews.models import (
    CampaignExclusion,
    Remediation,
    ReviewItem,
)
from attest.reviews.remediation import write_remediations_csv
from attest.trail.models import AuditEvent

XLSX_MAX_ROWS = 1_048_576  # Excel's limit per sheet, the header row included
BATCH = 10_000
ITEM_COLUMNS = (
    "item_id", "person", "email", "department", "person_status", "account", "account_kind", "system",
    "resource", "resource_type", "entitlement", "privileged", "via", "risks", "risk_score", "reviewer",
    "reviewer_email", "decision", "comment", "decided_by", "decided_on_behalf_of", "decided_at", "decided_in_bulk", "outcome",
    "outcome_reason", "remediation_mode", "remediation_status", "remediation_executed_at",
    "verification_sync_run", "reappeared_sync_run", "person_identity_id", "decided_by_identity_id",
)


EXCLUSION_COLUMNS = ("grant_id", "system", "grant_key", "account", "reason")


# export_bundle reports its progress as (phase, items written, items in the campaign)
Progress = Callable[[str, int, int], None]
PHASES = ("starting", "items.csv", "items.xlsx", "exclusions", "audit", "chain", "report", "signing")


def _no_progress(phase: str, done: int, total: int) -> None:
    pass


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
