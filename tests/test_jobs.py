"""The scheduler: job leases between scheduler processes, the job table, and the jobs themselves."""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.orm import sessionmaker

from attest import jobs, schedules
from attest.db import make_engine, transaction
from attest.entitlements.models import Source
from attest.jobs import JobContext, JobLease, JobSpec, acquire, release, run_job
from attest.reviews.models import Campaign, ReviewerNotice, ReviewItem
from tests.factories import make_source

T = datetime(2026, 5, 4, 9, 0, 20, tzinfo=UTC)  # 20 s after the 09:00 occurrence of an every-minute job
EVERY_MINUTE = JobSpec("probe:job", "probe", "* * * * *")


@pytest.fixture
def probe(monkeypatch):
    """A job kind that counts its runs (and which holder ran it), can be held running, and told to fail."""

    class Probe:
        runs: list[tuple[str, datetime]] = []
        hold: threading.Event | None = None  # the first run goes on until the test sets it
        until: threading.Event | None = None  # every run goes on until the test sets it (or 5 s have passed)
        fail: Exception | None = None
        lock = threading.Lock()

        def __call__(self, ctx, spec, now):
            with self.lock:
                self.runs.append((ctx.holder, now))
                first = len(self.runs) == 1
            if self.hold is not None and first:
                assert self.hold.wait(30), "the test never let the job finish"
            if self.until is not None:
                self.until.wait(5)  # bounded: a second run that should not exist must not hang the test
            if self.fail is not None:
                raise self.fail
            return "probed"

    p = Probe()
    p.runs = []
    monkeypatch.setitem(jobs.JOBS, "probe", p)
    return p


def lease(factory, name="probe:job") -> JobLease | None:
    with factory() as s:
        return s.get(JobLease, name)


def test_acquire_and_release_a_lease(session):
    ttl = timedelta(minutes=5)
    assert acquire(session, "j", ttl, holder="a", now=T)
    assert not acquire(session, "j", ttl, holder="b", now=T + timedelta(seconds=1))  # held
    release(session, "j", "succeeded", holder="a", now=T + timedelta(seconds=2))
    row = session.get(JobLease, "j")
    session.refresh(row)
    assert (row.holder, row.expires_at, row.last_status) == (None, None, "succeeded")
    assert acquire(session, "j", ttl, holder="b", now=T + timedelta(seconds=3))
    # release by someone who does not hold it changes nothing
    release(session, "j", "failed", holder="a")
    session.refresh(row)
    assert row.holder == "b"


def test_an_occurrence_already_run_elsewhere_is_not_run_again(session):
    ttl = timedelta(minutes=5)
    slot = T.replace(second=0)
    assert acquire(session, "j", ttl, holder="a", now=T, slot=slot)
    release(session, "j", "succeeded", holder="a", now=T + timedelta(seconds=5))
    # a second scheduler firing the same 09:00 occurrence late finds it done
    assert not acquire(session, "j", ttl, holder="b", now=T + timedelta(seconds=8), slot=slot)
    # the 09:01 occurrence is free again
    assert acquire(session, "j", ttl, holder="b", now=T + timedelta(seconds=45), slot=slot + timedelta(minutes=1))


def test_previous_fire_time_follows_the_cron():
    assert schedules.previous_fire_time("* * * * *", T) == datetime(2026, 5, 4, 9, 0, tzinfo=UTC)
    assert schedules.previous_fire_time("*/5 * * * *", T + timedelta(minutes=7)) == datetime(2026, 5, 4, 9, 5, tzinfo=UTC)
    assert schedules.previous_fire_time("0 9 1 1,4,7,10 *", T) == datetime(2026, 4, 1, 9, 0, tzinfo=UTC)
    assert schedules.previous_fire_time("30 2 * * 1", T) == datetime(2026, 5, 4, 2, 30, tzinfo=UTC)  # a Monday
    assert schedules.previous_fire_time("0 9 * * *", datetime(2026, 5, 4, 9, 0, tzinfo=UTC)) == \
        datetime(2026, 5, 4, 9, 0, tzinfo=UTC)


