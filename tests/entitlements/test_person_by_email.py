"""person_by_email: the one rule that finds the person with an e-mail (DESIGN.md, "One home per rule").

Each tie-break has its own test, and every lookup of a person by e-mail in the app is checked to answer
with the same person."""

from __future__ import annotations

from datetime import UTC, datetime

from attest.auth.login import find_identity_by_email
from attest.auth.oidc import find_identity as oidc_find_identity
from attest.entitlements.queries import person_by_email
from attest.reviews.definitions import find_identity as definition_find_identity
from attest.reviews.views import _find_person
from tests.factories import make_identity, make_source


def test_the_address_is_matched_case_insensitively_and_trimmed(session):
    ada = make_identity(session, "ada@acme.example")
    assert person_by_email(session, "  ADA@Acme.Example ") == ada
    assert person_by_email(session, "") is None
    assert person_by_email(session, None) is None
    assert person_by_email(session, "nobody@acme.example") is None


def test_an_ended_identity_is_never_the_person(session):
    make_identity(session, "gone@acme.example", ended_at=datetime(2026, 1, 1, tzinfo=UTC))
    assert person_by_email(session, "gone@acme.example") is None


def test_tie_break_1_active_before_suspended_before_terminated(session):
    hr = make_source(session, "hr", authoritative=True)
    terminated = make_identity(session, "sam@acme.example", status="terminated", source=hr, external_id="t")
    suspended = make_identity(session, "sam@acme.example", status="suspended", source=hr, external_id="s")
    assert person_by_email(session, "sam@acme.example") == suspended
    active = make_identity(session, "sam@acme.example", status="active", external_id="a")  # not authoritative
    assert person_by_email(session, "sam@acme.example") == active
    assert terminated.id < suspended.id < active.id  # neither the oldest nor the authoritative one wins


def test_tie_break_2_the_authoritative_source_before_another(session):
    directory = make_source(session, "directory")
    hr = make_source(session, "hr", authoritative=True)
    make_identity(session, "kim@acme.example", source=directory, external_id="d")
    from_hr = make_identity(session, "kim@acme.example", source=hr, external_id="h")
    assert person_by_email(session, "kim@acme.example") == from_hr


def test_tie_break_3_the_lowest_id(session):
    directory = make_source(session, "directory")
    first = make_identity(session, "lee@acme.example", source=directory, external_id="1")
    make_identity(session, "lee@acme.example", source=directory, external_id="2")
    assert person_by_email(session, "lee@acme.example") == first


def test_every_lookup_by_email_answers_with_the_same_person(session, settings):
    directory = make_source(session, "directory")
    hr = make_source(session, "hr", authoritative=True)
    make_identity(session, "max@acme.example", source=directory, external_id="d")
    make_identity(session, "max@acme.example", source=hr, status="terminated", external_id="t")
    expected = make_identity(session, "max@acme.example", source=hr, external_id="h")
    settings = settings.replace(oidc_link_attribute="email")
    assert find_identity_by_email(session, "MAX@acme.example") == expected  # sign-in, user admin
    assert oidc_find_identity(session, settings, "MAX@acme.example") == expected  # single sign-on
    assert definition_find_identity(session, "MAX@acme.example") == expected  # campaign definitions
    assert _find_person(session, "MAX@acme.example") == expected  # reassign, delegate


def test_single_sign_on_links_people_only(session, settings):
    make_identity(session, "bot@acme.example", kind="service")
    assert person_by_email(session, "bot@acme.example") is not None
    assert oidc_find_identity(session, settings.replace(oidc_link_attribute="email"), "bot@acme.example") is None
