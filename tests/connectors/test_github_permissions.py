"""Testing a GitHub source names the exact permission the App lacks, as GitHub's own answer names it
(`x-accepted-github-permissions`; the fake withholds a permission the way an installation that was not
granted it answers), and a classic token's missing OAuth scope (`x-accepted-oauth-scopes`)."""

from __future__ import annotations

import httpx
import pytest

from attest.connectors.base import ConnectorError
from attest.connectors.github.client import _explain
from attest.connectors.http import HttpError
from tests.connectors.test_github import connector, fake_github


def test_validate_names_the_missing_members_permission():
    with fake_github(members=3, teams=1, repos=1) as (state, url):
        connector(url).validate()  # everything granted: passes
        state.withheld = {"members"}
        with pytest.raises(ConnectorError) as caught:
            connector(url).validate()
    message = str(caught.value)
    assert "members=read" in message and "lacks the permission" in message
    assert "Resource not accessible by integration" in message


def test_a_missing_custom_role_permission_is_named_by_its_own_name():
    with fake_github(members=3, teams=1, repos=1) as (state, url):
        state.withheld = {"organization_custom_org_roles"}
        c = connector(url)
        with pytest.raises(HttpError) as caught:
            c._request("GET", "/orgs/acme/organization-roles")
    assert "organization_custom_org_roles=read" in _explain(caught.value, "acme")


def test_a_classic_tokens_missing_scope_is_named_with_the_scopes_it_has():
    response = httpx.Response(403, json={"message": "Must have admin rights to Repository."},
                              headers={"X-Accepted-OAuth-Scopes": "admin:org, read:org", "X-OAuth-Scopes": "repo"},
                              request=httpx.Request("GET", "https://api.github.com/orgs/acme/members"))
    exc = HttpError(403, "GET", str(response.url), response.json(), headers=response.headers)
    message = _explain(exc, "acme")
    assert "lacks the OAuth scope admin:org, read:org" in message and "(it has: repo)" in message
    # several permission sets: either would do
    exc = HttpError(403, "GET", "https://api.github.com/x", {"message": "Resource not accessible by integration"},
                    headers={"x-accepted-github-permissions": "repository_projects=write; organization_projects=admin"})
    assert "repository_projects=write or organization_projects=admin" in _explain(exc, "acme")
