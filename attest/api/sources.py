"""Sources: list, get, create, update (settings, schedule, secrets), test, sync now, runs.

Through attest/entitlements/sources.py, as the source page and `attest sources ...` do. Secrets are
write-only: an answer names the secrets that are set, never their values.
"""

from __future__ import annotations

import hashlib
from typing import Any

from flask import request
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from attest.api.core import (
    ApiError,
    Paging,
    Routes,
    caller,
    check_if_match,
    decode_cursor,
    get_or_404,
    id_page,
    iso,
    locked_or_404,
    make_etag,
    page_of,
    refused_as,
    set_etag,
)
from attest.entitlements import sources as service
from attest.entitlements.models import Source, SyncRun
from attest.web import db, settings, write

routes = Routes("sources")


class Run(BaseModel):
    id: int
    status: str
    started_at: str
    finished_at: str | None = None
    seconds: float | None = None
    api_calls: int = 0
    stats: dict[str, Any] = {}
    phases: list[Any] | dict[str, Any] | None = None
    failed_parts: list[Any] = []
    notes: list[Any] = []
    error: str | None = None
    forced: bool = False
    triggered_by: str | None = None


class SourceOut(BaseModel):
    id: int
    name: str
    kind: str
    enabled: bool
    authoritative: bool
    schedule: str | None = None
    settings: dict[str, Any]
    secret_names: list[str]
    secrets_error: str | None = None
    counts: dict[str, int]
    sync_requested_at: str | None = None
    last_run: Run | None = None


SourceList = page_of(SourceOut, "SourceList")


RunList = page_of(Run, "RunList")


class SourceCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: str = Field(max_length=20)
    name: str = Field(max_length=100)
    settings: dict[str, Any] = {}
    secrets: dict[str, str] = {}
    schedule: str | None = Field(default=None, max_length=100)
    authoritative: bool | None = None


class SourceUpdate(BaseModel):
    """Settings are merged over the current ones; `unset` names go back to their default; `secrets` replaces
    the named secrets; `schedule` (when given) sets or, with null, clears the schedule."""

    model_config = ConfigDict(extra="forbid")
    settings: dict[str, Any] = {}
    unset: list[str] = []
    secrets: dict[str, str] = {}
    schedule: str | None = Field(default=None, max_length=100)


class TestResult(BaseModel):
    ok: bool
    message: str
    api_calls: int = 0


class SyncQueued(BaseModel):
    queued: bool
    requested_at: str | None = None
    requested_by: str | None = None


class RunQuery(Paging):
    pass


def run_out(run: SyncRun) -> dict[str, Any]:
    out = service.run_summary(run)
    out["seconds"] = float(out["seconds"]) if out.get("seconds") is not None else None
    stats = out.get("stats") or {}
    out["phases"] = stats.get("phases") if isinstance(stats, dict) else None
    out["forced"] = bool(run.forced)
    out["triggered_by"] = run.triggered_by
    return out


def _etag(source: Source) -> str:
    secret = hashlib.sha256((source.secrets_encrypted or "").encode()).hexdigest()
    return make_etag("source", source.id, source.settings, source.schedule, source.enabled, source.authoritative, secret)


def _source_out(source: Source) -> dict[str, Any]:
    session = db()
    names, secrets_error = service.secret_names(settings(), source.secrets_encrypted)
    last = session.scalar(select(SyncRun).where(SyncRun.source_id == source.id).order_by(SyncRun.id.desc()).limit(1))
    return {"id": source.id, "name": source.name, "kind": source.kind, "enabled": source.enabled,
            "authoritative": source.authoritative, "schedule": source.schedule,
            "settings": dict(source.settings or {}), "secret_names": names, "secrets_error": secrets_error,
            "counts": service.active_counts(session, source.id).get(source.id, {}),
            "sync_requested_at": iso(source.sync_requested_at), "last_run": run_out(last) if last else None}


def _get(source_id: int) -> Source:
    return get_or_404(Source, source_id)


