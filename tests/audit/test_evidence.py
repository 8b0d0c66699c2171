"""The evidence bundle: contents, a good bundle verifying, any change failing, the xlsx readable."""

from __future__ import annotations

import csv
import io
import json
import re
import struct
import subprocess
import zipfile

import pytest

from attest.audit import evidence
from attest.audit.evidence import EvidenceError, export_bundle, verify_bundle
from tests.audit.helpers import decided_campaign


@pytest.fixture
def bundle(session, factory, settings, tmp_path):
    setup = decided_campaign(session)
    path = tmp_path / "evidence.zip"
    result = export_bundle(factory, settings, setup.campaign.id, path, actor="auditor@acme.example")
    return setup, path, result


@pytest.fixture
def pinned(settings):
    """The instance's public key: bundles are verified against it, never against the key they carry."""
    return evidence.load_signing_key(settings).public_key()


def read_manifest(path) -> dict:
    with zipfile.ZipFile(path) as zf:
        return json.loads(zf.read("manifest.json"))


def rewrite(path, out, name, change):
    """Copy the zip, passing one member's bytes through `change` (a well-formed zip with altered content)."""
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            dst.writestr(info.filename, change(data) if info.filename == name else data)


def test_a_good_bundle_verifies_and_holds_what_an_auditor_needs(bundle, settings, pinned):
    setup, path, result = bundle
    assert verify_bundle(path, pinned) == []
    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
    checkpoints = {n for n in names if n.startswith("checkpoints/")}
    assert len(checkpoints) == 1  # the one written at export covers every event
    names -= checkpoints
    assert names == {"manifest.json", "items.csv", "items.xlsx", "exclusions.csv", "remediations.csv", "report.pdf",
                     "audit.jsonl", "signing_key.pub.pem", "SHA256SUMS"}
    m = read_manifest(path)
    assert m["campaign"]["name"] == "Q3 access review" and m["campaign"]["status"] == "closed"
    assert m["controls"] == ["SOC 2 CC6.2", "SOX ITGC"] and m["definition"]["controls"] == m["controls"]
    assert m["population"]["balanced"] is True
    assert m["population"]["in_scope"] == 13 and m["population"]["items"] == 12
    assert m["population"]["excluded_by_reason"] == {"service_account_excluded": 1}
    assert m["totals"]["items"] == 12 and m["totals"]["revoked"] == 2 and m["totals"]["approved"] == 10
    assert m["totals"]["reappeared"] == 1
    assert m["sync_runs"]["snapshot"][0]["api_calls"] == 7
    assert len(m["sync_runs"]["verification"]) == 1
    [reviewer] = m["reviewers"]
    assert reviewer["name"] == "Maria Manager" and reviewer["items"] == 12 and reviewer["signed_off_at"]
    [stats] = m["decisions_by_reviewer"]
    assert stats["decided"] == 12 and stats["median_seconds"] == 2.0 and stats["bulk_approved"] == 6
    assert stats["rubber_stamp"] == ["median 2s per decision"]
    assert m["audit"]["events"] == 5 and m["audit"]["chain_intact_at_export"] is True
    assert set(m["files"]) == (names | checkpoints) - {"manifest.json"}
    assert m["files"]["items.csv"]["rows"] == 12
    assert m["signature"]["algorithm"] == "Ed25519" and m["signing_key_id"] == m["signature"]["key_id"]
    assert result.items == 12 and result.problems_at_export == []


