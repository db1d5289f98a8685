"""Read-only copies of rows, read with SQLAlchemy Core through a pooled connection of
their own: for a page that only shows what it reads, and is opened far more often than
anything on it changes (an approval link's page and its 2 s status poll).

Loading the same row as ORM entities through the request's Session cost several times
the query itself: the Session's transaction set-up and tear-down, and the ORM's row
processing, set up anew for each entity on every execution. A snapshot has the model's
column attributes under the same names, its Python properties (a settings row's
`recipients`), and the related snapshots given to it — so read-only code written for the
model (the domain's readings, the templates) reads it unchanged. It has nothing else: no
lazy loads (an attribute not read with it is an AttributeError, found by the page's
tests, never a hidden query) and no writes (setting an attribute raises). Code that
changes a row takes the ORM entity instead.
"""
from __future__ import annotations

from functools import cache
from typing import Any, Sequence

from sqlalchemy import Select, inspect

from portal.unit_of_work import read_apart


class Snapshot:
    """One row's column attributes, and the related snapshots it was given."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is read-only: change the ORM entity")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} id={self.__dict__.get('id')!r}>"


@cache
def _snapshot_class(model: type) -> type[Snapshot]:
    """Snapshot with the model's properties (each reads only column attributes here)."""
    properties = {name: value for klass in reversed(model.__mro__)
                  for name, value in vars(klass).items() if isinstance(value, property)}
    return type(f"{model.__name__}Snapshot", (Snapshot,), properties)


class RowShape:
    """The columns of several models in one SELECT list, and how to split a row of it
    into one snapshot per model (None for an outer join's missing row)."""

    def __init__(self, *models: type) -> None:
        self.models = models
        self.columns = []
        self._parts: list[tuple[type[Snapshot], tuple[str, ...], int, int]] = []
        for model in models:
            mapper = inspect(model)
            keys = tuple(attr.key for attr in mapper.column_attrs)
            start = len(self.columns)
            self.columns += [attr.columns[0] for attr in mapper.column_attrs]
            primary = keys.index(mapper.get_property_by_column(mapper.primary_key[0]).key)
            self._parts.append((_snapshot_class(model), keys, start, primary))

    def split(self, row: Sequence[Any]) -> list[Snapshot | None]:
        snapshots: list[Snapshot | None] = []
        for cls, keys, start, primary in self._parts:
            values = row[start:start + len(keys)]
            snapshots.append(None if values[primary] is None
                             else cls(dict(zip(keys, values))))
        return snapshots


def read_one(shape: RowShape, statement: Select, parameters: dict) -> list[Snapshot | None] | None:
    """The statement's first row as snapshots, read apart from the request's session
    (unit_of_work.read_apart). None: no row."""
    rows = read_apart(statement, parameters)
    return shape.split(rows[0]) if rows else None


def relate(snapshot: Snapshot, key: str, value: Any) -> None:
    """Give `snapshot` a related snapshot under the model's relationship name (as
    set_committed_value fills an entity's)."""
    snapshot.__dict__[key] = value
