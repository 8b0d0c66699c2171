"""Helpers shared by the browser tests: the password they seed, axe-core, and an admin's "Sync now" watched
through to its end (the scheduler's `sources:sync-requests` job run in a thread while the page polls).

The fake GitHub these drive is the `github` fixture of tests/browser/conftest.py.
"""

from __future__ import annotations

import re
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

from attest import jobs
from attest.db import utcnow

PASSWORD = "correct horse battery staple"
AXE_SOURCE = (Path(__file__).parent / "vendor" / "axe.min.js").read_text(encoding="utf-8")
RUN_AXE = """async () => {
  const result = await axe.run(document, {resultTypes: ["violations"]});
  return result.violations.map(v => ({
    id: v.id, impact: v.impact, help: v.help,
    nodes: v.nodes.slice(0, 3).map(n => n.target.join(" ") + " :: " + (n.failureSummary || "").replace(/\\s+/g, " ")),
  }));
}"""
SYNC_REQUESTS = next(spec for spec in jobs.FIXED_JOBS if spec.kind == "sync_requests")


def axe(page) -> list[dict]:
    """axe-core's violations on the page as it settles (run through DevTools evaluation: the page's CSP stays on).

    CSS transitions still running (a button the pointer just clicked fades to its hover colour in 0.15 s)
    are waited for first: axe measured one half way, a colour pair the page never rests on."""
    page.evaluate("Promise.all(document.getAnimations().map(a => a.finished.catch(() => null)))")
    page.evaluate(AXE_SOURCE)
    return page.evaluate(RUN_AXE)


def serious_violations(page, label: str = "") -> list[str]:
    """The serious and critical axe violations, one readable line each."""
    prefix = f"{label}: " if label else ""
    return [f"{prefix}{v['id']} [{v['impact']}] {v['help']}: {v['nodes']}" for v in axe(page)
            if v["impact"] in ("serious", "critical")]


def sync_now_with_progress(page, live_server, github) -> Any:
    """On a source's page: click "Sync now", see it queued, run the scheduler's sync-requests job with the fake
    GitHub held at its second org (so the polled panel shows the running phase), let it go, and wait until the
    panel shows the run succeeded and stops polling. Returns the job's outcome."""
    from playwright.sync_api import expect

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
    return outcome["run"]
