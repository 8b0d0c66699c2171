"""Evidence exports run as a scheduler job, never inside a web request (issue 16, part 6).

Before: the download route built the whole zip in the request (28.8 s for 341k items: two at once hit
gunicorn's 30 s limit and killed both workers) and left it in /tmp/attest-evidence-*/; a killed export
left `.evidence-*.zip.part` files and `.evidence-*/` folders. Now the web queues an export, the
scheduler's `evidence:export` job builds it under <instance>/evidence/ (0700, files 0600) with progress
on the row, the page polls a fragment, the download streams the stored file (audited), expired bundles
and partial files of dead processes are removed. Real commits (fresh_db): the web and the job use
connections of their own, as in production.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import tempfile
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlalchemy import select

from attest import jobs
from attest.audit import evidence, export_jobs
from attest.audit.evidence import load_signing_key, verify_bundle
from attest.audit.models import EvidenceExport
from attest.db import transaction
from attest.trail.models import AuditEvent
from tests.audit.helpers import decided_campaign
from tests.factories import login_as, make_user
from tests.reviews.factories import review_setup

T = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)
EVIDENCE_JOB = next(spec for spec in jobs.FIXED_JOBS if spec.kind == "evidence")


@pytest.fixture
def world(fresh_db):
    from attest.app import create_app

    with fresh_db.factory() as s:
        setup = decided_campaign(s)
        auditor = make_user(s, "auditor@acme.example", roles=["auditor"])
        admin = make_user(s, "admin@acme.example", roles=["admin"])
        nobody = make_user(s, "someone@acme.example")
        s.commit()
    app = create_app(fresh_db.settings)
    app.config["WTF_CSRF_ENABLED"] = False

    def client_for(user):
        client = app.test_client()
        login_as(app, client, user)
        return client

    yield SimpleNamespace(db=fresh_db, app=app, campaign_id=setup.campaign.id, auditor=auditor, admin=admin,
                          nobody=nobody, client_for=client_for, folder=Path(fresh_db.settings.instance_path) / "evidence")
    app.extensions["attest"].engine.dispose()


def _rows(factory) -> list[EvidenceExport]:
    with factory() as s:
        return list(s.scalars(select(EvidenceExport).order_by(EvidenceExport.id)))


def _events(factory, action: str) -> list[AuditEvent]:
    with factory() as s:
        return list(s.scalars(select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.seq)))


def _run_job(w, now=T):
    ctx = jobs.JobContext(w.db.factory, w.db.settings, holder="scheduler-test")
    run = jobs.run_job(ctx, EVIDENCE_JOB, now=now)
    assert run.status == "succeeded", run.error
    return run


def _tmp_leftovers() -> set[str]:
    return {n for n in os.listdir(tempfile.gettempdir()) if n.startswith(("attest-evidence-", ".evidence-"))}


def test_two_export_requests_at_once_only_queue_jobs_and_never_build_in_the_request(world, monkeypatch):
    """The request handler never builds the zip: export_bundle is out of reach of the web, both requests
    answer at once with a queued row, and no file exists until the scheduler's job runs."""
    def no_build_in_a_request(*args, **kwargs):
        raise AssertionError("a web request built an evidence bundle")

    monkeypatch.setattr(evidence, "export_bundle", no_build_in_a_request)
    with world.db.factory() as s:
        other = review_setup(s, people=2, per_person=2, manager_email="mo.manager@acme.example",
                             campaign_name="Q4 access review")
        other.campaign.status = "active"
        s.commit()
        second = other.campaign.id
    clients = [(world.client_for(world.auditor), world.campaign_id), (world.client_for(world.admin), second)]
    barrier, answers = threading.Barrier(2), {}

    def post(client, campaign_id):
        barrier.wait()
        answers[campaign_id] = client.post(f"/campaigns/{campaign_id}/evidence")

    threads = [threading.Thread(target=post, args=pair) for pair in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    rows = _rows(world.db.factory)
    assert sorted(r.campaign_id for r in rows) == sorted([world.campaign_id, second])
    assert {r.status for r in rows} == {"queued"} and all(r.file_path is None and r.started_at is None for r in rows)
    for campaign_id, response in answers.items():
        row = next(r for r in rows if r.campaign_id == campaign_id)
        assert response.status_code == 303
        assert response.headers["Location"].endswith(f"/evidence/exports/{row.id}")
    assert not world.folder.exists() or not any(world.folder.iterdir())
    assert {e.actor for e in _events(world.db.factory, "evidence.export_requested")} == {
        "auditor@acme.example", "admin@acme.example"}
    # asking again while one is queued returns that one: repeated clicks build one bundle
    again = world.client_for(world.auditor).post(f"/campaigns/{world.campaign_id}/evidence")
    assert again.status_code == 303 and len(_rows(world.db.factory)) == 2
    # the old download link never builds either: it sends the user to the evidence page
    old = world.client_for(world.auditor).get(f"/campaigns/{world.campaign_id}/evidence.zip")
    assert old.status_code == 303 and "/evidence" in old.headers["Location"]


def test_the_job_builds_the_bundle_and_the_download_streams_it_audited(world):
    before = _tmp_leftovers()
    auditor = world.client_for(world.auditor)
    export_id = int(auditor.post(f"/campaigns/{world.campaign_id}/evidence").headers["Location"].rsplit("/", 1)[1])
    assert auditor.get(f"/evidence/exports/{export_id}/download").status_code == 303  # not built yet

    run = _run_job(world)
    assert run.detail["built"] == [(export_id, "done")]
    (row,) = _rows(world.db.factory)
    assert (row.status, row.phase, row.items_done, row.items_total) == ("done", "done", 12, 12)
    assert row.file_path == f"evidence/export-{export_id}.zip" and row.holder is None
    assert T <= row.started_at <= row.finished_at < T + timedelta(minutes=5)
    assert row.expires_at - row.finished_at == timedelta(days=7)  # ATTEST_EVIDENCE_RETENTION_DAYS
    path = Path(world.db.settings.instance_path) / row.file_path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(world.folder.stat().st_mode) == 0o700
    assert row.size == path.stat().st_size

    page = auditor.get(f"/evidence/exports/{export_id}").get_data(as_text=True)
    assert f"/evidence/exports/{export_id}/download" in page and row.sha256 in page
    response = auditor.get(f"/evidence/exports/{export_id}/download")
    assert response.status_code == 200 and response.mimetype == "application/zip"
    assert response.headers["Content-Disposition"].startswith("attachment; filename=evidence-")
    assert response.is_streamed  # send_file streams the stored file, it is not read into memory
    data = response.get_data()
    response.close()
    import hashlib

    assert hashlib.sha256(data).hexdigest() == row.sha256
    dl = Path(world.db.settings.instance_path).parent / "dl.zip"
    dl.write_bytes(data)
    assert verify_bundle(dl, load_signing_key(world.db.settings).public_key()) == []
    exported = _events(world.db.factory, "evidence.exported")
    assert [(e.actor, e.campaign_id) for e in exported] == [("auditor@acme.example", world.campaign_id)]
    admin = world.client_for(world.admin)
    assert admin.get(f"/evidence/exports/{export_id}/download").status_code == 200
    downloads = _events(world.db.factory, "evidence.downloaded")
    assert [(e.actor, e.object_id, e.after["sha256"]) for e in downloads] == [
        ("auditor@acme.example", str(export_id), row.sha256), ("admin@acme.example", str(export_id), row.sha256)]
    # the old link now leads to the finished bundle
    old = auditor.get(f"/campaigns/{world.campaign_id}/evidence.zip")
    assert old.status_code == 303 and old.headers["Location"].endswith(f"/evidence/exports/{export_id}/download")
    # auditors and admins only
    nobody = world.client_for(world.nobody)
    for path_ in (f"/evidence/exports/{export_id}", f"/evidence/exports/{export_id}/status",
                  f"/evidence/exports/{export_id}/download"):
        assert nobody.get(path_).status_code == 403, path_
    assert nobody.post(f"/campaigns/{world.campaign_id}/evidence").status_code == 403
    assert auditor.get("/evidence/exports/987654/download").status_code == 404
    assert auditor.post("/campaigns/987654/evidence").status_code == 404
    # nothing in the folder but the bundle, nothing left in the system's temporary folder
    assert sorted(p.name for p in world.folder.iterdir()) == [f"export-{export_id}.zip"]
    assert _tmp_leftovers() <= before


def test_the_progress_fragment_reports_each_phase_and_waits_for_a_scheduler(world, monkeypatch):
    auditor = world.client_for(world.auditor)
    export_id = int(auditor.post(f"/campaigns/{world.campaign_id}/evidence").headers["Location"].rsplit("/", 1)[1])
    fragment = auditor.get(f"/evidence/exports/{export_id}/status").get_data(as_text=True)
    assert 'data-status="queued"' in fragment and 'hx-trigger="every 2s"' in fragment
    assert "Waiting for the scheduler" in fragment  # no scheduler has ever run here
    with transaction(world.db.factory) as s:  # a scheduler's reconcile ran a moment ago
        jobs.acquire(s, jobs.RECONCILE.id, jobs.LEASE_TTL, "scheduler-a", now=datetime.now(UTC))
    fragment = auditor.get(f"/evidence/exports/{export_id}/status").get_data(as_text=True)
    assert 'data-status="queued"' in fragment and "Waiting for the scheduler" not in fragment

    seen: list[tuple[str, str]] = []
    progress = export_jobs._Runner.progress

    def watch(self, phase, done, total):
        progress(self, phase, done, total)
        html = auditor.get(f"/evidence/exports/{export_id}/status").get_data(as_text=True)
        status = html.split('data-status="', 1)[1].split('"', 1)[0]
        shown = html.split('data-phase="', 1)[1].split('"', 1)[0]
        if not seen or seen[-1] != (status, shown):
            seen.append((status, shown))
        if phase == "items.csv":
            assert "of 12 items" in html and "hx-trigger" in html

    monkeypatch.setattr(export_jobs._Runner, "progress", watch)
    _run_job(world)
    assert seen == [("running", phase) for phase in evidence.PHASES]
    done = auditor.get(f"/evidence/exports/{export_id}/status").get_data(as_text=True)
    assert 'data-status="done"' in done and "hx-trigger" not in done and "Download evidence" in done


def test_expired_bundles_are_removed_and_no_longer_served(world):
    auditor = world.client_for(world.auditor)
    auditor.post(f"/campaigns/{world.campaign_id}/evidence")
    _run_job(world)
    (row,) = _rows(world.db.factory)
    path = Path(world.db.settings.instance_path) / row.file_path
    stray = world.folder / "export-999.zip"  # a bundle no export owns any more
    stray.write_bytes(b"old")

    _run_job(world, now=T + timedelta(days=6, minutes=1))  # within the retention: kept
    assert path.exists() and _rows(world.db.factory)[0].status == "done" and not stray.exists()

    _run_job(world, now=row.expires_at + timedelta(minutes=1))
    (row,) = _rows(world.db.factory)
    assert (row.status, row.file_path) == ("expired", None) and not path.exists()
    assert [e.object_id for e in _events(world.db.factory, "evidence.export_expired")] == [str(row.id)]
    response = auditor.get(f"/evidence/exports/{row.id}/download")
    assert response.status_code == 303
    assert "retention period" in auditor.get(f"/evidence/exports/{row.id}").get_data(as_text=True)


def test_a_killed_export_job_is_requeued_once_then_failed(world):
    with transaction(world.db.factory) as s:
        row, _ = export_jobs.request_export(s, world.campaign_id, "auditor@acme.example", now=T)
        export_id = row.id
    with transaction(world.db.factory) as s:  # a scheduler claims it and dies
        assert export_jobs.claim_next(s, "dead-scheduler", T) == export_id
    assert export_jobs.sweep(world.db.factory, world.db.settings, T + timedelta(minutes=1))["requeued"] == []
    swept = export_jobs.sweep(world.db.factory, world.db.settings, T + export_jobs.STALE + timedelta(seconds=1))
    assert swept["requeued"] == [str(export_id)]
    (row,) = _rows(world.db.factory)
    assert row.status == "queued" and "interrupted on dead-scheduler" in row.error
    with transaction(world.db.factory) as s:  # claimed again, and that process dies too
        assert export_jobs.claim_next(s, "dead-again", T + timedelta(minutes=5)) == export_id
    swept = export_jobs.sweep(world.db.factory, world.db.settings, T + timedelta(minutes=10))
    assert swept["failed"] == [str(export_id)]
    (row,) = _rows(world.db.factory)
    assert row.status == "failed" and row.attempts == 2 and "interrupted" in row.error
    page = world.client_for(world.auditor).get(f"/evidence/exports/{export_id}").get_data(as_text=True)
    assert "The export failed" in page and "hx-trigger" not in page
    # asking again queues a new export
    assert world.client_for(world.auditor).post(f"/campaigns/{world.campaign_id}/evidence").status_code == 303
    assert [r.status for r in _rows(world.db.factory)] == ["failed", "queued"]


def _kill_an_export_midway(w, out: Path) -> None:
    """Run export_bundle in another process, SIGKILL it while it writes items.xlsx."""
    script = (
        "import sys, time\n"
        "from sqlalchemy.orm import sessionmaker\n"
        "from attest.config import load_settings\n"
        "from attest.db import make_engine\n"
        "from attest.audit.evidence import export_bundle\n"
        "settings = load_settings()\n"
        "factory = sessionmaker(bind=make_engine(settings.database_url), expire_on_commit=False)\n"
        "def progress(phase, done, total):\n"
        "    if phase == 'items.xlsx' and done:\n"
        "        print('midway', flush=True)\n"
        "        time.sleep(600)\n"
        f"export_bundle(factory, settings, {w.campaign_id}, sys.argv[1], progress=progress)\n"
    )
    env = {**os.environ, "ATTEST_ENV": "test", "ATTEST_DATABASE_URL": w.db.url, "ATTEST_LOG_LEVEL": "WARNING",
           "ATTEST_INSTANCE_PATH": w.db.settings.instance_path, "ATTEST_SIGNING_KEY": w.db.settings.signing_key}
    proc = subprocess.Popen([sys.executable, "-c", script, str(out)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout.readline().strip() == "midway"
    finally:
        proc.kill()
        proc.wait(timeout=30)


def _start_a_scheduler(w) -> None:
    """`attest scheduler` starting (and, told to stop at once, stopping again)."""
    from attest.db import make_engine

    stop, engine = threading.Event(), make_engine(w.db.url)
    stop.set()
    errors = []

    def run():
        try:
            jobs.run_scheduler(w.db.settings, engine, w.db.factory, holder="scheduler-restarted", stop=stop)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    thread = threading.Thread(target=run)  # not the main thread: no signal handlers installed
    thread.start()
    thread.join(timeout=120)
    engine.dispose()
    assert not thread.is_alive() and errors == []


def test_partial_files_of_a_killed_export_are_removed_at_the_next_start(world, tmp_path):
    # the CLI's export (`attest evidence export --out DIR/F.zip`), killed midway
    out_dir = tmp_path / "exports"
    out_dir.mkdir()
    _kill_an_export_midway(world, out_dir / "q3.zip")
    left = sorted(p.name for p in out_dir.iterdir())
    assert len(left) == 2 and any(n.endswith(".zip.part") for n in left)
    assert all(n.startswith(".evidence-") for n in left)
    assert not (out_dir / "q3.zip").exists()
    legacy = out_dir / ".evidence-k2j4h1.zip.part"  # left by an older version (no process in its name)
    legacy.write_bytes(b"x")
    os.utime(legacy, (0, 0))
    fresh_legacy = out_dir / ".evidence-abcdef.zip.part"  # too recent to tell: kept
    fresh_legacy.write_bytes(b"x")
    live = out_dir / f"{evidence._partial_prefix()}live.zip.part"  # this process's own: kept
    live.write_bytes(b"x")
    runner = world.app.test_cli_runner()
    result = runner.invoke(args=["evidence", "export", str(world.campaign_id), "--out", str(out_dir / "q3.zip")])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(["q3.zip", fresh_legacy.name, live.name])

    # the scheduler's export, killed midway: its partials go at the next scheduler start, its row is requeued
    claimed = datetime.now(UTC) - export_jobs.STALE - timedelta(minutes=1)  # its last beat, before the kill
    with transaction(world.db.factory) as s:
        row, _ = export_jobs.request_export(s, world.campaign_id, "auditor@acme.example", now=claimed)
        assert export_jobs.claim_next(s, "dead-scheduler", claimed) == row.id
        export_id = row.id
    world.folder.mkdir(mode=0o700, exist_ok=True)
    _kill_an_export_midway(world, world.folder / f"export-{export_id}.zip")
    assert len(list(world.folder.iterdir())) == 2
    _start_a_scheduler(world)
    assert list(world.folder.iterdir()) == []
    (row,) = _rows(world.db.factory)
    assert row.status == "queued" and "interrupted" in row.error
    _run_job(world, now=datetime.now(UTC))
    (row,) = _rows(world.db.factory)
    assert row.status == "done" and row.attempts == 2
    assert sorted(p.name for p in world.folder.iterdir()) == [f"export-{export_id}.zip"]


def test_partials_of_another_host_or_a_live_process_are_kept(tmp_path):
    other_host = tmp_path / ".evidence-elsewhere.1.abc.zip.part"
    other_host.write_bytes(b"x")
    alive = tmp_path / f".evidence-{evidence._host()}.1.abc.zip.part"  # pid 1 is always running
    alive.write_bytes(b"x")
    mine = tmp_path / f".evidence-{evidence._host()}.{os.getpid()}.abc"
    mine.mkdir()
    unrelated = tmp_path / "evidence-3.zip"
    unrelated.write_bytes(b"x")
    assert evidence.remove_partials(tmp_path) == []
