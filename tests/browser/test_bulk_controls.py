"""No rubber stamp, in a real browser (issue 14, part 4): with the Flagged filter on, "Approve N matching"
takes none of the flagged items and says so; where a definition allows approving flagged access in
bulk, the browser will not send the form without a comment, and a terminated person's access still
needs a decision of its own."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from attest.reviews.models import ReviewItem
from tests.reviews.factories import review_setup

PASSWORD = "correct horse battery staple"
RISKY = {0: ["privileged"], 1: ["terminated"], 2: ["orphaned"], 3: ["dormant"], 4: [], 5: ["no_mfa"]}


def _decisions(live_server, campaign_id):
    with live_server.session() as s:
        return dict(s.execute(select(ReviewItem.id, ReviewItem.decision).where(ReviewItem.campaign_id == campaign_id)).all())


@pytest.mark.browser
def test_approve_matching_with_the_flagged_filter_approves_nothing_flagged(live_server, page):
    with live_server.session() as s:
        setup = review_setup(s, people=3, per_person=2, password=PASSWORD, risky=RISKY)
        cid, email = setup.campaign.id, setup.manager_user.email
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.accept()))
    live_server.sign_in(page, email, PASSWORD)

    page.goto(live_server.url_for(f"/reviews?campaign={cid}&risk=flagged"))
    assert page.locator("tr.item-row").count() == 5
    # every matching item is flagged: no approve-matching button at all, and the page says why
    assert page.locator(".js-bulk-filtered").count() == 0
    assert "5 flagged items" in page.inner_text(".js-held-back")
    # a forged post of the same selection changes nothing either
    token = page.locator("input[name=csrf_token]").first.get_attribute("value")
    response = page.request.post(live_server.url_for(f"/reviews/campaigns/{cid}/bulk"), form={
        "csrf_token": token, "scope": "filtered", "bulk_decision": "approve", "risk": "flagged"})
    assert response.ok
    assert {d for d in _decisions(live_server, cid).values()} == {None}

    # with a text filter matching flagged and unflagged items, only the unflagged one is approved
    page.goto(live_server.url_for(f"/reviews?campaign={cid}&q=carol"))
    button = page.locator(".js-bulk-filtered")
    assert button.inner_text().strip() == "Approve 1 matching"
    with page.expect_navigation():
        button.click()
    assert dialogs and "stay for you to decide one by one" in dialogs[-1]
    assert "Approved 1 item." in page.inner_text("main")
    stored = _decisions(live_server, cid)
    assert [stored[i.id] for i in setup.items] == [None, None, None, None, "approve", None]


@pytest.mark.browser
def test_bulk_approval_of_flagged_access_needs_a_comment_and_never_takes_a_leavers(live_server, page):
    with live_server.session() as s:
        setup = review_setup(s, people=2, per_person=2, password=PASSWORD, risky={0: ["privileged"], 1: ["terminated"]},
                             spec={"rules": {"bulk_approve_flagged": True}})
        cid, email, ids = setup.campaign.id, setup.manager_user.email, [i.id for i in setup.items]
    page.on("dialog", lambda d: d.accept())
    live_server.sign_in(page, email, PASSWORD)
    page.goto(live_server.url_for(f"/reviews?campaign={cid}&risk=flagged"))
    form_button = page.locator(".js-bulk-flagged")
    form_button.click()  # no comment: the browser refuses to send the form
    assert page.locator("#bulk-flagged-comment").evaluate("el => !el.validity.valid")
    assert set(_decisions(live_server, cid).values()) == {None}
    page.locator("#bulk-flagged-comment").type("Break-glass admin, confirmed with the CISO", delay=20)
    with page.expect_navigation():
        form_button.click()
    text = page.inner_text("main")
    assert "Approved 1 item." in text and "approve only one by one, with a comment" in text
    stored = _decisions(live_server, cid)
    assert (stored[ids[0]], stored[ids[1]]) == ("approve", None)
    with live_server.session() as s:
        assert s.get(ReviewItem, ids[0]).comment == "Break-glass admin, confirmed with the CISO"


@pytest.mark.browser
def test_a_leavers_access_is_approved_from_the_inbox_with_a_comment_typed_after_a(live_server, page):
    with live_server.session() as s:
        setup = review_setup(s, people=1, per_person=2, password=PASSWORD, risky={0: ["terminated"], 1: []})
        cid, email, ids = setup.campaign.id, setup.manager_user.email, [i.id for i in setup.items]
    live_server.sign_in(page, email, PASSWORD)
    page.goto(live_server.url_for(f"/reviews?campaign={cid}"))
    page.keyboard.press("j")
    row = page.locator(f"#item-{ids[0]}")
    assert "kb-focus" in (row.get_attribute("class") or "")
    page.keyboard.press("a")  # opens the approve comment box: nothing is decided yet
    area = row.locator(f"#approve-comment-{ids[0]}")
    assert area.evaluate("el => el === document.activeElement")
    page.keyboard.type("Contractor extended to June, HR ticket 4711", delay=45)
    page.keyboard.press("Control+Enter")
    page.locator(f"#item-{ids[0]}.decided-approve").wait_for()
    with live_server.session() as s:
        item = s.get(ReviewItem, ids[0])
        assert (item.decision, item.comment) == ("approve", "Contractor extended to June, HR ticket 4711")
        assert s.get(ReviewItem, ids[1]).decision is None
