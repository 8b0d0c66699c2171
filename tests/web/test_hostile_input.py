"""Hostile input gets a clear 4xx, at once, and changes nothing (issue 15, parts 5 and 6): one test per
finding. Run on SQLite and on PostgreSQL (ATTEST_TEST_DATABASE_URL), where a NUL byte or an id beyond
64 bits used to reach the database and answer 500."""

from __future__ import annotations

import base64
import json

import pytest
from sqlalchemy import select

from attest.inputs import MAX_ID, parse_int
from attest.reviews import definitions
from attest.reviews.decisions import MAX_COMMENT
from attest.reviews.models import CampaignDefinition, ReviewItem
from tests.factories import login_as
from tests.web.world import MARK

HX = {"HX-Request": "true"}

# 7 levels of 9 aliases: 9**7 (4.8 million) strings once expanded, from 400-odd bytes of text
ALIAS_BOMB = "\n".join(
    ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    + [f"a{n}: &a{n} [" + ",".join([f"*a{n - 1}"] * 9) + "]" for n in range(1, 7)]
    + ["name: bomb"]
) + "\n"


def _text(response) -> str:
    return response.get_data(as_text=True)


def _cursor(value) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


# --- YAML definitions ---------------------------------------------------------------------------------


def test_yaml_alias_bomb_is_refused_by_the_parser():
    assert len(ALIAS_BOMB) < 500
    with pytest.raises(definitions.DefinitionError, match="aliases"):
        definitions.parse_definition(ALIAS_BOMB)
    # one alias is enough to be refused: the limit is not on the bomb's size
    with pytest.raises(definitions.DefinitionError, match="aliases") as caught:
        definitions.parse_definition("name: x\ncontrols: &c [a]\ndescription: *c\n")
    assert caught.value.line == 3


@pytest.mark.parametrize("text, reason", [
    ("name: x\nscope: " + "[" * 5000 + "]" * 5000 + "\n", "nested too deeply"),
    ("name: x\nscope: " + "{a: " * 3000 + "\n", "nested too deeply"),
    ("name: x\ndescription: " + "y" * (definitions.MAX_YAML_CHARS + 1) + "\n", "too long"),
    ("name: x\ncontrols: [" + ",".join(["c"] * (definitions.MAX_YAML_NODES + 1)) + "]\n", "too many values"),
    ("name: 2026-13-45\n", "not valid YAML"),
])
def test_yaml_limits(text, reason):
    with pytest.raises(definitions.DefinitionError, match=reason):
        definitions.parse_definition(text)


def test_a_real_definition_still_parses_with_its_line_numbers():
    spec = definitions.parse_definition("name: Q\nstages:\n  - reviewer: manager\ncontrols: [SOC 2 CC6.2]\n")
    assert spec["name"] == "Q" and spec["controls"] == ["SOC 2 CC6.2"]
    with pytest.raises(definitions.DefinitionError) as caught:
        definitions.parse_definition("name: Q\ntiming:\n  duration_days: -3\n")
    assert caught.value.line == 3


@pytest.mark.parametrize("yaml_text", [ALIAS_BOMB, "name: deep\nscope: " + "[" * 3000 + "]" * 3000 + "\n"])
@pytest.mark.parametrize("route", ["/campaigns/definitions/new", "/campaigns/definitions/preview"])
def test_hostile_definitions_posted_get_a_clear_refusal(nocsrf_app, client, session, world, route, yaml_text):
    login_as(nocsrf_app, client, world.admin)
    before = session.scalar(select(CampaignDefinition.id).order_by(CampaignDefinition.id.desc()).limit(1))
    response = client.post(route, data={"mode": "yaml", "yaml": yaml_text})
    assert response.status_code == (400 if route.endswith("/new") else 200)  # the preview is a fragment
    page = _text(response)
    assert "aliases" in page or "nested too deeply" in page
    assert session.scalar(select(CampaignDefinition.id).order_by(CampaignDefinition.id.desc()).limit(1)) == before


def test_form_numbers_beyond_any_limit_are_a_field_error(nocsrf_app, client, world):
    login_as(nocsrf_app, client, world.admin)
    for value in ("9" * 5000, "²", "1e3"):
        response = client.post("/campaigns/definitions/new", data={"mode": "form", "name": "Numbers",
                                                                   "duration_days": value})
        assert response.status_code == 400, value
        assert "duration_days" in _text(response)