def test_cron_reads_crontab_as_the_scheduler_always_has():
    # a restricted day of the month and day of the week must both match: 09:00 on a 1st that is a Monday
    assert schedules.previous_fire_time("0 9 1 * 1", T) == datetime(2025, 12, 1, 9, 0, tzinfo=UTC)
    assert schedules.cron_trigger("0 9 1 * 1").get_next_fire_time(None, T) == datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
    # the second Monday of the month; a date that never comes never fires (and is not an error)
    assert schedules.cron_trigger("0 9 * * mon#2").get_next_fire_time(None, T) == datetime(2026, 5, 11, 9, 0, tzinfo=UTC)
    assert schedules.previous_fire_time("0 9 30 2 *", T) is None
    assert schedules.cron_trigger("0 9 30 2 *").get_next_fire_time(None, T) is None
    # after a run at 09:00 the next one is 09:01, also when asked at 09:00 exactly; missed ones come first
    nine = T.replace(second=0)
    assert schedules.cron_trigger("* * * * *").get_next_fire_time(nine, nine) == nine + timedelta(minutes=1)
    assert schedules.cron_trigger("* * * * *").get_next_fire_time(nine, nine + timedelta(minutes=5)) == \
        nine + timedelta(minutes=1)
    for bad in ("0 9 * *", "61 * * * *", "0 9 * * 8", "@daily"):
        with pytest.raises(ValueError):
            schedules.cron_trigger(bad)


def _contexts(fresh_db, n=2):
    """n scheduler instances: each its own engine (connections) and holder name."""
    out = []
    for i in range(n):
        engine = make_engine(fresh_db.url)
        out.append(JobContext(sessionmaker(bind=engine, expire_on_commit=False), fresh_db.settings,
                              holder=f"scheduler-{i}"))
    return out


def test_two_schedulers_firing_the_same_job_at_the_same_moment_run_it_once(fresh_db, probe):
    contexts = _contexts(fresh_db, 2)
    for round_ in range(3):  # a fresh lease row (INSERT race) and then an existing one (UPDATE race)
        now = T + timedelta(minutes=round_)
        barrier = threading.Barrier(2)
        results = {}
        # the run goes on until the other scheduler has been answered: it fired while the lease was held
        probe.until = threading.Event()

        def fire(ctx, now=now, barrier=barrier, results=results, answered=probe.until):
            barrier.wait()
            results[ctx.holder] = run_job(ctx, EVERY_MINUTE, now=now)
            if results[ctx.holder].status == "skipped":
                answered.set()

        threads = [threading.Thread(target=fire, args=(ctx,)) for ctx in contexts]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        statuses = sorted(r.status for r in results.values())
        assert statuses == ["skipped", "succeeded"], (round_, results)
        # the one that lost, firing a moment later (after the winner released), still does not run it
        loser = next(ctx for ctx in contexts if results[ctx.holder].status == "skipped")
        assert run_job(loser, EVERY_MINUTE, now=now + timedelta(seconds=10)).status == "skipped"
    assert len(probe.runs) == 3
    row = lease(fresh_db.factory)
    assert row.holder is None and row.last_status == "succeeded"


def test_a_crashed_holders_lease_expires_and_is_taken_over(fresh_db, probe):
    a, b = _contexts(fresh_db, 2)
    with transaction(a.factory) as s:  # A takes the lease and dies without releasing it
        assert acquire(s, EVERY_MINUTE.id, a.ttl, holder=a.holder, now=T)
    assert run_job(b, EVERY_MINUTE, now=T + timedelta(minutes=1)).status == "skipped"
    assert run_job(b, EVERY_MINUTE, now=T + a.ttl - timedelta(seconds=1)).status == "skipped"
    assert probe.runs == []
    run = run_job(b, EVERY_MINUTE, now=T + a.ttl + timedelta(seconds=1))
    assert run.status == "succeeded"
    assert probe.runs == [(b.holder, T + a.ttl + timedelta(seconds=1))]
    row = lease(fresh_db.factory)
    assert (row.holder, row.last_status) == (None, "succeeded")


class FakeMonotonic:
    """A monotonic clock the test moves (JobContext.clock): a run's heartbeats and release times follow it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _wait_for(condition, what: str, seconds: float = 10.0) -> None:
    """Poll until `condition()` holds (another thread is doing the work), failing after `seconds`."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.01)


def test_a_running_job_keeps_its_lease_alive(fresh_db, probe):
    a, b = _contexts(fresh_db, 2)
    clock = FakeMonotonic()
    a.ttl, a.heartbeat, a.clock = timedelta(seconds=2), 0.01, clock
    probe.hold = threading.Event()  # A's run goes on until the test lets it finish
    results = {}
    t = threading.Thread(target=lambda: results.setdefault("a", run_job(a, EVERY_MINUTE, now=T)))
    t.start()
    try:
        _wait_for(lambda: probe.runs, "A's run started")
        clock.now += 3.0  # A has run longer than the TTL: only its heartbeat keeps the lease
        _wait_for(lambda: lease(fresh_db.factory).expires_at >= T + timedelta(seconds=3) + a.ttl,
                  "A's heartbeat renewed the lease for the TTL from the run's 3rd second")
        assert run_job(b, EVERY_MINUTE, now=T + timedelta(seconds=3)).status == "skipped"  # expired without renewal
    finally:
        probe.hold.set()
        t.join(10)
    assert results["a"].status == "succeeded"
    assert lease(fresh_db.factory).last_finished_at == T + timedelta(seconds=3)  # released when the clock says
    assert len(probe.runs) == 1


