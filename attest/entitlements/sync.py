"""Run a connector, stage its records, and apply the diff.

The rules (DESIGN, "Sync rules"):
1. The connector is paged through completely first. Records are written to staging tables as they
   arrive (COPY on PostgreSQL, executemany on SQLite), in batches, tagged with the run id.
2. Only a run that finished is applied, set-based, in one transaction: new rows inserted, changed rows
   (by record hash) updated, unseen rows ended with `ended_reason='not_seen'`, and every grant added or
   ended written to AccessChange. Unchanged rows are not touched: an active row was last seen at its
   source's last successful run.
3. A failed or interrupted run changes nothing but its own SyncRun row.
4. A part the connector could not read (PartFailed) is left as it was: nothing in it is ended, nothing
   staged in it overwrites a row already there (a connector yields a record derived partly from an unread
   part in that part, so its previous value is kept), and the run is `partial`.
5. A run that would end more than ATTEST_SYNC_MAX_REMOVAL_RATIO of the active rows of any kind
   (identities, accounts, resources, entitlements, grants), of the source or of one of its parts, is
   refused before anything is written (`aborted`, a message naming the kind and the counts) unless forced.
6. Upstream text is normalised before it is staged: NUL bytes and invalid Unicode (lone surrogates) are
   removed from every string of a record, with a note naming the record, so one bad name never fails a
   run (PostgreSQL refuses both). Upstream error texts (a failed run, a failed part, a note) are redacted
   of the source's secrets and of anything that looks like one (attest/redact.py) before they are stored.

This module orchestrates several transactions (staging batches, then the apply), so unlike the other
services it takes the session factory rather than a session.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Boolean, Column, Integer, MetaData, String, Table, Text, func, select, text, update
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session, sessionmaker

from attest.audit.log import record as audit
from attest.config import Settings
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
from attest.db import (
    JSONType,
    UTCDateTime,
    begin_write,
    canonical_json,
    copy_rows,
    drop_indexes_for_bulk_load,
    rebuild_indexes,
    restore_fk_triggers,
    skip_fk_triggers,
    sqlite_datetime,
    utcnow,
)
from attest.entitlements import correlation
from attest.entitlements.models import SUCCESSFUL_RUN_STATUSES, Grant, Source, SyncRun
from attest.entitlements.sources import SourceError, build_connector
from attest.redact import install_filter, redact

log = install_filter(logging.getLogger(__name__))

BATCH = 5000
# A running sync beats every SYNC_HEARTBEAT; a run whose last beat is older than STALE_HEARTBEAT lost its
# process (killed, crashed, the machine gone): the next sync of the source, and the scheduler every minute
# (`sweep_interrupted`), mark it failed ("interrupted"), so the source can sync again within two minutes.
SYNC_HEARTBEAT = 20.0  # seconds
STALE_HEARTBEAT = timedelta(seconds=60)


class SyncError(Exception):
    """A sync could not start or was refused; the message is for the user."""


class RemovalGuardTripped(SyncError):
    pass


@dataclass
class SyncResult:
    run_id: int
    source: str
    status: str
    stats: dict[str, Any] = field(default_factory=dict)
    api_calls: int = 0
    seconds: float = 0.0
    error: str | None = None
    failed_parts: list[dict[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status in SUCCESSFUL_RUN_STATUSES

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Progress:
    records: int = 0
    requests: int = 0
    elapsed: float = 0.0
    phase: str = "reading"


# --- staging ---------------------------------------------------------------------------------------
#
# A run stages its records in TEMPORARY tables on one dedicated connection: nothing is written to the
# database's log while the connector pages, nothing is visible to other sessions, and a crashed process
# leaves nothing behind. Indexes are built once, in bulk, when the connector has finished.

STAGE = MetaData()


def _stage_table(name: str, *columns: Column, with_id: bool = True) -> Table:
    cols = ([Column("id", Integer, primary_key=True, autoincrement=True)] if with_id else []) + list(columns)
    return Table(name, STAGE, *cols, prefixes=["TEMPORARY"])


_STAGE_TABLES = (
    _stage_table(
        "stage_identity", Column("external_id", String), Column("email", String), Column("email_normalized", String),
        Column("login", String), Column("display_name", String), Column("employee_id", String),
        Column("department", String), Column("title", String), Column("manager_ref", String),
        Column("status", String), Column("kind", String), Column("attributes", JSONType), Column("record_hash", String),
        Column("new_id", Integer),  # set by the apply: the id a new person will get (_preassign_identity_ids)
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
    # active rows the run did not see: known before the run, not yielded by the connector
    _stage_table("stage_gone", Column("kind", String), Column("key", String), with_id=False),
)
_STAGE_COLUMNS: dict[str, tuple[str, ...]] = {
    t.name: tuple(c.name for c in t.columns if c.name not in ("id", "new_id")) for t in _STAGE_TABLES
}
# stage_grant has none: the apply reads it once, whole (a million keys would cost seconds to index)
_STAGE_INDEXES = {
    "stage_identity": "external_id", "stage_account": "external_id", "stage_resource": "external_id",
    "stage_entitlement": "external_id", "stage_gone": "kind, key",
}
_DATETIME_COLUMNS = {
    table: {i for i, c in enumerate(cols) if c.endswith("_at")} for table, cols in _STAGE_COLUMNS.items()
}
_EMPTY = "{}"


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
}


def _write_stage(conn: Connection, table: str, rows: Sequence[tuple]) -> None:
    """Bulk-write one batch of staged rows with the driver's fastest path (COPY, executemany)."""
    copy_rows(conn, table, _STAGE_COLUMNS[table], rows, datetime_columns=_DATETIME_COLUMNS.get(table, ()))


