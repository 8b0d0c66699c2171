"""The REST API as its callers meet it: tokens and scopes, reviewers limited to their own items, paging,
ETags and If-Match, the rate limit, one error shape, every call audited, the OpenAPI 3.1 document."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest
from sqlalchemy import select

from attest.api import core
from attest.auth import tokens
from attest.auth.models import ApiToken
from attest.entitlements.models import Source
from attest.reviews.models import ReviewItem
from attest.trail.models import AuditEvent
from tests.factories import Clock, login_as


def _error(response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}, body
    if code:
        assert body["error"]["code"] == code, body
    return body["error"]


# --- the document -----------------------------------------------------------------------------------------


def test_openapi_document_is_3_1_and_describes_every_api_route(app, client):
    doc = client.get("/api/v1/openapi.json").get_json()
    assert doc["openapi"] == "3.1.0"
    assert doc["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}
    documented = {(path, method) for path, ops in doc["paths"].items() for method in ops}
    for rule in app.url_map.iter_rules():
        if not rule.endpoint.startswith("api.") or rule.endpoint in core.PUBLIC_ENDPOINTS:
            continue
        path = str(rule).replace("<int:", "{").replace(">", "}")
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            assert (path, method.lower()) in documented, (path, method)
    names = list(doc["components"]["schemas"])
    assert "ErrorBody" in names and all("." not in n for n in names), names
    for ref in re.findall(r'"\$ref": "#/components/schemas/([^"]+)"', json.dumps(doc)):
        assert ref in names, ref
    assert "x-attest-schema" not in json.dumps(doc)
    body = doc["components"]["schemas"]["DefinitionIn"]["properties"]["definition"]["anyOf"][0]
    assert body == {"$ref": "#/components/schemas/CampaignDefinitionSpec"}  # the one definition schema
    assert {"stages", "scope", "timing", "rules"} <= set(doc["components"]["schemas"]["CampaignDefinitionSpec"]["properties"])
    item_decide = doc["paths"]["/api/v1/items/{item_id}/decision"]["post"]["responses"]
    assert {"200", "401", "403", "404", "409", "412", "422", "429"} <= set(item_decide)


def test_docs_page_is_served_without_a_cdn_under_a_csp_of_its_own(client):
    page = client.get("/api/v1/docs")
    assert page.status_code == 200 and b"/api/v1/openapi.json" in page.data and b"SwaggerUIBundle" in page.data
    assert b"unpkg.com" not in page.data and b"cdn." not in page.data  # spectree[offline]: Swagger UI inline
    csp = page.headers["Content-Security-Policy"]
    nonce = csp.split("'nonce-")[1].split("'")[0]
    assert page.data.count(f'<script nonce="{nonce}">'.encode()) == 3 and "unsafe" not in csp
    assert "https:" not in csp
    assert "nonce" not in client.get("/login").headers["Content-Security-Policy"]


# --- authentication ---------------------------------------------------------------------------------------


def test_missing_invalid_expired_revoked_tokens_and_cookies_get_401(app, client, session, api, api_world, make_token):
    clock = Clock()
    good = make_token(api_world.admin, ["sources:read"])
    for token in (None, "attest_nope", "Basic abc"):
        r = api(None).get("/sources", headers={"Authorization": token} if token else {})
        _error(r, 401, "unauthenticated")
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
    # a signed-in browser session is not an API credential
    login_as(app, client, api_world.admin)
    _error(api(None).get("/sources"), 401)
    assert api(good).get("/sources").status_code == 200
    # expired
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == ApiToken.hash_token(good)))
    row.expires_at = clock.now - timedelta(seconds=1)
    session.commit()
    assert _error(api(good).get("/sources"), 401)["details"] == {"reason": "expired"}
    row.expires_at = None
    session.commit()
    assert api(good).get("/sources").status_code == 200
    # revoked
    tokens.revoke_token(session, api_world.admin, row.id)
    session.commit()
    assert _error(api(good).get("/sources"), 401)["details"] == {"reason": "revoked"}


def test_a_deactivated_users_token_stops_working(session, api, api_world, make_token):
    token = make_token(api_world.a.manager_user, ["reviews:read"])
    assert api(token).get(f"/items/{api_world.a.items[0].id}").status_code == 200
    api_world.a.manager_user.active = False
    session.commit()
    assert _error(api(token).get(f"/items/{api_world.a.items[0].id}"), 401)["details"] == {"reason": "user_inactive"}


# --- authorization ----------------------------------------------------------------------------------------


def test_a_read_token_cannot_write(session, api, api_world, make_token):
    source = api_world.a.source
    token = make_token(api_world.admin, ["sources:read"])
    err = _error(api(token).post(f"/sources/{source.id}/sync"), 403, "insufficient_scope")
    assert err["details"] == {"required_scope": "sources:write"}
    session.expire_all()
    assert session.get(Source, source.id).sync_requested_at is None
    write = make_token(api_world.admin, ["sources:write"])
    r = api(write).post(f"/sources/{source.id}/sync")
    assert r.status_code == 202 and r.get_json()["queued"] is True
    session.expire_all()
    assert session.get(Source, source.id).sync_requested_by == "ada.admin@acme.example"


def test_an_auditor_reads_everything_and_writes_nothing(session, api, api_world, make_token):
    with pytest.raises(tokens.TokenError):
        tokens.create_token(session, api_world.auditor, "w", ["sources:write"])
    session.rollback()
    token = make_token(api_world.auditor)  # every scope an auditor may hold
    assert "reviews:write" in tokens.allowed_scopes(api_world.auditor)
    campaign = api_world.a.campaign
    assert api(token).get(f"/campaigns/{campaign.id}/items").status_code == 200
    assert api(token).get("/audit/events").status_code == 200
    _error(api(token).post(f"/campaigns/{campaign.id}/close"), 403)
    _error(api(token).post(f"/campaigns/{campaign.id}/cancel", {"reason": "no"}), 403)
    _error(api(token).post(f"/items/{api_world.a.items[0].id}/decision", {"decision": "approve"}), 403)
    session.expire_all()
    assert session.get(type(campaign), campaign.id).status == "active"


def test_a_reviewer_token_sees_and_decides_only_its_own_items(session, api, api_world, make_token):
    a = api_world.a
    token = make_token(a.manager_user)  # reviews:read + reviews:write
    listed = api(token).get(f"/campaigns/{a.campaign.id}/items?limit=500").get_json()["data"]
    assert {i["id"] for i in listed} == {i.id for i in a.items}
    theirs = api_world.b_items[0]
    _error(api(token).get(f"/items/{theirs.id}"), 404)
    _error(api(token).post(f"/items/{theirs.id}/decision", {"decision": "approve"}), 404)
    bulk = api(token).post(f"/campaigns/{a.campaign.id}/decisions",
                           {"item_ids": [theirs.id], "decision": "approve"}).get_json()
    assert bulk["changed"] == 0
    session.expire_all()
    assert session.get(ReviewItem, theirs.id).decision is None
    # the admin-only reads stay closed to a reviewer
    _error(api(token).get("/sources"), 403)
    mine = a.items[1]
    r = api(token).post(f"/items/{mine.id}/decision", {"decision": "approve"})
    assert r.status_code == 200 and r.get_json()["decision"] == "approve"
    event = session.scalar(select(AuditEvent).where(AuditEvent.action == "review.decide",
                                                    AuditEvent.object_id == str(mine.id)))
    assert event.actor == a.manager_user.email


def test_bulk_decisions_through_the_api(session, api, api_world, make_token):
    a = api_world.a
    token = make_token(a.manager_user)
    plain = [i.id for i in a.items if not i.risks]
    r = api(token).post(f"/campaigns/{a.campaign.id}/decisions", {"item_ids": plain, "decision": "approve"})
    assert r.status_code == 200 and r.get_json()["changed"] == len(plain)
    session.expire_all()
    assert {session.get(ReviewItem, i).decision for i in plain} == {"approve"}


def test_service_tokens_act_as_admin_within_scopes_review_nothing_and_die_with_the_owners_role(
        session, api, api_world, make_token):
    with pytest.raises(tokens.TokenError):
        tokens.create_token(session, api_world.a.manager_user, "svc", ["reviews:read"], kind="service")
    session.rollback()
    token = make_token(api_world.admin, ["reviews:read", "reviews:write", "sources:read"], kind="service")
    assert api(token).get(f"/campaigns/{api_world.a.campaign.id}").status_code == 200
    _error(api(token).post(f"/items/{api_world.a.items[0].id}/decision", {"decision": "approve"}), 403)
    api_world.admin.local_roles = []
    session.commit()
    assert _error(api(token).get("/sources"), 401)["details"] == {"reason": "owner_not_admin"}


# --- paging, ETags ----------------------------------------------------------------------------------------


def test_keyset_paging_with_opaque_cursors(api, api_world, make_token):
    token = make_token(api_world.admin, ["reviews:read"])
    path = f"/campaigns/{api_world.a.campaign.id}/items?limit=2"
    seen, after, pages = [], None, 0
    while True:
        body = api(token).get(path + (f"&after={after}" if after else "")).get_json()
        seen += [i["id"] for i in body["data"]]
        pages += 1
        after = body["next"]
        if after is None:
            break
        assert "\x1f" not in after and len(body["data"]) == 2
    total = len(api_world.a.items) + len(api_world.b_items)
    assert sorted(seen) == sorted(set(seen)) and len(seen) == total and pages == (total + 1) // 2
    _error(api(token).get(path + "&after=not-a-cursor"), 400, "bad_cursor")
    other = core.encode_cursor("grants", 5)
    _error(api(token).get(path + f"&after={other}"), 400, "bad_cursor")


@pytest.mark.parametrize("path, kind, position", [
    ("/campaigns/{campaign}/items", "items", 5),  # items are keyed by text
    ("/identities", "identities", 5),
    ("/resources", "resources", 5),
    ("/entitlements", "entitlements", "5"),  # these by id
    ("/grants", "grants", "5"),
    ("/remediations", "remediations", "5"),
    ("/audit/events", "events", ["5"]),
    ("/sources/{source}/runs", "runs", "5"),
])
def test_a_cursor_of_the_right_list_with_a_forged_position_is_a_400(session, api, api_world, make_token, path,
                                                                    kind, position):
    """A hand-made cursor (the right list, a position of the wrong type) is refused like any foreign one,
    never handed to the query (a 500, or a page that compares text with ids)."""
    source = session.scalar(select(Source.id))
    token = make_token(api_world.admin, ["reviews:read", "entitlements:read", "audit:read", "sources:read"])
    url = path.format(campaign=api_world.a.campaign.id, source=source)
    assert api(token).get(url).status_code == 200
    _error(api(token).get(f"{url}?after={core.encode_cursor(kind, position)}"), 400, "bad_cursor")


def test_if_match_on_a_stale_item_is_412_and_changes_nothing(session, api, api_world, make_token):
    a = api_world.a
    token = make_token(a.manager_user)
    item = a.items[2]
    first = api(token).get(f"/items/{item.id}")
    etag = first.headers["ETag"]
    r = api(token).post(f"/items/{item.id}/decision", {"decision": "approve"}, headers={"If-Match": etag})
    assert r.status_code == 200 and r.headers["ETag"] != etag
    stale = api(token).post(f"/items/{item.id}/decision", {"decision": "revoke", "comment": "gone"},
                            headers={"If-Match": etag})
    err = _error(stale, 412, "precondition_failed")
    assert err["details"]["etag"] == r.headers["ETag"]
    session.expire_all()
    assert session.get(ReviewItem, item.id).decision == "approve"


def test_if_match_on_a_changed_source_is_412(session, api, api_world, make_token):
    token = make_token(api_world.admin, ["sources:read", "sources:write"])
    source = api_world.a.source
    etag = api(token).get(f"/sources/{source.id}").headers["ETag"]
    ok = api(token).patch(f"/sources/{source.id}", {"schedule": "0 3 * * *"}, headers={"If-Match": etag})
    assert ok.status_code == 200 and ok.get_json()["schedule"] == "0 3 * * *"
    _error(api(token).patch(f"/sources/{source.id}", {"schedule": "0 4 * * *"}, headers={"If-Match": etag}), 412)
    session.expire_all()
    assert session.get(Source, source.id).schedule == "0 3 * * *"


# --- rate limit, errors, audit ------------------------------------------------------------------------------


def test_rate_limit_per_token_answers_429_with_retry_after(app, monkeypatch, api, api_world, make_token):
    clock = Clock()
    monkeypatch.setattr(core, "clock", clock)
    state = app.extensions["attest"]
    state.settings = state.settings.replace(api_rate_burst=3, api_rate_per_second=0.5)
    token = make_token(api_world.admin, ["sources:read"])
    other = make_token(api_world.admin, ["sources:read"])
    remaining = [api(token).get("/sources").headers["RateLimit-Remaining"] for _ in range(3)]
    assert remaining == ["2", "1", "0"]
    refused = api(token).get("/sources")
    _error(refused, 429, "rate_limited")
    assert refused.headers["Retry-After"] == "2" and refused.headers["RateLimit-Limit"] == "3"
    assert api(other).get("/sources").status_code == 200  # a budget per token
    clock.advance(seconds=2)
    assert api(token).get("/sources").status_code == 200


def test_one_error_shape_for_flask_spectree_and_service_errors(api, api_world, make_token):
    token = make_token(api_world.a.manager_user)
    _error(api(token).get("/no/such/thing"), 404, "not_found")
    _error(api(token).client.put("/api/v1/items/1/decision", headers={"Authorization": f"Bearer {token}"}), 405)
    invalid = _error(api(token).post(f"/items/{api_world.a.items[0].id}/decision", {"decision": "frobnicate"}),
                     422, "validation_failed")
    assert invalid["details"][0]["loc"][-1] == "decision"
    no_comment = _error(api(token).post(f"/items/{api_world.a.items[0].id}/decision", {"decision": "revoke"}), 400)
    assert "comment" in no_comment["message"].lower()


def test_every_call_is_audited_with_the_token_name_and_user(session, api, api_world, make_token):
    token = make_token(api_world.auditor, ["audit:read"], name="grc-export")
    api(token).get("/audit/events?limit=1")
    api(token).get("/sources")  # refused: still audited
    events = session.scalars(select(AuditEvent).where(AuditEvent.action == "api.call").order_by(AuditEvent.seq)).all()
    assert [(e.after["credential"], e.after["user"], e.after["path"], e.after["status"]) for e in events] == [
        ("grc-export", "otto.auditor@acme.example", "/api/v1/audit/events", 200),
        ("grc-export", "otto.auditor@acme.example", "/api/v1/sources", 403)]
    assert all(e.actor == "otto.auditor@acme.example" for e in events)
    assert token not in str([(e.before, e.after) for e in session.scalars(select(AuditEvent))])
    row = session.scalar(select(ApiToken).where(ApiToken.name == "grc-export"))
    session.refresh(row)
    assert row.last_used_at is not None


# --- the other areas through their services -----------------------------------------------------------------


def test_sources_create_update_secret_and_runs(session, api, api_world, make_token):
    token = make_token(api_world.admin, ["sources:read", "sources:write"])
    bad = _error(api(token).post("/sources", {"kind": "demo", "name": "x", "settings": {"nope": 1}}), 400)
    assert "nope" in bad["message"]
    created = api(token).post("/sources", {"kind": "demo", "name": "demo-api", "settings": {}})
    assert created.status_code == 201, created.get_json()
    sid = created.get_json()["id"]
    runs = api(token).get(f"/sources/{sid}/runs").get_json()
    assert runs == {"data": [], "next": None}
    listed = [s["name"] for s in api(token).get("/sources").get_json()["data"]]
    assert "demo-api" in listed
    events = session.scalars(select(AuditEvent.action).where(AuditEvent.object_type == "source",
                                                             AuditEvent.object_id == str(sid))).all()
    assert "source.add" in events


def test_people_with_access_as_of_a_moment(session, api, api_world, make_token):
    token = make_token(api_world.auditor, ["entitlements:read"])
    person = api_world.a.people[0]
    now = api(token).get(f"/identities/{person.id}").get_json()
    assert len(now["access"]["held"]) == 3 and now["accounts"][0]["identity_id"] == person.id
    before = api(token).get(f"/identities/{person.id}?at=2001-01-01T00:00:00Z").get_json()
    assert before["access"]["held"] == [] and before["access"]["as_of"].startswith("2001-01-01")
    _error(api(token).get(f"/identities/{person.id}?at=yesterday"), 400, "bad_timestamp")
    grants = api(token).get(f"/grants?account_id={now['accounts'][0]['id']}").get_json()["data"]
    assert len(grants) == 3


def test_definition_from_yaml_preview_launch_and_close(session, api, api_world, make_token):
    token = make_token(api_world.admin, ["reviews:read", "reviews:write"])
    bad = _error(api(token).post("/campaign-definitions", {"yaml": "name: X\nstages: 7\n"}), 422)
    assert bad["details"]["field"]
    created = api(token).post("/campaign-definitions",
                              {"yaml": "name: API review\nstages:\n  - reviewer: manager\n"})
    assert created.status_code == 201, created.get_json()
    did = created.get_json()["id"]
    from attest.reviews.definition_schema import CampaignDefinitionSpec

    stored = api(token).get(f"/campaign-definitions/{did}").get_json()["spec"]
    assert CampaignDefinitionSpec.model_validate(stored).model_dump() == stored  # what the document says it is
    as_object = api(token).post("/campaign-definitions", {"definition": {**stored, "name": "API review 2"}})
    assert as_object.status_code == 201 and as_object.get_json()["spec"] == {**stored, "name": "API review 2"}
    unknown = _error(api(token).post("/campaign-definitions", {"definition": {"name": "X", "stagez": []}}), 422)
    assert unknown["details"]["field"] and "stages" in unknown["message"]
    unsaved = api(token).post("/campaign-definitions/preview", {"definition": {"name": "Unsaved"}})
    assert unsaved.status_code == 200 and unsaved.get_json()["items"] >= 1
    preview = api(token).post(f"/campaign-definitions/{did}/preview").get_json()
    assert preview["items"] >= 1
    launched = api(token).post(f"/campaign-definitions/{did}/launch", {"name": "API Q4"})
    assert launched.status_code == 201 and launched.get_json()["status"] == "active"
    cid = launched.get_json()["id"]
    etag = api(token).get(f"/campaigns/{cid}").headers["ETag"]
    _error(api(token).post(f"/campaigns/{cid}/close", headers={"If-Match": '"stale"'}), 412)
    closed = api(token).post(f"/campaigns/{cid}/close", headers={"If-Match": etag})
    assert closed.status_code == 200 and closed.get_json()["status"] == "closed"


def test_an_oidc_users_token_keeps_the_role_limits_the_idp_gives_them(session, api, api_world, make_token):
    from tests.factories import make_user

    user = make_user(session, "sso.auditor@acme.example")
    user.oidc_subject, user.idp_roles = "sub-123", ["auditor"]
    session.commit()
    token = make_token(user, ["entitlements:read", "reviews:read"])
    assert api(token).get("/identities").status_code == 200
    user.idp_roles = []  # the IdP group was removed: refreshed at their next sign-in
    session.commit()
    _error(api(token).get("/identities"), 403)
    _error(api(token).get(f"/campaigns/{api_world.a.campaign.id}/items"), 404)  # a reviewer of nothing here


def test_an_answer_that_breaks_its_own_schema_is_a_500_in_the_error_shape(monkeypatch, api, api_world, make_token):
    from attest.api import reviews

    token = make_token(api_world.a.manager_user)
    real = reviews.item_out
    monkeypatch.setattr(reviews, "item_out", lambda i: {**real(i), "version": "one"})
    err = _error(api(token).get(f"/items/{api_world.a.items[0].id}"), 500, "internal_error")
    assert "version" not in err["message"]


def test_rate_limit_settings_come_from_the_environment(tmp_path):
    from attest.config import load_settings
    from attest.config.settings import SettingsError

    base = {"ATTEST_ENV": "test", "ATTEST_INSTANCE_PATH": str(tmp_path)}
    s = load_settings(environ={**base, "ATTEST_API_RATE_BURST": "30", "ATTEST_API_RATE_PER_SECOND": "2.5"})
    assert (s.api_rate_burst, s.api_rate_per_second) == (30, 2.5)
    with pytest.raises(SettingsError, match="ATTEST_API_RATE_BURST"):
        load_settings(environ={**base, "ATTEST_API_RATE_BURST": "0"})
