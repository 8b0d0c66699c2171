"""The IAM admin's journey (issue 20, "Done when"), one continuous walk in a real Chromium without the CLI.

The admin adds the sandbox GitHub (the fake served over loopback, two orgs) as a new source, syncs it while
watching the live progress, edits its settings, creates a campaign definition in the form scoped to that
source, sees its live preview (who would review what), launches it, opens the campaign's items from a
reviewer's count on the dashboard, narrows them by risk, and exports the filtered items as CSV: the downloaded
rows are exactly the rows the page lists (across its pages), and nothing else.

The directory (people and managers, as the IdP would have loaded it) is seeded: two managers, each with six
people of each GitHub org, whose work e-mails are the fake's SAML NameIDs, so the sync links their accounts.
"""

from __future__ import annotations

import csv
import io
import re

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from attest.connectors.sandbox.github_fake import SANDBOX_TOKEN, demo_email
from attest.entitlements.models import Account, Source
from attest.reviews.models import Campaign, ReviewItem
from attest.trail.models import AuditEvent
from tests.browser.helpers import PASSWORD, serious_violations, sync_now_with_progress
from tests.factories import make_identity, make_user

pytestmark = pytest.mark.browser

ADMIN = "iam.admin@acme.example"
MANAGERS = {"Maria Manager": "maria.manager@demo.example", "Omar Owner": "omar.owner@demo.example"}


def _seed(live_server) -> None:
    """The admin (a person too: the fallback reviewer), and a directory: Maria manages people 0-5 (acme) and 12-17
    (beta), Omar 6-11 and 18-23."""
    with live_server.session() as s:
        make_user(s, ADMIN, ["admin"], identity=make_identity(s, ADMIN, "Ivy Admin"), password=PASSWORD)
        maria, omar = (make_identity(s, email, name) for name, email in MANAGERS.items())
        for i in range(24):
            make_identity(s, demo_email(i), f"Person {i}", manager=maria if i % 12 < 6 else omar)


def _rows_on_page(page) -> list[int]:
    """The item ids listed by the items page, following its "Next page" links to the end."""
    ids: list[int] = []
    while True:
        ids += [int(row.get_attribute("id").removeprefix("item-"))
                for row in page.locator("table.campaign-items tbody tr[id^='item-']").all()]
        following = page.locator("a.js-next-page")
        if not following.count():
            return ids
        with page.expect_navigation():
            following.click()


