"""Charts (issue 20, part 3): each chart's JSON equals the seeded data and the "Show the numbers" table of
the page that draws it, and only who may read the page may read the chart (a manager: 403)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser

import pytest

from attest import charts
from attest.entitlements.models import Account, SyncRun
from attest.reviews.models import Campaign, Remediation
from tests.factories import Clock, login_as, make_identity, make_source, make_user
from tests.reviews.factories import make_campaign, make_grant, make_item

LAUNCH = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)


class _Tables(HTMLParser):
    """Rows of each <table data-chart-table=NAME>: [[row label, cell, ...], ...] (the header row first)."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.current: str | None = None
        self.row: list[str] | None = None
        self.cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table" and "data-chart-table" in attrs:
            self.current = attrs["data-chart-table"]
            self.tables[self.current] = []
        elif self.current and tag == "tr":
            self.row = []
        elif self.current and tag in ("td", "th") and self.row is not None:
            self.cell = []

    def handle_endtag(self, tag):
        if self.current and tag in ("td", "th") and self.cell is not None and self.row is not None:
            self.row.append("".join(self.cell).strip())
            self.cell = None
        elif self.current and tag == "tr" and self.row is not None:
            self.tables[self.current].append(self.row)
            self.row = None
        elif tag == "table":
            self.current = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell.append(data)


def page_table(html: str, name: str) -> list[list[str]]:
    parser = _Tables()
    parser.feed(html)
    assert name in parser.tables, f"no table of chart {name} on the page"
    return parser.tables[name]


def as_table(chart: dict) -> list[list[str]]:
    """The JSON as the page's table would show it (header row, then one row per label)."""
    def fmt(v):
        return "" if v is None else str(v)
    return [[s["label"] for s in chart["series"]]] + [
        [label, *(fmt(s["data"][i]) for s in chart["series"])] for i, label in enumerate(chart["labels"])]


@dataclass
class Seeded:
    campaign: Campaign
    other: Campaign
    admin: object
    auditor: object
    manager: object


@pytest.fixture
def seeded(session) -> Seeded:
    """A campaign launched on 1 Nov 2026: Ada reviews 3 items (approved on 1 Nov, revoked on 3 Nov, open),
    Bob 2 (approved on 3 Nov, open), one item has no reviewer; two remediations, another campaign's one."""
    okta = make_source(session, "okta-charts")
    github = make_source(session, "github-charts")
    ada = make_identity(session, "ada.reviewer@acme.example", name="Ada Reviewer")
    bob = make_identity(session, "bob.reviewer@acme.example", name="Bob Reviewer")
    campaign = make_campaign(session, "Charted review")
    campaign.launched_at = LAUNCH
    other = make_campaign(session, "Other review", status="closed")
    plan = [  # reviewer, risks, decision, day decided (days after launch)
        (ada, ["privileged"], "approve", 0), (ada, ["privileged", "dormant"], "revoke", 2), (ada, [], None, None),
        (bob, ["dormant"], "approve", 2), (bob, [], None, None), (None, [], None, None),
    ]
    items = []
    for n, (reviewer, risks, decision, day) in enumerate(plan):
        person = make_identity(session, f"person{n}@acme.example", name=f"Person {n}")
        account = Account(source_id=okta.id, external_id=f"acc{n}", login=f"login{n}", email=person.email,
                          identity_id=person.id, kind="human")
        session.add(account)
        session.flush()
        grant, resource, ent = make_grant(session, okta, account, f"App {n}", privileged="privileged" in risks)
        item = make_item(session, campaign, reviewer, person, account, grant, resource, ent, okta, risks=risks)
        if decision:
            item.decision, item.decided_at = decision, LAUNCH + timedelta(days=day, hours=3)
            item.decided_by_identity_id = reviewer.id
        items.append(item)
    # access on github: one grant of a person who left, one of an orphaned account
    left = make_identity(session, "left@acme.example", name="Left Person", status="terminated")
    for n, identity in ((0, left), (1, None)):
        account = Account(source_id=github.id, external_id=f"gh{n}", login=f"gh{n}", kind="human",
                          identity_id=identity.id if identity else None)
        session.add(account)
        session.flush()
        make_grant(session, github, account, f"repo{n}")
    for status, item in (("pending", items[1]), ("verified", items[3])):
        session.add(Remediation(item_id=item.id, campaign_id=campaign.id, source_id=okta.id, grant_id=item.grant_id,
                                mode="manual", status=status))
    session.add(Remediation(item_id=items[0].id, campaign_id=other.id, source_id=okta.id, grant_id=items[0].grant_id,
                            mode="manual", status="failed"))
    # okta's runs: 10 s, 30 s, 20 s (newest), and one still running
    for n, seconds in enumerate((10, 30, 20)):
        start = LAUNCH + timedelta(hours=n)
        session.add(SyncRun(source_id=okta.id, status="succeeded", started_at=start,
                            finished_at=start + timedelta(seconds=seconds)))
    session.add(SyncRun(source_id=okta.id, status="running", started_at=LAUNCH + timedelta(hours=5)))
    admin = make_user(session, "admin@acme.example", roles=["admin"])
    auditor = make_user(session, "auditor@acme.example", roles=["auditor"])
    manager = make_user(session, ada.email, identity=ada)
    session.commit()
    return Seeded(campaign, other, admin, auditor, manager)


