"""The directory reviewers are routed with has one home (`eligibility.Directory`): read whole at once for a
launch, person by person for a stage advance or an escalation; both readings give every person the same
manager and the same eligibility, and the whole reading never goes back to the database."""

from __future__ import annotations

from sqlalchemy import event

from attest.db import utcnow
from attest.reviews import eligibility
from tests.factories import make_identity


def test_the_whole_directory_answers_as_the_person_by_person_one(session, connection):
    boss = make_identity(session, "boss@acme.example")
    worker = make_identity(session, "worker@acme.example", manager=boss)
    terminated = make_identity(session, "terminated@acme.example", manager=boss, status="terminated")
    left = make_identity(session, "left@acme.example", manager=worker, ended_at=utcnow())
    robot = make_identity(session, "robot@acme.example", manager=boss, kind="service")
    people = [boss, worker, terminated, left, robot]

    whole = eligibility.Directory.whole(session)
    one_by_one = eligibility.Directory(session)
    assert [p.id for p in people] == [i for i in whole.people() if i in {p.id for p in people}]
    assert [(whole.manager_of(p.id), whole.eligible(p.id)) for p in people] == [
        (one_by_one.manager_of(p.id), one_by_one.eligible(p.id)) for p in people]
    assert [whole.eligible(p.id) for p in people] == [True, True, False, False, False]
    assert [whole.manager_of(p.id) for p in people] == [None, boss.id, boss.id, worker.id, boss.id]

    statements: list[str] = []

    def seen(conn, cursor, statement, *args):
        statements.append(statement)

    event.listen(connection, "before_cursor_execute", seen)
    try:
        nobody = max(whole.people()) + 1000  # not in the directory: no manager, cannot review
        assert whole.manager_of(nobody) is None and not whole.eligible(nobody)
        assert statements == []  # answered from what the launch read, not one query per miss
        assert one_by_one.manager_of(nobody) is None and not one_by_one.eligible(nobody)
        assert statements  # the person-by-person reading asks
    finally:
        event.remove(connection, "before_cursor_execute", seen)