def test_items_csv_and_audit_jsonl_content(bundle):
    setup, path, _ = bundle
    with zipfile.ZipFile(path) as zf:
        rows = list(csv.DictReader(io.StringIO(zf.read("items.csv").decode())))
        events = [json.loads(line) for line in zf.read("audit.jsonl").decode().splitlines()]
        sums = zf.read("SHA256SUMS").decode()
    assert len(rows) == 12
    first = rows[0]
    assert first["person"] == setup.people[0].display_name and first["decision"] == "revoke"
    assert first["risks"] == "privileged" and first["privileged"] == "yes"
    assert first["remediation_status"] == "verified" and first["verification_sync_run"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", first["decided_at"])
    assert rows[1]["remediation_status"] == "reappeared" and rows[1]["reappeared_sync_run"]
    assert rows[11]["decided_in_bulk"] == "yes" and rows[11]["reviewer"] == "Maria Manager"
    assert [e["action"] for e in events] == ["campaign.launch", "item.decide", "item.decide", "item.decide",
                                             "campaign.close"]
    assert all({"seq", "prev_hash", "hash"} <= set(e) for e in events)
    assert "source.add" not in {e["action"] for e in events}
    assert "  items.csv\n" in sums


def test_xlsx_opens_with_one_row_per_item(bundle):
    setup, path, _ = bundle
    with zipfile.ZipFile(path) as zf, zipfile.ZipFile(io.BytesIO(zf.read("items.xlsx"))) as xlsx:
        assert xlsx.testzip() is None
        workbook = xlsx.read("xl/workbook.xml").decode()
        sheet = xlsx.read("xl/worksheets/sheet1.xml").decode()
    assert 'name="Items"' in workbook
    assert len(re.findall(r"<row ", sheet)) == 13  # header + 12 items
    assert "Maria Manager" in sheet and setup.people[0].display_name in sheet


def test_xlsx_starts_a_new_sheet_past_the_row_limit(session, factory, settings, tmp_path, monkeypatch, pinned):
    setup = decided_campaign(session)
    monkeypatch.setattr(evidence.writers, "XLSX_MAX_ROWS", 6)  # 5 items a sheet
    path = tmp_path / "e.zip"
    export_bundle(factory, settings, setup.campaign.id, path)
    with zipfile.ZipFile(path) as zf, zipfile.ZipFile(io.BytesIO(zf.read("items.xlsx"))) as xlsx:
        workbook = xlsx.read("xl/workbook.xml").decode()
        counts = [len(re.findall(r"<row ", xlsx.read(f"xl/worksheets/sheet{i}.xml").decode())) for i in (1, 2, 3)]
    assert re.findall(r'<sheet name="([^"]+)"', workbook) == ["Items", "Items 2", "Items 3"]
    assert counts == [6, 6, 3]  # each with its header
    assert verify_bundle(path, pinned) == []


def test_report_pdf_is_a_pdf(bundle):
    _, path, _ = bundle
    with zipfile.ZipFile(path) as zf:
        pdf = zf.read("report.pdf")
    assert pdf.startswith(b"%PDF-") and len(pdf) > 5000


def test_one_changed_byte_in_a_file_fails_and_names_it(bundle, tmp_path, pinned):
    _, path, _ = bundle
    bad = tmp_path / "bad.zip"
    rewrite(path, bad, "items.csv", lambda b: b.replace(b"revoke", b"approv", 1))
    problems = verify_bundle(bad, pinned)
    assert len(problems) == 1 and problems[0].startswith("items.csv: SHA-256") and "changed" in problems[0]


def test_one_flipped_byte_anywhere_in_the_zip_fails(bundle, tmp_path, pinned):
    _, path, _ = bundle
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("audit.jsonl")
    name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26:info.header_offset + 30])
    start = info.header_offset + 30 + name_len + extra_len
    data[start + info.compress_size // 2] ^= 0x01  # inside the member's compressed data
    bad = tmp_path / "flipped.zip"
    bad.write_bytes(bytes(data))
    problems = verify_bundle(bad, pinned)
    assert problems and any(p.startswith("audit.jsonl") for p in problems)


def test_changed_manifest_breaks_the_signature(bundle, tmp_path, pinned):
    _, path, _ = bundle
    bad = tmp_path / "bad.zip"
    rewrite(path, bad, "manifest.json", lambda b: b.replace(b'"revoked":2', b'"revoked":0', 1))
    problems = verify_bundle(bad, pinned)
    assert any("signature does not match" in p for p in problems)


def test_edited_audit_event_is_named_even_when_hashes_are_recomputed(bundle, tmp_path, pinned):
    """An attacker without the signing key can edit an event and fix the file hash, not the signature."""
    _, path, _ = bundle
    bad = tmp_path / "bad.zip"
    rewrite(path, bad, "audit.jsonl", lambda b: b.replace(b'"decision":"revoke"', b'"decision":"approve"', 1))
    problems = verify_bundle(bad, pinned)
    assert any(p.startswith("audit.jsonl line 2 (event seq") and "(edited)" in p for p in problems)
    assert any(p.startswith("audit.jsonl: SHA-256") for p in problems)


def test_removed_file_and_added_file_are_reported(bundle, tmp_path, pinned):
    _, path, _ = bundle
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(bad, "w") as dst:
        for info in src.infolist():
            if info.filename != "report.pdf":
                dst.writestr(info.filename, src.read(info.filename))
        dst.writestr("extra.txt", b"hello")
    problems = verify_bundle(bad, pinned)
    assert "report.pdf: listed in the manifest but missing from the bundle" in problems
    assert "extra.txt: in the bundle but not listed in the manifest (added)" in problems


def test_a_bundle_signed_by_another_key_fails_against_the_trusted_key(bundle):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    _, path, _ = bundle
    other = Ed25519PrivateKey.generate().public_key()
    problems = verify_bundle(path, trusted_key=other)
    assert "not with the trusted key" in problems[0]


def test_standard_tools_verify_the_signature_and_hashes(bundle, tmp_path, settings):
    """sed + openssl reproduce the signature check; sha256sum -c the file hashes."""
    _, path, _ = bundle
    with zipfile.ZipFile(path) as zf:
        zf.extractall(tmp_path / "x")
    d = tmp_path / "x"
    # exactly the commands of docs/evidence.md
    subprocess.run(["sh", "-c", "sed 's/,\"signature\":{[^}]*}}$/}/' manifest.json > manifest.signed"], cwd=d,
                   check=True)
    subprocess.run(["sh", "-c", "sed 's/.*,\"signature\":{.*\"value\":\"\\([^\"]*\\)\"}}$/\\1/' manifest.json "
                                "| base64 -d > manifest.sig"], cwd=d, check=True)
    ok = subprocess.run(["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", "signing_key.pub.pem", "-rawin",
                         "-in", "manifest.signed", "-sigfile", "manifest.sig"], cwd=d, capture_output=True, text=True)
    assert ok.returncode == 0 and "Signature Verified Successfully" in ok.stdout
    sums = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=d, capture_output=True, text=True)
    assert sums.returncode == 0, sums.stdout


