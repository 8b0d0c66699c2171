"""Ed25519 public keys as Attest names them: raw bytes, PEM, the fingerprint and the short key id, and
loading a pinned public key (PEM or base64 raw bytes, what `attest evidence public-key` prints).

A kernel module because two parts of the audit layer name keys the same way and must not import each
other for it: the evidence bundle (attest/audit/evidence/: the manifest's signature, verification against a
pinned key) and the audit chain's checkpoints (attest/audit/checkpoints.py). The private signing key and
its configuration stay with the evidence (attest/audit/evidence/signing.py).
"""

from __future__ import annotations

import base64
import hashlib

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


def public_key_raw(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_key_pem(key: Ed25519PublicKey) -> str:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def key_id(key: Ed25519PublicKey) -> str:
    """A short fingerprint of the public key: the first 16 hex digits of SHA-256 over its raw bytes."""
    return key_fingerprint(key)[:16]


def key_fingerprint(key: Ed25519PublicKey) -> str:
    """The full fingerprint of the public key: SHA-256 over its raw 32 bytes, 64 hex digits."""
    return hashlib.sha256(public_key_raw(key)).hexdigest()


def load_public_key(text_or_bytes: str | bytes) -> Ed25519PublicKey:
    """A public key given as PEM or base64 raw bytes (what `attest evidence public-key` prints)."""
    data = text_or_bytes.encode() if isinstance(text_or_bytes, str) else text_or_bytes
    data = data.strip()
    if data.startswith(b"-----BEGIN"):
        key = serialization.load_pem_public_key(data)
    else:
        key = Ed25519PublicKey.from_public_bytes(base64.b64decode(data, validate=True))
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("not an Ed25519 public key")
    return key
