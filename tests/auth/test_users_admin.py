"""The Users page: admins grant/remove Attest roles and link users to people; auditors only read."""

from __future__ import annotations

from sqlalchemy import select

from attest.auth.models import User
from attest.trail.models import AuditEvent
from tests.factories import login_as, make_identity, make_user


def _token(client) -> str:
    return client.get("/admin/users").get_data(as_text=True).split('name="csrf_token" value="')[1].split('"')[0]


def _audit(session, action):
    session.expire_all()
    return list(session.scalars(select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.seq)))


def test_admin_grants_and_removes_roles_audited(app, client, session):
    admin = make_user(session, "root@acme.example", roles=["admin"])
    lin = make_user(session, "lin@acme.example")
    lin.idp_roles = ["auditor"]
    session.commit()
    login_as(app, client, admin)
    page = client.get("/admin/users").get_data(as_text=True)
    assert "lin@acme.example" in page and "not linked" in page and "Users" in page
    token = _token(client)
    response = client.post(f"/admin/users/{lin.id}/roles", data={"roles": ["admin", "auditor"], "csrf_token": token})
    assert response.status_code == 302
    session.expire_all()
    assert session.get(User, lin.id).local_roles == ["admin", "auditor"]
    client.post(f"/admin/users/{lin.id}/roles", data={"roles": [], "csrf_token": token})
    session.expire_all()
    user = session.get(User, lin.id)
    assert user.local_roles == [] and user.idp_roles == ["auditor"]  # the IdP's role is not Attest's to remove
    changes = _audit(session, "user.roles")
    assert [(c.before, c.after) for c in changes] == [
        ({"local_roles": []}, {"local_roles": ["admin", "auditor"]}),
        ({"local_roles": ["admin", "auditor"]}, {"local_roles": []})]
    assert all(c.actor == "root@acme.example" for c in changes)
    # the same roles again change nothing and add no event
    client.post(f"/admin/users/{lin.id}/roles", data={"roles": [], "csrf_token": token})
    assert len(_audit(session, "user.roles")) == 2


def test_admin_cannot_remove_their_own_admin_role(app, client, session):
    admin = make_user(session, "root@acme.example", roles=["admin"])
    session.commit()
    login_as(app, client, admin)
    response = client.post(f"/admin/users/{admin.id}/roles", data={"roles": ["auditor"], "csrf_token": _token(client)},
                           follow_redirects=True)
    assert "cannot remove your own admin role" in response.get_data(as_text=True)
    session.expire_all()
    assert session.get(User, admin.id).local_roles == ["admin"]
    assert _audit(session, "user.roles") == []


def test_admin_links_and_unlinks_a_person(app, client, session):
    admin = make_user(session, "root@acme.example", roles=["admin"])
    lin = make_user(session, "lin.sso@acme.example")
    person = make_identity(session, "lin@acme.example", "Lin Chen")
    session.commit()
    login_as(app, client, admin)
    token = _token(client)
    bad = client.post(f"/admin/users/{lin.id}/identity", data={"person": "nobody@acme.example", "csrf_token": token},
                      follow_redirects=True)
    assert "No person with the e-mail or id" in bad.get_data(as_text=True)
    assert _audit(session, "user.link") == []
    ok = client.post(f"/admin/users/{lin.id}/identity", data={"person": "LIN@acme.example", "csrf_token": token},
                     follow_redirects=True)
    assert "Linked lin.sso@acme.example to Lin Chen" in ok.get_data(as_text=True)
    session.expire_all()
    assert session.get(User, lin.id).identity_id == person.id
    client.post(f"/admin/users/{lin.id}/identity", data={"person": "", "csrf_token": token})
    session.expire_all()
    assert session.get(User, lin.id).identity_id is None
    assert [e.after["identity_id"] for e in _audit(session, "user.link")] == [person.id, None]
    assert client.post("/admin/users/99999/identity", data={"person": "", "csrf_token": token}).status_code == 404


def test_auditor_reads_the_page_but_cannot_change_anything(app, client, session):
    auditor = make_user(session, "grc@acme.example", roles=["auditor"])
    lin = make_user(session, "lin@acme.example")
    session.commit()
    login_as(app, client, auditor)
    page = client.get("/admin/users")
    assert page.status_code == 200 and 'name="roles"' not in page.get_data(as_text=True)
    token = page.get_data(as_text=True).split('name="csrf-token" content="')[1].split('"')[0]
    assert client.post(f"/admin/users/{lin.id}/roles", data={"roles": ["admin"], "csrf_token": token}).status_code == 403
    assert client.post(f"/admin/users/{lin.id}/identity", data={"person": "", "csrf_token": token}).status_code == 403
    session.expire_all()
    assert session.get(User, lin.id).local_roles == []


def test_reviewer_cannot_see_the_users_page(app, client, session):
    reviewer = make_user(session, "lin@acme.example")
    session.commit()
    login_as(app, client, reviewer)
    assert client.get("/admin/users").status_code == 403
    assert "/admin/users" not in client.get("/").get_data(as_text=True)


def test_users_page_search_and_paging(app, client, session):
    admin = make_user(session, "root@acme.example", roles=["admin"])
    for i in range(105):
        make_user(session, f"user{i:03d}@acme.example")
    session.commit()
    login_as(app, client, admin)
    first = client.get("/admin/users").get_data(as_text=True)
    # 100 a page by e-mail: root@ then user000..user098
    assert "user000@acme.example" in first and "user098@acme.example" in first and "user099@" not in first
    assert "Next page" in first and "after=user098%40acme.example" in first
    second = client.get("/admin/users?after=user098@acme.example").get_data(as_text=True)
    assert "user099@acme.example" in second and "user104@acme.example" in second and "user000@" not in second
    found = client.get("/admin/users?q=USER042").get_data(as_text=True)
    assert "user042@acme.example" in found and "user043@acme.example" not in found
