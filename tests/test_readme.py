"""The README lists every `attest` command and every `ATTEST_*` setting (issue 20, part 7): a command or a
setting added without a line in the README fails here, naming what is missing."""

from __future__ import annotations

import re
from pathlib import Path

import click
from flask.cli import ScriptInfo

README = Path(__file__).resolve().parent.parent / "README.md"
SETTINGS = Path(__file__).resolve().parent.parent / "attest" / "config" / "settings.py"


def _section(title: str) -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else None]


def attest_commands(app) -> list[str]:
    """Every leaf command of `attest`, as typed ("attest sources add"), from the CLI itself (the app's
    command groups included), hidden ones aside."""
    from attest.cli import main

    info = ScriptInfo(create_app=lambda: app)
    found: list[str] = []

    def walk(cmd: click.Command, ctx: click.Context, path: list[str]) -> None:
        if isinstance(cmd, click.Group):
            for name in cmd.list_commands(ctx):
                sub = cmd.get_command(ctx, name)
                if sub is not None and not sub.hidden:
                    walk(sub, click.Context(sub, info_name=name, parent=ctx, obj=info), [*path, name])
        else:
            found.append(" ".join(path))

    walk(main, click.Context(main, info_name="attest", obj=info), ["attest"])
    return found


def test_every_command_has_a_line_in_the_readme(app):
    block = _section("Command line").split("```bash\n", 1)[1].split("```", 1)[0]
    lines = [line.split("#", 1)[0].strip() for line in block.splitlines()]
    commands = attest_commands(app)
    assert {"attest serve", "attest sources update", "attest campaigns close", "attest db upgrade"} <= set(commands)
    missing = [c for c in commands if not any(line == c or line.startswith(c + " ") for line in lines)]
    assert not missing, f"commands missing from the README's 'Command line' block: {missing}"


def test_every_setting_is_in_the_readme_configuration_table():
    names = sorted(set(re.findall(r"ATTEST_[A-Z0-9_]*[A-Z0-9]", SETTINGS.read_text(encoding="utf-8"))))
    assert "ATTEST_INSTANCE_PATH" in names and len(names) > 30
    table = "\n".join(line for line in _section("Configuration").splitlines() if line.startswith("| `ATTEST_"))
    missing = [n for n in names if f"`{n}`" not in table]
    assert not missing, f"settings missing from the README's configuration table: {missing}"


def test_the_readme_says_where_dotenv_is_read_from():
    config = _section("Configuration")
    assert ".env" in config and "current working directory" in config and "attest demo" in config
