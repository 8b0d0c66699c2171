"""A campaign's items page (admins and auditors): filters, keyset pages, the streamed CSV of exactly the
filtered rows (neutralised, audited), managers refused, the dashboard's links, the closed summary."""

from __future__ import annotations

import csv
import io
import re

import pytest
from sqlalchemy import select

from attest.entitlements.models import Account
from attest.reviews import items_export
from attest.reviews.models import ReviewItem
from attest.trail.models import AuditEvent
from tests.factories import login_as, make_identity, make_user
from tests.reviews.factories import make_grant, make_item, review_setup


def _text(response) -> str:
    return response.get_data(as_text=True)


def _ids(html: str) -> list[int]:
    return [int(x) for x in re.findall(r'<tr id="item-(\d+)"', html)]


def _next(html: str) -> str | None:
    m = re.search(r'class="btn btn-outline-secondary btn-sm js-next-page" href="([^"]+)"', html)
    return m.group(1).replace("&amp;", "&") if m else None


def _csv(response) -> list[dict[str, str]]:
    assert response.status_code == 200 and response.mimetype == "text/csv"
    return list(csv.DictReader(io.StringIO(_text(response))))


@pytest.fixture
def world(session):
    """Maria reviews 6 items (item 0 privileged); Otto reviews 2 of another source; 1 orphan has no reviewer."""
    s = review_setup(session, people=3, per_person=2)
    otto = make_identity(session, "otto.owner@acme.example", name="Otto Owner")
    from tests.factories import make_source

    github = make_source(session, "github-main")
    person = s.people[0]
    account = Account(source_id=github.id, external_id="gh-alice", login="alice-gh", identity_id=person.id, kind="human")
    session.add(account)
    session.flush()
    otto_items = []
    for name in ("payments-repo", "infra-repo"):
        grant, resource, ent = make_grant(session, github, account, name, entitlement="push", rtype="repo")
        otto_items.append(make_item(session, s.campaign, otto, person, account, grant, resource, ent, github,
                                    risks=["dormant"]))
    orphan_account = Account(source_id=github.id, external_id="gh-old", login="old-bot", kind="service")
    session.add(orphan_account)
    session.flush()
    grant, resource, ent = make_grant(session, github, orphan_account, "legacy-repo", entitlement="admin", rtype="repo")
    orphan = make_item(session, s.campaign, None, None, orphan_account, grant, resource, ent, github,
                       risks=["orphaned"])
    admin = make_user(session, "ada.admin@acme.example", roles=["admin"])
    auditor = make_user(session, "aud.auditor@acme.example", roles=["auditor"])
    session.commit()
    s.extra.update(otto=otto, otto_items=otto_items, orphan=orphan, admin=admin, auditor=auditor, github=github)
    return s


def test_filters_by_reviewer_decision_risk_source_resource_and_text(app, client, session, world):
    login_as(app, client, world.extra["auditor"])
    url = f"/campaigns/{world.campaign.id}/items"

    def ids(query: str = "") -> set[int]:
        response = client.get(url + query)
        assert response.status_code == 200
        return set(_ids(_text(response)))

    maria = {i.id for i in world.items}
    otto = {i.id for i in world.extra["otto_items"]}
    orphan = world.extra["orphan"].id
    assert ids() == maria | otto | {orphan}
    assert ids(f"?reviewer={world.manager.id}") == maria
    assert ids(f"?reviewer={world.extra['otto'].id}") == ids(f"?reviewer=00{world.extra['otto'].id}") == otto
    assert ids("?reviewer=x") == ids("?reviewer=-1") == maria | otto | {orphan}  # not a reviewer: no filter
    assert ids("?reviewer=none") == {orphan}
    assert ids("?risk=privileged") == {world.items[0].id}
    assert ids("?risk=dormant") == otto
    assert ids("?risk=flagged") == {world.items[0].id, orphan} | otto
    assert ids(f"?source={world.extra['github'].name}") == otto | {orphan}
    assert ids("?resource=payments") == {world.extra["otto_items"][0].id}
    assert ids("?q=old-bot") == {orphan}
    assert ids("?q=bob") == {i.id for i in world.items if i.person_name == "Bob Baker"}
    # decisions: undecided and a decision by name; combined with other filters
    item = session.get(ReviewItem, world.items[1].id)
    item.decision = "approve"
    session.commit()
    assert ids("?decision=approve") == {world.items[1].id}
    assert ids("?decision=undecided") == (maria | otto | {orphan}) - {world.items[1].id}
    assert ids(f"?decision=undecided&reviewer={world.manager.id}") == maria - {world.items[1].id}
    assert "Nothing matches these filters" in _text(client.get(url + "?q=%25"))  # LIKE wildcards taken literally
    assert client.get(url + "?after=not-a-cursor").status_code == 400


