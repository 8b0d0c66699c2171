"""Encryption keys: a wrong ATTEST_ENCRYPTION_KEYS is refused at start with one clear message (the key check
value), rotation re-encrypts the check value, a secret that cannot be decrypted is a clear error and never
a 500 or a traceback, and development makes a key only when nothing stored needs another one."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.fernet import Fernet
from sqlalchemy import select

from attest.config import load_settings
from attest.entitlements import keys
from attest.entitlements.keys import KeyCheck, KeyCheckError, fingerprint
from attest.entitlements.models import Source
from attest.entitlements.sources import add_source, encrypt_secrets
from tests.factories import login_as, make_user


@pytest.fixture
def secret_kind(monkeypatch):
    """The demo connector with one secret, so a source stores an encrypted secret."""
    from attest.connectors import registry

    monkeypatch.setitem(registry.KINDS, "demo", "tests.test_keys:SecretDemo")


def _secret_demo():
    from attest.connectors.base import Setting
    from attest.connectors.demo import DemoConnector

    class SecretDemo(DemoConnector):
        SECRETS = (Setting("token", "an API token"),)

    return SecretDemo


SecretDemo = _secret_demo()


def _store_source(fresh_db, name: str = "hr") -> str:
    """A source with a secret, committed with the fresh database's key; returns that key."""
    with fresh_db.factory() as session, session.begin():
        add_source(session, fresh_db.settings, "demo", name, {"people": "5"}, {"token": "s3cr3t-token-value"})
    return fresh_db.settings.encryption_keys[0]


def _cli(fresh_db, args: list[str], key: str, tmp_path: Path, **env: str):
    from attest.cli import main

    environ = {"ATTEST_ENV": "test", "ATTEST_DATABASE_URL": fresh_db.url, "ATTEST_ENCRYPTION_KEYS": key,
               "ATTEST_INSTANCE_PATH": str(tmp_path / "instance"), "ATTEST_LOG_LEVEL": "WARNING", **env}
    return CliRunner().invoke(main, args, env=environ)


def test_adding_a_secret_stores_the_check_value(secret_kind, fresh_db):
    key = _store_source(fresh_db)
    with fresh_db.factory() as session:
        check = session.scalar(select(KeyCheck))
        assert check is not None and check.key_fingerprint == fingerprint(key)
        assert Fernet(key.encode()).decrypt(check.token.encode()) == keys.CHECK_PLAINTEXT


def test_a_wrong_key_stops_the_app_at_start_with_one_clear_message(secret_kind, fresh_db):
    from attest.app import create_app

    right = _store_source(fresh_db)
    wrong, other = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    with pytest.raises(KeyCheckError) as refused:
        create_app(fresh_db.settings.replace(encryption_keys=(wrong, other)))
    message = str(refused.value)
    assert "ATTEST_ENCRYPTION_KEYS" in message
    assert fingerprint(wrong) in message and fingerprint(other) in message  # the keys tried
    assert fingerprint(right) in message  # the key needed
    assert right not in message and wrong not in message  # fingerprints, never keys
    # the right key anywhere in the list starts (a rotation in progress: new key first, old one after)
    create_app(fresh_db.settings.replace(encryption_keys=(wrong, right)))
    create_app(fresh_db.settings)


def test_cli_commands_that_touch_secrets_refuse_a_wrong_key_without_a_traceback(secret_kind, fresh_db, tmp_path):
    right = _store_source(fresh_db)
    wrong = Fernet.generate_key().decode()
    for args in (["sources", "list"], ["sources", "test", "hr"], ["sync", "hr"], ["scheduler", "--status"],
                 ["sources", "rotate-keys"]):
        result = _cli(fresh_db, args, wrong, tmp_path)
        assert result.exit_code == 2, (args, result.output)
        assert "Traceback" not in result.output and not isinstance(result.exception, KeyError | ValueError)
        assert "ATTEST_ENCRYPTION_KEYS cannot decrypt the stored secrets" in result.output, args
        assert fingerprint(wrong) in result.output and fingerprint(right) in result.output
    # commands that need no key still work, so the key can be put right (db current, audit)
    assert _cli(fresh_db, ["db", "current"], wrong, tmp_path).exit_code == 0
    listed = _cli(fresh_db, ["sources", "list"], right, tmp_path)
    assert listed.exit_code == 0 and "secrets=token" in listed.output


def test_rotate_keys_re_encrypts_the_check_value(secret_kind, fresh_db, tmp_path):
    old = _store_source(fresh_db)
    new = Fernet.generate_key().decode()
    rotated = _cli(fresh_db, ["sources", "rotate-keys"], f"{new},{old}", tmp_path)
    assert rotated.exit_code == 0, rotated.output
    assert fingerprint(new) in rotated.output
    with fresh_db.factory() as session:
        assert session.scalar(select(KeyCheck.key_fingerprint)) == fingerprint(new)
    # the old key can now be dropped; the old key alone is refused
    assert _cli(fresh_db, ["sources", "list"], new, tmp_path).exit_code == 0
    alone = _cli(fresh_db, ["sources", "list"], old, tmp_path)
    assert alone.exit_code == 2 and fingerprint(new) in alone.output


