"""Campaign definitions: YAML validation names the field and line, defaults are filled, references are
checked at create time, changes are audited, the shipped examples load."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sqlalchemy import select

from attest.reviews.definitions import (
    DEFAULTS,
    DefinitionError,
    create_definition,
    parse_definition,
    update_definition,
)
from attest.schedules import cron_trigger
from attest.trail.models import AuditEvent
from tests.factories import make_identity, make_source

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "campaigns"

GOOD = """\
name: Finance quarterly
description: Finance access
scope:
  resource_types: [app]
  resource_names: ["Net*", "Work?ay"]
  identity:
    department: [Finance]
stages:
  - reviewer: manager
  - reviewer: identity
    identity: CISO@acme.example
fallback_reviewer: iam@acme.example
timing:
  duration_days: 10
  reminders_days_before_due: [2, 5, 5]
  no_response: flag
schedule: "0 9 1 1,4,7,10 *"
controls: [SOC 2 CC6.2]
"""


def error(text_or_dict) -> DefinitionError:
    with pytest.raises(DefinitionError) as info:
        parse_definition(text_or_dict)
    return info.value


def test_a_typo_names_the_field_its_line_and_the_likely_key():
    err = error("name: x\nscope:\n  sources: []\n  resource_typs: [group]\n")
    assert err.field == "scope.resource_typs" and err.line == 4
    assert str(err) == "scope.resource_typs (line 4): unknown key; did you mean resource_types?"


@pytest.mark.parametrize("text, field, line, words", [
    ("name: x\nstages:\n  - reviewer: manger\n", "stages[0].reviewer", 3, "did you mean manager?"),
    ("name: x\ntiming:\n  no_response: delete\n", "timing.no_response", 3, "keep, revoke, flag"),
    ("name: x\ntiming:\n  duration_days: two weeks\n", "timing.duration_days", 3, "whole number"),
    ("name: x\ntiming:\n  duration_days: 0\n", "timing.duration_days", 3, "between 1 and 365"),
    ("name: x\nschedule: '0 9 1 1,4,7,10'\n", "schedule", 2, "not a valid cron expression"),
    ("name: x\nstages:\n  - reviewer: identity\n", "stages[0].identity", 3, "needs the e-mail"),
    ("name: x\nstages:\n  - reviewer: manager\n    identity: a@b.example\n", "stages[0].identity", 4, "only used with"),
    ("name: x\nstages: []\n", "stages", 2, "one or more"),
    ("name: x\nfallback_reviewer: iam-team\n", "fallback_reviewer", 2, "e-mail address"),
    ("name: x\nscope:\n  privileged_only: yes please\n", "scope.privileged_only", 3, "true or false"),
    ("name: x\nscope:\n  identity:\n    status: [fired]\n", "scope.identity.status[0]", 4, "active, suspended, terminated"),
    ("name: x\nscope:\n  resource_names: ['[a-z]*']\n", "scope.resource_names[0]", 3, "not supported"),
    ("name: x\ntiming:\n  duration_days: 5\n  reminders_days_before_due: [7]\n",
     "timing.reminders_days_before_due[0]", 4, "not inside a 5-day campaign"),
    ("description: no name\n", "name", None, "is required"),
    ("name: x\nname: y\n", "name", 2, "duplicate key"),
])
def test_validation_messages(text, field, line, words):
    err = error(text)
    assert err.field == field and err.line == line and words in str(err), str(err)


def test_broken_yaml_says_where():
    err = error("name: x\nscope: [unclosed\n")
    assert err.line is not None and "not valid YAML" in str(err)


def test_defaults_are_filled_and_values_normalized():
    spec = parse_definition(GOOD)
    assert set(spec) == set(DEFAULTS)
    assert spec["scope"]["include_inherited"] is True and spec["scope"]["include_service_accounts"] is False
    assert spec["stages"] == [{"reviewer": "manager", "identity": None},
                              {"reviewer": "identity", "identity": "ciso@acme.example"}]
    assert spec["timing"] == {"duration_days": 10, "reminders_days_before_due": [5, 2],
                              "escalate_after_days_overdue": 2, "no_response": "flag"}
    assert spec["rules"] == {"comment_required": "on_revoke", "remediation": "manual", "bulk_approve_flagged": False}
    minimal = parse_definition({"name": "Everything"})
    assert minimal["stages"] == [{"reviewer": "manager", "identity": None}] and minimal["schedule"] is None


def test_create_checks_identities_and_sources_exist(session):
    with pytest.raises(DefinitionError) as info:
        create_definition(session, GOOD, "admin@acme.example")
    assert info.value.field == "stages[1].identity" and info.value.line == 11
    assert "no identity with e-mail ciso@acme.example" in str(info.value)
    make_identity(session, "ciso@acme.example")
    with pytest.raises(DefinitionError) as info:
        create_definition(session, GOOD, "admin@acme.example")
    assert info.value.field == "fallback_reviewer" and info.value.line == 12
    make_identity(session, "iam@acme.example", status="terminated")
    with pytest.raises(DefinitionError, match="terminated and cannot review"):
        create_definition(session, GOOD, "admin@acme.example")
    with pytest.raises(DefinitionError) as info:
        create_definition(session, {"name": "x", "scope": {"sources": ["octa"]}}, "admin@acme.example")
    assert info.value.field == "scope.sources[0]" and "no source named 'octa'" in str(info.value)
    make_source(session, "okta")
    with pytest.raises(DefinitionError, match="did you mean okta"):
        create_definition(session, {"name": "x", "scope": {"sources": ["octa"]}}, "admin@acme.example")
    assert session.scalars(select(AuditEvent).where(AuditEvent.action == "definition.create")).first() is None


def test_create_and_update_are_audited_and_names_unique(session):
    make_identity(session, "ciso@acme.example")
    make_identity(session, "iam@acme.example")
    definition = create_definition(session, GOOD, "admin@acme.example", owner_user_id=None)
    assert definition.id and definition.source_yaml == GOOD and definition.schedule == "0 9 1 1,4,7,10 *"
    with pytest.raises(DefinitionError) as info:
        create_definition(session, GOOD.replace("Finance quarterly", "FINANCE QUARTERLY"), "admin@acme.example")
    assert info.value.field == "name" and info.value.line == 1 and "already exists" in str(info.value)
    updated = update_definition(session, definition.id, GOOD.replace("duration_days: 10", "duration_days: 20"),
                                "admin@acme.example")
    assert updated.spec["timing"]["duration_days"] == 20
    events = session.scalars(select(AuditEvent).where(AuditEvent.object_type == "campaign_definition")
                             .order_by(AuditEvent.seq)).all()
    assert [e.action for e in events] == ["definition.create", "definition.update"]
    assert events[1].before["spec"]["timing"]["duration_days"] == 10
    assert events[1].after["spec"]["timing"]["duration_days"] == 20


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_examples_load(session, path):
    make_identity(session, "grace.hopper1@acme.example")
    definition = create_definition(session, path.read_text(), "admin@acme.example")
    assert definition.spec["controls"] and definition.schedule


def test_the_examples_name_people_of_the_make_run_demo():
    # `make run` syncs the sandbox Okta; the README's first campaign is created from these files
    from attest.connectors.sandbox.okta_fake import OktaFake

    people = {u["profile"]["email"] for u in OktaFake(users=20).users.values() if u["status"] == "ACTIVE"}
    named = set()
    for path in EXAMPLES.glob("*.yaml"):
        named |= set(re.findall(r"[\w.+-]+@[\w.-]+", path.read_text()))
    assert named and named <= people, named - people


def test_there_are_three_examples():
    assert {p.name for p in EXAMPLES.glob("*.yaml")} == {
        "quarterly-manager-review.yaml", "monthly-privileged-owner-review.yaml", "orphaned-and-terminated.yaml"}


def test_schedule_is_standard_crontab_with_sunday_as_0_or_7():
    from datetime import UTC, datetime

    from attest.reviews.definitions import parse_definition

    for expr in ("0 9 * * 1", "0 9 * * 7", "0 9 * * 0"):
        spec = parse_definition({"name": "x", "stages": [{"reviewer": "manager"}], "schedule": expr})
        assert spec["schedule"] == expr
    monday = cron_trigger("0 9 * * 1").get_next_fire_time(None, datetime(2026, 11, 28, tzinfo=UTC))
    assert monday.weekday() == 0  # 2026-11-30 is a Monday
    sunday = cron_trigger("0 9 * * 7").get_next_fire_time(None, datetime(2026, 11, 28, tzinfo=UTC))
    assert sunday.weekday() == 6


def test_a_short_campaign_fits_the_default_reminders_instead_of_failing_on_a_line_nobody_wrote():
    # issue 20: a 5-day campaign in YAML failed on the default reminders (7 days) at a line the user never wrote
    five = parse_definition("name: Short\ntiming:\n  duration_days: 5\n")
    assert five["timing"]["reminders_days_before_due"] == [2]
    assert parse_definition("name: Tiny\ntiming:\n  duration_days: 2\n")["timing"]["reminders_days_before_due"] == []
    assert parse_definition({"name": "Short", "timing": {"duration_days": 5}})["timing"]["reminders_days_before_due"] == [2]
    assert parse_definition("name: Long\n")["timing"]["reminders_days_before_due"] == [7, 2]
    # reminders the user wrote are still checked, and the error points at the one outside the campaign
    err = error("name: x\ntiming:\n  duration_days: 5\n  reminders_days_before_due:\n    - 2\n    - 6\n")
    assert (err.field, err.line) == ("timing.reminders_days_before_due[1]", 6)
    assert "a reminder 6 days before due is not inside a 5-day campaign" in str(err)
    # a reminder written without a duration is measured against the default duration, on the user's line
    err = error("name: x\ntiming:\n  reminders_days_before_due: [20]\n")
    assert err.line == 3 and "not inside a 14-day campaign" in str(err)


def test_every_error_points_at_a_line_the_user_wrote():
    text = "name: x\nstages:\n  - identity: ciso@acme.example\ncontrols: SOC 2\nrisk:\n  dormant_days: 0\n"
    err = error(text)
    written = {i + 1 for i, line in enumerate(text.splitlines()) if line.strip()}
    assert err.problems[0] == (err.field, err.line, err.reason)
    assert {(f, line) for f, line, _ in err.problems} == {("stages[0].reviewer", 3), ("risk.dormant_days", 6)}
    assert {line for _, line, _ in err.problems} <= written
    assert str(err) == "stages[0].reviewer (line 3): is required (one of manager, resource_owner, identity)"


@pytest.mark.parametrize("address", ["a..b@acme.example", "iam@acme", "iam@-acme.example", "iam@acme.local", "@acme.example"])
def test_reviewer_emails_are_checked_by_email_validator(address):
    err = error(f"name: x\nfallback_reviewer: '{address}'\n")
    assert (err.field, err.line) == ("fallback_reviewer", 2)
    assert "must be the e-mail address of an identity" in str(err)


def test_reviewer_emails_are_stored_lower_case():
    spec = parse_definition("name: x\nfallback_reviewer: ' IAM@Acme.Example '\nstages: [{reviewer: identity, identity: CISO@acme.example}]\n")
    assert spec["fallback_reviewer"] == "iam@acme.example" and spec["stages"][0]["identity"] == "ciso@acme.example"


def test_a_control_character_is_a_definition_error_with_its_line():
    # PyYAML's reader refused it before the parser's own error handling (the API answered it by hand)
    err = error("name: x\ndescription: bell\x07\n")
    assert err.line == 2 and "not valid YAML: character #x0007 is not allowed" in str(err)
