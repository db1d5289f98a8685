"""The conditional transitions that session requests, OTP access requests and sessions
share. Each is one UPDATE whose WHERE holds the state it leaves, so of two racing callers
(two sweeps, a sweep and a decision, two "end" calls) exactly one wins."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update

from portal.domain.errors import ConflictError, NotFoundError
from portal.extensions import db
from portal.models import Device

PENDING, TIMED_OUT = "pending", "timed_out"  # the same words for both kinds of request


def time_out_one(model, row_id: int, now: datetime) -> bool:
    """Move one overdue pending request to timed_out; whether this call did it."""
    return db.session.execute(
        update(model)
        .where(model.id == row_id, model.status == PENDING, model.expires_at <= now)
        .values(status=TIMED_OUT, decided_at=now)
        .execution_options(synchronize_session=False)).rowcount == 1


def time_out_due(model, now: datetime, limit: int | None, *columns) -> list:
    """Overdue pending requests of `model` (the `limit` earliest due, or all) → timed_out.
    Found by an indexed read first, so a sweep with nothing due writes nothing (on SQLite:
    takes no write lock); then one conditional UPDATE, which skips whatever another sweep
    or a decision moved meanwhile. The moved rows (id and `columns`), in id order."""
    due = select(model.id).where(model.status == PENDING, model.expires_at <= now)
    if limit is not None:
        due = due.order_by(model.expires_at, model.id).limit(limit)
    candidates = list(db.session.scalars(due))
    if not candidates:
        return []
    return sorted(db.session.execute(
        update(model)
        .where(model.id.in_(candidates), model.status == PENDING, model.expires_at <= now)
        .values(status=TIMED_OUT, decided_at=now)
        .returning(model.id, *columns)
        .execution_options(synchronize_session=False)).all())


def next_deadline_query(model):
    """When the earliest pending request of `model` falls due (an indexed read), for the
    sweep to wake then; a scalar subquery, so one statement can ask several."""
    return (select(model.expires_at).where(model.status == PENDING)
            .order_by(model.expires_at).limit(1).scalar_subquery())


def end_once(model, *, device: Device, session_id: int, now: datetime, what: str,
             **values):
    """End a remote or client session of `device` once (setting `values` too): 404 for
    another device's (or an unknown) one, 409 when it has ended already."""
    session = db.session.get(model, session_id)
    if session is None or session.device_id != device.id:
        raise NotFoundError(f"No such {what} on this device.")
    won = db.session.execute(
        update(model).where(model.id == session.id, model.ended_at.is_(None))
        .values(ended_at=now, **values).execution_options(synchronize_session=False)).rowcount == 1
    db.session.expire(session)
    if not won:
        raise ConflictError(f"This {what} has already ended.")
    return session
