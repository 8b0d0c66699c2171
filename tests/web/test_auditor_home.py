"""The auditor's home and menu (issue 20, part 7): a sign-in not linked to a person is not offered "My
reviews" (which could only say "not linked to a person"); an auditor's home says what an auditor does here
and links to it (evidence, audit log, campaigns); whoever has an identity keeps "My reviews"."""

from __future__ import annotations

from tests.factories import login_as, make_identity, make_user


def _home(app, client, user) -> str:
    login_as(app, client, user)
    response = client.get("/")
    assert response.status_code == 200
    return response.get_data(as_text=True)


def test_auditor_without_a_person_gets_an_auditors_home_and_no_my_reviews(app, client, session):
    auditor = make_user(session, "audrey.auditor@acme.example", roles=["auditor"])
    session.commit()
    page = _home(app, client, auditor)
    assert "Open my reviews" not in page and ">My reviews<" not in page and 'href="/reviews"' not in page
    assert "not linked to a person" not in page
    assert "As an auditor" in page
    for href in ('href="/evidence"', 'href="/audit"', 'href="/campaigns"'):
        assert href in page.split('auditor-home', 1)[1], href


def test_a_user_with_a_person_is_offered_my_reviews(app, client, session):
    person = make_identity(session, "maria.manager@acme.example", name="Maria Manager")
    manager = make_user(session, "maria.manager@acme.example", identity=person)
    session.commit()
    page = _home(app, client, manager)
    assert "Open my reviews" in page and ">My reviews<" in page and "As an auditor" not in page


def test_a_reviewer_without_a_person_is_told_why_and_not_sent_to_an_empty_inbox(app, client, session):
    user = make_user(session, "nobody@acme.example")
    session.commit()
    page = _home(app, client, user)
    assert "not linked to a person" in page and "Open my reviews" not in page and ">My reviews<" not in page
