"""The demo's mock IdP: served like `attest sandbox serve` does, and `.env` written by `attest demo`."""

from __future__ import annotations

import httpx
from dotenv import dotenv_values

from attest.config import load_settings
from attest.connectors.sandbox import SERVICES
from attest.connectors.sandbox import idp as demo_idp
from attest.connectors.sandbox.server import serve_in_thread


def test_demo_idp_is_registered_and_serves_discovery_and_its_people():
    assert SERVICES["idp"] == ("attest.connectors.sandbox.idp:create_app", 5104)
    with serve_in_thread(demo_idp.create_app(demo=True)) as server:
        meta = httpx.get(f"{server.url}/.well-known/openid-configuration", timeout=10).json()
        assert meta["issuer"] == server.url and meta["jwks_uri"] == f"{server.url}/jwks"
        form = httpx.get(meta["authorization_endpoint"], timeout=10, params={
            "response_type": "code", "client_id": demo_idp.CLIENT_ID, "scope": "openid email",
            "redirect_uri": "http://127.0.0.1:5000/login/oidc/callback", "state": "s", "nonce": "n"})
        assert form.status_code == 200
        page = form.text
        assert "Your work e-mail" in page and "cdn." not in page  # works offline
        assert "Demo Admin (admin@demo.example)" in page and "ada.lovelace0@acme.example" in page
        # an error shows the mock's plain page, never Werkzeug's interactive debugger
        broken = httpx.get(meta["authorization_endpoint"], timeout=10, params={"client_id": "x"})
        assert broken.status_code == 400 and "Werkzeug Debugger" not in broken.text


def test_demo_writes_sso_settings_to_dotenv_once(tmp_path):
    env = tmp_path / ".env"
    env.write_text("ATTEST_LOG_LEVEL=DEBUG")
    assert demo_idp.write_demo_env(env, environ={}) is True
    values = dotenv_values(env)
    assert values["ATTEST_LOG_LEVEL"] == "DEBUG"
    assert values["ATTEST_OIDC_DISCOVERY_URL"] == "http://127.0.0.1:5104/.well-known/openid-configuration"
    assert values["ATTEST_OIDC_PROVIDER_NAME"] == "Demo IdP" and len(values["ATTEST_OIDC_CLIENT_SECRET"]) > 20
    assert oct(env.stat().st_mode)[-3:] == "600"
    before = env.read_text()
    assert demo_idp.write_demo_env(env, environ={}) is False and env.read_text() == before
    # the written values are valid settings
    settings = load_settings(environ={"ATTEST_ENV": "development", "ATTEST_DATABASE_URL": "sqlite://",
                                      "ATTEST_SECRET_KEY": "k" * 40, "ATTEST_INSTANCE_PATH": str(tmp_path / "i"),
                                      **{k: v for k, v in values.items() if k.startswith("ATTEST_OIDC")}})
    assert settings.oidc_enabled and settings.oidc_admin_groups == ("attest-admins",)


def test_demo_leaves_a_configured_idp_alone(tmp_path):
    env = tmp_path / ".env"
    assert demo_idp.write_demo_env(env, environ={"ATTEST_OIDC_DISCOVERY_URL": "https://acme.okta.com/x"}) is False
    assert not env.exists()
    env.write_text("ATTEST_OIDC_CLIENT_ID=real-app\n")
    assert demo_idp.write_demo_env(env, environ={}) is False
    assert env.read_text() == "ATTEST_OIDC_CLIENT_ID=real-app\n"


def _id_token(server, sub: str, nonce: str) -> str:
    """The authorization code flow at the served demo IdP, as Attest runs it: the ID token for `sub`."""
    redirect = "http://127.0.0.1:5000/login/oidc/callback"
    params = {"response_type": "code", "client_id": demo_idp.CLIENT_ID, "scope": "openid email",
              "redirect_uri": redirect, "state": "s", "nonce": nonce}
    answer = httpx.post(f"{server.url}/oauth2/authorize", params=params, data={"sub": sub}, timeout=10)
    assert answer.status_code == 302 and answer.headers["location"].startswith(redirect)
    code = dict(httpx.URL(answer.headers["location"]).params)["code"]
    token = httpx.post(f"{server.url}/oauth2/token", timeout=10, data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": redirect,
        "client_id": demo_idp.CLIENT_ID, "client_secret": "any"})
    assert token.status_code == 200, token.text
    return token.json()["id_token"]


def test_demo_idp_signs_each_id_token_with_its_published_key_loaded_once(monkeypatch):
    """50 sign-ins at once queued at the token endpoint while the mock re-imported its private key for every
    ID token (~30 ms of CPU each): now it is imported once per key, and every token still verifies against /jwks."""
    from joserfc import jwt
    from joserfc.jwk import KeySet, RSAKey

    private_imports = []
    real_import = RSAKey.import_key.__func__

    def counting_import(cls, value, *args, **kwargs):
        if isinstance(value, dict) and "d" in value:
            private_imports.append(value["n"][:12])
        return real_import(cls, value, *args, **kwargs)

    monkeypatch.setattr(RSAKey, "import_key", classmethod(counting_import))
    with serve_in_thread(demo_idp.create_app(demo=True)) as server:
        keys = KeySet.import_key_set(httpx.get(f"{server.url}/jwks", timeout=10).json())
        for n, sub in enumerate(("admin@demo.example", "ada.lovelace0@acme.example", "admin@demo.example")):
            token = jwt.decode(_id_token(server, sub, f"nonce-{n}"), keys)
            assert token.header["alg"] == "RS256"
            assert token.claims["sub"] == sub and token.claims["nonce"] == f"nonce-{n}"
            assert token.claims["aud"] in (demo_idp.CLIENT_ID, [demo_idp.CLIENT_ID]) and token.claims["iss"] == server.url
    assert len(private_imports) == 1  # the first token's; the second and third reused it
