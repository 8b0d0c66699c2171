"""A manager reviews in a real browser: signs in with a password, approves one item from the keyboard,
approves everything else not flagged in one go, revokes the flagged item with a comment using the keyboard
(htmx, no page reload), and signs off."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import func, select

from attest.reviews.models import ReviewerSignoff, ReviewItem
from attest.trail.models import AuditEvent
from tests.reviews.factories import add_reviewer, review_setup

PASSWORD = "correct horse battery staple"


@pytest.mark.browser
def test_manager_bulk_approves_revokes_one_with_a_comment_and_signs_off(live_server, page):
    with live_server.session() as s:
        setup = review_setup(s, people=3, per_person=2, password=PASSWORD)
        campaign_id, flagged_id = setup.campaign.id, setup.items[0].id
        email = setup.manager_user.email
    page.on("dialog", lambda dialog: dialog.accept())  # the "are you sure?" confirmations

    live_server.sign_in(page, email, PASSWORD)
    page.goto(live_server.url_for("/reviews"))
    assert page.locator("tr.item-row").count() == 6
    assert "0 of 6 decided" in page.inner_text("#campaign-progress")
    assert page.locator(".js-signoff").is_disabled()

    # 1. one approval from the keyboard: j j a (the row is swapped in place, the focus moves on)
    page.keyboard.press("j")
    page.keyboard.press("j")
    second = page.locator("tr.item-row").nth(1)
    second_id = second.get_attribute("id")
    page.keyboard.press("a")
    page.locator(f"#{second_id}.decided-approve").wait_for()
    page.locator("tr.item-row.kb-focus").nth(0).wait_for()
    assert page.locator("tr.item-row").nth(2).get_attribute("class").count("kb-focus") == 1
    assert "1 of 6 decided" in page.inner_text("#campaign-progress")

    # 2. approve everything else without a risk flag (with confirmation)
    with page.expect_navigation():
        page.click(".js-bulk-unflagged")
    assert "Approved 4 items." in page.inner_text("main")
    assert page.locator("tr.item-row.decided-approve").count() == 5

    # 3. revoke the flagged item from the keyboard: j moves to it, r opens the comment box
    page.evaluate("window.__noReload = true")
    page.keyboard.press("j")
    row = page.locator(f"#item-{flagged_id}")
    assert "kb-focus" in (row.get_attribute("class") or "")
    page.keyboard.press("r")
    comment = row.locator("textarea[name=comment]")
    assert comment.evaluate("el => el === document.activeElement")
    comment.type("Moved to Sales in June; no longer needs Finance admin")
    row.locator("button:has-text('Revoke access')").click()
    page.locator(f"#item-{flagged_id}.decided-revoke").wait_for()
    assert page.evaluate("window.__noReload === true")  # htmx swapped the row; the page stayed
    assert "6 of 6 decided" in page.inner_text("#campaign-progress")

    # 4. sign off (enabled now that nothing is open)
    signoff = page.locator(".js-signoff")
    assert signoff.is_enabled()
    with page.expect_navigation():
        signoff.click()
    assert "Signed off" in page.inner_text("main")
    assert page.locator(".js-approve").count() == 0  # decisions are locked after sign-off

    with live_server.session() as s:
        item = s.get(ReviewItem, flagged_id)
        assert item.decision == "revoke" and item.comment.startswith("Moved to Sales")
        decided = s.scalar(select(func.count()).select_from(ReviewItem).where(
            ReviewItem.campaign_id == campaign_id, ReviewItem.decision == "approve", ReviewItem.decided_in_bulk.is_(True)))
        assert decided == 4
        assert s.scalar(select(func.count()).select_from(ReviewerSignoff).where(ReviewerSignoff.campaign_id == campaign_id)) == 1
        actions = [a for (a,) in s.execute(select(AuditEvent.action).where(AuditEvent.campaign_id == campaign_id))]
        assert actions.count("review.decide") == 6 and actions.count("review.sign_off") == 1


@pytest.mark.browser
def test_admin_live_preview_follows_the_form_and_the_yaml(live_server, page):
    from playwright.sync_api import expect

    from tests.factories import make_user

    with live_server.session() as s:
        review_setup(s, people=3, per_person=2)
        make_user(s, "iam.admin@acme.example", roles=["admin"], password=PASSWORD)
    live_server.sign_in(page, "iam.admin@acme.example", PASSWORD)
    page.goto(live_server.url_for("/campaigns/definitions/new"))
    # nothing typed yet: the preview shows what the defaults would review, not "name: is required" in red
    page.locator("#preview .preview-ok").wait_for()
    expect(page.locator("#preview .preview-error")).to_have_count(0)
    page.fill("#f-name", "Finance quarterly")
    page.fill("#f-rnames", "Finance-App-1")
    page.locator("#preview .preview-ok").wait_for()
    expect(page.locator("#preview .stat")).to_have_text(re.compile(r"^3 items"))
    assert "Maria Manager" in page.inner_text("#preview")

    page.goto(live_server.url_for("/campaigns/definitions/new?mode=yaml"))
    page.locator("#preview .preview-ok").wait_for()
    page.fill("#yaml", "name: Finance quarterly\nscope:\n  resource_typs: [group]\n")
    page.locator("#preview .preview-error").wait_for()
    assert "scope.resource_typs (line 3)" in page.inner_text("#preview")


@pytest.mark.browser
def test_reassign_opens_its_form_in_the_row_and_moves_the_item(live_server, page):
    from playwright.sync_api import expect

    with live_server.session() as s:
        setup = review_setup(s, people=2, per_person=1, password=PASSWORD)
        add_reviewer(s, "rita.reviewer@acme.example", "Rita Reviewer")
        item_id, email = setup.items[1].id, setup.manager_user.email
    live_server.sign_in(page, email, PASSWORD)
    page.goto(live_server.url_for("/reviews"))
    row = page.locator(f"#item-{item_id}")
    # the box fetches its form when opened; its fields are required by the browser, as before
    row.locator(".reassign-box > summary").click()
    to = row.locator(".reassign-box input[name=to]")
    expect(to).to_be_visible()
    row.locator(".reassign-box button[type=submit]").click()
    assert to.evaluate("el => !el.validity.valid")
    to.fill("rita.reviewer@acme.example")
    row.locator(".reassign-box input[name=reason]").fill("Rita runs it now")
    row.locator(".reassign-box button[type=submit]").click()
    expect(row).to_contain_text("Reassigned to Rita Reviewer")
    with live_server.session() as s:
        item = s.get(ReviewItem, item_id)
        assert item.reassigned_reason == "Rita runs it now" and item.decision is None
