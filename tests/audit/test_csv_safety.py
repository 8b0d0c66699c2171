"""Every CSV Attest writes is safe to open in a spreadsheet (issue 14, part 9).

A hostile upstream (logins, role and resource names, people's names), a hostile reviewer (comments) and
a hostile admin (campaign name, remediation notes) plant formula payloads; each export is opened with
Python's csv module: no cell begins with = + - @ TAB CR, and each payload is there, intact, behind a '.
"""

from __future__ import annotations

import csv
import io
import zipfile
from datetime import timedelta
from decimal import Decimal

import pytest
from markupsafe import Markup

from attest import exports
from attest.audit.evidence import export_bundle
from attest.db import utcnow
from attest.entitlements.models import Account, Grant, ResourceOwner
from attest.reviews import flagged, remediation
from attest.reviews.models import CampaignExclusion, Remediation
from tests.factories import login_as, make_identity, make_user
from tests.reviews.factories import review_setup

HYPERLINK = '=HYPERLINK("http://x","y")'
CMD = "+cmd|' /C calc'!A0"
SUM = "@SUM(1+1)"
ARITH = "-2+3"
TAB = "\tfoo"
CR = "\rfoo"
HOSTILE = (HYPERLINK, CMD, SUM, ARITH, TAB, CR)
DANGEROUS = ("=", "+", "-", "@", "\t", "\r")


def cells(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text, newline="")))


def assert_safe(name: str, text: str, expected: set[str]) -> None:
    """No cell (header aside) begins with a dangerous character; each expected payload is a cell, as '+payload."""
    rows = cells(text)
    assert len(rows) > 1, f"{name}: no data rows"
    found = set()
    for r, row in enumerate(rows[1:], 2):
        for c, cell in enumerate(row):
            assert not cell.startswith(DANGEROUS), f"{name} row {r} column {rows[0][c]}: {cell!r}"
            if cell.startswith("'") and cell[1:].startswith(DANGEROUS):
                found.add(cell[1:])
    missing = expected - found
    assert not missing, f"{name}: these values are missing or not kept intact behind a quote: {missing!r}"


# --- the rule itself ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [*HOSTILE, "=", "-", "-5", "@", "\t", "\r", "\r\n=1"])
def test_text_starting_with_a_dangerous_character_gets_a_quote(value):
    assert exports.safe_cell(value) == "'" + value
    assert exports.safe_cell(Markup(value)) == "'" + value  # a str subclass is text too


@pytest.mark.parametrize("value", ["alice", "", " =1", "'=1", "a=b", "2024-01-01T00:00:00Z", "élan"])
def test_harmless_text_is_unchanged(value):
    assert exports.safe_cell(value) == value


def test_real_numbers_stay_numbers_and_odd_values_become_safe_text():
    assert exports.safe_cell(-5) == -5 and exports.safe_cell(-2.5) == -2.5 and exports.safe_cell(Decimal("-1")) == -1
    assert exports.safe_cell(None) is None
    assert exports.safe_cell(float("-inf")) == "'-inf"
    assert exports.safe_cell(True) == "True"
    out = io.StringIO()
    w = exports.writer(out, ("n", "s", "none", "semi"), lineterminator="\n")
    w.writerow([-5, "-5", None, "ok;=1+1"])
    header, line = out.getvalue().splitlines()
    # header plain; a real negative number bare (a spreadsheet reads the number); text quoted, so a ';'
    # (the field separator of many locales) cannot start a new cell
    assert header == "n,s,none,semi" and line == '-5,"\'-5","","ok;=1+1"'
    assert cells(out.getvalue())[1] == ["-5", "'-5", "", "ok;=1+1"]


# --- every export, from a hostile upstream ---------------------------------------------------------------------


