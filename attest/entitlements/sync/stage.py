"""The stage: temporary tables a run's records are read into before anything is applied.

A run stages its records in TEMPORARY tables on one dedicated connection: nothing is written to the
database's log while the connector pages, nothing is visible to other sessions, and a crashed process
leaves nothing behind. Indexes are built once, in bulk, when the connector has finished.

Most records of a resync are unchanged: `load_known` reads what the source holds before the run, and
`read_into_stage` stages only new and changed records, plus the keys of the active rows the run did not
see (stage_gone), for the apply to end.

Grants, ten times more than people, are compared one of two ways, by the source's number of active grants
(`ATTEST_SYNC_KEYS_IN_MEMORY`, two million by default). Up to it, their keys are held in a set (about 150
bytes a key: 300 MB at two million) and only new grants are staged: the cheapest resync. Above it, a set
would grow with the source (about 2 GB at ten million), so a resync writes every grant it reads to
stage_seen and, once the connector has finished, two set-based statements keep the new ones (stage_grant)
and the active keys not seen (stage_gone): memory stays flat whatever the source's size, for about 1.7x
the CPU of a resync in memory (bench/ab.py). A source's first sync (no active grant) stages straight into
stage_grant.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Boolean, Column, Integer, MetaData, String, Table, Text, text
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session, sessionmaker

from attest import dialects
from attest.connectors.base import (
    AccountRecord,
    BaseConnector,
    ConnectorError,
    EntitlementRecord,
    GrantRecord,
    IdentityRecord,
    Note,
    PartFailed,
    ResourceRecord,
)
from attest.db import JSONType, UTCDateTime, canonical_json
from attest.entitlements.sync.state import RunState
from attest.redact import redact

BATCH = 5000

STAGE = MetaData()


def _stage_table(name: str, *columns: Column, with_id: bool = True) -> Table:
    cols = ([Column("id", Integer, primary_key=True, autoincrement=True)] if with_id else []) + list(columns)
    return Table(name, STAGE, *cols, prefixes=["TEMPORARY"])


STAGE_TABLES = (
    _stage_table(
        "stage_identity", Column("external_id", String), Column("email", String), Column("email_normalized", String),
        Column("login", String), Column("display_name", String), Column("employee_id", String),
        Column("department", String), Column("title", String), Column("manager_ref", String),
        Column("status", String), Column("kind", String), Column("attributes", JSONType), Column("record_hash", String),
        Column("new_id", Integer),  # set by the apply: the id a new person will get (apply._preassign_identity_ids)
    ),
    _stage_table(
        "stage_account", Column("external_id", String), Column("part", String), Column("login", String),
        Column("email", String), Column("display_name", String), Column("status", String), Column("kind", String),
        Column("last_login_at", UTCDateTime), Column("created_upstream_at", UTCDateTime),
        Column("mfa_enabled", Boolean), Column("identity_ref", String), Column("saml_nameid", String),
        Column("tag_email", String), Column("attributes", JSONType), Column("record_hash", String),
    ),
    _stage_table(
        "stage_resource", Column("external_id", String), Column("part", String), Column("type", String),
        Column("name", String), Column("description", Text), Column("is_group", Boolean), Column("parent_ref", String),
        Column("owner_refs", JSONType), Column("attributes", JSONType), Column("record_hash", String),
    ),
    _stage_table(
        "stage_entitlement", Column("external_id", String), Column("part", String), Column("resource_ref", String),
        Column("name", String), Column("display_name", String), Column("description", Text),
        Column("purpose", String), Column("privileged", Boolean), Column("is_membership", Boolean),
        Column("attributes", JSONType), Column("record_hash", String),
    ),
    # a million rows a run: no surrogate key; duplicates are dropped when applied
    _stage_table(
        "stage_grant", Column("key", String), Column("part", String), Column("entitlement_ref", String),
        Column("principal_type", String), Column("principal_ref", String), Column("attributes", JSONType),
        with_id=False,
    ),
    # a resync's every grant record, as read; `settle_grants` keeps the new ones in stage_grant
    _stage_table(
        "stage_seen", Column("key", String), Column("part", String), Column("entitlement_ref", String),
        Column("principal_type", String), Column("principal_ref", String), Column("attributes", JSONType),
        with_id=False,
    ),
    # active rows the run did not see: known before the run, not yielded by the connector
    _stage_table("stage_gone", Column("kind", String), Column("key", String), with_id=False),
)
# the columns a staged row holds, in the order `_row` (and the grant row in `read_into_stage`) builds it
STAGE_COLUMNS: dict[str, tuple[str, ...]] = {
    t.name: tuple(c.name for c in t.columns if c.name not in ("id", "new_id")) for t in STAGE_TABLES
}
# stage_grant has none: the apply reads it once, whole (a million keys would cost seconds to index)
_STAGE_INDEXES = {
    "stage_identity": "external_id", "stage_account": "external_id", "stage_resource": "external_id",
    "stage_entitlement": "external_id", "stage_gone": "kind, key",
}
_DATETIME_COLUMNS = {
    table: {i for i, c in enumerate(cols) if c.endswith("_at")} for table, cols in STAGE_COLUMNS.items()
}
_EMPTY = "{}"

# record type -> its stage table; stage table -> its live table and the kind it counts as
_TABLE_FOR = {
    IdentityRecord: "stage_identity",
    AccountRecord: "stage_account",
    ResourceRecord: "stage_resource",
    EntitlementRecord: "stage_entitlement",
    GrantRecord: "stage_grant",
}
_KIND_FOR = {
    "stage_identity": "identities",
    "stage_account": "accounts",
    "stage_resource": "resources",
    "stage_entitlement": "entitlements",
    "stage_grant": "grants",
    "stage_seen": "grants",
}
_LIVE_FOR = {"stage_identity": "identity", "stage_account": "account", "stage_resource": "resource",
             "stage_entitlement": "entitlement"}


def _json(value: Any) -> str:
    if not value:  # the common case on the hot path: no attributes
        return "[]" if isinstance(value, list | tuple) else _EMPTY
    return canonical_json(value)


_ATTRS_AT = {cls: cls._fields.index("attributes")
             for cls in (IdentityRecord, AccountRecord, ResourceRecord, EntitlementRecord)}


def _digest(rec: Any, extra: str = "") -> str:
    """The record's content hash: its values' repr (attributes as canonical JSON), plus what the engine derives."""
    i = _ATTRS_AT[type(rec)]
    attrs = rec[i]
    body = tuple.__repr__(rec[:i] + rec[i + 1:]) + (canonical_json(dict(attrs)) if attrs else "") + extra
    return hashlib.sha1(body.encode(), usedforsecurity=False).hexdigest()


def _row(table: str, rec: Any, digest: str, email_normalized: str | None = None) -> tuple:
    """The staged row of a record, in the order of STAGE_COLUMNS[table]."""
    if table == "stage_identity":
        return (rec.external_id, rec.email, email_normalized, rec.login, rec.display_name or "",
                rec.employee_id, rec.department, rec.title, rec.manager_ref, rec.status, rec.kind,
                _json(rec.attributes), digest)
    if table == "stage_account":
        return (rec.external_id, rec.part, rec.login, rec.email, rec.display_name, rec.status, rec.kind,
                rec.last_login_at, rec.created_at, rec.mfa_enabled, rec.identity_ref, rec.saml_nameid,
                rec.tag_email, _json(rec.attributes), digest)
    if table == "stage_resource":
        owners = list(rec.owner_refs)
        return (rec.external_id, rec.part, rec.type, rec.name, rec.description, rec.is_group,
                rec.parent_ref, _json(owners) if owners else "[]", _json(rec.attributes), digest)
    if table == "stage_entitlement":
        return (rec.external_id, rec.part, rec.resource_ref, rec.name, rec.display_name, rec.description,
                rec.purpose, rec.privileged, rec.is_membership, _json(rec.attributes), digest)
    raise AssertionError(table)


def write_stage(conn: Connection, table: str, rows: Sequence[tuple]) -> None:
    """Bulk-write one batch of staged rows with the driver's fastest path (COPY, executemany)."""
    dialects.copy_rows(conn, table, STAGE_COLUMNS[table], rows, datetime_columns=_DATETIME_COLUMNS.get(table, ()))


