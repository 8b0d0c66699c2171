"""The one wording of an AWS failure (attest.connectors.aws.errors): what a user reads in a failed run,
a failed part or a refused revoke, built from botocore's exceptions as AWS raises them."""

from __future__ import annotations

from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

from attest.connectors.aws.errors import AWS_ERRORS, connector_error, describe, error_code
from attest.connectors.base import ConnectorError
from attest.connectors.http import PagingError


def refused(code: str = "AccessDenied", message: str = "User is not authorized", op: str = "ListUsers"):
    return ClientError({"Error": {"Code": code, "Message": message}}, op)


def test_a_refusal_names_the_operation_the_code_and_the_message():
    exc = refused()
    assert error_code(exc) == "AccessDenied"
    assert describe(exc) == "ListUsers: AccessDenied: User is not authorized"
    assert describe(exc, operation=False) == "AccessDenied: User is not authorized"


def test_anything_else_is_worded_as_it_reads_and_has_no_code():
    for exc in (EndpointConnectionError(endpoint_url="https://iam.amazonaws.com/"), PagingError("AWS iam:x: loop")):
        assert error_code(exc) is None
        assert describe(exc) == str(exc)


def test_the_error_a_run_or_a_revoke_ends_with():
    assert str(connector_error(refused(op="GetCallerIdentity"))) == (
        "AWS refused GetCallerIdentity: AccessDenied: User is not authorized")
    unreachable = EndpointConnectionError(endpoint_url="https://sts.amazonaws.com/")
    assert str(connector_error(unreachable)) == f"cannot reach AWS: {unreachable}"
    missing = connector_error(NoCredentialsError())
    assert isinstance(missing, ConnectorError) and str(missing).startswith("no AWS credentials: set the secrets")
    assert all(isinstance(e, AWS_ERRORS) for e in (refused(), unreachable, NoCredentialsError()))