def test_a_failing_job_is_recorded_on_its_lease_row_and_runs_again_next_time(fresh_db, probe):
    (ctx,) = _contexts(fresh_db, 1)
    probe.fail = RuntimeError("upstream said no")
    run = run_job(ctx, EVERY_MINUTE, now=T)
    assert run.status == "failed" and run.error == "RuntimeError: upstream said no"
    row = lease(fresh_db.factory)
    assert row.holder is None
    assert row.last_status == "failed" and row.last_error == "RuntimeError: upstream said no"
    assert row.last_started_at == T
    probe.fail = None
    assert run_job(ctx, EVERY_MINUTE, now=T + timedelta(minutes=1)).status == "succeeded"
    row = lease(fresh_db.factory)
    assert (row.last_status, row.last_error) == ("succeeded", None)


def test_the_job_table_has_a_sync_per_enabled_scheduled_source(session, monkeypatch):
    make_source(session, "okta-prod").schedule = "0 */4 * * *"
    make_source(session, "github").schedule = "30 2 * * *"
    make_source(session, "aws-manual")  # no schedule
    off = make_source(session, "old-okta")
    off.schedule, off.enabled = "0 * * * *", False
    make_source(session, "broken").schedule = "every tuesday"  # bypassed validation somehow
    session.flush()

    specs = {s.id: s for s in jobs.job_table(session)}
    assert {k for k in specs if k.startswith("sync:")} == {"sync:okta-prod", "sync:github"}
    assert specs["sync:okta-prod"] == JobSpec("sync:okta-prod", "sync", "0 */4 * * *", "okta-prod")
    assert {"scheduler:reconcile", "campaigns:launch", "campaigns:close", "notify:send"} <= set(specs)
    assert specs["remediation:run"] == jobs.REMEDIATION  # always: remediation is part of Attest


def test_the_remediation_job_runs_the_pending_remediations_at_the_schedulers_time_as_the_scheduler(
        factory, settings):
    calls = []

    def run_pending(session_factory, run_settings, **kwargs):
        calls.append((session_factory, run_settings, kwargs))
        return "report"

    ctx = JobContext(factory, settings, run_remediation=run_pending)
    assert jobs.job_remediation(ctx, jobs.REMEDIATION, T) == "report"
    assert calls == [(factory, settings, {"now": T, "actor": jobs.ACTOR})]


def test_the_remediation_job_runs_attests_remediation_when_nothing_is_injected(factory, settings):
    report = jobs.job_remediation(JobContext(factory, settings), jobs.REMEDIATION, T)
    assert (report.planned, report.dry_run) == ([], False)  # nothing pending: nothing planned, a real run


def test_reconcile_keeps_the_shared_job_store_in_step_with_the_sources(fresh_db):
    with transaction(fresh_db.factory) as s:
        make_source(s, "okta-prod").schedule = "0 */4 * * *"
        make_source(s, "github").schedule = "30 2 * * *"
    first, ctx1 = jobs.make_scheduler(make_engine(fresh_db.url), fresh_db.factory, fresh_db.settings, "s1")
    second, _ = jobs.make_scheduler(make_engine(fresh_db.url), fresh_db.factory, fresh_db.settings, "s2")
    first.start(paused=True)
    second.start(paused=True)
    try:
        out = jobs.reconcile(first, fresh_db.factory)
        assert set(out["added"]) >= {"sync:okta-prod", "sync:github", "campaigns:launch", "notify:send"}
        stored = {j.id: j for j in second.get_jobs(jobstore="default")}  # the other process sees the same, shared, job list
        assert set(stored) == set(out["added"])
        assert str(stored["sync:okta-prod"].trigger) == str(jobs.JobSpec("x", "sync", "0 */4 * * *").trigger())
        with fresh_db.engine.connect() as conn:
            assert conn.scalar(text("SELECT count(*) FROM apscheduler_jobs")) == len(out["added"])

        with transaction(fresh_db.factory) as s:
            s.scalars(select(Source).where(Source.name == "okta-prod")).one().schedule = "15 * * * *"
            s.scalars(select(Source).where(Source.name == "github")).one().enabled = False
            make_source(s, "aws").schedule = "0 3 * * *"
        out = jobs.reconcile(second, fresh_db.factory)
        assert out == {"added": ["sync:aws"], "changed": ["sync:okta-prod"], "removed": ["sync:github"]}
        assert jobs.reconcile(first, fresh_db.factory) == {"added": [], "changed": [], "removed": []}
        job = first.get_job("sync:okta-prod")
        assert job.args[2] == "15 * * * *"
        assert job.next_run_time.minute == 15
    finally:
        first.shutdown(wait=False)
        second.shutdown(wait=False)


