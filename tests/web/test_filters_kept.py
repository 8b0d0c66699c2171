"""Filters kept after actions (issue 20, part 6): after "Done" on the remediation page the list comes back
with the campaign (and status, mode, "needs a person") filters it was showing, not a different list."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import select

from attest.reviews.models import Remediation
from tests.audit.helpers import decided_campaign
from tests.factories import login_as, make_user


@pytest.fixture
def data(session):
    d = decided_campaign(session)
    item = d.items[2]
    item.decision, item.outcome = "revoke", "revoke"
    session.add(Remediation(campaign_id=d.campaign.id, item_id=item.id, grant_id=item.grant_id, source_id=d.source.id,
                            mode="manual", status="pending", target="Remove alice from group 'Finance' in Okta"))
    admin = make_user(session, "admin@acme.example", roles=["admin"])
    session.commit()
    return d, admin


def test_done_keeps_the_remediation_list_filters(app, client, session, data):
    d, admin = data
    login_as(app, client, admin)
    rem = session.scalar(select(Remediation).where(Remediation.mode == "manual"))
    page = client.get(f"/remediations?campaign={d.campaign.id}&status=pending&mode=manual").get_data(as_text=True)
    assert f'name="back_campaign" value="{d.campaign.id}"' in page and 'name="back_mode" value="manual"' in page
    app.config["WTF_CSRF_ENABLED"] = False
    back = {"back_campaign": str(d.campaign.id), "back_status": "pending", "back_mode": "manual"}
    # refused (no note): back to the same list
    response = client.post(f"/remediations/{rem.id}/done", data={"note": "", **back})
    assert response.status_code == 303
    assert parse_qs(urlsplit(response.headers["Location"]).query) == {
        "campaign": [str(d.campaign.id)], "status": ["pending"], "mode": ["manual"]}
    response = client.post(f"/remediations/{rem.id}/done", data={"note": "Removed in Okta, IAM-7", **back})
    location = response.headers["Location"]
    assert urlsplit(location).path == "/remediations"
    assert parse_qs(urlsplit(location).query) == {"campaign": [str(d.campaign.id)], "status": ["pending"],
                                                  "mode": ["manual"]}
    page = client.get(location).get_data(as_text=True)
    assert "marked done" in page and f'<option value="{d.campaign.id}" selected' in page


def test_done_from_the_unfiltered_work_list_returns_to_it(app, client, session, data):
    d, admin = data
    login_as(app, client, admin)
    app.config["WTF_CSRF_ENABLED"] = False
    rem = session.scalar(select(Remediation).where(Remediation.mode == "manual"))
    response = client.post(f"/remediations/{rem.id}/done", data={"note": "done by hand"})
    assert parse_qs(urlsplit(response.headers["Location"]).query) == {"needs": ["human"]}
