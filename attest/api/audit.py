"""Audit events (keyset-paged, newest first) and evidence bundles (start an export, its status, download),
through attest/audit/queries.py and attest/audit/export_jobs.py as the audit log and evidence pages do.
Starting an export is a read of the audit area (auditors do it on the web too): scope `audit:read`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import request, send_file
from pydantic import Field

from attest.api.core import (
    ApiError,
    Id,
    Paging,
    Routes,
    caller,
    decode_cursor,
    encode_cursor,
    model_of,
    out,
    page_of,
)
from attest.audit import export_jobs
from attest.audit.models import EvidenceExport
from attest.audit.queries import EventFilters, search_events
from attest.trail.models import AuditEvent
from attest.web import db, settings, write

routes = Routes("audit")


class EventQuery(Paging):
    actor: str = Field(default="", max_length=320)
    action: str = Field(default="", max_length=100, description="a prefix: `review.` finds every review event")
    object_type: str = Field(default="", max_length=50)
    object_id: str = Field(default="", max_length=100)
    campaign_id: Id | None = None
    since: datetime | None = None
    until: datetime | None = None


# an audit event (attest/trail/models.py: AuditEvent's columns); before and after as recorded, any JSON
EventOut = model_of(AuditEvent, "EventOut", "seq at actor action object_type object_id campaign_id before after "
                    "request_id ip hash prev_hash", before=(Any, None), after=(Any, None))
EventList = page_of(EventOut, "EventList")


# an evidence export (attest/audit/models.py: EvidenceExport's columns) and what the queue says of it
ExportOut = model_of(EvidenceExport, "ExportOut", "id campaign_id requested_by status phase items_done items_total size "
                     "sha256 manifest_sha256 error created_at started_at finished_at expires_at available queued_ahead "
                     "created", available=bool, queued_ahead=int, created=bool | None)


def _aware(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is not None:
        return value
    from datetime import UTC

    return value.replace(tzinfo=UTC)


@routes.get("/audit/events", "audit:read", "read_all", query=EventQuery, resp=EventList)
def list_events():
    """The audit trail, newest first; `actor` matches a part, `action` a prefix, the rest exactly."""
    q: EventQuery = request.context.query
    after = decode_cursor("events", q.after, of=int)
    f = EventFilters(actor=q.actor.strip(), action=q.action.strip(), object_type=q.object_type.strip(),
                     object_id=q.object_id.strip(), campaign_id=q.campaign_id, since=_aware(q.since),
                     until=_aware(q.until))
    page = search_events(db(), f, after=after, limit=q.limit)
    return {"data": [out(EventOut, e) for e in page.rows], "next": encode_cursor("events", page.next_after)}


def export_out(row: EvidenceExport, created: bool | None = None) -> dict[str, Any]:
    return out(ExportOut, row, items_done=row.items_done or 0, available=export_jobs.is_available(row),
               queued_ahead=export_jobs.queue_position(db(), row), created=created)


@routes.post("/campaigns/<int:campaign_id>/evidence-exports", "audit:read", "read_all", resp=ExportOut, status=202)
def start_export(campaign_id: int):
    """Ask for a campaign's evidence bundle: queued for the scheduler (202); an export of it already under
    way is returned instead (`created: false`)."""
    try:
        with write() as session:
            asked = export_jobs.request_export(session, campaign_id, caller().actor)
            if asked is None:
                raise ApiError(404)
            row, created = asked
            export_id = row.id
    except export_jobs.ExportRequestError as exc:
        raise ApiError(409, str(exc)) from None
    return export_out(export_jobs.get_export(db(), export_id), created), 202


@routes.get("/evidence-exports/<int:export_id>", "audit:read", "read_all", resp=ExportOut)
def get_export(export_id: int):
    row = export_jobs.get_export(db(), export_id)
    if row is None:
        raise ApiError(404)
    return export_out(row)


@routes.get("/evidence-exports/<int:export_id>/download", "audit:read", "read_all", resp=None)
def download_export(export_id: int):
    """The finished bundle (application/zip), streamed from the instance folder; 409 while it is not finished
    or after it expired. Audited. Not wrapped by spectree (which would read the streamed file into memory to
    validate it): documented by hand in DOWNLOAD_OPERATION."""
    row = export_jobs.get_export(db(), export_id)
    if row is None:
        raise ApiError(404)
    path = export_jobs.bundle_path(settings(), row)
    if path is None:
        raise ApiError(409, "This bundle is not available (not finished yet, failed, or expired).",
                       details={"status": row.status})
    with write() as session:
        export_jobs.record_download(session, row, caller().actor)
    return send_file(path, mimetype="application/zip", as_attachment=True,
                     download_name=f"evidence-{row.campaign_id}-{row.id}.zip", max_age=0)


def _error_ref(description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}}


DOWNLOAD_PATH = "/api/v1/evidence-exports/{export_id}/download"
DOWNLOAD_OPERATION: dict[str, Any] = {"get": {
    "summary": "Download a finished evidence bundle",
    "description": download_export.__doc__.split("Not wrapped")[0].strip(),
    "operationId": "get__api_v1_evidence-exports_{export_id}_download",
    "tags": routes.tags,
    "parameters": [{"name": "export_id", "in": "path", "required": True, "description": "",
                    "schema": {"type": "integer", "format": "int32"}}],
    "responses": {"200": {"description": "The bundle", "content": {"application/zip": {
                      "schema": {"type": "string", "contentMediaType": "application/zip"}}}},
                  **{str(code): _error_ref(text) for code, text in (
                      (400, "Bad Request"), (401, "Unauthorized"), (403, "Forbidden"), (404, "Not Found"),
                      (409, "Not available (yet)"), (429, "Too Many Requests"))}},
}}
