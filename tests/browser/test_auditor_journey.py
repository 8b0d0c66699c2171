"""The auditor's journey (issue 20, "Done when"): an auditor reads charts and the closed summary, in a
real Chromium, without the CLI.

The auditor opens the home page and a campaign dashboard: each chart is drawn (its canvas holds painted
pixels) from the same numbers as its "Show the numbers" table, then reads a closed campaign's summary
section and its remediation chart. No console error (the CSP included) on the way, and axe finds no
serious or critical violation on these pages with every chart's table open.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from playwright.sync_api import expect

from attest.db import utcnow
from attest.reviews import campaigns
from tests.browser.helpers import axe
from tests.factories import make_user
from tests.reviews.factories import review_setup

pytestmark = pytest.mark.browser

PASSWORD = "correct horse battery staple"
AUDITOR = "audrey.auditor@acme.example"

PAINTED = """(canvas) => {
  const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let painted = 0;
  for (let i = 3; i < data.length; i += 4) { if (data[i] !== 0) { painted += 1; } }
  return painted;
}"""
# what Chart.js drew, per dataset: its label and numbers
DRAWN = """(canvas) => Chart.getChart(canvas).data.datasets.map(d => [d.label, d.data.map(String)])"""


def _seed(live_server) -> dict[str, int | str]:
    """An active campaign (Maria: 6 items, 2 decided today, 1 yesterday) and a closed one (Omar: one revoke,
    the rest kept for no response), read by an auditor who reviews nothing."""
    with live_server.session() as s:
        active = review_setup(s, people=3, per_person=2, campaign_name="Q4 manager review",
                              risky={0: ["privileged"], 3: ["dormant"]})
        now = utcnow()
        for item, decision, at in ((active.items[0], "approve", now - timedelta(days=1)),
                                   (active.items[1], "revoke", now), (active.items[2], "approve", now)):
            item.decision, item.decided_at, item.decided_by_identity_id = decision, at, active.manager.id
        active.campaign.launched_at = now - timedelta(days=3)
        closed = review_setup(s, people=2, per_person=1, campaign_name="Q3 manager review",
                              manager_email="omar.owner@acme.example")
        closed.items[0].decision, closed.items[0].decided_at = "revoke", now
        closed.items[0].decided_by_identity_id = closed.manager.id
        closed.items[0].comment = "left the team"
        s.flush()
        campaigns.close(s, closed.campaign.id, "admin@acme.example")
        make_user(s, AUDITOR, roles=["auditor"], password=PASSWORD)
        s.flush()
        return {"active": active.campaign.id, "closed": closed.campaign.id, "source": active.source.name}


def _drawn_chart(page, name: str) -> list[list[str]]:
    """Waits until chart `name` is drawn, checks that it painted, opens its table and returns its rows."""
    figure = page.locator(f"#chart-{name}")
    canvas = figure.locator("canvas")
    expect(canvas).to_have_attribute("data-chart-state", "drawn")
    assert canvas.evaluate(PAINTED) > 500, f"chart {name} painted nothing"
    figure.locator("summary", has_text="Show the numbers").click()
    table = figure.locator(f"table[data-chart-table='{name}']")
    expect(table).to_be_visible()
    rows = [[c.strip() for c in row.locator("th, td").all_inner_texts()] for row in table.locator("tbody tr").all()]
    drawn = canvas.evaluate(DRAWN)
    headers = [h.strip() for h in table.locator("thead th").all_inner_texts()][1:]
    assert [label for label, _ in drawn] == headers, f"chart {name}: legend and table columns differ"
    assert [[row[i + 1] for row in rows] for i in range(len(headers))] == [data for _, data in drawn], \
        f"chart {name}: drawn numbers and table differ"
    return rows


def _no_serious_violation(page) -> None:
    serious = [f"{v['id']}: {v['help']}: {v['nodes']}" for v in axe(page) if v["impact"] in ("serious", "critical")]
    assert serious == [], serious


def test_an_auditor_reads_the_charts_and_a_closed_campaigns_summary(live_server, page):
    seed = _seed(live_server)
    console: list[str] = []
    page.on("console", lambda msg: console.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: console.append(str(exc)))
    live_server.sign_in(page, AUDITOR, PASSWORD)

    # home: access by source and risk (Maria's 6 grants, one privileged, and Omar's 2)
    page.goto(live_server.url_for("/"))
    rows = {row[0]: row[1:] for row in _drawn_chart(page, "access-by-source")}
    assert rows[seed["source"]] == ["0", "0", "1", "5"]
    _no_serious_violation(page)

    # the active campaign's dashboard: completion over time, progress by reviewer, decisions by risk
    page.goto(live_server.url_for(f"/campaigns/{seed['active']}"))
    completion = _drawn_chart(page, "campaign-completion")
    assert [r[1] for r in completion][-2:] == ["1", "3"] and {r[2] for r in completion} == {"6"}
    assert _drawn_chart(page, "campaign-reviewers") == [["Maria Manager", "3", "3"]]
    risks = {row[0]: row[1:] for row in _drawn_chart(page, "campaign-risks")}
    assert risks["privileged"] == ["1", "0", "0"] and risks["dormant"] == ["0", "0", "1"]
    _no_serious_violation(page)
    # printed, every chart's numbers are open under it
    page.reload()
    page.evaluate("window.dispatchEvent(new Event('beforeprint'))")
    assert page.locator("figure.chart details[open]").count() == 3
    page.evaluate("window.dispatchEvent(new Event('afterprint'))")
    assert page.locator("figure.chart details[open]").count() == 0

    # the closed campaign: its summary as a page (not JSON), and where its remediation stands
    page.goto(live_server.url_for("/campaigns"))
    page.get_by_role("link", name="Q3 manager review").first.click()
    summary = page.locator("section.closed-summary")
    expect(summary.get_by_role("heading", name="Summary at close")).to_be_visible()
    outcomes = {r[0]: r[1] for r in ([c.strip() for c in row.locator("th, td").all_inner_texts()]
                                     for row in summary.locator("table.summary-outcomes tbody tr").all())}
    assert outcomes == {"Kept": "1", "Revoked": "1", "Flagged": "0"}
    assert page.locator("pre").count() == 0
    assert _drawn_chart(page, "remediation-status") == [["pending", "1"]]
    _no_serious_violation(page)
    assert console == [], console
