"""Prometheus metrics (GET /metrics, attest/operations.py).

Two kinds of numbers, collected two ways:

- **What the database knows** (syncs, campaigns, overdue reviewers, remediations, scheduler jobs and
  their leases, the queues of due work) is read from the database **at scrape time** by a custom
  Collector (`DatabaseCollector`). Every web worker, every web container and every scheduler writes
  these facts to the database already, so any worker that answers a scrape reports the same truth with
  no shared in-process state, no files to clean up and nothing lost when a process restarts. Prometheus's
  multiprocess mode was the alternative and is worse for these: it only merges what the *web* processes
  counted themselves, and the schedulers (other containers) that do the work never serve a scrape. Each
  query is bounded by the number of sources, active campaigns, jobs or statuses (never by grants or
  events): the latest `RECENT_RUNS` runs per source through the (source, started) index, index-backed
  counts per campaign and per status. Values are gauges: several scrapers may read the same rows.
- **What only a web process sees** (request latency per route) is a Histogram in the process. Under
  gunicorn with several workers (`attest serve` sets PROMETHEUS_MULTIPROC_DIR, and marks dead workers in
  attest/gunicorn_conf.py), prometheus-client's multiprocess mode merges the workers' files at each
  scrape, so one scrape of a container covers all its workers. With several web containers, scrape each
  container directly (not through the proxy) and sum; the database metrics are the same from each, so
  aggregate them with `max without (instance)`.

Labels are bounded: endpoint names (the app's routes, or "unmatched"), methods, status classes (2xx..),
source and job names, the ids and names of active campaigns.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from flask import Flask, g, request
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from attest import jobs
from attest.audit.models import EvidenceExport, ExportStatus
from attest.db import unavailable, utcnow
from attest.entitlements.models import RunStatus, Source, SyncRun
from attest.jobs import apscheduler_jobs
from attest.reviews import remediation
from attest.reviews.models import REMEDIATION_STATUSES, Campaign, CampaignStatus, Remediation, ReviewItem

log = logging.getLogger("attest.metrics")

RECENT_RUNS = 100  # sync runs per source the per-status figures look at
MAX_CAMPAIGNS = 500  # active campaigns reported (soonest due first)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def _ts(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


class DatabaseCollector(Collector):
    """Reads what the database knows at each scrape (see the module docstring)."""

    def __init__(self, factory: sessionmaker[Session]) -> None:
        self.factory = factory

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("attest_database_up", "1 when the database answered this scrape's queries")
        families: list[Metric] = []
        try:
            with self.factory() as session:
                now = utcnow()
                families += self._syncs(session)
                families += self._campaigns(session, now)
                families += self._remediations(session)
                families += self._jobs(session, now)
                families += self._queues(session, now)
                session.rollback()
            up.add_metric([], 1)
        except Exception as exc:
            if not unavailable(exc):
                raise
            log.warning("metrics: the database is unavailable: %s", str(getattr(exc, "orig", exc)).splitlines()[0][:200])
            families = []
            up.add_metric([], 0)
        yield up
        yield from families

    # --- syncs ---------------------------------------------------------------------------------------

    def _syncs(self, session: Session) -> list[Metric]:

        labels = ["source", "kind", "status"]
        duration = GaugeMetricFamily("attest_sync_last_duration_seconds",
                                     "Duration of the source's latest finished sync run with this status", labels=labels)
        calls = GaugeMetricFamily("attest_sync_last_api_calls",
                                  "API calls of the source's latest sync run with this status", labels=labels)
        finished = GaugeMetricFamily("attest_sync_last_finished_timestamp_seconds",
                                     "When the source's latest sync run with this status finished", labels=labels)
        recent = GaugeMetricFamily("attest_sync_recent_runs",
                                   f"Sync runs with this status among the source's latest {RECENT_RUNS}", labels=labels)
        running = GaugeMetricFamily("attest_sync_running", "1 while a sync of the source runs", labels=["source", "kind"])
        success = GaugeMetricFamily("attest_sync_last_success_timestamp_seconds",
                                    "When the source's latest successful (applied) sync finished",
                                    labels=["source", "kind"])
        changed = GaugeMetricFamily("attest_sync_last_rows_changed",
                                    "Rows the source's latest successful sync added, updated or ended, per kind",
                                    labels=["source", "kind", "change", "object"])
        sources = session.execute(select(Source.id, Source.name, Source.kind, Source.last_success_run_id)
                                  .order_by(Source.name)).all()
        for source_id, name, kind, last_success_id in sources:
            runs = session.execute(
                select(SyncRun.status, SyncRun.started_at, SyncRun.finished_at, SyncRun.api_calls)
                .where(SyncRun.source_id == source_id)
                .order_by(SyncRun.started_at.desc(), SyncRun.id.desc()).limit(RECENT_RUNS)
            ).all()
            seen: set[str] = set()
            counts: dict[str, int] = {}
            for status, started_at, finished_at, api_calls in runs:
                counts[status] = counts.get(status, 0) + 1
                if status == RunStatus.RUNNING or status in seen:
                    continue
                seen.add(status)
                key = [name, kind, status]
                if finished_at is not None:
                    duration.add_metric(key, (finished_at - started_at).total_seconds())
                    finished.add_metric(key, finished_at.timestamp())
                calls.add_metric(key, api_calls or 0)
            for status, n in sorted(counts.items()):
                recent.add_metric([name, kind, status], n)
            running.add_metric([name, kind], 1 if counts.get(RunStatus.RUNNING) else 0)
            if last_success_id is not None:
                run = session.execute(select(SyncRun.finished_at, SyncRun.stats).where(SyncRun.id == last_success_id)).first()
                if run is not None:
                    if run.finished_at is not None:
                        success.add_metric([name, kind], run.finished_at.timestamp())
                    stats = run.stats or {}
                    for change in ("added", "updated", "ended"):
                        for obj, n in sorted((stats.get(change) or {}).items()):
                            if isinstance(n, int | float):
                                changed.add_metric([name, kind, change, obj], n)
        return [duration, calls, finished, recent, running, success, changed]

    # --- campaigns ------------------------------------------------------------------------------------

    def _campaigns(self, session: Session, now: datetime) -> list[Metric]:

        labels = ["campaign_id", "campaign"]
        total = GaugeMetricFamily("attest_campaign_items", "Review items of an active campaign", labels=labels)
        decided = GaugeMetricFamily("attest_campaign_items_decided", "Decided review items of an active campaign",
                                    labels=labels)
        due = GaugeMetricFamily("attest_campaign_due_timestamp_seconds", "When an active campaign is due", labels=labels)
        overdue = GaugeMetricFamily("attest_campaign_overdue_reviewers",
                                    "Reviewers with undecided items in an active campaign past its due date",
                                    labels=labels)
        active = GaugeMetricFamily("attest_campaigns_active", "Active campaigns")
        campaigns = session.execute(
            select(Campaign.id, Campaign.name, Campaign.due_at).where(Campaign.status == CampaignStatus.ACTIVE)
            .order_by(Campaign.due_at, Campaign.id).limit(MAX_CAMPAIGNS)
        ).all()
        active.add_metric([], session.scalar(select(func.count()).where(Campaign.status == CampaignStatus.ACTIVE)) or 0)
        if not campaigns:
            return [active, total, decided, due, overdue]
        ids = [c.id for c in campaigns]
        counts = {cid: (n, d) for cid, n, d in session.execute(
            select(ReviewItem.campaign_id, func.count(), func.count(ReviewItem.decision))
            .where(ReviewItem.campaign_id.in_(ids)).group_by(ReviewItem.campaign_id))}
        # overdue reviewer = the campaign is past due and the reviewer has items open (reviews.queries,
        # ReviewerProgress.overdue): counted here per campaign without loading the reviewers
        late = [c.id for c in campaigns if c.due_at is not None and c.due_at < now]
        late_reviewers = dict(session.execute(
            select(ReviewItem.campaign_id, func.count(ReviewItem.reviewer_id.distinct()))
            .where(ReviewItem.campaign_id.in_(late), ReviewItem.decision.is_(None), ReviewItem.reviewer_id.is_not(None))
            .group_by(ReviewItem.campaign_id)).all()) if late else {}
        for c in campaigns:
            key = [str(c.id), c.name]
            n, d = counts.get(c.id, (0, 0))
            total.add_metric(key, n)
            decided.add_metric(key, d)
            overdue.add_metric(key, late_reviewers.get(c.id, 0))
            if c.due_at is not None:
                due.add_metric(key, c.due_at.timestamp())
        return [active, total, decided, due, overdue]

    # --- remediation ----------------------------------------------------------------------------------

    def _remediations(self, session: Session) -> list[Metric]:

        family = GaugeMetricFamily("attest_remediations", "Remediations per status (outcome)", labels=["status"])
        counts = dict(session.execute(select(Remediation.status, func.count()).group_by(Remediation.status)).all())
        for status in REMEDIATION_STATUSES:
            family.add_metric([status], counts.get(status, 0))
        return [family]

    # --- scheduler jobs -------------------------------------------------------------------------------

    def _jobs(self, session: Session, now: datetime) -> list[Metric]:

        rows = jobs.status(session, now)
        success = GaugeMetricFamily("attest_job_last_success_timestamp_seconds",
                                    "When the scheduled job last finished successfully", labels=["job"])
        finished = GaugeMetricFamily("attest_job_last_run_timestamp_seconds", "When the scheduled job last finished",
                                     labels=["job"])
        status = GaugeMetricFamily("attest_job_last_status", "1 for the status of the job's last run",
                                   labels=["job", "status"])
        next_run = GaugeMetricFamily("attest_job_next_run_timestamp_seconds", "When the job's schedule fires next",
                                     labels=["job"])
        held = GaugeMetricFamily("attest_job_lease_held", "1 while a scheduler process holds the job's lease (runs it)",
                                 labels=["job", "holder"])
        holders = GaugeMetricFamily("attest_scheduler_lease_holders",
                                    "Scheduler processes holding at least one unexpired job lease")
        seen = GaugeMetricFamily("attest_scheduler_last_seen_timestamp_seconds",
                                 "When a scheduler process last started its minute job (none: never)")
        running_on: set[str] = set()
        for r in rows:
            if (t := _ts(r["last_succeeded_at"])) is not None:
                success.add_metric([r["job"]], t)
            if (t := _ts(r["last_finished_at"])) is not None:
                finished.add_metric([r["job"]], t)
            if r["last_status"]:
                status.add_metric([r["job"], r["last_status"]], 1)
            if (t := _ts(r["next_run_at"])) is not None:
                next_run.add_metric([r["job"]], t)
            if r["running_on"]:
                held.add_metric([r["job"], r["running_on"]], 1)
                running_on.add(r["running_on"])
        holders.add_metric([], len(running_on))
        if (t := _ts(jobs.scheduler_last_seen(session))) is not None:
            seen.add_metric([], t)
        return [success, finished, status, next_run, held, holders, seen]

    def _queues(self, session: Session, now: datetime) -> list[Metric]:

        family = GaugeMetricFamily("attest_queue_due",
                                   "Work waiting to be picked up: scheduled jobs whose time has come, automatic "
                                   "remediations due, evidence exports queued", labels=["queue"])
        family.add_metric(["scheduler_jobs"], session.scalar(
            select(func.count()).select_from(apscheduler_jobs)
            .where(apscheduler_jobs.c.next_run_time <= now.timestamp())) or 0)
        due = remediation._due(None, now).order_by(None).subquery()  # the remediation runner's own definition of due
        family.add_metric(["remediations"], session.scalar(select(func.count()).select_from(due)) or 0)
        family.add_metric(["evidence_exports"], session.scalar(
            select(func.count()).where(EvidenceExport.status == ExportStatus.QUEUED)) or 0)
        return [family]


# --- request latency ---------------------------------------------------------------------------------


class Metrics:
    """An app's metrics: its registry (or, under gunicorn with several workers, the multiprocess files)
    and the request latency histogram."""

    def __init__(self, factory_getter) -> None:
        self.multiprocess_dir = os.environ.get(MULTIPROC_ENV) or None
        self.registry = CollectorRegistry(auto_describe=True)
        self.latency = Histogram(
            "attest_http_request_duration_seconds", "Time to answer a request, per route, method and status class",
            ["endpoint", "method", "status"], buckets=LATENCY_BUCKETS,
            registry=None if self.multiprocess_dir else self.registry,
        )
        self._factory_getter = factory_getter
        self.registry.register(_LazyDatabaseCollector(factory_getter))

    def scrape(self) -> bytes:
        if not self.multiprocess_dir:
            return generate_latest(self.registry)
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=self.multiprocess_dir)
        registry.register(_LazyDatabaseCollector(self._factory_getter))
        return generate_latest(registry)


class _LazyDatabaseCollector(Collector):
    """The database collector on the app's current session factory (tests swap it)."""

    def __init__(self, factory_getter) -> None:
        self._factory_getter = factory_getter

    def describe(self) -> list[Metric]:
        return []  # nothing read at registration time

    def collect(self) -> Iterator[Metric]:
        yield from DatabaseCollector(self._factory_getter()).collect()


def init_app(app: Flask) -> None:
    """Time every request (endpoint, method, status class) into the app's latency histogram."""
    metrics = Metrics(lambda: app.extensions["attest"].factory)
    app.extensions["attest_metrics"] = metrics

    @app.before_request
    def _start_timer() -> None:
        g._metrics_t0 = time.perf_counter()

    @app.after_request
    def _observe(response: Any) -> Any:
        t0 = g.pop("_metrics_t0", None)
        if t0 is not None:
            endpoint = request.url_rule.endpoint if request.url_rule is not None else "unmatched"
            method = request.method if request.method in METHODS else "other"
            metrics.latency.labels(endpoint, method, f"{response.status_code // 100}xx").observe(
                time.perf_counter() - t0)
        return response
