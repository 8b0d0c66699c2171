"""The commands: attest remediation ..., attest evidence ..., exit codes and messages."""

from __future__ import annotations

import json
import zipfile

import pytest
from sqlalchemy import select

from attest.reviews.models import Remediation
from tests.audit.helpers import decided_campaign


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


def test_evidence_export_verify_and_public_key(runner, session, tmp_path):
    setup = decided_campaign(session)
    out = tmp_path / "e.zip"
    result = runner.invoke(args=["evidence", "export", str(setup.campaign.id), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "12 items" in result.output and "manifest SHA-256" in result.output
    key = runner.invoke(args=["evidence", "public-key"])
    assert key.exit_code == 0 and key.output.startswith("-----BEGIN PUBLIC KEY-----")
    (tmp_path / "key.pem").write_text(key.output)
    ok = runner.invoke(args=["evidence", "verify", str(out), "--key", str(tmp_path / "key.pem")])
    assert ok.exit_code == 0 and "verified" in ok.output and "5 audit events" in ok.output

    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(out) as src, zipfile.ZipFile(bad, "w") as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            dst.writestr(info.filename, data.replace(b"approve", b"APPROVE", 1) if info.filename == "items.csv" else data)
    failed = runner.invoke(args=["evidence", "verify", str(bad)])
    assert failed.exit_code == 1 and "FAIL items.csv: SHA-256" in failed.output and "NOT verified" in failed.output
    as_json = json.loads(runner.invoke(args=["evidence", "verify", str(bad), "--json"]).output)
    assert as_json["ok"] is False and len(as_json["problems"]) == 1

    missing = runner.invoke(args=["evidence", "export", "999999", "--out", str(tmp_path / "x.zip")])
    assert missing.exit_code == 1 and "no campaign with id 999999" in missing.output


def test_remediation_list_export_manual_and_mark_done(runner, session, tmp_path):
    setup = decided_campaign(session)
    item = setup.items[3]
    session.add(Remediation(campaign_id=setup.campaign.id, item_id=item.id, grant_id=item.grant_id,
                            source_id=setup.source.id, mode="manual", status="pending",
                            target="Remove the account from group 'Finance'"))
    session.commit()
    listing = runner.invoke(args=["remediation", "list", "--campaign", str(setup.campaign.id)])
    assert listing.exit_code == 0 and "REAPPEARED in sync run" in listing.output and "verified" in listing.output
    rows = json.loads(runner.invoke(args=["remediation", "list", "--json", "--status", "pending"]).output)
    assert [r["target"] for r in rows] == ["Remove the account from group 'Finance'"]
    assert runner.invoke(args=["remediation", "list", "--status", "nope"]).exit_code == 1

    out = tmp_path / "manual.csv"
    result = runner.invoke(args=["remediation", "export-manual", "--campaign", str(setup.campaign.id), "--out", str(out)])
    assert result.exit_code == 0 and "wrote 1 open tasks" in result.output
    assert "Remove the account from group 'Finance'" in out.read_text()

    rem_id = rows[0]["id"]
    result = runner.invoke(args=["remediation", "mark-done", str(rem_id), "--note", "done in Okta, IAM-9"])
    assert result.exit_code == 0, result.output
    session.expire_all()
    assert session.get(Remediation, rem_id).status == "done"
    again = runner.invoke(args=["remediation", "mark-done", str(rem_id), "--note", "again"])
    assert again.exit_code == 1 and "only open manual tasks" in again.output


def test_remediation_run_dry_run_and_nothing_due(runner, session):
    result = runner.invoke(args=["remediation", "run", "--dry-run"])
    assert result.exit_code == 0 and "nothing is due" in result.output
    result = runner.invoke(args=["remediation", "run", "--campaign", "424242"])
    assert result.exit_code == 1 and "no campaign with id 424242" in result.output
    assert session.scalar(select(Remediation.id).limit(1)) is None
