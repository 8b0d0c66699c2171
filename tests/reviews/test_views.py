"""Review pages: the inbox (campaigns, grouping, filters, keyset pages, htmx fragments, decisions, bulk,
sign-off), 404 for what is not yours, auditors refused on every write, CSRF, admin campaign pages."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import event, func, select

from attest import dialects
from attest.entitlements.models import Account
from attest.reviews.models import Decision, ReviewerSignoff, ReviewItem
from tests.factories import login_as, make_user
from tests.reviews.factories import add_reviewer, make_grant, make_item, review_setup

HX = {"HX-Request": "true"}



@pytest.fixture
def setup(session):
    s = review_setup(session, people=3, per_person=2)
    session.commit()
    return s


def _ids(html: str) -> list[int]:
    return [int(x) for x in re.findall(r'<tr id="item-(\d+)"', html)]


def _text(response) -> str:
    return response.get_data(as_text=True)


def test_inbox_lists_my_campaigns_and_groups_items_by_person(app, client, session, setup):
    login_as(app, client, setup.manager_user)
    page = _text(client.get("/reviews"))
    assert "Q3 access review" in page and "0/6 decided" in page and "due " in page
    assert page.count('class="person-row') == 3
    for name in ("Alice Archer", "Bob Baker", "Carol Chen"):
        assert name in page
    assert ">privileged</span>" in page  # risk badge
    assert "Approve all 5 not flagged" in page  # item 0 is flagged
    assert 'src="/static/js/inbox.js"' in page and "<script>" not in page  # no inline script under the CSP
    # the nav links the inbox; the campaign is picked when there is just one
    assert _ids(page) == sorted(_ids(page), key=lambda i: [x.id for x in setup.items].index(i))


def test_user_without_items_sees_an_empty_inbox(app, client, session, setup):
    _, nobody = add_reviewer(session, "nina.nobody@acme.example")
    session.commit()
    login_as(app, client, nobody)
    page = _text(client.get("/reviews"))
    assert "Nothing to review right now" in page


def test_filters_risk_source_resource_decision_text(app, client, session, setup, nocsrf):
    login_as(app, client, setup.manager_user)
    cid = setup.campaign.id
    flagged = _ids(_text(client.get(f"/reviews?campaign={cid}&risk=flagged")))
    assert flagged == [setup.items[0].id]
    assert setup.items[0].id not in _ids(_text(client.get(f"/reviews?campaign={cid}&risk=unflagged")))
    assert _ids(_text(client.get(f"/reviews?campaign={cid}&risk=privileged"))) == [setup.items[0].id]
    assert len(_ids(_text(client.get(f"/reviews?campaign={cid}&source={setup.source.name}")))) == 6
    assert _ids(_text(client.get(f"/reviews?campaign={cid}&source=nope"))) == []
    assert len(_ids(_text(client.get(f"/reviews?campaign={cid}&resource=app-1")))) == 3
    assert [i.id for i in setup.items if i.person_name == "Bob Baker"] == _ids(_text(client.get(f"/reviews?campaign={cid}&q=bob")))
    client.post(f"/reviews/items/{setup.items[1].id}/decide", data={"decision": "approve"})
    assert _ids(_text(client.get(f"/reviews?campaign={cid}&decision=approve"))) == [setup.items[1].id]
    assert setup.items[1].id not in _ids(_text(client.get(f"/reviews?campaign={cid}&decision=undecided")))
    # a filter that matches nothing says so; a LIKE wildcard is taken literally
    assert "Nothing matches these filters" in _text(client.get(f"/reviews?campaign={cid}&q=%25"))


def test_keyset_pages_cover_every_item_once_in_person_order(app, client, session):
    s = review_setup(session, people=60, per_person=2, risky={})
    # two orphaned items (no person) come after everyone, by id
    orphans = []
    for n in range(2):
        account = Account(source_id=s.source.id, external_id=f"orphan{n}", login=f"svc-old-{n}", kind="human")
        session.add(account)
        session.flush()
        grant, resource, ent = make_grant(session, s.source, account, "Legacy-DB")
        orphans.append(make_item(session, s.campaign, s.manager, None, account, grant, resource, ent, s.source,
                                 risks=["orphaned"]))
    session.commit()
    login_as(app, client, s.manager_user)
    url = f"/reviews?campaign={s.campaign.id}"
    seen: list[int] = []
    pages = 0
    while url:
        html = _text(client.get(url))
        seen += _ids(html)
        pages += 1
        nxt = re.search(r'class="btn btn-outline-secondary btn-sm js-next-page" href="([^"]+)"', html)
        url = nxt.group(1).replace("&amp;", "&") if nxt else None
        assert "offset" not in (url or "")
    assert pages == 3 and len(seen) == 122 and len(set(seen)) == 122
    expected = session.scalars(select(ReviewItem.id).where(ReviewItem.campaign_id == s.campaign.id, ReviewItem.person_name.is_not(None))
                               .order_by(ReviewItem.person_name, ReviewItem.id)).all() + [o.id for o in orphans]
    assert seen == list(expected)
    assert client.get(f"/reviews?campaign={s.campaign.id}&after=not-a-cursor").status_code == 400


def test_htmx_filter_and_page_requests_get_the_fragment_only(app, client, session, setup):
    login_as(app, client, setup.manager_user)
    response = client.get(f"/reviews?campaign={setup.campaign.id}&risk=flagged", headers={**HX, "HX-Target": "inbox-items"})
    html = _text(response)
    assert response.status_code == 200 and html.lstrip().startswith('<div id="inbox-items">') and "<html" not in html
    assert _ids(html) == [setup.items[0].id]


def test_decide_with_htmx_returns_the_row_and_the_progress(app, client, session, setup, nocsrf):
    login_as(app, client, setup.manager_user)
    item = setup.items[1]
    response = client.post(f"/reviews/items/{item.id}/decide", data={"decision": "approve", "version": "1"}, headers=HX)
    html = _text(response)
    assert response.status_code == 200 and "<html" not in html
    assert html.lstrip().startswith(f'<tr id="item-{item.id}" class="item-row decided-approve"')
    assert 'id="campaign-progress" hx-swap-oob="true"' in html and "<b class=\"js-decided\">1</b> of 6 decided" in html
    assert 'name="version" value="2"' in html
    # revoke without a comment: 400 with the row and the message, nothing changed
    response = client.post(f"/reviews/items/{item.id}/decide", data={"decision": "revoke", "version": "2"}, headers=HX)
    assert response.status_code == 400 and "needs a comment" in _text(response) and f'id="item-{item.id}"' in _text(response)
    # a stale version (someone decided meanwhile): 409, the row shows the current state
    response = client.post(f"/reviews/items/{item.id}/decide", data={"decision": "revoke", "comment": "x", "version": "1"}, headers=HX)
    assert response.status_code == 409 and "Someone else changed this item" in _text(response)
    session.expire_all()
    assert session.get(ReviewItem, item.id).decision == "approve"
    assert session.scalar(select(func.count()).select_from(Decision).where(Decision.item_id == item.id)) == 1


def test_a_decision_request_reads_what_it_needs_once_and_writes_in_one_update(app, client, session, setup, nocsrf):
    """Issue 19: the request reviewers make most. Its write is the campaign read, one UPDATE ... RETURNING of the
    item (no SELECT ... FOR UPDATE before it, no separate read of the account for the eligibility rule), the
    decision row and the audit event; its answer does not read the campaign again and takes the progress
    counts and the sign-off in one statement."""
    login_as(app, client, setup.manager_user)
    client.post(f"/reviews/items/{setup.items[1].id}/decide", data={"decision": "approve", "version": "1"}, headers=HX)
    statements: list[str] = []
    engine = session.get_bind().engine

    def seen(_conn, _cursor, statement, *_args):
        statements.append(" ".join(statement.split()))

    event.listen(engine, "before_cursor_execute", seen)
    try:
        response = client.post(f"/reviews/items/{setup.items[2].id}/decide", data={"decision": "approve", "version": "1"},
                               headers=HX)
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    assert response.status_code == 200 and "<b class=\"js-decided\">2</b> of 6 decided" in _text(response)
    sql = [s for s in statements if not s.startswith(("SAVEPOINT", "RELEASE", "ROLLBACK"))]
    # the audit chain's head is the one row locked (on PostgreSQL in the chain's one statement), never the item
    assert not [s for s in sql if "FOR UPDATE" in s and not s.startswith("WITH head AS (SELECT audit_head.")]
    assert not [s for s in sql if s.startswith("SELECT account.")]
    assert len([s for s in sql if re.match(r"SELECT campaign\.id\b.* FROM campaign\b", s)]) == 1
    assert len([s for s in sql if "reviewer_signoff" in s]) == 1 and [s for s in sql if "reviewer_signoff" in s][0] == \
        [s for s in sql if "count(*)" in s][0]
    writes = [" ".join(s.split()[:3]) for s in sql if s.startswith(("UPDATE", "INSERT", "WITH head"))]
    # the audit event: on PostgreSQL one statement locks the head, appends the event and moves the head
    # (attest/trail/chain.py); on SQLite, whose write lock the transaction holds anyway, three
    audit = (["WITH head AS"] if dialects.is_postgresql(session) else
             ["UPDATE audit_head SET", "INSERT INTO audit_event", "UPDATE audit_head SET"])
    assert writes == ["UPDATE review_item SET", "INSERT INTO review_decision", *audit]
    # the user with their session, the 6 of the write, the counts, the row's notes (2): 15 before
    assert len(sql) <= 10, sql


def test_decide_without_htmx_redirects_back_to_the_filtered_inbox(app, client, session, setup, nocsrf):
    login_as(app, client, setup.manager_user)
    response = client.post(f"/reviews/items/{setup.items[0].id}/decide",
                           data={"decision": "revoke", "comment": "Not in finance any more", "risk": "flagged"})
    assert response.status_code == 302 and "risk=flagged" in response.headers["Location"]
    session.expire_all()
    assert session.get(ReviewItem, setup.items[0].id).comment == "Not in finance any more"


def test_bulk_approve_not_flagged_then_sign_off(app, client, session, setup, nocsrf):
    login_as(app, client, setup.manager_user)
    cid = setup.campaign.id
    response = client.post(f"/reviews/campaigns/{cid}/signoff")
    assert response.status_code == 302
    assert "still need a decision" in _text(client.get(response.headers["Location"]))
    response = client.post(f"/reviews/campaigns/{cid}/bulk", data={"scope": "unflagged", "bulk_decision": "approve"})
    assert response.status_code == 302
    page = _text(client.get(response.headers["Location"]))
    assert "Approved 5 items." in page
    session.expire_all()
    decided = dict(session.execute(select(ReviewItem.id, ReviewItem.decision).where(ReviewItem.campaign_id == cid)).all())
    assert decided[setup.items[0].id] is None and sum(1 for v in decided.values() if v == "approve") == 5
    client.post(f"/reviews/items/{setup.items[0].id}/decide", data={"decision": "revoke", "comment": "left the team"})
    response = client.post(f"/reviews/campaigns/{cid}/signoff")
    assert "Signed off" in _text(client.get(response.headers["Location"]))
    assert session.scalar(select(func.count()).select_from(ReviewerSignoff)) == 1


def test_bulk_over_a_filtered_selection(app, client, session, setup, nocsrf):
    login_as(app, client, setup.manager_user)
    cid = setup.campaign.id
    page = _text(client.get(f"/reviews?campaign={cid}&q=alice"))
    # Alice's first item is privileged (flagged): the bulk approval leaves it for a decision of its own
    assert "Approve 1 matching" in page and "1 flagged item" in page
    response = client.post(f"/reviews/campaigns/{cid}/bulk",
                           data={"scope": "filtered", "bulk_decision": "approve", "q": "alice"})
    session.expire_all()
    rows = session.execute(select(ReviewItem.id, ReviewItem.person_name, ReviewItem.decision)
                           .where(ReviewItem.campaign_id == cid)).all()
    assert sorted((i, n, d) for i, n, d in rows if d) == [(setup.items[1].id, "Alice Archer", "approve")]
    flashed = _text(client.get(response.headers["Location"]))
    assert "Approved 1 item." in flashed and "flagged for a closer look" in flashed


def test_someone_elses_item_or_campaign_is_404(app, client, session, setup, nocsrf):
    _, other = add_reviewer(session, "olga.other@acme.example", "Olga Other")
    session.commit()
    login_as(app, client, other)
    item, cid = setup.items[0], setup.campaign.id
    assert client.get(f"/reviews/items/{item.id}").status_code == 404
    assert client.get(f"/reviews/items/{item.id + 10_000}").status_code == 404
    assert client.get(f"/reviews?campaign={cid}").status_code == 404
    # the item list alone (htmx: a filter, the next page) counts only that campaign, and is as secret
    assert client.get(f"/reviews?campaign={cid}", headers={**HX, "HX-Target": "inbox-items"}).status_code == 404
    assert client.post(f"/reviews/items/{item.id}/decide", data={"decision": "approve"}).status_code == 404
    assert client.post(f"/reviews/items/{item.id}/decide", data={"decision": "approve"}, headers=HX).status_code == 404
    assert client.post(f"/reviews/items/{item.id}/reassign", data={"to": "olga.other@acme.example", "reason": "x"}).status_code == 404
    assert client.post(f"/reviews/campaigns/{cid}/bulk", data={"scope": "unflagged"}).status_code == 404
    assert client.post(f"/reviews/campaigns/{cid}/signoff").status_code == 404
    # admin pages are not for reviewers at all
    assert client.get("/campaigns").status_code == 403
    assert client.get(f"/campaigns/{cid}").status_code == 403
    session.expire_all()
    assert session.get(ReviewItem, item.id).decision is None


def test_auditor_reads_campaigns_but_every_write_is_refused(app, client, session, setup, nocsrf):
    auditor = make_user(session, "audrey@acme.example", roles=["auditor"])
    session.commit()
    login_as(app, client, auditor)
    item, cid = setup.items[0], setup.campaign.id
    assert client.get("/campaigns").status_code == 200
    page = _text(client.get(f"/campaigns/{cid}"))
    assert "Maria Manager" in page and "Close campaign" not in page and "Remind now" not in page and "Move</button>" not in page
    assert client.get(f"/reviews/items/{item.id}").status_code == 200  # auditors read every item
    writes = [
        (f"/reviews/items/{item.id}/decide", {"decision": "approve"}),
        (f"/reviews/items/{item.id}/reassign", {"to": setup.people[1].email, "reason": "x"}),
        (f"/reviews/campaigns/{cid}/bulk", {"scope": "unflagged"}),
        (f"/reviews/campaigns/{cid}/signoff", {}),
        (f"/campaigns/{cid}/close", {}),
        (f"/campaigns/{cid}/remind", {}),
        (f"/campaigns/{cid}/reassign", {"from_reviewer": setup.manager.id, "to": setup.people[1].email, "reason": "x"}),
        ("/campaigns/definitions/new", {"mode": "yaml", "yaml": "name: x\n"}),
        ("/campaigns/definitions/preview", {"mode": "yaml", "yaml": "name: x\n"}),
        ("/campaigns/definitions/1", {"mode": "yaml", "yaml": "name: x\n"}),
        ("/campaigns/definitions/1/launch", {}),
    ]
    for url, data in writes:
        assert client.post(url, data=data).status_code in (403, 404), url
        assert client.post(url, data=data).status_code != 404 or "/reviews/" in url, url
    session.expire_all()
    assert session.get(ReviewItem, item.id).decision is None and session.get(ReviewItem, item.id).version == 1


def test_csrf_is_enforced_on_decisions(app, client, session, setup):
    login_as(app, client, setup.manager_user)
    item = setup.items[1]
    response = client.post(f"/reviews/items/{item.id}/decide", data={"decision": "approve"})
    assert response.status_code == 400 and "CSRF" in _text(response)
    response = client.post(f"/reviews/items/{item.id}/decide", data={"decision": "approve"}, headers=HX)
    assert response.status_code == 400
    session.expire_all()
    assert session.get(ReviewItem, item.id).decision is None
    page = _text(client.get("/reviews"))
    token = re.search(r'<meta name="csrf-token" content="([^"]+)"', page).group(1)
    assert f'name="csrf_token" value="{token}"' in page  # every form carries it
    response = client.post(f"/reviews/items/{item.id}/decide", data={"decision": "approve"}, headers={**HX, "X-CSRFToken": token})
    assert response.status_code == 200
    for path in (f"/reviews/campaigns/{setup.campaign.id}/bulk", f"/reviews/campaigns/{setup.campaign.id}/signoff"):
        assert client.post(path, data={"scope": "unflagged"}).status_code == 400


def _row(html: str, item_id: int) -> str:
    return re.search(rf'<tr id="item-{item_id}".*?</tr>', html, re.S).group(0)


def _hidden(html: str, form_id: str) -> dict[str, str]:
    form = re.search(rf'<form id="{form_id}"[^>]*>(.*?)</form>', html, re.S).group(1)
    return dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', form))


def test_rows_post_without_javascript_and_htmx_answers_leave_the_token_to_the_header(app, client, session, setup):
    login_as(app, client, setup.manager_user)
    item, other = setup.items[1], setup.items[2]
    page = _text(client.get("/reviews"))
    token = re.search(r'<meta name="csrf-token" content="([^"]+)"', page).group(1)
    row = _row(page, item.id)
    # the full page: the row's forms carry the token, and its buttons name their decision and form
    assert row.count(f'name="csrf_token" value="{token}"') == 2  # the row's own form, and Revoke's with its comment box
    assert f'<button form="f{item.id}" name="decision" value="approve"' in row
    assert f'<button form="f{item.id}" name="decision" value="abstain"' in row
    # without JavaScript, Abstain posts the row's form as it is, with its own decision
    response = client.post(f"/reviews/items/{item.id}/decide", data={**_hidden(row, f"f{item.id}"), "decision": "abstain"})
    assert response.status_code == 302
    session.expire_all()
    assert session.get(ReviewItem, item.id).decision == "abstain"
    # an answer to htmx (a decision, the next page) has no token in its rows: htmx sends the page's in a header
    answer = _text(client.post(f"/reviews/items/{other.id}/decide", data={"decision": "approve", "version": "1"},
                               headers={**HX, "X-CSRFToken": token}))
    assert "csrf_token" not in _row(answer, other.id) and 'method="post"' not in _row(answer, other.id)
    undo = client.post(f"/reviews/items/{other.id}/undo", data=_hidden(answer, f"f{other.id}"),
                       headers={**HX, "X-CSRFToken": token})
    assert undo.status_code == 200 and "csrf_token" not in _row(_text(undo), other.id)
    fragment = _text(client.get(f"/reviews?campaign={setup.campaign.id}", headers={**HX, "HX-Target": "inbox-items"}))
    assert _ids(fragment) and 'name="csrf_token"' not in "".join(_row(fragment, i) for i in _ids(fragment))
    session.expire_all()
    assert session.get(ReviewItem, other.id).decision is None


def test_reassign_form_opens_in_the_row_or_on_its_own_page(app, client, session, setup):
    rita, _rita_user = add_reviewer(session, "rita.reviewer@acme.example", "Rita Reviewer")
    session.commit()
    login_as(app, client, setup.manager_user)
    item = setup.items[2]
    row = _row(_text(client.get("/reviews")), item.id)
    link = re.search(r'<a class="small js-reassign-form" href="([^"]+)"', row).group(1)
    assert link == f"/reviews/items/{item.id}/reassign?version=1"
    # opened in the row (htmx): the form alone, with the row's version, its token in htmx's header
    fragment = _text(client.get(link, headers=HX))
    assert "<html" not in fragment and f'hx-post="/reviews/items/{item.id}/reassign"' in fragment
    assert 'name="version" value="1"' in fragment and "csrf_token" not in fragment
    # without JavaScript: a page of its own whose plain form (with the token) reassigns and goes back to the inbox
    page = _text(client.get(link))
    assert "<html" in page and "Reassign Bob Baker: " in page and "hx-post" not in page.split("<main", 1)[1]
    form = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', page.split('class="mt-2 reassign-form"')[1]))
    assert set(form) == {"csrf_token", "version"}
    response = client.post(f"/reviews/items/{item.id}/reassign", data={**form, "to": rita.email, "reason": "Rita runs it"})
    assert response.status_code == 302
    session.expire_all()
    assert session.get(ReviewItem, item.id).reviewer_id == rita.id
    assert client.get(link, headers=HX).status_code == 404  # no longer Maria's


def test_reassign_from_the_inbox(app, client, session, setup, nocsrf):
    rita, rita_user = add_reviewer(session, "rita.reviewer@acme.example", "Rita Reviewer")
    session.commit()
    login_as(app, client, setup.manager_user)
    item = setup.items[2]
    response = client.post(f"/reviews/items/{item.id}/reassign", data={"to": "nobody@acme.example", "reason": "x"}, headers=HX)
    assert response.status_code == 400 and "Nobody in the directory" in _text(response)
    response = client.post(f"/reviews/items/{item.id}/reassign", data={"to": "RITA.reviewer@acme.example", "reason": "Rita runs it"}, headers=HX)
    assert response.status_code == 200 and "Reassigned to Rita Reviewer" in _text(response)
    assert client.get(f"/reviews/items/{item.id}").status_code == 404  # no longer Maria's
    login_as(app, client, rita_user)
    page = _text(client.get("/reviews"))
    assert _ids(page) == [item.id] and "Bob Baker" in page


def test_escalated_items_have_their_own_tab(app, client, session, setup, nocsrf):
    boss, boss_user = add_reviewer(session, "bea.boss@acme.example", "Bea Boss")
    setup.items[3].co_reviewer_id = boss.id
    session.commit()
    login_as(app, client, boss_user)
    page = _text(client.get(f"/reviews?campaign={setup.campaign.id}&role=co_reviewer"))
    assert _ids(page) == [setup.items[3].id] and "1 escalated to you" in page
    page = _text(client.get("/reviews"))  # only escalated items: they are what the inbox shows
    assert _ids(page) == [setup.items[3].id] and "js-signoff" not in page
    assert client.post(f"/reviews/items/{setup.items[3].id}/decide", data={"decision": "approve"}, headers=HX).status_code == 200
    assert client.get(f"/reviews/items/{setup.items[0].id}").status_code == 404


def test_closed_campaign_is_read_only_in_the_inbox(app, client, session, setup, nocsrf):
    setup.campaign.status = "closed"
    session.commit()
    login_as(app, client, setup.manager_user)
    page = _text(client.get(f"/reviews?campaign={setup.campaign.id}"))
    assert "js-approve" not in page and "Sign off" not in page and "closed" in page
    # its item list alone (htmx: a filter, the next page) stays readable too, still without decision buttons
    fragment = _text(client.get(f"/reviews?campaign={setup.campaign.id}&decision=undecided",
                                headers={**HX, "HX-Target": "inbox-items"}))
    assert fragment.lstrip().startswith('<div id="inbox-items">') and _ids(fragment) and "js-approve" not in fragment
    response = client.post(f"/reviews/items/{setup.items[0].id}/decide", data={"decision": "approve"})
    assert response.status_code == 400 and "is closed: decisions can no longer be changed" in _text(response)


def test_admin_dashboard_progress_overdue_escalations_and_reassign(app, client, session, setup, nocsrf):
    from datetime import timedelta

    from attest.db import utcnow

    admin = make_user(session, "root@acme.example", roles=["admin"])
    boss, _ = add_reviewer(session, "bea.boss@acme.example", "Bea Boss")
    rita, _ = add_reviewer(session, "rita.reviewer@acme.example", "Rita Reviewer")
    setup.campaign.due_at = utcnow() - timedelta(days=3)
    setup.items[0].co_reviewer_id = boss.id
    session.commit()
    login_as(app, client, admin)
    page = _text(client.get("/campaigns"))
    assert "Q3 access review" in page and "overdue" in page
    page = _text(client.get(f"/campaigns/{setup.campaign.id}"))
    assert "Maria Manager" in page and "overdue" in page and "1 items → Bea Boss" in page and "Close campaign" in page
    response = client.post(f"/campaigns/{setup.campaign.id}/reassign",
                           data={"from_reviewer": setup.manager.id, "to": "rita.reviewer@acme.example", "reason": "Maria on leave"})
    assert "Moved 6 open items to Rita Reviewer" in _text(client.get(response.headers["Location"]))
    assert client.get("/campaigns/999999").status_code == 404


# --- admin: definitions, preview, launch, close, remind ---------------------------------------------------

YAML_OK = """name: Finance quarterly
description: Finance apps, certified by managers
scope:
  resource_names: ["Finance-*"]