def test_iam_admin_from_a_new_source_to_an_exported_filtered_item_list(live_server, page, github):
    _seed(live_server)
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    live_server.sign_in(page, ADMIN, PASSWORD)

    # 1. add the sandbox GitHub as a new source, from the Sources page
    page.locator("#nav").get_by_role("link", name="Sources", exact=True).click()
    page.get_by_role("link", name="Add a source").click()
    page.get_by_role("link", name=re.compile("^GitHub")).click()
    page.locator("#name").fill("github-sandbox")
    page.locator("#setting-orgs").fill("acme, beta")
    page.locator("#setting-api_url").fill(github.url)
    page.locator("#secret-token").fill(SANDBOX_TOKEN)
    with page.expect_navigation():
        page.get_by_role("button", name="Add source").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("github-sandbox")
    source_url = page.url

    # 2. sync it now and watch the progress until the run has succeeded
    sync_now_with_progress(page, live_server, github)
    problems = serious_violations(page, "source after its sync")
    with live_server.session() as s:
        source = s.scalar(select(Source).where(Source.name == "github-sandbox"))
        linked = s.scalar(select(Account.id).where(Account.source_id == source.id, Account.identity_id.is_not(None))
                          .limit(1))
        assert linked is not None, "the sync linked no account to the directory"

    # 3. edit its settings
    page.locator("#setting-concurrency").fill("3")
    with page.expect_navigation():
        page.get_by_role("button", name="Save settings").click()
    expect(page.locator("main")).to_contain_text("Settings saved.")
    expect(page.locator("#setting-concurrency")).to_have_value("3")
    assert page.url == source_url

    # 4. a campaign definition in the form, scoped to that source, with its live preview
    page.locator("#nav").get_by_role("link", name="Campaigns", exact=True).click()
    page.get_by_role("link", name=re.compile("New definition")).first.click()
    expect(page.locator("#f-name")).to_be_visible()
    page.locator("#f-name").fill("GitHub access review")
    page.locator("#f-sources").select_option("github-sandbox")
    page.locator("#f-fallback").fill(ADMIN)  # the bot, contractors and unlinked accounts have no manager
    page.locator("#f-dur").fill("10")
    preview = page.locator("#preview .preview-ok")
    expect(preview).to_be_visible()
    expect(preview.locator("table")).to_contain_text("Maria Manager")
    expect(preview.locator("table")).to_contain_text("Omar Owner")
    expect(preview.locator("table")).to_contain_text("Ivy Admin")
    planned = {name: int(n.replace(",", "")) for name, n in (
        (row.locator("td").first.inner_text().splitlines()[0].strip(), row.locator("td").last.inner_text())
        for row in preview.locator("tbody tr").all())}
    assert planned["Maria Manager"] > 0 and planned["Omar Owner"] > 0
    problems += serious_violations(page, "definition form with its preview")
    with page.expect_navigation():
        page.get_by_role("button", name="Save", exact=True).click()
    expect(page.locator("main")).to_contain_text("Saved the definition GitHub access review")

    # 5. launch it (the page asks first)
    page.once("dialog", lambda dialog: dialog.accept())
    with page.expect_navigation():
        page.get_by_role("button", name=re.compile("Launch a campaign")).click()
    expect(page.locator("main")).to_contain_text("Launched GitHub access review")
    expect(page.get_by_role("heading", level=1)).to_contain_text("GitHub access review")
    with live_server.session() as s:
        campaign = s.scalar(select(Campaign).where(Campaign.name.like("GitHub access review%")))
        campaign_id = campaign.id
        assert {i.source_name for i in s.scalars(select(ReviewItem).where(ReviewItem.campaign_id == campaign_id))} \
            == {"github-sandbox"}  # scoped to the new source
    # the preview's plan is what was launched
    reviewers = page.locator("table.reviewer-table tbody tr")
    for name, n in planned.items():
        expect(reviewers.filter(has_text=name)).to_contain_text(f"0/{n}")
    problems += serious_violations(page, "new campaign's dashboard")

    # 6. the items page: from a risk badge on the dashboard (as many rows as the badge says), then from Maria's
    # count, narrowed by a risk signal
    dashboard = page.url
    badge = page.locator("a.risk-badge").first
    label, count = badge.inner_text().rsplit(":", 1)
    with page.expect_navigation():
        badge.click()
    expect(page.locator("#f-risk option:checked")).to_have_text(label.strip())
    assert len(_rows_on_page(page)) == int(count.replace(",", ""))
    page.goto(dashboard)
    reviewers = page.locator("table.reviewer-table tbody tr")
    with page.expect_navigation():
        reviewers.filter(has_text="Maria Manager").get_by_role("link", name="Maria Manager").click()
    expect(page.locator("#f-reviewer")).to_have_value(re.compile(r"^\d+$"))
    expect(page.locator("#f-reviewer option:checked")).to_have_text("Maria Manager")
    maria_ids = _rows_on_page(page)
    assert len(maria_ids) == planned["Maria Manager"]
    offered = [value for value in page.locator("#f-risk option").evaluate_all("opts => opts.map(o => o.value)")
               if value not in ("", "flagged", "unflagged")]
    with live_server.session() as s:
        risks_of = dict(s.execute(select(ReviewItem.id, ReviewItem.risks).where(ReviewItem.id.in_(maria_ids))).all())
    # a risk signal some of Maria's items carry and others do not (e.g. privileged: admin of an org or a repo)
    risk = next((r for r in offered if 0 < sum(r in (v or []) for v in risks_of.values()) < len(maria_ids)), None)
    assert risk, f"no risk signal splits Maria's items: {offered}"
    page.locator("#f-risk").select_option(risk)
    with page.expect_navigation():
        page.get_by_role("button", name="Filter").click()
    expect(page.locator("#f-risk")).to_have_value(risk)
    expect(page.locator("#f-reviewer option:checked")).to_have_text("Maria Manager")  # both filters hold
    filtered = _rows_on_page(page)
    assert sorted(filtered) == sorted(i for i, v in risks_of.items() if risk in (v or []))

    # 7. export exactly these rows as CSV
    page.goto(page.url.split("&after=")[0].split("?after=")[0])  # back on the first page, filters kept
    expect(page.locator("#f-risk")).to_have_value(risk)
    link = page.locator("a.js-items-csv")
    expect(link).to_contain_text("Export these items")
    with page.expect_download() as info:
        link.click()
    download = info.value
    assert download.suggested_filename == f"campaign-{campaign_id}-items-filtered.csv"
    exported = list(csv.DictReader(io.StringIO(download.path().read_text(encoding="utf-8-sig"))))
    assert sorted(int(r["item_id"]) for r in exported) == sorted(filtered)
    assert {r["reviewer"] for r in exported} == {"Maria Manager"}
    assert all(risk in r["risks"].split("; ") for r in exported)
    with live_server.session() as s:  # the export is in the audit trail, with the filters it applied
        events = s.scalars(select(AuditEvent).where(AuditEvent.action == "campaign.items_exported",
                                                    AuditEvent.campaign_id == campaign_id)).all()
        assert [(e.actor, e.after["filters"]["risk"], "reviewer" in e.after["filters"]) for e in events] \
            == [(ADMIN, risk, True)]

    problems += serious_violations(page, "filtered items")
    assert problems == [], "\n".join(problems)
    assert errors == [], errors
