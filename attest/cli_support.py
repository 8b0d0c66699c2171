"""What every `attest` command module shares: the app's state, JSON output, a failure, the acting user, one
service call in a transaction that exits 1 on the service's refusal (`in_transaction`), the encryption key
check of the commands that touch secrets (`needs_keys`), and Alembic's configuration.

Public so the CLI modules of each area (attest/cli.py, attest/entitlements/cli.py, attest/reviews/cli.py,
attest/audit/cli.py) import one helper instead of each other's private functions.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
from alembic.config import Config
from flask import current_app

from attest.db import transaction
from attest.entitlements.keys import KeyCheckError, check

T = TypeVar("T")


def app_state() -> Any:
    """The running app's state (settings, session factory...): `current_app.extensions["attest"]`."""
    return current_app.extensions["attest"]


def alembic_config(url: str) -> Config:
    """Alembic's configuration for the database at `url` and Attest's migrations (attest/migrations/): for
    `attest db`, `attest demo --reset`, the tests and the benchmarks."""
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def in_transaction(operation: Callable[[Any], T], refused: type[Exception] | tuple[type[Exception], ...]) -> T:
    """Run `operation(session)` in one transaction: what it returns, or, when it refuses (`refused`: the
    service's error for a user's mistake), its message on stderr and exit 1 with nothing changed."""
    try:
        with transaction(app_state().factory) as session:
            return operation(session)
    except refused as exc:
        fail(str(exc))


def echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, default=str))


def answered_rows(rows: list[Any], as_json: bool, none: str) -> bool:
    """For a list command: with --json, the rows (their `as_dict()`) as JSON; without rows, `none`. True when
    that was the whole answer; False when the caller goes on to print the rows as text."""
    if as_json:
        echo_json([r.as_dict() for r in rows])
        return True
    if not rows:
        click.echo(none)
    return not rows


def fail(message: str, code: int = 1) -> NoReturn:
    """Print the error in red on stderr and exit with `code` (1 by default)."""
    click.secho(f"error: {message}", fg="red", err=True)
    sys.exit(code)


def cli_actor() -> str:
    """Who acts in the audit trail when a command changes something: cli:<login name>."""
    return f"cli:{os.environ.get('USER') or os.environ.get('LOGNAME') or 'unknown'}"


def needs_keys(command: Callable) -> Callable:
    """A command that touches stored secrets first checks ATTEST_ENCRYPTION_KEYS against the key check value:
    a wrong key is one clear message and exit 2, never a traceback halfway through."""
    @functools.wraps(command)
    def checked(*args: Any, **kwargs: Any) -> Any:
        try:
            check(app_state().factory, app_state().settings)
        except KeyCheckError as exc:
            fail(str(exc), 2)
        return command(*args, **kwargs)

    return checked
