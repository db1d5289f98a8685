"""Sign-in throttling: every attempt is counted per key ("email:…", "ip:…") by one upsert
before the password is checked, so parallel attempts can't slip past the count.

A key's row counts the attempts of its window. The attempt that reaches the key's limit
sets the lock and is still checked; the attempts after it, while the lock lasts, are
refused (and counted, without extending the lock). When the window or the lock has run
out, the next attempt starts a new count. A successful sign-in deletes its email key's row
and takes its own attempt back from the IP key's, so an email counts the failures since
its last success and an address counts only failures (refused attempts included).

The upsert locks the key's row until the sign-in's transaction ends, so attempts on one
key run one at a time: the count never loses one, and no read is ever followed by a
write."""
from __future__ import annotations

import math
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import case, delete, literal, or_, update

from portal.extensions import db
from portal.models import LoginThrottle
from portal.models.types import UTCDateTime
from portal.services import upserts


def _at(value: datetime):
    return literal(value, UTCDateTime())


def _count(key: str, limit: int, now: datetime) -> tuple[int, datetime | None]:
    """Insert or increment the key's count in one statement; its new count and lock."""
    config = current_app.config
    window = timedelta(seconds=config["LOGIN_THROTTLE_WINDOW_SECONDS"])
    lock_ends = now + timedelta(seconds=config["LOGIN_LOCK_SECONDS"])
    row = LoginThrottle.__table__.c
    locked = row.locked_until > now
    starts_over = or_(row.locked_until.is_not(None), row.window_started_at < now - window)
    failures = case((locked, row.failures + 1), (starts_over, 1), else_=row.failures + 1)
    statement = upserts.insert(LoginThrottle).values(
        key=key, failures=1, window_started_at=now,
        locked_until=lock_ends if limit <= 1 else None,
    )
    statement = statement.on_conflict_do_update(
        index_elements=[row.key],
        set_={
            # In SET every column reads the row as it was: these three agree.
            "failures": failures,
            "window_started_at": case((locked, row.window_started_at),
                                      (starts_over, _at(now)), else_=row.window_started_at),
            "locked_until": case((locked, row.locked_until),
                                 (failures >= limit, _at(lock_ends)), else_=None),
        },
    ).returning(row.failures, row.locked_until)
    counted = db.session.execute(statement).one()
    return counted.failures, counted.locked_until


def count_attempt(keys: list[tuple[str, int]], now: datetime) -> int:
    """Count one sign-in attempt on each (key, limit); the seconds the attempt must wait
    (the longest lock that refuses it), or 0 when it may be checked."""
    wait = 0
    for key, limit in keys:
        failures, locked_until = _count(key, limit, now)
        if failures > limit and locked_until is not None and locked_until > now:
            wait = max(wait, math.ceil((locked_until - now).total_seconds()))
    return wait


def forget_attempt(email_key: str, other_keys: list[tuple[str, int]]) -> None:
    """After a successful sign-in: the email starts over; the other keys take this attempt
    back (and the lock it may have set)."""
    db.session.execute(delete(LoginThrottle).where(LoginThrottle.key == email_key))
    for key, limit in other_keys:
        db.session.execute(
            update(LoginThrottle)
            .where(LoginThrottle.key == key, LoginThrottle.failures > 0)
            .values(failures=LoginThrottle.failures - 1,
                    locked_until=case((LoginThrottle.failures - 1 >= limit,
                                       LoginThrottle.locked_until), else_=None))
            .execution_options(synchronize_session=False)
        )