def drop_stage(conn: Connection) -> None:
    for table in STAGE_TABLES:
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table.name}")


def create_stage(conn: Connection) -> None:
    drop_stage(conn)
    STAGE.create_all(conn)


def index_stage(conn: Connection) -> None:
    for table, column in _STAGE_INDEXES.items():
        conn.exec_driver_sql(f"CREATE INDEX ix_{table} ON {table} ({column})")
    dialects.analyze(conn, *_STAGE_INDEXES, "stage_grant")  # autovacuum never analyzes temporary tables


@contextmanager
def run_connection(factory: sessionmaker[Session]) -> Iterator[Connection]:
    """One connection for the whole run: temporary tables live and die with it."""
    bind = factory.kw.get("bind")
    if isinstance(bind, Connection):  # tests: the test's own connection, inside its transaction
        yield bind
        return
    with bind.connect() as conn:
        yield conn


# --- what the source holds before the run ----------------------------------------------------------


@dataclass
class Known:
    """The source's active rows before the run: per stage table of a kind with external ids,
    {external_id: record_hash}, which `read_into_stage` strikes off as the run sees them (what is left was
    not seen); for grants their number and, up to `keys_in_memory` of them, the set of their keys, struck
    off the same way (above it, `grant_keys` is None: they are compared in the database, `settle_grants`)."""

    source_id: int
    hashes: dict[str, dict[str, str]]
    active_grants: int
    grant_keys: set[str] | None = None


