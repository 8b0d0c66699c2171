"""An IAM admin manages a source in a real Chromium without the command line (issue 20, part 1, "Done when"):
adds the sandbox GitHub (the fake served over loopback) as a new source through the generated form, tests its
connection, syncs it with live progress (the scheduler's `sources:sync-requests` job runs the request, held
mid-read so the page shows the running phase; the panel stops polling when the run ends and the runs table
reloads), and edits its settings. The add-source page, empty and with errors, has no serious axe violation.
"""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from attest.connectors.sandbox.github_fake import SANDBOX_TOKEN
from attest.entitlements.models import Source, SyncRun
from tests.browser.helpers import PASSWORD, axe, sync_now_with_progress
from tests.factories import make_user

pytestmark = pytest.mark.browser

ADMIN = "iam.admin@acme.example"


@pytest.fixture
def admin(live_server) -> str:
    with live_server.session() as s:
        make_user(s, ADMIN, ["admin"], password=PASSWORD)
    return ADMIN


def test_admin_adds_tests_syncs_with_progress_and_edits_the_sandbox_github(live_server, page, admin, github):
    from playwright.sync_api import expect

    live_server.sign_in(page, admin, PASSWORD)
    page.goto(live_server.url_for("/sources"))
    page.get_by_role("link", name="Add a source").click()
    page.get_by_role("link", name=re.compile("^GitHub")).click()
    expect(page.locator("#source-add")).to_be_visible()
    assert page.locator(".invalid-feedback").count() == 0  # no error before input

    # a first try with a mistake: the error is next to its field, nothing is added
    page.locator("#name").fill("gh-sandbox")
    page.locator("#setting-orgs").fill("acme, beta")
    page.locator("#setting-api_url").fill(github.url)
    page.locator("#setting-concurrency").fill("lots")
    page.locator("#secret-token").fill(SANDBOX_TOKEN)
    page.get_by_role("button", name="Add source").click()
    expect(page.locator("#setting-concurrency-error")).to_have_text(re.compile("must be a whole number"))
    expect(page.locator("#setting-orgs")).to_have_value("acme, beta")
    expect(page.locator("#secret-token")).to_have_value("")  # a secret is never sent back
    with live_server.session() as s:
        assert s.scalar(select(Source).where(Source.name == "gh-sandbox")) is None

    page.locator("#setting-concurrency").fill("2")
    page.locator("#secret-token").fill(SANDBOX_TOKEN)
    with page.expect_navigation():
        page.get_by_role("button", name="Add source").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("gh-sandbox")
    expect(page.locator("main")).to_contain_text("Test the connection, then sync it.")
    assert SANDBOX_TOKEN not in page.content()

    # test the connection (the connector's own check, against the fake over loopback)
    page.get_by_role("button", name="Test connection").click()
    expect(page.locator("#source-test")).to_contain_text("Connection ok")

    # sync now: queued for the scheduler, then running with its phase, then done
    sync_now_with_progress(page, live_server, github)
    with live_server.session() as s:
        run = s.scalar(select(SyncRun).join(Source, SyncRun.source_id == Source.id).where(Source.name == "gh-sandbox"))
        run_id, phases = run.id, list((run.stats or {}).get("phases") or {})
    row = page.locator(f"#run-{run_id}")  # the runs table reloaded itself when the run ended
    expect(row).to_contain_text("succeeded")
    expect(row).to_contain_text("sync now by " + ADMIN)
    for phase in phases:  # the per-phase timings, when the sync records them
        expect(row.locator(".run-phases")).to_contain_text(phase)

    # edit its settings
    page.locator("#setting-skip_archived").select_option("true")
    page.locator("#setting-concurrency").fill("3")
    with page.expect_navigation():
        page.get_by_role("button", name="Save settings").click()
    expect(page.locator("main")).to_contain_text("Settings saved.")
    expect(page.locator("#setting-concurrency")).to_have_value("3")
    with live_server.session() as s:
        source = s.scalar(select(Source).where(Source.name == "gh-sandbox"))
        assert source.settings["concurrency"] == 3 and source.settings["skip_archived"] is True
        assert source.settings["orgs"] == ["acme", "beta"]


def test_the_add_source_page_has_no_serious_axe_violation(live_server, page, admin):
    console: list[str] = []
    page.on("console", lambda msg: console.append(msg.text) if msg.type in ("error", "warning") else None)
    live_server.sign_in(page, admin, PASSWORD)
    problems = []
    for label, path in (("kinds", "/sources/new"), ("github form", "/sources/new?kind=github"),
                        ("aws form", "/sources/new?kind=aws")):
        page.goto(live_server.url_for(path))
        problems += [f"{label}: {v['id']} [{v['impact']}] {v['help']}: {v['nodes']}" for v in axe(page)
                     if v["impact"] in ("serious", "critical")]
    # and with errors shown next to their fields
    page.goto(live_server.url_for("/sources/new?kind=github"))
    page.locator("#name").fill("bad name!")
    page.locator("#setting-concurrency").fill("lots")
    page.get_by_role("button", name="Add source").click()
    page.locator("#name-error").wait_for()
    problems += [f"with errors: {v['id']} [{v['impact']}] {v['help']}: {v['nodes']}" for v in axe(page)
                 if v["impact"] in ("serious", "critical")]
    assert problems == [], "\n".join(problems)
    assert [t for t in console if "Content Security Policy" in t] == []