# --- cursors --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("after", [
    "abc", "%%%", _cursor([None, 2**63]), _cursor([None, 2**31]), _cursor(["a", True]), _cursor(["a", 1.5]), _cursor({"a": 1}),
    base64.urlsafe_b64encode(b"[" * 3000).decode(), "A" * 5000, _cursor(["a\x00", 1]),
])
def test_malformed_inbox_cursor_is_400(app, client, world, after):
    manager = world.managers["A"]
    login_as(app, client, manager.user)
    response = client.get("/reviews", query_string={"campaign": world.shared.id, "after": after})
    assert response.status_code == 400
    assert "page link is not valid" in _text(response)


def test_good_inbox_cursor_still_pages(app, client, world):
    login_as(app, client, world.managers["A"].user)
    response = client.get("/reviews", query_string={"campaign": world.shared.id, "after": _cursor(["", 1])})
    assert response.status_code == 200


@pytest.mark.parametrize("path", ["/identities", "/resources"])
@pytest.mark.parametrize("after", ["abc", "name\x1fabc", "name\x1f" + str(2**63), "name\x1f" + str(2**31), "name\x1f٣", "\x1f-1"])
def test_malformed_name_cursor_is_400(app, client, world, path, after):
    login_as(app, client, world.auditor)
    response = client.get(path, query_string={"after": after})
    assert response.status_code == 400, (path, after)


# --- ids --------------------------------------------------------------------------------------------------


def test_parse_int_bounds():
    assert parse_int("1") == 1 and parse_int(str(MAX_ID)) == MAX_ID
    for bad in ("0", "-1", str(2**31), str(2**63), str(2**64), "9" * 5000, "٣", "²", "1e3", "", None, True, 2**63):
        assert parse_int(bad) is None, bad
    assert parse_int("0", low=0) == 0


def test_id_converter_matches_exactly_1_to_max_id():
    import re

    from attest.inputs import IdConverter

    pattern = re.compile(IdConverter.regex)
    edges = [*range(0, 200), *(MAX_ID + k for k in range(-200, 200)), *(10**18 + k for k in range(-200, 200)),
             *(10**k for k in range(25)), 2**64, 9300000000000000000, 9223372036854775799]
    for n in edges:
        assert bool(pattern.fullmatch(str(n))) == (1 <= n <= MAX_ID), n
    for text in ("007", "-1", "+1", "1.0", "٣", " 1", ""):
        assert not pattern.fullmatch(text), text


@pytest.mark.parametrize("role", ["anonymous", "manager_a", "admin"])
def test_path_ids_beyond_64_bits_are_404_on_every_route(nocsrf_app, client, world, role):
    """Every `<int:...>` route: 2^31 (beyond PostgreSQL's INTEGER ids), 2^63, 2^64, 0 and -1 do not exist
    (404), whoever asks and however."""
    # routes with an id in their path (a route taking only a name, such as /charts/<name>.json, checks who
    # asks before it looks the name up, and has no id to overflow)
    rules = [r for r in nocsrf_app.url_map.iter_rules() if "<int:" in r.rule and r.endpoint != "static"]
    assert len(rules) >= 20
    user = world.user(role)
    for rule in rules:
        for value in (2**31, 2**63, 2**64, 10**30, 0, -1):
            path = rule.rule
            for arg in rule.arguments:
                path = path.replace(f"<int:{arg}>", str(value))
            for method in rule.methods - {"HEAD", "OPTIONS"}:
                if user is not None:
                    login_as(nocsrf_app, client, user)
                response = client.open(path, method=method, data={"comment": "x"}, headers=HX)
                assert response.status_code == 404, (role, method, path, response.status_code)
    # the largest id the database holds is an ordinary missing id
    if user is not None:
        login_as(nocsrf_app, client, user)
        assert client.get(f"/reviews/items/{MAX_ID}").status_code == 404


@pytest.mark.parametrize("path", ["/audit?campaign={}", "/audit?after={}", "/flagged?campaign={}",
                                  "/remediations?id={}", "/remediations.csv?campaign={}"])
def test_query_ids_beyond_64_bits_are_400(app, client, world, path):
    login_as(app, client, world.auditor)
    for value in (2**31, 2**63, 2**64, "٣"):
        response = client.get(path.format(value))
        assert response.status_code == 400, (path, value)
        assert "whole number" in _text(response)


