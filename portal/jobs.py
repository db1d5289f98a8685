"""Scheduler jobs (expiry, outbox delivery) and build_scheduler(app).

APScheduler 3 runs in exactly one process: `flask --app portal scheduler` in production
(guarded by a PostgreSQL advisory lock, so a second one waits), or in-process for `demo`.
Web workers never start it. Jobs are idempotent: they call services whose conditional
updates make a second run (or a second scheduler) a no-op. Deadlines are enforced in every
decision path too, so a late or stopped scheduler never lets a late decision through.
"""
from __future__ import annotations

import logging
import threading
from datetime import datetime, timezone

from apscheduler.events import EVENT_SCHEDULER_SHUTDOWN, EVENT_SCHEDULER_STARTED
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.blocking import BlockingScheduler
from flask import Flask
from sqlalchemy import text

from portal import clock, notifier
from portal.domain.errors import AuditHeadMissingError
from portal.extensions import db
from portal.services import audit, decisions, otp, otp_requests
from portal.services import mail as outbox

log = logging.getLogger("portal.jobs")

EXPIRY_INTERVAL_SECONDS = 0.5
AUDIT_SEAL_INTERVAL_SECONDS = 0.5
OUTBOX_INTERVAL_SECONDS = 2  # the sweep for retries; new mail wakes delivery at once
OUTBOX_BATCH = 50
ADVISORY_LOCK_KEY = 0x5E55_10A7  # "session gate" scheduler election


def _run(app: Flask, name: str, work):
    """A job boundary: its own app context and session, `now` read once from the app's
    clock, one commit, errors logged (a failed run is simply retried at the next tick)."""
    with app.app_context():
        try:
            result = work(clock.now(app))
            db.session.commit()
            return result
        except Exception:
            db.session.rollback()
            log.exception("%s failed", name)
            return None
        finally:
            db.session.remove()


def expire_overdue(now: datetime) -> list[int]:
    """Session requests and OTP access requests past their deadline time out; sealed
    copies of expired one-time passwords go. The session requests' ids."""
    ids = decisions.expire_overdue(now)
    otp_requests.expire_overdue(now)
    otp.drop_expired_copies(now)
    return ids


def expire_requests(app: Flask) -> list[int]:
    ids = _run(app, "expiry sweep", expire_overdue) or []
    if ids:
        log.info("timed out %d request(s): %s", len(ids), ids)
    return ids


def seal_audit_trail(now: datetime) -> int:
    """Chain every committed, unsealed audit event, a batch per commit (a job boundary).
    The number sealed. Needs an app context."""
    total = 0
    while True:
        sealed = audit.seal_pending(now)
        db.session.commit()
        total += sealed
        if sealed < audit.SEAL_BATCH:
            return total


_head_missing_reported = False


def seal_audit(app: Flask) -> int:
    def work(now: datetime) -> int:
        global _head_missing_reported
        try:
            return seal_audit_trail(now)
        except AuditHeadMissingError as exc:
            if not _head_missing_reported:  # once per process, not twice a second
                log.error("%s", exc.message)
                _head_missing_reported = True
            return 0

    return _run(app, "audit sealing", work) or 0


def deliver_outbox(now: datetime, limit: int = OUTBOX_BATCH) -> outbox.DeliveryReport:
    """Send what is due, committing the claim first and then after each message (a job
    boundary): a crash never loses a recorded delivery, and a message is sent at most once
    per claim. Needs an app context."""
    report = outbox.DeliveryReport()
    claimed = outbox.claim_due(now, limit)
    db.session.commit()  # the claim is visible before the slow part
    if not claimed:
        return report
    try:
        connection = outbox.connect()
    except Exception as exc:  # SMTP down: everything claimed is retried later
        outbox.defer_all(claimed, exc, now, report)
        db.session.commit()
        return report
    try:
        for message_id in claimed:
            outbox.deliver_one(message_id, connection, now, report)
            db.session.commit()
    finally:
        outbox.disconnect(connection)
    return report


_delivering = threading.Lock()  # the sweep and the wake-up take turns in a process


