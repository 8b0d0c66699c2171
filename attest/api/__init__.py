"""/api/v1: Attest's REST API (spectree + pydantic, OpenAPI 3.1 at /api/v1/openapi.json, docs at /api/v1/docs).

Token authentication only (attest/auth/tokens.py), no cookies, no CSRF; every call audited; see
attest/api/core.py for the machinery and docs/api.md for the user's guide.
"""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    # local: the route modules import attest.api.core, a module of this package; importing them when an app
    # is built (not when the package is) keeps `import attest.api.core` (tokens, tests) free of every route
    from attest.api import (  # noqa: F401 - they register routes
        audit,
        campaigns,
        definitions,
        docs,
        entitlements,
        remediations,
        reviews,
        sources,
    )
    from attest.api.core import bp
    from attest.extensions import csrf

    csrf.exempt(bp)
    app.register_blueprint(bp)
