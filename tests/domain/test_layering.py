"""Imports run one way (style.md): web/api → services → domain, and each "never" rule
is walked here — every import of every module, at the top or inside a function:

- portal/domain is plain Python: no Flask, SQLAlchemy, Flask extension or layer above it;
- portal/models never import services, the web pages, the API or the boundaries;
- portal/services never import the web pages, the API or the boundaries;
- portal/web never imports portal/api, and portal/api never imports portal/web."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PORTAL = Path(__file__).resolve().parents[2] / "portal"
DOMAIN = PORTAL / "domain"
BOUNDARIES = ("portal.web", "portal.api", "portal.cli", "portal.jobs", "portal.app",
              "portal.demo")

RULES = {
    "domain": (
        "flask",
        "flask_*",
        "sqlalchemy",
        "portal.extensions",  # the unbound Flask extensions
        "portal.models",
        "portal.services",
    ) + BOUNDARIES,
    "models": ("portal.services",) + BOUNDARIES,
    "services": BOUNDARIES,
    "web": ("portal.api",),
    "api": ("portal.web",),
}
FORBIDDEN = RULES["domain"]


def _package_of(path: Path) -> list[str]:
    parts = list(path.relative_to(PORTAL.parent).with_suffix("").parts)
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
                # `from portal import services` imports portal.services
                found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id == "__import__" and node.args
              and isinstance(node.args[0], ast.Constant)):
            found.append((node.lineno, str(node.args[0].value)))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "import_module" and node.args
              and isinstance(node.args[0], ast.Constant)):
            found.append((node.lineno, str(node.args[0].value)))
    return found


def is_forbidden(module: str, rules: tuple[str, ...] = FORBIDDEN) -> bool:
    for rule in rules:
        if rule.endswith("*"):
            if module.split(".")[0].startswith(rule[:-1]):
                return True
        elif module == rule or module.startswith(rule + "."):
            return True
    return False


def violations(source: str, path: Path, layer: str = "domain") -> list[str]:
    return [f"{path.name}:{line} imports {module}"
            for line, module in imported_modules(source, path)
            if is_forbidden(module, RULES[layer])]


DOMAIN_FILES = sorted(DOMAIN.rglob("*.py"))
LAYER_FILES = [(layer, path) for layer in RULES for path in sorted((PORTAL / layer).rglob("*.py"))]


def test_the_walk_sees_the_domain_modules():
    names = {p.name for p in DOMAIN_FILES}
    assert {"__init__.py", "settings.py", "audit.py"} <= names


def test_the_walk_sees_every_layer():
    seen = {(layer, path.relative_to(PORTAL / layer).as_posix()) for layer, path in LAYER_FILES}
    assert {("models", "accounts.py"), ("services", "requests.py"), ("web", "common.py"),
            ("web", "departments/views.py"), ("api", "views.py")} <= seen


@pytest.mark.parametrize("path", DOMAIN_FILES, ids=lambda p: str(p.relative_to(DOMAIN)))
def test_domain_module_imports_nothing_from_the_layers_above(path):
    assert violations(path.read_text(encoding="utf-8"), path) == []


@pytest.mark.parametrize("layer,path", LAYER_FILES,
                         ids=[p.relative_to(PORTAL).as_posix() for _, p in LAYER_FILES])
def test_no_module_imports_what_its_layer_never_may(layer, path):
    assert violations(path.read_text(encoding="utf-8"), path, layer) == []


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


# The same checker, for the other layers' rules.
@pytest.mark.parametrize("layer,source", [
    ("models", "from portal.services import accounts"),
    ("models", "from portal import services"),
    ("models", "def later():\n    from portal.web.common import client_ip"),
    ("models", "import portal.api.views"),
    ("services", "from portal.web.common import utcnow"),
    ("services", "from portal import web"),
    ("services", "from ...api.serializers import iso"),  # from portal/services/sub/
    ("services", "def later():\n    from portal.api import bp"),
    ("services", "from portal.jobs import build_scheduler"),
    ("services", "from portal.app import create_app"),
    ("web", "from portal.api.views import body"),
    ("web", "from ...api import bp"),
    ("web", "from portal import api"),
    ("api", "from portal.web.common import client_ip"),
    ("api", "def later():\n    import portal.web.errors"),
    ("api", "from ...web import common"),
])
def test_checker_catches_each_layers_forbidden_imports(layer, source):
    assert violations(source, PORTAL / layer / "sub" / "example.py", layer)


@pytest.mark.parametrize("layer,source", [
    ("models", "from portal.domain import settings\nfrom portal.extensions import db"),
    ("models", "from sqlalchemy.orm import Mapped\nfrom .types import UTCDateTime"),
    ("services", "from flask import current_app\nfrom portal.models import Device"),
    ("services", "from portal.services.errors import ConflictError\nfrom . import audit"),
    ("web", "from portal.services import authz\nfrom portal.web.common import done"),
    ("web", "from ..common import utcnow"),
    ("api", "from portal.services import agents\nfrom portal.api.auth import bp"),
    ("api", "from portal.json_input import UnusableJSONError"),
])
def test_checker_allows_what_each_layer_may_import(layer, source):
    assert violations(source, PORTAL / layer / "sub" / "example.py", layer) == []
