"""Unique names, settled by the database: two people creating the same name at once both
pass the "does it exist?" check, and the unique constraint refuses the second INSERT."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from sqlalchemy.exc import IntegrityError

from portal.extensions import db
from portal.domain.errors import ConflictError


def held_by_another(found, own_id: int) -> bool:
    """For a rename: the row found by the new name is another one."""
    return found is not None and found.id != own_id


@contextmanager
def claim(taken: Callable[[], bool], message: str, field: str = "name") -> Iterator[None]:
    """Run the block's adds and changes in a savepoint and flush them there. When a unique
    constraint refuses them and `taken()` now finds the row that won, raise
    ConflictError(message) for `field`; the transaction stays usable. Any other integrity
    error is a bug and propagates.

    Do the block's reads before it: the savepoint holds only the writes."""
    try:
        with db.session.begin_nested():
            yield
    except IntegrityError:
        if taken():
            raise ConflictError(message, field) from None
        raise