def test_run_scheduler_starts_reconciles_and_stops(fresh_db):
    with transaction(fresh_db.factory) as s:
        make_source(s, "okta-prod").schedule = "0 */4 * * *"
    stop = threading.Event()
    result = {}
    t = threading.Thread(target=lambda: result.setdefault(
        "s", jobs.run_scheduler(fresh_db.settings, make_engine(fresh_db.url), fresh_db.factory, holder="main",
                                stop=stop)))
    t.start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        row = lease(fresh_db.factory, "scheduler:reconcile")
        if row is not None and row.last_status:
            break
        time.sleep(0.1)
    stop.set()
    t.join(30)
    assert not t.is_alive()
    assert row.last_status == "succeeded"
    with fresh_db.engine.connect() as conn:
        ids = set(conn.scalars(text("SELECT id FROM apscheduler_jobs")))
    assert {"sync:okta-prod", "scheduler:reconcile", "notify:send", "campaigns:close"} <= ids


def test_stopping_the_scheduler_while_a_reconcile_runs_lets_it_finish_and_starts_nothing_new(fresh_db, probe,
                                                                                           monkeypatch):
    """A reconcile job running when the stop comes (say one fired at a minute boundary) finishes and the stop
    returns. (APScheduler's shutdown(wait=True) waits for running jobs while holding its job store lock, which
    the reconcile needs for get_jobs: the stop hung for good.) A job that fires once the stop began is not run."""
    table, started, calls = jobs.job_table, threading.Event(), []
    stop = threading.Event()

    def slow_table(session):
        calls.append(threading.current_thread().name)
        if len(calls) == 2:  # a scheduled reconcile (the first is run_scheduler's own, before the loop)
            started.set()
            stop.wait(10)
            # the stop is under way (waiting for the running jobs) when this reconcile reaches the scheduler
            _wait_for(lambda: jobs.scheduler._RUNTIME is not None and jobs.scheduler._RUNTIME.stopping,
                      "the scheduler began to stop")
        return table(session)

    monkeypatch.setattr(jobs.scheduler, "job_table", slow_table)
    result = {}
    t = threading.Thread(target=lambda: result.setdefault(
        "s", jobs.run_scheduler(fresh_db.settings, make_engine(fresh_db.url), fresh_db.factory, holder="main",
                                stop=stop)))
    t.start()
    try:
        deadline = time.monotonic() + 20
        while (row := lease(fresh_db.factory, "scheduler:reconcile")) is None or not row.last_status:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        ctx = jobs.scheduler._RUNTIME
        ctx.scheduler.add_job(jobs.scheduled_run, "date", run_date=datetime.now(UTC), id="probe:reconcile",
                              args=JobSpec("probe:reconcile", "reconcile", "* * * * *").args)
        assert started.wait(20)
        stop.set()
        while not ctx.stopping:
            assert time.monotonic() < deadline + 20
            time.sleep(0.01)
        jobs.scheduled_run(*EVERY_MINUTE.args)  # what APScheduler calls for a job that fires now
    finally:
        stop.set()
        t.join(30)
    assert not t.is_alive()
    assert probe.runs == [] and lease(fresh_db.factory, "probe:job") is None
    with fresh_db.factory() as s:
        rows = s.scalars(select(JobLease).where(JobLease.name.like("%reconcile"))).all()
    assert len(rows) >= 2 and all((r.holder, r.last_status) == (None, "succeeded") for r in rows), rows


def test_the_scheduler_refuses_to_start_on_an_unmigrated_database(tmp_path):
    from attest.jobs import SchedulerError

    engine = make_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    with pytest.raises(SchedulerError, match="attest db upgrade"):
        jobs.make_scheduler(engine, sessionmaker(bind=engine), None)


def test_the_scheduler_command_is_registered(app):
    runner = app.test_cli_runner()
    result = runner.invoke(args=["--help"])
    assert "scheduler" in result.output


# --- the jobs, on real data ------------------------------------------------------------------------


def _seed_review(factory, **kw):
    from tests.reviews.factories import review_setup

    with transaction(factory) as s:
        setup = review_setup(s, **kw)
        return setup.campaign.id, setup.manager.id, [i.id for i in setup.items]


