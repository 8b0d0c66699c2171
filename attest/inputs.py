"""Hostile input stops at the door: ids, page cursors and text fields are checked in one place.

- **Ids** are database integers (INTEGER: 32-bit on PostgreSQL): a path id is matched by
  `IdConverter` (registered as the `int` converter, so every `<int:...>` route uses it), which accepts
  1..2^31-1 written in ASCII digits; anything else (0, -1, 2^31, 2^63, other scripts' digits) does
  not match the route: 404, the same answer as an id that does not exist. Query-string and form ids go
  through `parse_int`, which returns None for the same cases (the caller answers 400 or ignores it).
- **Text**: a NUL character cannot be stored in PostgreSQL text (and is never meaningful in a form or a
  search), so `refuse_nul` (a `before_request` hook) answers 400 to any request whose query string or
  form carries one, in a name or a value, before a view sees it.
- **Bodies** larger than `MAX_CONTENT_LENGTH` (app.py) get 413 from Werkzeug.

Dates go through `attest.entitlements.history` (`resolve_as_of`, `day_bounds`); keyset cursors are
decoded by their owners (`reviews.queries.decode_cursor`, `entitlements.queries.name_cursor`), which
use `parse_int` for their ids.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from werkzeug.routing import IntegerConverter

if TYPE_CHECKING:
    from flask import Flask

# Every id column is INTEGER: 32-bit signed on PostgreSQL (SQLite's holds 64 bits, but an id is only
# worth asking for if every engine can hold it). 2^31 and 2^63 alike would overflow PostgreSQL's INTEGER.
MAX_ID = 2**31 - 1
_MAX_DIGITS = len(str(MAX_ID))
NUL_MESSAGE = "A NUL character (\\0) is not accepted in any field. Nothing was changed."


def parse_int(value: Any, low: int = 1, high: int = MAX_ID) -> int | None:
    """`value` as an integer in low..high when it is written in ASCII digits (surrounding blanks aside);
    else None. Never raises, never returns a number the database cannot hold."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if low <= value <= high else None
    if not isinstance(value, str):
        return None
    text = value.strip()
    if not text or len(text) > _MAX_DIGITS or not (text.isascii() and text.isdigit()):
        return None
    number = int(text)
    return number if low <= number <= high else None


def _at_most(bound: str) -> str:
    """A regular expression for the numbers of len(bound) digits (no leading zero) up to `bound`."""
    alternatives = [bound]
    for i, digit in enumerate(bound):
        low = 1 if i == 0 else 0
        if int(digit) > low:
            rest = len(bound) - i - 1
            alternatives.append(f"{bound[:i]}[{low}-{int(digit) - 1}]" + (f"[0-9]{{{rest}}}" if rest else ""))
    return "|".join(alternatives)


class IdConverter(IntegerConverter):
    """`<int:...>` for database ids: 1..MAX_ID in ASCII digits without leading zeros. The bound is in the
    regular expression itself, so a larger number (or 0, -1, 007) matches no route at all: 404, for every
    method (a converter that refused it later would let Werkzeug answer 405 on some routes)."""

    regex = f"(?:[1-9][0-9]{{0,{_MAX_DIGITS - 2}}}|{_at_most(str(MAX_ID))})"

    def __init__(self, map: Any, fixed_digits: int = 0, min: int | None = 1, max: int | None = MAX_ID,  # noqa: A002
                 signed: bool = False) -> None:
        super().__init__(map, fixed_digits=fixed_digits, min=min, max=max, signed=False)


def _has_nul(multidict: Any) -> bool:
    for key, values in multidict.lists():
        if "\x00" in key or any(isinstance(v, str) and "\x00" in v for v in values):
            return True
    return False


def refuse_nul() -> None:
    """400 for a NUL character anywhere in the query string or the form (names and values)."""
    from flask import abort, request

    if request.endpoint == "static":
        return
    if _has_nul(request.args) or (request.method in ("POST", "PUT", "PATCH", "DELETE") and _has_nul(request.form)):
        abort(400, NUL_MESSAGE)


def register_converters(app: Flask) -> None:
    """Before any blueprint is registered: rules compile with the converters present at that moment."""
    app.url_map.converters["int"] = IdConverter
    app.url_map.converters["id"] = IdConverter


def init_app(app: Flask) -> None:
    """Services import `parse_int` from here without Flask; the app registers the rest."""
    register_converters(app)
    app.before_request(refuse_nul)
