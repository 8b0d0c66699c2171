"""Schemathesis 4 against the live app's /api/v1/openapi.json (in-process WSGI, bounded and derandomized):
for every operation, generated requests with an admin's all-scope token must never get a 5xx and every
answer must match the document (the response schema of its status, and a documented status).

Bounded for `make test`: a few examples per operation, derandomized (a fixed seed) so a run is repeatable;
the world is the small review world of tests/api/conftest.py, so most ids are unknown (404, documented).
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

from attest.auth import tokens


@pytest.fixture
def api_schema(app, session, api_world):
    state = app.extensions["attest"]  # the limit is tested elsewhere; here it would only throttle
    state.settings = state.settings.replace(api_rate_burst=100_000)
    created = tokens.create_token(session, api_world.admin, "schemathesis", list(tokens.SCOPES))
    session.commit()
    app.config["TEST_API_TOKEN"] = created.token
    return schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app)


def test_api_conforms_to_its_openapi_document(app, api_schema):
    """Every operation, a few derandomized examples each (schemathesis's pytest plugin does not run under this
    pytest: the operations are driven with Hypothesis directly, as its docs show for custom runners)."""
    token = app.config["TEST_API_TOKEN"]
    failures: list[str] = []
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 30
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=4, derandomize=True, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def run(case):
            case.call_and_validate(headers={"Authorization": f"Bearer {token}"},
                                   checks=[not_a_server_error, response_schema_conformance, status_code_conformance])

        try:
            run()
        except Exception as exc:  # noqa: BLE001 - collect every operation's failure, then report them all
            failures.append(f"{operation.method.upper()} {operation.path}: {str(exc)[:1500]}")
    assert not failures, "\n\n".join(failures)