def test_the_notify_job_fails_visibly_while_smtp_is_down_and_delivers_on_a_later_run(fresh_db):
    from tests.reviews.test_notify import SmtpServer, free_port

    cid, manager_id, _ = _seed_review(fresh_db.factory, people=2, per_person=1)
    port = free_port()
    (ctx,) = _contexts(fresh_db, 1)
    ctx.settings = fresh_db.settings.replace(smtp_host="127.0.0.1", smtp_port=port)
    spec = next(s for s in jobs.FIXED_JOBS if s.kind == "notify")
    now = datetime.now(UTC)

    run = run_job(ctx, spec, now=now)
    assert run.status == "failed" and "mail server failed" in run.error
    assert lease(fresh_db.factory, spec.id).last_status == "failed"
    with fresh_db.factory() as s:
        assert s.scalar(select(func.count()).select_from(ReviewerNotice)) == 0

    server = SmtpServer(port).start()
    try:
        run = run_job(ctx, spec, now=now + timedelta(minutes=2))
        assert run.status == "succeeded" and run.detail == 1
        assert server.inbox.to() == ["maria.manager@acme.example"]
        assert run_job(ctx, spec, now=now + timedelta(minutes=4)).detail == 0
        assert len(server.inbox.messages) == 1
    finally:
        server.stop()
    with fresh_db.factory() as s:
        assert s.scalars(select(ReviewerNotice.kind).where(ReviewerNotice.campaign_id == cid)).all() == ["launch"]


def test_the_close_job_closes_due_campaigns_and_waits_for_the_escalation_window(fresh_db):
    no_esc, _, _ = _seed_review(fresh_db.factory, people=1, per_person=1, campaign_name="No escalation",
                                spec={"timing": {"duration_days": 14, "no_response": "keep",
                                                 "escalate_after_days_overdue": None}})
    esc, _, _ = _seed_review(fresh_db.factory, people=1, per_person=1, campaign_name="Escalating",
                             manager_email="erik.esc@acme.example",
                             spec={"timing": {"duration_days": 14, "no_response": "revoke",
                                              "escalate_after_days_overdue": 2}})
    with fresh_db.factory() as s:
        due = s.get(Campaign, no_esc).due_at
    (ctx,) = _contexts(fresh_db, 1)
    spec = next(s for s in jobs.FIXED_JOBS if s.kind == "close")

    def status(cid):
        with fresh_db.factory() as s:
            return s.get(Campaign, cid).status

    assert run_job(ctx, spec, now=due - timedelta(minutes=5)).detail == []
    assert run_job(ctx, spec, now=due + timedelta(minutes=1)).detail == [no_esc]
    assert (status(no_esc), status(esc)) == ("closed", "active")
    # overdue + 2 days: escalation; + 2 more days for the co-reviewer; then it closes
    assert run_job(ctx, spec, now=due + timedelta(days=3)).detail == []
    assert run_job(ctx, spec, now=due + timedelta(days=4, minutes=1)).detail == [esc]
    assert status(esc) == "closed"
    with fresh_db.factory() as s:
        assert s.scalars(select(ReviewItem.outcome).where(ReviewItem.campaign_id == esc)).all() == ["revoke"]


def test_the_launch_job_launches_recurring_definitions_once_per_schedule(fresh_db):
    from attest.reviews.definitions import create_definition
    from tests.reviews.factories import review_setup

    with transaction(fresh_db.factory) as s:
        review_setup(s, people=2, per_person=1)
        definition = create_definition(s, {
            "name": "Monthly manager review", "schedule": "0 9 1 * *",
            "fallback_reviewer": "maria.manager@acme.example",
            "timing": {"duration_days": 10, "reminders_days_before_due": [3]},
        }, actor="admin@acme.example")
        definition.created_at = datetime(2026, 4, 20, tzinfo=UTC)
        def_id = definition.id
    (ctx,) = _contexts(fresh_db, 1)
    spec = next(s for s in jobs.FIXED_JOBS if s.kind == "launch")
    first = datetime(2026, 5, 1, 9, 0, 30, tzinfo=UTC)

    assert run_job(ctx, spec, now=first - timedelta(hours=1)).detail == []
    run = run_job(ctx, spec, now=first)
    assert run.status == "succeeded" and len(run.detail) == 1
    assert run_job(ctx, spec, now=first + timedelta(minutes=1)).detail == []
    with fresh_db.factory() as s:
        campaign = s.get(Campaign, run.detail[0])
        assert (campaign.definition_id, campaign.status) == (def_id, "active")
        assert campaign.due_at == first + timedelta(days=10)
        assert s.scalar(select(func.count()).where(ReviewItem.campaign_id == campaign.id)) == 2
    nxt = run_job(ctx, spec, now=datetime(2026, 6, 1, 9, 1, tzinfo=UTC))
    assert len(nxt.detail) == 1 and nxt.detail != run.detail