def _drop_stage(conn: Connection) -> None:
    for table in _STAGE_TABLES:
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table.name}")


def _create_stage(conn: Connection) -> None:
    _drop_stage(conn)
    STAGE.create_all(conn)


def _index_stage(conn: Connection) -> None:
    for table, column in _STAGE_INDEXES.items():
        conn.exec_driver_sql(f"CREATE INDEX ix_{table} ON {table} ({column})")
    if conn.dialect.name == "postgresql":
        for table in (*_STAGE_INDEXES, "stage_grant"):  # autovacuum never analyzes temporary tables
            conn.exec_driver_sql(f"ANALYZE {table}")


@contextmanager
def _run_connection(factory: sessionmaker[Session]) -> Iterator[Connection]:
    """One connection for the whole run: temporary tables live and die with it."""
    bind = factory.kw.get("bind")
    if isinstance(bind, Connection):  # tests: the test's own connection, inside its transaction
        yield bind
        return
    with bind.connect() as conn:
        yield conn


# --- the run --------------------------------------------------------------------------------------


_HOLDER = f"{socket.gethostname()}:{os.getpid()}"


def sweep_interrupted(session: Session, now: datetime, source_id: int | None = None) -> list[int]:
    """Mark failed ("interrupted") the running syncs whose process stopped beating (last beat, or start
    when it never beat, older than STALE_HEARTBEAT). Returns their run ids."""
    beat = func.coalesce(SyncRun.heartbeat_at, SyncRun.started_at)
    stmt = select(SyncRun).where(SyncRun.status == "running", beat < now - STALE_HEARTBEAT)
    if source_id is not None:
        stmt = stmt.where(SyncRun.source_id == source_id)
    ended = []
    for run in session.scalars(stmt):
        last = run.heartbeat_at or run.started_at
        run.status = "failed"
        run.finished_at = now
        run.error = (f"interrupted: the process running it ({run.holder or 'unknown'}) stopped before it finished; "
                     f"its last sign of life was {last:%Y-%m-%d %H:%M:%S} UTC. Nothing it read was applied.")
        ended.append(run.id)
        log.warning("sync run %s of source %s: %s", run.id, run.source_id, run.error)
    session.flush()
    return ended


class _Heartbeat:
    """Beats a running sync's heartbeat_at every SYNC_HEARTBEAT seconds from a thread, in short transactions
    of its own, until stopped."""

    def __init__(self, factory: sessionmaker[Session], run_id: int) -> None:
        self.factory, self.run_id = factory, run_id
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, name=f"sync-heartbeat-{run_id}", daemon=True)

    def __enter__(self) -> _Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=SYNC_HEARTBEAT + 5)

    def _beat(self) -> None:
        while not self.stop.wait(SYNC_HEARTBEAT):
            try:
                with self.factory() as session, begin_write(session):
                    session.execute(update(SyncRun).where(SyncRun.id == self.run_id, SyncRun.status == "running")
                                    .values(heartbeat_at=utcnow()))
            except Exception as exc:  # a missed beat is retried; only a long silence marks the run interrupted
                log.warning("sync run %s: heartbeat not written: %s", self.run_id, exc)


def _start_run(factory: sessionmaker[Session], source_name: str, force: bool, triggered_by: str | None) -> tuple[int, int]:
    with factory() as session, begin_write(session):
        source = session.scalar(select(Source).where(Source.name == source_name))
        if source is None:
            raise SyncError(f"no source named {source_name!r}")
        if not source.enabled:
            raise SyncError(f"source {source_name!r} is disabled")
        now = utcnow()
        sweep_interrupted(session, now, source_id=source.id)
        running = session.scalar(select(SyncRun).where(SyncRun.source_id == source.id, SyncRun.status == "running"))
        if running is not None:
            raise SyncError(
                f"source {source_name!r} is already syncing (run {running.id} started "
                f"{running.started_at:%Y-%m-%d %H:%M} UTC{f' by {running.holder}' if running.holder else ''})"
            )
        run = SyncRun(source_id=source.id, status="running", started_at=now, forced=force, triggered_by=triggered_by,
                      stats={}, failed_parts=[], notes=[], heartbeat_at=now, holder=_HOLDER)
        session.add(run)
        session.flush()
        return source.id, run.id


_LIVE_FOR = {"stage_identity": "identity", "stage_account": "account", "stage_resource": "resource",
             "stage_entitlement": "entitlement"}


