"""Status names are StrEnums defined once next to their models: the database stores the same strings as
before, and the check constraints still allow exactly them."""

from __future__ import annotations

from sqlalchemy import text

from attest.entitlements.models import RUN_STATUSES, PersonStatus, RunStatus, SyncRun
from attest.reviews.models import REMEDIATION_STATUSES, RemediationStatus
from tests.factories import make_identity, make_source


def test_an_enum_status_is_stored_as_its_plain_string(session):
    source = make_source(session)
    run = SyncRun(source_id=source.id, status=RunStatus.PARTIAL)
    ada = make_identity(session, "ada@acme.example", status=PersonStatus.TERMINATED)
    session.add(run)
    session.flush()
    assert session.execute(text("SELECT status FROM sync_run WHERE id = :id"), {"id": run.id}).scalar() == "partial"
    assert session.execute(text("SELECT status FROM identity WHERE id = :id"), {"id": ada.id}).scalar() == "terminated"
    session.expire_all()
    assert session.get(SyncRun, run.id).status == RunStatus.PARTIAL == "partial"


def test_the_constraints_allow_exactly_the_enum_values():
    assert tuple(RunStatus) == RUN_STATUSES and all(type(s) is str for s in RUN_STATUSES)
    assert tuple(RemediationStatus) == REMEDIATION_STATUSES and all(type(s) is str for s in REMEDIATION_STATUSES)
    constraint = next(c for c in SyncRun.__table__.constraints if getattr(c, "name", "") == "ck_sync_run_status")
    assert str(constraint.sqltext) == f"status IN {RUN_STATUSES!r}" == (
        "status IN ('running', 'succeeded', 'partial', 'failed', 'aborted')")
