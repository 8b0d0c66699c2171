"""Keyboard, screen reader and phone (issue 20, part 5), checked in a real Chromium.

- axe-core (vendored for tests only: tests/browser/vendor, MPL-2.0) finds no `serious` or `critical`
  violation on the main pages (colour contrast included): home and the campaign dashboard with their charts
  drawn and their "Show the numbers" tables open, inbox, items, person, sources, the add-source form, audit,
  My team, the API tokens page and more; and no page logs a Content Security Policy error;
- the first Tab lands on "Skip to content", which moves the focus to `<main id="content">`;
- each row's decision buttons are named with the item ("Approve Alice Archer: Finance-App-0 admin"), not
  just "Approve" 50 times a page;
- at 390 px the inbox does not scroll sideways and every decision button is inside the viewport.

axe runs through `page.evaluate` (DevTools evaluation, which the page's CSP does not govern), so the app's
CSP stays on and its violations are seen exactly as a user's browser would report them.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from attest.entitlements.models import SyncRun
from attest.reviews.models import Remediation
from tests.browser.helpers import PASSWORD, serious_violations
from tests.reviews.factories import review_setup

pytestmark = pytest.mark.browser

# the charts each page must show drawn (they are checked with their tables of numbers open)
CHARTS = {"home": ["access-by-source"],
          "campaign dashboard": ["campaign-completion", "campaign-reviewers", "campaign-risks"]}


def _seed(live_server) -> dict[str, int | str]:
    """A manager (also an admin, so one sign-in reaches every page) with three reports' items, one revoked
    item with a manual remediation waiting (the remediation page's note box), and a failed sync run."""
    with live_server.session() as s:
        setup = review_setup(s, people=3, per_person=2, password=PASSWORD, risky={0: ["privileged"], 3: ["dormant"]})
        setup.manager_user.local_roles = ["admin"]
        revoked = setup.items[1]
        revoked.decision = "revoke"
        s.add(Remediation(campaign_id=setup.campaign.id, item_id=revoked.id, grant_id=revoked.grant_id,
                          source_id=revoked.source_id, mode="manual", status="pending"))
        # a failed sync run: the sources page shows its error (cut to a width that once came from an inline style)
        s.add(SyncRun(source_id=setup.source.id, status="failed", finished_at=datetime.now(UTC),
                      error="401 Unauthorized: update the source's secret " + "and try again " * 20))
        s.flush()
        return {"email": setup.manager_user.email, "campaign": setup.campaign.id, "person": setup.people[0].id,
                "source": setup.source.id}


def _open_charts(page, names: list[str]) -> None:
    """Waits until each chart is drawn and opens its "Show the numbers" table."""
    from playwright.sync_api import expect

    for name in names:
        figure = page.locator(f"#chart-{name}")
        expect(figure.locator("canvas")).to_have_attribute("data-chart-state", "drawn")
        figure.locator("summary", has_text="Show the numbers").click()
        expect(figure.locator(f"table[data-chart-table='{name}']")).to_be_visible()


def test_main_pages_have_no_serious_axe_violation_and_no_csp_error(live_server, page):
    seed = _seed(live_server)
    console: list[str] = []
    page.on("console", lambda msg: console.append(msg.text) if msg.type in ("error", "warning") else None)
    live_server.sign_in(page, seed["email"], PASSWORD)
    pages = {
        "home": "/",
        "inbox": f"/reviews?campaign={seed['campaign']}",
        "campaign dashboard": f"/campaigns/{seed['campaign']}",
        "campaign items": f"/campaigns/{seed['campaign']}/items",
        "person": f"/identities/{seed['person']}",
        "sources": "/sources",
        "source": f"/sources/{seed['source']}",
        "audit log": "/audit",
        "remediations": "/remediations",
        "evidence": "/evidence",
        "access history": "/history",
        "flagged items": "/flagged",
        "add a source": "/sources/new",
        "add-source form": "/sources/new?kind=github",
        "my team": "/team",
        "team member": f"/team/{seed['person']}",
        "API tokens": "/tokens",
        "delegation": "/reviews/delegation",
        "campaigns": "/campaigns",
        "new definition (form, live preview)": "/campaigns/definitions/new",
        "new definition (YAML)": "/campaigns/definitions/new?mode=yaml",
        "people": "/identities",
        "resources": "/resources",
        "users": "/admin/users",
    }
    problems = []
    for name, path in pages.items():
        response = page.goto(live_server.url_for(path))
        assert response is not None and response.status == 200, (name, path, response and response.status)
        _open_charts(page, CHARTS.get(name, []))
        if path.startswith("/campaigns/definitions/"):  # checked with its live preview shown
            page.locator("#preview .preview-ok, #preview .preview-error").wait_for()
        problems += serious_violations(page, f"{name} ({path})")
    assert problems == [], "\n".join(problems)
    # the remediation note box keeps its width (it came from an inline style the CSP blocked)
    page.goto(live_server.url_for("/remediations"))
    assert page.locator("input[name=note]").bounding_box()["width"] >= 100
    page.goto(live_server.url_for("/sources"))
    assert page.locator(".run-error").count() == 1
    csp = [text for text in console if "Content Security Policy" in text]
    assert csp == [], csp


def test_skip_link_is_the_first_tab_stop_and_moves_focus_to_the_content(live_server, page):
    seed = _seed(live_server)
    live_server.sign_in(page, seed["email"], PASSWORD)
    page.goto(live_server.url_for(f"/reviews?campaign={seed['campaign']}"))
    page.keyboard.press("Tab")
    focused = page.evaluate("() => [document.activeElement.textContent.trim(), document.activeElement.getAttribute('href')]")
    assert focused == ["Skip to content", "#content"]
    assert page.locator(".skip-link").bounding_box()["y"] >= 0  # shown when focused
    page.keyboard.press("Enter")
    page.wait_for_function("() => document.activeElement && document.activeElement.id === 'content'")
    assert page.evaluate("() => document.activeElement.tagName") == "MAIN"


def test_row_buttons_are_named_with_the_item(live_server, page):
    from playwright.sync_api import expect

    seed = _seed(live_server)
    live_server.sign_in(page, seed["email"], PASSWORD)
    page.goto(live_server.url_for(f"/reviews?campaign={seed['campaign']}"))
    row = page.locator("tr.item-row", has_text="Finance-App-0").first
    # Approve and Abstain are buttons; Revoke and Reassign open a <details> (a summary, announced as a button)
    for selector, verb in ((".js-approve", "Approve"), (".js-revoke", "Revoke"),
                           ("button[title^='I cannot judge']", "Abstain"), (".reassign-box > summary", "Reassign")):
        expect(row.locator(selector)).to_have_accessible_name(f"{verb} Alice Archer: Finance-App-0 admin")
    bob = page.locator("tr.item-row .js-approve[aria-label^='Approve Bob Baker: ']")
    assert bob.count() == 2
    expect(bob.first).to_have_accessible_name(re.compile(r"^Approve Bob Baker: Finance-App-\d member$"))
    # no row button is named by its verb alone
    assert page.get_by_role("button", name="Approve", exact=True).count() == 0
    assert page.get_by_role("button", name="Abstain", exact=True).count() == 0


def test_inbox_fits_a_390px_phone(live_server, browser):
    context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2,
                                  is_mobile=True, has_touch=True)
    context.set_default_timeout(10_000)
    try:
        page = context.new_page()
        seed = _seed(live_server)
        live_server.sign_in(page, seed["email"], PASSWORD)
        page.goto(live_server.url_for(f"/reviews?campaign={seed['campaign']}"))
        assert page.evaluate("() => document.documentElement.scrollWidth") <= 390
        rights = page.evaluate(
            "() => [...document.querySelectorAll('td.decision-cell button, td.decision-cell summary')]"
            ".map(b => b.getBoundingClientRect().right)")
        assert len(rights) >= 4 * 5  # approve, revoke, abstain, reassign on each undecided row
        assert max(rights) <= 390, max(rights)
    finally:
        context.close()
