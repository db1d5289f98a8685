"""INSERT … ON CONFLICT (`on_conflict_do_update` / `on_conflict_do_nothing`), which
SQLAlchemy builds per dialect: the one choice of the dialect's INSERT for every upsert
(the sign-in throttle, the OTP failure counter, the audit head)."""
from __future__ import annotations

from sqlalchemy.dialects import postgresql, sqlite

from portal.extensions import db


def insert(target, dialect: str | None = None):
    """An INSERT into `target` (a model or a table) that takes ON CONFLICT, for `dialect`
    (the engine's by default)."""
    name = dialect or db.engine.dialect.name
    if name == "postgresql":
        return postgresql.insert(target)
    if name == "sqlite":
        return sqlite.insert(target)
    raise NotImplementedError(f"no INSERT … ON CONFLICT for {name}")
