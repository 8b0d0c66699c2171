"""`Link` paging (attest/connectors/http.py `next_link`, on httpx's `response.links`): the next page's URL
as Okta and GitHub send it, and paginate() following it over a mock transport."""

from __future__ import annotations

import httpx
import pytest

from attest.connectors.http import HttpClient, PagingError, next_link

BASE = "https://acme.okta.com"


def response(link: str | None, url: str = f"{BASE}/api/v1/users?limit=200") -> httpx.Response:
    return httpx.Response(200, headers={"Link": link} if link is not None else {}, json=[],
                          request=httpx.Request("GET", url))


def test_okta_style_self_and_next():
    link = (f'<{BASE}/api/v1/users?limit=200>; rel="self", '
            f'<{BASE}/api/v1/users?after=00u5&limit=200>; rel="next"')
    assert next_link(response(link)) == f"{BASE}/api/v1/users?after=00u5&limit=200"


def test_github_style_next_last_first_prev():
    api = "https://api.github.com/orgs/acme/outside_collaborators"
    link = (f'<{api}?page=3&per_page=100>; rel="next", <{api}?page=9&per_page=100>; rel="last", '
            f'<{api}?page=1&per_page=100>; rel="first", <{api}?page=1&per_page=100>; rel="prev"')
    assert next_link(response(link, f"{api}?page=2&per_page=100")) == f"{api}?page=3&per_page=100"


def test_the_last_page_has_no_next():
    assert next_link(response(f'<{BASE}/api/v1/users?limit=200>; rel="self"')) is None
    assert next_link(response(None)) is None
    assert next_link(response("")) is None


def test_a_relative_next_resolves_against_the_request_url():
    assert next_link(response('</api/v1/users?after=x>; rel="next"')) == f"{BASE}/api/v1/users?after=x"
    assert next_link(response('<?after=y>; rel="next"')) == f"{BASE}/api/v1/users?after=y"


def test_a_relation_with_several_names_and_a_comma_in_the_url():
    link = f'<{BASE}/api/v1/logs?since=a,b&after=z>; rel="next last"'
    assert next_link(response(link)) == f"{BASE}/api/v1/logs?since=a,b&after=z"


def test_paginate_follows_next_links_and_stops_on_a_repeat():
    def handler(request: httpx.Request) -> httpx.Response:
        page = int(request.url.params.get("page", "1"))
        if request.url.params.get("loop"):
            return httpx.Response(200, json=[page], headers={"Link": f'<{request.url}>; rel="next"'})
        links = f'</items?page={page + 1}>; rel="next"' if page < 3 else ""  # relative, as RFC 8288 allows
        return httpx.Response(200, json=[page], headers={"Link": links})

    client = HttpClient("https://api.example.com", transport=httpx.MockTransport(handler), sleep=lambda s: None)
    assert [row for page in client.paginate("/items") for row in page] == [1, 2, 3]
    with pytest.raises(PagingError, match="already served"):
        list(client.paginate("/items", {"loop": "1"}))


def test_a_next_link_to_another_origin_is_never_followed_with_the_token():
    """A hostile or misconfigured upstream's `next` pointing at another host would receive the source's
    token with the next request: paging stops with an error instead, and no request goes there."""
    asked: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.host)
        return httpx.Response(200, json=[1], headers={"Link": '<https://collector.evil.example/items?page=2>; rel="next"'})

    client = HttpClient("https://api.example.com", headers={"Authorization": "Bearer secret-token"},
                        transport=httpx.MockTransport(handler), sleep=lambda s: None)
    with pytest.raises(PagingError, match="another origin") as caught:
        list(client.paginate("/items"))
    assert asked == ["api.example.com"]
    assert "secret-token" not in str(caught.value)
    # another scheme or port of the same host is another origin too
    with pytest.raises(PagingError, match="another origin"):
        next_link(response('<http://acme.okta.com/api/v1/users?after=x>; rel="next"'))
    with pytest.raises(PagingError, match="another origin"):
        next_link(response('<https://acme.okta.com:8443/api/v1/users?after=x>; rel="next"'))