def test_a_failing_recurring_launch_is_retried_hourly_not_every_minute(fresh_db, monkeypatch):
    from attest.reviews import campaigns, schedule

    calls = []

    def refuse(session, now):
        return [424242]

    def create(session, definition_id, actor, name=None):
        calls.append(definition_id)
        raise campaigns.CampaignError("3 items are unroutable and the definition has no fallback_reviewer")

    monkeypatch.setattr(schedule, "due_to_launch", refuse)
    monkeypatch.setattr(campaigns, "create_campaign", create)
    (ctx,) = _contexts(fresh_db, 1)
    spec = next(s for s in jobs.FIXED_JOBS if s.kind == "launch")
    run = run_job(ctx, spec, now=T)
    assert run.status == "failed" and "unroutable" in run.error
    assert run_job(ctx, spec, now=T + timedelta(minutes=1)).status == "succeeded"  # throttled: not tried
    assert calls == [424242]
    assert run_job(ctx, spec, now=T + timedelta(hours=1, minutes=1)).status == "failed"
    assert calls == [424242, 424242]
    row = lease(fresh_db.factory, "campaigns:launch:424242")
    assert row.last_status == "failed" and "unroutable" in row.last_error


def test_scheduler_status_and_run_now_from_the_command_line(app, session):
    make_source(session, "okta-prod").schedule = "0 */4 * * *"
    session.flush()
    runner = app.test_cli_runner()

    result = runner.invoke(args=["scheduler", "--run", "notify:send"])
    assert result.exit_code == 0, result.output
    assert "notify:send: succeeded (0)" in result.output

    result = runner.invoke(args=["scheduler", "--run", "remediation:run"])  # H8's run_pending, nothing pending
    assert result.exit_code == 0, result.output
    assert "remediation:run: succeeded" in result.output

    result = runner.invoke(args=["scheduler", "--run", "no-such-job"])
    assert result.exit_code == 1 and "no job 'no-such-job'" in result.output and "sync:okta-prod" in result.output

    with transaction(app.extensions["attest"].factory) as s:
        s.add(JobLease(name="sync:okta-prod", last_status="failed", last_started_at=T, last_finished_at=T,
                       last_error="SyncError: okta-prod: HTTP 401 from the API (token expired?)"))
    result = runner.invoke(args=["scheduler", "--status"])
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line for line in result.output.splitlines() if not line.startswith(" ")}
    assert "next" in lines["sync:okta-prod"] and "0 */4 * * *" in lines["sync:okta-prod"]
    assert "last failed 2026-05-04 09:00" in lines["sync:okta-prod"]
    assert "HTTP 401 from the API" in result.output
    assert "last succeeded" in lines["notify:send"]
    assert "never run" in lines["campaigns:close"]


def test_a_job_removed_by_another_scheduler_does_not_break_this_ones_loop(fresh_db):
    with transaction(fresh_db.factory) as s:
        make_source(s, "okta-prod").schedule = "0 */4 * * *"
    first, _ = jobs.make_scheduler(make_engine(fresh_db.url), fresh_db.factory, fresh_db.settings, "s1")
    second, _ = jobs.make_scheduler(make_engine(fresh_db.url), fresh_db.factory, fresh_db.settings, "s2")
    first.start(paused=True)
    second.start(paused=True)
    try:
        jobs.reconcile(first, fresh_db.factory)
        job = second.get_job("sync:okta-prod")
        first.remove_job("sync:okta-prod")
        second._lookup_jobstore("default").update_job(job)  # what second's loop does after a run: no error
        assert second.get_job("sync:okta-prod") is None
    finally:
        first.shutdown(wait=False)
        second.shutdown(wait=False)


