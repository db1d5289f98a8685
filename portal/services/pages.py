"""Key-based pagination: a page is the rows after (or before) a key, never an offset."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select

from portal.extensions import db


@dataclass(frozen=True)
class Page:
    items: list
    next_after: Any  # the key to continue from, or None on the last page


def fetch_page(query: Select, limit: int, key: Callable[[Any], Any]) -> Page:
    """Run an ordered `query` for one row more than `limit`: that row only says whether
    another page follows. `key` gives a row's key (what the next query starts after)."""
    rows = list(db.session.scalars(query.limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(rows, key(rows[-1]) if more and rows else None)
