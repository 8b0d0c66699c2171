"""The one home of the CSV neutralisation rule: every CSV Attest writes goes through `writer()` here.

A spreadsheet (Excel, LibreOffice Calc, Google Sheets) runs a cell that begins with `=`, `+`, `-` or `@`
as a formula, and a leading tab or carriage return can hide one; the values Attest exports come from
upstream systems and people (logins, group and role names, reviewers' comments, campaign names), so a
hostile upstream could plant `=HYPERLINK(...)` or `+cmd|' /C calc'!A0` in an auditor's spreadsheet.

The rule follows OWASP's CSV Injection guidance (https://owasp.org/www-community/attacks/CSV_Injection):
"ensure that no cells begin with any of the following characters: Equals to (=), Plus (+), Minus (-),
At (@), Tab (0x09), Carriage return (0x0D)", by the remedy it names, "prepend each cell field with a
single quote" (a spreadsheet shows the text as typed; the quote is visible to plain-text readers,
which is the accepted cost), and its caution that a field separator or a quote inside a value must
not be able to start a new cell: every text cell is written quoted (`csv.QUOTE_NONNUMERIC`), so a `;`
(the separator a spreadsheet uses in many locales) or a `,` inside a value stays inside its cell.

Numbers: a real int, float or Decimal is written as the number it is, negative ones included (`-5`):
a spreadsheet reads it as the number -5, nothing runs, and the column stays numeric. Text that merely
looks like a number ("-5", "-2+3" from upstream) is text and is neutralised. Non-finite floats
(`-inf`, `nan`) are written as neutralised text. Any other value is written as its `str()`, neutralised.
`None` is an empty cell.

items.xlsx needs none of this: XlsxWriter's `write_string` stores a string cell, never a formula
(`strings_to_formulas` is off), see `attest.audit.evidence.writers._write_items_xlsx`.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any

DANGEROUS_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
PREFIX = "'"
RULE = "cells beginning with = + - @ TAB CR are prefixed with '; real numbers stay numbers; text cells are quoted"
OWASP = "https://owasp.org/www-community/attacks/CSV_Injection"

_NUMBERS = (int, float, Decimal)


def safe_cell(value: Any) -> Any:
    """The value as it may go into a CSV cell: text starting with a dangerous character gets a `'` prefix."""
    if value is None:
        return None
    if value.__class__ is str:
        return PREFIX + value if value.startswith(DANGEROUS_PREFIXES) else value
    if isinstance(value, _NUMBERS) and not isinstance(value, bool):
        if isinstance(value, float | Decimal) and not math.isfinite(value):
            value = str(value)
        else:
            return value
    text = str.__str__(value) if isinstance(value, str) else str(value)  # a str subclass (Markup) as plain text
    return PREFIX + text if text.startswith(DANGEROUS_PREFIXES) else text


def safe_row(row: Iterable[Any]) -> list[Any]:
    """Every cell of a row through `safe_cell` (plain str cells inline: this runs once per exported row)."""
    return [(PREFIX + v if v.startswith(DANGEROUS_PREFIXES) else v) if v.__class__ is str else
            (v if v is None or v.__class__ is int else safe_cell(v)) for v in row]


class SafeWriter:
    """A `csv.writer` whose every row goes through `safe_row`; text cells quoted, numbers bare. The
    header (column names are ours, never upstream data) is written plain: `remediation_id,campaign,...`."""

    def __init__(self, out: Any, header: Sequence[str] | None = None, **kwargs: Any) -> None:
        if header is not None:
            csv.writer(out, **{**kwargs, "quoting": csv.QUOTE_MINIMAL}).writerow(safe_row(header))
        kwargs.setdefault("quoting", csv.QUOTE_NONNUMERIC)
        self._writer = csv.writer(out, **kwargs)

    def writerow(self, row: Sequence[Any]) -> Any:
        return self._writer.writerow(safe_row(row))

    def writerows(self, rows: Iterable[Sequence[Any]]) -> None:
        self._writer.writerows(map(safe_row, rows))


def writer(out: Any, header: Sequence[str] | None = None, **kwargs: Any) -> SafeWriter:
    """The CSV writer for every export: `writer(fh, COLUMNS, lineterminator="\\n")`; takes `csv.writer`'s options."""
    return SafeWriter(out, header, **kwargs)