def deliver_mail(app: Flask) -> outbox.DeliveryReport | None:
    """Deliver batches until what is due is done (a full batch means more may wait)."""
    total = outbox.DeliveryReport()
    with _delivering:
        while True:
            report = _run(app, "outbox delivery", deliver_outbox)
            if report is None:
                return None
            for name in ("sent", "retried", "failed", "cancelled"):
                getattr(total, name).extend(getattr(report, name))
            handled = (len(report.sent) + len(report.retried) + len(report.failed)
                       + len(report.cancelled))
            if handled < OUTBOX_BATCH:
                break
    if total.sent or total.failed or total.retried:
        log.info("outbox: sent %s, retrying %s, failed %s", total.sent, total.retried,
                 total.failed)
    return total


def _deliver_when_queued(app: Flask, watch: notifier.Watch, stop: threading.Event) -> None:
    """Woken by the notifier's "outbox" channel when a commit queued mail."""
    with watch:
        while not stop.is_set():
            if watch.wait(1.0) and not stop.is_set():
                deliver_mail(app)


def _wake_delivery_on_new_mail(app: Flask, scheduler) -> None:
    """While the scheduler runs, a thread waits for mail to be queued and delivers it
    at once; the periodic job stays as the sweep for retries and back-off. It ends with
    the scheduler (after the batch it may be sending)."""
    running: dict = {}

    def on_event(scheduler_event) -> None:
        if scheduler_event.code == EVENT_SCHEDULER_STARTED:
            with app.app_context():
                watch = notifier.watch_outbox()
            stop = threading.Event()
            thread = threading.Thread(target=_deliver_when_queued, args=(app, watch, stop),
                                      name="outbox wake-up", daemon=True)
            running.update(watch=watch, stop=stop, thread=thread)
            thread.start()
        elif running:
            running["stop"].set()
            running["watch"].wake()
            running.pop("thread").join(timeout=30)
            running.clear()

    scheduler.add_listener(on_event, EVENT_SCHEDULER_STARTED | EVENT_SCHEDULER_SHUTDOWN)


def build_scheduler(app: Flask, *, blocking: bool = False):
    """A scheduler with both jobs; a start-up sweep runs at once (catching whatever
    expired while nothing was running), then the periodic ones."""
    scheduler_class = BlockingScheduler if blocking else BackgroundScheduler
    scheduler = scheduler_class(timezone=timezone.utc,
                                job_defaults={"coalesce": True, "max_instances": 1,
                                              "misfire_grace_time": 30})
    now = datetime.now(timezone.utc)  # APScheduler's own timing runs on real time
    scheduler.add_job(expire_requests, "interval", args=[app], id="expire_requests",
                      seconds=EXPIRY_INTERVAL_SECONDS, next_run_time=now)
    scheduler.add_job(seal_audit, "interval", args=[app], id="seal_audit",
                      seconds=AUDIT_SEAL_INTERVAL_SECONDS, next_run_time=now)
    scheduler.add_job(deliver_mail, "interval", args=[app], id="deliver_mail",
                      seconds=OUTBOX_INTERVAL_SECONDS, next_run_time=now)
    _wake_delivery_on_new_mail(app, scheduler)
    return scheduler


class SchedulerLock:
    """On PostgreSQL, hold a session-level advisory lock on a dedicated connection for the
    life of the scheduler; on SQLite (one machine, the demo) there is nothing to elect."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.connection = None

    def acquire(self) -> bool:
        with self.app.app_context():
            engine = db.engine
            if engine.dialect.name != "postgresql":
                return True
            self.connection = engine.connect()
            got = self.connection.execute(
                text("SELECT pg_try_advisory_lock(:key)"), {"key": ADVISORY_LOCK_KEY}
            ).scalar()
            self.connection.commit()
            if not got:
                self.connection.close()
                self.connection = None
            return bool(got)

    def release(self) -> None:
        if self.connection is not None:
            # Really close the database session, which frees the lock: a plain close()
            # would only hand the connection back to the pool, lock and all.
            self.connection.invalidate()
            self.connection.close()
            self.connection = None
