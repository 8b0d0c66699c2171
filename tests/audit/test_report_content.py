"""What the auditor must see (issue 14, part 10): every assigned reviewer in the PDF, zero decisions
included; manual-remediation notes in remediations.csv and the PDF; flagged items (no-response outcome
"flag") in the PDF and on a work list page for admins and auditors only, with its CSV."""

from __future__ import annotations

import csv
import io
import re
import zipfile

import pytest

from attest.audit import evidence
from attest.entitlements.models import Account, ResourceOwner
from attest.reviews import remediation
from attest.reviews.models import Remediation
from tests.audit.helpers import decided_campaign
from tests.factories import login_as, make_identity, make_user
from tests.reviews.factories import add_reviewer, make_grant, make_item

ZERO = ("Zed Zero-One", "Zoe Zero-Two", "Zack Zero-Three")
NOTE = "Removed from Finance-App in the Okta console, ticket IAM-4242"


@pytest.fixture
def review(session):
    """decided_campaign (the manager decided all 12 items) plus three reviewers who decided nothing (their
    items closed with no response and the outcome "flag"), one of those items' resource owned by Olga, and a
    manual remediation marked done with a note."""
    setup = decided_campaign(session)
    campaign, person = setup.campaign, setup.people[0]
    account = session.get(Account, setup.items[0].account_id)
    zero = []
    for i, name in enumerate(ZERO):
        reviewer, _ = add_reviewer(session, f"zero{i}@acme.example", name=name)
        grant, resource, ent = make_grant(session, setup.source, account, f"Zero-App-{i}")
        zero.append(make_item(session, campaign, reviewer, person, account, grant, resource, ent, setup.source,
                              outcome="flag", outcome_reason="no_response"))
    owner = make_identity(session, "olga.owner@acme.example", name="Olga Owner")
    session.add(ResourceOwner(resource_id=zero[0].resource_id, identity_id=owner.id, origin="manual"))
    manual = setup.items[2]
    manual.decision, manual.outcome = "revoke", "revoke"
    rem = Remediation(campaign_id=campaign.id, item_id=manual.id, grant_id=manual.grant_id, source_id=setup.source.id,
                      mode="manual", status="pending", target="Remove from group Finance-App-2 in Okta")
    session.add(rem)
    session.flush()
    remediation.mark_done(session, rem.id, "admin@acme.example", NOTE)
    session.commit()
    setup.extra.update(zero=zero, rem=rem)
    return setup


@pytest.fixture
def exported(review, factory, settings, tmp_path, monkeypatch):
    """The bundle, and the HTML its report.pdf was laid out from."""
    html: list[str] = []
    render = evidence.render_report_html
    monkeypatch.setattr(evidence.report, "render_report_html", lambda ctx: html.append(render(ctx)) or html[-1])
    path = tmp_path / "evidence.zip"
    evidence.export_bundle(factory, settings, review.campaign.id, path, actor="auditor@acme.example")
    assert len(html) == 1
    return path, html[0]


def pdf_text(html: str) -> str:
    """The text WeasyPrint lays out on the PDF's pages (the same layout `write_pdf` draws)."""
    from weasyprint import HTML

    def walk(box):
        if getattr(box, "text", None):
            yield box.text
        for child in getattr(box, "children", ()):
            yield from walk(child)

    document = HTML(string=html).render()
    return " ".join(t for page in document.pages for t in walk(page._page_box))


def rows_of(html: str, css_class: str) -> list[list[str]]:
    """The cells' text of each <tr class="css_class"> of the report."""
    out = []
    for tr in re.findall(rf'<tr class="{css_class}">(.*?)</tr>', html, flags=re.S):
        out.append([" ".join(re.sub(r"<[^>]+>", " ", td).split())
                    for td in re.findall(r"<td[^>]*>(.*?)</td>", tr, flags=re.S)])
    return out


def test_the_pdf_lists_every_assigned_reviewer_with_zero_counts(exported, review):
    path, html = exported
    reviewers = {r[0].rsplit(" ", 1)[0]: r for r in rows_of(html, "reviewer")}  # "Name email" -> Name
    assert set(reviewers) == {"Maria Manager", *ZERO}
    for name in ZERO:  # assigned one item, decided none: listed with zeros
        assigned, assigned_decided, decisions, approved, revoked, abstained = reviewers[name][1:7]
        assert (assigned, assigned_decided, decisions, approved, revoked, abstained) == ("1", "0", "0", "0", "0", "0")
    assert reviewers["Maria Manager"][1:4] == ["12", "12", "12"]
    text = pdf_text(html)
    for name in (*ZERO, "Maria Manager"):
        assert name in text, f"{name} is not on the PDF's pages"
    with zipfile.ZipFile(path) as zf:
        assert zf.read("report.pdf").startswith(b"%PDF")


