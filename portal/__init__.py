"""Session Gate: decides who may open a remote session to a managed computer.

The application lives in portal.app; this module stays light so that `portal-agent`
(standard library only) starts without loading Flask or SQLAlchemy.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flask import Flask


def create_app(config: dict[str, Any] | None = None) -> Flask:
    from portal.app import create_app as _create_app

    return _create_app(config)
