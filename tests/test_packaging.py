"""Packaging: every package Attest imports is declared, a production install stays lean (the sandbox's
packages only in the `demo` extra), and the lock files under requirements/ (written by `make lock`, what
`make` installs) pin what pyproject.toml asks for."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "attest"
SANDBOX = PACKAGE / "connectors" / "sandbox"  # the demo's fake services: may use the demo extra
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
LOCKS = {"base": (), "demo": ("demo",), "test": ("demo", "test")}  # lock file -> the extras it holds
# what a production install must never pull in (the issue: moto[server,all] brought docker, cfn-lint, xray)
NOT_IN_PRODUCTION = {"moto", "docker", "cfn-lint", "aws-xray-sdk", "oidc-provider-mock", "graphql-core",
                     "pytest", "hypothesis", "playwright", "ruff"}


def requirements(*extras: str) -> list[Requirement]:
    reqs = [Requirement(r) for r in PROJECT["dependencies"]]
    for extra in extras:
        reqs += [Requirement(r) for r in PROJECT["optional-dependencies"][extra]]
    return reqs


def declared(*extras: str) -> set[str]:
    return {canonicalize_name(r.name) for r in requirements(*extras)}


def pins(lock: str) -> dict[str, str]:
    pinned = {}
    for line in (ROOT / "requirements" / f"{lock}.lock").read_text().splitlines():
        if line and not line[0].isspace() and not line.startswith("#"):
            name, _, version = line.split(";")[0].strip().partition("==")
            pinned[canonicalize_name(name.split("[")[0])] = version
    return pinned


@pytest.mark.parametrize("lock", LOCKS)
def test_lock_pins_what_pyproject_asks_for(lock):
    pinned = pins(lock)
    stale = [str(r) for r in requirements(*LOCKS[lock])
             if not r.specifier.contains(pinned.get(canonicalize_name(r.name), ""), prereleases=True)]
    assert not stale, f"requirements/{lock}.lock does not pin {stale}: run `make lock` and commit the lock files"


def test_locks_agree_on_shared_versions():
    base, demo, test = pins("base"), pins("demo"), pins("test")
    assert {k: demo.get(k) for k in base} == base, "demo.lock moved a base pin: run `make lock`"
    assert {k: test.get(k) for k in demo} == demo, "test.lock moved a demo pin: run `make lock`"


def test_production_install_is_lean():
    assert not NOT_IN_PRODUCTION & declared()
    assert not NOT_IN_PRODUCTION & pins("base").keys()


def test_package_data_ships_every_data_file():
    """A non-editable install (`pip install attest`) holds only the .py files and what package-data names:
    every other file under attest/ (templates, static, the common-password list...) must be named there."""
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["attest"]
    shipped = {f for pattern in patterns for f in PACKAGE.glob(pattern)}
    data = {f for f in PACKAGE.rglob("*")
            if f.is_file() and f.suffix not in (".py", ".pyc") and "__pycache__" not in f.parts}
    missing = sorted(str(f.relative_to(ROOT)) for f in data - shipped)
    assert not missing, f"add these to [tool.setuptools.package-data] in pyproject.toml: {missing}"


def _imports(path: Path) -> set[str]:
    """Top-level names of the absolute imports in a module, leaving out the optional ones (inside a
    `try` that handles ImportError)."""
    tree = ast.parse(path.read_text(), str(path))
    optional = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(
                isinstance(h.type, ast.Name) and h.type.id in ("ImportError", "ModuleNotFoundError")
                for h in node.handlers):
            optional |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    names = set()
    for node in ast.walk(tree):
        if id(node) in optional:
            continue
        if isinstance(node, ast.Import):
            names |= {a.name.partition(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.partition(".")[0])
    return names - set(sys.stdlib_module_names) - {"attest", "__future__"}


def test_every_import_is_declared():
    """Runtime code imports only base dependencies (the sandbox: also the demo extra), never a package
    that only arrives as another package's dependency or only with the test extra."""
    provides = packages_distributions()
    base, demo = declared(), declared("demo")
    undeclared = []
    for path in sorted(PACKAGE.rglob("*.py")):
        allowed = demo if SANDBOX in path.parents else base
        for module in sorted(_imports(path)):
            dists = {canonicalize_name(d) for d in provides.get(module, ())}
            if not dists & allowed:
                undeclared.append(f"{path.relative_to(ROOT)}: {module} ({', '.join(sorted(dists)) or 'not installed'})")
    assert not undeclared, "imported but not declared in pyproject.toml's dependencies:\n" + "\n".join(undeclared)


@pytest.mark.slow
def test_runtime_modules_do_not_load_the_sandbox_packages():
    """Importing every module outside the sandbox loads none of the demo's or the tests' packages, so
    `pip install attest` (no extras) can run the app, the scheduler and the CLI."""
    code = """
import importlib, json, pkgutil, sys
import attest
for info in pkgutil.walk_packages(attest.__path__, "attest."):
    if not info.name.startswith(("attest.connectors.sandbox.", "attest.migrations")):
        importlib.import_module(info.name)
print(json.dumps(sorted({m.partition(".")[0] for m in sys.modules})))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    loaded = set(json.loads(out.stdout.splitlines()[-1]))
    provides = packages_distributions()
    extras_only = (declared("demo", "test") | NOT_IN_PRODUCTION) - pins("base").keys()
    hits = sorted(m for m in loaded if {canonicalize_name(d) for d in provides.get(m, ())} & extras_only)
    assert not hits, f"runtime modules load packages a production install lacks: {hits}"