def _answer(source_id: int) -> dict[str, Any]:
    """The source as it is now, with its ETag set (after a change: read again in the request's session)."""
    source = _get(source_id)
    set_etag(_etag(source))
    return _source_out(source)


@routes.get("/sources", "sources:read", "read_all", resp=SourceList)
def list_sources():
    """Every source with its counts of active rows and its latest run."""
    session = db()
    rows = session.scalars(select(Source).order_by(Source.name)).all()
    return {"data": [_source_out(s) for s in rows], "next": None}


@routes.get("/sources/<int:source_id>", "sources:read", "read_all", resp=SourceOut)
def get_source(source_id: int):
    """One source; its ETag versions settings, schedule and secrets (send it as If-Match on PATCH)."""
    return _answer(source_id)


@routes.post("/sources", "sources:write", "admin", json=SourceCreate, resp=SourceOut, status=201)
def create_source():
    """Add a source (the connector's settings schema; secrets are stored encrypted, never shown back)."""
    body: SourceCreate = request.context.json
    with refused_as(400, service.SourceError, ValueError), write() as session:
        source = service.add_source(session, settings(), body.kind, body.name, body.settings, body.secrets,
                                    schedule=body.schedule, authoritative=body.authoritative, actor=caller().actor)
        source_id = source.id
    return _answer(source_id), 201


@routes.patch("/sources/<int:source_id>", "sources:write", "admin", json=SourceUpdate, resp=SourceOut)
def update_source(source_id: int):
    """Change settings, schedule or secrets. With If-Match, 412 when the source changed since it was read."""
    body: SourceUpdate = request.context.json
    schedule = body.schedule if "schedule" in body.model_fields_set else service.UNCHANGED
    with refused_as(400, service.SourceError), write() as session:
        source = locked_or_404(session, Source, source_id)
        check_if_match(_etag(source))
        service.update_source(session, settings(), source.name, body.settings, body.secrets, unset=body.unset,
                              schedule=schedule, actor=caller().actor)
    return _answer(source_id)


@routes.post("/sources/<int:source_id>/test", "sources:write", "admin", resp=TestResult)
def test_source(source_id: int):
    """Check that Attest can reach and read the source with its stored credentials (changes nothing)."""
    source = _get(source_id)
    tester = getattr(service, "test_connection", None)
    try:
        if tester is not None:
            result = tester(db(), settings(), source.name)
            return {"ok": bool(result.ok), "message": result.message, "api_calls": int(getattr(result, "calls", 0) or 0)}
        connector = service.build_connector(source, settings())
        connector.validate()
        return {"ok": True, "message": f"ok ({connector.calls} API calls)", "api_calls": connector.calls}
    except service.SourceError as exc:
        raise ApiError(400, str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - an unreachable upstream is an answer, not an error
        return {"ok": False, "message": type(exc).__name__, "api_calls": 0}


@routes.post("/sources/<int:source_id>/sync", "sources:write", "admin", resp=SyncQueued, status=202)
def sync_source(source_id: int):
    """Sync now: queue a sync request for the scheduler (as the source page's Sync now); 202."""
    source = _get(source_id)
    with refused_as(409, service.SourceError), write() as session:
        row, queued = service.request_sync(session, source.name, actor=caller().actor)
        out = {"queued": queued, "requested_at": iso(row.sync_requested_at), "requested_by": row.sync_requested_by}
    return out, 202


@routes.get("/sources/<int:source_id>/runs", "sources:read", "read_all", query=RunQuery, resp=RunList)
def source_runs(source_id: int):
    """The source's sync runs, newest first, with phases (when recorded), notes and failed parts."""
    q: RunQuery = request.context.query
    _get(source_id)
    after = decode_cursor("runs", q.after, of=int)
    return id_page("runs", select(SyncRun).where(SyncRun.source_id == source_id), SyncRun.id, after, q.limit,
                   run_out, newest_first=True)
