"""A manager's daily pages on the web (issue 20, part 4): My team (only one's own reports), delegation
(the delegate sees and decides, never their own access), undo (only by whoever decided), reassigning a
filtered set, what a revoke of group- or rule-held access becomes, readable names, the app's last use,
the risk legend and counts that follow each decision. Forged posts without the CSRF token change nothing."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlalchemy import select

from attest.db import utcnow
from attest.entitlements.models import Account, Entitlement, Grant, Resource
from attest.reviews import decisions
from attest.reviews.models import Delegation, ReviewItem
from attest.trail.models import AuditEvent
from tests.factories import login_as, make_identity
from tests.reviews.factories import add_reviewer, make_grant, make_item, review_setup

HX = {"HX-Request": "true"}



@pytest.fixture
def setup(session):
    s = review_setup(session, people=3, per_person=2)
    colleague = add_reviewer(session, "colin.colleague@acme.example", "Colin Colleague")
    # an indirect report (reports to Alice, who reports to the manager) with an account and access
    alice = s.people[0]
    ivy = make_identity(session, "ivy.indirect@acme.example", name="Ivy Indirect", manager=alice)
    account = Account(source_id=s.source.id, external_id="ivy", login="ivy.indirect", email=ivy.email,
                      identity_id=ivy.id, kind="human", mfa_enabled=False)
    session.add(account)
    session.flush()
    make_grant(session, s.source, account, "Treasury", entitlement="admin", privileged=True)
    # an item about the colleague's own access, in the manager's inbox
    colleague_account = Account(source_id=s.source.id, external_id="colin", login="colin", identity_id=colleague[0].id,
                                email=colleague[0].email, kind="human")
    session.add(colleague_account)
    session.flush()
    grant, resource, ent = make_grant(session, s.source, colleague_account, "Colin-Payroll")
    s.extra["about_colleague"] = make_item(session, s.campaign, s.manager, colleague[0], colleague_account, grant,
                                           resource, ent, s.source)
    s.extra["colleague"] = colleague
    s.extra["ivy"] = ivy
    other = review_setup(session, manager_email="oscar.other@acme.example", campaign_name="Other review")
    other.people[0].display_name = "Olive Otherteam"
    s.extra["other"] = other
    session.commit()
    return s


def _text(response) -> str:
    return response.get_data(as_text=True)


def _events(session, action):
    return session.scalars(select(AuditEvent).where(AuditEvent.action == action)).all()


def _delegate(session, setup):
    now = utcnow()
    row = Delegation(delegator_id=setup.manager.id, delegate_id=setup.extra["colleague"][0].id,
                     starts_at=now - timedelta(hours=1), ends_at=now + timedelta(days=5), created_by="x")
    session.add(row)
    session.commit()
    return row


# --- My team ----------------------------------------------------------------------------------------------


def test_my_team_shows_direct_and_indirect_reports_risk_first_and_only_mine(app, client, session, setup):
    login_as(app, client, setup.manager_user)
    home = _text(client.get("/reviews"))
    assert 'href="/team">My team</a>' in home
    page = _text(client.get("/team"))
    names = re.findall(r'<a class="fw-semibold" href="/team/\d+">([^<]+)</a>', page)
    assert set(names) == {"Alice Archer", "Bob Baker", "Carol Chen", "Ivy Indirect"}
    assert names[0] == "Ivy Indirect"  # privileged admin access without MFA: the riskiest first
    assert "reports to Alice Archer" in page and "Olive Otherteam" not in page
    assert "What the risk badges mean" in page

    ivy = setup.extra["ivy"]
    person = _text(client.get(f"/team/{ivy.id}"))
    assert "Treasury" in person and ">privileged<" in person and ">no MFA<" in person and "What did they have on" in person
    assert client.get(f"/team/{ivy.id}?on=2020-01-31").status_code == 200
    other = setup.extra["other"]
    for foreign in (other.people[0].id, other.manager.id, setup.manager.id, 987654321):
        assert client.get(f"/team/{foreign}").status_code == 404

    # someone without reports: no menu entry, an empty page
    login_as(app, client, setup.extra["colleague"][1])
    assert 'href="/team"' not in _text(client.get("/reviews"))
    assert "Nobody in the directory reports to you" in _text(client.get("/team"))


# --- delegation ---------------------------------------------------------------------------------------------------


def test_delegation_from_the_page_lets_the_colleague_decide_on_my_behalf(nocsrf, client, session, setup):
    colleague, colleague_user = setup.extra["colleague"]
    login_as(nocsrf, client, setup.manager_user)
    today = utcnow().date()
    r = client.post("/reviews/delegation", data={"to": colleague.email, "starts": today.isoformat(),
                                                 "ends": (today + timedelta(days=3)).isoformat(), "reason": "holiday"})
    assert r.status_code == 303
    page = _text(client.get("/reviews/delegation"))
    assert "Colin Colleague" in page and "End now" in page
    [ev] = _events(session, "review.delegate")
    assert ev.after["delegate"] == colleague.email and ev.after["reason"] == "holiday"

    login_as(nocsrf, client, colleague_user)
    inbox = _text(client.get("/reviews"))
    assert "You review for <b>Maria Manager</b>" in inbox
    theirs = _text(client.get(f"/reviews/for/{setup.manager.id}"))
    assert "Reviews for Maria Manager" in theirs
    assert "Alice Archer" in theirs and "Colin-Payroll" not in theirs
    assert "1 item is about your own access: it stays with Maria Manager" in theirs
    # sign-off and reassigning stay the manager's; the bulk bar decides on the manager's behalf
    assert "js-signoff" not in theirs and "reassign-box" not in theirs
    assert f'action="/reviews/for/{setup.manager.id}/campaigns/{setup.campaign.id}/bulk"' in theirs

    item = setup.items[1]
    r = client.post(f"/reviews/items/{item.id}/decide", data={"decision": "approve"}, headers=HX)
    assert r.status_code == 200 and "by you as delegate" in _text(r)
    session.expire_all()
    row = session.get(ReviewItem, item.id)
    assert (row.decision, row.decided_by_identity_id, row.decided_for_identity_id) == ("approve", colleague.id,
                                                                                         setup.manager.id)
    # never their own access, not even by a hand-made post
    about = setup.extra["about_colleague"]
    assert client.post(f"/reviews/items/{about.id}/decide", data={"decision": "approve"}).status_code == 404
    assert client.get(f"/reviews/items/{about.id}").status_code == 404
    session.expire_all()
    assert session.get(ReviewItem, about.id).decision is None
    # another manager's inbox is no one's to stand in for
    assert client.get(f"/reviews/for/{setup.extra['other'].manager.id}").status_code == 404


def test_a_delegation_to_oneself_is_refused_and_ending_it_takes_the_items_back(nocsrf, client, session, setup):
    login_as(nocsrf, client, setup.manager_user)
    today = utcnow().date().isoformat()
    r = client.post("/reviews/delegation", data={"to": setup.manager.email, "starts": today, "ends": today})
    assert r.status_code == 400 and "You cannot delegate to yourself" in _text(r)
    assert f'value="{setup.manager.email}"' in _text(r)  # the form keeps what was typed
    assert session.scalars(select(Delegation)).all() == []
    row = _delegate(session, setup)
    colleague_user = setup.extra["colleague"][1]
    login_as(nocsrf, client, colleague_user)
    assert client.get(f"/reviews/for/{setup.manager.id}").status_code == 200
    login_as(nocsrf, client, colleague_user)
    assert client.post(f"/reviews/delegation/{row.id}/end").status_code == 404  # not theirs to end
    login_as(nocsrf, client, setup.manager_user)
    assert client.post(f"/reviews/delegation/{row.id}/end").status_code == 303
    assert len(_events(session, "review.delegation_end")) == 1
    login_as(nocsrf, client, colleague_user)
    assert client.get(f"/reviews/for/{setup.manager.id}").status_code == 404
    assert client.post(f"/reviews/items/{setup.items[1].id}/decide", data={"decision": "approve"}).status_code == 404


# --- undo ------------------------------------------------------------------------------------------------------


def test_undo_from_the_row_and_counts_that_follow_each_decision(nocsrf, client, session, setup):
    login_as(nocsrf, client, setup.manager_user)
    item = setup.items[1]
    cid = setup.campaign.id
    r = _text(client.post(f"/reviews/items/{item.id}/decide", data={"decision": "approve"}, headers=HX))
    assert "js-undo" in r
    # the sidebar's count and the progress bar are swapped out of band
    assert f'<span id="card-count-{cid}" hx-swap-oob="true">1/7 decided</span>' in r
    assert 'id="campaign-progress" hx-swap-oob="true"' in r
    r = _text(client.post(f"/reviews/items/{item.id}/undo", headers=HX))
    assert f'<span id="card-count-{cid}" hx-swap-oob="true">0/7 decided</span>' in r and "js-undo" not in r
    session.expire_all()
    assert session.get(ReviewItem, item.id).decision is None
    assert len(_events(session, "review.undo")) == 1


def test_undo_by_someone_else_is_refused(nocsrf, client, session, setup):
    item = setup.items[1]
    _delegate(session, setup)
    decisions.decide(session, setup.manager_user, item.id, "approve")
    session.commit()
    login_as(nocsrf, client, setup.extra["colleague"][1])  # the delegate sees it, but did not decide it
    assert "js-undo" not in _text(client.get(f"/reviews/for/{setup.manager.id}"))
    assert client.post(f"/reviews/items/{item.id}/undo").status_code == 403
    login_as(nocsrf, client, setup.extra["other"].manager_user)
    assert client.post(f"/reviews/items/{item.id}/undo").status_code == 404
    session.expire_all()
    assert session.get(ReviewItem, item.id).decision == "approve" and _events(session, "review.undo") == []


def test_forged_posts_without_the_csrf_token_change_nothing(app, client, session, setup):
    assert app.config.get("WTF_CSRF_ENABLED", True)
    item = setup.items[1]
    decisions.decide(session, setup.manager_user, item.id, "approve")
    session.commit()
    login_as(app, client, setup.manager_user)
    today = utcnow().date().isoformat()
    forged = [(f"/reviews/items/{item.id}/undo", {}),
              ("/reviews/delegation", {"to": setup.extra["colleague"][0].email, "starts": today, "ends": today}),
              (f"/reviews/campaigns/{setup.campaign.id}/reassign-mine",
               {"to": setup.extra["colleague"][0].email, "reason": "x"})]
    for path, data in forged:
        assert client.post(path, data=data).status_code == 400, path
    session.expire_all()
    assert session.get(ReviewItem, item.id).decision == "approve"
    assert session.scalars(select(Delegation)).all() == []
    assert {i.reviewer_id for i in session.scalars(select(ReviewItem).where(
        ReviewItem.campaign_id == setup.campaign.id))} == {setup.manager.id}
    assert not (_events(session, "review.undo") or _events(session, "review.reassign") or _events(session, "review.delegate"))


# --- reassign mine ------------------------------------------------------------------------------------------


def test_reassign_the_filtered_items_with_a_reason(nocsrf, client, session, setup):
    colleague = setup.extra["colleague"][0]
    login_as(nocsrf, client, setup.manager_user)
    page = _text(client.get(f"/reviews?campaign={setup.campaign.id}&q=Bob"))
    assert "Reassign the undecided items matching these filters" in page
    r = client.post(f"/reviews/campaigns/{setup.campaign.id}/reassign-mine",
                    data={"q": "Bob", "to": colleague.email, "reason": "Bob moved to Colin's team"},
                    follow_redirects=True)
    assert "Reassigned 2 items to Colin Colleague" in _text(r)
    session.expire_all()
    moved = session.scalars(select(ReviewItem).where(ReviewItem.reviewer_id == colleague.id)).all()
    assert {i.person_name for i in moved} == {"Bob Baker"}
    assert all(i.reassigned_reason == "Bob moved to Colin's team" for i in moved)
    # all of mine: the item about the colleague stays
    r = client.post(f"/reviews/campaigns/{setup.campaign.id}/reassign-mine",
                    data={"to": colleague.email, "reason": "leave"}, follow_redirects=True)
    assert "Left with you: 1 about the new reviewer&#39;s own access" in _text(r)
    session.expire_all()
    assert session.get(ReviewItem, setup.extra["about_colleague"].id).reviewer_id == setup.manager.id
    assert len(_events(session, "review.reassign")) == 6


# --- what an item row says ------------------------------------------------------------------------------------


def test_rows_name_the_manual_task_the_apps_last_use_readable_names_and_every_path(client, app, session, setup):
    s = setup
    person, account_id = s.people[1], s.items[2].account_id
    account = session.get(Account, account_id)
    team = Resource(source_id=s.source.id, external_id="grp-eng", type="group", name="Engineering", is_group=True)
    team2 = Resource(source_id=s.source.id, external_id="grp-ops", type="group", name="Ops", is_group=True)
    session.add_all([team, team2])
    session.flush()
    grant, resource, ent = make_grant(session, s.source, account, "Wiki", entitlement="CUSTOM on iamEDNIaDbgHJQ0Db2d1")
    ent.display_name = "Wiki editor (resource set Docs)"
    grant.attributes = {"last_sso_at": (utcnow() - timedelta(days=3)).isoformat()}
    via1 = make_item(session, s.campaign, s.manager, person, account, grant, resource, ent, s.source,
                     via="Engineering", via_resource_id=team.id)
    via2 = make_item(session, s.campaign, s.manager, person, account, grant, resource, ent, s.source,
                     via="Ops", via_resource_id=team2.id)
    session.commit()
    login_as(app, client, s.manager_user)
    page = _text(client.get(f"/reviews?campaign={s.campaign.id}&q=Wiki"))
    start = page.index(f'id="item-{via1.id}"')
    row = page[start:page.index("</tr>", start)]
    assert f'id="item-{via2.id}"' not in page  # one row per distinct access, every path listed
    assert "2 paths" in row and f"/reviews/items/{via1.id}/decide-access" in row
    assert "What will happen:</b> a manual task: group &#34;Engineering&#34;" in row or \
        'What will happen:</b> a manual task: group "Engineering"' in row
    assert "Wiki editor (resource set Docs)" in row  # not the raw id
    assert "app last used 3d ago" in row
    assert "also held via Ops" in row
    assert "What the risk badges mean" in page
    assert session.get(Grant, grant.id) is not None and session.get(Entitlement, ent.id) is not None


def test_the_item_page_says_who_decided_for_whom_and_what_was_undone(nocsrf, client, session, setup):
    colleague_user = setup.extra["colleague"][1]
    _delegate(session, setup)
    decisions.decide(session, setup.manager_user, setup.items[1].id, "approve")
    decisions.undo(session, setup.manager_user, setup.items[1].id)
    decisions.decide(session, colleague_user, setup.items[1].id, "approve")
    session.commit()
    login_as(nocsrf, client, setup.manager_user)
    page = _text(client.get(f"/reviews/items/{setup.items[1].id}"))
    assert "Colin Colleague <span class=\"on-behalf\">on behalf of Maria Manager</span>" in page
    assert page.count('class="text-muted undone"') == 1
    login_as(nocsrf, client, colleague_user)  # the delegate is led back to the items they decide for
    page = _text(client.get(f"/reviews/items/{setup.items[1].id}"))
    assert f'href="/reviews/for/{setup.manager.id}?campaign={setup.campaign.id}"' in page


def _held_through_two_groups(session, s, person, account, access):
    """The manager's two items of one access of `person`: through the groups Engineering and Ops."""
    groups = [Resource(source_id=s.source.id, external_id=f"g-{n}", type="group", name=n, is_group=True)
              for n in ("Engineering", "Ops")]
    session.add_all(groups)
    session.flush()
    grant, resource, ent = make_grant(session, s.source, account, access)
    items = [make_item(session, s.campaign, s.manager, person, account, grant, resource, ent, s.source,
                       via=g.name, via_resource_id=g.id) for g in groups]
    session.commit()
    return items