stages:
  - reviewer: manager
rules:
  comment_required: on_revoke
controls: ["SOC 2 CC6.2"]
"""


@pytest.fixture
def admin(session, setup):
    user = make_user(session, "root@acme.example", roles=["admin"])
    session.commit()
    return user


def test_definition_by_yaml_with_errors_naming_field_and_line(app, client, session, admin, nocsrf):
    login_as(app, client, admin)
    assert 'name="yaml"' in _text(client.get("/campaigns/definitions/new?mode=yaml"))
    bad = YAML_OK.replace("resource_names", "resource_namez")
    response = client.post("/campaigns/definitions/new", data={"mode": "yaml", "yaml": bad})
    html = _text(response)
    assert response.status_code == 400 and "scope.resource_namez" in html and "(line 4)" in html
    assert "resource_namez" in html  # the text is kept for fixing
    response = client.post("/campaigns/definitions/new", data={"mode": "yaml", "yaml": YAML_OK})
    assert response.status_code == 302
    from attest.reviews.models import CampaignDefinition

    definition = session.scalar(select(CampaignDefinition).where(CampaignDefinition.name == "Finance quarterly"))
    assert definition.spec["scope"]["resource_names"] == ["Finance-*"] and definition.source_yaml == YAML_OK
    page = _text(client.get(response.headers["Location"]))
    assert "Finance quarterly" in page and "Launch a campaign" in page


def test_definition_by_form_and_edit(app, client, session, setup, admin, nocsrf):
    login_as(app, client, admin)
    assert 'name="stage1"' in _text(client.get("/campaigns/definitions/new"))
    form = {"mode": "form", "name": "Privileged monthly", "privileged_only": "on", "include_orphaned": "on",
            "stage1": "manager", "stage2": "identity", "stage2_identity": setup.manager.email,
            "duration_days": "7", "reminders_days_before_due": "3, 1", "comment_required": "always",
            "no_response": "revoke", "remediation": "manual", "controls": "SOC 2 CC6.2, SOX ITGC", "sources": setup.source.name}
    response = client.post("/campaigns/definitions/new", data=form)
    assert response.status_code == 302, _text(response)
    from attest.reviews.models import CampaignDefinition

    d = session.scalar(select(CampaignDefinition).where(CampaignDefinition.name == "Privileged monthly"))
    assert d.spec["scope"]["privileged_only"] is True and d.spec["scope"]["sources"] == [setup.source.name]
    assert [s["reviewer"] for s in d.spec["stages"]] == ["manager", "identity"]
    assert d.spec["timing"]["reminders_days_before_due"] == [3, 1] and d.spec["rules"]["comment_required"] == "always"
    assert d.spec["controls"] == ["SOC 2 CC6.2", "SOX ITGC"]
    response = client.post(f"/campaigns/definitions/{d.id}", data={**form, "duration_days": "many"})
    assert response.status_code == 400 and "timing.duration_days" in _text(response)
    response = client.post(f"/campaigns/definitions/{d.id}", data={**form, "duration_days": "10"})
    assert response.status_code == 302
    session.expire_all()
    assert session.get(CampaignDefinition, d.id).spec["timing"]["duration_days"] == 10


def test_live_preview_launch_dashboard_remind_and_close(app, client, session, setup, admin, nocsrf):
    login_as(app, client, admin)
    preview = _text(client.post("/campaigns/definitions/preview", data={"mode": "yaml", "yaml": YAML_OK}, headers=HX))
    assert "preview-ok" in preview and "Maria Manager" in preview and ">6 <" in preview.replace("\n", "")
    broken = _text(client.post("/campaigns/definitions/preview", data={"mode": "yaml", "yaml": "name: x\nstages: 3\n"}, headers=HX))
    assert "preview-error" in broken and "stages" in broken
    client.post("/campaigns/definitions/new", data={"mode": "yaml", "yaml": YAML_OK})
    from attest.reviews.models import Campaign, CampaignDefinition

    d = session.scalar(select(CampaignDefinition).where(CampaignDefinition.name == "Finance quarterly"))
    response = client.post(f"/campaigns/definitions/{d.id}/launch")
    assert response.status_code == 302
    page = _text(client.get(response.headers["Location"]))
    assert "Launched" in page and "Maria Manager" in page and "Close campaign" in page
    campaign = session.scalar(select(Campaign).where(Campaign.definition_id == d.id))
    assert campaign.status == "active"
    response = client.post(f"/campaigns/{campaign.id}/remind")
    assert response.status_code == 302
    assert "reminder" in _text(client.get(response.headers["Location"])).lower()
    # nothing is decided: below the completion threshold (100% by default) the close needs a reason
    response = client.post(f"/campaigns/{campaign.id}/close")
    assert "say why the campaign is closed now" in _text(client.get(response.headers["Location"]))
    session.expire_all()
    assert session.get(Campaign, campaign.id).status == "active"
    response = client.post(f"/campaigns/{campaign.id}/close", data={"reason": "Auditor needs the evidence today"})
    page = _text(client.get(response.headers["Location"]))
    assert "Closed Finance quarterly" in page
    session.expire_all()
    assert session.get(Campaign, campaign.id).status == "closed"
    response = client.post(f"/campaigns/{campaign.id}/close")
    assert "only an active campaign can be closed" in _text(client.get(response.headers["Location"]))


def test_approving_on_a_first_stage_passes_the_item_on(app, client, session, nocsrf):
    owner, owner_user = add_reviewer(session, "olivia.owner@acme.example", "Olivia Owner")
    s = review_setup(session, spec={"stages": [{"reviewer": "manager"},
                                               {"reviewer": "identity", "identity": "olivia.owner@acme.example"}]})
    session.commit()
    login_as(app, client, s.manager_user)
    item = s.items[1]
    response = client.post(f"/reviews/items/{item.id}/decide", data={"decision": "approve"}, headers=HX)
    html = _text(response)
    assert response.status_code == 200 and "passed on to Olivia Owner for stage 2" in html
    assert "<b class=\"js-decided\">0</b> of 5 decided" in html  # the item left Maria's list
    login_as(app, client, owner_user)
    assert _ids(_text(client.get("/reviews"))) == [item.id]


def test_admin_routes_unroutable_items(app, client, session, setup, nocsrf):
    admin = make_user(session, "root@acme.example", roles=["admin"])
    rita, _ = add_reviewer(session, "rita.reviewer@acme.example", "Rita Reviewer")
    for item in setup.items[:2]:
        item.reviewer_id = None
        item.routed_by = "unroutable"
    session.commit()
    login_as(app, client, admin)
    page = _text(client.get(f"/campaigns/{setup.campaign.id}"))
    assert "Admin queue" in page and "2 items have no reviewer" in page and "Route them" in page
    response = client.post(f"/campaigns/{setup.campaign.id}/reassign",
                           data={"from_reviewer": "unroutable", "to": "rita.reviewer@acme.example", "reason": "Finance apps owner"})
    assert "Moved 2 open items to Rita Reviewer" in _text(client.get(response.headers["Location"]))
    session.expire_all()
    assert {session.get(ReviewItem, i.id).reviewer_id for i in setup.items[:2]} == {rita.id}
