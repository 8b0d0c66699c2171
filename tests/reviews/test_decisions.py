"""Reviewer decisions: rules, repeats, comments, sign-off locks, authorization, bulk, reassign, stages and
concurrent decisions (optimistic locking)."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import func, select

from attest.audit.log import verify_chain
from attest.db import begin_write
from attest.reviews import decisions
from attest.reviews.decisions import DecisionError, Forbidden, NotFound, StaleItem
from attest.reviews.models import Decision, ReviewerSignoff, ReviewItem
from attest.trail.models import AuditEvent
from tests.factories import make_user
from tests.reviews.factories import add_reviewer, review_setup


def _events(session, action=None):
    stmt = select(AuditEvent)
    if action:
        stmt = stmt.where(AuditEvent.action == action)
    return session.scalars(stmt.order_by(AuditEvent.seq)).all()


def _decisions(session, item_id):
    return session.scalars(select(Decision).where(Decision.item_id == item_id).order_by(Decision.id)).all()


@pytest.fixture
def setup(session):
    return review_setup(session)


def test_approve_records_decision_history_and_audit(session, setup):
    item = setup.items[1]
    out = decisions.decide(session, setup.manager_user, item.id, "approve")
    assert out.decision == "approve" and out.completed and out.decided_by_user_id == setup.manager_user.id
    assert out.version == 2
    [d] = _decisions(session, item.id)
    assert (d.decision, d.bulk, d.user_id, d.identity_id) == ("approve", False, setup.manager_user.id, setup.manager.id)
    [ev] = _events(session, "review.decide")
    assert ev.campaign_id == setup.campaign.id and ev.object_id == str(item.id) and ev.actor == setup.manager_user.email
    assert ev.before["decision"] is None and ev.after["decision"] == "approve" and ev.after["bulk"] is False


def test_repeating_a_decision_is_a_no_op(session, setup):
    item = setup.items[1]
    decisions.decide(session, setup.manager_user, item.id, "approve")
    again = decisions.decide(session, setup.manager_user, item.id, "approve", expected_version=2)
    assert again.version == 2
    assert len(_decisions(session, item.id)) == 1 and len(_events(session, "review.decide")) == 1


def test_revoke_needs_a_comment_by_default_and_nothing_changes_without_one(session, setup):
    item = setup.items[1]
    with pytest.raises(DecisionError, match="comment"):
        decisions.decide(session, setup.manager_user, item.id, "revoke", comment="   ")
    session.refresh(item)
    assert item.decision is None and item.version == 1 and not _decisions(session, item.id)
    out = decisions.decide(session, setup.manager_user, item.id, "revoke", comment="Left the finance team in May")
    assert out.decision == "revoke" and out.comment == "Left the finance team in May" and out.completed


@pytest.mark.parametrize("rule, decision, ok", [
    ("always", "approve", False), ("always", "abstain", False), ("never", "revoke", True), ("on_revoke", "abstain", True),
])
def test_comment_rules_from_the_campaign_spec(session, rule, decision, ok):
    s = review_setup(session, spec={"rules": {"comment_required": rule, "remediation": "manual"}})
    if ok:
        assert decisions.decide(session, s.manager_user, s.items[0].id, decision).decision == decision
    else:
        with pytest.raises(DecisionError, match="comment"):
            decisions.decide(session, s.manager_user, s.items[0].id, decision)


def test_unknown_decision_is_refused(session, setup):
    with pytest.raises(DecisionError, match="approve, revoke or abstain"):
        decisions.decide(session, setup.manager_user, setup.items[0].id, "delete")


def test_decision_can_change_until_sign_off_then_is_locked(session, setup):
    item = setup.items[0]
    decisions.decide(session, setup.manager_user, item.id, "approve")
    decisions.decide(session, setup.manager_user, item.id, "revoke", comment="not needed")
    assert [d.decision for d in _decisions(session, item.id)] == ["approve", "revoke"]
    for other in setup.items[1:]:
        decisions.decide(session, setup.manager_user, other.id, "approve")
    decisions.sign_off(session, setup.manager_user, setup.campaign.id)
    with pytest.raises(DecisionError, match="signed off"):
        decisions.decide(session, setup.manager_user, item.id, "approve")
    session.refresh(item)
    assert item.decision == "revoke"


def test_sign_off_refused_while_items_are_undecided(session, setup):
    decisions.decide(session, setup.manager_user, setup.items[0].id, "approve")
    with pytest.raises(DecisionError, match="5 items still need a decision"):
        decisions.sign_off(session, setup.manager_user, setup.campaign.id)
    assert session.scalar(select(func.count()).select_from(ReviewerSignoff)) == 0
    assert decisions.bulk_decide(session, setup.manager_user, setup.campaign.id, [i.id for i in setup.items], "approve").changed == 5
    signoff = decisions.sign_off(session, setup.manager_user, setup.campaign.id)
    assert signoff.reviewer_id == setup.manager.id
    [ev] = _events(session, "review.sign_off")
    assert ev.campaign_id == setup.campaign.id and ev.after["decisions"] == {"approve": 6}
    # signing off again returns the same sign-off and records nothing new
    assert decisions.sign_off(session, setup.manager_user, setup.campaign.id).id == signoff.id
    assert len(_events(session, "review.sign_off")) == 1


def test_new_items_after_sign_off_can_still_be_decided(session, setup):
    decisions.decide(session, setup.manager_user, setup.items[0].id, "approve")  # privileged: one by one
    decisions.bulk_decide(session, setup.manager_user, setup.campaign.id, [i.id for i in setup.items], "approve")
    decisions.sign_off(session, setup.manager_user, setup.campaign.id)
    other_id, other_user = add_reviewer(session, "olga.other@acme.example", "Olga Other")
    extra = review_setup(session, people=1, per_person=1, manager_email="sam.second@acme.example")
    # an undecided item of the same campaign reaches the signed-off manager later (reassigned)
    item = extra.items[0]
    item.campaign_id = setup.campaign.id
    session.flush()
    decisions.reassign(session, extra.manager_user, item.id, setup.manager.id, "Maria owns this app now")
    assert decisions.decide(session, setup.manager_user, item.id, "approve").decision == "approve"
    with pytest.raises(DecisionError, match="signed off"):
        decisions.decide(session, setup.manager_user, item.id, "abstain")


def test_other_reviewers_get_not_found_admins_forbidden_auditors_never_write(session, setup):
    item = setup.items[0]
    _, stranger = add_reviewer(session, "sam.stranger@acme.example")
    with pytest.raises(NotFound):
        decisions.decide(session, stranger, item.id, "approve")
    with pytest.raises(NotFound):
        decisions.decide(session, stranger, 999_999, "approve")
    with pytest.raises(NotFound):
        decisions.bulk_decide(session, stranger, setup.campaign.id, [item.id], "approve")
    with pytest.raises(NotFound):
        decisions.sign_off(session, stranger, setup.campaign.id)
    with pytest.raises(NotFound):
        decisions.reassign(session, stranger, item.id, stranger.identity_id, "mine now")
    admin = make_user(session, "root@acme.example", roles=["admin"])
    with pytest.raises(Forbidden):
        decisions.decide(session, admin, item.id, "approve")
    # an auditor who happens to be the reviewer still changes nothing
    setup.manager_user.local_roles = ["auditor"]
    session.flush()
    with pytest.raises(Forbidden):
        decisions.decide(session, setup.manager_user, item.id, "approve")
    with pytest.raises(Forbidden):
        decisions.bulk_decide(session, setup.manager_user, setup.campaign.id, [item.id], "approve")
    with pytest.raises(Forbidden):
        decisions.sign_off(session, setup.manager_user, setup.campaign.id)
    auditor = make_user(session, "audrey@acme.example", roles=["auditor"])
    with pytest.raises(Forbidden):
        decisions.reassign(session, auditor, item.id, setup.people[1].id, "no")
    session.refresh(item)
    assert item.decision is None and item.version == 1 and not _events(session)


def test_co_reviewer_added_by_escalation_may_decide(session, setup):
    boss, boss_user = add_reviewer(session, "bea.boss@acme.example", "Bea Boss")
    item = setup.items[2]
    item.co_reviewer_id = boss.id
    session.flush()
    out = decisions.decide(session, boss_user, item.id, "approve")
    assert out.decided_by_identity_id == boss.id


def test_closed_campaign_refuses_decisions(session, setup):
    setup.campaign.status = "closed"
    session.flush()
    with pytest.raises(DecisionError, match="closed"):
        decisions.decide(session, setup.manager_user, setup.items[0].id, "approve")
    with pytest.raises(DecisionError, match="closed"):
        decisions.bulk_decide(session, setup.manager_user, setup.campaign.id, [setup.items[0].id], "approve")


def test_stale_expected_version_is_refused(session, setup):
    item = setup.items[0]
    decisions.decide(session, setup.manager_user, item.id, "approve")
    with pytest.raises(StaleItem, match="now 'approve'"):
        decisions.decide(session, setup.manager_user, item.id, "revoke", comment="x", expected_version=1)
    assert [d.decision for d in _decisions(session, item.id)] == ["approve"]


def test_bulk_decide_is_one_set_with_a_decision_row_and_audit_event_per_item(session, setup):
    _, stranger = add_reviewer(session, "sam.stranger@acme.example")
    other = review_setup(session, people=1, per_person=2, manager_email="other.mgr@acme.example")
    ids = [i.id for i in setup.items] + [i.id for i in other.items]  # someone else's items are skipped
    decisions.decide(session, setup.manager_user, setup.items[0].id, "approve")
    result = decisions.bulk_decide(session, setup.manager_user, setup.campaign.id, ids, "approve")
    assert result.changed == 5  # item 0 was already approved: a bulk decision never touches it
    assert result.skipped == {"decided": 1, "not_yours": 2}
    rows = session.scalars(select(ReviewItem).where(ReviewItem.id.in_(ids)).order_by(ReviewItem.id)).all()
    assert [r.decision for r in rows] == ["approve"] * 6 + [None, None]
    assert all(r.decided_in_bulk for r in rows[1:6]) and all(r.version == 2 for r in rows[:6])
    bulk_rows = session.scalars(select(Decision).where(Decision.bulk.is_(True))).all()
    assert len(bulk_rows) == 5
    events = _events(session, "review.decide")
    assert len(events) == 6 and sum(1 for e in events if e.after["bulk"]) == 5
    assert all(e.campaign_id == setup.campaign.id for e in events)
    assert verify_chain(session) is None
    # bulk revoke follows the comment rule too
    with pytest.raises(DecisionError, match="comment"):
        decisions.bulk_decide(session, setup.manager_user, setup.campaign.id, ids, "revoke")
    # ... and never replaces a decision: every item is decided now, so nothing changes
    result = decisions.bulk_decide(session, setup.manager_user, setup.campaign.id, ids[:2], "revoke", comment="gone")
    assert result.changed == 0 and result.skipped == {"decided": 2}


def test_bulk_after_sign_off_changes_only_undecided_items(session, setup):
    decisions.decide(session, setup.manager_user, setup.items[0].id, "approve")  # privileged: one by one
    decisions.bulk_decide(session, setup.manager_user, setup.campaign.id, [i.id for i in setup.items], "approve")
    decisions.sign_off(session, setup.manager_user, setup.campaign.id)
    assert decisions.bulk_decide(session, setup.manager_user, setup.campaign.id, [i.id for i in setup.items], "revoke",
                                 comment="all of it").changed == 0


def test_reassign_rules_and_audit(session, setup):
    item = setup.items[0]
    person = setup.people[0]
    new, new_user = add_reviewer(session, "rita.reviewer@acme.example", "Rita Reviewer")
    with pytest.raises(DecisionError, match="why"):
        decisions.reassign(session, setup.manager_user, item.id, new.id, "  ")
    with pytest.raises(DecisionError, match="own access"):
        decisions.reassign(session, setup.manager_user, item.id, person.id, "let them check")
    with pytest.raises(DecisionError, match="already reviews"):
        decisions.reassign(session, setup.manager_user, item.id, setup.manager.id, "me")
    out = decisions.reassign(session, setup.manager_user, item.id, new.id, "Rita owns the Finance app")
    assert out.reviewer_id == new.id and out.routed_by == "reassigned" and out.reassigned_reason == "Rita owns the Finance app"
    [ev] = _events(session, "review.reassign")
    assert ev.campaign_id == setup.campaign.id and ev.after["reason"] == "Rita owns the Finance app"
    assert ev.before["reviewer_id"] == setup.manager.id
    with pytest.raises(NotFound):  # no longer Maria's
        decisions.decide(session, setup.manager_user, item.id, "approve")
    assert decisions.decide(session, new_user, item.id, "approve").decision == "approve"
    with pytest.raises(DecisionError, match="already decided"):
        decisions.reassign(session, new_user, item.id, setup.manager.id, "back")
    # admins may reassign any undecided item
    admin = make_user(session, "root@acme.example", roles=["admin"])
    assert decisions.reassign(session, admin, setup.items[1].id, new.id, "Maria is on leave").reviewer_id == new.id


def test_admin_moves_all_open_items_of_a_reviewer(session, setup):
    admin = make_user(session, "root@acme.example", roles=["admin"])
    new, _ = add_reviewer(session, "rita.reviewer@acme.example", "Rita Reviewer")
    decisions.decide(session, setup.manager_user, setup.items[0].id, "approve")
    moved = decisions.reassign_reviewer(session, admin, setup.campaign.id, setup.manager.id, new.id, "Maria on leave")
    assert moved == 5
    owners = session.execute(select(ReviewItem.reviewer_id, func.count()).where(
        ReviewItem.campaign_id == setup.campaign.id).group_by(ReviewItem.reviewer_id)).all()
    assert dict(owners) == {setup.manager.id: 1, new.id: 5}
    assert len(_events(session, "review.reassign")) == 5
    with pytest.raises(Forbidden):
        decisions.reassign_reviewer(session, setup.manager_user, setup.campaign.id, new.id, setup.manager.id, "back")


# --- concurrency: two sessions, real commits ----------------------------------------------------------


@pytest.fixture
def committed(fresh_db):
    with fresh_db.factory() as s, s.begin():
        setup = review_setup(s, people=2, per_person=1)
        ids = dict(item=setup.items[0].id, user=setup.manager_user.id, boss=None, campaign=setup.campaign.id)
        boss, boss_user = add_reviewer(s, "bea.boss@acme.example", "Bea Boss")
        s.get(ReviewItem, ids["item"]).co_reviewer_id = boss.id
        ids["boss"] = boss_user.id
    return fresh_db, ids


def _user(session, user_id):
    from attest.auth.models import User

    return session.get(User, user_id)


def test_two_reviewers_deciding_at_once_one_wins_the_other_is_told(committed):
    db, ids = committed
    s1, s2 = db.factory(), db.factory()
    try:
        # both load the item (as their pages did) before either saves
        v1 = s1.get(ReviewItem, ids["item"]).version
        v2 = s2.get(ReviewItem, ids["item"]).version
        u1, u2 = _user(s1, ids["user"]), _user(s2, ids["boss"])
        s1.commit(), s2.commit()  # the pages were rendered; each save is a write transaction of its own
        with begin_write(s1):
            decisions.decide(s1, u1, ids["item"], "approve", expected_version=v1)
        with pytest.raises(StaleItem, match="reload"), begin_write(s2):
            decisions.decide(s2, u2, ids["item"], "revoke", comment="no longer needed", expected_version=v2)
    finally:
        s1.close()
        s2.close()
    with db.factory() as s:
        item = s.get(ReviewItem, ids["item"])
        assert item.decision == "approve" and item.version == v1 + 1
        assert [d.decision for d in _decisions(s, ids["item"])] == ["approve"]
        assert [e.action for e in _events(s)] == ["review.decide"]
        # told, the loser reloads and decides again: nothing lost
        decisions.decide(s, _user(s, ids["boss"]), ids["item"], "revoke", comment="no longer needed",
                         expected_version=item.version)
        s.commit()
        assert [d.decision for d in _decisions(s, ids["item"])] == ["approve", "revoke"]


def test_concurrent_decisions_in_threads(committed):
    db, ids = committed
    barrier = threading.Barrier(2, timeout=30)
    results: dict[str, str] = {}
    with db.factory() as s:
        start = s.get(ReviewItem, ids["item"]).version

    def run(name, user_id, decision, comment):
        s = db.factory()
        try:
            version = s.get(ReviewItem, ids["item"]).version
            user = _user(s, user_id)
            s.commit()  # the page was rendered; the save is a write transaction of its own
            barrier.wait()
            with begin_write(s):
                decisions.decide(s, user, ids["item"], decision, comment=comment, expected_version=version)
            results[name] = "saved"
        except StaleItem:
            results[name] = "stale"
        finally:
            s.close()

    threads = [threading.Thread(target=run, args=("a", ids["user"], "approve", None)),
               threading.Thread(target=run, args=("b", ids["boss"], "revoke", "not needed"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(results.values()) == ["saved", "stale"], results
    with db.factory() as s:
        item = s.get(ReviewItem, ids["item"])
        winner = "approve" if results["a"] == "saved" else "revoke"
        assert item.decision == winner and item.version == start + 1
        assert [d.decision for d in _decisions(s, ids["item"])] == [winner]
        assert verify_chain(s) is None


# --- stages -------------------------------------------------------------------------------------------


@pytest.fixture
def two_stages(session):
    owner, owner_user = add_reviewer(session, "olivia.owner@acme.example", "Olivia Owner")
    s = review_setup(session, spec={"stages": [{"reviewer": "manager"},
                                               {"reviewer": "identity", "identity": "olivia.owner@acme.example"}]},
                     risky={})
    return s, owner, owner_user


def test_approve_on_a_non_final_stage_hands_the_item_to_the_next_stage(session, two_stages):
    s, owner, owner_user = two_stages
    item = s.items[1]
    out = decisions.decide(session, s.manager_user, item.id, "approve")
    assert (out.stage, out.reviewer_id, out.routed_by, out.decision, out.completed) == (1, owner.id, "named", None, False)
    [d] = _decisions(session, item.id)
    assert (d.stage, d.decision) == (0, "approve")
    [ev] = _events(session, "review.decide")
    assert ev.after["next_stage"] == 1 and ev.after["next_reviewer_id"] == owner.id
    with pytest.raises(NotFound):  # the manager's part is done; the item is the owner's now
        decisions.decide(session, s.manager_user, item.id, "revoke", comment="x")
    final = decisions.decide(session, owner_user, item.id, "approve")
    assert final.completed and final.stage == 1
    assert [(d.stage, d.decision) for d in _decisions(session, item.id)] == [(0, "approve"), (1, "approve")]


def test_a_revoke_at_any_stage_is_final(session, two_stages):
    s, owner, _ = two_stages
    out = decisions.decide(session, s.manager_user, s.items[0].id, "revoke", comment="Left Finance")
    assert (out.stage, out.reviewer_id, out.completed) == (0, s.manager.id, True)


def test_bulk_approve_on_a_non_final_stage_moves_every_item_on(session, two_stages):
    s, owner, owner_user = two_stages
    n = decisions.bulk_decide(session, s.manager_user, s.campaign.id, [i.id for i in s.items], "approve").changed
    assert n == 6
    session.expire_all()
    rows = session.scalars(select(ReviewItem).where(ReviewItem.campaign_id == s.campaign.id)).all()
    assert {(r.stage, r.reviewer_id, r.decision) for r in rows} == {(1, owner.id, None)}
    assert len(session.scalars(select(Decision).where(Decision.bulk.is_(True), Decision.stage == 0)).all()) == 6
    events = _events(session, "review.decide")
    assert len(events) == 6 and all(e.after["next_reviewer_id"] == owner.id for e in events)
    assert decisions.bulk_decide(session, owner_user, s.campaign.id, [i.id for i in s.items], "approve").changed == 6
    session.expire_all()
    assert all(r.completed for r in session.scalars(select(ReviewItem).where(ReviewItem.campaign_id == s.campaign.id)))
    assert verify_chain(session) is None


@pytest.mark.parametrize(("decision", "flagged_allowed"), [("approve", False), ("approve", True), ("revoke", False)])
def test_the_bulk_rules_ask_the_inbox_index_before_the_items_row(decision, flagged_allowed):
    """SQLite reads an item's row only when a condition needs a column the index does not hold: the rules the
    reviewer's inbox index answers (decision, risk score) come before those that read the row (completed, the
    person, the account's link), so an item the index rules out costs no table read (bulk_writable's docstring:
    177 pages a filtered inbox request at 200,000 items, 2 in this order)."""
    from sqlalchemy.sql import visitors

    from attest.reviews.models import Campaign

    [index] = [i for i in ReviewItem.__table__.indexes if i.name == "ix_review_item_inbox"]
    in_index = {c.name for c in index.columns}
    campaign = Campaign(spec={"rules": {"bulk_approve_flagged": flagged_allowed}})
    conds = decisions.bulk_writable(campaign, 7, decision, with_comment=True)

    def index_only(cond) -> bool:
        columns = [e for e in visitors.iterate(cond) if getattr(e, "table", None) is not None and hasattr(e, "name")]
        return all(c.table is ReviewItem.__table__ and c.name in in_index for c in columns)

    answered = [index_only(c) for c in conds]
    assert answered[0] and False in answered
    assert answered == sorted(answered, reverse=True), [str(c) for c in conds]  # every index-only one first
    assert sum(answered) == (2 if decision == "approve" and not flagged_allowed else 1)