def test_one_row_per_access_decides_and_undoes_every_path(nocsrf, client, session, setup):
    s = setup
    items = _held_through_two_groups(session, s, s.people[1], session.get(Account, s.items[2].account_id), "Wiki")
    login_as(nocsrf, client, s.manager_user)
    r = client.post(f"/reviews/items/{items[0].id}/decide-access", data={"decision": "approve"}, headers=HX)
    assert r.status_code == 200 and "2 paths" in _text(r)
    session.expire_all()
    assert [session.get(ReviewItem, i.id).decision for i in items] == ["approve", "approve"]
    assert len([e for e in _events(session, "review.decide") if e.object_id in {str(i.id) for i in items}]) == 2
    client.post(f"/reviews/items/{items[0].id}/undo", headers=HX)
    session.expire_all()
    assert [session.get(ReviewItem, i.id).decision for i in items] == [None, None]
    # a refusal decides none of them
    r = client.post(f"/reviews/items/{items[0].id}/decide-access", data={"decision": "revoke"}, headers=HX)
    assert r.status_code == 400
    session.expire_all()
    assert [session.get(ReviewItem, i.id).decision for i in items] == [None, None]


def test_a_revoke_of_rule_managed_membership_names_the_rule_before_the_revoke(client, app, session, setup):
    s = setup
    person, account = s.people[2], session.get(Account, s.items[4].account_id)
    grant, resource, ent = make_grant(session, s.source, account, "Sales-All")  # a group filled by a rule
    resource.attributes = {"rules": [{"name": "Everyone in Sales"}]}
    item = make_item(session, s.campaign, s.manager, person, account, grant, resource, ent, s.source)
    plain = s.items[4]
    session.commit()
    login_as(app, client, s.manager_user)
    page = _text(client.get(f"/reviews?campaign={s.campaign.id}&q=Carol"))
    start = page.index(f'id="item-{item.id}"')
    row = page[start:page.index("</tr>", start)]
    assert "What will happen:</b> a manual task: group rule Everyone in Sales assigns membership" in row
    assert "Revoke (r): becomes a manual task" in row
    start = page.index(f'id="item-{plain.id}"')
    assert "What will happen" not in page[start:page.index("</tr>", start)]  # a plain revoke says nothing more