def _json(app, client, user, url):
    login_as(app, client, user)
    response = client.get(url)
    assert response.status_code == 200, (url, response.status_code)
    assert response.mimetype == "application/json"
    return response.get_json()


def test_completion_over_time_counts_decisions_per_day(app, client, seeded):
    cid = seeded.campaign.id
    chart = _json(app, client, seeded.auditor, f"/charts/campaign-completion.json?campaign={cid}")
    decided = dict(zip(chart["labels"], chart["series"][0]["data"], strict=True))
    assert chart["labels"][0] == "2026-11-01"
    assert (decided["2026-11-01"], decided["2026-11-02"], decided["2026-11-03"]) == (1, 1, 3)
    assert chart["series"][0]["data"][-1] == 3
    assert set(chart["series"][1]["data"]) == {6}
    page = client.get(f"/campaigns/{cid}").get_data(as_text=True)
    table = page_table(page, "campaign-completion")
    assert table[0] == ["Day (UTC)", "Decided (cumulative)", "Items in the campaign"]
    assert table[1:] == as_table(chart)[1:]


def test_completion_days_run_from_launch_to_the_given_day(session, seeded):
    clock = Clock(datetime(2026, 11, 5, 12, 0, tzinfo=UTC))
    chart = charts.campaign_completion(session, seeded.campaign, now=clock())
    assert chart["labels"] == ["2026-11-01", "2026-11-02", "2026-11-03", "2026-11-04", "2026-11-05"]
    assert chart["series"][0]["data"] == [1, 1, 3, 3, 3]
    seeded.campaign.closed_at = datetime(2026, 11, 3, 18, 0, tzinfo=UTC)  # a closed campaign ends at its close
    assert charts.campaign_completion(session, seeded.campaign, now=clock())["labels"][-1] == "2026-11-03"


def test_days_are_utc_days_whatever_the_database_session_time_zone(session, seeded):
    from sqlalchemy import select, text

    from attest.reviews.models import ReviewItem

    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SET LOCAL TIME ZONE 'Pacific/Kiritimati'"))  # UTC+14: 23:30 UTC is tomorrow there
    open_item = session.scalars(select(ReviewItem).where(ReviewItem.campaign_id == seeded.campaign.id,
                                                         ReviewItem.decision.is_(None))).first()
    open_item.decision, open_item.decided_at = "approve", datetime(2026, 11, 2, 23, 30, tzinfo=UTC)
    session.flush()
    chart = charts.campaign_completion(session, seeded.campaign, now=datetime(2026, 11, 4, tzinfo=UTC))
    assert chart["series"][0]["data"] == [1, 2, 4, 4]


def test_progress_by_reviewer_is_decided_and_open_per_reviewer(app, client, seeded):
    cid = seeded.campaign.id
    chart = _json(app, client, seeded.admin, f"/charts/campaign-reviewers.json?campaign={cid}")
    rows = {label: (chart["series"][0]["data"][i], chart["series"][1]["data"][i])
            for i, label in enumerate(chart["labels"])}
    assert rows == {"Ada Reviewer": (2, 1), "Bob Reviewer": (1, 1), "(no reviewer)": (0, 1)}
    page = client.get(f"/campaigns/{cid}").get_data(as_text=True)
    assert page_table(page, "campaign-reviewers")[1:] == as_table(chart)[1:]


def test_decisions_by_risk(app, client, seeded):
    cid = seeded.campaign.id
    chart = _json(app, client, seeded.auditor, f"/charts/campaign-risks.json?campaign={cid}")
    by = {s["key"]: dict(zip(chart["labels"], s["data"], strict=True)) for s in chart["series"]}
    assert chart["labels"] == ["privileged", "dormant", "no risk signal"]
    assert by["approve"] == {"privileged": 1, "dormant": 1, "no risk signal": 0}
    assert by["revoke"] == {"privileged": 1, "dormant": 1, "no risk signal": 0}
    assert by["open"] == {"privileged": 0, "dormant": 0, "no risk signal": 3}
    assert "abstain" not in by
    page = client.get(f"/campaigns/{cid}").get_data(as_text=True)
    assert page_table(page, "campaign-risks")[1:] == as_table(chart)[1:]


