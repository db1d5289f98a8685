"""One row written by a single INSERT and handed back as a loaded ORM object, without
the ORM's flush: for a hot path's one new row, where the unit of work's bookkeeping
(sorting the session's objects, walking the new object's relationships, cascades) cost
more than the statement itself.

Two steps, so that what needs no database happens before the transaction's first write
(on SQLite that write takes the database's one write lock until the commit):
`unsaved(model, values, **related)` builds the object — every column attribute set (the
value given, else the column's Python default) and the relationships given filled — and
`insert(obj)` writes it. The object is then exactly what a query that had just loaded the
row would give: nothing pending, persistent in the session, its new primary key set.
Later changes to it flush as UPDATEs in the usual way."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Insert, inspect
from sqlalchemy import insert as insert_into
from sqlalchemy.orm import make_transient_to_detached
from sqlalchemy.orm.attributes import set_committed_value

from portal.extensions import db

T = TypeVar("T")


class _Computed:
    """A column whose default only the INSERT would know: it must be given."""


@dataclass(frozen=True)
class _Shape:
    statement: Insert  # a Core INSERT of the table: no ORM bulk-insert machinery
    defaults: dict[str, Any]  # column attribute → its value when none is given
    columns: dict[str, str]  # column attribute → column name
    primary_key: str  # its attribute


def _shape_of(model: type) -> _Shape:
    mapper = inspect(model)
    (primary_key,) = mapper.primary_key
    defaults, columns = {}, {}
    for attribute in mapper.column_attrs:
        column = attribute.columns[0]
        if column.primary_key:
            continue
        columns[attribute.key] = column.key
        default = column.default
        defaults[attribute.key] = (None if default is None else
                                   default.arg if default.is_scalar else _Computed)
    return _Shape(insert_into(mapper.local_table), defaults, columns,
                  mapper.get_property_by_column(primary_key).key)


_SHAPES: dict[type, _Shape] = {}


def _shape(model: type) -> _Shape:
    shape = _SHAPES.get(model)
    if shape is None:
        shape = _SHAPES[model] = _shape_of(model)
    return shape


def unsaved(model: type[T], values: dict[str, Any], **related: Any) -> T:
    """A new `model` object with `values` (column attribute names; the rest take their
    defaults) and `related` relationships (name → object already in the session) filled
    the way a load fills them. Nothing is written, nor added to the session: see insert."""
    shape = _shape(model)
    unknown = set(values) - set(shape.defaults)
    if unknown:
        raise TypeError(f"{model.__name__} has no column attribute {sorted(unknown)}")
    row = {**shape.defaults, **values}
    computed = sorted(key for key, value in row.items() if value is _Computed)
    if computed:
        raise TypeError(f"{model.__name__}: give {computed} (their defaults are computed)")
    obj = model(**row)
    for name, value in related.items():
        set_committed_value(obj, name, value)
    return obj


def insert(obj: Any) -> None:
    """Write an `unsaved` object: one INSERT. It is then persistent in the session, as if
    just loaded, with its new primary key."""
    shape = _shape(type(obj))
    row = {column: getattr(obj, key) for key, column in shape.columns.items()}
    result = db.session.execute(shape.statement, row)
    setattr(obj, shape.primary_key, result.inserted_primary_key[0])
    make_transient_to_detached(obj)  # as if loaded: nothing pending, identity set
    db.session.add(obj)