def test_a_recurring_campaign_end_to_end_on_the_scheduler_clock(fresh_db):
    """Launch on its cron, launch mails, reminder, escalation, close after the window, summary to the owner."""
    from attest.reviews.definitions import create_definition
    from tests.factories import make_identity, make_user
    from tests.reviews.factories import review_setup
    from tests.reviews.test_notify import SmtpServer, free_port

    with transaction(fresh_db.factory) as s:
        setup = review_setup(s, people=2, per_person=1)
        setup.campaign.status = "cancelled"  # only the people and grants of this setup are wanted
        director = make_identity(s, "dirk.director@acme.example", name="Dirk Director")
        setup.manager.manager_id = director.id
        owner = make_user(s, "owner@acme.example", roles=("admin",))
        definition = create_definition(s, {
            "name": "Quarterly", "schedule": "0 9 1 1,4,7,10 *", "fallback_reviewer": "dirk.director@acme.example",
            "timing": {"duration_days": 14, "reminders_days_before_due": [3], "escalate_after_days_overdue": 1},
        }, actor="admin@acme.example", owner_user_id=owner.id)
        definition.created_at = datetime(2026, 6, 1, tzinfo=UTC)
    server = SmtpServer(free_port()).start()
    (ctx,) = _contexts(fresh_db, 1)
    ctx.settings = fresh_db.settings.replace(smtp_host="127.0.0.1", smtp_port=server.port,
                                             base_url="https://attest.example.com")
    spec = {s.kind: s for s in jobs.FIXED_JOBS}
    launch_at = datetime(2026, 7, 1, 9, 0, 10, tzinfo=UTC)

    def tick(at):
        server.inbox.clear()
        for kind in ("launch", "close", "notify"):
            assert run_job(ctx, spec[kind], now=at).status == "succeeded"
        return server.inbox.to()

    try:
        assert tick(launch_at - timedelta(days=1)) == []
        assert tick(launch_at) == ["maria.manager@acme.example"]  # launched and announced
        with fresh_db.factory() as s:
            campaign = s.scalars(select(Campaign).where(Campaign.status == "active")).one()
        assert campaign.status == "active" and campaign.due_at == launch_at + timedelta(days=14)
        assert tick(launch_at + timedelta(days=5)) == []
        assert tick(launch_at + timedelta(days=11, minutes=2)) == ["maria.manager@acme.example"]  # 3 days before
        assert server.inbox.messages[0]["Subject"].startswith("Reminder:")
        assert tick(launch_at + timedelta(days=14, hours=1)) == []  # due, not closed: the escalation window
        assert tick(launch_at + timedelta(days=15, minutes=4)) == ["dirk.director@acme.example",
                                                                   "maria.manager@acme.example"]
        assert tick(launch_at + timedelta(days=16, minutes=6)) == ["owner@acme.example"]  # closed, summary
        assert server.inbox.messages[0]["Subject"].startswith(f"Closed: {campaign.name}")
        assert tick(launch_at + timedelta(days=17)) == []
    finally:
        server.stop()
    with fresh_db.factory() as s:
        c = s.get(Campaign, campaign.id)
        assert c.status == "closed"
        kinds = sorted(s.scalars(select(ReviewerNotice.kind).where(ReviewerNotice.campaign_id == c.id)))
        assert kinds == ["escalation", f"escalation:{setup.manager.id}", "launch", "reminder:3", "summary"]


