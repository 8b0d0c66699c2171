"""The reviewer's progress figures (queries.inbox_counts): what the progress bar and sign-off button show
after every decision, read in one statement (issue 19, part 6: the decide answer counts on each decision)."""

from __future__ import annotations

from sqlalchemy import event

from attest.reviews import decisions, queries
from attest.reviews.queries.inbox import InboxCounts
from tests.reviews.factories import add_reviewer, review_setup


def test_the_progress_after_decisions_counts_each_kind_and_the_items_escalated_to_me_in_one_statement(session):
    setup = review_setup(session, people=3, per_person=2, risky={})  # six items for the manager
    boss, boss_user = add_reviewer(session, "bea.boss@acme.example", "Bea Boss")
    moved = setup.items[5]
    moved.reviewer_id, moved.co_reviewer_id = boss.id, setup.manager.id  # Bea's item, escalated to the manager
    setup.items[4].co_reviewer_id = boss.id  # and one of the manager's, escalated to Bea
    session.flush()
    decisions.decide(session, setup.manager_user, setup.items[0].id, "approve")
    decisions.decide(session, setup.manager_user, setup.items[1].id, "revoke", comment="left the team")
    decisions.decide(session, setup.manager_user, setup.items[2].id, "abstain")
    decisions.decide(session, boss_user, moved.id, "approve")

    statements: list[str] = []
    engine = session.get_bind().engine
    listener = lambda *args: statements.append(args[2])  # noqa: E731 - (conn, cursor, statement, ...)
    event.listen(engine, "before_cursor_execute", listener)
    try:
        mine = queries.inbox_counts(session, setup.manager.id, setup.campaign.id)
    finally:
        event.remove(engine, "before_cursor_execute", listener)
    assert len(statements) == 1
    assert (mine.total, mine.decided, mine.approve, mine.revoke, mine.abstain, mine.escalated_to_me) == (5, 3, 1, 1, 1, 1)
    assert mine.open_flagged + mine.open_unflagged == 2

    bea = queries.inbox_counts(session, boss.id, setup.campaign.id)
    assert (bea.total, bea.decided, bea.approve, bea.escalated_to_me) == (1, 1, 1, 1)
    escalated = queries.inbox_counts(session, setup.manager.id, setup.campaign.id, "co_reviewer")
    assert (escalated.total, escalated.decided, escalated.escalated_to_me) == (1, 1, 0)


def test_the_answer_to_a_decision_reads_the_counts_and_the_sign_off_in_one_statement(session):
    setup = review_setup(session, people=2, per_person=1, risky={})
    other, _ = add_reviewer(session, "bea.boss@acme.example", "Bea Boss")
    for item in setup.items:
        decisions.decide(session, setup.manager_user, item.id, "approve")
    statements: list[str] = []
    engine = session.get_bind().engine
    listener = lambda *args: statements.append(args[2])  # noqa: E731 - (conn, cursor, statement, ...)
    event.listen(engine, "before_cursor_execute", listener)
    try:
        counts, signed_off = queries.counts_and_signoff(session, setup.manager.id, setup.campaign.id)
    finally:
        event.remove(engine, "before_cursor_execute", listener)
    assert len(statements) == 1 and signed_off is False
    assert counts == queries.inbox_counts(session, setup.manager.id, setup.campaign.id)
    assert (counts.total, counts.decided, counts.approve) == (2, 2, 2)
    decisions.sign_off(session, setup.manager_user, setup.campaign.id)
    assert queries.counts_and_signoff(session, setup.manager.id, setup.campaign.id)[1] is True
    # another reviewer's sign-off, or one of another campaign, is not the manager's
    assert queries.counts_and_signoff(session, other.id, setup.campaign.id) == (InboxCounts(), False)
