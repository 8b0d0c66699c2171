"""A favicon (issue 20, part 6): every page links one, and /favicon.ico answers rather than a 404."""

from __future__ import annotations


def test_favicon_ico_is_served(client):
    response = client.get("/favicon.ico")
    assert response.status_code == 200
    assert response.mimetype == "image/svg+xml"
    assert response.data.startswith(b"<svg")


def test_pages_link_the_icon(client):
    page = client.get("/login").get_data(as_text=True)
    assert '<link rel="icon" type="image/svg+xml" href="/static/favicon.svg">' in page
    assert client.get("/static/favicon.svg").status_code == 200
