"""The audit trail's writer: record events inside the caller's transaction, hash-chained.

A kernel service every domain layer uses (entitlements, reviews, auth...): it imports no domain. Reading,
verifying and exporting the trail is the audit layer's (attest/audit/).
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

from flask import g, has_request_context, request
from sqlalchemy import (
    BigInteger,
    LargeBinary,
    String,
    Text,
    Update,
    bindparam,
    cast,
    func,
    insert,
    literal_column,
    select,
    update,
)
from sqlalchemy.orm import Session

from attest import dialects
from attest.db import canonical_json, utcnow
from attest.dialects import is_postgresql
from attest.redact import redact
from attest.trail.models import AuditEvent, AuditHead

GENESIS = "0" * 64
HASHED_FIELDS = (
    "seq", "at", "actor", "action", "object_type", "object_id", "campaign_id",
    "before", "after", "request_id", "ip", "prev_hash",
)
SECRET_KEYS = ("password", "secret", "token", "private_key", "client_secret", "api_key")


@functools.lru_cache(maxsize=4096)
def _secret_key(key: str) -> bool:
    key = key.lower()
    return any(s in key for s in SECRET_KEYS)


def _scrub(value: Any) -> Any:
    """Never let a secret into the trail, whatever a caller passes: a key named like a secret gets
    [redacted] as its value, and text (an upstream error echoing an Authorization header, a bearer
    token, a GitHub token...) is redacted by the one redaction rule (attest/redact.py)."""
    if isinstance(value, Mapping):
        return {
            k: ("[redacted]" if _secret_key(str(k)) and not isinstance(v, list) else _scrub(v))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    if isinstance(value, str) and len(value) >= 8:
        return redact(value)
    return value


def event_document(event: Mapping[str, Any]) -> dict[str, Any]:
    doc = {name: event.get(name) for name in HASHED_FIELDS}
    at = doc["at"]
    if at is not None and not isinstance(at, str):
        doc["at"] = at.isoformat()
    return doc


def event_hash(event: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical_json(event_document(event)).encode()).hexdigest()




def _request_context() -> tuple[str | None, str | None]:
    if not has_request_context():
        return None, None
    return getattr(g, "request_id", None), request.remote_addr


def record(
    session: Session,
    *,
    actor: str,
    action: str,
    object_type: str | None = None,
    object_id: str | None = None,
    before: Mapping[str, Any] | None = None,
    after: Mapping[str, Any] | None = None,
    campaign_id: int | None = None,
    request_id: str | None = None,
    ip: str | None = None,
) -> None:
    """Append one event to the chain, in the caller's transaction (it commits or rolls back with it)."""
    record_many(session, [{"actor": actor, "action": action, "object_type": object_type, "object_id": object_id,
                           "before": before, "after": after, "campaign_id": campaign_id, "request_id": request_id,
                           "ip": ip}])


def record_many(session: Session, events: Iterable[Mapping[str, Any]]) -> int:
    """Append events in the order given, inside the caller's transaction: one head lock, one INSERT.

    Each mapping takes the keyword arguments of `record` (actor, action, object_type, object_id, before,
    after, campaign_id, request_id, ip).

    The head stays locked until the caller's transaction ends, and every audited write in every process waits
    for it (issue 19's load benchmark: of 1.8 active PostgreSQL backends, 1.4 waited for this row). So the
    caller's pending changes are flushed (a stale version fails here, in the caller's code, as before) and the
    events built before the head is locked; after it come the chain's hashes and one statement: on PostgreSQL a
    single event's INSERT runs inside the head's UPDATE (a data-modifying WITH).
    """
    session.flush()
    ctx_request_id, ctx_ip = _request_context()
    at = utcnow()
    rows = [{
        "at": at,
        "actor": ev["actor"],
        "action": ev["action"],
        "object_type": ev.get("object_type"),
        "object_id": None if ev.get("object_id") is None else str(ev["object_id"]),
        "campaign_id": ev.get("campaign_id"),
        # stored exactly as they will be read back, so the hash verifies
        "before": _stored(ev.get("before")),
        "after": _stored(ev.get("after")),
        "request_id": ev.get("request_id") or ctx_request_id,
        "ip": ev.get("ip") or ctx_ip,
    } for ev in events]
    if not rows:
        return 0
    if len(rows) == 1 and is_postgresql(session):
        _append_one_in_postgresql(session, rows[0])
        return 1
    seq, prev = _lock_head(session)
    for values in rows:
        seq += 1
        values["seq"] = seq
        values["prev_hash"] = prev
        values["hash"] = prev = event_hash(values)
    session.execute(_EVENT.insert(), rows)
    session.execute(_MOVE_HEAD, {"new_seq": seq, "new_hash": prev})
    return len(rows)


def _append_one_in_postgresql(session: Session, values: dict[str, Any]) -> None:
    """One event appended by one statement that locks the head, inserts the event chained to it and moves the
    head, all in PostgreSQL: the event's hash is sha256 of its canonical JSON, whose only parts not known before
    the lock (the previous hash and the sequence number) PostgreSQL splices into the bytes built here
    (`_document_around_head`), so the head is held for no round trip to this process but the commit's. The
    hash PostgreSQL computed is checked against `event_hash` before the commit: a mismatch (which the tests
    rule out) fails the transaction rather than the chain."""
    before_prev, between, after_seq = _document_around_head(values)
    params = {**values, "doc_a": before_prev, "doc_b": between, "doc_c": after_seq}
    row = session.execute(_APPEND_ONE, params).first()
    if row is None:  # a new database: no head row yet
        _create_head(session)
        row = session.execute(_APPEND_ONE, params).one()
    seq, prev_hash, digest = row
    if event_hash({**values, "seq": seq, "prev_hash": prev_hash}) != digest:
        raise RuntimeError(f"audit event {seq}: the hash PostgreSQL computed differs from the event's own; "
                           "nothing was written")


