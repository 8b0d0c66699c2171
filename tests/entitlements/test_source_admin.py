"""A source's settings, secret and schedule can be changed (CLI `attest sources update` and the source page),
and an admin can ask for a sync now, which the scheduler's job runs under the source's lease (issue 20, part 1).

Secrets come from the environment on the command line and from a password field on the page; they are stored
encrypted and never shown back, printed or audited (only the names of the replaced ones)."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy import select

from attest import jobs
from attest.connectors import registry
from attest.connectors.base import Setting
from attest.connectors.demo import DemoConnector
from attest.db import utcnow
from attest.entitlements.models import Source, SyncRun
from attest.entitlements.sources import decrypt_secrets
from attest.trail.models import AuditEvent
from tests.factories import login_as, make_user

OLD_SECRET = "old-s3cr3t-value-111"
NEW_SECRET = "new-s3cr3t-value-222"
PAGE_SECRET = "page-s3cr3t-value-333"
SYNC_REQUESTS = next(spec for spec in jobs.FIXED_JOBS if spec.kind == "sync_requests")


class SecretDemo(DemoConnector):
    SECRETS = (Setting("token", "an API token"),)


@pytest.fixture
def secret_kind(monkeypatch):
    monkeypatch.setitem(registry.KINDS, "demo", f"{__name__}:SecretDemo")


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


@pytest.fixture
def hr(secret_kind, runner, session, monkeypatch) -> Source:
    monkeypatch.setenv("HR_TOKEN", OLD_SECRET)
    result = runner.invoke(args=["sources", "add", "demo", "hr", "--set", "people=30", "--secret", "token=HR_TOKEN"])
    assert result.exit_code == 0, result.output
    return session.scalar(select(Source).where(Source.name == "hr"))


def _events(session, action: str) -> list[AuditEvent]:
    session.expire_all()
    return list(session.scalars(select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id)))


def _fresh(session, name: str = "hr") -> Source:
    session.expire_all()
    return session.scalar(select(Source).where(Source.name == name))


def _no_secret_anywhere(session, *texts: str) -> None:
    dumped = json.dumps([[e.before, e.after] for e in session.scalars(select(AuditEvent))], default=str)
    for secret in (OLD_SECRET, NEW_SECRET, PAGE_SECRET):
        assert secret not in dumped
        for text in texts:
            assert secret not in text


# --- the command line --------------------------------------------------------------------------------


def test_cli_update_changes_settings_schedule_and_secret_from_the_environment(hr, runner, session, settings,
                                                                              monkeypatch):
    monkeypatch.setenv("NEW_HR_TOKEN", NEW_SECRET)
    result = runner.invoke(args=["sources", "update", "hr", "--set", "people=12", "--set", "domain=hr.example",
                                 "--secret", "token=NEW_HR_TOKEN", "--schedule", "0 */4 * * *"])
    assert result.exit_code == 0, result.output
    source = _fresh(session)
    assert source.settings["people"] == 12 and source.settings["domain"] == "hr.example"
    assert source.schedule == "0 */4 * * *"
    assert NEW_SECRET not in source.secrets_encrypted
    assert decrypt_secrets(settings, source.secrets_encrypted) == {"token": NEW_SECRET}
    [event] = _events(session, "source.update")
    assert event.before["settings"]["people"] == 30 and event.after["settings"]["people"] == 12
    assert event.before["schedule"] is None and event.after["schedule"] == "0 */4 * * *"
    assert event.after["secrets_replaced"] == ["token"]
    _no_secret_anywhere(session, result.output)

    cleared = runner.invoke(args=["sources", "update", "hr", "--no-schedule", "--unset", "domain"])
    assert cleared.exit_code == 0, cleared.output
    source = _fresh(session)
    assert source.schedule is None and source.settings["domain"] == "demo.example"  # back to the default
    assert _events(session, "source.update")[-1].after["secrets_replaced"] == []
    again = runner.invoke(args=["sources", "update", "hr", "--no-schedule"])
    assert again.exit_code == 0 and "nothing changed" in again.output
    assert len(_events(session, "source.update")) == 2  # an identical update audits nothing


@pytest.mark.parametrize("args, message", [
    (["--set", "peeple=5"], "unknown setting 'peeple'"),
    (["--unset", "peeple"], "unknown setting 'peeple'"),
    (["--set", "people=many"], "whole number"),
    (["--secret", "tokn=NEW_HR_TOKEN"], "unknown secret 'tokn'"),
    (["--secret", "token=NOT_SET_ANYWHERE"], "NOT_SET_ANYWHERE"),
    (["--schedule", "every day"], "not a valid cron expression"),
])
def test_cli_update_refuses_bad_input_and_changes_nothing(hr, runner, session, settings, monkeypatch, args, message):
    monkeypatch.setenv("NEW_HR_TOKEN", NEW_SECRET)
    before = (dict(hr.settings), hr.secrets_encrypted, hr.schedule)
    # a valid change alongside the bad one must not be written either
    result = runner.invoke(args=["sources", "update", "hr", "--set", "people=99", *args])
    assert result.exit_code != 0 and message in result.output, result.output
    source = _fresh(session)
    assert (source.settings, source.secrets_encrypted, source.schedule) == before
    assert _events(session, "source.update") == []
    _no_secret_anywhere(session, result.output)


def test_cli_update_of_an_unknown_source_fails(secret_kind, runner):
    result = runner.invoke(args=["sources", "update", "nope", "--set", "people=1"])
    assert result.exit_code != 0 and "no source named 'nope'" in result.output


# --- the source page -----------------------------------------------------------------------------------


@pytest.fixture
def users(session):
    out = {role: make_user(session, f"{role}@acme.example", [role] if role != "manager" else [])
           for role in ("admin", "auditor", "manager")}
    session.commit()
    return out


def _page(client, source: Source) -> str:
    response = client.get(f"/sources/{source.id}")
    assert response.status_code == 200
    return response.get_data(as_text=True)


def test_admin_edits_settings_and_schedule_on_the_page(hr, users, app, client, session):
    app.config["WTF_CSRF_ENABLED"] = False
    login_as(app, client, users["admin"])
    page = _page(client, hr)
    assert 'name="setting-people"' in page and 'value="30"' in page and "Sync now" in page
    response = client.post(f"/sources/{hr.id}/settings", data={"setting-people": "7", "setting-domain": "",
                                                               "schedule": "15 2 * * *"})
    assert response.status_code == 303
    source = _fresh(session)
    assert source.settings["people"] == 7 and source.settings["domain"] == "demo.example"
    assert source.schedule == "15 2 * * *"
    [event] = _events(session, "source.update")
    assert event.actor == "admin@acme.example" and event.after["settings"]["people"] == 7

    bad = client.post(f"/sources/{hr.id}/settings", data={"setting-people": "lots", "schedule": ""},
                      follow_redirects=True)
    assert bad.status_code == 200 and "whole number" in bad.get_data(as_text=True)
    assert _fresh(session).settings["people"] == 7 and _fresh(session).schedule == "15 2 * * *"
    assert len(_events(session, "source.update")) == 1


def test_admin_replaces_the_secret_and_it_is_never_shown(hr, users, app, client, session, settings):
    app.config["WTF_CSRF_ENABLED"] = False
    login_as(app, client, users["admin"])
    assert 'type="password"' in _page(client, hr)
    response = client.post(f"/sources/{hr.id}/secret", data={"secret_name": "token", "secret_value": PAGE_SECRET},
                           follow_redirects=True)
    assert response.status_code == 200
    assert decrypt_secrets(settings, _fresh(session).secrets_encrypted) == {"token": PAGE_SECRET}
    [event] = _events(session, "source.update")
    assert event.after["secrets_replaced"] == ["token"]
    unknown = client.post(f"/sources/{hr.id}/secret", data={"secret_name": "nope", "secret_value": "x"},
                          follow_redirects=True)
    assert "unknown secret &#39;nope&#39;" in unknown.get_data(as_text=True)
    pages = [response.get_data(as_text=True), unknown.get_data(as_text=True), _page(client, hr),
             client.get("/sources").get_data(as_text=True),
             client.get(f"/sources/{hr.id}/status").get_data(as_text=True),
             client.get("/audit").get_data(as_text=True)]
    assert "token (set)" in pages[2]
    login_as(app, client, users["auditor"])
    pages.append(_page(client, hr))
    _no_secret_anywhere(session, *pages)


def test_auditors_read_and_managers_are_refused_and_neither_can_change(hr, users, app, client, session):
    app.config["WTF_CSRF_ENABLED"] = False
    before = (dict(hr.settings), hr.secrets_encrypted, hr.schedule)
    for role in ("auditor", "manager"):
        login_as(app, client, users[role])
        page = client.get(f"/sources/{hr.id}")
        if role == "auditor":
            text = page.get_data(as_text=True)
            assert page.status_code == 200 and "setting-people" not in text and "Sync now" not in text
            assert "Replace a secret" not in text
        else:
            assert page.status_code == 403
        for path, data in (("settings", {"setting-people": "1"}), ("secret", {"secret_name": "token",
                                                                              "secret_value": PAGE_SECRET}),
                           ("sync", {})):
            assert client.post(f"/sources/{hr.id}/{path}", data=data).status_code == 403, (role, path)
    source = _fresh(session)
    assert (source.settings, source.secrets_encrypted, source.schedule) == before
    assert source.sync_requested_at is None
    assert _events(session, "source.update") == [] and _events(session, "source.sync_requested") == []


def test_forms_without_the_csrf_token_are_refused(hr, users, app, client, session):
    assert app.config.get("WTF_CSRF_ENABLED", True)
    login_as(app, client, users["admin"])
    for path, data in (("settings", {"setting-people": "1"}), ("secret", {"secret_name": "token",
                                                                          "secret_value": PAGE_SECRET}),
                       ("sync", {})):
        assert client.post(f"/sources/{hr.id}/{path}", data=data).status_code == 400, path
    source = _fresh(session)
    assert source.settings["people"] == 30 and source.sync_requested_at is None


# --- sync now ------------------------------------------------------------------------------------------


def test_sync_now_is_queued_and_the_scheduler_job_runs_it(hr, users, app, client, session, factory, settings):
    app.config["WTF_CSRF_ENABLED"] = False
    login_as(app, client, users["admin"])
    response = client.post(f"/sources/{hr.id}/sync", headers={"HX-Request": "true"})
    assert response.status_code == 200
    fragment = response.get_data(as_text=True)
    assert 'data-queued="yes"' in fragment and 'hx-trigger="every 2s"' in fragment
    assert "Sync now" not in fragment  # no second request while one is queued
    source = _fresh(session)
    assert source.sync_requested_at is not None and source.sync_requested_by == "admin@acme.example"
    assert session.scalar(select(SyncRun).where(SyncRun.source_id == hr.id)) is None  # the web worker never syncs
    client.post(f"/sources/{hr.id}/sync")  # a second click keeps the one request
    assert len(_events(session, "source.sync_requested")) == 1

    now = utcnow() + timedelta(seconds=30)
    run = jobs.run_job(jobs.JobContext(factory, settings, holder="test-scheduler"), SYNC_REQUESTS, now=now)
    assert run.status == "succeeded", run.error
    assert run.detail and run.detail[0].startswith("hr: succeeded")
    session.expire_all()
    [sync_run] = session.scalars(select(SyncRun).where(SyncRun.source_id == hr.id)).all()
    assert sync_run.status == "succeeded" and sync_run.triggered_by == "sync now by admin@acme.example"
    assert sync_run.stats["read"]["identities"] == 30
    assert _fresh(session).sync_requested_at is None
    lease = session.get(jobs.JobLease, "sync:hr")
    assert lease.holder is None and lease.last_status == "succeeded" and lease.last_started_at == now

    status = client.get(f"/sources/{hr.id}/status").get_data(as_text=True)
    assert 'data-queued="no"' in status and "hx-trigger" not in status and f"#{sync_run.id}" in status
    assert "identities 30" in status and "Sync now" in status
    # nothing queued: the next minute's job does nothing
    again = jobs.run_job(jobs.JobContext(factory, settings, holder="test-scheduler"), SYNC_REQUESTS,
                         now=now + timedelta(minutes=1))
    assert again.status == "succeeded" and again.detail == []


def test_a_requested_sync_waits_while_the_sources_lease_is_held(hr, session, factory, settings):
    from attest.entitlements.sources import request_sync

    request_sync(session, "hr", actor="admin@acme.example")
    now = utcnow()
    assert jobs.acquire(session, "sync:hr", jobs.LEASE_TTL, "other-scheduler", now=now)  # the scheduled sync runs
    session.commit()
    run = jobs.run_job(jobs.JobContext(factory, settings, holder="test-scheduler"), SYNC_REQUESTS, now=now)
    assert run.status == "succeeded" and run.detail == []
    assert _fresh(session).sync_requested_at is not None  # still queued for the next minute
    assert session.scalar(select(SyncRun).where(SyncRun.source_id == hr.id)) is None


def test_sync_now_of_a_disabled_source_is_refused(hr, users, app, client, session, runner):
    app.config["WTF_CSRF_ENABLED"] = False
    assert runner.invoke(args=["sources", "disable", "hr"]).exit_code == 0
    login_as(app, client, users["admin"])
    response = client.post(f"/sources/{hr.id}/sync", follow_redirects=True)
    assert "disabled" in response.get_data(as_text=True)
    assert _fresh(session).sync_requested_at is None