def test_manual_remediation_notes_are_in_remediations_csv_and_the_pdf(exported, review):
    path, html = exported
    with zipfile.ZipFile(path) as zf:
        rows = list(csv.DictReader(io.StringIO(zf.read("remediations.csv").decode(), newline="")))
    by_id = {int(r["remediation_id"]): r for r in rows}
    assert len(rows) == 3  # the two automatic revokes and the manual one
    done = by_id[review.extra["rem"].id]
    assert done["note"] == NOTE and done["executed_by"] == "admin@acme.example" and done["status"] == "done"
    assert done["mode"] == "manual" and done["executed_at"]
    [note_row] = rows_of(html, "manual-note")
    assert NOTE in note_row and "admin@acme.example" in " ".join(note_row)
    assert NOTE in pdf_text(html)


def test_the_pdf_has_a_section_on_flagged_items_and_who_must_act(exported, review):
    _, html = exported
    flagged = rows_of(html, "flagged")
    assert [int(r[0]) for r in flagged] == [i.id for i in review.extra["zero"]]
    first = " ".join(flagged[0])
    assert "no response" in first and ZERO[0] in first and "Olga Owner" in first and "resource owner" in first
    second = " ".join(flagged[1])
    assert ZERO[1] in second and "admin@acme.example" in second and "campaign owner" in second
    text = pdf_text(html)
    assert "Flagged items: who must act" in text and "Olga Owner" in text


# --- the flagged work list page ---------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["admin", "auditor"])
def test_admins_and_auditors_see_the_flagged_work_list_and_its_csv(app, client, session, review, role):
    user = make_user(session, f"{role}@acme.example", roles=[role])
    session.commit()
    login_as(app, client, user)
    cid = review.campaign.id
    page = client.get(f"/flagged?campaign={cid}")
    assert page.status_code == 200
    body = page.get_data(as_text=True)
    for zero, name in zip(review.extra["zero"], ZERO, strict=True):
        assert f'<td class="mono">{zero.id}</td>' in body and name in body
    assert "Olga Owner" in body and "Alice Archer" in body and "3 items" in body
    assert f"/flagged.csv?campaign={cid}" in body
    rows = list(csv.DictReader(io.StringIO(client.get(f"/flagged.csv?campaign={cid}").get_data(as_text=True),
                                           newline="")))
    assert [int(r["item_id"]) for r in rows] == [z.id for z in review.extra["zero"]]
    assert rows[0]["reviewer"] == ZERO[0] and rows[0]["to_resolve"] == "Olga Owner <olga.owner@acme.example>"
    assert rows[0]["resolver_role"] == "resource owner" and rows[0]["why_flagged"] == "no response"
    assert rows[1]["to_resolve"] == "admin@acme.example" and rows[1]["resolver_role"] == "campaign owner"
    # reachable from the campaign page and the remediation page
    assert f"/flagged?campaign={cid}" in client.get(f"/campaigns/{cid}").get_data(as_text=True)
    assert f"/flagged?campaign={cid}" in client.get(f"/remediations?campaign={cid}").get_data(as_text=True)
    assert client.get("/flagged?campaign=999999").status_code == 404
    assert client.get("/flagged.csv?campaign=999999").status_code == 404


def test_managers_and_anonymous_users_never_see_the_flagged_work_list(app, client, session, review):
    cid = review.campaign.id
    for url in (f"/flagged?campaign={cid}", f"/flagged.csv?campaign={cid}", "/flagged", "/flagged.csv"):
        response = client.get(url)
        assert response.status_code in (302, 401, 403) and "Zero-App" not in response.get_data(as_text=True), url
    login_as(app, client, review.manager_user)  # a reviewer of this campaign, no admin or auditor role
    for url in (f"/flagged?campaign={cid}", f"/flagged.csv?campaign={cid}", "/flagged", "/flagged.csv"):
        response = client.get(url)
        assert response.status_code == 403 and "Zero-App" not in response.get_data(as_text=True), url
