"""Auditors read everything and change nothing: every non-GET route of every blueprint refuses them.

The test walks `app.url_map`, so a route any helper adds later is covered without touching this file.
Each write route is called as a signed-in auditor with plausible form data (CSRF off, so the route's own
permission check is what answers) against seeded objects, and must answer 403, 404 or 400 with every
table's row count and the audit chain head unchanged.
"""

from __future__ import annotations

from sqlalchemy import func, select

from attest.models import metadata
from attest.reviews.models import CampaignDefinition, Remediation
from attest.trail.models import AuditHead
from tests.audit.helpers import decided_campaign
from tests.factories import login_as, make_user

# Routes an auditor may POST to because they change no data. Keep this list short and justified.
ALLOWED = {
    "auth.login": "signing in (an already signed-in user is redirected; no data changes)",
    "auth.logout": "ends the auditor's own session",
    "audit.evidence_export_start": "auditors export evidence: it queues a bundle for the scheduler and records who "
                                   "asked (an evidence_export row and its audit event), no review data changes",
    "tokens.create": "an auditor's own API token: only scopes that read (and decide their own items, as on the "
                     "web), enforced per call (tests/api/test_scope_matrix.py); no review data changes",
}
WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")
FORM = {
    "decision": "revoke", "comment": "auditor trying", "note": "auditor trying", "reason": "auditor trying",
    "roles": "admin", "role": "admin", "identity_email": "maria.manager@acme.example", "email": "x@acme.example",
    "item_ids": "1", "items": "1", "to": "1", "to_identity_id": "1", "reviewer_id": "1", "spec": "name: x",
    "yaml": "name: x", "name": "x", "confirm": "yes",
}


def snapshot(session) -> dict[str, int]:
    counts = {t.name: session.scalar(select(func.count()).select_from(t)) for t in metadata.sorted_tables}
    counts["audit_head_seq"] = session.scalar(select(AuditHead.seq).where(AuditHead.id == 1)) or 0
    return counts


def test_every_write_route_refuses_an_auditor(app, client, session):
    setup = decided_campaign(session)
    definition = CampaignDefinition(name="Quarterly", spec={"name": "Quarterly"}, created_by="admin@acme.example")
    session.add(definition)
    session.flush()
    rem = session.scalar(select(Remediation).where(Remediation.campaign_id == setup.campaign.id).limit(1))
    admin = make_user(session, "admin@acme.example", roles=["admin"])
    auditor = make_user(session, "auditor@acme.example", roles=["auditor"])
    session.commit()
    ids = {"campaign_id": setup.campaign.id, "item_id": setup.items[-1].id, "definition_id": definition.id,
           "remediation_id": rem.id, "user_id": admin.id, "identity_id": setup.people[0].id,
           "source_id": setup.source.id, "account_id": setup.items[0].account_id}
    FORM.update(account_id=str(setup.items[0].account_id), campaign_id=str(setup.campaign.id))
    login_as(app, client, auditor)
    app.config["WTF_CSRF_ENABLED"] = False

    checked, failures = [], []
    for rule in app.url_map.iter_rules():
        if rule.endpoint in ALLOWED or rule.endpoint == "static":
            continue
        for method in sorted(set(rule.methods or ()) & set(WRITE_METHODS)):
            values = {arg: ids.get(arg, 1) for arg in rule.arguments}
            with app.test_request_context():
                from flask import url_for

                url = url_for(rule.endpoint, **values)
            before = snapshot(session)
            response = client.open(url, method=method, data=FORM)
            session.expire_all()
            after = snapshot(session)
            checked.append(f"{method} {rule.rule}")
            # 401: /api/ takes no session cookie (token auth only: tests/api/test_scope_matrix.py)
            if response.status_code not in (400, 401, 403, 404) or before != after:
                changed = {k: (before[k], after[k]) for k in before if before[k] != after.get(k)}
                failures.append(f"{method} {url} ({rule.endpoint}) -> {response.status_code}, changed: {changed}")
    assert len(checked) >= 16, checked
    assert not failures, "auditor was not refused:\n" + "\n".join(failures)
    # and the auditor's session still works: refusals did not sign them out
    assert client.get("/audit").status_code == 200
