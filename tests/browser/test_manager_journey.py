"""The manager's journey on a phone (issue 20, "Done when"), in a real Chromium at 390 px:

a manager decides items one by one (the sidebar and progress counts follow each decision), undoes one,
approves the rest not flagged in bulk, delegates to a colleague for the coming days and opens My team from
the menu (axe: no serious or critical violation); the colleague then sees the manager's open items (not the
one about their own access) and revokes the flagged one on the manager's behalf. Nothing scrolls sideways.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from attest.entitlements.models import Account
from attest.reviews.models import Delegation, ReviewItem
from attest.trail.models import AuditEvent
from tests.browser.helpers import PASSWORD, serious_violations
from tests.reviews.factories import add_reviewer, make_grant, make_item, review_setup

pytestmark = pytest.mark.browser

PHONE = {"viewport": {"width": 390, "height": 844}, "device_scale_factor": 2, "is_mobile": True, "has_touch": True}


def _seed(live_server) -> dict:
    with live_server.session() as s:
        setup = review_setup(s, people=3, per_person=2, password=PASSWORD)
        colleague, colleague_user = add_reviewer(s, "colin.colleague@acme.example", "Colin Colleague",
                                                 password=PASSWORD)
        account = Account(source_id=setup.source.id, external_id="colin", login="colin", email=colleague.email,
                          identity_id=colleague.id, kind="human")
        s.add(account)
        s.flush()
        grant, resource, ent = make_grant(s, setup.source, account, "Colin-Payroll")
        about = make_item(s, setup.campaign, setup.manager, colleague, account, grant, resource, ent, setup.source,
                          risks=["privileged"])  # flagged: left out of the bulk approval
        return {"manager": setup.manager_user.email, "manager_id": setup.manager.id, "colleague": colleague.email,
                "campaign": setup.campaign.id, "flagged": setup.items[0].id, "second": setup.items[1].id,
                "about": about.id}


def _phone(browser):
    context = browser.new_context(**PHONE)
    context.set_default_timeout(10_000)
    return context


def _fits(page) -> None:
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 390


def test_a_manager_reviews_undoes_delegates_and_the_delegate_decides_on_a_phone(live_server, browser):
    seed = _seed(live_server)
    cid = seed["campaign"]
    manager = _phone(browser)
    try:
        page = manager.new_page()
        page.on("dialog", lambda dialog: dialog.accept())  # the "are you sure?" confirmations
        live_server.sign_in(page, seed["manager"], PASSWORD)
        page.goto(live_server.url_for("/reviews"))
        _fits(page)
        count = page.locator(f"#card-count-{cid}")
        assert count.inner_text() == "0/7 decided"

        # one by one: approve the second row (htmx swaps the row, the counts follow)
        row = page.locator(f"#item-{seed['second']}")
        row.locator(".js-approve").click()
        page.locator(f"#item-{seed['second']}.decided-approve").wait_for()
        page.wait_for_function(f"() => document.querySelector('#card-count-{cid}').textContent === '1/7 decided'")
        assert "1 of 7 decided" in page.inner_text("#campaign-progress")

        # undo it: the row is undecided again, the counts go back
        page.locator(f"#item-{seed['second']} .js-undo").click()
        page.wait_for_function(f"() => !document.querySelector('#item-{seed['second']}').classList.contains('decided-approve')")
        page.wait_for_function(f"() => document.querySelector('#card-count-{cid}').textContent === '0/7 decided'")
        assert page.locator(f"#item-{seed['second']} .js-undo").count() == 0

        # in bulk: everything not flagged (the privileged item stays for a decision of its own)
        with page.expect_navigation():
            page.click(".js-bulk-unflagged")
        assert "Approved 5 items." in page.inner_text("main")
        assert page.locator(f"#card-count-{cid}").inner_text() == "5/7 decided"

        # delegate the rest while away
        page.click("text=Away? Delegate your reviews")
        today = datetime.now(UTC).date()
        page.fill("#delegate-to", seed["colleague"])
        page.fill("#delegate-from", today.isoformat())
        page.fill("#delegate-until", (today + timedelta(days=10)).isoformat())
        page.fill("#delegate-reason", "Holiday")
        with page.expect_navigation():
            page.click(".js-delegate")
        assert "Colin Colleague reviews for you until" in page.inner_text("main")
        _fits(page)

        # My team from the (collapsed) menu; axe finds nothing serious
        page.click("button.navbar-toggler")
        page.click("nav >> text=My team")
        page.wait_for_url("**/team")
        assert page.locator("tr.team-row").count() == 3
        _fits(page)
        assert serious_violations(page, "my team") == []
    finally:
        manager.close()

    colleague = _phone(browser)
    try:
        page = colleague.new_page()
        live_server.sign_in(page, seed["colleague"], PASSWORD)
        page.goto(live_server.url_for("/reviews"))
        page.click(".standing-in")
        page.wait_for_url(f"**/reviews/for/{seed['manager_id']}")
        _fits(page)
        assert "Reviews for Maria Manager" in page.inner_text("main")
        assert page.locator(f"#item-{seed['about']}").count() == 0  # their own access stays with the manager
        assert "about your own access" in page.inner_text("main")
        flagged = page.locator(f"#item-{seed['flagged']}")
        flagged.locator(".js-revoke").click()
        flagged.locator("textarea[name=comment]").fill("Moved to Sales; no Finance admin needed")
        flagged.locator("button:has-text('Revoke access')").click()
        page.locator(f"#item-{seed['flagged']}.decided-revoke").wait_for()
        assert "by you as delegate" in page.locator(f"#item-{seed['flagged']}").inner_text()
    finally:
        colleague.close()

    with live_server.session() as s:
        item = s.get(ReviewItem, seed["flagged"])
        assert (item.decision, item.decided_for_identity_id) == ("revoke", seed["manager_id"])
        assert s.get(ReviewItem, seed["about"]).decision is None
        assert s.scalar(select(Delegation.reason)) == "Holiday"
        actions = set(s.scalars(select(AuditEvent.action)))
        assert {"review.decide", "review.undo", "review.delegate"} <= actions