def _known(conn: Connection, source_id: int) -> dict[str, Any]:
    """What the source holds before the run: per stage table, its active rows' {external_id: record_hash};
    for grants, the set of active keys. Each is read as one aggregated string split in C (a third of
    the time of a million rows through the driver), row by row when a value holds the separator."""
    dbapi = conn.connection.driver_connection
    pg = conn.dialect.name == "postgresql"
    mark, sep, field = ("%s", "E'\\x1e'", "E'\\x1f'") if pg else ("?", "char(30)", "char(31)")
    cur = dbapi.cursor()

    def rows(expr: str, table: str, columns: str) -> list[str] | list[tuple]:
        where = f"FROM {table} WHERE source_id = {mark} AND ended_at IS NULL"
        agg = f"string_agg({expr}, {sep})" if pg else f"group_concat({expr}, {sep})"
        cur.execute(f"SELECT COUNT(*), {agg} {where}", (source_id,))
        count, blob = cur.fetchone()
        parts = blob.split("\x1e") if blob else []
        if len(parts) == count:
            return parts
        cur.execute(f"SELECT {columns} {where}", (source_id,))
        return list(cur)

    try:
        known: dict[str, Any] = {}
        for stage, live in _LIVE_FOR.items():
            got = rows(f"external_id || {field} || COALESCE(record_hash, '')", live, "external_id, record_hash")
            known[stage] = dict(p.rpartition("\x1f")[::2] if isinstance(p, str) else p for p in got)
        got = rows("key", "access_grant", "key")
        known["stage_grant"] = {p if isinstance(p, str) else p[0] for p in got}
    finally:
        cur.close()
    return known


# --- hostile upstream text -------------------------------------------------------------------------

MAX_CLEAN_NOTES = 20  # records named one by one in the run's notes; the rest are counted


