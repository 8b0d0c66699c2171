"""The OpenAPI document and the interactive docs page (spectree's Swagger UI page).

spectree 3.0 renders its pages from a CDN (unpkg) unless the `offapi` package is installed; Attest does not
ship offapi, so this one page gets a Content-Security-Policy of its own that allows exactly that CDN (and
its one inline script, by nonce); every other page keeps the app's `'self'`-only policy.
"""

from __future__ import annotations

import secrets

from flask import Response, current_app

from attest.api.core import bp, spec

CDN = "https://unpkg.com"


@bp.get("/openapi.json")
def openapi():
    """The OpenAPI 3.1 document, generated from the routes and their pydantic models."""
    return current_app.json.response(spec.spec)


@bp.get("/docs")
def docs():
    nonce = secrets.token_urlsafe(16)
    page = spec.config.page_templates["swagger"].format(
        spec_url="/api/v1/openapi.json", spec_path="api/v1/docs", **spec.config.swagger_oauth2_config())
    page = page.replace("<script>", f'<script nonce="{nonce}">')
    response = Response(page, mimetype="text/html")
    response.headers["Content-Security-Policy"] = (
        f"default-src 'none'; script-src 'nonce-{nonce}' {CDN}; style-src {CDN} 'unsafe-inline'; "
        f"img-src 'self' data: {CDN}; connect-src 'self'; font-src {CDN}; frame-ancestors 'none'; "
        "base-uri 'none'; form-action 'none'; object-src 'none'")
    return response