def test_errors_are_clear(session, factory, settings, tmp_path):
    with pytest.raises(EvidenceError, match="no campaign with id 424242"):
        export_bundle(factory, settings, 424242, tmp_path / "x.zip")
    setup = decided_campaign(session)
    with pytest.raises(EvidenceError, match="ATTEST_SIGNING_KEY is not set"):
        export_bundle(factory, settings.replace(signing_key=""), setup.campaign.id, tmp_path / "x.zip")
    assert not (tmp_path / "x.zip").exists()
    assert verify_bundle(tmp_path / "missing.zip")[0].endswith("not a readable zip file ([Errno 2] No such file or "
                                                                "directory: '" + str(tmp_path / "missing.zip") + "')")


def test_pem_signing_key_works(session, factory, settings, tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    setup = decided_campaign(session)
    path = tmp_path / "pem.zip"
    export_bundle(factory, settings.replace(signing_key=pem), setup.campaign.id, path)
    assert verify_bundle(path, trusted_key=key.public_key()) == []


def test_bundle_of_a_real_campaign_reconciles_its_population(session, factory, settings, tmp_path, pinned):
    """Launched and closed through the real services: in scope = items + exclusions, runs snapshotted."""
    from attest.db import transaction
    from attest.entitlements.sync import run_sync
    from attest.reviews import campaigns, definitions
    from tests.entitlements.test_sync import org
    from tests.factories import ListConnector, make_source

    make_source(session, "idp", authoritative=True)
    session.commit()
    run = run_sync(factory, settings, "idp", connector=ListConnector(org(5)))
    spec = {"name": "Everyone's access", "scope": {"sources": ["idp"]}, "stages": [{"reviewer": "manager"}],
            "fallback_reviewer": "person1@acme.example", "controls": ["ISO 27001 A.5.18"]}
    with transaction(factory) as s:
        d = definitions.create_definition(s, spec, "admin@acme.example")
        c = campaigns.create_campaign(s, d.id, "admin@acme.example")
        campaigns.launch(s, c.id, "admin@acme.example")
        campaigns.close(s, c.id, "admin@acme.example")
        cid = c.id
    path = tmp_path / "real.zip"
    export_bundle(factory, settings, cid, path)
    assert verify_bundle(path, pinned) == []
    m = read_manifest(path)
    pop = m["population"]
    assert pop["balanced"] is True and pop["in_scope"] == pop["items"] + pop["excluded"] and pop["items"] > 0
    assert [r["run_id"] for r in m["sync_runs"]["snapshot"]] == [run.run_id]
    assert m["sync_runs"]["snapshot"][0]["status"] == "succeeded"
    assert m["controls"] == ["ISO 27001 A.5.18"] and m["campaign"]["status"] == "closed"
    assert m["totals"]["undecided"] == m["totals"]["items"]  # nobody answered: kept by the no-response rule
    assert m["totals"]["outcomes"] == {"keep": m["totals"]["items"]}
