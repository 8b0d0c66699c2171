"""The audit chain's writer: what it stores verifies, whichever way it was written.

On PostgreSQL one event is appended by one statement in which the database computes the event's hash from
bytes the writer prepared around the two values only the locked head knows (attest/trail/chain.py,
`_document_around_head`); many events (a bulk decision) and SQLite chain in Python. Both must give exactly the
hash `event_hash` (what `attest audit verify` recomputes), for any text an event can carry.
"""

from __future__ import annotations

import hashlib
import threading
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from attest.audit.log import verify_chain
from attest.db import transaction
from attest.trail.chain import GENESIS, _document_around_head, event_hash, record, record_many
from attest.trail.models import AuditEvent, AuditHead

text = st.text(alphabet=st.characters(codec="utf-8"), max_size=40)  # quotes, backslashes, NUL, emoji...
json_values = st.recursive(st.none() | st.booleans() | st.integers() | text,
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
                           max_leaves=8)


@settings(max_examples=300, deadline=None)
@given(actor=text, request_id=st.none() | text, object_id=st.none() | text, after=st.none() | st.dictionaries(text, json_values),
       prev=st.text(alphabet="0123456789abcdef", min_size=64, max_size=64), seq=st.integers(1, 10**12))
def test_the_bytes_around_the_head_are_the_hashed_document(actor, request_id, object_id, after, prev, seq):
    values = {"at": datetime(2026, 12, 7, 1, 2, 3, 456789, tzinfo=UTC), "actor": actor, "action": "review.decide",
              "object_type": "review_item", "object_id": object_id, "campaign_id": 3, "before": None,
              "after": after, "request_id": request_id, "ip": "127.0.0.1"}
    a, b, c = _document_around_head(values)
    spliced = hashlib.sha256(a + prev.encode() + b + str(seq).encode() + c).hexdigest()
    assert spliced == event_hash({**values, "prev_hash": prev, "seq": seq})


# (no NUL: PostgreSQL's text cannot hold one; the property test above has them)
AWKWARD = ['quote " and backslash \\', "Łódź 東京 🚀", '","prev_hash":"', "\\u0000seq\\u0000}"]


def test_events_written_one_by_one_and_in_bulk_verify(fresh_db):
    with transaction(fresh_db.factory) as s:  # a new database: the first event creates the head
        assert s.get(AuditHead, 1) is None
        for i, odd in enumerate(AWKWARD):
            record(s, actor=odd, action="review.decide", object_type="review_item", object_id=odd, campaign_id=i,
                   before={"comment": odd, "n": [1, None, True]}, after={odd: {"nested": odd}}, request_id=odd)
        record_many(s, [{"actor": "bulk@acme.example", "action": "review.decide", "object_id": str(n),
                         "after": {"decision": "approve", "comment": AWKWARD[n % 4]}} for n in range(5)])
        record(s, actor="last@acme.example", action="campaign.close")
    with fresh_db.factory() as s:
        events = s.scalars(select(AuditEvent).order_by(AuditEvent.seq)).all()
        head = s.get(AuditHead, 1)
        assert [e.seq for e in events] == list(range(1, 11))
        assert events[0].prev_hash == GENESIS and all(e.prev_hash == p.hash for p, e in zip(events, events[1:], strict=False))
        assert (head.seq, head.last_hash) == (10, events[-1].hash)
        assert events[0].actor == AWKWARD[0] and events[1].after == {AWKWARD[1]: {"nested": AWKWARD[1]}}
        assert verify_chain(s) is None


def test_concurrent_writers_chain_one_after_another(fresh_db):
    """Writers in several threads each append events in their own transactions: every event is chained to
    the one committed before it (on PostgreSQL the head row's lock orders them; SQLite's write lock)."""
    errors = []

    def writer(n: int) -> None:
        try:
            for i in range(5):
                with transaction(fresh_db.factory) as s:
                    record(s, actor=f"writer{n}", action="review.decide", object_id=str(i))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    with fresh_db.factory() as s:
        assert s.get(AuditHead, 1).seq == 20
        assert verify_chain(s) is None