def _bad_text(value: Any) -> bool:
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
        return any(_bad_text(k) or _bad_text(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_bad_text(v) for v in value)
    return False


def _clean_text(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "").encode("utf-8", "ignore").decode("utf-8")
    if isinstance(value, Mapping):
        return {_clean_text(k): _clean_text(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean_text(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_clean_text(v) for v in value)
    return value


def _clean_record(rec: Any, cleaned: list[str]) -> Any:
    """The record with NUL bytes and invalid Unicode removed from its strings; names it in `cleaned`."""
    fields = [f for f, v in zip(rec._fields, rec, strict=True) if _bad_text(v)]
    rec = rec._replace(**{f: _clean_text(getattr(rec, f)) for f in fields})
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


def _read_into_stage(conn, connector, normalize, read, failed_parts, notes, prog, progress, t0,
                     known: dict[str, Any]) -> tuple[int, int]:
    """Page the connector to the end, writing records to the stage in batches. Returns the API calls and
    the number of grant records staged (those not known before the run).

    Most records of a resync are unchanged. `known` holds what the source had before the run (see
    _known): a record that is known and unchanged (same grant key; same content hash) is only struck
    off, and stays as it is; only new and changed records are staged. What is left in `known` at the
    end was not seen, and is staged in stage_gone for the apply to end. Nothing is applied until the
    connector has finished.
    """
    known_keys: set[str] = known["stage_grant"]
    secrets = getattr(connector, "secrets", None)
    cleaned: list[str] = []  # records whose text was normalised
    buffers: dict[str, list[tuple]] = {t: [] for t in _STAGE_COLUMNS}
    grants = buffers["stage_grant"]
    last_report = 0.0
    grants_read = staged_grants = 0

    def flush(table: str) -> None:
        nonlocal staged_grants
        rows = buffers[table]
        if rows:
            if table == "stage_grant":
                staged_grants += len(rows)
            _write_stage(conn, table, rows)
            if table != "stage_grant":
                read[_KIND_FOR[table]] = read.get(_KIND_FOR[table], 0) + len(rows)
                prog.records += len(rows)
            rows.clear()

    try:
        for rec in connector.sync():
            kind = type(rec)
            if kind is GrantRecord:  # the hot path: most records are grants, and most are known
                grants_read += 1
                if not grants_read % BATCH:
                    prog.records += BATCH
                    if progress is not None and time.monotonic() - last_report > 0.2:
                        prog.requests, prog.elapsed = connector.calls, time.monotonic() - t0
                        progress(prog)
                        last_report = time.monotonic()
                key = f"{rec[0]}|{'r' if rec[2] == 'resource' else 'a'}|{rec[1]}"
                if ("\x00" in key or not key.isascii() or (rec[3] and _bad_text(rec[3]))
                        or (rec[4] is not None and _bad_text(rec[4]))) and _bad_text(rec):
                    rec = _clean_record(rec, cleaned)
                    key = rec.key
                if key in known_keys:
                    known_keys.remove(key)
                    continue
                grants.append((key, rec[4], rec[0], rec[2], rec[1], _json(rec[3])))
                if len(grants) >= BATCH:
                    flush("stage_grant")
                continue
            if kind is PartFailed:
                failed_parts.append({"part": _clean_text(rec.part),
                                     "reason": _clean_text(redact(rec.reason, secrets))[:2000]})
                continue
            if kind is Note:
                notes.append(_clean_text(redact(rec.message, secrets))[:2000])
                continue
            table = _TABLE_FOR.get(kind)
            if table is None:
                raise ConnectorError(f"connector yielded an unknown record type {kind.__name__}")
            if _bad_text(rec):
                rec = _clean_record(rec, cleaned)
            before = known[table]
            if kind is IdentityRecord:
                email_normalized = normalize(rec.email)
                digest = _digest(rec, email_normalized or "")
            else:
                email_normalized, digest = None, _digest(rec)
            if before.pop(rec.external_id, None) == digest:
                read[_KIND_FOR[table]] = read.get(_KIND_FOR[table], 0) + 1
                prog.records += 1
                continue
            buffers[table].append(_row(table, rec, digest, email_normalized))
            if len(buffers[table]) >= BATCH:
                flush(table)
        for table in buffers:
            flush(table)
        if cleaned:
            notes.append(_clean_note(cleaned))
        prog.records += grants_read % BATCH
        read["grants"] = grants_read
        for table, before in known.items():
            gone = [(table, key) for key in before]
            before.clear()
            for i in range(0, len(gone), BATCH * 10):
                _write_stage(conn, "stage_gone", gone[i:i + BATCH * 10])
    finally:
        api_calls = connector.calls
        connector.close()
    return api_calls, staged_grants


def run_sync(
    factory: sessionmaker[Session],
    settings: Settings,
    source_name: str,
    *,
    force: bool = False,
    connector: BaseConnector | None = None,
    progress: Callable[[Progress], None] | None = None,
    triggered_by: str | None = None,
    actor: str = "system",
) -> SyncResult:
    """Sync one source. Returns the result; raises SyncError only when the run cannot start."""
    source_id, run_id = _start_run(factory, source_name, force, triggered_by)
    # (a factory bound to one connection, as in tests, is not for another thread: no heartbeat then)
    beating = contextlib.nullcontext() if isinstance(factory.kw.get("bind"), Connection) else _Heartbeat(factory, run_id)
    with beating:
        return _run(factory, settings, source_name, source_id, run_id, force=force, connector=connector,
                    progress=progress, actor=actor)


def _run(factory: sessionmaker[Session], settings: Settings, source_name: str, source_id: int, run_id: int, *,
         force: bool, connector: BaseConnector | None, progress: Callable[[Progress], None] | None,
         actor: str) -> SyncResult:
    t0 = time.monotonic()
    read: dict[str, int] = {}
    failed_parts: list[dict[str, str]] = []
    notes: list[str] = []
    prog = Progress()

    try:
        if connector is None:
            with factory() as session:
                source = session.get(Source, source_id)
                connector = build_connector(source, settings)
        normalize = correlation.email_normalizer(settings)
        with _run_connection(factory) as conn:
            external = isinstance(factory.kw.get("bind"), Connection)
            _create_stage(conn)
            if not external:
                conn.commit()
            try:
                baseline = conn.execute(
                    select(Source.last_success_run_id).where(Source.id == source_id)).scalar_one()
                known_at = time.monotonic()
                known = _known(conn, source_id)
                known_seconds = time.monotonic() - known_at
                api_calls, staged_new = _read_into_stage(conn, connector, normalize, read, failed_parts, notes, prog, progress, t0,
                                             known)
                if not external:
                    conn.commit()
                read_seconds = time.monotonic() - t0
                prog.phase, prog.requests, prog.elapsed = "applying", api_calls, read_seconds
                if progress is not None:
                    progress(prog)
                failed_part_names = [p["part"] for p in failed_parts]
                with factory(bind=conn) as session, begin_write(session):
                    if session.get(Source, source_id, populate_existing=True).last_success_run_id != baseline:
                        raise SyncError("another run of this source was applied while this one was reading; "
                                        "nothing was changed: run it again")
                    _index_stage(session.connection())
                    stats = apply_run(session, settings, source_id, run_id, failed_part_names, force=force,
                                      grants_read=read.get("grants", 0), staged_new_grants=staged_new)
                    stats["read"] = read
                    stats["timings"] = {"read_known": round(known_seconds, 3),
                                        "read_and_stage": round(read_seconds - known_seconds, 3), **stats["timings"]}
                    run = session.get(SyncRun, run_id)
                    run.status = "partial" if failed_parts else "succeeded"
                    run.finished_at = utcnow()
                    run.stats = stats
                    run.api_calls = api_calls
                    run.failed_parts = failed_parts
                    run.notes = notes + stats.pop("notes", [])
                    source = session.get(Source, source_id)
                    source.last_success_run_id = run_id
                    audit(session, actor=actor, action="sync.applied", object_type="sync_run", object_id=str(run_id),
                          after={"source": source_name, "status": run.status, "added": stats.get("added"),
                                 "ended": stats.get("ended"), "failed_parts": failed_parts})
                    from attest.reviews import remediation  # verify revokes against what this run saw

                    remediation.verify_after_sync(session, source_id, run_id)
            finally:
                if not external and conn.in_transaction():
                    conn.rollback()
                _drop_stage(conn)
                if not external:
                    conn.commit()
        return SyncResult(run_id, source_name, run.status, stats, api_calls, round(time.monotonic() - t0, 3),
                          None, failed_parts, run.notes)
    except Exception as exc:  # the run fails; nothing but its own row changes
        status = "aborted" if isinstance(exc, RemovalGuardTripped) else "failed"
        message = _error_message(exc, getattr(connector, "secrets", None))
        if not isinstance(exc, ConnectorError | SyncError | SourceError):
            log.error("sync of %s failed: %s", source_name, message, exc_info=True)  # the filter redacts
        api_calls = getattr(connector, "calls", 0) if connector is not None else 0
        with factory() as session, begin_write(session):
            run = session.get(SyncRun, run_id)
            run.status = status
            run.finished_at = utcnow()
            run.error = message
            run.api_calls = api_calls
            run.stats = {"read": read}
            run.failed_parts = failed_parts
            run.notes = notes
        return SyncResult(run_id, source_name, status, {"read": read}, api_calls, round(time.monotonic() - t0, 3),
                          message, failed_parts, notes)


def _error_message(exc: Exception, secrets: Mapping[str, Any] | None = None) -> str:
    """The run's error as stored and shown: redacted of the source's secrets and of anything that looks
    like a secret (an upstream error page may echo the request's Authorization header)."""
    text_ = str(exc) or type(exc).__name__
    if not isinstance(exc, ConnectorError | SyncError | SourceError):
        text_ = f"{type(exc).__name__}: {text_}"
    return _clean_text(redact(text_, secrets))[:2000]


# --- apply ----------------------------------------------------------------------------------------


def _part_filter(alias: str, parts: Sequence[str], params: dict[str, Any]) -> str:
    if not parts:
        return ""
    names = []
    for i, part in enumerate(parts):
        params[f"part{i}"] = part
        names.append(f":part{i}")
    return f" AND ({alias}.part IS NULL OR {alias}.part NOT IN ({', '.join(names)}))"


def _new_rows(session: Session, live: str, stage: str) -> str:
    """FROM and WHERE of the stage rows to insert, as `s`: of each external id staged, the last row staged,
    when the live table has no row of that id yet."""
    absent = f"NOT EXISTS (SELECT 1 FROM {live} l WHERE l.source_id = :sid AND l.external_id = s.external_id)"
    if session.get_bind().dialect.name == "postgresql":  # one sort, not an index probe per row
        return f"(SELECT DISTINCT ON (external_id) * FROM {stage} ORDER BY external_id, id DESC) s WHERE {absent}"
    return f"{stage} s WHERE s.id IN (SELECT MAX(id) FROM {stage} GROUP BY external_id) AND {absent}"


def _apply_table(
    session: Session,
    live: str,
    stage: str,
    columns: Sequence[str],
    params: dict[str, Any],
    failed_parts: Sequence[str],
    *,
    end_unseen: bool = True,
    has_part: bool = True,
    insert_also: Sequence[tuple[str, str]] = (),
) -> tuple[int, int, int]:
    """Insert new rows, update changed or reopened rows, end unseen rows. Returns (added, updated, ended).

    `insert_also`: (column, SQL expression over the stage row `s`) pairs set on inserted rows only."""
    cols = ", ".join([*columns, *(c for c, _ in insert_also)])
    scols = ", ".join([*(f"s.{c}" for c in columns), *(expr for _, expr in insert_also)])
    added = session.execute(
        text(
            f"INSERT INTO {live} (source_id, external_id, {cols}, first_seen_at) "
            f"SELECT :sid, s.external_id, {scols}, :now FROM {_new_rows(session, live, stage)}"
        ),
        params,
    ).rowcount
    _analyze(session, live, grown_by=added)  # before the UPDATE and the joins that follow
    sets = ", ".join(f"{c} = s.{c}" for c in columns)
    # a record staged in a part the run could not read (rule 4) does not overwrite what is there: a
    # connector yields in a failed part what it derived partly from that part, to keep its previous value
    p = dict(params)
    keep_failed = _part_filter("s", failed_parts, p) if has_part else ""
    updated = session.execute(
        text(
            f"UPDATE {live} SET {sets}, ended_at = NULL, ended_reason = NULL FROM {stage} s "
            f"WHERE {live}.source_id = :sid AND {live}.external_id = s.external_id "
            f"AND ({live}.record_hash IS NULL OR {live}.record_hash <> s.record_hash OR {live}.ended_at IS NOT NULL)"
            f"{keep_failed}"
        ),
        p,
    ).rowcount
    ended = 0
    if end_unseen:
        p = dict(params)
        part_sql = _part_filter(live, failed_parts, p) if has_part else ""
        ended = session.execute(
            text(
                f"UPDATE {live} SET ended_at = :now, ended_reason = 'not_seen' "
                f"WHERE source_id = :sid AND ended_at IS NULL{part_sql} "
                f"AND external_id IN (SELECT g.key FROM stage_gone g WHERE g.kind = '{stage}')"
            ),
            p,
        ).rowcount
    return added, updated, ended


def _analyze(session: Session, table: str, *, grown_by: int | None = None) -> None:
    """PostgreSQL: keep the planner's statistics true while a sync changes a table wholesale.

    A sync changes hundreds of thousands of rows inside one transaction, before autovacuum can look; on
    statistics that say "empty" or "never analyzed" the planner picks nested loops over a million rows.
    ANALYZE inside the transaction sees its own changes. With `grown_by`, the table is analyzed when it
    was never analyzed or grew by more than 10% in this run; without, when it holds rows but was never
    analyzed. (Not on "changed since the last analyze": the rows a run inserts count as changes after it
    commits although it analyzed them itself, and a resync stages only what changed, so its joins are
    driven by small stage tables.)
    """
    if session.get_bind().dialect.name != "postgresql":
        return
    row = session.execute(
        text("SELECT c.reltuples, coalesce(s.n_live_tup, 0) FROM pg_class c "
             "LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid WHERE c.relname = :t AND c.relkind = 'r' "
             "AND c.relpersistence = 'p'"),
        {"t": table},
    ).first()
    if row is None:
        return
    tuples, live = row
    if grown_by is not None:
        stale = grown_by > 0 and (tuples < 0 or grown_by > 0.1 * tuples + 100)
    else:  # never analyzed (the apply's own ANALYZE keeps statistics true after what it changes)
        stale = tuples < 0 and live > 1000
    if stale:
        session.execute(text(f"ANALYZE {table}"))


# The manager of a person the apply inserts, by the manager's external id: another new person (by the
# id pre-assigned to them) or one already there. Set as the person is inserted, it spares
# correlation.resolve_managers an UPDATE of every new row (a first sync: every person), which it would
# otherwise do by the same rule; references by login or e-mail are still resolved there.
_MANAGER_OF_NEW = (
    "COALESCE((SELECT m.new_id FROM stage_identity m WHERE m.external_id = s.manager_ref AND m.new_id IS NOT NULL "
    "AND m.new_id <> s.new_id), (SELECT l.id FROM identity l WHERE l.source_id = :sid AND l.external_id = s.manager_ref))"
)


def _preassign_identity_ids(session: Session, params: dict[str, Any]) -> None:
    """Give each person the apply will insert (`_new_rows` of stage_identity) the id it will have, so
    that managers can be set as they are inserted."""
    new = f"SELECT s.id FROM {_new_rows(session, 'identity', 'stage_identity')}"
    if session.get_bind().dialect.name == "postgresql":
        sequence = session.execute(text("SELECT pg_get_serial_sequence('identity', 'id')")).scalar_one()
        session.execute(text(
            "UPDATE stage_identity SET new_id = nextval(CAST(:sequence AS regclass)) "
            f"WHERE id IN ({new})"), {**params, "sequence": sequence})
    else:  # SQLite gives a new row the highest id plus one: the same ids, counted up front. (Another
        # writer inserting people meanwhile could not make them collide: this transaction read the table,
        # so in WAL mode its first write would fail, rolling the apply back.)
        session.execute(text(
            "UPDATE stage_identity SET new_id = (SELECT COALESCE(MAX(id), 0) FROM identity) + n.rn "
            f"FROM (SELECT id AS row_id, row_number() OVER (ORDER BY id) AS rn FROM stage_identity WHERE id IN ({new})) n "
            "WHERE stage_identity.id = n.row_id"), params)


# kind, live table, its stage (stage_gone.kind), the natural key column, whether rows belong to parts
GUARDED_KINDS = (
    ("identities", "identity", "stage_identity", "external_id", False),
    ("accounts", "account", "stage_account", "external_id", True),
    ("resources", "resource", "stage_resource", "external_id", True),
    ("entitlements", "entitlement", "stage_entitlement", "external_id", True),
    ("grants", "access_grant", "stage_grant", "key", True),
)


def _check_removals(session: Session, settings: Settings, params: dict[str, Any], failed_parts: Sequence[str], *,
                    authoritative: bool, force: bool) -> int:
    """The removal guard (DESIGN: "guard every kind"): a run that would end more than
    ATTEST_SYNC_MAX_REMOVAL_RATIO of the active rows of any kind (identities, accounts, resources,
    entitlements, grants), of the whole source or of one of its parts, and at least
    ATTEST_SYNC_REMOVAL_GUARD_MIN of them, is refused before anything is written unless forced: an
    upstream that suddenly returns less (an empty list, a list cut short) is far likelier than a mass
    exodus. Returns the source's active grants before the run (0: a first sync)."""
    ratio, floor = settings.sync_max_removal_ratio, settings.sync_removal_guard_min
    trips: list[str] = []
    active_grants = 0
    for kind, live, stage, key, has_part in GUARDED_KINDS:
        if kind == "identities" and not authoritative:
            continue
        p = dict(params)
        part_sql = _part_filter("l", failed_parts, p) if has_part else ""
        part_col, group = ("l.part", " GROUP BY l.part") if has_part else ("NULL", "")
        active = {part: n for part, n in session.execute(text(
            f"SELECT {part_col}, COUNT(*) FROM {live} l WHERE l.source_id = :sid AND l.ended_at IS NULL{part_sql}"
            f"{group}"), p) if n}
        if kind == "grants":
            active_grants = sum(active.values())
        if not active or force:
            continue
        gone = {part: n for part, n in session.execute(text(
            f"SELECT {part_col}, COUNT(*) FROM stage_gone g JOIN {live} l ON l.source_id = :sid"
            f" AND l.{key} = g.key AND l.ended_at IS NULL WHERE g.kind = '{stage}'{part_sql}{group}"), p) if n}

        def over(n_gone: int, n_active: int) -> bool:
            return n_gone >= floor and n_gone > ratio * n_active

        total_active, total_gone = sum(active.values()), sum(gone.values())
        if over(total_gone, total_active):
            trips.append(f"{total_gone:,} of {total_active:,} active {kind} ({total_gone / total_active:.0%})")
            continue
        for part, n in sorted(gone.items(), key=lambda kv: str(kv[0])):
            if part is not None and over(n, active.get(part, 0)):
                trips.append(f"{n:,} of {active[part]:,} active {kind} of part {part} ({n / active[part]:.0%})")
    if trips:
        raise RemovalGuardTripped(
            f"this run would end {'; '.join(trips)}, more than ATTEST_SYNC_MAX_REMOVAL_RATIO={ratio:g}. An "
            "upstream that suddenly returns less is far likelier than a mass exodus: check the source, then run "
            "again with --force if the removals are real. Nothing was changed."
        )
    return active_grants


def apply_run(
    session: Session,
    settings: Settings,
    source_id: int,
    run_id: int,
    failed_parts: Sequence[str] = (),
    *,
    force: bool = False,
    grants_read: int | None = None,
    staged_new_grants: int = 0,
) -> dict[str, Any]:
    """Apply a finished run's staged records to the live tables. Runs inside the caller's transaction."""
    source = session.get(Source, source_id)
    now = utcnow()
    params: dict[str, Any] = {"sid": source_id, "run": run_id, "now": now}
    pg = session.get_bind().dialect.name == "postgresql"
    if not pg:
        params["now"] = sqlite_datetime(now)
    added: dict[str, int] = {}
    updated: dict[str, int] = {}
    ended: dict[str, int] = {}
    notes: list[str] = []
    timings: dict[str, float] = {}
    mark = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal mark
        now_ = time.perf_counter()
        timings[name] = round(now_ - mark, 3)
        mark = now_

    for table in ("access_grant", "account", "resource", "entitlement", "identity"):
        _analyze(session, table)
    # every id the apply writes is read from the referenced rows in this transaction, and rows are never
    # deleted: the per-row foreign-key triggers cannot fail, and would dominate a large first sync
    skipping = skip_fk_triggers(session)
    if pg:
        # each statement here runs once over up to a million rows: JIT compiles for longer than it saves
        session.execute(text("SET LOCAL jit = off"))

    # 1. the removal guard, for every kind, before anything is written
    active = _check_removals(session, settings, params, failed_parts, authoritative=source.authoritative,
                             force=force)

    # 2. identities (authoritative source only)
    if source.authoritative:
        _preassign_identity_ids(session, params)
        a, u, e = _apply_table(
            session, "identity", "stage_identity",
            ("email", "email_normalized", "login", "display_name", "employee_id", "department", "title",
             "manager_ref", "status", "kind", "attributes", "record_hash"),
            params, failed_parts, has_part=False,
            insert_also=(("id", "s.new_id"), ("manager_id", _MANAGER_OF_NEW)),
        )
        added["identities"], updated["identities"], ended["identities"] = a, u, e
    lap("identities")

    # 3. resources, entitlements, accounts
    a, u, e = _apply_table(
        session, "resource", "stage_resource",
        ("part", "type", "name", "description", "is_group", "parent_ref", "owner_refs", "attributes", "record_hash"),
        params, failed_parts,
    )
    added["resources"], updated["resources"], ended["resources"] = a, u, e
    if a or u:
        session.execute(
            text(
                "UPDATE resource SET parent_id = (SELECT p.id FROM resource p WHERE p.source_id = resource.source_id "
                "AND p.external_id = resource.parent_ref) WHERE source_id = :sid AND ended_at IS NULL "
                "AND (parent_ref IS NOT NULL OR parent_id IS NOT NULL)"
            ),
            params,
        )
    a, u, e = _apply_table(
        session, "entitlement", "stage_entitlement",
        ("part", "resource_ref", "name", "display_name", "description", "purpose", "privileged", "is_membership",
         "attributes", "record_hash"),
        params, failed_parts,
    )
    added["entitlements"], updated["entitlements"], ended["entitlements"] = a, u, e
    if a or u:
        session.execute(
            text(
                "UPDATE entitlement SET resource_id = (SELECT r.id FROM resource r WHERE r.source_id = entitlement.source_id "
                "AND r.external_id = entitlement.resource_ref) WHERE source_id = :sid AND ended_at IS NULL"
            ),
            params,
        )
        dangling = session.execute(
            text("SELECT COUNT(*) FROM entitlement WHERE source_id = :sid AND ended_at IS NULL AND resource_id IS NULL"),
            params,
        ).scalar_one()
        if dangling:
            notes.append(f"{dangling} entitlements name a resource the source did not return")
    link_now: list[tuple[str, str]] = []
    if source.authoritative and correlation.authoritative_source_id(session) == source_id:
        # the IdP's own accounts are linked to their person as they are inserted (correlation would
        # link them the same way, by a second write of every row)
        person = correlation.own_person_sql("s", "sid")
        link_now = [("identity_id", person),
                    ("link_method", f"CASE WHEN {person} IS NOT NULL THEN 'authoritative' END"),
                    ("linked_at", f"CASE WHEN {person} IS NOT NULL THEN :now END")]
    a, u, e = _apply_table(
        session, "account", "stage_account",
        ("part", "login", "email", "display_name", "status", "kind", "last_login_at", "created_upstream_at",
         "mfa_enabled", "identity_ref", "saml_nameid", "tag_email", "attributes", "record_hash"),
        params, failed_parts, insert_also=link_now,
    )
    added["accounts"], updated["accounts"], ended["accounts"] = a, u, e
    lap("accounts_resources_entitlements")

    # 4. grants: end what was not seen (stage_gone), insert what is new (stage_grant holds only the
    #    records whose key was not active before the run); the key is the natural key in the source
    p = dict(params)
    part_sql = _part_filter("access_grant", failed_parts, p)
    ended["grants"] = session.execute(
        text(
            "UPDATE access_grant SET ended_at = :now, ended_reason = 'not_seen', ended_run_id = :run "
            f"WHERE source_id = :sid AND ended_at IS NULL{part_sql} "
            "AND key IN (SELECT g.key FROM stage_gone g WHERE g.kind = 'stage_grant')"
        ),
        p,
    ).rowcount
    lap("grants_end")
    # PostgreSQL: a source's first large sync (no active grant of the source yet) drops the active-key
    # unique index too: nothing staged can conflict with a row already there, and the stage is
    # deduplicated here, so the index is built once after the insert (which checks it again) instead of
    # grown row by row. (SQLite grows it in key order at its end for less than the deduplication costs.)
    first_on_pg = pg and active == 0
    rebuild = drop_indexes_for_bulk_load(session, Grant.__table__, staged_new_grants, unique=first_on_pg)
    dedupe = bool(rebuild) and first_on_pg
    if dedupe:
        # (by bytes: the database's collation would compare a million keys by the locale's rules, for the
        # same equality)
        new_keys = ('SELECT DISTINCT ON (s.key COLLATE "C") s.key, s.part, s.entitlement_ref, s.principal_type, '
                    's.principal_ref, s.attributes FROM stage_grant s ORDER BY s.key COLLATE "C"')
        session.execute(text("SET LOCAL work_mem = '256MB'"))  # sort a million keys in memory, not in files
        order = on_conflict = ""
    else:
        # new keys first (MATERIALIZED: a resync with nothing new never joins); in key order, so the
        # active-key index grows at its end instead of at random pages
        new_keys = ("SELECT s.key, s.part, s.entitlement_ref, s.principal_type, s.principal_ref, s.attributes "
                    "FROM stage_grant s WHERE NOT EXISTS (SELECT 1 FROM access_grant g "
                    "WHERE g.source_id = :sid AND g.key = s.key AND g.ended_at IS NULL)")
        order, on_conflict = " ORDER BY n.key", " ON CONFLICT DO NOTHING"
    added["grants"] = session.execute(
        text(
            "INSERT INTO access_grant (source_id, key, part, entitlement_id, principal_type, principal_account_id, "
            "principal_resource_id, attributes, first_seen_at, first_seen_run_id) "
            f"WITH n AS MATERIALIZED ({new_keys}) "
            "SELECT :sid, n.key, n.part, e.id, n.principal_type, a.id, r.id, n.attributes, :now, :run "
            "FROM n JOIN entitlement e ON e.source_id = :sid AND e.external_id = n.entitlement_ref "
            "LEFT JOIN account a ON n.principal_type = 'account' AND a.source_id = :sid AND a.external_id = n.principal_ref "
            "LEFT JOIN resource r ON n.principal_type = 'resource' AND r.source_id = :sid AND r.external_id = n.principal_ref "
            f"WHERE (a.id IS NOT NULL OR r.id IS NOT NULL){order}{on_conflict}"
        ),
        params,
    ).rowcount
    if dedupe:
        session.execute(text("SET LOCAL work_mem TO DEFAULT"))
    if grants_read is not None:
        skipped = grants_read - (active - ended["grants"] + added["grants"])
        if skipped > 0:
            notes.append(f"{skipped} grant records were duplicates or named an entitlement or principal "
                         "the source did not return; skipped")

    lap("grants_insert")
    rebuild_indexes(session, rebuild)
    lap("grants_index")
    _analyze(session, "access_grant", grown_by=added["grants"])  # for what follows in this transaction
    lap("grants_analyze")

    # 5. the access history; a source's first successful run is its baseline (first_seen_run_id marks it)
    if source.last_success_run_id is not None:
        session.execute(
            text(
                "INSERT INTO access_change (source_id, sync_run_id, grant_id, change, reason, at) "
                "SELECT source_id, :run, id, 'added', NULL, :now FROM access_grant WHERE first_seen_run_id = :run"
            ),
            params,
        )
    session.execute(
        text(
            "INSERT INTO access_change (source_id, sync_run_id, grant_id, change, reason, at) "
            "SELECT source_id, :run, id, 'ended', ended_reason, :now FROM access_grant WHERE ended_run_id = :run"
        ),
        params,
    )

    lap("access_changes")

    # 6. resource owners named by the source, for resources that changed
    if added["resources"] or updated["resources"] or added["accounts"] or ended["accounts"]:
        correlation.sync_resource_owners(session, source_id)
    lap("owners")

    # 7. people: managers, then account links; skipped when nothing they depend on changed
    identities_changed = source.authoritative and any(
        (added["identities"], updated["identities"], ended["identities"]))
    if identities_changed:
        correlation.resolve_managers(session, source_id)
    lap("managers")
    if identities_changed:
        linked = correlation.correlate(session, settings, None)  # new or changed people may match any account
    elif added["accounts"] or updated["accounts"]:
        linked = correlation.correlate(session, settings, [source_id])
    else:
        linked = 0
    lap("links")
    if skipping:
        restore_fk_triggers(session)
    return {"added": added, "updated": updated, "ended": ended, "linked": linked, "notes": notes,
            "timings": timings}


def sync_many(
    factory: sessionmaker[Session], settings: Settings, names: Iterable[str], **kwargs: Any
) -> list[SyncResult]:
    """Sync several sources, the authoritative one first so the others correlate against fresh identities."""
    names = list(dict.fromkeys(names))
    with factory() as session:
        order = {
            s.name: (not s.authoritative, s.name)
            for s in session.scalars(select(Source).where(Source.name.in_(names)))
        }
    unknown = [n for n in names if n not in order]
    if unknown:
        raise SyncError(f"no source named {', '.join(repr(n) for n in unknown)}")
    return [run_sync(factory, settings, name, **kwargs) for name in sorted(order, key=order.get)]


def active_grant_count(session: Session, source_id: int) -> int:
    from attest.entitlements.models import Grant

    return session.scalar(
        select(func.count()).select_from(Grant).where(Grant.source_id == source_id, Grant.ended_at.is_(None))
    )
