"""Read and verify the audit chain (the writer is attest/trail/chain.py)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from attest.trail.chain import GENESIS, event_hash
from attest.trail.models import AuditEvent, AuditHead


@dataclass
class ChainProblem:
    seq: int | None
    event_id: int | None
    problem: str

    def __str__(self) -> str:
        where = f"event seq {self.seq}" if self.seq is not None else "the chain"
        return f"{where}: {self.problem}"


def verify_events(events: Iterable[Mapping[str, Any]], *, expect_start: int | None = 1,
                  expected_head: tuple[int, str] | None = None) -> ChainProblem | None:
    """Walk events in seq order; return the first problem (edited, removed, inserted), or None.

    Works on ORM rows turned into dicts and on the lines of an evidence bundle's audit.jsonl.
    `expect_start=None` verifies a contiguous slice that may start anywhere (a campaign's events are a
    subsequence of the whole chain: use `verify_subchain` for those).
    """
    prev_hash: str | None = GENESIS if expect_start == 1 else None
    prev_seq: int | None = (expect_start - 1) if expect_start else None
    prev_id: int | None = None
    last: tuple[int, str] | None = None
    beyond_head: tuple[int, int | None] | None = None
    for ev in events:
        seq = int(ev["seq"])
        if prev_seq is not None and seq != prev_seq + 1:
            if seq > prev_seq + 1:
                gap = f"event seq {prev_seq + 1}" if seq == prev_seq + 2 else f"events seq {prev_seq + 1}..{seq - 1}"
                return ChainProblem(prev_seq + 1, None, f"{gap} missing (removed); the chain resumes at seq {seq}")
            return ChainProblem(seq, ev.get("id"), "sequence number repeats or goes back (inserted)")
        if prev_hash is not None and ev["prev_hash"] != prev_hash:
            ev_id = ev.get("id")
            if prev_id is not None and ev_id is not None and prev_id > ev_id and prev_seq is not None:
                # rows get increasing ids as they are written: a newer row before older ones was slipped in
                return ChainProblem(prev_seq, prev_id, f"was inserted (row id {prev_id} is newer than the events "
                                                       f"after it, and the next event does not link to it)")
            return ChainProblem(seq, ev_id, "its prev_hash does not match the event before it: that event was "
                                            "changed and re-hashed, or an event was removed or inserted before it")
        if event_hash(ev) != ev["hash"]:
            return ChainProblem(seq, ev.get("id"), "its content does not match its hash (edited)")
        if expected_head is not None and beyond_head is None and seq > expected_head[0]:
            beyond_head = (seq, ev.get("id"))
        prev_hash, prev_seq, prev_id = ev["hash"], seq, ev.get("id")
        last = (seq, ev["hash"])
    if expected_head is not None and last != expected_head:
        if last is None or last[0] < expected_head[0]:
            return ChainProblem(expected_head[0], None, "the newest events are missing (removed from the end)")
        if beyond_head is not None:
            return ChainProblem(beyond_head[0], beyond_head[1], f"{AFTER_HEAD} (the last event "
                                                                f"written by Attest is seq {expected_head[0]})")
        return ChainProblem(last[0], None, "the chain head does not match the last event")
    return None


def event_dict(ev: AuditEvent) -> dict[str, Any]:
    return {
        "id": ev.id, "seq": ev.seq, "at": ev.at.isoformat(), "actor": ev.actor, "action": ev.action,
        "object_type": ev.object_type, "object_id": ev.object_id, "campaign_id": ev.campaign_id,
        "before": ev.before, "after": ev.after, "request_id": ev.request_id, "ip": ev.ip,
        "prev_hash": ev.prev_hash, "hash": ev.hash,
    }


def iter_events(session: Session, *where: Any, after: int = 0, batch: int = 5000,
                expunge: bool = False) -> Iterator[dict[str, Any]]:
    """The events after seq `after` matching `where`, in chain order, as dicts, a keyset batch at a time
    (`expunge`: forget each batch's rows, for exports that read millions)."""
    last = after
    while True:
        rows = session.scalars(select(AuditEvent).where(AuditEvent.seq > last, *where)
                               .order_by(AuditEvent.seq).limit(batch)).all()
        if not rows:
            return
        for ev in rows:
            yield event_dict(ev)
        last = rows[-1].seq
        if expunge:
            session.expunge_all()


AFTER_HEAD = "was inserted after the chain head"


def _head(session: Session) -> tuple[int, str] | None:
    head = session.execute(select(AuditHead.seq, AuditHead.last_hash).where(AuditHead.id == 1)).first()
    return (int(head[0]), head[1]) if head and head[0] else None


def verify_chain(session: Session, *, attempts: int = 3) -> ChainProblem | None:
    """Walk the whole chain against the head Attest keeps; the first problem, or None.

    On a live system the head is read before the events (separate statements, each seeing what was
    committed when it ran), so an event Attest appended meanwhile stands beyond the head that was read.
    Such an event is only an insertion if the head still does not cover it: when the head has moved since,
    the walk is repeated against the new head (up to `attempts` times); a row beyond a head that did not
    move is reported."""
    expected = _head(session)
    problem = verify_events(iter_events(session), expected_head=expected)
    for _ in range(attempts - 1):
        if problem is None or not problem.problem.startswith(AFTER_HEAD):
            break
        now = _head(session)
        if now == expected:
            break  # the head did not move: that row was not written by Attest
        expected = now
        problem = verify_events(iter_events(session), expected_head=expected)
    return problem
