"""`attest audit verify` finds an edited, a deleted and an inserted audit row.

A DBA with direct database access is simulated on a database of its own: on PostgreSQL the append-only
trigger is disabled for the tampering (as only a superuser could) and enabled again afterwards.
"""

from __future__ import annotations

import json
from contextlib import contextmanager

import pytest
from sqlalchemy import select, text

from attest.audit.log import verify_chain
from attest.db import transaction
from attest.trail.chain import GENESIS, event_hash, record
from attest.trail.models import AppendOnlyError, AuditEvent
from tests.audit.helpers import append_only_off


@pytest.fixture
def chain(fresh_db):
    with transaction(fresh_db.factory) as s:
        for i in range(1, 7):
            record(s, actor=f"user{i}@acme.example", action="item.decide", object_type="review_item",
                   object_id=str(i), campaign_id=1, after={"decision": "approve"})
    return fresh_db


@pytest.fixture
def runner(chain):
    from attest.app import create_app

    app = create_app(chain.settings)
    yield app.test_cli_runner()
    app.extensions["attest"].engine.dispose()


@contextmanager
def as_dba(db):
    """A raw connection that bypasses the ORM guard and the database's append-only triggers."""
    with db.engine.begin() as conn, append_only_off(conn):
        yield conn


def verify(runner):
    result = runner.invoke(args=["audit", "verify"])
    return result.exit_code, result.output


def test_intact_chain_verifies(runner):
    code, out = verify(runner)
    assert code == 0 and "audit chain intact: 6 events" in out


def test_the_orm_and_the_database_refuse_changes(chain):
    with chain.factory() as s:
        ev = s.scalar(select(AuditEvent).where(AuditEvent.seq == 2))
        ev.actor = "mallory"
        with pytest.raises(AppendOnlyError):
            s.flush()
    # and the database itself, on both engines (SQLite since migration 0017)
    with pytest.raises(Exception, match="append-only"), chain.engine.begin() as conn:
        conn.execute(text("UPDATE audit_event SET actor = 'mallory' WHERE seq = 2"))
    with pytest.raises(Exception, match="append-only"), chain.engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_event WHERE seq = 2"))


def test_edited_row_is_named(chain, runner):
    with as_dba(chain) as conn:
        conn.execute(text("UPDATE audit_event SET actor = 'mallory@acme.example' WHERE seq = 3"))
    code, out = verify(runner)
    assert code == 1 and "event seq 3: its content does not match its hash (edited)" in out


def test_edited_and_rehashed_row_is_found_at_the_next_link(chain, runner):
    with chain.factory() as s:
        row = s.scalar(select(AuditEvent).where(AuditEvent.seq == 3))
        doc = {c: getattr(row, c) for c in ("seq", "at", "actor", "action", "object_type", "object_id", "campaign_id",
                                            "before", "after", "request_id", "ip", "prev_hash")}
    doc["after"] = {"decision": "revoke"}
    with as_dba(chain) as conn:
        conn.execute(text("UPDATE audit_event SET after = :after, hash = :hash WHERE seq = 3"),
                     {"after": json.dumps(doc["after"]), "hash": event_hash(doc)})
    code, out = verify(runner)
    assert code == 1 and "event seq 4: its prev_hash does not match the event before it" in out


def test_deleted_row_is_named(chain, runner):
    with as_dba(chain) as conn:
        conn.execute(text("DELETE FROM audit_event WHERE seq = 4"))
    code, out = verify(runner)
    assert code == 1 and "event seq 4: event seq 4 missing (removed); the chain resumes at seq 5" in out


def test_deleted_newest_row_is_found(chain, runner):
    with as_dba(chain) as conn:
        conn.execute(text("DELETE FROM audit_event WHERE seq = 6"))
    code, out = verify(runner)
    assert code == 1 and "event seq 6: the newest events are missing (removed from the end)" in out


def _forge(conn, seq: int, prev_hash: str) -> dict:
    doc = {"seq": seq, "at": "2026-11-28T12:00:00+00:00", "actor": "mallory@acme.example", "action": "item.decide",
           "object_type": "review_item", "object_id": "99", "campaign_id": 1, "before": None,
           "after": {"decision": "approve"}, "request_id": None, "ip": None, "prev_hash": prev_hash}
    doc["hash"] = event_hash(doc)
    conn.execute(text("INSERT INTO audit_event (seq, at, actor, action, object_type, object_id, campaign_id, after, "
                      "prev_hash, hash) VALUES (:seq, :at, :actor, :action, :object_type, :object_id, :campaign_id, "
                      ":after, :prev_hash, :hash)"),
                 {**doc, "after": json.dumps(doc["after"]),
                  "at": "2026-11-28 12:00:00" if conn.dialect.name == "sqlite" else doc["at"]})
    return doc


def test_inserted_row_in_the_middle_is_named(chain, runner):
    with as_dba(chain) as conn:
        prev = conn.execute(text("SELECT hash FROM audit_event WHERE seq = 3")).scalar_one()
        # make room: renumber 4..6 to 5..7 (through negatives, the column is unique)
        conn.execute(text("UPDATE audit_event SET seq = -seq - 1 WHERE seq >= 4"))
        conn.execute(text("UPDATE audit_event SET seq = -seq WHERE seq < 0"))
        _forge(conn, 4, prev)
        forged_id = conn.execute(text("SELECT id FROM audit_event WHERE seq = 4")).scalar_one()
    code, out = verify(runner)
    assert code == 1 and "event seq 4: was inserted" in out and f"row id {forged_id}" in out


def test_inserted_row_after_the_head_is_named(chain, runner):
    with as_dba(chain) as conn:
        last = conn.execute(text("SELECT hash FROM audit_event WHERE seq = 6")).scalar_one()
        _forge(conn, 7, last)
    code, out = verify(runner)
    assert code == 1 and "event seq 7: was inserted after the chain head" in out


def test_verify_chain_on_an_empty_log(fresh_db):
    with fresh_db.factory() as s:
        assert verify_chain(s) is None
    assert GENESIS == "0" * 64


def test_an_event_appended_while_verify_walks_is_not_reported_as_inserted(chain):
    """On a live system the head is read before the events: an event Attest appends in between (a
    scheduler, a reviewer) is beyond the head read, but the head covers it by the time the walk ends, so it
    is no insertion. A forged row beyond a head that does not move still is (test above)."""
    from sqlalchemy import event

    from attest.trail.models import AuditHead

    with chain.factory() as s:
        appended = []

        @event.listens_for(s, "do_orm_execute")
        def append_once(state):
            # right after verify read the head, another process appends one event and commits
            if not appended and state.is_select and AuditHead.__table__ in state.statement.get_final_froms():
                appended.append(True)
                head = state.invoke_statement().freeze()  # the head as read now
                with transaction(chain.factory) as other:
                    record(other, actor="scheduler", action="notice.sent", object_type="campaign", object_id="1")
                return head()  # a Result again, for verify_chain

        assert verify_chain(s) is None
        assert appended
