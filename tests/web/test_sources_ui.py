"""Sources managed from the UI (issue 20, part 1): an admin adds a source with a form generated from the
connector's settings, tests its connection, sets or clears its schedule, disables and enables it, and reads
its runs (per-phase timings, notes, failed parts, newest first, paged). Managers and auditors change nothing;
a refused form changes nothing and names each problem next to its field; every change is audited; secrets
are stored encrypted and never shown, echoed or audited."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from attest.connectors.sandbox.okta_fake import create_app as okta_fake
from attest.connectors.sandbox.server import serve_in_thread
from attest.entitlements.models import Source, SyncRun
from attest.entitlements.sources import decrypt_secrets
from attest.trail.models import AuditEvent
from tests.factories import login_as, make_source, make_user

TOKEN = "ghp_page_typed_token_0123456789abcdef"
OKTA_TOKEN = "sandbox-token"  # the fake Okta's SSWS token


@pytest.fixture
def users(session):
    out = {role: make_user(session, f"{role}@acme.example", [role] if role != "manager" else [])
           for role in ("admin", "auditor", "manager")}
    session.commit()
    return out


@pytest.fixture
def admin(app, client, users):
    app.config["WTF_CSRF_ENABLED"] = False
    login_as(app, client, users["admin"])
    return client


def _events(session, action: str | None = None) -> list[AuditEvent]:
    session.expire_all()
    stmt = select(AuditEvent).order_by(AuditEvent.id)
    if action:
        stmt = stmt.where(AuditEvent.action == action)
    return list(session.scalars(stmt))


def _source(session, name: str) -> Source | None:
    session.expire_all()
    return session.scalar(select(Source).where(Source.name == name))


def _github_form(**overrides: str) -> dict[str, str]:
    return {"kind": "github", "name": "gh-new", "setting-orgs": "acme, beta", "setting-api_url": "",
            "setting-concurrency": "", "setting-skip_archived": "true", "secret-token": TOKEN,
            "schedule": "0 */6 * * *", "authoritative": "", **overrides}


# --- the add form ----------------------------------------------------------------------------------------


def test_the_add_form_is_generated_from_the_connectors_settings_with_no_error_before_input(admin):
    kinds = admin.get("/sources/new")
    assert kinds.status_code == 200
    text = kinds.get_data(as_text=True)
    for kind in ("okta", "github", "aws", "demo"):
        assert f'data-kind="{kind}"' in text
    assert 'id="source-add"' not in text  # no form before a kind is chosen

    page = admin.get("/sources/new?kind=github").get_data(as_text=True)
    assert 'id="source-add"' in page and 'name="kind" value="github"' in page
    # a required list setting, an int with its default, a bool as a select, help texts from the connector
    assert 'id="setting-orgs" name="setting-orgs" required' in page
    assert "organization logins to read (comma-separated)" in page
    assert 'id="setting-concurrency"' in page and 'placeholder="4"' in page
    assert '<select class="form-select form-select-sm" id="setting-skip_archived"' in page
    # secrets: the token is a password input, the App's PEM key a text area; nothing prefilled
    assert 'type="password" id="secret-token" name="secret-token"' in page
    assert '<textarea' in page and 'id="secret-private_key"' in page
    # no error before input
    assert "is-invalid" not in page and "invalid-feedback" not in page and 'id="form-errors"' not in page

    okta = admin.get("/sources/new?kind=okta").get_data(as_text=True)
    assert 'id="setting-domain"' in okta and 'type="password" id="secret-token"' in okta
    aws = admin.get("/sources/new?kind=aws").get_data(as_text=True)
    assert 'id="setting-region"' in aws and 'type="password" id="secret-secret_access_key"' in aws


def test_admin_adds_a_source_stored_as_the_cli_stores_it_and_audited(admin, session, settings):
    response = admin.post("/sources/new", data=_github_form())
    assert response.status_code == 303
    source = _source(session, "gh-new")
    assert response.headers["Location"].endswith(f"/sources/{source.id}")
    assert source.kind == "github" and source.enabled and not source.authoritative
    assert source.settings["orgs"] == ["acme", "beta"] and source.settings["skip_archived"] is True
    assert source.settings["concurrency"] == 4  # an empty field: the connector's default
    assert source.schedule == "0 */6 * * *"
    assert TOKEN not in source.secrets_encrypted
    assert decrypt_secrets(settings, source.secrets_encrypted) == {"token": TOKEN}
    [event] = _events(session, "source.add")
    assert event.actor == "admin@acme.example" and event.object_id == str(source.id)
    assert event.after["secrets"] == ["token"] and event.after["settings"]["orgs"] == ["acme", "beta"]
    page = admin.get(f"/sources/{source.id}").get_data(as_text=True)
    assert "Test the connection, then sync it." in page and "token: set" in page
    assert TOKEN not in page
    assert TOKEN not in json.dumps([[e.before, e.after] for e in _events(session)], default=str)


def test_the_cli_and_the_page_refuse_with_the_same_rule(admin, app, session, monkeypatch):
    """One rule (sources.add_source) for both: the same refusal, word for word."""
    monkeypatch.setenv("GH_TOKEN", TOKEN)
    cli = app.test_cli_runner().invoke(args=["sources", "add", "github", "gh-new", "--set", "orgs=acme",
                                             "--set", "concurrency=99", "--secret", "token=GH_TOKEN"])
    assert cli.exit_code != 0
    page = admin.post("/sources/new", data=_github_form(**{"setting-concurrency": "99"})).get_data(as_text=True)
    message = "setting &#39;concurrency&#39; must be between 1 and 16"
    assert message.replace("&#39;", "'") in cli.output
    assert f'id="setting-concurrency-error">{message}' in page
    assert _source(session, "gh-new") is None


def test_a_bad_form_changes_nothing_and_names_each_problem_next_to_its_field(admin, session):
    make_source(session, "taken", kind="demo")
    session.commit()
    events_before = len(_events(session))
    response = admin.post("/sources/new", data=_github_form(**{
        "name": "bad name!", "setting-concurrency": "lots", "setting-skip_archived": "perhaps",
        "schedule": "every day"}))
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert 'id="name-error">a source name is 1-100 letters' in page
    assert 'id="setting-concurrency-error">setting concurrency must be a whole number' in page
    assert 'id="setting-skip_archived-error">setting skip_archived must be true or false' in page
    assert 'id="schedule-error">schedule &#39;every day&#39; is not a valid cron expression' in page
    assert 'aria-describedby="setting-concurrency-help setting-concurrency-error"' in page
    assert "4 problems below" in page
    # what was typed comes back (but never a secret)
    assert 'value="acme, beta"' in page and 'value="bad name!"' in page and 'value="lots"' in page
    assert TOKEN not in page and "type them again" in page

    missing = admin.post("/sources/new", data=_github_form(**{"setting-orgs": "", "secret-token": ""}))
    assert missing.status_code == 422
    assert 'id="setting-orgs-error">setting &#39;orgs&#39; is required' in missing.get_data(as_text=True)
    no_secret = admin.post("/sources/new", data=_github_form(**{"secret-token": ""})).get_data(as_text=True)
    assert 'id="form-error">a github source needs the secret &#39;private_key&#39;' in no_secret
    taken = admin.post("/sources/new", data=_github_form(name="taken")).get_data(as_text=True)
    assert 'id="name-error">a source named &#39;taken&#39; already exists' in taken
    unknown_kind = admin.post("/sources/new", data={"kind": "ldap", "name": "x"})
    assert unknown_kind.status_code == 422 and 'id="kind-error"' in unknown_kind.get_data(as_text=True)

    session.expire_all()
    assert session.scalars(select(Source.name)).all() == ["taken"]
    assert len(_events(session)) == events_before  # nothing audited: nothing changed


# --- test the connection ---------------------------------------------------------------------------------


@pytest.fixture
def okta():
    app = okta_fake(demo=True)
    with serve_in_thread(app) as server:
        app.url = server.url
        yield app


def test_test_connection_names_the_missing_permission_then_passes(admin, session, okta):
    response = admin.post("/sources/new", data={"kind": "okta", "name": "okta-new", "setting-domain": okta.url,
                                                "secret-token": OKTA_TOKEN})
    assert response.status_code == 303, response.get_data(as_text=True)
    source = _source(session, "okta-new")
    okta.faults.logs_status = 403  # the token's admin may not read the System Log

    failed = admin.post(f"/sources/{source.id}/test", headers={"HX-Request": "true"})
    assert failed.status_code == 200
    text = failed.get_data(as_text=True)
    assert 'data-ok="no"' in text and "Connection failed" in text
    assert "okta.logs.read" in text and "log_days=0" in text  # the permission, and what to do
    assert OKTA_TOKEN not in text

    okta.faults.logs_status = None
    passed = admin.post(f"/sources/{source.id}/test", headers={"HX-Request": "true"}).get_data(as_text=True)
    assert 'data-ok="yes"' in passed and "Connection ok" in passed and "API calls" in passed
    # without htmx: the outcome as a message on the source page
    plain = admin.post(f"/sources/{source.id}/test", follow_redirects=True).get_data(as_text=True)
    assert "Connection ok" in plain

    events = _events(session, "source.tested")
    assert [e.after["ok"] for e in events] == [False, True, True]
    assert "okta.logs.read" in events[0].after["message"] and events[0].actor == "admin@acme.example"
    assert OKTA_TOKEN not in json.dumps([e.after for e in events])
    assert _source(session, "okta-new").settings == source.settings  # a test changes nothing


def test_cli_test_uses_the_same_check(app, session, okta, admin):
    admin.post("/sources/new", data={"kind": "okta", "name": "okta-new", "setting-domain": okta.url,
                                     "secret-token": OKTA_TOKEN})
    okta.faults.logs_status = 403
    result = app.test_cli_runner().invoke(args=["sources", "test", "okta-new"])
    assert result.exit_code != 0 and "okta.logs.read" in result.output
    okta.faults.logs_status = None
    result = app.test_cli_runner().invoke(args=["sources", "test", "okta-new"])
    assert result.exit_code == 0 and "okta-new: ok (" in result.output


# --- schedule, disable, enable ---------------------------------------------------------------------------


def test_admin_sets_and_clears_the_schedule_and_disables_and_enables(admin, session):
    source = make_source(session, "hr", kind="demo", settings={"people": 5})
    session.commit()
    page = admin.get(f"/sources/{source.id}").get_data(as_text=True)
    assert "No schedule: synced only when asked." in page and "Disable " in page

    assert admin.post(f"/sources/{source.id}/schedule", data={"schedule": "30 2 * * 1-5"}).status_code == 303
    assert _source(session, "hr").schedule == "30 2 * * 1-5"
    page = admin.get(f"/sources/{source.id}").get_data(as_text=True)
    assert "Synced on <code>30 2 * * 1-5</code> (UTC); next:" in page and ">Clear</button>" in page
    bad = admin.post(f"/sources/{source.id}/schedule", data={"schedule": "sometimes"}, follow_redirects=True)
    assert "not a valid cron expression" in bad.get_data(as_text=True)
    assert _source(session, "hr").schedule == "30 2 * * 1-5"
    # saving the settings form (which has no schedule field) keeps the schedule
    admin.post(f"/sources/{source.id}/settings", data={"setting-people": "6"})
    assert _source(session, "hr").schedule == "30 2 * * 1-5" and _source(session, "hr").settings["people"] == 6
    assert admin.post(f"/sources/{source.id}/schedule", data={"schedule": "30 2 * * 1-5", "clear": "1"}).status_code == 303
    assert _source(session, "hr").schedule is None

    assert admin.post(f"/sources/{source.id}/enabled", data={"enabled": "no"}).status_code == 303
    hr = _source(session, "hr")
    assert not hr.enabled and hr.disabled_at is not None
    page = admin.get(f"/sources/{source.id}").get_data(as_text=True)
    assert 'id="source-disabled"' in page and ">Enable</button>" in page and "Sync now" not in page
    assert admin.post(f"/sources/{source.id}/sync").status_code == 303  # refused with a message
    assert _source(session, "hr").sync_requested_at is None
    assert admin.post(f"/sources/{source.id}/enabled", data={"enabled": "yes"}).status_code == 303
    hr = _source(session, "hr")
    assert hr.enabled and hr.disabled_at is None
    assert admin.post(f"/sources/{source.id}/enabled", data={"enabled": "maybe"}).status_code == 400

    updates = _events(session, "source.update")
    assert [(e.before["schedule"], e.after["schedule"]) for e in updates if e.before["schedule"] != e.after["schedule"]] \
        == [(None, "30 2 * * 1-5"), ("30 2 * * 1-5", None)]
    [disabled] = _events(session, "source.disable")
    [enabled] = _events(session, "source.enable")
    assert disabled.actor == enabled.actor == "admin@acme.example"
    assert enabled.before["enabled"] is False and enabled.after == {"enabled": True}


def test_enabling_a_second_authoritative_source_is_refused(admin, session):
    first = make_source(session, "idp-old", kind="demo", authoritative=True)
    first.enabled = False
    make_source(session, "idp-new", kind="demo", authoritative=True)
    session.commit()
    response = admin.post(f"/sources/{first.id}/enabled", data={"enabled": "yes"}, follow_redirects=True)
    assert "another enabled source already is" in response.get_data(as_text=True)
    assert not _source(session, "idp-old").enabled and _events(session, "source.enable") == []


# --- who may -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["manager", "auditor"])
def test_managers_and_auditors_cannot_add_edit_test_sync_schedule_or_disable(app, client, session, users, role):
    app.config["WTF_CSRF_ENABLED"] = False
    source = make_source(session, "hr", kind="demo", settings={"people": 5})
    session.commit()
    login_as(app, client, users[role])
    assert client.get("/sources/new?kind=github").status_code == 403
    for path, data in (("/sources/new", _github_form()),
                       (f"/sources/{source.id}/settings", {"setting-people": "1"}),
                       (f"/sources/{source.id}/test", {}),
                       (f"/sources/{source.id}/sync", {}),
                       (f"/sources/{source.id}/schedule", {"schedule": "0 1 * * *"}),
                       (f"/sources/{source.id}/enabled", {"enabled": "no"})):
        assert client.post(path, data=data).status_code == 403, path
        assert client.post(path, data=data, headers={"HX-Request": "true"}).status_code == 403, path
    hr = _source(session, "hr")
    assert (hr.settings, hr.schedule, hr.enabled, hr.sync_requested_at) == ({"people": 5}, None, True, None)
    assert _source(session, "gh-new") is None and _events(session) == []
    page = client.get(f"/sources/{source.id}")
    if role == "auditor":  # reads the page and its runs, without a single control
        text = page.get_data(as_text=True)
        assert page.status_code == 200 and client.get(f"/sources/{source.id}/runs").status_code == 200
        for control in ("Test connection", "Disable", "Save schedule", "Sync now", "Add a source"):
            assert control not in text, control
        assert "Add a source" not in client.get("/sources").get_data(as_text=True)
    else:
        assert page.status_code == 403 and client.get(f"/sources/{source.id}/runs").status_code == 403


def test_every_source_form_needs_the_csrf_token(app, client, session, users):
    assert app.config.get("WTF_CSRF_ENABLED", True)
    source = make_source(session, "hr", kind="demo", settings={"people": 5})
    session.commit()
    login_as(app, client, users["admin"])
    for path, data in (("/sources/new", _github_form()), (f"/sources/{source.id}/test", {}),
                       (f"/sources/{source.id}/schedule", {"schedule": "0 1 * * *"}),
                       (f"/sources/{source.id}/enabled", {"enabled": "no"})):
        assert client.post(path, data=data).status_code == 400, path
    hr = _source(session, "hr")
    assert hr.schedule is None and hr.enabled and _source(session, "gh-new") is None


# --- runs ----------------------------------------------------------------------------------------------------


def test_runs_newest_first_with_phases_notes_and_failed_parts_paged(app, client, session, users):
    source = make_source(session, "hr", kind="demo")
    start = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)
    for i in range(23):
        session.add(SyncRun(source_id=source.id, status="succeeded", started_at=start + timedelta(hours=i),
                            finished_at=start + timedelta(hours=i, seconds=9), api_calls=i,
                            stats={"read": {"accounts": i}}, triggered_by="scheduler"))
    # the newest: a partial run with its phases (stored out of order, as PostgreSQL's JSONB may give them back)
    session.add(SyncRun(source_id=source.id, status="partial", started_at=start + timedelta(days=2),
                        finished_at=start + timedelta(days=2, seconds=7), api_calls=40,
                        stats={"phases": {"verify": 0.2, "apply": 1.5, "read": 4.25, "stage": 0.75},
                               "added": {"grants": 3}},
                        failed_parts=[{"part": "acme-beta", "reason": "HTTP 403: Resource not accessible"}],
                        notes=["acme: SAML single sign-on is not enabled"], triggered_by="sync now by admin@acme.example"))
    session.commit()
    newest = session.scalar(select(SyncRun.id).order_by(SyncRun.id.desc()).limit(1))
    login_as(app, client, users["auditor"])  # auditors read the runs too

    page = client.get(f"/sources/{source.id}").get_data(as_text=True)
    rows = page.split('<tr id="run-')[1:]
    assert len(rows) == 20 and rows[0].startswith(f'{newest}"')
    first = rows[0]
    assert first.index(">read <") < first.index(">stage <") < first.index(">apply <") < first.index(">verify <")
    assert '<span class="mono">4.25</span>' in first
    assert "acme-beta: HTTP 403: Resource not accessible" in first and "SAML single sign-on is not enabled" in first
    assert "grants 3" in first and "sync now by admin@acme.example" in first
    assert "Older runs" in page and "Newest runs" not in page

    older = client.get(f"/sources/{source.id}/runs?runs_before={newest - 19}", headers={"HX-Request": "true"})
    text = older.get_data(as_text=True)
    ids = [int(r.split('"', 1)[0]) for r in text.split('<tr id="run-')[1:]]
    assert ids == sorted(ids, reverse=True) and len(ids) == 4 and max(ids) == newest - 20
    assert "Newest runs" in text and "Older runs" not in text
    full = client.get(f"/sources/{source.id}?runs_before={newest - 19}").get_data(as_text=True)
    assert f'<tr id="run-{newest - 20}"' in full and f'<tr id="run-{newest}"' not in full
    assert client.get(f"/sources/{source.id}/runs?runs_before=abc").status_code == 200  # no filter


def test_the_polled_sync_panel_stops_and_reloads_the_runs_when_the_run_ends(admin, session):
    source = make_source(session, "hr", kind="demo")
    run = SyncRun(source_id=source.id, status="running",
                  stats={"progress": {"phase": "reading", "records": 1234, "requests": 7, "seconds": 3.5}})
    session.add(run)
    session.commit()
    poll = {"HX-Request": "true", "HX-Trigger": "source-sync"}
    running = admin.get(f"/sources/{source.id}/status", headers=poll)
    text = running.get_data(as_text=True)
    assert 'data-running="yes"' in text and 'hx-trigger="every 2s"' in text
    assert "Phase: <strong>reading</strong> · 1,234 records · 7 API requests" in text
    assert "HX-Trigger" not in running.headers

    run.status, run.finished_at = "succeeded", datetime.now(UTC)
    run.stats = {"phases": {"read": 3.9, "stage": 0.4, "apply": 0.8}, "read": {"identities": 5}}
    session.commit()
    done = admin.get(f"/sources/{source.id}/status", headers=poll)
    text = done.get_data(as_text=True)
    assert 'data-running="no"' in text and "hx-trigger" not in text  # polling stops
    assert done.headers["HX-Trigger"] == "sync-finished"  # and the runs table reloads itself
    runs = admin.get(f"/sources/{source.id}/runs").get_data(as_text=True)
    assert 'hx-trigger="sync-finished from:body"' in runs and ">apply <" in runs


def test_cli_disable_and_enable_are_the_pages_rule(app, session):
    make_source(session, "hr", kind="demo", settings={"people": 5})
    session.commit()
    runner = app.test_cli_runner()
    assert runner.invoke(args=["sources", "disable", "hr"]).exit_code == 0
    assert not _source(session, "hr").enabled
    result = runner.invoke(args=["sources", "enable", "hr"])
    assert result.exit_code == 0 and "hr: enabled" in result.output
    assert _source(session, "hr").enabled
    assert [e.action for e in _events(session) if e.action in ("source.disable", "source.enable")] == \
        ["source.disable", "source.enable"]
    assert runner.invoke(args=["sources", "enable", "nope"]).exit_code != 0
