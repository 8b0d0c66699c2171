"""A reviewer's first decision on their own undecided item, the request the reviewers make most (issue 19),
is one conditional UPDATE ... RETURNING (decisions._first_decision); every other case takes the general path.
Both must record the same thing and refuse the same things in the same order: these tests decide with the
version the page showed (what the inbox sends, and what lets the common case be taken) and compare with the
general path (no version)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from attest.audit.log import verify_chain
from attest.db import utcnow
from attest.entitlements.models import Account
from attest.reviews import campaigns, decisions, delegation
from attest.reviews.decisions import DecisionError, Forbidden, NotFound, StaleItem
from attest.reviews.models import Decision, ReviewItem
from attest.trail.models import AuditEvent
from tests.factories import make_user
from tests.reviews.factories import add_reviewer, make_grant, make_item, review_setup

DECISION_FIELDS = ("decision", "comment", "decided_by_user_id", "decided_by_identity_id", "decided_for_identity_id",
                   "decided_in_bulk", "completed", "stage", "reviewer_id", "version")


def _decision_rows(session, item_id):
    return session.scalars(select(Decision).where(Decision.item_id == item_id).order_by(Decision.id)).all()


def _event(session, item_id):
    [ev] = session.scalars(select(AuditEvent).where(AuditEvent.action == "review.decide",
                                                    AuditEvent.object_id == str(item_id))).all()
    return ev


def _untouched(session, item, version=1):
    session.expire_all()
    row = session.get(ReviewItem, item.id)
    assert row.decision is None and row.version == version and not _decision_rows(session, item.id)


@pytest.fixture
def setup(session):
    return review_setup(session, people=3, per_person=2, risky={0: ["privileged"], 1: ["terminated"], 2: ["orphaned"]})


@pytest.mark.parametrize("decision, comment", [("approve", None), ("approve", "still needed"),
                                               ("revoke", "left the team"), ("abstain", None)])
def test_the_common_case_records_exactly_what_the_general_path_records(session, setup, decision, comment):
    one, other = setup.items[3], setup.items[4]
    fast = decisions.decide(session, setup.manager_user, one.id, decision, comment=comment, expected_version=1)
    general = decisions.decide(session, setup.manager_user, other.id, decision, comment=comment)
    session.flush()
    session.expire_all()
    fast, general = session.get(ReviewItem, one.id), session.get(ReviewItem, other.id)
    assert [getattr(fast, f) for f in DECISION_FIELDS] == [getattr(general, f) for f in DECISION_FIELDS]
    assert fast.decision == decision and fast.version == 2 and fast.completed
    assert fast.decided_at is not None and general.decided_at is not None
    [d1], [d2] = _decision_rows(session, one.id), _decision_rows(session, other.id)
    cols = ("campaign_id", "stage", "decision", "comment", "user_id", "identity_id", "bulk", "on_behalf_of_id", "undone_at")
    assert [getattr(d1, c) for c in cols] == [getattr(d2, c) for c in cols]
    assert d1.at == fast.decided_at
    e1, e2 = _event(session, one.id), _event(session, other.id)
    assert (e1.actor, e1.campaign_id, e1.object_type, e1.before, e1.after) == \
           (e2.actor, e2.campaign_id, e2.object_type, e2.before, e2.after)
    assert verify_chain(session) is None


def test_the_answer_object_is_the_item_as_stored(session, setup):
    item = decisions.decide(session, setup.manager_user, setup.items[3].id, "approve", expected_version=1)
    assert (item.decision, item.version, item.completed, item.decided_by_user_id) == \
           ("approve", 2, True, setup.manager_user.id)
    assert item.campaign.id == setup.campaign.id  # kept for the answer: no second read of the campaign


def test_refusals_with_a_version_are_the_general_paths_and_change_nothing(session, setup):
    privileged, terminated, orphaned, plain = setup.items[0], setup.items[1], setup.items[2], setup.items[3]
    me = setup.manager_user
    with pytest.raises(DecisionError, match="a person who has left"):
        decisions.decide(session, me, terminated.id, "approve", expected_version=1)
    with pytest.raises(DecisionError, match="orphaned account"):
        decisions.decide(session, me, orphaned.id, "approve", expected_version=1)
    with pytest.raises(DecisionError, match="comment for a revoke"):
        decisions.decide(session, me, plain.id, "revoke", comment="  ", expected_version=1)
    with pytest.raises(DecisionError, match="approve, revoke or abstain"):
        decisions.decide(session, me, plain.id, "keep", expected_version=1)
    with pytest.raises(DecisionError, match="too long"):
        decisions.decide(session, me, plain.id, "approve", comment="x" * 4001, expected_version=1)
    with pytest.raises(StaleItem):
        decisions.decide(session, me, plain.id, "approve", expected_version=7)
    for item in (terminated, orphaned, plain):
        _untouched(session, item)
    # with a comment of its own, a leaver's access may stay; a privileged one needs none
    assert decisions.decide(session, me, terminated.id, "approve", comment="contractor, back in May",
                            expected_version=1).decision == "approve"
    assert decisions.decide(session, me, privileged.id, "approve", expected_version=1).decision == "approve"


def test_who_may_decide_comes_first_with_a_version_too(session, setup):
    item = setup.items[3]
    _, stranger = add_reviewer(session, "sam.stranger@acme.example")
    with pytest.raises(NotFound):  # someone else's item: not found, whatever the input
        decisions.decide(session, stranger, item.id, "keep", comment="x" * 5000, expected_version=1)
    with pytest.raises(NotFound):
        decisions.decide(session, stranger, 999_999, "approve", expected_version=1)
    with pytest.raises(Forbidden):
        decisions.decide(session, make_user(session, "root@acme.example", roles=["admin"]), item.id, "approve",
                         expected_version=1)
    setup.manager_user.local_roles = ["auditor"]
    session.flush()
    with pytest.raises(Forbidden):
        decisions.decide(session, setup.manager_user, item.id, "approve", expected_version=1)
    _untouched(session, item)


def test_nobody_decides_their_own_access_with_a_version_either(session, setup):
    """About the reviewer as the item's person at launch, or through the account linked to them now."""
    me = setup.manager
    account = Account(source_id=setup.source.id, external_id="acc-maria", login=me.email, email=me.email,
                      identity_id=me.id, kind="human")
    session.add(account)
    session.flush()
    grant, resource, ent = make_grant(session, setup.source, account, "Payroll")
    own = make_item(session, setup.campaign, me, me, account, grant, resource, ent, setup.source)
    relinked = setup.items[3]
    session.get(Account, relinked.account_id).identity_id = me.id  # the account is the manager's now
    session.flush()
    for item in (own, relinked):
        with pytest.raises(DecisionError, match="their own access"):
            decisions.decide(session, setup.manager_user, item.id, "approve", expected_version=1)
        _untouched(session, item)


