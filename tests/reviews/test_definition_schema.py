"""The campaign definition models are public: importable, documented, and the stored spec is their dump
(the REST API's schema is generated from them)."""

from __future__ import annotations

from attest.reviews.definition_schema import CampaignDefinitionSpec, Timing
from attest.reviews.definitions import DEFAULTS, parse_definition


def test_the_json_schema_documents_every_field():
    schema = CampaignDefinitionSpec.model_json_schema()
    assert set(schema["properties"]) == set(DEFAULTS) and schema["required"] == ["name"]
    undocumented = [f"{model}.{name}" for model, part in [("definition", schema), *schema["$defs"].items()]
                    for name, prop in part.get("properties", {}).items() if not prop.get("description")]
    assert not undocumented
    assert schema["$defs"]["Timing"]["properties"]["no_response"]["enum"] == ["keep", "revoke", "flag"]
    assert schema["$defs"]["Stage"]["properties"]["reviewer"]["enum"] == ["manager", "resource_owner", "identity"]
    fallback = schema["properties"]["fallback_reviewer"]["anyOf"][0]
    assert fallback == {"format": "email", "type": "string"}
    assert schema["$defs"]["Scope"]["additionalProperties"] is False


def test_the_stored_spec_is_the_models_dump():
    text = "name: Q\nscope: {sources: [okta]}\ntiming: {duration_days: 5}\n"
    assert parse_definition(text) == CampaignDefinitionSpec.model_validate(
        {"name": "Q", "scope": {"sources": ["okta"]}, "timing": {"duration_days": 5}}).model_dump()
    assert Timing(duration_days=3).reminders_days_before_due == [2]
