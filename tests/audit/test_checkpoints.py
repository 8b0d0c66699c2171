"""Signed checkpoints of the audit chain outside the database: the job's cadence, `attest audit verify`
catching a rewritten-and-rehashed chain and forged checkpoints, the PostgreSQL trigger in every replication
role, the S3 Object Lock store (moto)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select, text

from attest import jobs
from attest.audit.checkpoints import (
    CheckpointError,
    DirectoryStore,
    S3Store,
    checkpoint_name,
    open_store,
    sign_checkpoint,
    verify_checkpoints,
    write_checkpoint,
)
from attest.audit.evidence import load_signing_key
from attest.audit.log import verify_chain
from attest.trail.chain import event_hash, record
from attest.trail.models import AuditEvent, AuditHead
from tests.audit.helpers import append_only_off

T0 = datetime(2026, 11, 30, 12, 0, 10, tzinfo=UTC)


def events(session, n, actor="admin@acme.example"):
    for i in range(n):
        record(session, actor=actor, action="source.update", object_type="source", object_id=str(i),
               after={"name": f"okta-{i}"})
    session.commit()


def files(store):
    return list(store.names())


@pytest.fixture
def key(settings):
    return load_signing_key(settings)


def test_the_job_writes_at_most_one_checkpoint_a_minute_and_none_without_writes(session, factory, settings):
    spec = next(s for s in jobs.FIXED_JOBS if s.kind == "checkpoint")
    ctx = jobs.JobContext(factory, settings)
    store = open_store(settings)
    assert isinstance(store, DirectoryStore) and store.path.name == "audit-checkpoints"

    assert jobs.job_checkpoint(ctx, spec, T0) == "no new audit events" and files(store) == []
    events(session, 3)
    assert jobs.run_job(ctx, spec, now=T0).status == "succeeded"
    assert files(store) == [checkpoint_name(3, T0)]
    events(session, 2)
    assert jobs.job_checkpoint(ctx, spec, T0 + timedelta(seconds=40)) == "no new audit events"  # same minute
    assert len(files(store)) == 1
    assert jobs.job_checkpoint(ctx, spec, T0 + timedelta(minutes=1)).startswith("checkpoint ")
    assert files(store)[-1] == checkpoint_name(5, T0 + timedelta(minutes=1))
    assert jobs.job_checkpoint(ctx, spec, T0 + timedelta(minutes=2)) == "no new audit events"  # nothing written
    assert len(files(store)) == 2
    report = verify_checkpoints(session, store, load_signing_key(settings).public_key())
    assert report.ok and report.checkpoints == 2 and report.latest_seq == 5


def _rewrite_and_rehash(session, seq: int, actor: str) -> None:
    """What a database administrator can do: change an event, recompute every hash after it and the head."""
    conn = session.connection()
    with append_only_off(conn):  # the owner can switch the triggers off, and on again afterwards
        rows = [dict(r._mapping) for r in conn.execute(select(AuditEvent.__table__).order_by(AuditEvent.seq))]
        prev = None
        for row in rows:
            if row["seq"] < seq:
                prev = row["hash"]
                continue
            if row["seq"] == seq:
                row["actor"] = actor
            row["prev_hash"] = prev
            row["hash"] = event_hash(row)
            prev = row["hash"]
            conn.execute(AuditEvent.__table__.update().where(AuditEvent.id == row["id"])
                         .values(actor=row["actor"], prev_hash=row["prev_hash"], hash=row["hash"]))
        conn.execute(AuditHead.__table__.update().where(AuditHead.id == 1).values(last_hash=prev))
    session.commit()


def test_audit_verify_names_the_first_event_of_a_rewritten_and_rehashed_chain(app, session, factory, settings, key):
    runner = app.test_cli_runner()
    store = open_store(settings)
    events(session, 4)
    with factory() as s, s.begin():
        write_checkpoint(s, key, store, T0)
    events(session, 3)
    with factory() as s, s.begin():
        write_checkpoint(s, key, store, T0 + timedelta(minutes=1))
    events(session, 2)  # not checkpointed yet
    ok = runner.invoke(args=["audit", "verify"])
    assert ok.exit_code == 0, ok.output
    assert "2 signed checkpoints" in ok.output and "2 newer events not yet checkpointed" in ok.output

    _rewrite_and_rehash(session, 6, "someone-else@acme.example")
    assert verify_chain(session) is None  # the chain alone says intact
    result = runner.invoke(args=["audit", "verify"])
    assert result.exit_code == 1
    event7 = session.scalar(select(AuditEvent).where(AuditEvent.seq == 7))
    assert f"audit chain BROKEN at event seq 7: differs from the signed checkpoint {checkpoint_name(7, T0 + timedelta(minutes=1))}" \
           in result.output
    assert f"(row id {event7.id})" in result.output
    assert "events after seq 4 (checkpoint" in result.output and "up to seq 7 were rewritten" in result.output

    # the next checkpoint refuses to sign over the rewrite
    with pytest.raises(CheckpointError, match="no longer has the hash the previous checkpoint recorded"), \
            factory() as s, s.begin():
        write_checkpoint(s, key, store, T0 + timedelta(minutes=2))


def test_removed_tail_events_are_caught_by_the_checkpoint(session, factory, settings, key):
    store = open_store(settings)
    events(session, 5)
    with factory() as s, s.begin():
        write_checkpoint(s, key, store, T0)
    conn = session.connection()
    with append_only_off(conn):  # as a database administrator can
        conn.execute(text("DELETE FROM audit_event WHERE seq = 5"))
    last = conn.execute(text("SELECT hash FROM audit_event WHERE seq = 4")).scalar()
    conn.execute(text("UPDATE audit_head SET seq = 4, last_hash = :h"), {"h": last})
    session.commit()
    assert verify_chain(session) is None
    report = verify_checkpoints(session, store, key.public_key())
    assert report.problem.seq == 5 and "events were removed" in report.problem.problem


def test_a_checkpoint_not_signed_by_the_pinned_key_is_reported(app, session, factory, settings, key):
    store = open_store(settings)
    events(session, 2)
    with factory() as s, s.begin():
        write_checkpoint(s, key, store, T0)
    head = session.scalar(select(AuditEvent).where(AuditEvent.seq == 2))
    forged = sign_checkpoint(Ed25519PrivateKey.generate(), seq=2, event_id=head.id, hash_=head.hash, events=2,
                             at=T0 + timedelta(minutes=5))
    store.put(checkpoint_name(2, T0 + timedelta(minutes=5)), forged)
    altered = store.get(checkpoint_name(2, T0)).replace(b'"events":2', b'"events":3')
    store.put(checkpoint_name(2, T0 + timedelta(minutes=6)), altered)
    result = app.test_cli_runner().invoke(args=["audit", "verify"])
    assert result.exit_code == 1
    assert result.output.count("checkpoint NOT trusted") == 2
    assert "its signature does not verify against the pinned key" in result.output


def test_postgresql_trigger_fires_under_replica_role(engine):
    if engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL's append-only trigger")
    from sqlalchemy.exc import DBAPIError

    with engine.connect() as conn, conn.begin():
        conn.execute(text("INSERT INTO audit_event (seq, at, actor, action, prev_hash, hash) "
                          "VALUES (888888, now(), 'x', 'x', 'p', 'h')"))
        conn.execute(text("SET LOCAL session_replication_role = replica"))
        with pytest.raises(DBAPIError, match="append-only"), conn.begin_nested():
            conn.execute(text("UPDATE audit_event SET actor = 'y' WHERE seq = 888888"))
        with pytest.raises(DBAPIError, match="append-only"), conn.begin_nested():
            conn.execute(text("DELETE FROM audit_event WHERE seq = 888888"))
        enabled = dict(conn.execute(text(
            "SELECT tgname, tgenabled FROM pg_trigger WHERE tgrelid = 'audit_event'::regclass AND NOT tgisinternal")).all())
        assert enabled == {"audit_event_append_only": "A", "audit_event_no_truncate": "A"}
        conn.rollback()


def test_s3_object_lock_store(session, factory, settings, key):
    import boto3
    from moto import mock_aws

    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="attest-audit", ObjectLockEnabledForBucket=True)
        s3_settings = settings.replace(audit_checkpoint_store="s3://attest-audit/prod/checkpoints",
                                       audit_checkpoint_retention_days=30)
        store = open_store(s3_settings, client=client)
        assert isinstance(store, S3Store) and store.describe() == "s3://attest-audit/prod/checkpoints/"
        events(session, 3)
        now = datetime.now(UTC)
        with factory() as s, s.begin():
            written = write_checkpoint(s, key, store, now)
        key_name = "prod/checkpoints/" + written.name
        head = client.head_object(Bucket="attest-audit", Key=key_name)
        assert head["ObjectLockMode"] == "COMPLIANCE"
        assert timedelta(days=29) < head["ObjectLockRetainUntilDate"] - now <= timedelta(days=30, minutes=1)
        version = head["VersionId"]
        with pytest.raises(client.exceptions.ClientError, match="AccessDenied"):
            client.delete_object(Bucket="attest-audit", Key=key_name, VersionId=version)
        assert list(store.names()) == [written.name]
        report = verify_checkpoints(session, store, key.public_key())
        assert report.ok and report.latest_seq == 3


def test_the_foreign_key_bypass_is_never_taken_while_an_audit_trigger_could_be_skipped(session):
    from attest.dialects import restore_fk_triggers, skip_fk_triggers

    if session.get_bind().dialect.name != "postgresql":
        pytest.skip("PostgreSQL's replication role")
    assert skip_fk_triggers(session) is True  # the test role is a superuser; the audit triggers fire ALWAYS
    restore_fk_triggers(session)
    session.execute(text("ALTER TABLE audit_event ENABLE TRIGGER audit_event_append_only"))  # as before 0008
    assert skip_fk_triggers(session) is False
    assert session.execute(text("SHOW session_replication_role")).scalar() == "origin"
    session.rollback()
