"""The private keys connectors sign client assertions with: a GitHub App's JWT and Okta's private_key_jwt.

One reading of the PEM for both, so a key that cannot sign is refused with a clear message when the source
is saved (`check_config`), not at its first sync, and the signing code uses the algorithm chosen here.

- GitHub: "Your JWT must be signed using the RS256 algorithm" (docs.github.com, "Generating a JSON Web
  Token (JWT) for a GitHub App"); an App's private keys are RSA.
- Okta's private_key_jwt: RS256 for an RSA key (as okta-sdk-python does, okta/jwt.py `HASH_ALGORITHM =
  "RS256"`), ES256 for an EC P-256 key ("Okta supports both RSA and Elliptic Curve (EC) keys", developer.okta.com/docs/
  guides/implement-oauth-for-okta-serviceapp/create-publicprivate-keypair).
"""

from __future__ import annotations

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key

KEY_KINDS = {"RS256": "an RSA key", "ES256": "an EC P-256 key"}


def signing_algorithm(pem: str, secret: str, allowed: tuple[str, ...]) -> str:
    """The JWS algorithm `pem` signs with (one of `allowed`); ValueError naming `secret` when it is not an
    unencrypted PEM private key or is a kind of key the upstream does not take."""
    try:
        key = load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ValueError(f"secret {secret} must be an unencrypted PEM private key "
                         "(-----BEGIN PRIVATE KEY-----...)") from None
    if isinstance(key, rsa.RSAPrivateKey):
        algorithm, kind = "RS256", f"an RSA key of {key.key_size} bits"
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        algorithm = "ES256" if isinstance(key.curve, ec.SECP256R1) else None
        kind = f"an EC key on {key.curve.name}"
    else:
        algorithm, kind = None, f"a key of type {type(key).__name__.replace('PrivateKey', '')}"
    if algorithm not in allowed:
        wanted = " or ".join(KEY_KINDS[a] for a in allowed)
        raise ValueError(f"secret {secret} must be {wanted}; this is {kind}")
    return algorithm
