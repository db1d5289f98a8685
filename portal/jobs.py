"""Scheduler jobs (expiry, outbox delivery) and build_scheduler(app).

APScheduler 3 runs in exactly one process: `flask --app portal scheduler` in production
(guarded by a PostgreSQL advisory lock, portal.election, so a second one waits), or
in-process for `demo`.
Web workers never start it. Jobs are idempotent: they call services whose conditional
updates make a second run (or a second scheduler) a no-op. Deadlines are enforced in every
decision path too, so a late or stopped scheduler never lets a late decision through.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from datetime import datetime, timedelta, timezone

from apscheduler.events import (EVENT_JOB_EXECUTED, EVENT_SCHEDULER_SHUTDOWN,
                               EVENT_SCHEDULER_STARTED)
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.blocking import BlockingScheduler
from flask import Flask
from sqlalchemy import select, update

from portal import clock, notifier
from portal.domain.errors import AuditHeadMissingError
from portal.extensions import db
from portal.models import OtpAccessRequest, OutboxMessage, SessionRequest
from portal.services import (audit, chain, decisions, delivery, otp, otp_requests,
                             transitions)

log = logging.getLogger("portal.jobs")

EXPIRY_INTERVAL_SECONDS = 0.5  # the longest the expiry job sleeps; deadlines wake it
EXPIRY_BATCH = 200  # requests timed out per transaction (SQLite: per hold of the write lock)
# PostgreSQL locks only the rows a batch moves, so a bigger batch costs nobody a wait and
# spreads each transaction's fixed cost over more requests.
EXPIRY_BATCH_POSTGRESQL = 1000
EXPIRY_JOB = "expire_requests"
WAKE_MARGIN_SECONDS = 0.002  # wake just after a deadline, not a hair before it
AUDIT_SEAL_INTERVAL_SECONDS = 0.5
OUTBOX_INTERVAL_SECONDS = 2  # the sweep for retries; new mail wakes delivery at once
OUTBOX_BATCH = 50


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
    """Everything overdue at `now` times out, in the caller's transaction (one go, for a
    caller with its own boundary); the job sweeps in batches (expire_requests). The
    session requests' ids."""
    ids = decisions.expire_overdue(now)
    otp_requests.expire_overdue(now)
    otp.drop_expired_copies(now)
    return ids


def expire_batch(now: datetime) -> tuple[list[int], bool]:
    """One batch of the sweep: at most EXPIRY_BATCH session requests and as many OTP access
    requests time out; sealed copies of expired one-time passwords go. The session
    requests' ids, and whether more may be due."""
    batch = EXPIRY_BATCH_POSTGRESQL if db.engine.dialect.name == "postgresql" else EXPIRY_BATCH
    ids = decisions.expire_overdue(now, limit=batch)
    asks = otp_requests.expire_overdue(now, limit=batch)
    otp.drop_expired_copies(now)
    return ids, max(len(ids), len(asks)) >= batch


def next_deadline(now: datetime) -> datetime | None:
    """The earliest deadline still pending (session or OTP access request), or the
    earliest chain step (fallback, escalation) due: one statement of three indexed reads."""
    row = db.session.execute(select(
        transitions.next_deadline_query(SessionRequest),
        transitions.next_deadline_query(OtpAccessRequest),
        chain.next_due_query())).one()
    return min((d for d in row if d is not None), default=None)


def take_chain_steps(app: Flask) -> list[tuple[int, str]] | None:
    """The chain's due steps (fallback mail, escalation), a batch per commit; after the
    expiry sweep, so a request past its deadline is timed out, not mailed. None when a
    batch failed (it is retried at the next periodic run, not at once)."""
    base_url = app.config["BASE_URL"]
    taken: list[tuple[int, str]] = []
    while True:
        done = _run(app, "approval chain",
                    lambda now: chain.take_due_steps(now, base_url=base_url))
        if done is None:
            return None
        taken += done[0]
        if not done[1]:
            break
    if taken:
        log.info("approval chain: %s", ", ".join(f"request {i} {step}" for i, step in taken))
    return taken


def expire_requests(app: Flask) -> list[int]:
    """The sweep: batch after batch, each committed on its own at a fresh `now`, so on
    SQLite the write lock is held for one batch at a time and thousands falling due
    together never stall the web workers' writes."""
    ids: list[int] = []
    while True:
        done = _run(app, "expiry sweep", expire_batch)
        if done is None:
            break
        ids += done[0]
        if not done[1]:
            break
    if ids:
        log.info("timed out %d request(s)", len(ids))
    return ids


def _sweep(app: Flask) -> datetime | None:
    """The expiry job: sweep, then say when (in APScheduler's real time) the next
    deadline falls, for the listener to bring the next run forward to it."""
    expire_requests(app)
    if take_chain_steps(app) is None:
        return None  # no bringing forward a step that failed: the periodic run retries it
    upcoming = _run(app, "next deadline", next_deadline)
    if upcoming is None:
        return None
    wait = (upcoming - clock.now(app)).total_seconds()
    return datetime.now(timezone.utc) + timedelta(seconds=max(wait, 0) + WAKE_MARGIN_SECONDS)


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