def test_keyset_pages_continue_exactly_where_the_last_page_ended(app, client, session):
    s = review_setup(session, people=60, per_person=1, risky={})
    orphans = []
    for n in range(2):
        account = Account(source_id=s.source.id, external_id=f"orphan{n}", login=f"svc-old-{n}", kind="human")
        session.add(account)
        session.flush()
        grant, resource, ent = make_grant(session, s.source, account, "Legacy-DB")
        orphans.append(make_item(session, s.campaign, None, None, account, grant, resource, ent, s.source,
                                 risks=["orphaned"]))
    admin = make_user(session, "ada.admin@acme.example", roles=["admin"])
    session.commit()
    login_as(app, client, admin)
    expected = list(session.scalars(select(ReviewItem.id).where(
        ReviewItem.campaign_id == s.campaign.id, ReviewItem.person_name.is_not(None))
        .order_by(ReviewItem.person_name, ReviewItem.id))) + [o.id for o in orphans]
    first = _text(client.get(f"/campaigns/{s.campaign.id}/items?source={s.source.name}&decision=undecided"))
    page1 = _ids(first)
    assert page1 == expected[:50]
    url = _next(first)
    assert url and f"source={s.source.name}" in url and "decision=undecided" in url and "offset" not in url
    second = _text(client.get(url))
    # page 2 starts with the item right after page 1's last one, and ends with the orphans (no person)
    assert _ids(second) == expected[50:] and _ids(second)[-2:] == [o.id for o in orphans]
    assert _next(second) is None


def test_csv_is_exactly_the_filtered_rows_neutralised_and_audited(app, client, session, world, monkeypatch):
    monkeypatch.setattr(items_export, "BATCH", 2)  # 5 rows: the first batch in the request, two more streamed
    hostile = world.items[2]
    row = session.get(ReviewItem, hostile.id)
    row.person_name = "=HYPERLINK(\"http://evil.example\",\"x\")"
    row.comment = "@SUM(1+1)"
    row.decision = "approve"
    session.commit()
    login_as(app, client, world.extra["admin"])
    url = f"/campaigns/{world.campaign.id}/items"
    query = f"?reviewer={world.manager.id}&risk=unflagged"
    page_ids = _ids(_text(client.get(url + query)))
    assert hostile.id in page_ids and world.items[0].id not in page_ids
    rows = _csv(client.get(url + ".csv" + query))
    assert [int(r["item_id"]) for r in rows] == page_ids  # the same rows, in the same order
    assert tuple(rows[0]) == items_export.COLUMNS
    bad = next(r for r in rows if int(r["item_id"]) == hostile.id)
    assert bad["person"] == "'=HYPERLINK(\"http://evil.example\",\"x\")" and bad["comment"] == "'@SUM(1+1)"
    assert bad["reviewer"] == "Maria Manager" and bad["decision"] == "approve"
    event = session.scalars(select(AuditEvent).where(AuditEvent.action == "campaign.items_exported")
                            .order_by(AuditEvent.id.desc())).first()
    assert event is not None and event.actor == "ada.admin@acme.example"
    assert event.campaign_id == world.campaign.id
    assert event.after["filters"] == {"reviewer": str(world.manager.id), "risk": "unflagged"}


