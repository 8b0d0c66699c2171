"""An IAM admin manages a source in a real Chromium without the command line (issue 20, part 1, "Done when"):
adds the sandbox GitHub (the fake served over loopback) as a new source through the generated form, tests its
connection, syncs it with live progress (the scheduler's `sources:sync-requests` job runs the request, held
mid-read so the page shows the running phase; the panel stops polling when the run ends and the runs table
reloads), and edits its settings. The add-source page, empty and with errors, has no serious axe violation.
"""

from __future__ import annotations

import re
import threading
from datetime import timedelta

import pytest
from flask import request
from sqlalchemy import select

from attest import jobs
from attest.connectors.sandbox.github_fake import SANDBOX_TOKEN, create_app
from attest.connectors.sandbox.server import serve_in_thread
from attest.db import utcnow
from attest.entitlements.models import Source, SyncRun
from tests.browser.test_accessibility import _axe
from tests.factories import make_user

pytestmark = pytest.mark.browser

PASSWORD = "correct horse battery staple"
ADMIN = "iam.admin@acme.example"
SYNC_REQUESTS = next(spec for spec in jobs.FIXED_JOBS if spec.kind == "sync_requests")


@pytest.fixture
def admin(live_server) -> str:
    with live_server.session() as s:
        make_user(s, ADMIN, ["admin"], password=PASSWORD)
    return ADMIN


@pytest.fixture
def github():
    """The fake GitHub with two orgs; `hold` (armed by the test) stops the sync at its first read of the second
    org until `go` is set, so the page can be seen while the run is going (an Event, not a sleep)."""
    app = create_app(orgs=("acme", "beta"), members=12, teams=3, repos=5, token=SANDBOX_TOKEN)
    hold, held, go = threading.Event(), threading.Event(), threading.Event()

    @app.before_request
    def gate():
        if hold.is_set() and "/beta" in request.path and not go.is_set():
            held.set()
            go.wait(30)

    with serve_in_thread(app) as server:
        app.url, app.hold, app.held, app.go = server.url, hold, held, go
        yield app
        go.set()


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
    page.get_by_role("button", name="Sync now").click()
    expect(page.locator("#source-sync")).to_have_attribute("data-queued", "yes")
    github.hold.set()
    ctx = jobs.JobContext(live_server.factory, live_server.settings, holder="browser-test-scheduler")
    outcome: dict = {}
    worker = threading.Thread(target=lambda: outcome.setdefault(
        "run", jobs.run_job(ctx, SYNC_REQUESTS, now=utcnow() + timedelta(seconds=30))), daemon=True)
    worker.start()
    try:
        assert github.held.wait(30), "the sync never reached the second org"
        panel = page.locator("#source-sync")
        expect(panel).to_have_attribute("data-running", "yes")  # the polled panel found the running run
        expect(panel).to_contain_text(re.compile(r"running run #\d+ started"))
        # the sync engine reports records every 5,000 grants and at each phase: this small org shows the phase
        expect(panel).to_contain_text(re.compile(r"Phase: \w+.* running for \d+ s"))
    finally:
        github.go.set()
        worker.join(60)
    assert outcome["run"].status == "succeeded", outcome["run"].error
    panel = page.locator("#source-sync")
    expect(panel).to_have_attribute("data-running", "no", timeout=15_000)
    expect(panel).to_contain_text("succeeded")
    assert panel.get_attribute("hx-trigger") is None  # polling stopped with the run
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
        problems += [f"{label}: {v['id']} [{v['impact']}] {v['help']}: {v['nodes']}" for v in _axe(page)
                     if v["impact"] in ("serious", "critical")]
    # and with errors shown next to their fields
    page.goto(live_server.url_for("/sources/new?kind=github"))
    page.locator("#name").fill("bad name!")
    page.locator("#setting-concurrency").fill("lots")
    page.get_by_role("button", name="Add source").click()
    page.locator("#name-error").wait_for()
    problems += [f"with errors: {v['id']} [{v['impact']}] {v['help']}: {v['nodes']}" for v in _axe(page)
                 if v["impact"] in ("serious", "critical")]
    assert problems == [], "\n".join(problems)
    assert [t for t in console if "Content Security Policy" in t] == []