def deliver_outbox(now: datetime, limit: int = OUTBOX_BATCH) -> delivery.DeliveryReport:
    """Send what is due over one SMTP connection (a job boundary): the claim is committed
    first; the outcomes after the first message sent delivery.OUTCOME_SECONDS after the
    last write, and at the end — also when something fails, in a new transaction. A
    message is sent at most once per claim; a crash loses the outcomes not yet written
    (those messages are sent again when their claim lapses, or when another scheduler
    takes over). Needs an app context."""
    outcomes = delivery.Outcomes()
    claimed = delivery.claim_due(now, limit)
    db.session.commit()  # the claim is visible before the slow part
    if not claimed:
        return outcomes.report
    try:
        connection = delivery.connect()
    except Exception as exc:  # SMTP down: everything claimed is retried later
        delivery.defer_all(claimed, exc, now, outcomes)
        _write_outcomes(outcomes)
        return outcomes.report
    try:
        written_at = time.monotonic()
        for item in delivery.load_claimed(claimed, now):
            delivery.deliver_one(item, connection, now, outcomes)
            if time.monotonic() - written_at >= delivery.OUTCOME_SECONDS:
                _write_outcomes(outcomes)
                written_at = time.monotonic()
    except BaseException:
        db.session.rollback()  # what failed may have been a statement; the rest is plain
        _write_outcomes(outcomes)  # values: what was sent is recorded all the same
        raise
    else:
        _write_outcomes(outcomes)  # before saying goodbye to a server that may hang
    finally:
        delivery.disconnect(connection)
    return outcomes.report


def _write_outcomes(outcomes: delivery.Outcomes) -> None:
    if len(outcomes):
        outcomes.write()
        db.session.commit()
        outcomes.clear()


_delivering = threading.Lock()  # the sweep and the wake-up take turns in a process


def deliver_mail(app: Flask) -> delivery.DeliveryReport | None:
    """Deliver batches until what is due is done (a full batch means more may wait)."""
    total = delivery.DeliveryReport()
    with _delivering:
        while True:
            report = _run(app, "outbox delivery", deliver_outbox)
            if report is None:
                return None
            total.add(report)
            if report.handled < OUTBOX_BATCH:
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


def _bring_expiry_forward(scheduler) -> None:
    """Once an expiry run is over, move the next run to the deadline it returned, if that
    is earlier. The listener runs in the executor's thread, and APScheduler's shutdown
    holds the job stores' lock while it waits for that thread: a listener that reached
    for the lock (get_job, modify_job) would wait for the shutdown that waits for it. So
    the listener only hands the time over, and a thread of its own moves the job."""
    deadlines: queue.SimpleQueue = queue.SimpleQueue()
    stops: list[threading.Event] = []

    def on_executed(event) -> None:
        if event.job_id == EXPIRY_JOB and event.retval is not None:
            deadlines.put(event.retval)

    def move(stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                deadline = deadlines.get(timeout=0.5)
            except queue.Empty:
                continue
            try:
                job = scheduler.get_job(EXPIRY_JOB)
                if job is not None and job.next_run_time and deadline < job.next_run_time:
                    scheduler.modify_job(EXPIRY_JOB, next_run_time=deadline)
            except JobLookupError:  # shutting down
                pass

    def on_lifecycle(event) -> None:
        if event.code == EVENT_SCHEDULER_STARTED:
            stops.append(threading.Event())
            threading.Thread(target=move, args=(stops[-1],), name="expiry wake-up",
                             daemon=True).start()
        elif stops:  # the thread is not joined: it may be waiting for the lock
            stops.pop().set()

    scheduler.add_listener(on_executed, EVENT_JOB_EXECUTED)
    scheduler.add_listener(on_lifecycle, EVENT_SCHEDULER_STARTED | EVENT_SCHEDULER_SHUTDOWN)


def build_scheduler(app: Flask, *, blocking: bool = False):
    """A scheduler with both jobs; a start-up sweep runs at once (catching whatever
    expired while nothing was running), then the periodic ones. The expiry job runs at
    least every EXPIRY_INTERVAL_SECONDS and otherwise wakes at the next deadline (so a
    request times out within milliseconds of it, and an idle sweep is two indexed reads)."""
    scheduler_class = BlockingScheduler if blocking else BackgroundScheduler
    scheduler = scheduler_class(timezone=timezone.utc,
                                job_defaults={"coalesce": True, "max_instances": 1,
                                              "misfire_grace_time": 30})
    now = datetime.now(timezone.utc)  # APScheduler's own timing runs on real time
    scheduler.add_job(_sweep, "interval", args=[app], id=EXPIRY_JOB,
                      seconds=EXPIRY_INTERVAL_SECONDS, next_run_time=now)
    scheduler.add_job(seal_audit, "interval", args=[app], id="seal_audit",
                      seconds=AUDIT_SEAL_INTERVAL_SECONDS, next_run_time=now)
    scheduler.add_job(deliver_mail, "interval", args=[app], id="deliver_mail",
                      seconds=OUTBOX_INTERVAL_SECONDS, next_run_time=now)

    _bring_expiry_forward(scheduler)
    _wake_delivery_on_new_mail(app, scheduler)
    return scheduler


def release_claims(now: datetime) -> int:
    """Taking over from a scheduler that died: the messages it had claimed but not sent
    are due again at once (not after CLAIM_SECONDS). Only for the elected scheduler, which
    is the only sender, so the claims it finds can only be a dead one's."""
    return db.session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.status == "sending", OutboxMessage.next_attempt_at > now)
        .values(next_attempt_at=now)
        .execution_options(synchronize_session=False)).rowcount


def take_over(app: Flask) -> int:
    """What the elected scheduler does before its first run: release a dead
    predecessor's claims (the start-up sweep itself runs as the first expiry job)."""
    released = _run(app, "take-over", release_claims) or 0
    if released:
        log.info("took over %d claimed message(s) from a stopped scheduler", released)
    return released
