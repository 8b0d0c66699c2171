"""The demo's identity provider: oidc-provider-mock, a real OpenID Connect provider, on loopback.

`attest sandbox serve` (started by `make run`) serves it on http://127.0.0.1:5104, and `attest demo`
writes the OIDC settings that point Attest at it into `.env` (see `write_demo_env`). On its sign-in
page a person types any e-mail address (or clicks one of the demo people): the IdP signs them in with
that address as a verified e-mail, and Attest links them to the person with that e-mail in the demo
directory. `admin@demo.example` is in the `attest-admins` group and `auditor@demo.example` in
`attest-auditors`, so they get those roles in Attest through the groups claim; the CEO and two
managers of the demo directory are offered with one click.

This is a test double for the demo and the tests only: it signs in whoever types an address, without
a password. Never point a real deployment at it.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from attest.connectors.sandbox.okta_fake import create_app as okta_org

PORT = 5104
CLIENT_ID = "attest-demo"
ADMIN_GROUP = "attest-admins"
AUDITOR_GROUP = "attest-auditors"
PROVIDER_NAME = "Demo IdP"

_BASE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Demo IdP</title>
<style>
 body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;background:#f3f4f6;margin:0;color:#111827}
 main{max-width:34rem;margin:3rem auto;background:#fff;border-radius:.5rem;padding:2rem;box-shadow:0 1px 3px #0002}
 h1{font-size:1.4rem;margin-top:0} h2{font-size:1rem;margin-top:1.5rem}
 input{width:100%;box-sizing:border-box;padding:.6rem;font-size:1rem;border:1px solid #9ca3af;border-radius:.35rem}
 button{padding:.55rem 1rem;font-size:.95rem;border-radius:.35rem;border:1px solid #1d4ed8;background:#1d4ed8;color:#fff;cursor:pointer;margin:.25rem .25rem .25rem 0}
 button.secondary{background:#fff;color:#1d4ed8} button.deny{background:#fff;color:#b91c1c;border-color:#b91c1c}
 .muted{color:#6b7280;font-size:.85rem} .warn{background:#fef3c7;padding:.5rem .75rem;border-radius:.35rem;font-size:.85rem}
</style></head>
<body><main>{% block content %}{{ content }}{% endblock %}</main></body></html>
"""

_FORM = """{% extends "_base.html" %}
{% block content %}
<h1>Demo IdP: sign in</h1>
<p class="warn">A test identity provider for the Attest demo: it signs in any e-mail address, without a password.</p>
<form method="post" id="signin">
  <label for="sub">Your work e-mail</label>
  <input type="text" id="sub" name="sub" placeholder="name@acme.example" required autofocus
         {% if sub_missing %}aria-invalid="true"{% endif %}>
  {% if sub_missing %}<small>Type an e-mail address.</small>{% endif %}
  <p><button type="submit">Sign in</button></p>
</form>
{% if predefined_users %}
<h2>Demo people</h2>
<form method="post" aria-label="Demo people">
{% for sub in predefined_users %}
  <button class="secondary" type="submit" name="sub" value="{{ sub }}">{{ demo_labels.get(sub, sub) }}</button>
{% endfor %}
</form>
{% endif %}
{% if recent_subjects %}
<h2>Recently signed in</h2>
<form method="post" aria-label="Recently signed in">
{% for sub in recent_subjects %}<button class="secondary" type="submit" name="sub" value="{{ sub }}">{{ sub }}</button>{% endfor %}
</form>
{% endif %}
<form method="post"><button class="deny" type="submit" name="action" value="deny">Cancel sign-in</button></form>
<p class="muted">Application: <code>{{ client_id }}</code>. You will return to {{ redirect_uri }}.</p>
{% endblock %}
"""


def _directory_people(n: int) -> list[tuple[str, str, str]]:
    """(e-mail, first, last) of the first people of the demo directory (the sandbox Okta's org): the CEO
    and direct reports who manage teams. Empty if that org cannot be built (the form still works)."""
    try:

        org = okta_org(demo=True)
        profiles = [org.users[uid]["profile"] for uid in org.user_ids[:n]]
        return [(p["email"], p["firstName"], p["lastName"]) for p in profiles]
    except Exception:  # the demo IdP must come up even if the fake directory changes shape
        return []


def demo_people(domain: str = "demo.example", managers: int = 3) -> list[tuple[str, dict[str, Any]]]:
    """(subject, claims) of the people offered with one click: the demo admin and auditor, and the
    first people of the demo directory. The subject is the e-mail, so typing it on the form is the same."""
    people: list[tuple[str, dict[str, Any]]] = [
        (f"admin@{domain}", {"email": f"admin@{domain}", "email_verified": True, "name": "Demo Admin",
                             "groups": [ADMIN_GROUP, "it"]}),
        (f"auditor@{domain}", {"email": f"auditor@{domain}", "email_verified": True, "name": "Demo Auditor",
                               "groups": [AUDITOR_GROUP]}),
    ]
    for email, first, last in _directory_people(managers):
        people.append((email, {"email": email, "email_verified": True, "name": f"{first} {last}",
                               "given_name": first, "family_name": last, "groups": ["employees"]}))
    return people


