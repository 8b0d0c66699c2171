"""GET /metrics (issue 19, part 4): Prometheus's text format behind a bearer token (ATTEST_METRICS_TOKEN;
none configured: 404), with request latency per route and what the database knows read at scrape time:
syncs per source and status, rows changed, campaign progress, overdue reviewers, remediation outcomes,
scheduler jobs (last success, status, lease holders) and the queues of due work."""

from __future__ import annotations

from datetime import timedelta

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import insert

from attest.db import utcnow
from attest.entitlements.models import SyncRun
from attest.jobs import JobLease, apscheduler_jobs
from attest.reviews.models import Remediation
from tests.reviews.factories import review_setup

TOKEN = "metrics-token-0123456789-abcdef"


def _auth(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def metrics_app(app):
    state = app.extensions["attest"]
    state.settings = state.settings.replace(metrics_token=TOKEN)
    return app


def scrape(client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get("/metrics", headers=_auth())
    assert response.status_code == 200, response.status_code
    assert response.headers["Content-Type"].startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def names(samples) -> set[str]:
    return {name for name, _ in samples}


def test_no_token_configured_is_404(app, client):
    assert not app.extensions["attest"].settings.metrics_token
    assert client.get("/metrics").status_code == 404
    assert client.get("/metrics", headers=_auth()).status_code == 404


def test_missing_or_wrong_token_is_401(metrics_app, client):
    for headers in ({}, _auth("wrong-token"), {"Authorization": f"Basic {TOKEN}"}, {"Authorization": "Bearer"},
                    _auth(TOKEN[:-1]), _auth(TOKEN + "x")):
        response = client.get("/metrics", headers=headers)
        assert response.status_code == 401, headers
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert b"attest_" not in response.data
    assert client.get("/metrics", headers=_auth()).status_code == 200


def test_metrics_token_setting_is_validated():
    from attest.config.settings import SettingsError, load_settings

    env = {"ATTEST_ENV": "test", "ATTEST_METRICS_TOKEN": TOKEN}
    assert load_settings(environ=env).metrics_token == TOKEN
    with pytest.raises(SettingsError, match="ATTEST_METRICS_TOKEN"):
        load_settings(environ={**env, "ATTEST_METRICS_TOKEN": "short"})


def test_request_latency_histogram_counts_requests(metrics_app, client):
    before = scrape(client)
    for _ in range(3):
        assert client.get("/healthz").status_code == 200
    client.get("/no/such/page")
    client.get("/metrics", headers=_auth("wrong-token"))
    after = scrape(client)

    def count(**labels):
        return (value(after, "attest_http_request_duration_seconds_count", **labels) or 0) - (
            value(before, "attest_http_request_duration_seconds_count", **labels) or 0)

    assert count(endpoint="home.healthz", method="GET", status="2xx") == 3
    assert count(endpoint="unmatched", method="GET", status="4xx") == 1
    assert count(endpoint="ops.metrics", method="GET", status="4xx") == 1
    # the first scrape itself was timed too (the second one is still running while it is written)
    assert count(endpoint="ops.metrics", method="GET", status="2xx") == 1
    inf = value(after, "attest_http_request_duration_seconds_bucket", endpoint="home.healthz", method="GET",
                status="2xx", le="+Inf")
    assert inf == value(after, "attest_http_request_duration_seconds_count", endpoint="home.healthz", method="GET",
                        status="2xx")
    assert value(after, "attest_http_request_duration_seconds_sum", endpoint="home.healthz", method="GET",
                 status="2xx") > 0


@pytest.fixture
def seeded(session):
    now = utcnow().replace(microsecond=0)
    setup = review_setup(session, people=2, per_person=2, source_name="okta-prod", campaign_name="Q4 review")
    setup.items[0].decision = "approve"
    setup.items[0].decided_at = now
    late = review_setup(session, people=1, per_person=3, source_name="github-org", manager_email="lee@acme.example",
                        campaign_name="Late review")
    late.campaign.due_at = now - timedelta(days=2)
    late.items[0].decision = "revoke"
    late.items[0].comment = "gone"
    done = review_setup(session, people=1, per_person=1, source_name="aws-org", manager_email="dee@acme.example",
                        campaign_name="Done late")
    done.campaign.due_at = now - timedelta(days=1)
    done.items[0].decision = "approve"  # every item decided: a late campaign without overdue reviewers
    source = setup.source
    ok = SyncRun(source_id=source.id, status="succeeded", started_at=now - timedelta(hours=3),
                 finished_at=now - timedelta(hours=3) + timedelta(seconds=90), api_calls=12,
                 stats={"added": {"grants": 5, "accounts": 1}, "ended": {"grants": 2}, "updated": {"accounts": 3}})
    failed = SyncRun(source_id=source.id, status="failed", started_at=now - timedelta(hours=1),
                     finished_at=now - timedelta(hours=1) + timedelta(seconds=30), api_calls=3, error="HTTP 503")
    session.add_all([ok, failed])
    session.flush()
    source.last_success_run_id = ok.id
    statuses = ("verified", "failed", "pending")
    for item, status in zip(late.items, statuses, strict=True):
        session.add(Remediation(campaign_id=late.campaign.id, item_id=item.id, grant_id=item.grant_id,
                                source_id=item.source_id, mode="automatic", status=status))
    session.add_all([
        JobLease(name="notify:send", last_status="succeeded", last_started_at=now - timedelta(minutes=2),
                 last_finished_at=now - timedelta(minutes=1), last_succeeded_at=now - timedelta(minutes=1)),
        JobLease(name="campaigns:close", last_status="failed", last_error="campaign 3: boom",
                 last_started_at=now - timedelta(minutes=1), last_finished_at=now - timedelta(minutes=1),
                 last_succeeded_at=now - timedelta(days=1)),
        JobLease(name="audit:checkpoint", holder="sched-a:7:abcd", expires_at=now + timedelta(minutes=1),
                 last_started_at=now),
        JobLease(name="scheduler:reconcile", last_status="succeeded", last_started_at=now - timedelta(seconds=30),
                 last_finished_at=now - timedelta(seconds=29), last_succeeded_at=now - timedelta(seconds=29)),
    ])
    session.execute(insert(apscheduler_jobs).values(id="campaigns:launch", next_run_time=(now - timedelta(minutes=5)).timestamp(),
                                                    job_state=b"state"))
    session.execute(insert(apscheduler_jobs).values(id="notify:send", next_run_time=(now + timedelta(minutes=5)).timestamp(),
                                                    job_state=b"state"))
    session.commit()
    return {"now": now, "setup": setup, "late": late, "done": done, "ok": ok, "failed": failed}


def test_database_metrics_match_the_seeded_data(metrics_app, client, seeded):
    s = scrape(client)
    now = seeded["now"]
    assert value(s, "attest_database_up") == 1
    # syncs per source and status
    okta = {"source": "okta-prod", "kind": "demo"}
    assert value(s, "attest_sync_last_duration_seconds", **okta, status="succeeded") == 90
    assert value(s, "attest_sync_last_duration_seconds", **okta, status="failed") == 30
    assert value(s, "attest_sync_last_api_calls", **okta, status="succeeded") == 12
    assert value(s, "attest_sync_last_api_calls", **okta, status="failed") == 3
    assert value(s, "attest_sync_recent_runs", **okta, status="failed") == 1
    assert value(s, "attest_sync_running", **okta) == 0
    assert value(s, "attest_sync_last_success_timestamp_seconds", **okta) == seeded["ok"].finished_at.timestamp()
    assert value(s, "attest_sync_last_finished_timestamp_seconds", **okta, status="failed") == \
        seeded["failed"].finished_at.timestamp()
    # rows changed by the latest successful sync
    assert value(s, "attest_sync_last_rows_changed", **okta, change="added", object="grants") == 5
    assert value(s, "attest_sync_last_rows_changed", **okta, change="ended", object="grants") == 2
    assert value(s, "attest_sync_last_rows_changed", **okta, change="updated", object="accounts") == 3
    # campaign progress and overdue reviewers
    q4 = {"campaign_id": str(seeded["setup"].campaign.id), "campaign": "Q4 review"}
    late = {"campaign_id": str(seeded["late"].campaign.id), "campaign": "Late review"}
    assert value(s, "attest_campaigns_active") == 3
    done = {"campaign_id": str(seeded["done"].campaign.id), "campaign": "Done late"}
    assert value(s, "attest_campaign_overdue_reviewers", **done) == 0
    assert (value(s, "attest_campaign_items", **q4), value(s, "attest_campaign_items_decided", **q4)) == (4, 1)
    assert (value(s, "attest_campaign_items", **late), value(s, "attest_campaign_items_decided", **late)) == (3, 1)
    assert value(s, "attest_campaign_overdue_reviewers", **q4) == 0
    assert value(s, "attest_campaign_overdue_reviewers", **late) == 1
    assert value(s, "attest_campaign_due_timestamp_seconds", **late) == (now - timedelta(days=2)).timestamp()
    # remediation outcomes
    assert value(s, "attest_remediations", status="verified") == 1
    assert value(s, "attest_remediations", status="failed") == 1
    assert value(s, "attest_remediations", status="pending") == 1
    assert value(s, "attest_remediations", status="reappeared") == 0
    # scheduler jobs: last success (kept when the last run failed), status, lease holders
    assert value(s, "attest_job_last_success_timestamp_seconds", job="notify:send") == \
        (now - timedelta(minutes=1)).timestamp()
    assert value(s, "attest_job_last_success_timestamp_seconds", job="campaigns:close") == \
        (now - timedelta(days=1)).timestamp()
    assert value(s, "attest_job_last_status", job="campaigns:close", status="failed") == 1
    assert value(s, "attest_job_last_status", job="notify:send", status="succeeded") == 1
    assert value(s, "attest_job_lease_held", job="audit:checkpoint", holder="sched-a:7:abcd") == 1
    assert value(s, "attest_scheduler_lease_holders") == 1
    assert value(s, "attest_scheduler_last_seen_timestamp_seconds") == (now - timedelta(seconds=30)).timestamp()
    assert value(s, "attest_job_next_run_timestamp_seconds", job="notify:send") is not None
    # queues of due work
    assert value(s, "attest_queue_due", queue="scheduler_jobs") == 1
    assert value(s, "attest_queue_due", queue="remediations") == 1
    assert value(s, "attest_queue_due", queue="evidence_exports") == 0


def test_a_lease_that_expired_is_not_a_holder(metrics_app, client, session):
    now = utcnow()
    session.add(JobLease(name="sync:gone", holder="dead:1:x", expires_at=now - timedelta(minutes=5),
                         last_started_at=now - timedelta(minutes=10)))
    session.commit()
    s = scrape(client)
    assert not [k for k in s if k[0] == "attest_job_lease_held"]
    assert value(s, "attest_scheduler_lease_holders") == 0


def test_every_family_is_present_on_an_empty_database(metrics_app, client):
    s = scrape(client)
    assert {"attest_database_up", "attest_campaigns_active", "attest_remediations", "attest_queue_due",
            "attest_scheduler_lease_holders"} <= names(s)
    assert "attest_http_request_duration_seconds_count" in names(scrape(client))  # the first scrape, timed
