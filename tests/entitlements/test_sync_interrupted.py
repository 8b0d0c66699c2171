"""A sync whose process is killed while it pages does not block its source (issue 16, part 4): the run
beats a heartbeat; once the beat stops, the next sync (or the scheduler, every minute) marks the run
failed ("interrupted") and the source syncs again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from attest import jobs
from attest.db import transaction, utcnow
from attest.entitlements import sync
from attest.entitlements.models import SyncRun
from attest.entitlements.sync import SyncError, run_sync
from attest.entitlements.sync.run import STALE_HEARTBEAT
from tests.entitlements.test_sync import org
from tests.factories import ListConnector, make_source

# a sync that reads a few records, then hangs in the upstream call (as a stalled API would), in its own
# process, with the heartbeat every 0.2 s so the test need not wait
CHILD = """
import threading
from attest.config import load_settings
from attest.connectors.base import BaseConnector, AccountRecord
from attest.db import make_engine, make_session_factory
from attest.entitlements import sync

sync.SYNC_HEARTBEAT = 0.2

class Stalled(BaseConnector):
    kind = "demo"
    def validate(self):
        return None
    def sync(self):
        yield AccountRecord("u1", login="one")
        threading.Event().wait()

settings = load_settings()
factory = make_session_factory(make_engine(settings.database_url))
sync.run_sync(factory, settings, "idp", connector=Stalled({}, {}))
"""


def _running(factory):
    with factory() as s:
        return s.scalar(select(SyncRun).where(SyncRun.status == "running"))


def test_a_killed_sync_is_marked_interrupted_and_the_source_syncs_again(fresh_db, tmp_path):
    with transaction(fresh_db.factory) as s:
        make_source(s, "idp", authoritative=True)
    run_sync(fresh_db.factory, fresh_db.settings, "idp", connector=ListConnector(org(5)))
    env = {**os.environ, "ATTEST_ENV": "test", "ATTEST_DATABASE_URL": fresh_db.url,
           "ATTEST_INSTANCE_PATH": str(tmp_path / "instance"), "ATTEST_LOG_LEVEL": "ERROR"}
    child = subprocess.Popen([sys.executable, "-c", CHILD], env=env)
    try:
        deadline = time.monotonic() + 60
        run = _running(fresh_db.factory)
        while run is None or run.heartbeat_at is None or run.heartbeat_at <= run.started_at:
            assert child.poll() is None and time.monotonic() < deadline, "the child sync never started beating"
            time.sleep(0.05)
            run = _running(fresh_db.factory)
        assert run.holder.endswith(f":{child.pid}")
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(30)

    # right after the kill its last beat is fresh: a new sync is still refused, naming the holder
    with pytest.raises(SyncError, match=f"already syncing .* by .*:{child.pid}"):
        run_sync(fresh_db.factory, fresh_db.settings, "idp", connector=ListConnector(org(5)))
    # a minute without a beat later (the scheduler's sweep runs every minute): interrupted
    later = utcnow() + STALE_HEARTBEAT + timedelta(seconds=1)
    with transaction(fresh_db.factory) as s:
        assert sync.sweep_interrupted(s, utcnow()) == []  # not yet
        assert sync.sweep_interrupted(s, later) == [run.id]
    with fresh_db.factory() as s:
        dead = s.get(SyncRun, run.id)
        assert dead.status == "failed" and dead.error.startswith("interrupted: the process running it")
        assert dead.finished_at == later
    result = run_sync(fresh_db.factory, fresh_db.settings, "idp", connector=ListConnector(org(5)))
    assert result.status == "succeeded" and result.stats["ended"]["accounts"] == 0  # nothing it read was applied


def test_the_scheduler_sweeps_interrupted_runs_every_minute(fresh_db):
    with transaction(fresh_db.factory) as s:
        source = make_source(s, "idp")
        s.add(SyncRun(source_id=source.id, status="running", started_at=utcnow() - timedelta(minutes=5),
                      heartbeat_at=utcnow() - timedelta(minutes=3), holder="gone:123", stats={}, failed_parts=[],
                      notes=[]))
        s.add(SyncRun(source_id=source.id, status="running", started_at=utcnow() - timedelta(minutes=5),
                      heartbeat_at=utcnow(), holder="alive:456", stats={}, failed_parts=[], notes=[]))
    scheduler, ctx = jobs.make_scheduler(fresh_db.engine, fresh_db.factory, fresh_db.settings, "s1")
    scheduler.start(paused=True)
    try:
        out = jobs.job_reconcile(ctx, jobs.RECONCILE, utcnow())
    finally:
        scheduler.shutdown(wait=False)
    with fresh_db.factory() as s:
        runs = {r.holder: r.status for r in s.scalars(select(SyncRun))}
    assert runs == {"gone:123": "failed", "alive:456": "running"} and len(out["interrupted_runs"]) == 1


def test_a_long_run_that_keeps_beating_is_never_taken_for_dead(fresh_db, monkeypatch):
    monkeypatch.setattr(sync, "SYNC_HEARTBEAT", 0.05)
    with transaction(fresh_db.factory) as s:
        make_source(s, "idp", authoritative=True)
    seen = []

    class Slow(ListConnector):
        def sync(self):
            yield from super().sync()
            # the run reads on while a minute passes on the sweep's clock: it has beaten meanwhile
            started = _running(fresh_db.factory)
            deadline = time.monotonic() + 10
            while (r := _running(fresh_db.factory)).heartbeat_at == started.heartbeat_at:
                assert time.monotonic() < deadline
                time.sleep(0.02)
            with transaction(fresh_db.factory) as s:
                s.execute(update(SyncRun).where(SyncRun.id == r.id).values(started_at=r.started_at - timedelta(hours=1)))
                seen.append(sync.sweep_interrupted(s, utcnow()))

    result = run_sync(fresh_db.factory, fresh_db.settings, "idp", connector=Slow(org(3)))
    assert seen == [[]] and result.status == "succeeded"
