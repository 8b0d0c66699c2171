"""The signing key and the manifest's signature: the instance's Ed25519 key (ATTEST_SIGNING_KEY) and the
signed manifest bytes (canonical JSON with the signature member appended last, so removing it gives the
signed bytes back). How a public key is named (fingerprint, key id, PEM) is the kernel's attest/signing.py,
which the audit checkpoints share.
"""

from __future__ import annotations

import base64
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from attest.config import Settings
from attest.db import canonical_json
from attest.signing import key_id, public_key_raw


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
