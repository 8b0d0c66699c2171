"""The API's own route matrix (the web matrix in tests/web/test_route_matrix.py skips /api/): every API
route, read from the app's url_map, refuses a call without a token (401), with a token that lacks the route's
scope (403 insufficient_scope), and, for admin-only and read-all routes, a token whose user lacks the role
(403) -- and a new API route cannot escape: it must declare its scope with @requires."""

from __future__ import annotations

import re

from attest.api import core
from attest.auth import tokens

MISSING = 987_654_321


def _routes(app):
    for rule in app.url_map.iter_rules():
        if not rule.endpoint.startswith("api.") or rule.endpoint in core.PUBLIC_ENDPOINTS:
            continue
        view = app.view_functions[rule.endpoint]
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            path = re.sub(r"<int:\w+>", str(MISSING), str(rule))
            yield rule.endpoint, method, path, getattr(view, "api_scope", None), getattr(view, "api_role", None)


def test_every_api_route_declares_a_scope(app):
    routes = list(_routes(app))
    assert len(routes) >= 30
    assert [r for r in routes if r[3] not in tokens.SCOPES] == []


def test_every_api_route_refuses_no_token_a_missing_scope_and_a_missing_role(app, client, api_world, make_token):
    admin_all = {s: make_token(api_world.admin, [x for x in tokens.SCOPES if x != s]) for s in tokens.SCOPES}
    manager = make_token(api_world.a.manager_user)  # reviews:read, reviews:write only
    auditor = make_token(api_world.auditor)  # every scope an auditor may hold
    auditor_scopes = set(tokens.allowed_scopes(api_world.auditor))
    failures = []
    for endpoint, method, path, scope, role in _routes(app):
        r = client.open(path, method=method, json={})
        if r.status_code != 401:
            failures.append(f"{endpoint} {method} without a token -> {r.status_code}")
        r = client.open(path, method=method, json={}, headers={"Authorization": f"Bearer {admin_all[scope]}"})
        if r.status_code != 403 or r.get_json()["error"]["code"] != "insufficient_scope":
            failures.append(f"{endpoint} {method} without {scope} -> {r.status_code}")
        if role in ("admin", "read_all") and scope.startswith("reviews:"):
            r = client.open(path, method=method, json={}, headers={"Authorization": f"Bearer {manager}"})
            if r.status_code != 403:
                failures.append(f"{endpoint} {method} as a reviewer -> {r.status_code}")
        if role == "admin" and scope in auditor_scopes:
            r = client.open(path, method=method, json={}, headers={"Authorization": f"Bearer {auditor}"})
            if r.status_code != 403:
                failures.append(f"{endpoint} {method} as an auditor -> {r.status_code}")
    assert not failures, "\n".join(failures)
