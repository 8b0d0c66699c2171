"""The managed-elsewhere contract (attest/connectors/managed.py): emitted, read with its precedence, the
old keys of rows synced before it, and one sentence per kind."""

from __future__ import annotations

import pytest

from attest.connectors.managed import MANAGED_BY, ManagedElsewhere, ManagedKind, emit, managed_elsewhere


def test_the_most_specific_record_wins():
    rule, team, ps = (emit(ManagedKind.GROUP_RULE, "Sales by department"), emit(ManagedKind.IDP_TEAM_SYNC, "GH-Eng"),
                      emit(ManagedKind.PERMISSION_SET, "permission set Admin"))
    assert managed_elsewhere(ps, team, rule).kind == ManagedKind.PERMISSION_SET
    assert managed_elsewhere({}, team, rule).kind == ManagedKind.IDP_TEAM_SYNC
    assert managed_elsewhere(None, None, rule) == ManagedElsewhere(ManagedKind.GROUP_RULE, "Sales by department")
    assert managed_elsewhere({}, {}, {"type": "OKTA_GROUP", "rule_managed": False}) is None


@pytest.mark.parametrize(("grant", "entitlement", "resource", "kind", "by"), [
    ({}, {}, {"rule_managed": True, "rules": ["Engineers by department"]}, ManagedKind.GROUP_RULE, "Engineers by department"),
    ({}, {"rules": ["A", "B"]}, {}, ManagedKind.GROUP_RULE, "A, B"),
    ({}, {}, {"rules": [{"name": "Everyone in Sales"}]}, ManagedKind.GROUP_RULE, "Everyone in Sales"),
    ({}, {}, {"rule_managed": True}, ManagedKind.GROUP_RULE, ""),
    ({"scope": "GROUP"}, {}, {}, ManagedKind.GROUP_ASSIGNMENT, ""),
    ({}, {}, {"type": "APP_GROUP", "mastered_by": "0oa1ad"}, ManagedKind.IMPORTED_GROUP, "0oa1ad"),
    ({}, {}, {"type": "APP_GROUP"}, ManagedKind.IMPORTED_GROUP, ""),
    ({}, {}, {"type": "BUILT_IN", "mastered_by": "Okta (built-in group)"}, ManagedKind.BUILT_IN, "Okta"),
])
def test_rows_synced_before_the_contract_are_read_by_their_old_keys(grant, entitlement, resource, kind, by):
    found = managed_elsewhere(grant, entitlement, resource)
    assert found is not None and (found.kind, found.by) == (kind, by)


def test_the_contract_beats_old_keys_and_a_malformed_one_is_ignored():
    old = {"rules": ["Old rule"], "rule_managed": True}
    assert managed_elsewhere({}, {}, {**old, **emit(ManagedKind.GROUP_RULE, "New rule")}).by == "New rule"
    assert managed_elsewhere({}, {}, {MANAGED_BY: {"kind": "nonsense"}}) is None
    assert managed_elsewhere({}, {}, {MANAGED_BY: "group_rule"}) is None
    assert managed_elsewhere({MANAGED_BY: None}, {}, old).by == "Old rule"


@pytest.mark.parametrize("kind", list(ManagedKind))
def test_every_kind_says_who_holds_it_and_where_to_change_it(kind):
    found = ManagedElsewhere.from_attribute(emit(kind, "THE-HOLDER", how_to="Ask the IdP team.")[MANAGED_BY])
    text = found.sentence("ada@acme.example", "Payroll")
    assert "THE-HOLDER" in text and "Payroll" in text and text.endswith("Ask the IdP team.")
    assert " instead" in text or "cannot" in text


@pytest.mark.parametrize("kind", list(ManagedKind))
def test_a_sentence_reads_whole_when_nobody_or_an_odd_name_is_named(kind):
    unnamed = ManagedElsewhere(kind).sentence("", "")
    assert "the account" in unnamed and "the resource" in unnamed
    assert "{" not in unnamed and "  " not in unnamed and "()" not in unnamed and " ;" not in unnamed
    # names are put into the sentence as they are, never read as a template
    odd = ManagedElsewhere(kind, "{p} {by}", "{r}").sentence("{extra}", "{0}")
    assert "{p} {by}" in odd and "({r})" in odd and "{0}" in odd
