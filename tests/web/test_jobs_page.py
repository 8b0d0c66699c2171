"""The Jobs page (/admin/jobs, issue 19 part 4): every scheduled job's schedule, next run, last run and
status, last success (kept when later runs fail) and last error, for admins only."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from attest.db import utcnow
from attest.jobs import JobLease, release
from tests.factories import login_as, make_user


@pytest.fixture
def leases(session):
    now = utcnow().replace(microsecond=0)
    session.add_all([
        JobLease(name="campaigns:close", last_status="failed", last_error="campaign 3: could not close (boom)",
                 last_started_at=now - timedelta(minutes=1), last_finished_at=now - timedelta(minutes=1),
                 last_succeeded_at=now - timedelta(days=1)),
        JobLease(name="scheduler:reconcile", last_status="succeeded", last_started_at=now - timedelta(seconds=20),
                 last_finished_at=now - timedelta(seconds=19), last_succeeded_at=now - timedelta(seconds=19)),
    ])
    session.commit()
    return now


def _row(html: str, job: str) -> str:
    match = re.search(rf'<tr data-job="{re.escape(job)}">(.*?)</tr>', html, re.S)
    assert match, f"no row for {job}"
    return match.group(1)


def test_admin_sees_every_job_with_last_success_and_error(app, client, session, leases):
    admin = make_user(session, "root@acme.example", roles=["admin"])
    session.commit()
    login_as(app, client, admin)
    response = client.get("/admin/jobs")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    for job in ("scheduler:reconcile", "campaigns:launch", "campaigns:close", "notify:send", "audit:checkpoint",
                "evidence:export"):
        _row(html, job)
    close = _row(html, "campaigns:close")
    assert "failed" in close and "could not close (boom)" in close
    assert (leases - timedelta(days=1)).strftime("%Y-%m-%d %H:%M") in close  # the last success, not the last run
    assert "never run" in _row(html, "notify:send")
    assert "alert-success" in html  # a scheduler ran its minute job 20 s ago


def test_release_records_the_last_success_and_keeps_it_on_failure(session):
    t = utcnow().replace(microsecond=0)
    session.add(JobLease(name="j", holder="a", expires_at=t + timedelta(minutes=1), last_started_at=t))
    release(session, "j", "succeeded", holder="a", now=t)
    row = session.get(JobLease, "j")
    session.refresh(row)
    assert row.last_succeeded_at == t
    row.holder = "a"
    session.flush()
    release(session, "j", "failed", "boom", holder="a", now=t + timedelta(minutes=5))
    session.refresh(row)
    assert (row.last_status, row.last_finished_at, row.last_succeeded_at) == ("failed", t + timedelta(minutes=5), t)


def test_no_scheduler_is_said(app, client, session):
    admin = make_user(session, "root@acme.example", roles=["admin"])
    session.commit()
    login_as(app, client, admin)
    html = client.get("/admin/jobs").get_data(as_text=True)
    assert "No scheduler has run yet" in html and "alert-warning" in html


@pytest.mark.parametrize("roles", [[], ["auditor"]])
def test_managers_and_auditors_are_refused(app, client, session, leases, roles):
    user = make_user(session, "maria@acme.example", roles=roles)
    session.commit()
    login_as(app, client, user)
    response = client.get("/admin/jobs")
    assert response.status_code == 403
    assert b"could not close" not in response.data


def test_anonymous_is_sent_to_sign_in(client, leases):
    response = client.get("/admin/jobs")
    assert response.status_code == 302
    assert "/login" in response.headers["Location"]


def test_sources_page_links_to_jobs_for_admins(app, client, session):
    admin = make_user(session, "root@acme.example", roles=["admin"])
    auditor = make_user(session, "audrey@acme.example", roles=["auditor"])
    session.commit()
    login_as(app, client, admin)
    assert 'href="/admin/jobs"' in client.get("/sources").get_data(as_text=True)
    login_as(app, client, auditor)
    assert 'href="/admin/jobs"' not in client.get("/sources").get_data(as_text=True)
