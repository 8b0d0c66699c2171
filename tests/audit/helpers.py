"""A campaign with decisions, a verified and a reappeared revoke, exclusions and audit events."""

from __future__ import annotations

from contextlib import contextmanager
from datetime import timedelta

from sqlalchemy import text

from attest.db import utcnow
from attest.entitlements.models import SyncRun
from attest.reviews.models import CampaignExclusion, Remediation, ReviewerSignoff
from attest.trail.chain import record
from tests.reviews.factories import review_setup


def decided_campaign(session, people: int = 4, per_person: int = 3):
    """Returns the ReviewSetup; items: first revoked (verified), second revoked (reappeared), rest approved."""
    setup = review_setup(session, people=people, per_person=per_person, spec={"controls": ["SOC 2 CC6.2", "SOX ITGC"]})
    campaign = setup.campaign
    run = SyncRun(source_id=setup.source.id, status="succeeded", started_at=utcnow() - timedelta(days=1),
                  finished_at=utcnow() - timedelta(days=1), stats={"read": {"grants": 12}}, api_calls=7)
    later = SyncRun(source_id=setup.source.id, status="succeeded", started_at=utcnow(), finished_at=utcnow(),
                    stats={}, api_calls=3)
    session.add_all([run, later])
    session.flush()
    campaign.sync_runs = [{"source": setup.source.name, "run_id": run.id}]
    items = setup.items
    t0 = utcnow() - timedelta(hours=3)
    for i, item in enumerate(items):
        item.decision = "revoke" if i < 2 else "approve"
        item.comment = "left the team" if i < 2 else None
        item.decided_at = t0 + timedelta(seconds=2 * i)
        item.decided_by_identity_id = setup.manager.id
        item.decided_in_bulk = i >= 6
        item.completed = True
        item.outcome = "revoke" if i < 2 else "keep"
        item.outcome_reason = "decision"
    session.flush()
    session.add(CampaignExclusion(campaign_id=campaign.id, grant_id=items[0].grant_id, account_id=items[0].account_id,
                                  reason="service_account_excluded"))
    campaign.population = {"in_scope": len(items) + 1, "items": len(items), "excluded": 1,
                           "excluded_by_reason": {"service_account_excluded": 1}}
    campaign.status = "closed"
    campaign.closed_at = utcnow()
    campaign.closed_by = "admin@acme.example"
    for i, status in enumerate(("verified", "reappeared")):
        session.add(Remediation(campaign_id=campaign.id, item_id=items[i].id, grant_id=items[i].grant_id,
                                source_id=setup.source.id, mode="automatic", status=status, attempts=1,
                                executed_at=utcnow() - timedelta(hours=1), calls=["DELETE /x"],
                                verified_run_id=later.id if status == "verified" else None,
                                reappeared_run_id=later.id if status == "reappeared" else None))
    session.add(ReviewerSignoff(campaign_id=campaign.id, reviewer_id=setup.manager.id))
    session.flush()
    record(session, actor="admin@acme.example", action="campaign.launch", object_type="campaign",
           object_id=str(campaign.id), campaign_id=campaign.id, after={"items": len(items)})
    record(session, actor="someone", action="source.add", object_type="source", object_id="1")  # not the campaign's
    for item in items[:3]:
        record(session, actor=setup.manager.email, action="item.decide", object_type="review_item",
               object_id=str(item.id), campaign_id=campaign.id, after={"decision": item.decision})
    record(session, actor="system", action="campaign.close", object_type="campaign", object_id=str(campaign.id),
           campaign_id=campaign.id)
    session.commit()
    return setup


@contextmanager
def append_only_off(conn):
    """What a database administrator can do on a raw connection: switch the audit table's append-only
    triggers off (PostgreSQL: DISABLE TRIGGER; SQLite: drop them) and back on afterwards."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("ALTER TABLE audit_event DISABLE TRIGGER audit_event_append_only"))
        yield conn
        conn.execute(text("ALTER TABLE audit_event ENABLE ALWAYS TRIGGER audit_event_append_only"))
        return
    saved = conn.execute(text("SELECT name, sql FROM sqlite_master WHERE type = 'trigger' "
                              "AND tbl_name = 'audit_event'")).all()
    for name, _sql in saved:
        conn.execute(text(f"DROP TRIGGER {name}"))
    yield conn
    for _name, sql in saved:
        conn.execute(text(sql))