def test_csv_streams_in_keyset_batches_and_misses_no_row(session, world):
    """Batches of 2 over 9 items: every item once, in the page order (the batching itself is what is tested)."""
    from attest.reviews import queries

    filters = queries.ItemFilters()
    chunks = list(items_export.iter_csv(session, world.campaign.id, filters, batch=2))
    assert len(chunks) == 5
    rows = list(csv.DictReader(io.StringIO("".join(chunks))))
    expected, _ = queries.campaign_items(session, world.campaign.id, filters, limit=100)
    assert [int(r["item_id"]) for r in rows] == [i.id for i in expected]
    assert len(rows) == 9


def test_managers_are_refused_admins_and_auditors_read(app, client, session, world):
    url = f"/campaigns/{world.campaign.id}/items"
    login_as(app, client, world.manager_user)
    assert client.get(url).status_code == 403
    assert client.get(url + ".csv").status_code == 403
    assert session.scalar(select(AuditEvent.id).where(AuditEvent.action == "campaign.items_exported")) is None
    for user in (world.extra["auditor"], world.extra["admin"]):
        login_as(app, client, user)
        assert client.get(url).status_code == 200
        assert client.get(url + ".csv").status_code == 200
    assert client.get("/campaigns/987654321/items").status_code == 404
    assert client.get("/campaigns/987654321/items.csv").status_code == 404


def test_dashboard_counts_and_risk_badges_link_to_the_filtered_items(app, client, session, world):
    login_as(app, client, world.extra["admin"])
    html = _text(client.get(f"/campaigns/{world.campaign.id}"))
    base = f"/campaigns/{world.campaign.id}/items"
    for query in ("?risk=privileged", "?risk=dormant", "?decision=approve", "?decision=revoke",
                  "?decision=undecided", "?reviewer=none", f"?reviewer={world.manager.id}"):
        assert f'href="{base}{query}"' in html, query
    assert re.search(rf'<a class="badge [^"]*risk-badge[^"]*" href="{base}\?risk=privileged">', html)


def test_closed_summary_is_a_page_section_with_outcome_counts(app, client, session, world):
    from attest.reviews import campaigns as campaigns_service

    for item, decision, comment in ((world.items[0], "revoke", "left the team"), (world.items[1], "approve", None),
                                    (world.items[2], "abstain", None)):
        row = session.get(ReviewItem, item.id)
        row.decision, row.comment, row.completed = decision, comment, True
    session.commit()
    campaigns_service.close(session, world.campaign.id, "ada.admin@acme.example")
    session.commit()
    login_as(app, client, world.extra["auditor"])
    html = _text(client.get(f"/campaigns/{world.campaign.id}"))
    assert "<pre" not in html and "Summary at close" in html
    base = f"/campaigns/{world.campaign.id}/items"
    summary = world.campaign.summary
    outcomes = summary["outcomes"]
    assert outcomes == {"keep": 7, "revoke": 1, "flag": 1}  # abstained at the last stage: flag
    for key in ("keep", "revoke", "flag"):
        assert f'<a href="{base}?outcome={key}">{outcomes[key]}</a>' in html
    # exceptions: abstained (1), no response (5 + the orphan, which also has no reviewer): 7
    assert f'href="{base}?outcome=exception">7</a>' in html
    assert "summary-remediation" in html and "pending" in html
    assert "Maria Manager" in html and "summary-reviewers" in html
    # the linked lists hold what the summary counts
    assert len(_ids(_text(client.get(base + "?outcome=revoke")))) == 1
    assert len(_ids(_text(client.get(base + "?outcome=exception")))) == 7
