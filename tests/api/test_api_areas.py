"""The API's areas end to end through the services the UI uses: sources (secrets write-only, runs with their
phases), reassignment, closing into remediation, the audit log, and an evidence bundle from request to
download."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from attest.db import utcnow
from attest.entitlements.models import Source, SyncRun
from attest.reviews.models import Remediation, ReviewItem
from attest.trail.models import AuditEvent


def test_source_secrets_are_write_only_and_runs_carry_phases_notes_and_failed_parts(
        app, session, api, api_world, make_token):
    token = make_token(api_world.admin, ["sources:read", "sources:write"])
    source = api_world.a.source
    source.kind = "okta"
    source.settings = {"domain": "https://acme.okta.com"}
    session.add(SyncRun(source_id=source.id, status="failed", started_at=utcnow() - timedelta(minutes=5),
                        finished_at=utcnow(), stats={"phases": [{"name": "users", "seconds": 1.5}]},
                        notes=["rate limited twice"], failed_parts=[{"part": "apps", "error": "HTTP 500"}],
                        error="part apps failed"))
    session.add(SyncRun(source_id=source.id, status="succeeded", started_at=utcnow(), stats={}))
    session.commit()
    r = api(token).patch(f"/sources/{source.id}", {"secrets": {"token": "s3cret-value-0123456789"}})
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    assert body["secret_names"] == ["token"] and "s3cret" not in r.get_data(as_text=True)
    assert "s3cret" not in api(token).get(f"/sources/{source.id}").get_data(as_text=True)
    event = session.scalars(select(AuditEvent).where(AuditEvent.action == "source.update")).one()
    assert "s3cret" not in str(event.after) and event.after["secrets_replaced"] == ["token"]
    unknown = api(token).patch(f"/sources/{source.id}", {"settings": {"colour": "blue"}})
    assert unknown.status_code == 400 and "colour" in unknown.get_json()["error"]["message"]
    extra = api(token).patch(f"/sources/{source.id}", {"colour": "blue"})
    assert extra.status_code == 422
    page1 = api(token).get(f"/sources/{source.id}/runs?limit=1").get_json()
    assert page1["data"][0]["status"] == "succeeded" and page1["next"]
    page2 = api(token).get(f"/sources/{source.id}/runs?limit=1&after={page1['next']}").get_json()
    run = page2["data"][0]
    assert run["phases"] == [{"name": "users", "seconds": 1.5}] and run["notes"] == ["rate limited twice"]
    assert run["failed_parts"] == [{"part": "apps", "error": "HTTP 500"}] and page2["next"] is None


def test_reassign_with_if_match_and_the_rules_of_the_service(session, api, api_world, make_token):
    a = api_world.a
    token = make_token(a.manager_user)
    item = a.items[3]
    etag = api(token).get(f"/items/{item.id}").headers["ETag"]
    own = api(token).post(f"/items/{item.id}/reassign", {"to_email": item.person_email, "reason": "theirs"})
    assert own.status_code == 400 and "own access" in own.get_json()["error"]["message"]
    moved = api(token).post(f"/items/{item.id}/reassign", {"to_email": "bruno.boss@acme.example", "reason": "leave"},
                            headers={"If-Match": etag})
    assert moved.status_code == 200 and moved.get_json()["reviewer_id"] == api_world.b_user.identity_id
    # it left the manager's items: now it is someone else's (404), and Bruno's token sees it
    assert api(token).get(f"/items/{item.id}").status_code == 404
    bruno = make_token(api_world.b_user)
    assert api(bruno).get(f"/items/{item.id}").status_code == 200
    auditor = make_token(api_world.auditor)
    refused = api(auditor).post(f"/items/{item.id}/reassign", {"to_email": a.manager_user.email, "reason": "x"})
    assert refused.status_code == 403
    session.expire_all()
    assert session.get(ReviewItem, item.id).reviewer_id == api_world.b_user.identity_id


def test_close_queues_remediation_listed_by_the_api_and_the_audit_log_pages(session, api, api_world, make_token):
    a = api_world.a
    reviewer = make_token(a.manager_user)
    revoked = a.items[1]
    assert api(reviewer).post(f"/items/{revoked.id}/decision",
                              {"decision": "revoke", "comment": "not needed"}).status_code == 200
    admin = make_token(api_world.admin, ["reviews:read", "reviews:write", "audit:read"])
    closed = api(admin).post(f"/campaigns/{a.campaign.id}/close")
    assert closed.status_code == 200, closed.get_json()
    assert api(admin).post(f"/campaigns/{a.campaign.id}/close").status_code == 409
    listed = api(admin).get(f"/remediations?campaign_id={a.campaign.id}").get_json()["data"]
    rem = session.scalar(select(Remediation).where(Remediation.item_id == revoked.id))
    assert [r["id"] for r in listed] == [rem.id] and listed[0]["mode"] == "manual"
    assert api(admin).get(f"/remediations/{rem.id}").get_json()["comment"] == "not needed"
    assert api(admin).get(f"/remediations/{rem.id + 1000}").status_code == 404
    # the audit log: newest first, keyset pages that meet without a gap
    first = api(admin).get("/audit/events?limit=3&action=api.").get_json()
    second = api(admin).get(f"/audit/events?limit=3&action=api.&after={first['next']}").get_json()
    seqs = [e["seq"] for e in first["data"] + second["data"]]
    assert seqs == list(session.scalars(select(AuditEvent.seq).where(AuditEvent.action == "api.call",
                                                                     AuditEvent.seq <= seqs[0])
                                        .order_by(AuditEvent.seq.desc()).limit(6)))
    assert {e["action"] for e in first["data"] + second["data"]} == {"api.call"}
    decided = api(admin).get("/audit/events?action=review.decide").get_json()["data"]
    assert [(e["object_id"], e["actor"]) for e in decided] == [(str(revoked.id), a.manager_user.email)]


def test_evidence_bundle_from_request_to_download(app, session, api, api_world, make_token, settings):
    from attest.audit import export_jobs

    auditor = make_token(api_world.auditor, ["audit:read"])
    campaign = api_world.a.campaign
    started = api(auditor).post(f"/campaigns/{campaign.id}/evidence-exports")
    assert started.status_code == 202 and started.get_json()["status"] == "queued"
    export_id = started.get_json()["id"]
    again = api(auditor).post(f"/campaigns/{campaign.id}/evidence-exports").get_json()
    assert again["id"] == export_id and again["created"] is False
    assert api(auditor).get(f"/evidence-exports/{export_id}/download").status_code == 409
    # the scheduler's side: the bundle is written to the instance folder
    row = export_jobs.get_export(session, export_id)
    folder = export_jobs.export_dir(app.extensions["attest"].settings)
    (folder / f"bundle-{export_id}.zip").write_bytes(b"PK\x05\x06" + b"\0" * 18)
    row.status, row.file_path, row.finished_at = "done", f"evidence/bundle-{export_id}.zip", utcnow()
    session.commit()
    status = api(auditor).get(f"/evidence-exports/{export_id}").get_json()
    assert status["available"] is True
    download = api(auditor).get(f"/evidence-exports/{export_id}/download")
    assert download.status_code == 200 and download.mimetype == "application/zip"
    assert download.data.startswith(b"PK")
    assert session.scalars(select(AuditEvent).where(AuditEvent.action == "evidence.downloaded")).one().actor == \
        api_world.auditor.email


def test_source_sync_of_a_disabled_source_is_a_conflict(session, api, api_world, make_token):
    token = make_token(api_world.admin, ["sources:write"])
    source = session.get(Source, api_world.a.source.id)
    source.enabled = False
    session.commit()
    r = api(token).post(f"/sources/{source.id}/sync")
    assert r.status_code == 409 and "disabled" in r.get_json()["error"]["message"]


def test_an_accounts_access_history(session, api, api_world, make_token):
    from attest.entitlements.models import AccessChange, Grant

    item = api_world.a.items[0]
    grant = session.get(Grant, item.grant_id)
    t0 = utcnow() - timedelta(days=10)
    session.add_all([AccessChange(source_id=grant.source_id, grant_id=grant.id, change="added", at=t0),
                     AccessChange(source_id=grant.source_id, grant_id=grant.id, change="ended", reason="revoked",
                                  at=t0 + timedelta(days=5))])
    session.commit()
    token = make_token(api_world.auditor, ["entitlements:read"])
    first = api(token).get(f"/accounts/{item.account_id}/changes?limit=1").get_json()
    assert [(c["change"], c["reason"], c["grant_id"]) for c in first["data"]] == [("ended", "revoked", grant.id)]
    rest = api(token).get(f"/accounts/{item.account_id}/changes?after={first['next']}").get_json()
    assert [c["change"] for c in rest["data"]] == ["added"] and rest["next"] is None
    recent = api(token).get(f"/accounts/{item.account_id}/changes?since={(t0 + timedelta(days=1)):%Y-%m-%dT%H:%M:%SZ}")
    assert [c["change"] for c in recent.get_json()["data"]] == ["ended"]
    assert api(token).get("/accounts/987654321/changes").status_code == 404


def test_a_co_reviewer_lists_the_items_escalated_to_them(session, api, api_world, make_token):
    escalated = session.get(ReviewItem, api_world.a.items[5].id)
    escalated.co_reviewer_id = api_world.b_user.identity_id
    session.commit()
    bruno = make_token(api_world.b_user)
    cid = api_world.a.campaign.id
    own = {i["id"] for i in api(bruno).get(f"/campaigns/{cid}/items").get_json()["data"]}
    assert own == {i.id for i in api_world.b_items}
    co = api(bruno).get(f"/campaigns/{cid}/items?role=co_reviewer").get_json()["data"]
    assert [i["id"] for i in co] == [escalated.id]
    assert api(bruno).get(f"/items/{escalated.id}").status_code == 200


def test_link_an_orphaned_account_to_a_person_with_if_match(session, api, api_world, make_token):
    from attest.entitlements.models import Account

    account = Account(source_id=api_world.a.source.id, external_id="orphan-1", login="svc-backup", kind="human")
    session.add(account)
    session.commit()
    person = api_world.a.people[2]
    reader = make_token(api_world.auditor, ["entitlements:read"])
    etag = api(reader).get(f"/accounts/{account.id}").headers["ETag"]
    assert api(reader).client.put(f"/api/v1/accounts/{account.id}/link", json={"identity_id": person.id},
                                  headers={"Authorization": f"Bearer {reader}"}).status_code == 403
    admin = make_token(api_world.admin, ["entitlements:read", "entitlements:write"])
    put = api(admin).client.put
    auth = {"Authorization": f"Bearer {admin}"}
    assert put(f"/api/v1/accounts/{account.id}/link", json={"identity_id": 987654}, headers=auth).status_code == 400
    linked = put(f"/api/v1/accounts/{account.id}/link", json={"identity_id": person.id},
                 headers={**auth, "If-Match": etag})
    assert linked.status_code == 200 and linked.get_json()["identity_id"] == person.id
    assert linked.get_json()["link_method"] == "manual"
    stale = put(f"/api/v1/accounts/{account.id}/link", json={"identity_id": None}, headers={**auth, "If-Match": etag})
    assert stale.status_code == 412
    session.expire_all()
    assert session.get(Account, account.id).identity_id == person.id
    event = session.scalars(select(AuditEvent).where(AuditEvent.action == "account.link")).one()
    assert event.actor == api_world.admin.email and event.after["identity_id"] == person.id


def test_who_held_a_resource_now_and_at_a_moment(session, api, api_world, make_token):
    item = api_world.a.items[0]
    token = make_token(api_world.auditor, ["entitlements:read"])
    now = api(token).get(f"/resources/{item.resource_id}/grants").get_json()
    assert [g["id"] for g in now["data"]] == [item.grant_id] and now["next"] is None
    # before Attest first read the source it cannot say: 409, not an empty list
    before = api(token).get(f"/resources/{item.resource_id}/grants?at=2001-01-01")
    assert before.status_code == 409 and before.get_json()["error"]["code"] == "unknown_at_that_moment"
    assert api(token).get("/resources/987654321/grants").status_code == 404
