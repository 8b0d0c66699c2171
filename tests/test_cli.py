"""The `attest` command: sources, secrets, sync exit codes."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from attest.entitlements.models import Source


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


def test_sources_add_validates_and_saves_nothing_on_error(runner, session):
    result = runner.invoke(args=["sources", "add", "oktaa", "acme"])
    assert result.exit_code != 0 and "unknown source kind 'oktaa'" in result.output
    result = runner.invoke(args=["sources", "add", "demo", "acme", "--set", "peeple=5"])
    assert result.exit_code != 0 and "unknown setting 'peeple'" in result.output and "people" in result.output
    result = runner.invoke(args=["sources", "add", "demo", "acme", "--set", "people=many"])
    assert result.exit_code != 0 and "whole number" in result.output
    assert session.scalar(select(func.count()).select_from(Source)) == 0


def test_secrets_come_from_the_environment_and_are_never_shown(runner, session, monkeypatch):
    from attest.connectors import registry
    from attest.connectors.base import Setting
    from attest.connectors.demo import DemoConnector

    class SecretDemo(DemoConnector):
        SECRETS = (Setting("token", "an API token"),)

    monkeypatch.setitem(registry.KINDS, "demo", "tests.test_cli:SecretDemoHolder")
    global SecretDemoHolder
    SecretDemoHolder = SecretDemo
    monkeypatch.setenv("MY_TOKEN", "s3cr3t-value-123")
    result = runner.invoke(args=["sources", "add", "demo", "acme", "--secret", "token=MY_TOKEN"])
    assert result.exit_code == 0, result.output
    stored = session.scalar(select(Source).where(Source.name == "acme"))
    assert "s3cr3t" not in (stored.secrets_encrypted or "") and stored.secrets_encrypted
    listing = runner.invoke(args=["sources", "list", "--json"])
    assert "s3cr3t" not in listing.output and json.loads(listing.output)[0]["secret_names"] == ["token"]
    missing = runner.invoke(args=["sources", "add", "demo", "other", "--secret", "token=NOT_SET_ANYWHERE"])
    assert missing.exit_code != 0 and "NOT_SET_ANYWHERE" in missing.output


def test_sync_prints_summary_and_fails_non_zero(runner, session):
    assert runner.invoke(args=["sources", "add", "demo", "hr", "--set", "people=50"]).exit_code == 0
    result = runner.invoke(args=["sync", "hr", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)[0]
    assert summary["status"] == "succeeded" and summary["stats"]["added"]["grants"] > 100
    assert runner.invoke(args=["sources", "add", "demo", "broken", "--set", "people=50", "--set", "fail_after=30",
                               "--not-authoritative"]).exit_code == 0
    result = runner.invoke(args=["sync", "broken"])
    assert result.exit_code == 1 and "failed" in result.output
    stats = json.loads(runner.invoke(args=["stats", "--json"]).output)
    assert {r["source"]: r["grants"] for r in stats}["broken"] == 0
    assert runner.invoke(args=["sync", "nope"]).exit_code == 1


def test_the_cli_runner_uses_this_tests_app_even_under_a_stale_app_context(app, settings, engine):
    """Flask's with_appcontext reuses an app context already pushed on the thread: a stale one (an earlier
    test's app, its connection closed) must not be what a test's CLI command runs against."""
    from sqlalchemy.orm import sessionmaker

    from attest.app import create_app

    stale = create_app(settings)
    stale.extensions["attest"].engine.dispose()
    closed = engine.connect()
    closed.close()
    stale.extensions["attest"].factory = sessionmaker(bind=closed)
    with stale.app_context():
        result = app.test_cli_runner().invoke(args=["sources", "list"])
    assert result.exception is None, repr(result.exception)
