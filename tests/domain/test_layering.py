"""Imports run one way (style.md): portal/domain is plain Python. It never imports Flask,
SQLAlchemy, a Flask extension, or the layers above it."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

DOMAIN = Path(__file__).resolve().parents[2] / "portal" / "domain"

FORBIDDEN = (
    "flask",
    "flask_*",
    "sqlalchemy",
    "portal.extensions",  # the unbound Flask extensions
    "portal.models",
    "portal.services",
    "portal.web",
    "portal.api",
    "portal.cli",
    "portal.jobs",
)


def _package_of(path: Path) -> list[str]:
    parts = list(path.relative_to(DOMAIN.parent.parent).with_suffix("").parts)
    return parts if path.name == "__init__.py" else parts[:-1]


def imported_modules(source: str, path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) for every import anywhere in the module, relative
    imports resolved against the module's package."""
    found = []
    for node in ast.walk(ast.parse(source, filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = _package_of(path)
                base = package[: len(package) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
                # `from . import models` imports a module too
                found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
                found.append((node.lineno, module))
            else:
                found.append((node.lineno, node.module or ""))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id == "__import__" and node.args
              and isinstance(node.args[0], ast.Constant)):
            found.append((node.lineno, str(node.args[0].value)))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "import_module" and node.args
              and isinstance(node.args[0], ast.Constant)):
            found.append((node.lineno, str(node.args[0].value)))
    return found


def is_forbidden(module: str) -> bool:
    for rule in FORBIDDEN:
        if rule.endswith("*"):
            if module.split(".")[0].startswith(rule[:-1]):
                return True
        elif module == rule or module.startswith(rule + "."):
            return True
    return False


def violations(source: str, path: Path) -> list[str]:
    return [f"{path.name}:{line} imports {module}"
            for line, module in imported_modules(source, path) if is_forbidden(module)]


DOMAIN_FILES = sorted(DOMAIN.rglob("*.py"))


def test_the_walk_sees_the_domain_modules():
    names = {p.name for p in DOMAIN_FILES}
    assert {"__init__.py", "settings.py", "audit.py"} <= names


@pytest.mark.parametrize("path", DOMAIN_FILES, ids=lambda p: str(p.relative_to(DOMAIN)))
def test_domain_module_imports_nothing_from_the_layers_above(path):
    assert violations(path.read_text(encoding="utf-8"), path) == []


# The checker itself must catch what it is meant to catch.
@pytest.mark.parametrize("source", [
    "import flask",
    "from flask import current_app",
    "import flask_login",
    "from flask_sqlalchemy import SQLAlchemy",
    "import sqlalchemy.orm",
    "from sqlalchemy import select",
    "from portal.models import Device",
    "import portal.services.accounts",
    "from portal.web import common",
    "from portal.api.views import bp",
    "from portal.extensions import db",
    "from ..models import Device",
    "from .. import services",
    "def later():\n    from flask import g\n    return g",
    "import importlib\nimportlib.import_module('sqlalchemy')",
    "__import__('flask')",
])
def test_checker_catches_forbidden_imports(source):
    assert violations(source, DOMAIN / "example.py")


@pytest.mark.parametrize("source", [
    "import re\nfrom dataclasses import dataclass",
    "from email_validator import validate_email",
    "from portal.domain import settings",
    "from . import audit",
    "from .settings import LABELS",
    "import json",
])
def test_checker_allows_plain_python_and_the_domain_itself(source):
    assert violations(source, DOMAIN / "example.py") == []
