"""Issue 16, parts 2 and 3: hostile upstream text and upstream errors that echo secrets.

- A NUL byte or a lone surrogate in one upstream name never fails a sync (PostgreSQL refuses both): the
  text is normalised before it is staged and the run's notes name the record.
- An upstream whose error pages echo the request's Authorization header (a debugging proxy, an error
  page that quotes the request) never gets the token into a SyncRun, an audit event, a remediation, a
  log line, a page or an evidence export.
"""

from __future__ import annotations

import io
import json
import logging
import zipfile

import pytest
from sqlalchemy import select

from attest.connectors.sandbox.server import serve_in_thread
from attest.db import utcnow
from attest.entitlements.models import Account, Identity, Source, SyncRun
from attest.entitlements.sources import add_source
from attest.entitlements.sync import run_sync
from attest.redact import redact
from attest.reviews import remediation
from attest.reviews.models import Remediation, ReviewItem
from attest.trail.models import AuditEvent
from tests.factories import login_as, make_source, make_user
from tests.reviews.test_remediation_connectors import revoke_in_campaign

logging.getLogger("werkzeug").setLevel(logging.ERROR)

OKTA_TOKEN = "okta-api-token-7f3c9b2e41"


def no_sleep(_seconds: float) -> None:
    pass


# --- hostile text -------------------------------------------------------------------------------------------


def test_nul_bytes_and_lone_surrogates_in_upstream_names_never_fail_a_sync(factory, session, settings):
    from attest.connectors.github import GitHubConnector
    from attest.connectors.okta import OktaConnector
    from attest.connectors.sandbox.github_fake import SANDBOX_TOKEN
    from attest.connectors.sandbox.github_fake import create_app as github_app
    from attest.connectors.sandbox.okta_fake import _Raw
    from attest.connectors.sandbox.okta_fake import create_app as okta_app

    okta = okta_app(users=20, groups=4, apps=2, memberships=40, sso_events=0)
    gh = github_app(members=12, teams=2, repos=3, owners=1)
    with serve_in_thread(okta) as o_server, serve_in_thread(gh) as g_server:
        # an Okta person whose name holds a NUL byte and a lone surrogate (JSON \u0000 and \ud800)
        uid = okta.user_ids[3]
        user = okta._user(uid, o_server.url)
        user["profile"]["displayName"] = "Ada\x00 Love\ud800lace"
        user["profile"]["title"] = "Engineer\x00"
        okta._json_cache[(uid, o_server.url)] = _Raw(json.dumps(user))  # ASCII JSON, escapes as Okta sends
        # a GitHub member likewise (the fake's JSON is ASCII-escaped)
        member = sorted(gh.github.orgs["acme"].members)[1]
        gh.github.users[member]["name"] = "Grace\x00 Hop\udc00per"

        make_source(session, "okta", kind="okta", authoritative=True)
        make_source(session, "gh", kind="github")
        session.commit()
        o = run_sync(factory, settings, "okta", connector=OktaConnector(
            {"domain": o_server.url, "log_days": 0}, {"token": "sandbox-token"}, sleep=no_sleep))
        g = run_sync(factory, settings, "gh", connector=GitHubConnector(
            {"orgs": ["acme"], "api_url": g_server.url}, {"token": SANDBOX_TOKEN}, sleep=no_sleep))

    assert o.status == "succeeded", o.error
    assert g.status == "succeeded", g.error
    person = session.scalar(select(Identity).where(Identity.external_id == uid))
    assert person.display_name == "Ada Lovelace" and person.title == "Engineer"
    assert any("NUL bytes or invalid Unicode removed" in n and repr(uid) in n and "display_name" in n
               for n in o.notes), o.notes
    account = session.scalar(select(Account).where(Account.external_id == str(member)))
    assert account.display_name == "Grace Hopper"
    assert any(repr(str(member)) in n for n in g.notes), g.notes
    run = session.get(SyncRun, o.run_id)
    assert any("identity" in n for n in run.notes)


# --- secrets echoed by upstream errors ------------------------------------------------------------------------


def _traces(text: str, *secrets: str) -> list[str]:
    return [s for s in secrets if s in text]


def test_redact_removes_what_error_pages_echo():
    text = ('401 {"errorSummary": "Invalid token (Authorization: SSWS okta-api-token-7f3c9b2e41)", '
            '"x": "Bearer ghs_16C7e42F292c6912E7710c838347Ae178B4a", "aws_secret_access_key": '
            '"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "q": "?access_token=abc123&x=1"} github_pat_11ABCDEFG0123456789_abcdefghij')
    out = redact(text, {"token": OKTA_TOKEN})
    for secret in (OKTA_TOKEN, "ghs_16C7e42F292c6912E7710c838347Ae178B4a", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                   "abc123", "github_pat_11ABCDEFG0123456789_abcdefghij"):
        assert secret not in out, (secret, out)
    # ordinary upstream words survive
    assert redact("Invalid token provided; Bearer authentication required") == \
        "Invalid token provided; Bearer authentication required"
    assert redact("arn:aws:iam::123456789012:role/AttestAudit sha 0123456789abcdef0123456789abcdef01234567") == \
        "arn:aws:iam::123456789012:role/AttestAudit sha 0123456789abcdef0123456789abcdef01234567"
    # a bare configured secret is known to the caller
    assert OKTA_TOKEN not in redact(f"echo {OKTA_TOKEN}", {"token": OKTA_TOKEN})