def _document_around_head(values: Mapping[str, Any]) -> tuple[bytes, bytes, bytes]:
    """The UTF-8 bytes of the event's canonical JSON (what `event_hash` hashes) before the previous hash,
    between it and the sequence number, and after it: the document's keys sort as HASHED_FIELDS sorted, with
    prev_hash (a hex string) second to last before request_id and seq (an integer) last, so the document is
    a + prev_hash + b + str(seq) + c, byte for byte, each value rendered as canonical_json renders it."""
    doc = event_document({**values, "prev_hash": "", "seq": 0})
    keys = sorted(doc)
    assert keys[-3:] == ["prev_hash", "request_id", "seq"], keys

    def pair(key: str) -> str:
        return f"{canonical_json(key)}:{canonical_json(doc[key])}"

    a = "{" + "".join(pair(k) + "," for k in keys[:-3]) + '"prev_hash":"'
    b = '",' + pair("request_id") + ',"seq":'
    return a.encode(), b.encode(), b"}"


def _plain(value: Any) -> bool:
    """JSON-native already (str/int/bool/None in dicts and lists): storing it changes nothing."""
    if value is None or isinstance(value, str | int):
        return True
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    return False


def _stored(value: Mapping[str, Any] | None) -> Any:
    """`before`/`after` scrubbed and exactly as they will read back (a JSON round trip unless already plain)."""
    if value is None:
        return None
    value = _scrub(dict(value))
    return value if _plain(value) else _roundtrip(value)


def _roundtrip(value: Any) -> Any:
    return None if value is None else json.loads(canonical_json(value))


# the head's two statements, built once and on the table (every audited write runs both; building one cost
# more CPU than running it, and an UPDATE on the ORM class goes through the ORM's bulk-update machinery for
# nothing: no AuditHead object is ever loaded, everything reads the head's columns)
_HEAD = AuditHead.__table__
_LOCK_HEAD = update(_HEAD).where(_HEAD.c.id == 1).values(seq=_HEAD.c.seq).returning(_HEAD.c.seq, _HEAD.c.last_hash)
_MOVE_HEAD = update(_HEAD).where(_HEAD.c.id == 1).values(seq=bindparam("new_seq", type_=BigInteger),
                                                         last_hash=bindparam("new_hash", type_=String))


_EVENT = AuditEvent.__table__


def _append_one() -> Update:
    """PostgreSQL's one statement for `_append_one_in_postgresql`: WITH head (the head row, locked: FOR UPDATE
    waits for the previous writer's commit and reads the head it left), appended (the event, chained to that
    head: seq + 1, prev_hash, and encode(sha256(a || prev_hash || b || seq || c), 'hex'), the hex digest
    `event_hash` computes) UPDATE the head to the appended event. A data-modifying WITH runs once, to completion."""
    head = select(_HEAD.c.seq, _HEAD.c.last_hash).where(_HEAD.c.id == 1).with_for_update().cte("head")
    seq = head.c.seq + 1
    utf8 = literal_column("'UTF8'")

    def raw(name: str) -> Any:
        return bindparam(name, type_=LargeBinary)

    digest = func.encode(func.sha256(
        raw("doc_a").op("||")(func.convert_to(head.c.last_hash, utf8)).op("||")(raw("doc_b"))
        .op("||")(func.convert_to(cast(seq, Text), utf8)).op("||")(raw("doc_c"))), literal_column("'hex'"))
    given = [name for name in HASHED_FIELDS if name not in ("seq", "prev_hash")]
    appended = insert(_EVENT).from_select(
        ["seq", *given, "prev_hash", "hash"],
        select(seq, *[bindparam(name, type_=_EVENT.c[name].type) for name in given], head.c.last_hash, digest),
    ).returning(_EVENT.c.seq, _EVENT.c.prev_hash, _EVENT.c.hash).cte("appended")
    # scalar subqueries, not UPDATE ... FROM appended: the head row is matched by its id alone, so that when a
    # concurrent writer moved it after this statement's snapshot PostgreSQL follows the row to the version the
    # FOR UPDATE locked (a join condition would be tested on the older version first)
    return (update(_HEAD).where(_HEAD.c.id == 1)
            .values(seq=select(appended.c.seq).scalar_subquery(), last_hash=select(appended.c.hash).scalar_subquery())
            .returning(_HEAD.c.seq, select(appended.c.prev_hash).scalar_subquery(), _HEAD.c.last_hash))


_APPEND_ONE = _append_one()


def _lock_head(session: Session) -> tuple[int, str]:
    """Lock the chain head (a row lock on PostgreSQL, the write lock on SQLite) and read it."""
    row = session.execute(_LOCK_HEAD).first()
    if row is None:
        _create_head(session)
        row = session.execute(_LOCK_HEAD).one()
    return int(row[0]), row[1]


def _create_head(session: Session) -> None:
    """The chain's head row, on a new database: once, whichever of several first writers comes first (the
    others' INSERT does nothing: on PostgreSQL it waits for the first one's commit; SQLite's write lock)."""
    session.execute(dialects.insert_ignoring_conflict(session, AuditHead.__table__, {"id": 1, "seq": 0,
                                                                                     "last_hash": GENESIS}))
