"""The one home of how an AWS failure is read and worded.

botocore raises `ClientError` when AWS answered with an error (its code and message are in
`exc.response["Error"]`, the operation in `exc.operation_name`), `NoCredentialsError` when no credentials
were found, and other `BotoCoreError`s when AWS could not be reached; the connector's own `PagingError`
(a paging loop) joins them where an account's read may fail. Every message the connector writes about
such a failure is built here, so they read the same everywhere.
"""

from __future__ import annotations

from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from attest.connectors.base import ConnectorError

# what a call to AWS may raise (a refusal, or AWS out of reach)
AWS_ERRORS: tuple[type[Exception], ...] = (ClientError, BotoCoreError)

NO_CREDENTIALS = ("no AWS credentials: set the secrets access_key_id/secret_access_key, or give the process a "
                  "profile, environment variables or an instance role")


def error_code(exc: BaseException) -> str | None:
    """AWS's error code of a ClientError ("AccessDenied", "NoSuchEntity", ...); None for anything else."""
    if isinstance(exc, ClientError):
        return exc.response.get("Error", {}).get("Code")
    return None


def describe(exc: BaseException, *, operation: bool = True) -> str:
    """A failure in words: "Operation: Code: Message" for a ClientError (without the operation when
    `operation` is false), the exception's own text otherwise."""
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        text = f"{err.get('Code')}: {err.get('Message')}"
        return f"{exc.operation_name}: {text}" if operation else text
    return str(exc)


def connector_error(exc: BaseException) -> ConnectorError:
    """The ConnectorError a failed call ends a run (or a revoke) with: no credentials, AWS refused the
    operation, or AWS could not be reached."""
    if isinstance(exc, NoCredentialsError):
        return ConnectorError(NO_CREDENTIALS)
    if isinstance(exc, ClientError):
        return ConnectorError(f"AWS refused {describe(exc)}")
    return ConnectorError(f"cannot reach AWS: {exc}")