def load_known(conn: Connection, source_id: int, keys_in_memory: int = 2_000_000) -> Known:
    """What the source holds before the run. Each kind is read as one aggregated string split in C (a
    third of the time of a million rows through the driver), row by row when a value holds the separator.
    The active grants' keys are read only when there are at most `keys_in_memory` of them."""
    dbapi = conn.connection.driver_connection
    mark, sep, field, aggregate = dialects.raw_aggregate(conn)
    cur = dbapi.cursor()

    def rows(expr: str, table: str, columns: str) -> list[str] | list[tuple]:
        where = f"FROM {table} WHERE source_id = {mark} AND ended_at IS NULL"
        cur.execute(f"SELECT COUNT(*), {aggregate(expr, sep)} {where}", (source_id,))
        count, blob = cur.fetchone()
        parts = blob.split("\x1e") if blob else []
        if len(parts) == count:
            return parts
        cur.execute(f"SELECT {columns} {where}", (source_id,))
        return list(cur)

    try:
        hashes: dict[str, dict[str, str]] = {}
        for stage, live in _LIVE_FOR.items():
            got = rows(f"external_id || {field} || COALESCE(record_hash, '')", live, "external_id, record_hash")
            hashes[stage] = dict(p.rpartition("\x1f")[::2] if isinstance(p, str) else p for p in got)
        cur.execute(f"SELECT COUNT(*) FROM access_grant WHERE source_id = {mark} AND ended_at IS NULL", (source_id,))
        active_grants = cur.fetchone()[0]
        grant_keys = None
        if active_grants and active_grants <= keys_in_memory:
            got = rows("key", "access_grant", "key")
            grant_keys = {p if isinstance(p, str) else p[0] for p in got}
    finally:
        cur.close()
    return Known(source_id, hashes, active_grants, grant_keys)


_GRANT_COLUMNS = ", ".join(STAGE_COLUMNS["stage_grant"])


