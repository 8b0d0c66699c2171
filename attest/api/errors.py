"""One error shape for every answer under /api/: `{"error": {"code", "message", "details"}}`.

`ApiError` is raised by the API's code; `error_response` is also what attest/app.py's error handlers answer
for any /api/ path (Flask's own 404/405, 413, a CSRF-free 400, an unhandled 500), and what spectree's
request-validation errors (422) are rewritten into (`rewrite_validation_error`).
"""

from __future__ import annotations

import json
from typing import Any

from flask import Response, jsonify

CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    412: "precondition_failed",
    413: "too_large",
    415: "unsupported_media_type",
    422: "validation_failed",
    429: "rate_limited",
    500: "internal_error",
    503: "unavailable",
}

MESSAGES = {
    400: "The request was not understood. Nothing was changed.",
    401: "A valid API token is needed: Authorization: Bearer <token>.",
    403: "The token's scopes or its user's role do not allow this. Nothing was changed.",
    404: "There is nothing here, or it is not yours to see.",
    405: "This method is not allowed here.",
    409: "Someone changed this at the same time. Read it again and retry.",
    412: "The If-Match version is not the current one: read it again and retry. Nothing was changed.",
    413: "The request body is too large.",
    422: "The request did not validate. Nothing was changed.",
    429: "Too many requests for this token: retry after the time in Retry-After.",
    500: "Something went wrong. The error was logged. Nothing was changed.",
    503: "The database is unavailable. What you were saving may not have been saved.",
}


class ApiError(Exception):
    def __init__(self, status: int, message: str | None = None, *, code: str | None = None,
                 details: Any = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message or MESSAGES.get(status, ""))
        self.status = status
        self.message = message or MESSAGES.get(status, "")
        self.code = code or CODES.get(status, "error")
        self.details = details
        self.headers = headers or {}


def body(status: int, message: str | None = None, code: str | None = None, details: Any = None) -> dict[str, Any]:
    return {"error": {"code": code or CODES.get(status, "error"), "message": message or MESSAGES.get(status, ""),
                      "details": details}}


def error_response(status: int, message: str | None = None, *, code: str | None = None, details: Any = None,
                   headers: dict[str, str] | None = None) -> Response:
    response = jsonify(body(status, message, code, details))
    response.status_code = status
    for key, value in (headers or {}).items():
        response.headers[key] = value
    if status == 401:
        response.headers.setdefault("WWW-Authenticate", 'Bearer realm="attest"')
    return response


def from_api_error(exc: ApiError) -> Response:
    return error_response(exc.status, exc.message, code=exc.code, details=exc.details, headers=exc.headers)


def rewrite_validation_error(req, resp, req_validation_error, instance, model_adapter=None) -> None:
    """spectree's `before` hook: its 422 answer (a list of pydantic errors) in Attest's error shape."""
    if req_validation_error is None or resp is None:
        return
    try:
        errors = json.loads(resp.get_data())
    except ValueError:
        errors = []
    details = [{"loc": list(e.get("loc", [])), "msg": e.get("msg", ""), "type": e.get("type", "")}
               for e in errors if isinstance(e, dict)] if isinstance(errors, list) else []
    first = details[0] if details else None
    message = (f"{'.'.join(str(x) for x in first['loc']) or 'body'}: {first['msg']}" if first
               else MESSAGES[422])
    resp.set_data(json.dumps(body(422, message, details=details)))
    resp.mimetype = "application/json"


def rewrite_response_validation_error(req, resp, resp_validation_error, instance, model_adapter=None) -> None:
    """spectree's `after` hook: an answer that does not match its own schema is Attest's bug. It is logged
    (with what did not match) and answered as the same 500 as any other unhandled error."""
    if resp_validation_error is None or resp is None:
        return
    import logging

    logging.getLogger("attest.api").error("response of %s %s does not match its schema: %s", req.method, req.path,
                                          str(resp_validation_error)[:2000])
    resp.set_data(json.dumps(body(500)))
    resp.mimetype = "application/json"