@pytest.fixture
def leaky_upstreams(session, settings):
    """A synced Okta source and a GitHub source of two orgs, whose error pages echo the Authorization header."""
    from attest.connectors.sandbox.github_fake import SANDBOX_TOKEN
    from attest.connectors.sandbox.github_fake import create_app as github_app
    from attest.connectors.sandbox.okta_fake import create_app as okta_app

    okta = okta_app(users=30, groups=6, apps=2, memberships=80, sso_events=0, ssws_tokens={OKTA_TOKEN: "SUPER_ADMIN"})
    gh = github_app(orgs=["acme", "beta"], members=8, teams=2, repos=3, owners=1)
    with serve_in_thread(okta) as o_server, serve_in_thread(gh) as g_server:
        add_source(session, settings, "okta", "okta", {"domain": o_server.url, "log_days": 0},
                   {"token": OKTA_TOKEN}, authoritative=True)
        add_source(session, settings, "github", "gh", {"orgs": "acme,beta", "api_url": g_server.url},
                   {"token": SANDBOX_TOKEN})
        session.commit()
        yield okta, gh, SANDBOX_TOKEN


def test_secrets_echoed_by_upstream_errors_are_never_stored_logged_shown_or_exported(
        app, client, factory, session, settings, leaky_upstreams, caplog, tmp_path):
    from attest.audit.evidence import export_bundle
    from attest.connectors.github import GitHubConnector

    okta, gh, gh_token = leaky_upstreams
    caplog.set_level(logging.DEBUG)
    assert run_sync(factory, settings, "okta").ok
    gid = next(g for g in okta.group_ids if okta.groups[g]["type"] == "OKTA_GROUP" and okta.members[g]
               and not okta.has_admin_privilege(g)
               and g not in {x for r in okta.rules for x in r["actions"]["assignUserToGroups"]["groupIds"]})
    rem_id = revoke_in_campaign(session, "okta", f"{gid}:member|a|{sorted(okta.members[gid])[0]}")
    session.get(ReviewItem, session.get(Remediation, rem_id).item_id).decided_at = utcnow()
    session.commit()

    # the Okta token is revoked upstream, whose 401 pages now quote the request's Authorization header
    okta.ssws_tokens.clear()
    okta.faults.echo_auth = True
    remediation.run_pending(factory, settings)
    failed = run_sync(factory, settings, "okta")
    assert failed.status == "failed" and "[redacted]" in failed.error, failed.error
    # GitHub: one org answers 403 with an error page that quotes the request; the other is read
    gh.github.echo_auth = True
    gh.github.inject_failure(at=1, status=403, count=1000, path="/orgs/beta")
    source = session.scalar(select(Source).where(Source.name == "gh"))
    partial = run_sync(factory, settings, "gh", connector=GitHubConnector(
        {"orgs": ["acme", "beta"], "api_url": source.settings["api_url"]},
        {"token": gh_token}, sleep=no_sleep))
    assert partial.status == "partial" and "[redacted]" in partial.failed_parts[0]["reason"], partial.failed_parts

    secrets = (OKTA_TOKEN, gh_token)
    session.expire_all()
    rem = session.get(Remediation, rem_id)
    assert rem.last_error and "[redacted]" in rem.last_error, rem.last_error
    stored = [json.dumps({"error": r.error, "notes": r.notes, "failed_parts": r.failed_parts, "stats": r.stats})
              for r in session.scalars(select(SyncRun))]
    stored += [json.dumps({"before": e.before, "after": e.after}) for e in session.scalars(select(AuditEvent))]
    stored.append(rem.last_error or "")
    assert any("[redacted]" in s for s in stored)
    for text in stored:
        assert not _traces(text, *secrets), text

    # every page an admin or an auditor opens
    admin = make_user(session, "admin@acme.example", roles=["admin"])
    auditor = make_user(session, "auditor@acme.example", roles=["auditor"])
    session.commit()
    sources = {s.name: s.id for s in session.scalars(select(Source))}
    for user in (admin, auditor):
        login_as(app, client, user)
        for url in (f"/sources/{sources['okta']}", f"/sources/{sources['gh']}", "/sources", "/audit",
                    "/audit?action=remediation.attempt_failed", "/remediations", "/remediations.csv"):
            page = client.get(url)
            assert page.status_code == 200, (url, page.status_code)
            assert not _traces(page.get_data(as_text=True), *secrets), url

    # the evidence bundle of the campaign (its audit trail and remediations)
    path = tmp_path / "evidence.zip"
    export_bundle(factory, settings, rem.campaign_id, path, actor="auditor@acme.example")
    with zipfile.ZipFile(path) as zf:
        for name in zf.namelist():
            data = zf.read(name)
            for secret in secrets:
                assert secret.encode() not in data, name
                if name.endswith(".xlsx"):
                    with zipfile.ZipFile(io.BytesIO(data)) as inner:
                        assert not any(secret.encode() in inner.read(n) for n in inner.namelist()), name

    # and every log line, tracebacks included
    for record in caplog.records:
        line = record.getMessage() + (record.exc_text or "")
        if record.exc_info:
            line += logging.Formatter().formatException(record.exc_info)
        assert not _traces(line, *secrets), line
