"""A number setting's range is declared once, on its Setting, and holds wherever a connector is configured:
what an admin enters (the registry, behind the CLI and the sources page) and what a connector is built with."""

from __future__ import annotations

import pytest

from attest.connectors.registry import KINDS, connector_class, validate_settings

# what each kind needs besides the setting under test, to get as far as the range check
REQUIRED = {"okta": ({"domain": "https://acme.okta.com"}, {"token": "t"}),
            "github": ({"orgs": "acme"}, {"token": "t"}),
            "aws": ({}, {}), "demo": ({}, {})}

BOUNDED = [(kind, spec) for kind in sorted(KINDS) for spec in connector_class(kind).SETTINGS if spec.bounds]


def test_each_real_connector_bounds_its_concurrency():
    assert {(kind, spec.name, spec.bounds) for kind, spec in BOUNDED} >= {
        ("aws", "concurrency", (1, 64)), ("github", "concurrency", (1, 16)), ("okta", "concurrency", (1, 16)),
        ("okta", "log_days", (0, 90))}


@pytest.mark.parametrize(("kind", "spec"), BOUNDED, ids=[f"{k}-{s.name}" for k, s in BOUNDED])
def test_a_value_outside_the_range_is_refused_in_the_same_words_everywhere(kind, spec):
    settings, secrets = REQUIRED[kind]
    low, high = spec.bounds
    for inside in (low, high):
        clean, _ = validate_settings(kind, {**settings, spec.name: str(inside)}, secrets)
        assert clean[spec.name] == inside
        connector_class(kind)({**settings, spec.name: inside}, secrets).close()
    for outside in (low - 1, high + 1):
        words = f"setting {spec.name!r} must be between {low} and {high}, not {outside}"
        with pytest.raises(ValueError, match=words):
            validate_settings(kind, {**settings, spec.name: str(outside)}, secrets)
        with pytest.raises(ValueError, match=words):  # built directly, as the sync and the tests build them
            connector_class(kind)({**settings, spec.name: outside}, secrets)
