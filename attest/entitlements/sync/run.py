"""Running a sync: start the run (its SyncRun row), read into the stage, apply, finish the run.

The run orchestrates several transactions (the run's row, the stage on its own connection, then the
apply), so unlike the other services it takes the session factory rather than a session. A failed or
interrupted run changes nothing but its own SyncRun row.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session, sessionmaker

from attest.config import Settings
from attest.connectors.base import BaseConnector, ConnectorError
from attest.db import begin_write, utcnow
from attest.entitlements import correlation
from attest.entitlements.models import RunStatus, Source, SyncRun
from attest.entitlements.sources import SourceError, build_connector
from attest.entitlements.sync.apply import apply_run
from attest.entitlements.sync.hooks import run_after_apply
from attest.entitlements.sync.stage import (
    clean_text,
    create_stage,
    drop_stage,
    index_stage,
    load_known,
    read_into_stage,
    run_connection,
)
from attest.entitlements.sync.state import Progress, RemovalGuardTripped, RunState, SyncError, SyncResult
from attest.redact import install_filter, redact
from attest.trail.chain import record as audit

log = install_filter(logging.getLogger("attest.entitlements.sync"))

# A running sync beats every SYNC_HEARTBEAT; a run whose last beat is older than STALE_HEARTBEAT lost its
# process (killed, crashed, the machine gone): the next sync of the source, and the scheduler every minute
# (`sweep_interrupted`), mark it failed ("interrupted"), so the source can sync again within two minutes.
SYNC_HEARTBEAT = 20.0  # seconds; set on the package (`sync.SYNC_HEARTBEAT = ...`) to change it
STALE_HEARTBEAT = timedelta(seconds=60)

_HOLDER = f"{socket.gethostname()}:{os.getpid()}"


def _heartbeat_interval() -> float:
    """SYNC_HEARTBEAT as set on the package (attest.entitlements.sync), where it is set to change it."""
    return getattr(sys.modules[__package__], "SYNC_HEARTBEAT", SYNC_HEARTBEAT)


def sweep_interrupted(session: Session, now: datetime, source_id: int | None = None) -> list[int]:
    """Mark failed ("interrupted") the running syncs whose process stopped beating (last beat, or start
    when it never beat, older than STALE_HEARTBEAT). Returns their run ids."""
    beat = func.coalesce(SyncRun.heartbeat_at, SyncRun.started_at)
    stmt = select(SyncRun).where(SyncRun.status == RunStatus.RUNNING, beat < now - STALE_HEARTBEAT)
    if source_id is not None:
        stmt = stmt.where(SyncRun.source_id == source_id)
    ended = []
    for run in session.scalars(stmt):
        last = run.heartbeat_at or run.started_at
        run.status = RunStatus.FAILED
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
        self.interval = _heartbeat_interval()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, name=f"sync-heartbeat-{run_id}", daemon=True)

    def __enter__(self) -> _Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=self.interval + 5)

    def _beat(self) -> None:
        while not self.stop.wait(self.interval):
            try:
                with self.factory() as session, begin_write(session):
                    session.execute(update(SyncRun).where(SyncRun.id == self.run_id, SyncRun.status == RunStatus.RUNNING)
                                    .values(heartbeat_at=utcnow()))
            except Exception as exc:  # a missed beat is retried; only a long silence marks the run interrupted
                log.warning("sync run %s: heartbeat not written: %s", self.run_id, exc)


def _start_run(factory: sessionmaker[Session], source_name: str, force: bool, triggered_by: str | None) -> RunState:
    with factory() as session, begin_write(session):
        source = session.scalar(select(Source).where(Source.name == source_name))
        if source is None:
            raise SyncError(f"no source named {source_name!r}")
        if not source.enabled:
            raise SyncError(f"source {source_name!r} is disabled")
        now = utcnow()
        sweep_interrupted(session, now, source_id=source.id)
        running = session.scalar(select(SyncRun).where(SyncRun.source_id == source.id, SyncRun.status == RunStatus.RUNNING))
        if running is not None:
            raise SyncError(
                f"source {source_name!r} is already syncing (run {running.id} started "
                f"{running.started_at:%Y-%m-%d %H:%M} UTC{f' by {running.holder}' if running.holder else ''})"
            )
        run = SyncRun(source_id=source.id, status=RunStatus.RUNNING, started_at=now, forced=force, triggered_by=triggered_by,
                      stats={}, failed_parts=[], notes=[], heartbeat_at=now, holder=_HOLDER)
        session.add(run)
        session.flush()
        return RunState(source_id=source.id, source_name=source_name, run_id=run.id)


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
    state = _start_run(factory, source_name, force, triggered_by)
    state.report = progress
    # (a factory bound to one connection, as in tests, is not for another thread: no heartbeat then)
    beating = (contextlib.nullcontext() if isinstance(factory.kw.get("bind"), Connection)
               else _Heartbeat(factory, state.run_id))
    with beating:
        return _run(factory, settings, state, force=force, connector=connector, actor=actor)


def _run(factory: sessionmaker[Session], settings: Settings, state: RunState, *, force: bool,
         connector: BaseConnector | None, actor: str) -> SyncResult:
    try:
        if connector is None:
            with factory() as session:
                connector = build_connector(session.get(Source, state.source_id), settings)
        result = _read_and_apply(factory, settings, state, connector, force=force, actor=actor)
        result.seconds = round(state.elapsed(), 3)
        return result
    except Exception as exc:  # the run fails; nothing but its own row changes
        return _fail(factory, state, connector, exc)


def _read_and_apply(factory: sessionmaker[Session], settings: Settings, state: RunState, connector: BaseConnector,
                    *, force: bool, actor: str) -> SyncResult:
    normalize = correlation.email_normalizer(settings)
    with run_connection(factory) as conn:
        external = isinstance(factory.kw.get("bind"), Connection)  # tests: the test's own transaction
        t0 = time.perf_counter()
        create_stage(conn)
        if not external:
            conn.commit()
        create_seconds = time.perf_counter() - t0
        try:
            with state.phase("read"):
                baseline = conn.execute(
                    select(Source.last_success_run_id).where(Source.id == state.source_id)).scalar_one()
                known = load_known(conn, state.source_id, settings.sync_keys_in_memory)
            known_seconds = state.phases["read"]
            read_into_stage(conn, connector, state, known, normalize)  # phases "read" and "stage"
            state.add_phase("stage", create_seconds)
            if not external:
                conn.commit()
            read_seconds = state.elapsed()
            prog = state.progress
            prog.phase, prog.requests, prog.elapsed = "applying", state.api_calls, read_seconds
            if state.report is not None:
                state.report(prog)
            with factory(bind=conn) as session, begin_write(session):
                if session.get(Source, state.source_id, populate_existing=True).last_success_run_id != baseline:
                    raise SyncError("another run of this source was applied while this one was reading; "
                                    "nothing was changed: run it again")
                with state.phase("stage"):
                    index_stage(session.connection())
                with state.phase("apply"):
                    stats = apply_run(session, settings, state, force=force)
                    stats["read"] = state.read
                    stats["timings"] = {"read_known": round(known_seconds, 3),
                                        "read_and_stage": round(read_seconds - known_seconds, 3),
                                        **stats["timings"]}
                    run = session.get(SyncRun, state.run_id)
                    run.status = RunStatus.PARTIAL if state.failed_parts else RunStatus.SUCCEEDED
                    run.finished_at = utcnow()
                    run.api_calls = state.api_calls
                    run.failed_parts = state.failed_parts
                    run.notes = state.notes + stats.pop("notes", [])
                    session.get(Source, state.source_id).last_success_run_id = state.run_id
                    audit(session, actor=actor, action="sync.applied", object_type="sync_run",
                          object_id=str(state.run_id),
                          after={"source": state.source_name, "status": run.status, "added": stats.get("added"),
                                 "ended": stats.get("ended"), "failed_parts": state.failed_parts})
                    result = SyncResult(state.run_id, state.source_name, run.status, stats, state.api_calls,
                                        round(state.elapsed(), 3), None, state.failed_parts, run.notes)
                with state.phase("verify"):  # the layers above act on what this run saw (remediation)
                    run_after_apply(session, state.source_id, state.run_id, result)
                stats["phases"] = state.phases
                run.stats = stats
        finally:
            if not external and conn.in_transaction():
                conn.rollback()
            drop_stage(conn)
            if not external:
                conn.commit()
    return result


def _fail(factory: sessionmaker[Session], state: RunState, connector: BaseConnector | None,
          exc: Exception) -> SyncResult:
    """Record the run as failed (or aborted by the removal guard) with its error; nothing else changes."""
    status = RunStatus.ABORTED if isinstance(exc, RemovalGuardTripped) else RunStatus.FAILED
    message = _error_message(exc, getattr(connector, "secrets", None))
    if not isinstance(exc, ConnectorError | SyncError | SourceError):
        log.error("sync of %s failed: %s", state.source_name, message, exc_info=True)  # the filter redacts
    api_calls = getattr(connector, "calls", 0) if connector is not None else 0
    stats = {"read": state.read, "phases": state.phases}
    with factory() as session, begin_write(session):
        run = session.get(SyncRun, state.run_id)
        run.status = status
        run.finished_at = utcnow()
        run.error = message
        run.api_calls = api_calls
        run.stats = stats
        run.failed_parts = state.failed_parts
        run.notes = state.notes
    return SyncResult(state.run_id, state.source_name, status, stats, api_calls, round(state.elapsed(), 3),
                      message, state.failed_parts, state.notes)


def _error_message(exc: Exception, secrets: Mapping[str, Any] | None = None) -> str:
    """The run's error as stored and shown: redacted of the source's secrets and of anything that looks
    like a secret (an upstream error page may echo the request's Authorization header)."""
    text_ = str(exc) or type(exc).__name__
    if not isinstance(exc, ConnectorError | SyncError | SourceError):
        text_ = f"{type(exc).__name__}: {text_}"
    return clean_text(redact(text_, secrets))[:2000]


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
