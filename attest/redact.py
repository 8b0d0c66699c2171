"""One home for redacting secrets out of text that came from an upstream (issue 16, part 3).

An upstream error page may echo the request it refused, `Authorization` header included; a proxy may
print the query string; a vendor may quote the token it rejected. Such text must never reach a SyncRun,
an audit event, a log line, a page or an export. Every path that turns upstream text into something
stored or shown calls `redact()` (or `redact_value()` for a parsed JSON body):

- the HTTP helper (connectors/http.py) when it builds an HttpError, with the header values it sent;
- connectors (BaseConnector.redact), with their configured secrets;
- the sync engine (failed runs, failed parts, notes), remediation errors, `attest sources test`;
- the audit recorder's scrub (string values), and `RedactingFilter` on the loggers that log upstream errors.

What is removed: the caller's known secret values (the source's decrypted secrets, the tokens it sent)
wherever they appear, plain or URL-encoded; `Authorization:`/`token=`/`password:`/`secret=`/`api_key`
style pairs; `Bearer`/`SSWS`/`Basic` credentials; GitHub tokens (`ghp_`, `gho_`, `ghu_`, `ghs_`, `ghr_`,
`github_pat_`); Okta API tokens (42 characters starting `00`); AWS secret access keys (40 characters of
mixed base64) and other long mixed base64 runs (session tokens); JWTs; PEM private keys.

This module imports nothing from Attest: every layer may use it, connectors included.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote

REDACTED = "[redacted]"

_SECRET_WORDS = (r"authorization|token|password|passwd|pwd|secret|api[_-]?key|access[_-]?key|private[_-]?key|"
                 r"client[_-]?secret|credential|cookie|session[_-]?key")
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # PEM private keys, whole
    (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)", re.S),
     REDACTED),
    # "Authorization: SSWS 00abc", "authorization": "Bearer x.y.z" - the whole value up to the line's end
    (re.compile(r"(?i)(\b(?:proxy-)?authorization\b[\"']?\s*[:=]\s*[\"']?)([^\"'\r\n]+)"), rf"\1{REDACTED}"),
    # a credential after its scheme: Bearer / SSWS / Basic / token <value with a digit or a symbol>
    (re.compile(r"(?i)(\b(?:bearer|ssws|basic)\s+)(?=[^\s\"',;]*[0-9._~+/=-])[A-Za-z0-9._~+/=-]{8,}"),
     rf"\1{REDACTED}"),
    # token=..., "password": "...", client_secret: ..., aws_secret_access_key = ... (JSON, query, headers)
    (re.compile(rf"(?i)(\b[\w-]*(?:{_SECRET_WORDS})[\w-]*[\"']?\s*[:=]\s*[\"']?)(?![\"'\s,;}}&\[{{])"
                r"([^\s\"'&,;}]+)"), rf"\1{REDACTED}"),
    # GitHub tokens (classic, OAuth, user-to-server, server-to-server, refresh, fine-grained)
    (re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9_]{16,}|github_pat_[A-Za-z0-9_]{20,})"), REDACTED),
    # JWTs (OAuth access tokens, GitHub App JWTs, client assertions)
    (re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"), REDACTED),
    # Okta API tokens: 42 characters beginning 00
    (re.compile(r"\b00[A-Za-z0-9_-]{40}\b"), REDACTED),
    # AWS secret access keys (40 characters) and longer session tokens: runs of base64 with upper and
    # lower case letters and digits (a hex digest has no upper case; an ARN or a path breaks the run)
    (re.compile(r"(?<![A-Za-z0-9/+=])(?=[A-Za-z0-9/+=]*[A-Z])(?=[A-Za-z0-9/+=]*[a-z])(?=[A-Za-z0-9/+=]*[0-9])"
                r"(?:[A-Za-z0-9/+]{40}|[A-Za-z0-9/+=]{80,})(?![A-Za-z0-9/+=])"), REDACTED),
)
MIN_SECRET = 4  # shorter configured values are not hunted for in text (they would match ordinary words)


def secret_values(secrets: Mapping[str, Any] | Iterable[Any] | None) -> tuple[str, ...]:
    """The string values worth hunting for: a secrets mapping's values (or an iterable of values), and
    for a header value such as 'Bearer abc' its credential part too."""
    if not secrets:
        return ()
    values = secrets.values() if isinstance(secrets, Mapping) else secrets
    out: set[str] = set()
    for value in values:
        if not isinstance(value, str):
            continue
        value = value.strip()
        if len(value) >= MIN_SECRET:
            out.add(value)
            scheme, _, cred = value.partition(" ")
            if cred and scheme.lower() in ("bearer", "ssws", "basic", "token") and len(cred) >= MIN_SECRET:
                out.add(cred.strip())
    return tuple(sorted(out, key=len, reverse=True))  # the longest first: a secret containing another


def redact(text: Any, secrets: Mapping[str, Any] | Iterable[Any] | None = ()) -> str:
    """`text` with every known secret and every secret-looking value replaced by [redacted]."""
    if text is None:
        return ""
    out = text if isinstance(text, str) else str(text)
    for value in secret_values(secrets):
        out = out.replace(value, REDACTED)
        encoded = quote(value, safe="")
        if encoded != value:
            out = out.replace(encoded, REDACTED)
        for line in value.splitlines():  # a multi-line secret (a PEM key) echoed line by line
            if len(line.strip()) >= 16:
                out = out.replace(line.strip(), REDACTED)
    for pattern, replacement in _PATTERNS:
        out = pattern.sub(replacement, out)
    return out


def redact_value(value: Any, secrets: Mapping[str, Any] | Iterable[Any] | None = ()) -> Any:
    """A parsed JSON value (a vendor's error body) with every string redacted; keys that name a secret
    get [redacted] as their whole value."""
    known = secret_values(secrets)
    return _redact_value(value, known)


def _redact_value(value: Any, known: tuple[str, ...]) -> Any:
    if isinstance(value, str):
        return redact(value, known)
    if isinstance(value, Mapping):
        return {k: REDACTED if isinstance(k, str) and _SECRET_KEY.search(k) and isinstance(v, str)
                else _redact_value(v, known) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_value(v, known) for v in value]
    return value


_SECRET_KEY = re.compile(rf"(?i)(?:{_SECRET_WORDS})")


class RedactingFilter(logging.Filter):
    """A logger filter: the record's message and traceback are redacted before any handler sees them.

    Added to the loggers of the modules that log upstream errors (the HTTP helper, the sync engine,
    remediation, jobs). The traceback is formatted here, redacted, and kept as `exc_text` (which the
    standard and the JSON formatters both print) instead of the raw exception."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: leave the record to the handler's own error path
            return True
        cleaned = redact(message)
        if cleaned != message or record.args:
            record.msg, record.args = cleaned, ()
        if record.exc_info and record.exc_info[0] is not None:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


def install_filter(logger: logging.Logger) -> logging.Logger:
    """Add one RedactingFilter to `logger` (idempotent)."""
    if not any(isinstance(f, RedactingFilter) for f in logger.filters):
        logger.addFilter(RedactingFilter())
    return logger