def test_remediation_status_of_one_campaign_and_of_all(app, client, seeded):
    cid = seeded.campaign.id
    one = _json(app, client, seeded.auditor, f"/charts/remediation-status.json?campaign={cid}")
    assert dict(zip(one["labels"], one["series"][0]["data"], strict=True)) == {"pending": 1, "verified": 1}
    every = _json(app, client, seeded.auditor, "/charts/remediation-status.json")
    assert dict(zip(every["labels"], every["series"][0]["data"], strict=True)) == {"pending": 1, "verified": 1,
                                                                                   "failed": 1}
    assert page_table(client.get(f"/remediations?campaign={cid}").get_data(as_text=True),
                      "remediation-status")[1:] == as_table(one)[1:]
    assert page_table(client.get("/remediations").get_data(as_text=True), "remediation-status")[1:] == as_table(every)[1:]


def test_access_by_source_and_risk_on_the_home_page(app, client, seeded):
    chart = _json(app, client, seeded.admin, "/charts/access-by-source.json")
    by = {s["key"]: dict(zip(chart["labels"], s["data"], strict=True)) for s in chart["series"]}
    assert chart["labels"] == ["github-charts", "okta-charts"]
    # okta: 6 grants, 2 of them privileged; github: one of a person who left, one of an orphaned account
    assert {k: v["okta-charts"] for k, v in by.items()} == {"terminated": 0, "orphaned": 0, "privileged": 2, "none": 4}
    assert {k: v["github-charts"] for k, v in by.items()} == {"terminated": 1, "orphaned": 1, "privileged": 0, "none": 0}
    assert page_table(client.get("/").get_data(as_text=True), "access-by-source")[1:] == as_table(chart)[1:]


def test_sync_durations_per_source(app, client, seeded):
    chart = _json(app, client, seeded.auditor, "/charts/sync-durations.json")
    assert chart["labels"] == ["okta-charts"]  # github never synced; the running run is not counted
    assert [s["data"] for s in chart["series"]] == [[20.0], [20.0], [30.0]]
    assert page_table(client.get("/sources").get_data(as_text=True), "sync-durations")[1:] == [
        ["okta-charts", "20.0", "20.0", "30.0"]]


@pytest.mark.parametrize("name", sorted(charts.CHARTS))
def test_a_manager_may_read_no_chart(app, client, seeded, name):
    login_as(app, client, seeded.manager)  # Ada reviews in this campaign, yet its charts are the admins'
    response = client.get(f"/charts/{name}.json?campaign={seeded.campaign.id}")
    assert response.status_code == 403
    assert b"Ada Reviewer" not in response.data
    home = client.get("/").get_data(as_text=True)
    assert "data-chart-table" not in home and "chart.umd" not in home


def test_unknown_chart_or_campaign(app, client, seeded):
    login_as(app, client, seeded.auditor)
    assert client.get("/charts/nothing.json").status_code == 404
    assert client.get("/charts/campaign-completion.json?campaign=987654321").status_code == 404
    assert client.get("/charts/campaign-completion.json").status_code == 400
    assert client.get("/charts/campaign-completion.json?campaign=abc").status_code == 400


def test_each_page_draws_from_the_json_the_endpoint_serves(app, client, seeded):
    """The page embeds each chart's JSON (charts.js draws from it): exactly what /charts/<name>.json says."""
    cid = seeded.campaign.id
    login_as(app, client, seeded.auditor)
    for path, names in (("/", ["access-by-source"]), ("/sources", ["sync-durations"]),
                        (f"/remediations?campaign={cid}", ["remediation-status"]),
                        (f"/campaigns/{cid}", ["campaign-completion", "campaign-reviewers", "campaign-risks"])):
        page = client.get(path).get_data(as_text=True)
        for name in names:
            block = re.search(rf'<script type="application/json" id="chart-{name}-data">(.*?)</script>', page, re.S)
            assert block, (path, name)
            query = f"?campaign={cid}" if name.startswith("campaign") or path.startswith("/remediations") else ""
            assert json.loads(block.group(1)) == client.get(f"/charts/{name}.json{query}").get_json(), (path, name)


def test_charted_pages_load_the_vendored_chart_library(app, client, seeded):
    login_as(app, client, seeded.auditor)
    for path in ("/", f"/campaigns/{seeded.campaign.id}", "/sources", "/remediations"):
        page = client.get(path).get_data(as_text=True)
        assert "/static/vendor/chartjs/chart.umd.min.js" in page and "/static/js/charts.js" in page, path
        assert "Show the numbers" in page, path
    assert client.get("/static/vendor/chartjs/chart.umd.min.js").status_code == 200
