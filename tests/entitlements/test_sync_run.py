"""The sync package (issue 18): a run's phase timings, the production transaction path on a fresh
database, and the after-apply hook through which the reviews layer hears of a sync."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from attest.connectors.base import GrantRecord
from attest.db import transaction
from attest.entitlements.models import Account, Grant, Identity, Source, SyncRun
from attest.entitlements.sync import hooks, run_sync
from tests.entitlements.test_sync import org
from tests.factories import ListConnector, make_source

ROOT = Path(__file__).resolve().parents[2]


def _run(factory, run_id: int) -> SyncRun:
    with factory() as s:
        return s.get(SyncRun, run_id)


def _phases_ok(phases: dict) -> None:
    assert all(isinstance(v, float) and v >= 0 and round(v, 3) == v for v in phases.values()), phases


def test_a_finished_run_records_its_phases_in_order_and_a_failed_run_those_it_reached(factory, session, settings):
    make_source(session, "idp", authoritative=True)
    session.commit()
    ok = run_sync(factory, settings, "idp", connector=ListConnector(org(5)))
    assert ok.status == "succeeded", ok.error
    # stored as a mapping (PostgreSQL's JSONB keeps no key order: readers order by the phase names,
    # attest.entitlements.sources.run_phases); the run's result has them in the order they ran
    phases = ok.stats["phases"]
    assert list(phases) == ["read", "stage", "apply", "verify"]
    _phases_ok(phases)
    assert _run(factory, ok.run_id).stats["phases"] == phases

    failed = run_sync(factory, settings, "idp", connector=ListConnector(org(5), fail_after=3))
    assert failed.status == "failed"
    phases = failed.stats["phases"]
    assert list(phases) == ["read", "stage"]  # the connector failed while reading: nothing was applied
    _phases_ok(phases)
    assert _run(factory, failed.run_id).stats["phases"] == phases

    # refused by the removal guard: the apply phase ran (up to the guard), verify never did
    aborted = run_sync(factory, settings, "idp", connector=ListConnector([r for r in org(5)
                                                                          if not isinstance(r, GrantRecord)]))
    assert aborted.status == "aborted"
    assert list(aborted.stats["phases"]) == ["read", "stage", "apply"]
    assert _run(factory, aborted.run_id).stats["phases"] == aborted.stats["phases"]


def _snapshot(factory) -> dict:
    """Everything a sync could change, as plain values."""
    with factory() as s:
        return {
            "identities": sorted(s.execute(select(Identity.external_id, Identity.display_name, Identity.ended_at,
                                                  Identity.manager_id)).all()),
            "accounts": sorted(s.execute(select(Account.external_id, Account.identity_id, Account.ended_at,
                                                Account.record_hash)).all()),
            "grants": sorted(s.execute(select(Grant.key, Grant.ended_at, Grant.ended_run_id)).all()),
            "changes": s.scalar(text("SELECT COUNT(*) FROM access_change")),
            "last_success": s.scalar(select(Source.last_success_run_id)),
        }


def test_the_production_path_lands_a_sync_and_a_failed_sync_loses_nothing(fresh_db, monkeypatch):
    """On a fresh database and its own engine (not the test's connection): the run opens its own connection
    for the stage, commits the stage, applies in its own transaction, and beats its heartbeat from a thread."""
    factory, settings = fresh_db.factory, fresh_db.settings
    with transaction(factory) as s:
        make_source(s, "idp", authoritative=True)

    first = run_sync(factory, settings, "idp", connector=ListConnector(org(6)))
    assert first.status == "succeeded", first.error
    landed = _snapshot(factory)
    assert len(landed["identities"]) == 6 and len(landed["accounts"]) == 6
    assert sum(1 for g in landed["grants"] if g.ended_at is None) == 14
    assert landed["last_success"] == first.run_id
    # the stage is gone with its connection: a new connection sees no stage table
    with fresh_db.engine.connect() as conn:
        names = set(fresh_db.engine.dialect.get_table_names(conn)) | set(
            fresh_db.engine.dialect.get_temp_table_names(conn) if conn.dialect.name == "sqlite" else ())
    assert not {n for n in names if n.startswith("stage_")}

    changed = org(6, drop={"app:admin|a|u1"}, extra=[GrantRecord("app:user", "u2")])

    # 1. the connector fails while paging: the run is failed, the data as it was
    r = run_sync(factory, settings, "idp", connector=ListConnector(changed, fail_after=20))
    assert r.status == "failed" and "HTTP 500" in r.error
    assert _snapshot(factory) == landed

    # 2. the apply itself fails, after the run's changes were written in its transaction (a hook of a
    #    layer above raises): everything the apply wrote is rolled back, the run is failed
    def broken(session, source_id, run_id, result):
        assert session.scalar(select(func.count()).select_from(Grant).where(Grant.ended_run_id == run_id)) == 1
        raise RuntimeError("the verification broke")

    monkeypatch.setattr(hooks, "_AFTER_APPLY", [*hooks._AFTER_APPLY, broken])
    r = run_sync(factory, settings, "idp", connector=ListConnector(changed))
    assert r.status == "failed" and "the verification broke" in r.error
    assert list(r.stats["phases"]) == ["read", "stage", "apply", "verify"]
    assert _run(factory, r.run_id).stats["phases"] == r.stats["phases"]
    assert _snapshot(factory) == landed
    monkeypatch.undo()

    # 3. the same run without the broken hook lands
    r = run_sync(factory, settings, "idp", connector=ListConnector(changed))
    assert r.status == "succeeded", r.error
    after = _snapshot(factory)
    assert after["last_success"] == r.run_id and after["changes"] == landed["changes"] + 2
    assert [g.key for g in after["grants"] if g.ended_run_id == r.run_id] == ["app:admin|a|u1"]
    assert "app:user|a|u2" in {g.key for g in after["grants"] if g.ended_at is None}


def test_an_after_apply_hook_runs_inside_the_apply_transaction_with_the_result(factory, session, settings, monkeypatch):
    make_source(session, "idp", authoritative=True)
    session.commit()
    seen = []

    def hook(s, source_id, run_id, result):
        run = s.get(SyncRun, run_id)
        # inside the apply: the run's grants are there, its row is being finished in this transaction
        seen.append((source_id, run_id, result.status, result.stats["added"]["grants"], run.status,
                     s.scalar(select(func.count()).select_from(Grant).where(Grant.first_seen_run_id == run_id))))

    monkeypatch.setattr(hooks, "_AFTER_APPLY", [])
    hooks.after_apply(hook)
    hooks.after_apply(hook)  # registered once
    r = run_sync(factory, settings, "idp", connector=ListConnector(org(3)))
    source_id = session.scalar(select(Source.id).where(Source.name == "idp"))
    assert seen == [(source_id, r.run_id, "succeeded", 8, "succeeded", 8)]


def test_remediation_verifies_after_every_sync_wherever_the_reviews_are_loaded():
    """The sync never imports the reviews; the reviews register their verification when imported, so any
    process that can hold a remediation (it has loaded attest.reviews) verifies on every sync."""
    code = ("from attest.entitlements.sync.hooks import after_apply_hooks; assert after_apply_hooks() == ();"
            "import attest.reviews.models; from attest.reviews import remediation;"
            "assert after_apply_hooks() == (remediation._verify_after_apply,), after_apply_hooks()")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
    # the web app (and the CLI and scheduler, which run inside it) loads the reviews' blueprints
    code = ("from attest.entitlements.sync.hooks import after_apply_hooks; from flask import Flask;"
            "from attest.app import register_blueprints; register_blueprints(Flask('t')); assert len(after_apply_hooks()) == 1")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


@pytest.mark.parametrize("package", ["attest/entitlements", "attest/connectors"])
def test_lower_layers_never_import_the_reviews(package):
    offenders = []
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.startswith("attest.reviews")]
    assert offenders == []
