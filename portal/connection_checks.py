"""A pooled database connection is checked before use only when it has sat idle.

SQLAlchemy's `pool_pre_ping` checks every connection at every checkout: on PostgreSQL one
round trip more for every request (one of six for an agent's prompts poll). A connection
that was in use a moment ago is as alive as a ping would show, so here the ping
(the dialect's own `do_ping`, as pre_ping uses) runs only for a connection idle in the
pool for DB_PING_AFTER_IDLE_SECONDS or longer — after a quiet spell, when a restarted
server or a dropped connection is what a ping exists to find. A failed ping invalidates
the pool (as pre_ping does) and the checkout gets a fresh connection."""
from __future__ import annotations

import time

from flask import Flask
from sqlalchemy import event, exc

from portal.extensions import db

CHECKED_IN_AT = "portal_checked_in_at"


def init_connection_checks(app: Flask) -> None:
    """After db.init_app: ping a connection at checkout when it has been idle."""
    idle = float(app.config["DB_PING_AFTER_IDLE_SECONDS"])
    with app.app_context():
        engine = db.engine

    @event.listens_for(engine, "checkin")
    def checked_in(dbapi_connection, record) -> None:
        record.info[CHECKED_IN_AT] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def checked_out(dbapi_connection, record, proxy) -> None:
        since = record.info.get(CHECKED_IN_AT)
        if since is None or time.monotonic() - since < idle:
            return  # just connected, or in use a moment ago
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as error:
            if engine.dialect.is_disconnect(error, dbapi_connection, None):
                raise exc.InvalidatePoolError() from error
            raise