def settle_grants(conn: Connection, source_id: int) -> int:
    """After a resync has read every grant into stage_seen: the records whose key is not active go to
    stage_grant (returns how many), the active keys the run did not see to stage_gone. Two set-based
    statements over the source's grants instead of a set of every key in memory."""
    params = {"sid": source_id}
    dialects.analyze(conn, "stage_seen")  # autovacuum never analyzes temporary tables
    with dialects.large_work_mem(conn):
        new = conn.execute(text(
            f"INSERT INTO stage_grant ({_GRANT_COLUMNS}) SELECT {_GRANT_COLUMNS} FROM stage_seen s "
            "WHERE NOT EXISTS (SELECT 1 FROM access_grant g WHERE g.source_id = :sid AND g.key = s.key "
            "AND g.ended_at IS NULL)"), params).rowcount
        conn.execute(text(
            "INSERT INTO stage_gone (kind, key) SELECT 'stage_grant', g.key FROM access_grant g "
            "WHERE g.source_id = :sid AND g.ended_at IS NULL "
            f"AND {dialects.absent_from(conn, 'g.key', 'stage_seen', 'key')}"), params)
    return new


# --- hostile upstream text -------------------------------------------------------------------------

MAX_CLEAN_NOTES = 20  # records named one by one in the run's notes; the rest are counted


