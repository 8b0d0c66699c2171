"""The layers of DESIGN.md hold: the import contract in pyproject.toml ([tool.importlinter]) passes on the
code as it is, and fails (naming the import) when a lower layer imports a higher one."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    """Run the project's contract on the `attest` package found in `tree`."""
    env = {**os.environ, "PYTHONPATH": str(tree), "COLUMNS": "200"}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache", str(tree / "pyproject.toml")], cwd=tree, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def copy_of_the_code(tmp_path: Path) -> Path:
    """The package's Python modules and pyproject.toml, copied where an import can be added."""
    shutil.copytree(ROOT / "attest", tmp_path / "attest",
                    ignore=shutil.ignore_patterns("static", "templates", "__pycache__", "*.pyc"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def add_import(tree: Path, module: str, line: str) -> None:
    path = tree / (module.replace(".", "/") + ".py")
    if not path.exists():  # a package
        path = tree / module.replace(".", "/") / "__init__.py"
    path.write_text(path.read_text(encoding="utf-8") + f"\n{line}\n", encoding="utf-8")


def test_the_code_keeps_every_import_contract():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(("module", "line", "contract"), [
    # a lower domain layer importing a higher one
    ("attest.entitlements.correlation", "import attest.reviews.campaigns", "Domain layers"),
    ("attest.reviews.decisions", "from attest.audit import evidence", "Domain layers"),
    # a domain module importing a view, the CLI or the scheduler
    ("attest.reviews.remediation", "import attest.reviews.views", "No domain or kernel module imports"),
    ("attest.entitlements.sources", "import attest.jobs", "No domain or kernel module imports"),
    # the kernel importing a domain
    ("attest.trail.chain", "import attest.reviews.models", "The kernel imports no domain"),
    ("attest.db", "import attest.entitlements.models", "The kernel imports no domain"),
    # a connector touching the ORM or Flask
    ("attest.connectors.fanout", "import sqlalchemy", "Connectors import neither Flask"),
    ("attest.connectors.okta", "import flask", "Connectors import neither Flask"),
])
def test_a_forbidden_import_breaks_the_contract(copy_of_the_code, module, line, contract):
    assert lint_imports(copy_of_the_code).returncode == 0  # the copy keeps the contracts, as the code does
    add_import(copy_of_the_code, module, line)
    result = lint_imports(copy_of_the_code)
    assert result.returncode == 1
    broken = [row for row in result.stdout.splitlines() if "BROKEN" in row]
    assert any(contract in row for row in broken), result.stdout
    imported = line.split()[1] if line.startswith("import ") else f"{line.split()[1]}.{line.split()[3]}"
    assert imported in result.stdout, result.stdout  # the report names what was imported
