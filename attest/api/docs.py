"""The OpenAPI document and the interactive docs page (spectree's own Swagger UI page).

With spectree's `offline` extra (offapi, a declared dependency) the page carries Swagger UI inline and
loads nothing from a CDN. Its inline <script> and <style> blocks get a per-response nonce, and this one
page gets a Content-Security-Policy of its own that allows exactly those blocks; every other page keeps
the app's `'self'`-only policy. (Without offapi spectree falls back to unpkg.com: the policy then names
that CDN too, and nothing else.)
"""

from __future__ import annotations

import functools
import secrets

from flask import Response, current_app

from attest.api.audit import DOWNLOAD_OPERATION, DOWNLOAD_PATH
from attest.api.core import bp, spec
from attest.reviews.definition_schema import CampaignDefinitionSpec

CDN = "https://unpkg.com"
# the one <style> element Swagger UI (offapi 0.1.4) creates at run time, allowed by its hash (Chromium names
# it in the CSP error when it changes with a new Swagger UI: the page still works, unstyled in one spot)
SWAGGER_RUNTIME_STYLE = "'sha256-RL3ie0nH+Lzz2YNqQN83mnU0J1ot4QL7b99vMdIX99w='"
# the document's sections in the order a reader meets them (spectree lists tags in the order the modules
# registered their routes); a tag not named here comes last
TAG_ORDER = ("audit", "identities", "entitlements", "campaign definitions", "campaigns", "review items",
             "remediations", "sources")


@bp.get("/openapi.json")
def openapi():
    """The OpenAPI 3.1 document, generated from the routes and their pydantic models."""
    return current_app.json.response(document())


def document() -> dict:
    """spectree's document plus the one operation it does not wrap (the streamed bundle download)."""
    doc = dict(spec.spec)
    doc["paths"] = {**doc["paths"], DOWNLOAD_PATH: DOWNLOAD_OPERATION}
    doc["tags"] = sorted(doc.get("tags", []), key=lambda t: (TAG_ORDER + (t["name"],)).index(t["name"]))
    schemas = dict(doc["components"]["schemas"])
    for name, schema in definition_components().items():
        if schemas.setdefault(name, schema) != schema:  # pragma: no cover - caught by tests/api
            raise RuntimeError(f"two OpenAPI components named {name}")
    doc["components"] = {**doc["components"], "schemas": schemas}
    return _resolve_marks(doc)


def _resolve_marks(value):
    """`{"x-attest-schema": NAME}` (attest/api/definitions.py's marker) -> `{"$ref": "#/components/schemas/NAME"}`."""
    if isinstance(value, dict):
        if "x-attest-schema" in value:
            rest = {k: v for k, v in value.items() if k != "x-attest-schema"}
            return {"$ref": f"#/components/schemas/{value['x-attest-schema']}", **rest}
        return {k: _resolve_marks(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve_marks(v) for v in value]
    return value


@functools.cache
def definition_components() -> dict[str, dict]:
    """CampaignDefinitionSpec (attest/reviews/definition_schema.py: the one description of a definition,
    shared with the YAML definitions) and its sections, as OpenAPI components."""
    schema = CampaignDefinitionSpec.model_json_schema(ref_template="#/components/schemas/{model}")
    nested = schema.pop("$defs", {})
    return {"CampaignDefinitionSpec": schema, **nested}


@functools.cache
def _page_template() -> str:
    """spectree's Swagger UI page for this API (about 2 MB with Swagger UI inline): rendered once."""
    return spec.config.page_templates["swagger"].format(
        spec_url="/api/v1/openapi.json", spec_path="api/v1/docs", **spec.config.swagger_oauth2_config())


def docs_page(nonce: str) -> str:
    return _with_nonce(_with_nonce(_page_template(), "script", nonce), "style", nonce)


def _with_nonce(page: str, tag: str, nonce: str) -> str:
    """A nonce on each inline <tag> block's opening tag. The inlined Swagger UI bundle itself contains the
    text "<script>" in its strings, but never "</script>" (a browser would end the block there): so each
    block's opening tag is the first "<tag>" after the previous block's end."""
    blocks = page.split(f"</{tag}>")
    return f"</{tag}>".join([b.replace(f"<{tag}>", f'<{tag} nonce="{nonce}">', 1) for b in blocks[:-1]] + blocks[-1:])


@bp.get("/docs")
def docs():
    nonce = secrets.token_urlsafe(16)
    page = docs_page(nonce)
    cdn = f" {CDN}" if CDN in page else ""
    response = Response(page, mimetype="text/html")
    response.headers["Content-Security-Policy"] = (
        f"default-src 'none'; script-src 'nonce-{nonce}'{cdn}; style-src 'self' 'nonce-{nonce}' {SWAGGER_RUNTIME_STYLE}{cdn}; "
        f"img-src 'self' data:{cdn}; connect-src 'self'; font-src 'self'{cdn}; frame-ancestors 'none'; "
        "base-uri 'none'; form-action 'none'; object-src 'none'")
    return response