def test_a_database_from_before_the_check_value_gets_one_at_the_first_right_start(secret_kind, fresh_db):
    from attest.app import create_app

    right = _store_source(fresh_db)
    with fresh_db.factory() as session, session.begin():
        session.delete(session.scalar(select(KeyCheck)))
    with pytest.raises(KeyCheckError, match="ATTEST_ENCRYPTION_KEYS cannot decrypt"):
        create_app(fresh_db.settings.replace(encryption_keys=(Fernet.generate_key().decode(),)))
    create_app(fresh_db.settings)
    with fresh_db.factory() as session:
        assert session.scalar(select(KeyCheck.key_fingerprint)) == fingerprint(right)


def test_a_secret_no_key_decrypts_is_a_clear_error_not_a_500(app, client, session, settings, tmp_path):
    """The check value passes, but one source's secrets were encrypted with a key that is gone."""
    lost = settings.replace(encryption_keys=(Fernet.generate_key().decode(),))
    keys.write_check(session, settings)
    source = Source(kind="demo", name="lost", settings={}, authoritative=False, enabled=True,
                    secrets_encrypted=encrypt_secrets(lost, {"token": "s3cr3t-token-value"}))
    session.add(source)
    admin = make_user(session, "admin@acme.example", roles=["admin"])
    session.commit()
    login_as(app, client, admin)
    page = client.get(f"/sources/{source.id}")
    assert page.status_code == 200
    assert b"cannot be decrypted with ATTEST_ENCRYPTION_KEYS" in page.data and b"s3cr3t" not in page.data
    listed = app.test_cli_runner().invoke(args=["sources", "list"])
    assert listed.exit_code == 1 and "Traceback" not in listed.output
    assert "lost" in listed.output and "cannot be decrypted with ATTEST_ENCRYPTION_KEYS" in listed.output


def _dev_settings(url: str, instance: Path):
    return load_settings(environ={"ATTEST_ENV": "development", "ATTEST_DATABASE_URL": url,
                                  "ATTEST_INSTANCE_PATH": str(instance), "ATTEST_LOG_LEVEL": "INFO"})


def test_development_makes_a_key_only_when_none_exists_and_says_so(fresh_db, tmp_path, caplog):
    from attest.app import create_app

    instance = tmp_path / "dev-instance"
    settings = _dev_settings(fresh_db.url, instance)
    assert not (instance / "encryption_key").exists()  # settings alone write nothing
    with caplog.at_level(logging.WARNING, logger="attest.keys"):
        app = create_app(settings)
    key_file = instance / "encryption_key"
    assert key_file.read_text() == app.extensions["attest"].settings.encryption_keys[0]
    assert any("created" in r.getMessage() and str(key_file) in r.getMessage() for r in caplog.records)
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    # the next start reads the file and makes nothing new
    again = _dev_settings(fresh_db.url, instance)
    assert again.encryption_keys == (key_file.read_text(),) and not again.pending_key_file


def test_development_refuses_a_new_key_when_secrets_exist_but_the_key_file_is_gone(secret_kind, fresh_db,
                                                                                   tmp_path):
    from attest.app import create_app

    instance = tmp_path / "dev-instance"
    needed = _store_source(fresh_db)
    with pytest.raises(KeyCheckError) as refused:
        create_app(_dev_settings(fresh_db.url, instance))
    message = str(refused.value)
    assert "encryption_key" in message and "ATTEST_ENCRYPTION_KEYS" in message and fingerprint(needed) in message
    assert not (instance / "encryption_key").exists()  # no new key was made
    # restoring the file is the fix
    (instance / "encryption_key").write_text(needed)
    create_app(_dev_settings(fresh_db.url, instance))


def test_a_key_lost_for_good_forget_secrets_lets_a_new_key_start(secret_kind, fresh_db, tmp_path):
    from attest.trail.models import AuditEvent

    _store_source(fresh_db)
    new = Fernet.generate_key().decode()
    assert _cli(fresh_db, ["sources", "list"], new, tmp_path).exit_code == 2
    unconfirmed = _cli(fresh_db, ["sources", "forget-secrets"], new, tmp_path)
    assert unconfirmed.exit_code == 1 and "--yes" in unconfirmed.output
    forgot = _cli(fresh_db, ["sources", "forget-secrets", "--yes"], new, tmp_path)
    assert forgot.exit_code == 0 and "hr" in forgot.output, forgot.output
    listed = _cli(fresh_db, ["sources", "list"], new, tmp_path)
    assert listed.exit_code == 0 and "secrets=-" in listed.output
    with fresh_db.factory() as session:
        assert session.scalar(select(KeyCheck)) is None
        assert session.scalar(select(AuditEvent.action).where(AuditEvent.action == "source.secrets_forgotten"))
