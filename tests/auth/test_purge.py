"""Old sign-in sessions and quiet sign-in throttle counters are purged daily by the scheduler."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select

from attest import jobs
from attest.auth import sessions
from attest.auth.models import LoginThrottle, UserSession
from attest.db import transaction, utcnow
from tests.factories import make_user


def test_the_daily_purge_drops_old_sessions_and_quiet_counters_only(fresh_db):
    now = utcnow()
    with transaction(fresh_db.factory) as s:
        user = make_user(s, "ann@acme.example")
        sessions.start(s, user.id, "password", now - timedelta(days=sessions.KEEP_DAYS + 1), ip="10.0.0.1")
        sessions.start(s, user.id, "password", now - timedelta(days=30), ip="10.0.0.2")  # known_address needs it
        s.add_all([
            LoginThrottle(key="quiet", kind="address", failures=3, last_failure_at=now - timedelta(days=2)),
            LoginThrottle(key="recent", kind="address", failures=3, last_failure_at=now - timedelta(hours=1)),
            LoginThrottle(key="blocked", kind="account", failures=60, last_failure_at=now - timedelta(days=2),
                          blocked_until=now + timedelta(minutes=5)),
        ])
    assert "auth:purge" in {spec.id for spec in jobs.FIXED_JOBS}
    run = jobs.run_job(jobs.JobContext(fresh_db.factory, fresh_db.settings),
                       next(spec for spec in jobs.FIXED_JOBS if spec.id == "auth:purge"), now=now, use_slot=False)
    assert run.status == "succeeded" and run.detail == {"sessions": 1, "throttle": 1}
    with fresh_db.factory() as s:
        assert [r.ip for r in s.scalars(select(UserSession))] == ["10.0.0.2"]
        assert sorted(s.scalars(select(LoginThrottle.key))) == ["blocked", "recent"]
        assert s.scalar(select(func.count()).select_from(UserSession)) == 1
