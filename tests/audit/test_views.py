"""Auditor pages: audit log search, remediation status and work list, access history, evidence download."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from attest.reviews.models import Remediation
from attest.trail.models import AuditEvent
from tests.audit.helpers import decided_campaign
from tests.factories import login_as, make_user


@pytest.fixture
def data(session):
    setup = decided_campaign(session)
    # one open manual task besides the verified and reappeared automatic ones
    item = setup.items[2]
    item.decision, item.outcome = "revoke", "revoke"
    session.add(Remediation(campaign_id=setup.campaign.id, item_id=item.id, grant_id=item.grant_id,
                            source_id=setup.source.id, mode="manual", status="pending",
                            target="Remove alice from group 'Finance' in Okta"))
    session.commit()
    return setup


def sign_in(app, client, session, role):
    user = make_user(session, f"{role}@acme.example", roles=[role])
    session.commit()
    login_as(app, client, user)
    return user


@pytest.mark.parametrize("role", ["admin", "auditor"])
def test_pages_open_for_admins_and_auditors_and_nav_lists_them(app, client, session, data, role):
    sign_in(app, client, session, role)
    for path in ["/audit", "/remediations", "/history", "/evidence", f"/audit?campaign={data.campaign.id}",
                 "/remediations?needs=human", "/audit?action=item.&actor=maria&since=2020-01-01&until=2099-01-01"]:
        assert client.get(path).status_code == 200, path
    home = client.get("/").get_data(as_text=True)
    for label in ("Remediation", "Evidence", "Audit log", "Access history"):
        assert label in home


def test_reviewer_without_role_is_refused(app, client, session, data):
    user = make_user(session, "someone@acme.example")
    session.commit()
    login_as(app, client, user)
    for path in ["/audit", "/remediations", "/remediations.csv", "/history", "/evidence",
                 f"/campaigns/{data.campaign.id}/evidence.zip"]:
        assert client.get(path).status_code == 403, path


def test_audit_log_search_and_keyset_pages(app, client, session, data):
    sign_in(app, client, session, "auditor")
    page = client.get("/audit?action=item.decide").get_data(as_text=True)
    assert page.count("<code>item.decide</code>") == 3 and "campaign.launch" not in page
    page = client.get("/audit?actor=SOMEONE").get_data(as_text=True)
    assert "source.add" in page and "item.decide" not in page
    # pages of 50, newest first, by seq
    newest = session.scalar(select(AuditEvent.seq).order_by(AuditEvent.seq.desc()).limit(1))
    page = client.get(f"/audit?after={newest}").get_data(as_text=True)
    assert f'<td class="mono">{newest}</td>' not in page and f'<td class="mono">{newest - 1}</td>' in page
    assert client.get("/audit?since=yesterday").status_code == 400


def test_remediation_page_flags_reappeared_and_exports_the_work_list(app, client, session, data):
    sign_in(app, client, session, "auditor")
    page = client.get("/remediations").get_data(as_text=True)
    assert "revoked grants came back after the revoke" in page and "table-danger" in page
    assert "Remove alice from group" in page
    assert "Done</button>" not in page  # auditors see no write controls
    csv_text = client.get(f"/remediations.csv?campaign={data.campaign.id}").get_data(as_text=True)
    lines = csv_text.splitlines()
    assert lines[0].startswith("remediation_id,") and len(lines) == 2 and "Remove alice from group" in lines[1]


def test_admin_marks_a_manual_task_done_with_a_note(app, client, session, data):
    sign_in(app, client, session, "admin")
    rem = session.scalar(select(Remediation).where(Remediation.mode == "manual"))
    page = client.get("/remediations?needs=human").get_data(as_text=True)
    assert f'/remediations/{rem.id}/done' in page
    app.config["WTF_CSRF_ENABLED"] = False
    response = client.post(f"/remediations/{rem.id}/done", data={"note": ""})
    assert response.status_code == 303
    session.expire_all()
    assert session.get(Remediation, rem.id).status == "pending"
    response = client.post(f"/remediations/{rem.id}/done", data={"note": "Removed in Okta, IAM-7"},
                           follow_redirects=True)
    assert "marked done" in response.get_data(as_text=True)
    session.expire_all()
    assert session.get(Remediation, rem.id).status == "done"
    ev = session.scalar(select(AuditEvent).where(AuditEvent.action == "remediation.marked_done"))
    assert ev.actor == "admin@acme.example" and ev.campaign_id == data.campaign.id


def test_history_links_to_the_identity_page_on_that_date(app, client, session, data):
    sign_in(app, client, session, "auditor")
    person = data.people[1]
    response = client.get(f"/history?q={person.email}&at=2026-09-30")
    assert response.status_code == 302
    assert response.headers["Location"].endswith(f"/identities/{person.id}?at=2026-09-30")
    page = client.get("/history?q=acme.example&at=2026-09-30").get_data(as_text=True)
    assert f"/identities/{person.id}?at=2026-09-30" in page


def test_evidence_page_prepares_bundles_in_the_background(app, client, session, data):
    """The page offers a CSRF-protected form that queues an export (tests/audit/test_evidence_jobs.py runs the
    job and the download); the old download link builds nothing and leads back to the page."""
    sign_in(app, client, session, "auditor")
    page = client.get("/evidence").get_data(as_text=True)
    assert f'action="/campaigns/{data.campaign.id}/evidence"' in page and 'name="csrf_token"' in page
    assert "BEGIN PUBLIC KEY" in page and "No scheduler has run" in page
    response = client.get(f"/campaigns/{data.campaign.id}/evidence.zip")
    assert response.status_code == 303 and response.headers["Location"].startswith("/evidence")
    assert session.scalar(select(AuditEvent).where(AuditEvent.action == "evidence.exported")) is None
    assert client.get("/campaigns/999999/evidence.zip").status_code == 404


def test_dashboard_alert_partial_flags_reappeared(app, client, session, data):
    from flask import render_template_string

    user = sign_in(app, client, session, "auditor")
    with app.test_request_context():
        from flask_login import login_user

        login_user(user)
        html = render_template_string('{% include "audit/_dashboard_alert.html" %}')
    assert "1 revoked grant came back" in html and "/remediations?status=reappeared" in html
