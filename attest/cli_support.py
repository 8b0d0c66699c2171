"""What every `attest` command module shares: the app's state, JSON output, a failure, the acting user.

Public so the CLI modules of each area (attest/cli.py, attest/reviews/cli.py, attest/audit/cli.py) import
one helper instead of each other's private functions.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, NoReturn

import click
from flask import current_app


def app_state() -> Any:
    """The running app's state (settings, session factory...): `current_app.extensions["attest"]`."""
    return current_app.extensions["attest"]


def echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, default=str))


def fail(message: str, code: int = 1) -> NoReturn:
    """Print the error in red on stderr and exit with `code` (1 by default)."""
    click.secho(f"error: {message}", fg="red", err=True)
    sys.exit(code)


def cli_actor() -> str:
    """Who acts in the audit trail when a command changes something: cli:<login name>."""
    return f"cli:{os.environ.get('USER') or os.environ.get('LOGNAME') or 'unknown'}"
