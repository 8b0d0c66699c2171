"""A manager's hand-offs (issue 20, part 4): delegation while away (the one eligibility rule decides who
may stand in and for which items), undo of a decision, and reassigning all or a filtered set of one's items."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from attest.db import utcnow
from attest.entitlements.models import Account
from attest.reviews import decisions, delegation, eligibility, queries
from attest.reviews.decisions import DecisionError, Forbidden, NotFound
from attest.reviews.models import Decision, Delegation, Remediation, ReviewItem
from attest.trail.models import AuditEvent
from tests.factories import Clock
from tests.reviews.factories import add_reviewer, make_grant, make_item, review_setup


def _events(session, action):
    return session.scalars(select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.seq)).all()


@pytest.fixture
def setup(session):
    return review_setup(session)


@pytest.fixture
def colleague(session):
    return add_reviewer(session, "colin.colleague@acme.example", "Colin Colleague")


def _delegate(session, setup, colleague, days=7):
    now = utcnow()
    return delegation.create(session, setup.manager_user, colleague[0].id, now - timedelta(hours=1),
                             now + timedelta(days=days), "annual leave")


def _item_about(session, setup, person):
    """An item in the manager's campaign about `person`'s own access."""
    account = Account(source_id=setup.source.id, external_id=f"acc-{person.id}", login=person.email,
                      email=person.email, identity_id=person.id, kind="human")
    session.add(account)
    session.flush()
    grant, resource, ent = make_grant(session, setup.source, account, "Payroll")
    return make_item(session, setup.campaign, setup.manager, person, account, grant, resource, ent, setup.source)


# --- delegation ------------------------------------------------------------------------------------------


def test_a_delegate_decides_the_delegators_items_and_the_decision_records_both(session, setup, colleague):
    delegate_identity, delegate_user = colleague
    _delegate(session, setup, colleague)
    [ev] = _events(session, "review.delegate")
    assert ev.actor == setup.manager_user.email and ev.after["delegate_id"] == delegate_identity.id
    assert ev.after["reason"] == "annual leave"

    item = decisions.decide(session, delegate_user, setup.items[1].id, "approve")
    assert (item.decided_by_identity_id, item.decided_for_identity_id) == (delegate_identity.id, setup.manager.id)
    assert item.reviewer_id == setup.manager.id  # the item stays the manager's
    [d] = session.scalars(select(Decision).where(Decision.item_id == item.id)).all()
    assert (d.identity_id, d.on_behalf_of_id, d.user_id) == (delegate_identity.id, setup.manager.id, delegate_user.id)
    [decided] = _events(session, "review.decide")
    assert decided.actor == delegate_user.email and decided.after["on_behalf_of_id"] == setup.manager.id


def test_without_an_active_delegation_the_colleague_sees_nothing(session, setup, colleague):
    _identity, user = colleague
    with pytest.raises(NotFound):
        decisions.decide(session, user, setup.items[1].id, "approve")
    # planned for later, or over, or ended early: no stand-in either
    now = utcnow()
    session.add_all([
        Delegation(delegator_id=setup.manager.id, delegate_id=colleague[0].id, starts_at=now + timedelta(days=1),
                   ends_at=now + timedelta(days=3), created_by="x"),
        Delegation(delegator_id=setup.manager.id, delegate_id=colleague[0].id, starts_at=now - timedelta(days=9),
                   ends_at=now - timedelta(days=2), created_by="x"),
        Delegation(delegator_id=setup.manager.id, delegate_id=colleague[0].id, starts_at=now - timedelta(days=1),
                   ends_at=now + timedelta(days=2), ended_at=now - timedelta(minutes=1), created_by="x"),
    ])
    session.flush()
    with pytest.raises(NotFound):
        decisions.load_item_for(session, user, setup.items[1].id)
    assert eligibility.delegators_of(session, colleague[0].id, now) == []


def test_items_about_the_delegate_stay_with_the_delegator(session, setup, colleague):
    delegate_identity, delegate_user = colleague
    about = _item_about(session, setup, delegate_identity)
    _delegate(session, setup, colleague)
    with pytest.raises(NotFound):  # not even visible to the delegate
        decisions.decide(session, delegate_user, about.id, "approve")
    assert session.get(ReviewItem, about.id).decision is None
    # the delegator still decides it
    assert decisions.decide(session, setup.manager_user, about.id, "approve").decision == "approve"


def test_nobody_delegates_to_themself_or_to_someone_who_cannot_review(session, setup, colleague):
    now = utcnow()
    with pytest.raises(delegation.DelegationError, match="yourself"):
        delegation.create(session, setup.manager_user, setup.manager.id, now, now + timedelta(days=2))
    leaver, _ = add_reviewer(session, "lee.leaver@acme.example", "Lee Leaver")
    leaver.status = "terminated"
    session.flush()
    with pytest.raises(delegation.DelegationError, match="cannot review"):
        delegation.create(session, setup.manager_user, leaver.id, now, now + timedelta(days=2))
    with pytest.raises(delegation.DelegationError, match="end after"):
        delegation.create(session, setup.manager_user, colleague[0].id, now + timedelta(days=2), now + timedelta(days=1))
    assert session.scalars(select(Delegation)).all() == [] and _events(session, "review.delegate") == []


def test_one_delegation_at_a_time_and_ending_it_is_audited(session, setup, colleague):
    clock = Clock(utcnow())
    row = delegation.create(session, setup.manager_user, colleague[0].id, clock.now, clock.now + timedelta(days=5),
                            now=clock.now)
    other, _ = add_reviewer(session, "olga.other@acme.example", "Olga Other")
    with pytest.raises(delegation.DelegationError, match="already delegate"):
        delegation.create(session, setup.manager_user, other.id, clock.now + timedelta(days=1),
                          clock.now + timedelta(days=9), now=clock.now)
    clock.advance(hours=2)
    delegation.end(session, setup.manager_user, row.id, now=clock.now)
    assert row.ended_at == clock.now
    [ev] = _events(session, "review.delegation_end")
    assert ev.after["delegate_id"] == colleague[0].id
    with pytest.raises(NotFound):  # only the delegator (or an admin) ends it
        delegation.end(session, colleague[1], row.id, now=clock.now)
    assert delegation.given(session, setup.manager.id, clock.now) == []


def test_bulk_on_behalf_takes_the_delegators_items_never_the_delegates_own(session, setup, colleague):
    delegate_identity, delegate_user = colleague
    about = _item_about(session, setup, delegate_identity)
    ids = [i.id for i in setup.items] + [about.id]
    with pytest.raises(NotFound):  # no delegation yet
        decisions.bulk_decide(session, delegate_user, setup.campaign.id, ids, "approve", on_behalf_of=setup.manager.id)
    _delegate(session, setup, colleague)
    result = decisions.bulk_decide(session, delegate_user, setup.campaign.id, ids, "approve",
                                   on_behalf_of=setup.manager.id)
    assert result.changed == len(setup.items) - 1  # item 0 is flagged
    assert result.skipped == {"flagged": 1, "own_access": 1}
    rows = session.scalars(select(Decision).where(Decision.bulk.is_(True))).all()
    assert {(d.identity_id, d.on_behalf_of_id) for d in rows} == {(delegate_identity.id, setup.manager.id)}
    assert session.get(ReviewItem, about.id).decision is None


# --- undo ---------------------------------------------------------------------------------------------------


def test_undo_puts_the_item_back_to_undecided_and_is_audited(session, setup):
    item = decisions.decide(session, setup.manager_user, setup.items[1].id, "revoke", comment="left the team")
    out = decisions.undo(session, setup.manager_user, item.id)
    assert (out.decision, out.comment, out.decided_by_user_id, out.completed) == (None, None, None, False)
    [d] = session.scalars(select(Decision).where(Decision.item_id == item.id)).all()
    assert d.decision == "revoke" and d.undone_at is not None  # the history keeps it, marked undone
    [ev] = _events(session, "review.undo")
    assert ev.before["decision"] == "revoke" and ev.after["decision"] is None and ev.actor == setup.manager_user.email
    assert queries.inbox_counts(session, setup.manager.id, setup.campaign.id).decided == 0


def test_only_the_person_who_decided_may_undo(session, setup, colleague):
    delegate_identity, delegate_user = colleague
    _delegate(session, setup, colleague)
    decisions.decide(session, setup.manager_user, setup.items[1].id, "approve")
    with pytest.raises(Forbidden):  # the delegate may see it, but did not decide it
        decisions.undo(session, delegate_user, setup.items[1].id)
    decisions.decide(session, delegate_user, setup.items[2].id, "approve")
    with pytest.raises(Forbidden):  # and the other way round
        decisions.undo(session, setup.manager_user, setup.items[2].id)
    assert decisions.undo(session, delegate_user, setup.items[2].id).decision is None
    stranger = add_reviewer(session, "sam.stranger@acme.example")[1]
    with pytest.raises(NotFound):
        decisions.undo(session, stranger, setup.items[1].id)
    assert session.get(ReviewItem, setup.items[1].id).decision == "approve"
    assert len(_events(session, "review.undo")) == 1


def test_no_undo_after_sign_off_close_or_remediation(session, setup):
    for item in setup.items:
        decisions.decide(session, setup.manager_user, item.id, "approve", comment="ok")
    decisions.sign_off(session, setup.manager_user, setup.campaign.id)
    with pytest.raises(DecisionError, match="signed off"):
        decisions.undo(session, setup.manager_user, setup.items[1].id)

    other = review_setup(session, manager_email="mo.manager@acme.example", campaign_name="Other")
    item = decisions.decide(session, other.manager_user, other.items[1].id, "revoke", comment="gone")
    session.add(Remediation(item_id=item.id, campaign_id=item.campaign_id, source_id=item.source_id,
                            grant_id=item.grant_id, mode="manual", status="in_progress"))
    session.flush()
    with pytest.raises(DecisionError, match="Remediation"):
        decisions.undo(session, other.manager_user, item.id)
    decisions.decide(session, other.manager_user, other.items[2].id, "approve")
    other.campaign.status = "closed"
    session.flush()
    with pytest.raises(DecisionError, match="closed"):
        decisions.undo(session, other.manager_user, other.items[2].id)
    assert _events(session, "review.undo") == []


def test_a_decision_that_moved_the_item_to_the_next_stage_cannot_be_undone(session):
    setup = review_setup(session, spec={"stages": [{"reviewer": "manager"}, {"reviewer": "manager"}]})
    item = decisions.decide(session, setup.manager_user, setup.items[1].id, "approve")
    assert item.stage == 1 and item.decision is None
    with pytest.raises(DecisionError, match="no decision"):
        decisions.undo(session, setup.manager_user, item.id)


# --- reassign mine ----------------------------------------------------------------------------------------------


def test_reassign_a_filtered_set_of_my_items_with_a_reason(session, setup, colleague):
    target, _ = colleague
    about = _item_about(session, setup, target)
    decisions.decide(session, setup.manager_user, setup.items[2].id, "approve")
    filters = queries.InboxFilters(q="Finance")  # every item but the Payroll one about the colleague
    ids = queries.selection_ids(session, setup.manager.id, setup.campaign.id, filters, undecided_only=False)
    result = delegation.reassign_mine(session, setup.manager_user, setup.campaign.id, ids, target.id, "on leave")
    assert result.moved == len(setup.items) - 1 and result.skipped == {"decided": 1}
    assert session.get(ReviewItem, about.id).reviewer_id == setup.manager.id  # not in the filter
    events = _events(session, "review.reassign")
    assert len(events) == result.moved and all(e.after["reason"] == "on leave" for e in events)

    everything = [i.id for i in setup.items] + [about.id]
    result = delegation.reassign_mine(session, setup.manager_user, setup.campaign.id, everything, target.id, "on leave")
    assert result.moved == 0 and result.skipped == {"own_access": 1, "decided": 1}
    assert session.get(ReviewItem, about.id).reviewer_id == setup.manager.id  # never to the person it is about


def test_reassign_mine_needs_a_reason_and_touches_only_my_items(session, setup, colleague):
    other = review_setup(session, manager_email="mo.manager@acme.example", campaign_name="Other")
    with pytest.raises(DecisionError, match="why"):
        delegation.reassign_mine(session, setup.manager_user, setup.campaign.id, [setup.items[1].id], colleague[0].id, " ")
    result = delegation.reassign_mine(session, setup.manager_user, other.campaign.id, [i.id for i in other.items],
                                      colleague[0].id, "leave")
    assert result.moved == 0
    assert {i.reviewer_id for i in other.items} == {other.manager.id}


def test_the_evidence_names_the_delegate_and_the_reviewer_they_decided_for(session, factory, settings, tmp_path,
                                                                             setup, colleague):
    import csv
    import io
    import json
    import zipfile

    from attest.audit import evidence
    from attest.reviews import campaigns

    delegate_identity, delegate_user = colleague
    _delegate(session, setup, colleague)
    decisions.decide(session, delegate_user, setup.items[1].id, "revoke", comment="not needed")
    decisions.decide(session, setup.manager_user, setup.items[2].id, "approve")
    campaigns.close(session, setup.campaign.id, "admin@acme.example")
    session.commit()
    path = tmp_path / "evidence.zip"
    evidence.export_bundle(factory, settings, setup.campaign.id, path, actor="auditor@acme.example")
    assert evidence.verify_bundle(path, evidence.load_signing_key(settings).public_key()) == []
    with zipfile.ZipFile(path) as zf:
        rows = {r["item_id"]: r for r in csv.DictReader(io.TextIOWrapper(zf.open("items.csv"), encoding="utf-8"))}
        events = [json.loads(line) for line in zf.read("audit.jsonl").decode().splitlines() if line.strip()]
    by_delegate, own = rows[str(setup.items[1].id)], rows[str(setup.items[2].id)]
    assert (by_delegate["decided_by"], by_delegate["decided_on_behalf_of"]) == ("Colin Colleague", "Maria Manager")
    assert by_delegate["decided_by_identity_id"] == str(delegate_identity.id)
    assert (own["decided_by"], own["decided_on_behalf_of"]) == ("Maria Manager", "")
    decided = [e for e in events if e.get("action") == "review.decide" and e.get("object_id") == str(setup.items[1].id)]
    assert decided and decided[0]["after"]["on_behalf_of_id"] == setup.manager.id


def test_a_delegates_pages_leave_out_their_own_items_in_the_query_so_every_page_is_full(session, setup, colleague):
    """The delegated inbox pages the reviewer's items without those about the delegate: left out by the
    query (not after paging, which showed short pages), and counted for the page's notice."""
    delegate_identity, _ = colleague
    about = _item_about(session, setup, delegate_identity)
    about.person_name = ""  # sorts first: on the first page if it were not left out
    session.flush()
    mine = queries.inbox(session, setup.manager.id, setup.campaign.id, limit=1000).rows
    assert about in mine
    pages, after = [], None
    while True:
        page = queries.inbox(session, setup.manager.id, setup.campaign.id, after=after, limit=2,
                             not_about=delegate_identity.id)
        pages.append(page.rows)
        after = page.next_after
        if after is None:
            break
    seen = [i for rows in pages for i in rows]
    assert about not in seen and sorted(i.id for i in seen) == sorted(i.id for i in mine if i is not about)
    assert all(len(rows) == 2 for rows in pages[:-1])
    assert queries.count_about(session, setup.manager.id, setup.campaign.id, delegate_identity.id) == 1