def test_a_standby_takes_over_a_dead_holders_job_within_the_lease_whatever_its_interval(fresh_db):
    """A daily sync whose scheduler died mid-run is run again by a standby as soon as the dead holder's lease
    lapses (its takeover watch looks every TAKEOVER_EVERY seconds, and at the lapse of a lease it saw about to
    lapse), not at tomorrow's occurrence (issue 16,
    part 5), and not a minute later either: the watch takes no lease, so it does not wait behind the dead
    scheduler's own reconcile lease (issue 19, part 6: within the lease time)."""
    with transaction(fresh_db.factory) as s:
        make_source(s, "okta-prod").schedule = "0 2 * * *"  # daily
        make_source(s, "github").schedule = "30 2 * * *"
        make_source(s, "aws").schedule = "0 3 * * *"
    started = T
    with transaction(fresh_db.factory) as s:
        assert acquire(s, "sync:okta-prod", jobs.LEASE_TTL, "scheduler-a", now=started)  # then scheduler-a dies
        # and it died again 30 s later in its next reconcile: that lease outlives the sync's
        assert acquire(s, jobs.RECONCILE.id, jobs.LEASE_TTL, "scheduler-a", now=started + timedelta(seconds=30))
        assert acquire(s, "sync:github", jobs.LEASE_TTL, "scheduler-a", now=started)
        release(s, "sync:github", "succeeded", None, "scheduler-a", now=started + timedelta(minutes=1))
        assert acquire(s, "sync:aws", jobs.LEASE_TTL, "scheduler-c", now=started + timedelta(seconds=50))  # alive
    standby, ctx = jobs.make_scheduler(make_engine(fresh_db.url), fresh_db.factory, fresh_db.settings, "scheduler-b")
    standby.start(paused=True)
    try:
        watch = standby.get_job(jobs.TAKEOVER_WATCH)  # every scheduler process watches on its own
        assert watch is not None and watch.trigger.interval == timedelta(seconds=jobs.TAKEOVER_EVERY)
        # a look long before the lapse plans nothing extra (a live holder renews to a full LEASE_TTL)
        assert jobs.watch_takeovers(ctx, started + timedelta(seconds=30)) == []
        assert standby.get_job(jobs.TAKEOVER_AT_LAPSE) is None
        # the last regular look before the lapse: nothing to take over yet, but one more look is planned at
        # the moment the lease lapses, not at the next regular look up to TAKEOVER_EVERY later
        lapse = started + jobs.LEASE_TTL
        before_expiry = lapse - timedelta(seconds=1)
        assert jobs.watch_takeovers(ctx, before_expiry) == []
        look = standby.get_job(jobs.TAKEOVER_AT_LAPSE)
        assert look is not None and look.next_run_time == lapse + jobs.LAPSE_MARGIN
        assert jobs.LAPSE_MARGIN.total_seconds() < 1
        # that look: within LEASE_TTL (and the margin) of the last heartbeat, so within the lease time of the
        # holder's death, while the dead holder's reconcile lease still blocks the standby's reconcile
        at_lapse = look.next_run_time
        assert run_job(ctx, jobs.RECONCILE, now=at_lapse, use_slot=False).status == "skipped"
        assert jobs.watch_takeovers(ctx, at_lapse) == ["sync:okta-prod"]
        job = standby.get_job("sync:okta-prod:takeover")
        assert job is not None and job.args[0] == "sync:okta-prod"
        assert job.next_run_time == at_lapse
        # the dead holder's reconcile lease (taken 30 s in) is taken over at its own lapse, like any job's,
        # not at the standby's next minute
        reconcile_lapse = started + timedelta(seconds=30) + jobs.LEASE_TTL
        assert jobs.RECONCILE.id not in jobs.watch_takeovers(ctx, reconcile_lapse - timedelta(seconds=1))
        assert standby.get_job(jobs.TAKEOVER_AT_LAPSE).next_run_time == reconcile_lapse + jobs.LAPSE_MARGIN
        assert jobs.RECONCILE.id in jobs.watch_takeovers(ctx, reconcile_lapse + jobs.LAPSE_MARGIN)
        assert standby.get_job(f"{jobs.RECONCILE.id}:takeover") is not None
        assert run_job(ctx, jobs.RECONCILE, now=reconcile_lapse + jobs.LAPSE_MARGIN, use_slot=False).status == "succeeded"
        # the next reconcile keeps the one-off runs and the watch
        removed = jobs.reconcile(standby, fresh_db.factory)["removed"]
        assert "sync:okta-prod:takeover" not in removed and jobs.TAKEOVER_WATCH not in removed
        assert standby.get_job(jobs.TAKEOVER_WATCH) is not None
    finally:
        standby.shutdown(wait=False)


def test_two_standbys_taking_over_the_same_dead_holders_job_run_it_once(fresh_db, probe):
    """Both standbys' watches see the lapsed lease and queue a takeover; the lease lets one of them run it."""
    a, b, c = _contexts(fresh_db, 3)
    with transaction(fresh_db.factory) as s:  # A takes the lease and dies without releasing it
        assert acquire(s, EVERY_MINUTE.id, a.ttl, holder=a.holder, now=T)
    after = T + a.ttl + timedelta(seconds=1)
    with fresh_db.factory() as s:
        assert jobs.stale_leases(s, after, [EVERY_MINUTE.id]) == [EVERY_MINUTE.id]  # what each watch sees
    runs = [run_job(b, EVERY_MINUTE, now=after), run_job(c, EVERY_MINUTE, now=after + timedelta(seconds=2))]
    assert [r.status for r in runs] == ["succeeded", "skipped"]
    assert probe.runs == [(b.holder, after)]


def test_each_run_logs_the_occurrence_it_ran_so_a_second_run_of_one_shows(fresh_db, probe, caplog):
    """Operators (and bench/load.py's no-job-runs-twice check) read which scheduled occurrence a run was: the
    line a run ends with names it, on success and on failure; a takeover's warning is not such a line."""
    (ctx,) = _contexts(fresh_db, 1)
    slot = EVERY_MINUTE.slot(T + timedelta(seconds=20))
    with caplog.at_level(logging.DEBUG, logger="attest.jobs"):
        run_job(ctx, EVERY_MINUTE, now=T + timedelta(seconds=20))
        probe.fail = RuntimeError("upstream said no")
        run_job(ctx, EVERY_MINUTE, now=T + timedelta(minutes=1, seconds=20))
    ends = [r.getMessage() for r in caplog.records if " (occurrence " in r.getMessage()]
    assert ends[0].startswith(f"job {EVERY_MINUTE.id} finished (occurrence {slot.isoformat()}): ")
    assert ends[1].startswith(f"job {EVERY_MINUTE.id} failed (occurrence {(slot + timedelta(minutes=1)).isoformat()}): ")