def test_a_changed_decision_after_sign_off_is_still_refused(session, setup):
    ids = [i.id for i in setup.items]
    for n, item_id in enumerate(ids):
        decisions.decide(session, setup.manager_user, item_id, "revoke", comment="not needed", expected_version=1)
    decisions.sign_off(session, setup.manager_user, setup.campaign.id)
    with pytest.raises(DecisionError, match="signed off"):
        decisions.decide(session, setup.manager_user, ids[3], "approve", comment="changed my mind", expected_version=2)


def test_a_campaign_closed_after_the_page_was_shown_refuses_the_decision(session, setup):
    item = setup.items[3]
    campaigns.close(session, setup.campaign.id, actor="admin@acme.example")
    session.expire_all()
    with pytest.raises(DecisionError, match="closed"):
        decisions.decide(session, setup.manager_user, item.id, "approve", expected_version=1)
    row = session.get(ReviewItem, item.id)
    assert row.decision is None and row.outcome_reason == "no_response" and not _decision_rows(session, item.id)


def test_a_delegate_with_a_version_decides_for_the_reviewer(session, setup):
    delegate, delegate_user = add_reviewer(session, "colin.colleague@acme.example", "Colin Colleague")
    now = utcnow()
    delegation.create(session, setup.manager_user, delegate.id, now - timedelta(hours=1), now + timedelta(days=3), "leave")
    item = decisions.decide(session, delegate_user, setup.items[3].id, "approve", expected_version=1)
    assert (item.decided_by_identity_id, item.decided_for_identity_id) == (delegate.id, setup.manager.id)
    assert _event(session, item.id).after["on_behalf_of_id"] == setup.manager.id


def test_on_a_stage_that_is_not_the_last_the_item_is_handed_on(session):
    owner, _ = add_reviewer(session, "olivia.owner@acme.example", "Olivia Owner")
    s = review_setup(session, spec={"stages": [{"reviewer": "manager"},
                                               {"reviewer": "identity", "identity": "olivia.owner@acme.example"}]},
                     risky={})
    out = decisions.decide(session, s.manager_user, s.items[1].id, "approve", expected_version=1)
    assert (out.stage, out.reviewer_id, out.decision, out.completed) == (1, owner.id, None, False)
    revoked = decisions.decide(session, s.manager_user, s.items[2].id, "revoke", comment="gone", expected_version=1)
    assert (revoked.stage, revoked.decision, revoked.completed) == (0, "revoke", True)
