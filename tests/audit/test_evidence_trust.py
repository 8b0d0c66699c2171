"""Evidence verification trusts a pinned key, never the bundle: re-signed bundles, duplicate, unlisted and
path-trick entries, self-decisions; the PDF's fingerprint; the public key served to auditors only."""

from __future__ import annotations

import hashlib
import json
import warnings
import zipfile

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from attest.audit import evidence
from attest.audit.evidence import (
    NO_TRUSTED_KEY,
    check_bundle,
    export_bundle,
    key_fingerprint,
    key_id,
    load_signing_key,
    public_key_pem,
)
from tests.audit.helpers import decided_campaign
from tests.factories import login_as, make_user


@pytest.fixture
def bundle(session, factory, settings, tmp_path):
    setup = decided_campaign(session)
    path = tmp_path / "evidence.zip"
    export_bundle(factory, settings, setup.campaign.id, path, actor="auditor@acme.example")
    return path


@pytest.fixture
def instance_key(settings):
    return load_signing_key(settings)


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


def repack(path, out, key, *, change=None, before=(), after=(), listed=(), drop=""):
    """Rebuild a bundle: `change` {name: new bytes}; extra entries `before`/`after` the originals (name, bytes);
    entries starting with `drop` left out; the manifest's file list updated to match, and signed with `key`."""
    change = change or {}
    with zipfile.ZipFile(path) as src:
        originals = [(i.filename, src.read(i.filename)) for i in src.infolist()
                     if i.filename != "manifest.json" and not (drop and i.filename.startswith(drop))]
        manifest = json.loads(src.read("manifest.json"))
    manifest.pop("signature")
    manifest["files"] = {n: e for n, e in manifest["files"].items() if not (drop and n.startswith(drop))}
    originals = [(n, change.get(n, d)) for n, d in originals]
    for name, data in list(originals) + list(before) + list(after):
        if name in change or name in listed:
            manifest["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate names these tests write on purpose
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
            for name, data in [*before, *originals, *after]:
                dst.writestr(zipfile.ZipInfo(name), data)
            dst.writestr("manifest.json", evidence._signed_manifest(manifest, key))
    return out


def tamper_items(data: bytes) -> bytes:
    return data.replace(b",revoke,", b",approve,", 1)


def test_a_bundle_re_signed_with_another_key_fails_by_default_and_with_a_fingerprint(bundle, tmp_path, runner,
                                                                                      instance_key):
    forged = repack(bundle, tmp_path / "forged.zip", Ed25519PrivateKey.generate(),
                    change={"items.csv": tamper_items(zipfile.ZipFile(bundle).read("items.csv"))},
                    drop="checkpoints/")  # the forger cannot sign checkpoints either
    # self-consistent: the key it carries verifies it (what the old verify accepted)
    with zipfile.ZipFile(forged) as zf:
        carried = json.loads(zf.read("manifest.json"))["signature"]["public_key"]
    embedded = Ed25519PublicKey.from_public_bytes(__import__("base64").b64decode(carried))
    assert evidence.verify_bundle(forged, embedded) == []

    result = runner.invoke(args=["evidence", "verify", str(forged)])  # the instance's key by default
    assert result.exit_code == 1, result.output
    assert f"not with the trusted key {key_id(instance_key.public_key())}" in result.output
    assert "re-signed" in result.output and "NOT verified" in result.output
    for fingerprint in (key_id(instance_key.public_key()), key_fingerprint(instance_key.public_key())):
        by_print = runner.invoke(args=["evidence", "verify", str(forged), "--fingerprint", fingerprint])
        assert by_print.exit_code == 1 and "not with the trusted key" in by_print.output
    # the genuine bundle passes the same ways
    assert runner.invoke(args=["evidence", "verify", str(bundle)]).exit_code == 0
    ok = runner.invoke(args=["evidence", "verify", str(bundle), "--fingerprint",
                             key_fingerprint(instance_key.public_key())])
    assert ok.exit_code == 0 and "verified" in ok.output, ok.output
    (tmp_path / "k.pem").write_text(public_key_pem(instance_key.public_key()))
    assert runner.invoke(args=["evidence", "verify", str(bundle), "--key", str(tmp_path / "k.pem")]).exit_code == 0


def test_without_any_key_verification_fails_closed(bundle, settings, factory, tmp_path):
    from attest.app import create_app

    assert check_bundle(bundle).problems == [NO_TRUSTED_KEY]
    app = create_app(settings.replace(signing_key=""))
    app.extensions["attest"].factory = factory
    result = app.test_cli_runner().invoke(args=["evidence", "verify", str(bundle)])
    assert result.exit_code == 1 and "--key" in result.output and "--fingerprint" in result.output
    assert "never trusted" in result.output


def test_a_duplicate_entry_fails_even_with_the_right_key(bundle, tmp_path, instance_key):
    with zipfile.ZipFile(bundle) as zf:
        items = zf.read("items.csv")
    dup = repack(bundle, tmp_path / "dup.zip", instance_key, before=[("items.csv", tamper_items(items))])
    with zipfile.ZipFile(dup) as zf:
        assert [i.filename for i in zf.infolist()].count("items.csv") == 2
        assert zf.read("items.csv") == items  # Python reads the genuine last copy; unzip extracts the first
    problems = check_bundle(dup, instance_key.public_key()).problems
    assert problems == ["items.csv: the zip holds more than one entry of this name (a second copy can hide a changed "
                        "one: tools disagree about which they extract)"]


def test_an_entry_not_in_the_manifest_fails(bundle, tmp_path, instance_key):
    extra = repack(bundle, tmp_path / "extra.zip", instance_key, after=[("README.txt", b"trust me")])
    assert check_bundle(extra, instance_key.public_key()).problems == [
        "README.txt: in the bundle but not listed in the manifest (added)"]


@pytest.mark.parametrize("name, why", [
    ("../outside.txt", "a '..' component"), ("/etc/cron.d/x", "an absolute path"),
    ("checkpoints\\..\\x.txt", "a backslash"), ("C:/x.txt", "an absolute path"), ("a//b.txt", "an empty or '.' component"),
])
def test_path_tricks_fail_even_when_listed_and_signed(bundle, tmp_path, instance_key, name, why):
    tricky = repack(bundle, tmp_path / "tricky.zip", instance_key, after=[(name, b"x")], listed=[name])
    assert check_bundle(tricky, instance_key.public_key()).problems == [f"{name!r}: not a safe entry name ({why})"]


def test_a_self_decision_fails_verification_from_the_items_file(session, factory, settings, tmp_path, instance_key):
    setup = decided_campaign(session)
    item = setup.items[0]
    assert item.identity_id is not None
    item.decided_by_identity_id = item.identity_id  # decided by the person whose access it is
    session.commit()
    path = tmp_path / "self.zip"
    export_bundle(factory, settings, setup.campaign.id, path)
    with zipfile.ZipFile(path) as zf:
        manifest = json.loads(zf.read("manifest.json"))
        header = zf.read("items.csv").decode().splitlines()[0].split(",")
    assert manifest["totals"]["self_decisions"] == 1
    assert header[-2:] == ["person_identity_id", "decided_by_identity_id"]
    problems = check_bundle(path, instance_key.public_key()).problems
    assert problems == [f"items.csv: 1 item(s) decided by the person whose access they are about (self-decisions, "
                        f"e.g. item {item.id}); there must be none"]

    # a manifest that hides it (counting 0) does not help: the items file is recounted
    hidden = json.loads(json.dumps(manifest))
    hidden.pop("signature")
    hidden["totals"]["self_decisions"] = 0
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(tmp_path / "hidden.zip", "w") as dst:
        for info in src.infolist():
            if info.filename != "manifest.json":
                dst.writestr(info.filename, src.read(info.filename))
        dst.writestr("manifest.json", evidence._signed_manifest(hidden, instance_key))
    problems = check_bundle(tmp_path / "hidden.zip", instance_key.public_key()).problems
    assert any("self-decisions, e.g. item" in p for p in problems)
    assert "manifest.json counts 0 self-decisions, items.csv shows 1" in problems


def test_the_report_prints_the_signing_key_fingerprint(session, factory, settings, tmp_path, monkeypatch,
                                                        instance_key):
    import weasyprint

    pages = []

    class FakeHTML:
        def __init__(self, string):
            pages.append(string)

        def write_pdf(self):
            return b"%PDF-1.7 fake"

    monkeypatch.setattr(weasyprint, "HTML", FakeHTML)
    setup = decided_campaign(session)
    export_bundle(factory, settings, setup.campaign.id, tmp_path / "again.zip")
    assert f"Signing key fingerprint (SHA-256 of the raw Ed25519 public key): <code>" \
           f"{key_fingerprint(instance_key.public_key())}</code>" in pages[0]


@pytest.mark.parametrize("role, status", [("auditor", 200), ("admin", 200), (None, 403)])
def test_the_public_key_is_served_to_auditors_and_admins_only(app, client, session, settings, role, status):
    user = make_user(session, f"{role or 'manager'}@acme.example", roles=[role] if role else [])
    session.commit()
    login_as(app, client, user)
    response = client.get("/evidence/public-key")
    assert response.status_code == status
    if status == 200:
        pub = load_signing_key(settings).public_key()
        assert response.get_data(as_text=True) == public_key_pem(pub)
        assert response.headers["X-Key-Fingerprint"] == key_fingerprint(pub)
        assert "attachment" in response.headers["Content-Disposition"]


def test_the_public_key_is_not_served_anonymously(client):
    response = client.get("/evidence/public-key")
    assert response.status_code in (302, 401)
    assert b"BEGIN PUBLIC KEY" not in response.get_data()
