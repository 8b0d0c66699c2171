"""The signing key and the manifest's signature: the instance's Ed25519 key (ATTEST_SIGNING_KEY), its
public half and fingerprints, and the signed manifest bytes (canonical JSON with the signature member
appended last, so removing it gives the signed bytes back).
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from attest.config import Settings
from attest.db import canonical_json


class EvidenceError(ValueError):
    """The bundle cannot be built (unknown campaign, no signing key); nothing was written."""


def load_signing_key(settings: Settings) -> Ed25519PrivateKey:
    raw = (settings.signing_key or "").strip()
    if not raw:
        raise EvidenceError("ATTEST_SIGNING_KEY is not set: evidence bundles are signed with an Ed25519 key "
                            "(PEM, or base64 of the raw 32 bytes)")
    try:
        if raw.startswith("-----BEGIN"):
            key = serialization.load_pem_private_key(raw.encode(), password=None)
        else:
            data = base64.b64decode(raw, validate=True)
            if len(data) != 32:
                raise ValueError(f"{len(data)} bytes, not 32")
            key = Ed25519PrivateKey.from_private_bytes(data)
    except Exception as exc:
        raise EvidenceError(f"ATTEST_SIGNING_KEY is not a usable Ed25519 private key ({type(exc).__name__})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise EvidenceError("ATTEST_SIGNING_KEY must be an Ed25519 key")
    return key


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


def _signed_manifest(manifest: dict[str, Any], key: Ed25519PrivateKey) -> bytes:
    body = canonical_json(manifest).encode()
    pub = key.public_key()
    signature = {
        "algorithm": "Ed25519",
        "key_id": key_id(pub),
        "public_key": base64.b64encode(public_key_raw(pub)).decode(),
        "signed": "the canonical JSON of this manifest without its signature member (UTF-8, keys sorted, "
                  "no whitespace), which is manifest.json with this last member removed",
        "value": base64.b64encode(key.sign(body)).decode(),
    }
    return body[:-1] + b',"signature":' + canonical_json(signature).encode() + b"}"