def _signing_key_loaded_once() -> None:
    """Sign ID tokens with the provider's key loaded once, as a real IdP does.

    oidc-provider-mock hands Authlib its private key as a JWK dict for every ID token
    (`OpenIDCode.get_jwt_config`), and Authlib imports it again each time (`import_any_key`): RSA private key
    validation, about 30 ms of CPU per token under the sandbox process's one GIL, so 50 sign-ins at once
    queued behind each other at the token endpoint (about 400 ms a token request). The key, the algorithm, the
    header (no kid, as before) and the claims are the mock's; only the import is kept, per key object
    (each served app has its own storage and key)."""
    from authlib import _joserfc_helpers
    from flask import g
    from oidc_provider_mock import _app as mock

    if getattr(mock.OpenIDCode, "_attest_key_cache", False):
        return
    loaded: dict[int, tuple[Any, Any]] = {}  # id(storage.jwk) -> (that jwk, the imported key)
    as_configured = mock.OpenIDCode.resolve_client_private_key  # the JWK dict of get_jwt_config

    def resolve_client_private_key(self: Any, client: Any) -> Any:
        jwk = g.oidc_provider_mock_storage.jwk
        found = loaded.get(id(jwk))
        if found is None or found[0] is not jwk:
            found = loaded[id(jwk)] = (jwk, _joserfc_helpers.import_any_key(as_configured(self, client)))
        return found[1]

    mock.OpenIDCode.resolve_client_private_key = resolve_client_private_key
    mock.OpenIDCode._attest_key_cache = True


def create_app(demo: bool = False, require_nonce: bool = True, **options: Any) -> Any:
    """The oidc-provider-mock WSGI app with a self-contained sign-in page (no CDN) and, for the demo,
    the demo people. `options` go to `oidc_provider_mock.app` (e.g. `user_claims`)."""
    import oidc_provider_mock
    from jinja2 import ChoiceLoader, DictLoader
    from werkzeug.debug import DebuggedApplication

    _signing_key_loaded_once()
    people = demo_people() if demo else []
    if people and "user_claims" not in options:
        options["user_claims"] = [oidc_provider_mock.User(sub=sub, claims=claims) for sub, claims in people]
    app = oidc_provider_mock.app(require_nonce=require_nonce, **options)
    # the mock turns on Flask debug mode and Werkzeug's debugger; a served IdP shows neither
    app.debug = False
    if isinstance(app.wsgi_app, DebuggedApplication):
        app.wsgi_app = app.wsgi_app.app
    app.jinja_loader = ChoiceLoader([DictLoader({"_base.html": _BASE, "authorization_form.html": _FORM}),
                                     app.jinja_loader])

    @app.before_request
    def typed_addresses_are_verified() -> None:
        """Like Okta or Google, the demo IdP vouches for the address it signs a person in with
        (`email_verified: true`); the mock alone issues only `{"email": sub}` for a typed address, which
        Attest links to nobody (attest/auth/oidc.py). Runs after the mock's hook that sets its storage."""
        from flask import g, request

        if request.method == "POST" and request.path == "/oauth2/authorize":
            sub = request.form.get("sub")
            storage = g.get("oidc_provider_mock_storage")
            if sub and "@" in sub and storage is not None and storage.get_user(sub) is None:
                storage.store_user(oidc_provider_mock.User(sub=sub, claims={"email": sub, "email_verified": True}))

    labels = {sub: f"{claims.get('name')} ({sub})" for sub, claims in people}
    app.context_processor(lambda: {"demo_labels": labels})
    return app


# --- the demo's settings ----------------------------------------------------------------------------

OIDC_VARIABLES = ("ATTEST_OIDC_DISCOVERY_URL", "ATTEST_OIDC_CLIENT_ID", "ATTEST_OIDC_CLIENT_SECRET",
                  "ATTEST_OIDC_PROVIDER_NAME", "ATTEST_OIDC_ADMIN_GROUPS", "ATTEST_OIDC_AUDITOR_GROUPS")


def demo_env(port: int = PORT) -> dict[str, str]:
    return {
        "ATTEST_OIDC_DISCOVERY_URL": f"http://127.0.0.1:{port}/.well-known/openid-configuration",
        "ATTEST_OIDC_CLIENT_ID": CLIENT_ID,
        "ATTEST_OIDC_CLIENT_SECRET": secrets.token_urlsafe(24),
        "ATTEST_OIDC_PROVIDER_NAME": PROVIDER_NAME,
        "ATTEST_OIDC_ADMIN_GROUPS": ADMIN_GROUP,
        "ATTEST_OIDC_AUDITOR_GROUPS": AUDITOR_GROUP,
    }


def _dotenv_keys(path: Path) -> set[str]:
    if not path.exists():
        return set()
    keys = set()
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            keys.add(line.removeprefix("export ").split("=", 1)[0].strip())
    return keys


def write_demo_env(path: Path | None = None, environ: Mapping[str, str] | None = None,
                   port: int = PORT) -> bool:
    """Point Attest at the demo IdP through `.env` (read at start-up in development), unless single
    sign-on is already configured in the environment or in that file. Returns whether it wrote."""
    path = path or Path.cwd() / ".env"
    environ = os.environ if environ is None else environ
    configured = _dotenv_keys(path) | {k for k in OIDC_VARIABLES if environ.get(k)}
    if "ATTEST_OIDC_DISCOVERY_URL" in configured or "ATTEST_OIDC_CLIENT_ID" in configured:
        return False
    lines = ["# Single sign-on through the demo's mock IdP (`attest sandbox serve`), written by `attest demo`.",
             "# Remove these lines, or set your own ATTEST_OIDC_* values, to use a real IdP."]
    lines += [f'{key}="{value}"' for key, value in demo_env(port).items() if key not in configured]
    existing = path.read_text() if path.exists() else ""
    if existing.strip():
        existing = existing.rstrip("\n") + "\n\n"
    path.write_text(existing + "\n".join(lines) + "\n")
    path.chmod(0o600)
    return True
