"""The one clock. The app holds it (`app.extensions["clock"]`); each boundary — a request,
a job run, a command — reads it once and passes `now` down. Tests swap in a FixedClock."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from flask import Flask, current_app, g


class SystemClock:
    def __call__(self) -> datetime:
        return datetime.now(timezone.utc)


class FixedClock:
    """A clock that stands still until told to move (aware UTC datetimes only)."""

    def __init__(self, now: datetime) -> None:
        self.set(now)

    def __call__(self) -> datetime:
        return self._now

    def set(self, now: datetime) -> None:
        if now.tzinfo is None:
            raise ValueError("FixedClock needs an aware datetime")
        self._now = now.astimezone(timezone.utc)

    def advance(self, seconds: float = 0, **kwargs) -> datetime:
        self._now += timedelta(seconds=seconds, **kwargs)
        return self._now


def init_clock(app: Flask) -> None:
    """The system clock, unless the app's config (from create_app, never the environment)
    gives a callable one."""
    given = app.config.get("CLOCK")
    app.extensions["clock"] = given if callable(given) else SystemClock()


def now(app: Flask | None = None) -> datetime:
    """The current time by the app's clock."""
    return (app or current_app).extensions["clock"]()


def request_now() -> datetime:
    """The current request's `now`: read once from the clock, the same all through it."""
    if "now" not in g:
        g.now = now()
    return g.now
