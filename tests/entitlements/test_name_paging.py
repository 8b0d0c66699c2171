"""Paging by name (issue 18: one name_page serves the people and the resources lists): every page link leads on
from the last row shown, names shared by several rows included, and nothing is shown twice or left out."""

import pytest

from attest.entitlements.models import Resource
from attest.entitlements.queries import BadCursor, list_resources, search_identities
from tests.factories import make_identity, make_source


def _walk(fetch, limit=2):
    seen, after, pages = [], None, 0
    while True:
        page = fetch(after, limit)
        seen += page.rows
        pages += 1
        after = page.next_after
        if after is None:
            return seen, pages
        assert len(page.rows) == limit


def test_people_pages_follow_on_through_shared_names(session):
    names = ["Bob", "Ann", "Bob", "Cy", "Bob"]
    people = [make_identity(session, f"p{i}@example.com", name) for i, name in enumerate(names)]
    seen, pages = _walk(lambda after, limit: search_identities(session, after=after, limit=limit))
    expected = sorted(people, key=lambda p: (p.display_name, p.id))
    assert [p.id for p in seen] == [p.id for p in expected] and pages == 3
    with pytest.raises(BadCursor):
        search_identities(session, after="not-a-link")


def test_resource_pages_follow_on_through_shared_names_with_their_grant_counts(session):
    source = make_source(session)
    made = []
    for i, name in enumerate(["repo", "app", "repo", "repo", "zeta"]):
        r = Resource(source_id=source.id, external_id=f"r{i}", type="repo", name=name)
        session.add(r)
        session.flush()
        made.append(r)
    seen, pages = _walk(lambda after, limit: list_resources(session, source_id=source.id, after=after, limit=limit))
    expected = sorted(made, key=lambda r: (r.name, r.id))
    assert [r.id for r, _n in seen] == [r.id for r in expected] and pages == 3
    assert all(n == 0 for _r, n in seen)
