"""Encryption keys of the stored secrets, and the key check value that proves which key they need.

Source secrets are encrypted with ATTEST_ENCRYPTION_KEYS (MultiFernet: the first key encrypts, every key
decrypts). Beside them the `key_check` table holds one known plaintext encrypted with the key that
encrypted the secrets, and that key's fingerprint. At start-up (create_app, the CLI commands that touch
secrets, `attest scheduler`) `check()` decrypts it: a key list that cannot is refused with one message
naming ATTEST_ENCRYPTION_KEYS, the fingerprints tried and the fingerprint needed, instead of a 500 on
the first page that decrypts. `attest sources rotate-keys` re-encrypts the check value with the secrets.

A fingerprint is the first 12 hex digits of SHA-256 over the key: enough to tell keys apart, useless
for recovering one.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy import String, Text, inspect, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from attest.config import Settings
from attest.db import Base, UTCDateTime, begin_write, utcnow
from attest.entitlements.models import Source

log = logging.getLogger("attest.keys")

CHECK_NAME = "source_secrets"
CHECK_PLAINTEXT = b"attest key check value v1"
ENV_VAR = "ATTEST_ENCRYPTION_KEYS"


class KeyCheck(Base):
    """A known plaintext encrypted with the key the stored secrets need."""

    __tablename__ = "key_check"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(40), unique=True)
    token: Mapped[str] = mapped_column(Text)
    key_fingerprint: Mapped[str] = mapped_column(String(16))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class KeyCheckError(RuntimeError):
    """The configured keys cannot decrypt what is stored; the message says what to do."""


def fingerprint(key: str) -> str:
    return hashlib.sha256(key.strip().encode()).hexdigest()[:12]


def fernet(settings: Settings) -> MultiFernet:
    return MultiFernet([Fernet(k.encode()) for k in settings.encryption_keys])


def tried(settings: Settings) -> str:
    prints = [fingerprint(k) for k in settings.encryption_keys]
    return f"tried {len(prints)} key{'s' if len(prints) != 1 else ''} (fingerprints {', '.join(prints)})"


def wrong_key_message(settings: Settings, needed: str | None) -> str:
    need = (f"the stored secrets need the key with fingerprint {needed}" if needed
            else "the stored secrets were encrypted with another key")
    return (
        f"{ENV_VAR} cannot decrypt the stored secrets: {tried(settings)}; {need}. Put that key back into "
        f"{ENV_VAR} (comma-separated, newest first; older keys may follow) and start again. Nothing was "
        "changed. See docs/operations.md, 'Encryption keys'."
    )


@dataclass
class Stored:
    """What the database holds that needs a key."""

    schema: bool  # the tables exist (a database not yet migrated holds nothing)
    check: KeyCheck | None
    secret_blob: str | None  # one source's encrypted secrets, if any

    @property
    def anything(self) -> bool:
        return self.check is not None or self.secret_blob is not None


def stored(session: Session) -> Stored:

    tables = set(inspect(session.connection()).get_table_names())
    if "source" not in tables:
        return Stored(False, None, None)
    check = session.scalar(select(KeyCheck).where(KeyCheck.name == CHECK_NAME)) if "key_check" in tables else None
    blob = session.scalar(select(Source.secrets_encrypted).where(Source.secrets_encrypted.is_not(None)).limit(1))
    return Stored(True, check, blob)


def _decrypts(settings: Settings, token: str) -> bytes | None:
    try:
        return fernet(settings).decrypt(token.encode())
    except (InvalidToken, ValueError, TypeError):
        return None


def verify(session: Session, settings: Settings, *, write: bool = True) -> str:
    """Raise KeyCheckError unless the configured keys decrypt what is stored; returns what was checked.

    A database with secrets but no check value yet (stored before the check existed) is checked on one
    source's secrets and then gets its check value (`write`), in the caller's transaction.
    """
    state = stored(session)
    if state.check is not None:
        if _decrypts(settings, state.check.token) != CHECK_PLAINTEXT:
            raise KeyCheckError(wrong_key_message(settings, state.check.key_fingerprint))
        primary = fingerprint(settings.encryption_keys[0])
        if state.check.key_fingerprint != primary:
            log.warning("stored secrets are encrypted with an older key (fingerprint %s), not the first of %s "
                        "(%s): run `attest sources rotate-keys`", state.check.key_fingerprint, ENV_VAR, primary)
        return "check value"
    if state.secret_blob is not None:
        if _decrypts(settings, state.secret_blob) is None:
            raise KeyCheckError(wrong_key_message(settings, None))
        if write:
            write_check(session, settings)
        return "stored secrets"
    return "nothing stored"


def check(factory, settings: Settings) -> str:
    """verify() in a read transaction of its own; a first check value is written in a second one."""
    with factory() as session:
        what = verify(session, settings, write=False)
    if what == "stored secrets":
        with factory() as session, begin_write(session):
            what = verify(session, settings)
    return what


def write_check(session: Session, settings: Settings) -> KeyCheck:
    """Make the check value with the first key (a new one, or re-encrypted: rotation), in the caller's transaction."""
    primary = settings.encryption_keys[0]
    row = session.scalar(select(KeyCheck).where(KeyCheck.name == CHECK_NAME))
    if row is None:
        row = KeyCheck(name=CHECK_NAME)
        session.add(row)
    row.token = Fernet(primary.encode()).encrypt(CHECK_PLAINTEXT).decode()
    row.key_fingerprint = fingerprint(primary)
    row.updated_at = utcnow()
    session.flush()
    return row


def forget_check(session: Session) -> None:
    """With every stored secret dropped (sources.forget_secrets): the next secret makes a new check value."""
    row = session.scalar(select(KeyCheck).where(KeyCheck.name == CHECK_NAME))
    if row is not None:
        session.delete(row)
        session.flush()


def ensure_check(session: Session, settings: Settings) -> None:
    """Before secrets are stored: a check value exists (made now with the first key if none does)."""
    if session.scalar(select(KeyCheck.id).where(KeyCheck.name == CHECK_NAME)) is None:
        write_check(session, settings)


def start_up(factory, settings: Settings, *, verify_keys: bool = True) -> Settings:
    """At start: write a development key made by load_settings only if nothing stored needs another, then
    check the keys. Returns the settings to use (another process may have written the key file first)."""
    if settings.pending_key_file:
        settings = _persist_dev_key(factory, settings)
    if verify_keys:
        check(factory, settings)
    return settings


def _persist_dev_key(factory, settings: Settings) -> Settings:
    path = Path(settings.pending_key_file)
    with factory() as session:
        state = stored(session)
    if state.anything:
        needed = state.check.key_fingerprint if state.check is not None else None
        raise KeyCheckError(
            f"development: the key file {path} is missing and {ENV_VAR} is not set, but the database "
            "holds secrets encrypted with "
            + (f"the key with fingerprint {needed}" if needed else "a key")
            + f". Attest makes a new key only when none exists anywhere: restore {path} or set {ENV_VAR} "
            "to that key. Nothing was changed."
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process (the scheduler, the web server) made it first: use theirs
        key = path.read_text().strip()
        return settings.replace(encryption_keys=(key,), pending_key_file="")
    with os.fdopen(fd, "w") as fh:
        fh.write(settings.encryption_keys[0])
    log.warning("development: no encryption key existed (no %s, no key file, no stored secrets): created %s "
                "(fingerprint %s); keep it, the secrets stored from now on need it",
                ENV_VAR, path, fingerprint(settings.encryption_keys[0]))
    return settings.replace(pending_key_file="")