def bad_text(value: Any) -> bool:
    """A string (anywhere in a record) holding a NUL byte or invalid Unicode (a lone surrogate)."""
    if isinstance(value, str):
        if "\x00" in value:
            return True
        if value.isascii():
            return False
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(value, Mapping):
        return any(bad_text(k) or bad_text(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(bad_text(v) for v in value)
    return False


def clean_text(value: Any) -> Any:
    """`value` with NUL bytes and invalid Unicode removed from its strings, at any depth."""
    if isinstance(value, str):
        return value.replace("\x00", "").encode("utf-8", "ignore").decode("utf-8")
    if isinstance(value, Mapping):
        return {clean_text(k): clean_text(v) for k, v in value.items()}
    if isinstance(value, list):
        return [clean_text(v) for v in value]
    if isinstance(value, tuple):
        return tuple(clean_text(v) for v in value)
    return value


def _clean_record(rec: Any, cleaned: list[str]) -> Any:
    """The record with NUL bytes and invalid Unicode removed from its strings; names it in `cleaned`."""
    fields = [f for f, v in zip(rec._fields, rec, strict=True) if bad_text(v)]
    rec = rec._replace(**{f: clean_text(getattr(rec, f)) for f in fields})
    if len(cleaned) < MAX_CLEAN_NOTES:
        ref = rec.key if isinstance(rec, GrantRecord) else rec.external_id
        cleaned.append(f"{type(rec).__name__.removesuffix('Record').lower()} {ref!r} ({', '.join(fields)})")
    else:
        cleaned.append("")
    return rec


def _clean_note(cleaned: list[str]) -> str:
    named = [c for c in cleaned if c]
    more = len(cleaned) - len(named)
    return ("NUL bytes or invalid Unicode removed from upstream text of " + "; ".join(named)
            + (f"; and {more:,} more records" if more else ""))


# --- reading the connector into the stage ----------------------------------------------------------


def read_into_stage(conn: Connection, connector: BaseConnector, state: RunState, known: Known,
                    normalize: Callable[[str | None], str | None]) -> None:
    """Page the connector to the end, writing records to the stage in batches.

    A record that is known and unchanged (same content hash; for a grant, the same key) is only struck off
    `known`, and stays as it is; only new and changed records are staged. What is left in `known` at the
    end was not seen, and is staged in stage_gone for the apply to end. When the source holds more active
    grants than `known` keeps in memory, grants are all written to stage_seen instead and compared in the
    database once the connector has finished (`settle_grants`).
    Nothing is applied until the connector has finished.

    Fills `state`: records read per kind, failed parts, notes, API calls, the grant records staged, and
    the phases "read" (the connector and the records' handling) and "stage" (writing the stage).
    """
    prog, report = state.progress, state.report
    secrets = getattr(connector, "secrets", None)
    cleaned: list[str] = []  # records whose text was normalised
    buffers: dict[str, list[tuple]] = {t: [] for t in STAGE_COLUMNS}
    # a first sync (nothing active) stages every grant as new, and so does a resync that holds the active
    # keys in memory (after striking off the known ones); a larger resync stages what it read, to compare
    known_keys = known.grant_keys
    grant_table = "stage_seen" if known.active_grants and known_keys is None else "stage_grant"
    grants = buffers[grant_table]
    last_report = 0.0
    grants_read = 0
    stage_seconds = 0.0
    t_read = time.perf_counter()

    def flush(table: str) -> None:
        nonlocal stage_seconds
        rows = buffers[table]
        if rows:
            t0 = time.perf_counter()
            write_stage(conn, table, rows)
            stage_seconds += time.perf_counter() - t0
            if table == "stage_grant":
                state.staged_new_grants += len(rows)
            elif table != "stage_seen":  # grants are counted as read below
                state.count_read(_KIND_FOR[table], len(rows))
            rows.clear()

    try:
        for rec in connector.sync():
            kind = type(rec)
            if kind is GrantRecord:  # the hot path: most records are grants, and most are known
                grants_read += 1
                if not grants_read % BATCH:
                    prog.records += BATCH
                    if report is not None and time.monotonic() - last_report > 0.2:
                        prog.requests, prog.elapsed = connector.calls, state.elapsed()
                        report(prog)
                        last_report = time.monotonic()
                entitlement_ref, principal_ref, principal_type, attributes, part = rec
                key = f"{entitlement_ref}|{'r' if principal_type == 'resource' else 'a'}|{principal_ref}"
                if ("\x00" in key or not key.isascii() or (attributes and bad_text(attributes))
                        or (part is not None and bad_text(part))) and bad_text(rec):
                    rec = _clean_record(rec, cleaned)
                    entitlement_ref, principal_ref, principal_type, attributes, part = rec
                    key = rec.key
                if known_keys is not None and key in known_keys:
                    known_keys.remove(key)
                    continue
                # the order of STAGE_COLUMNS["stage_grant"] (and of stage_seen)
                grants.append((key, part, entitlement_ref, principal_type, principal_ref, _json(attributes)))
                if len(grants) >= BATCH:
                    flush(grant_table)
                continue
            if kind is PartFailed:
                state.failed_parts.append({"part": clean_text(rec.part),
                                           "reason": clean_text(redact(rec.reason, secrets))[:2000]})
                continue
            if kind is Note:
                state.notes.append(clean_text(redact(rec.message, secrets))[:2000])
                continue
            table = _TABLE_FOR.get(kind)
            if table is None:
                raise ConnectorError(f"connector yielded an unknown record type {kind.__name__}")
            if bad_text(rec):
                rec = _clean_record(rec, cleaned)
            if kind is IdentityRecord:
                email_normalized = normalize(rec.email)
                digest = _digest(rec, email_normalized or "")
            else:
                email_normalized, digest = None, _digest(rec)
            if known.hashes[table].pop(rec.external_id, None) == digest:
                state.count_read(_KIND_FOR[table], 1)
                continue
            buffers[table].append(_row(table, rec, digest, email_normalized))
            if len(buffers[table]) >= BATCH:
                flush(table)
        for table in buffers:
            flush(table)
        if cleaned:
            state.notes.append(_clean_note(cleaned))
        prog.records += grants_read % BATCH
        state.read["grants"] = grants_read
        t0 = time.perf_counter()
        gone = [(table, key) for table, before in known.hashes.items() for key in before]
        for before in known.hashes.values():
            before.clear()
        if known_keys:
            gone.extend(("stage_grant", key) for key in known_keys)
            known_keys.clear()
        for i in range(0, len(gone), BATCH * 10):
            write_stage(conn, "stage_gone", gone[i:i + BATCH * 10])
        if grant_table == "stage_seen":
            state.staged_new_grants = settle_grants(conn, known.source_id)
        stage_seconds += time.perf_counter() - t0
    finally:
        state.api_calls = connector.calls
        connector.close()
        state.add_phase("read", time.perf_counter() - t_read - stage_seconds)
        state.add_phase("stage", stage_seconds)
