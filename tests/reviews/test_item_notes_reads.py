"""What an item row says beyond its snapshot (item_notes.row_notes) is read for a whole page in a fixed number
of statements, whatever the page's size: the inbox renders it for 50 rows, the decide answer for one (issue 19,
part 6): one for the other paths of the same access, one for the columns of the entitlements, grants and
resources (the app's last use, the readable names and what the revoke notes read, read once; never whole
Resource rows, which join their Source). What the notes say is tested on the page
(tests/web/test_manager_pages.py)."""

from __future__ import annotations

import re
from datetime import timedelta

from sqlalchemy import event

from attest.db import utcnow
from attest.entitlements.models import Grant
from attest.reviews import item_notes
from tests.reviews.factories import review_setup


def _statements(session, call):
    statements: list[str] = []
    engine = session.get_bind().engine
    listener = lambda *args: statements.append(args[2])  # noqa: E731 - (conn, cursor, statement, ...)
    event.listen(engine, "before_cursor_execute", listener)
    try:
        return call(), statements
    finally:
        event.remove(engine, "before_cursor_execute", listener)


def test_a_pages_row_notes_take_the_same_few_statements_for_one_row_or_twenty(session):
    setup = review_setup(session, people=10, per_person=2, risky={})
    for n, item in enumerate(setup.items):
        session.get(Grant, item.grant_id).attributes = {"last_sso_at": (utcnow() - timedelta(days=n + 1)).isoformat()}
    session.flush()
    one, one_statements = _statements(session, lambda: item_notes.row_notes(session, setup.items[:1]))
    page, page_statements = _statements(session, lambda: item_notes.row_notes(session, setup.items))
    assert len(page_statements) == len(one_statements) == 2
    assert not [st for st in page_statements if re.search(r"\b(FROM|JOIN)\s+source\b", st, re.IGNORECASE)]
    assert set(page["last_used"]) == {i.id for i in setup.items} and set(one["last_used"]) == {setup.items[0].id}


def test_one_access_held_two_ways_is_one_row_though_the_other_path_is_off_the_page(session):
    """The other path of an access (the next page, or the one row a decision answers with) is found and folded,
    for a person's account and for an orphaned one (no person name) alike; another person's items never are."""
    setup = review_setup(session, people=3, per_person=2, risky={})
    alan_direct, alan_via, orphan_direct, orphan_via, other, _rest = setup.items
    for first, second in ((alan_direct, alan_via), (orphan_direct, orphan_via)):
        second.entitlement_id, second.via = first.entitlement_id, "Finance-Team"
    for orphan in (orphan_direct, orphan_via):
        orphan.identity_id, orphan.person_name = None, None
    other.entitlement_id = alan_direct.entitlement_id  # the same access, another account: a row of its own
    session.flush()
    for first, second in ((alan_direct, alan_via), (orphan_direct, orphan_via)):
        alone = item_notes.row_notes(session, [first])
        assert alone["merged"] == {first.id: [second]} and alone["other_paths"][first.id] == ["Finance-Team"]
        assert item_notes.row_notes(session, [second])["folded"] == {second.id}
    assert item_notes.row_notes(session, [other])["merged"] == {}
