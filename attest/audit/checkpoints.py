"""Signed checkpoints of the audit chain's head, kept outside the database.

The hash chain alone proves nothing against someone who can write to the database: they can change an
event and recompute every hash after it (and the head). So at least once a minute in which events were
written, the `audit:checkpoint` job (and `attest audit checkpoint`) signs the head with the evidence key
and writes it to a store the database cannot reach:

- a directory (default `<instance>/audit-checkpoints`; files are created once, never overwritten, 0444), or
- `s3://BUCKET/PREFIX`: an S3 bucket with Object Lock, each checkpoint written with a retention date
  (COMPLIANCE mode by default): nobody, the bucket owner included, can delete or overwrite it before then.

A checkpoint is a small JSON document (canonical JSON, keys sorted, no whitespace) with the signature
appended as its last member, like the evidence manifest:
`{"at":...,"event_id":...,"events":...,"format":"attest-audit-checkpoint/1","hash":...,"key_id":...,"seq":...,
"signature":{"algorithm":"Ed25519","key_id":...,"value":...}}`; the signed bytes are the document
without its signature member.

`verify_checkpoints` compares the chain with every checkpoint whose signature verifies against the
pinned key and names the first event whose hash differs from what was checkpointed; checkpoints with
a bad signature are reported too. The `audit_checkpoint` table only remembers what was written (so the
job knows whether anything is new); nothing trusts it.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from attest.audit.log import ChainProblem, iter_events, verify_events
from attest.audit.models import AuditCheckpoint
from attest.config import Settings
from attest.db import canonical_json, utcnow
from attest.signing import key_id
from attest.trail.models import AuditEvent, AuditHead

FORMAT = "attest-audit-checkpoint/1"
NAME_PREFIX = "checkpoint-"


class CheckpointError(RuntimeError):
    """A checkpoint cannot be written (no key, store unreachable, the chain is broken); the message says why."""


# --- stores ----------------------------------------------------------------------------------------------


class CheckpointStore(Protocol):
    def put(self, name: str, data: bytes) -> None: ...
    def names(self) -> Iterator[str]: ...
    def get(self, name: str) -> bytes: ...
    def describe(self) -> str: ...


class DirectoryStore:
    """Checkpoints as files in a directory: created once (never overwritten), read-only, fsynced."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def describe(self) -> str:
        return str(self.path)

    def put(self, name: str, data: bytes) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".checkpoint-", dir=self.path)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o444)
            os.link(tmp, self.path / name)  # fails if it exists: a checkpoint is never replaced
        finally:
            os.unlink(tmp)
        try:
            dfd = os.open(self.path, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError:  # pragma: no cover - a file system without directory fsync
            pass

    def names(self) -> Iterator[str]:
        if not self.path.is_dir():
            return iter(())
        return iter(sorted(n for n in os.listdir(self.path) if n.startswith(NAME_PREFIX) and n.endswith(".json")))

    def get(self, name: str) -> bytes:
        return (self.path / name).read_bytes()


class S3Store:
    """Checkpoints as objects in an S3 bucket with Object Lock (versioning on, as Object Lock requires).

    Each object gets `ObjectLockMode` (COMPLIANCE by default: nobody can shorten it) and
    `ObjectLockRetainUntilDate` = now + the retention days; S3 then refuses to delete or overwrite that
    version until the date. Credentials come from boto3's standard chain.
    """

    def __init__(self, bucket: str, prefix: str = "", *, retention_days: int = 2557, mode: str = "COMPLIANCE",
                 client: Any = None, now=utcnow) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.retention_days = retention_days
        self.mode = mode
        self._client = client
        self._now = now

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3

            self._client = boto3.client("s3")
        return self._client

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def put(self, name: str, data: bytes) -> None:
        self.client.put_object(
            Bucket=self.bucket, Key=self.prefix + name, Body=data, ContentType="application/json",
            ChecksumAlgorithm="SHA256", ObjectLockMode=self.mode,
            ObjectLockRetainUntilDate=self._now() + timedelta(days=self.retention_days),
        )

    def names(self) -> Iterator[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix)
        for page in pages:
            for obj in page.get("Contents", []):
                name = obj["Key"][len(self.prefix):]
                if name.startswith(NAME_PREFIX) and name.endswith(".json") and "/" not in name:
                    yield name

    def get(self, name: str) -> bytes:
        return self.client.get_object(Bucket=self.bucket, Key=self.prefix + name)["Body"].read()


def open_store(settings: Settings, *, client: Any = None) -> CheckpointStore:
    """The store ATTEST_AUDIT_CHECKPOINT_STORE names (a directory, or s3://BUCKET/PREFIX)."""
    where = settings.audit_checkpoint_store or str(Path(settings.instance_path) / "audit-checkpoints")
    if where.startswith("s3://"):
        bucket, _, prefix = where[5:].partition("/")
        return S3Store(bucket, prefix, retention_days=settings.audit_checkpoint_retention_days,
                       mode=settings.audit_checkpoint_lock_mode, client=client)
    return DirectoryStore(where)


# --- the document ------------------------------------------------------------------------------------------


def checkpoint_name(seq: int, at: datetime) -> str:
    return f"{NAME_PREFIX}{seq:020d}-{at.astimezone(UTC):%Y%m%dT%H%M%SZ}.json"


def sign_checkpoint(key: Ed25519PrivateKey, *, seq: int, event_id: int | None, hash_: str, events: int,
                    at: datetime) -> bytes:
    pub = key.public_key()
    doc = {"format": FORMAT, "seq": seq, "event_id": event_id, "hash": hash_, "events": events,
           "at": at.astimezone(UTC).isoformat(), "key_id": key_id(pub)}
    body = canonical_json(doc).encode()
    signature = {"algorithm": "Ed25519", "key_id": key_id(pub), "value": base64.b64encode(key.sign(body)).decode()}
    return body[:-1] + b',"signature":' + canonical_json(signature).encode() + b"}"


def parse_checkpoint(data: bytes, trusted_key: Ed25519PublicKey) -> tuple[dict[str, Any], str | None]:
    """The checkpoint's document and None, or ({...}, why it cannot be trusted)."""
    try:
        doc = json.loads(data)
        if not isinstance(doc, dict):
            raise ValueError("not a JSON object")
    except ValueError as exc:
        return {}, f"not a checkpoint document ({exc})"
    sig = doc.pop("signature", None)
    if doc.get("format") != FORMAT or not isinstance(doc.get("seq"), int) or not isinstance(doc.get("hash"), str):
        return doc, "not a checkpoint document (format, seq or hash missing)"
    if not isinstance(sig, dict) or not sig.get("value"):
        return doc, "unsigned"
    try:
        trusted_key.verify(base64.b64decode(str(sig["value"]), validate=True), canonical_json(doc).encode())
    except (InvalidSignature, ValueError):
        return doc, (f"its signature does not verify against the pinned key {key_id(trusted_key)} (it names key "
                     f"{sig.get('key_id')}): forged, altered, or signed by another key")
    return doc, None


# --- writing ---------------------------------------------------------------------------------------------


@dataclass
class Written:
    name: str
    seq: int
    hash: str
    at: datetime
    store: str


def write_checkpoint(session: Session, key: Ed25519PrivateKey, store: CheckpointStore, now: datetime | None = None,
                     *, once_per_minute: bool = True) -> Written | None:
    """Sign the chain head and write it to the store, if events were written since the last checkpoint.

    None when nothing is new, or (with `once_per_minute`, the scheduler's job) when a checkpoint was
    already written in this minute. Before signing, the events since the previous checkpoint must link to
    it: a chain already broken is never signed. Adds the bookkeeping row to the caller's transaction.
    """
    now = now or utcnow()
    head = session.execute(select(AuditHead.seq, AuditHead.last_hash).where(AuditHead.id == 1)).first()
    if head is None or not head[0]:
        return None
    seq, head_hash = int(head[0]), head[1]
    last = session.execute(select(AuditCheckpoint.seq, AuditCheckpoint.hash, AuditCheckpoint.at)
                           .order_by(AuditCheckpoint.seq.desc(), AuditCheckpoint.id.desc()).limit(1)).first()
    if last is not None and last[0] >= seq:
        return None
    if once_per_minute and last is not None and last[2].replace(second=0, microsecond=0) == now.replace(
            second=0, microsecond=0):
        return None
    start = last[0] if last is not None else 1
    events = _events(session, start, seq)
    if last is not None:
        first = next(events, None)
        if first is None or first["seq"] != last[0] or first["hash"] != last[1]:
            raise CheckpointError(f"not checkpointed: event seq {last[0]} no longer has the hash the previous "
                                  "checkpoint recorded; run `attest audit verify`")
        events = itertools.chain([first], events)
    problem = verify_events(events, expect_start=1 if last is None else None, expected_head=(seq, head_hash))
    if problem is not None:
        raise CheckpointError(f"not checkpointed: the audit chain is broken at {problem}; run `attest audit verify`")
    event_id = session.scalar(select(AuditEvent.id).where(AuditEvent.seq == seq))
    data = sign_checkpoint(key, seq=seq, event_id=event_id, hash_=head_hash, events=seq, at=now)
    name = checkpoint_name(seq, now)
    try:
        store.put(name, data)
    except Exception as exc:
        raise CheckpointError(f"could not write checkpoint {name} to {store.describe()}: "
                              f"{type(exc).__name__}: {exc}") from exc
    session.add(AuditCheckpoint(seq=seq, hash=head_hash, at=now, name=name))
    session.flush()
    return Written(name, seq, head_hash, now, store.describe())


def _events(session: Session, start: int, stop: int, batch: int = 5000) -> Iterator[dict[str, Any]]:
    """Events seq start..stop in order, as dicts, a batch at a time."""
    return iter_events(session, AuditEvent.seq <= stop, after=start - 1, batch=batch)


# --- verifying -------------------------------------------------------------------------------------------


@dataclass
class CheckpointReport:
    checkpoints: int = 0  # with a good signature
    bad: list[str] = field(default_factory=list)  # checkpoints that cannot be trusted, and why
    problem: ChainProblem | None = None  # the first event that differs from a checkpoint
    latest_seq: int | None = None  # the newest event a good checkpoint covers
    store: str = ""

    @property
    def ok(self) -> bool:
        return not self.bad and self.problem is None


def read_checkpoints(store: CheckpointStore, trusted_key: Ed25519PublicKey,
                     report: CheckpointReport | None = None) -> list[tuple[str, dict[str, Any]]]:
    """The checkpoints whose signature verifies, in seq order; the others go to `report.bad`."""
    good = []
    for name in store.names():
        try:
            doc, why = parse_checkpoint(store.get(name), trusted_key)
        except Exception as exc:
            doc, why = {}, f"cannot be read ({type(exc).__name__}: {exc})"
        if why:
            if report is not None:
                report.bad.append(f"checkpoint {name}: {why}")
            continue
        good.append((name, doc))
    good.sort(key=lambda nd: (nd[1]["seq"], nd[0]))
    return good


def verify_checkpoints(session: Session, store: CheckpointStore, trusted_key: Ed25519PublicKey,
                       batch: int = 1000) -> CheckpointReport:
    """Compare the chain in the database with every checkpoint signed by the pinned key.

    Names the first event (in seq order) whose hash differs from a checkpoint, or that a checkpoint
    covers but the database no longer holds. Events between the last checkpoint that still matches and
    that one were rewritten (and the hashes after them recomputed, or the chain itself would show it).
    """
    report = CheckpointReport(store=store.describe())
    good = read_checkpoints(store, trusted_key, report)
    report.checkpoints = len(good)
    head = session.scalar(select(func.max(AuditEvent.seq))) or 0
    matched: tuple[int, str] | None = None
    for i in range(0, len(good), batch):
        part = good[i:i + batch]
        seqs = sorted({doc["seq"] for _, doc in part})
        stored = {s: (eid, h) for s, eid, h in session.execute(
            select(AuditEvent.seq, AuditEvent.id, AuditEvent.hash).where(AuditEvent.seq.in_(seqs)))}
        for name, doc in part:
            seq = doc["seq"]
            since = (f"; events after seq {matched[0]} (checkpoint {matched[1]}, which still matches) up to seq {seq} "
                     "were rewritten and re-hashed" if matched else
                     f"; events up to seq {seq} were rewritten and re-hashed")
            if seq not in stored:
                what = (f"missing: checkpoint {name} (written {doc.get('at')}) covers events up to seq {seq}, the "
                        f"database holds events only up to seq {head}" if seq > head else
                        f"missing, though checkpoint {name} (written {doc.get('at')}) covers it")
                report.problem = ChainProblem(seq, None, what + " (events were removed)")
                return report
            event_id, hash_ = stored[seq]
            if hash_ != doc["hash"]:
                report.problem = ChainProblem(seq, event_id, (
                    f"differs from the signed checkpoint {name} (written {doc.get('at')}): its hash is {hash_}, "
                    f"the checkpoint says {doc['hash']}" + since))
                return report
            matched = (seq, name)
            report.latest_seq = seq
    return report
