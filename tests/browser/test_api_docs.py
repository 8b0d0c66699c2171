"""The API's interactive docs page in a real browser: Swagger UI renders every operation of the OpenAPI
document from the page itself (no CDN request) without a single Content-Security-Policy error."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.browser


def test_api_docs_render_offline_under_their_csp(live_server, page):
    console: list[str] = []
    outside: list[str] = []
    page.on("console", lambda m: console.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: console.append(str(e)))
    page.on("request", lambda r: outside.append(r.url) if not r.url.startswith((live_server.url, "data:")) else None)
    page.goto(live_server.url_for("/api/v1/docs"))
    page.wait_for_selector(".opblock")
    operations = page.locator(".opblock").count()
    documented = sum(len(ops) for ops in live_server.app.test_client().get("/api/v1/openapi.json").get_json()["paths"].values())
    assert operations == documented >= 30
    assert console == [] and outside == []