def test_a_delegate_reads_the_same_rows_as_the_reviewer_one_per_access_with_what_a_revoke_does(
        nocsrf, client, session, setup):
    """Standing in for a reviewer shows the reviewer's rows as the reviewer sees them: the same access held through
    two groups is one row naming both paths (deciding it decides both), and the revoke that becomes a manual task
    (remove the person from the group) says so before it is taken."""
    s = setup
    colleague_user = s.extra["colleague"][1]
    _delegate(session, s)
    first, folded = _held_through_two_groups(session, s, s.people[2], session.get(Account, s.items[4].account_id),
                                             "Sales-All")
    pages = []
    for user, url in ((s.manager_user, f"/reviews?campaign={s.campaign.id}&q=Carol"),
                      (colleague_user, f"/reviews/for/{s.manager.id}?campaign={s.campaign.id}&q=Carol")):
        login_as(nocsrf, client, user)
        page = _text(client.get(url))
        assert f'id="item-{folded.id}"' not in page  # folded into the first path's row
        start = page.index(f'id="item-{first.id}"')
        row = page[start:page.index("</tr>", start)]
        assert "also held via Ops" in row
        assert "What will happen:</b> a manual task: group &#34;Engineering&#34;: the access is held through" in row
        actions = row.split('<details class="reassign-box"')[0]  # reassigning stays the reviewer's
        pages.append(re.sub(r'name="csrf_token" value="[^"]*"', "", actions[:actions.rindex("</button>")]))
    assert pages[0] == pages[1]