@pytest.fixture
def hostile(session):
    """A closed campaign whose every text comes from a hostile upstream, reviewer or admin."""
    setup = review_setup(session, people=3, per_person=2, campaign_name=HYPERLINK, source_name=SUM,
                         spec={"timing": {"duration_days": 14, "no_response": "flag"}})
    campaign, items = setup.campaign, setup.items
    setup.manager.display_name = CMD  # the reviewer's name, from the IdP
    owner = make_identity(session, "owner@acme.example", name=HYPERLINK)
    session.add(ResourceOwner(resource_id=items[2].resource_id, identity_id=owner.id, origin="manual"))
    now = utcnow()
    for i, item in enumerate(items):
        item.person_name, item.person_department = (ARITH, TAB) if i % 2 == 0 else (CR, SUM)
        item.account_login = [TAB, CR, ARITH][i % 3]
        item.resource_name, item.entitlement_name, item.via = CR, SUM, HYPERLINK
    # 0, 3: revoked (manual remediation; 0 marked done with a hostile note); 1: approved; 2, 4, 5: no response -> flag
    for i in (0, 3):
        items[i].decision, items[i].comment, items[i].outcome = "revoke", [HYPERLINK, CR][i // 3], "revoke"
        items[i].decided_at, items[i].decided_by_identity_id = now - timedelta(minutes=i), setup.manager.id
    items[1].decision, items[1].comment, items[1].outcome = "approve", ARITH, "keep"
    items[1].decided_at, items[1].decided_by_identity_id = now, setup.manager.id
    for item in items:
        item.outcome_reason = "decision" if item.decision else "no_response"
        if not item.decision:
            item.outcome = "flag"
    session.flush()
    rems = [Remediation(campaign_id=campaign.id, item_id=items[i].id, grant_id=items[i].grant_id,
                        source_id=setup.source.id, mode="manual", status="pending", target=t, last_error=e)
            for i, t, e in ((0, SUM, None), (3, CMD, TAB))]
    session.add_all(rems)
    # an exclusion: the account's login and the grant's key from upstream
    account = session.get(Account, items[4].account_id)
    account.login = ARITH
    session.get(Grant, items[4].grant_id).key = HYPERLINK
    session.add(CampaignExclusion(campaign_id=campaign.id, grant_id=items[4].grant_id, account_id=account.id,
                                  reason="service_account_excluded"))
    campaign.status, campaign.closed_at, campaign.closed_by = "closed", now, "admin@acme.example"
    campaign.population = {"in_scope": len(items) + 1, "items": len(items), "excluded": 1}
    session.flush()
    remediation.mark_done(session, rems[0].id, "admin@acme.example", "-2+3 done; =1+1 in ticket @IAM-7")
    session.commit()
    return setup


def test_every_evidence_csv_is_neutralised(hostile, factory, settings, tmp_path):
    path = tmp_path / "evidence.zip"
    export_bundle(factory, settings, hostile.campaign.id, path, actor="auditor@acme.example")
    with zipfile.ZipFile(path) as zf:
        csvs = {n: zf.read(n).decode() for n in zf.namelist() if n.endswith(".csv")}
        manifest = zf.read("manifest.json").decode()
        with zipfile.ZipFile(io.BytesIO(zf.read("items.xlsx"))) as xlsx:  # already safe: string cells, no formula
            sheet = xlsx.read("xl/worksheets/sheet1.xml").decode()
    assert "<f>" not in sheet and "<f " not in sheet and f"<t>{HYPERLINK}</t>" in sheet  # inline string, as typed
    assert set(csvs) == {"items.csv", "exclusions.csv", "remediations.csv"}
    assert_safe("items.csv", csvs["items.csv"], {ARITH, TAB, CR, SUM, HYPERLINK, CMD})
    assert_safe("exclusions.csv", csvs["exclusions.csv"], {SUM, HYPERLINK, ARITH})
    assert_safe("remediations.csv", csvs["remediations.csv"],
                {HYPERLINK, CMD, SUM, ARITH, TAB, CR, "-2+3 done; =1+1 in ticket @IAM-7"})
    # the manifest documents the rule
    assert '"csv_neutralisation"' in manifest and "cells beginning with = + - @ TAB CR are prefixed with '" in manifest


def test_every_web_and_cli_csv_is_neutralised(hostile, app, client, session, tmp_path):
    cid = hostile.campaign.id
    user = make_user(session, "auditor@acme.example", roles=["auditor"])
    session.commit()
    login_as(app, client, user)
    downloads = {
        "manual work list": (f"/remediations.csv?campaign={cid}", {HYPERLINK, CMD, TAB, CR, SUM}),
        "all remediations": (f"/remediations.csv?campaign={cid}&all=1",
                             {HYPERLINK, CMD, ARITH, TAB, CR, SUM, "-2+3 done; =1+1 in ticket @IAM-7"}),
        "flagged work list": (f"/flagged.csv?campaign={cid}", {HYPERLINK, CMD, ARITH, CR, SUM}),
    }
    for name, (url, expected) in downloads.items():
        response = client.get(url)
        assert response.status_code == 200 and response.mimetype == "text/csv", name
        assert_safe(name, response.get_data(as_text=True), expected)
    out = io.StringIO()
    assert flagged.write_flagged_csv(session, out, cid) == 3
    # the CLI's export-manual writes the same work list
    target = tmp_path / "manual.csv"
    result = app.test_cli_runner().invoke(args=["remediation", "export-manual", "--campaign", str(cid),
                                                "--out", str(target)])
    assert result.exit_code == 0, result.output
    assert_safe("export-manual", target.read_text(encoding="utf-8"), {HYPERLINK, CMD, TAB, SUM})
