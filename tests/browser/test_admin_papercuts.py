"""An admin's papercuts in a real Chromium (issue 20, part 6): no console error (the CSP included) on the
admin pages and after their htmx swaps; the remediation note box is wide enough to type in and "Done"
keeps the list's campaign filter; the definition form shows no error before input and its live preview
swaps in without one; a close below the completion threshold asks for a reason in the page; favicon."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from attest.reviews.models import Remediation
from tests.audit.helpers import decided_campaign
from tests.factories import make_user
from tests.reviews.factories import review_setup

pytestmark = pytest.mark.browser

PASSWORD = "correct horse battery staple"
ADMIN = "ines.iam@acme.example"


def _watch(page) -> list[str]:
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    return errors


def test_admin_pages_have_no_console_errors_and_keep_their_filters(live_server, page):
    s = live_server.factory()  # decided_campaign commits itself
    try:
        d = decided_campaign(s)
        item = d.items[2]
        item.decision, item.outcome = "revoke", "revoke"
        s.add(Remediation(campaign_id=d.campaign.id, item_id=item.id, grant_id=item.grant_id, source_id=d.source.id,
                          mode="manual", status="pending", target="Remove alice from group 'Finance' in Okta"))
        active = review_setup(s, people=2, per_person=2, manager_email="mona.manager@acme.example",
                              campaign_name="Q4 review")
        active.campaign.status = "active"
        make_user(s, ADMIN, roles=["admin"], password=PASSWORD)
        campaign_id, active_id = d.campaign.id, active.campaign.id
        s.commit()
    finally:
        s.close()
    errors = _watch(page)
    live_server.sign_in(page, ADMIN, PASSWORD)

    # the remediation work list, filtered by campaign: a usable note box, and "Done" keeps the filter
    page.goto(live_server.url_for(f"/remediations?campaign={campaign_id}"))
    note = page.locator("input[name=note]").first
    assert note.bounding_box()["width"] >= 150
    note.fill("Removed in Okta, IAM-7")
    with page.expect_navigation():
        page.get_by_role("button", name="Done").first.click()
    assert f"campaign={campaign_id}" in page.url
    expect(page.locator(".alert-success")).to_contain_text("marked done")
    expect(page.locator("select[name=campaign]")).to_have_value(str(campaign_id))

    # the new definition form: nothing in red before input; the live preview (htmx) swaps in cleanly
    page.goto(live_server.url_for("/campaigns/definitions/new"))
    expect(page.locator("#preview .preview-ok, #preview .preview-error").first).to_be_visible()
    expect(page.locator(".preview-error, .definition-error")).to_have_count(0)
    page.fill("#f-name", "Finance quarterly")
    page.fill("#f-dur", "5")
    expect(page.locator("#preview .preview-ok")).to_be_visible()
    expect(page.locator("#preview .preview-error")).to_have_count(0)

    # closing at 0% decided: a reason box, required by the browser too
    page.goto(live_server.url_for(f"/campaigns/{active_id}"))
    page.get_by_text("Close campaign").first.click()
    reason = page.locator("#close-reason")
    expect(reason).to_be_visible()
    assert reason.evaluate("el => el.required")

    for path in ("/campaigns", "/favicon.ico"):
        response = page.goto(live_server.url_for(path))
        assert response.status == 200, path
    assert errors == [], errors