def test_query_ids_beyond_64_bits_elsewhere_are_ignored(nocsrf_app, client, world):
    login_as(nocsrf_app, client, world.auditor)
    for path in (f"/resources?source={2**63}", f"/findings/orphaned?source={2**64}&after={2**70}",
                 f"/findings/terminated?after={2**63}", f"/resources/{world.managers['A'].items[0].resource_id}?after={2**63}"):
        assert client.get(path).status_code == 200, path
    login_as(nocsrf_app, client, world.managers["A"].user)
    assert client.get(f"/reviews?campaign={2**63}").status_code == 200  # no such campaign asked: the first one
    login_as(nocsrf_app, client, world.admin)
    assert client.post("/accounts/link", data={"account_id": str(2**63)}).status_code == 400
    assert client.post(f"/campaigns/{world.shared.id}/reassign",
                       data={"from_reviewer": str(2**64), "to": world.stranger.email, "reason": "r"}).status_code == 302
    assert client.post(f"/admin/users/{world.auditor.id}/identity", data={"person": str(2**64)}).status_code == 302


# --- NUL bytes ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/reviews?campaign={c}&q=a%00b", "/reviews?campaign={c}&resource=%00",
                                  "/reviews?campaign={c}&source=x%00", "/identities?q=%00", "/resources?q=a%00",
                                  "/admin/users?q=%00", "/history?q=%00", "/audit?actor=%00",
                                  "/reviews?campaign={c}&x%00=1"])
def test_nul_in_a_search_is_400(app, client, world, path):
    login_as(app, client, world.admin if not path.startswith("/reviews") else world.managers["A"].user)
    response = client.get(path.format(c=world.shared.id))
    assert response.status_code == 400, path
    assert "NUL" in _text(response)


def test_nul_in_a_comment_is_400_and_changes_nothing(nocsrf_app, client, session, world):
    item = world.managers["A"].items[1]
    login_as(nocsrf_app, client, world.managers["A"].user)
    for headers in ({}, HX):
        response = client.post(f"/reviews/items/{item.id}/decide", data={"decision": "revoke", "comment": "gone\x00"},
                               headers=headers)
        assert response.status_code == 400
        assert "NUL" in _text(response)
    response = client.post(f"/reviews/items/{item.id}/reassign",
                           data={"to": world.stranger.email, "reason": "\x00"})
    assert response.status_code == 400
    session.expire_all()
    row = session.get(ReviewItem, item.id)
    assert row.decision is None and row.reviewer_id == world.managers["A"].identity.id


def test_nul_in_login_and_definitions_is_400(nocsrf_app, client, world):
    assert client.post("/login", data={"email": "a\x00@acme.example", "password": "x"}).status_code == 400
    login_as(nocsrf_app, client, world.admin)
    assert client.post("/campaigns/definitions/new", data={"mode": "yaml", "yaml": "name: a\x00\n"}).status_code == 400


# --- bodies -------------------------------------------------------------------------------------------------------


def test_oversized_body_is_413(nocsrf_app, client, world):
    login_as(nocsrf_app, client, world.admin)
    response = client.post("/campaigns/definitions/new", data={"mode": "yaml", "yaml": "x" * (2 * 1024 * 1024)})
    assert response.status_code == 413


# --- authorization before input (part 5) ---------------------------------------------------------------------------


@pytest.mark.parametrize("route, data", [
    ("decide", {"decision": "revoke", "comment": "x" * (MAX_COMMENT + 1)}),
    ("decide", {"decision": "nonsense"}),
    ("reassign", {"to": "nobody@nowhere.example", "reason": "leave"}),
    ("reassign", {"to": "sam.stranger@acme.example", "reason": "x" * (MAX_COMMENT + 1)}),
])
def test_refused_input_on_someone_elses_item_is_404_without_its_row(nocsrf_app, client, session, world, route, data):
    """Manager A posts input that is refused on B's item (same campaign, B's own campaign) and on an id that
    does not exist: the same 404 for all three, and nothing of B's item in the answer."""
    login_as(nocsrf_app, client, world.managers["A"].user)
    b_items = world.managers["B"].items
    for item_id in (b_items[0].id, b_items[4].id, 987_654_321):
        for headers in ({}, HX):
            response = client.post(f"/reviews/items/{item_id}/{route}", data=data, headers=headers)
            assert response.status_code == 404, (item_id, headers)
            assert MARK["B"].lower() not in _text(response).lower()
    # the same input on A's own item is refused with its reason, on A's row
    own = world.managers["A"].items[0]
    response = client.post(f"/reviews/items/{own.id}/{route}", data=data, headers=HX)
    assert response.status_code == 400
    assert MARK["A"] in _text(response) and MARK["B"] not in _text(response)