def test_a_delegate_approves_in_bulk_on_behalf_never_their_own_access(nocsrf, client, session, setup):
    colleague, colleague_user = setup.extra["colleague"]
    _delegate(session, setup)
    login_as(nocsrf, client, colleague_user)
    theirs = _text(client.get(f"/reviews/for/{setup.manager.id}"))
    assert "Approve all 5 not flagged" in theirs  # 5 of the manager's 6 unflagged: not the one about Colin
    r = client.post(f"/reviews/for/{setup.manager.id}/campaigns/{setup.campaign.id}/bulk",
                    data={"scope": "unflagged", "bulk_decision": "approve"}, follow_redirects=True)
    assert "Approved 5 items on behalf of the reviewer." in _text(r)
    session.expire_all()
    items = session.scalars(select(ReviewItem).where(ReviewItem.campaign_id == setup.campaign.id)).all()
    approved = [i for i in items if i.decision == "approve"]
    assert len(approved) == 5 and all(i.decided_by_identity_id == colleague.id and
                                      i.decided_for_identity_id == setup.manager.id for i in approved)
    assert session.get(ReviewItem, setup.extra["about_colleague"].id).decision is None
    events = [e for e in _events(session, "review.decide") if e.after.get("bulk")]
    assert len(events) == 5 and all(e.after["on_behalf_of_id"] == setup.manager.id for e in events)
    # without the delegation (or for someone else's reviewer) there is nothing to post to
    other = setup.extra["other"]
    assert client.post(f"/reviews/for/{other.manager.id}/campaigns/{other.campaign.id}/bulk",
                       data={"scope": "unflagged"}).status_code == 404
    login_as(nocsrf, client, other.manager_user)
    assert client.post(f"/reviews/for/{setup.manager.id}/campaigns/{setup.campaign.id}/bulk",
                       data={"scope": "unflagged"}).status_code == 404
