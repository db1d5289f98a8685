"""Benchmark: the approvers' "Pending requests" page under load, and how late expiry runs.

    python tests/benchmarks/bench_requests.py [--database-uri URI] [--requests 1000]

Not a test (pytest does not collect this folder: no test_ prefix). It builds an app on a
temporary SQLite file (or URI: use a scratch database, the run adds its own uniquely named
department, users and devices and leaves them there), migrates it with Alembic, seeds one
department (session confirmation + email authorization with two recipients) and N pending
requests through the real service (audit events, approval links, outbox mail included),
then measures, signed in as the department's approver with CSRF on as in production:

* GET /requests/pending (the full page) and GET /requests/pending/rows (the fragment
  htmx polls every 2 s): median / p95 wall time and SQL statements per request, counted
  with a before_cursor_execute listener;
* expiry lateness: E requests are made to fall due over a few seconds, the real scheduler
  (portal.jobs.build_scheduler(app).start()) runs, and decided_at - expires_at is taken
  for each one (median / p95 / max).
"""
from __future__ import annotations

import argparse
import logging
import re
import secrets
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

from flask_migrate import upgrade
from sqlalchemy import event, select, update

from portal import create_app
from portal.extensions import db
from portal.jobs import EXPIRY_INTERVAL_SECONDS, build_scheduler
from portal.models import SessionRequest
from portal.services import accounts, agents, departments, devices
from portal.services import requests as request_service
from portal.services.actors import Actor

PASSWORD = "correct horse battery staple"
DEVICES = 25
TECHNICIANS = 5


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


class StatementCounter:
    def __init__(self, engine) -> None:
        self.count = 0
        event.listen(engine, "before_cursor_execute", self._count)

    def _count(self, *_args) -> None:
        self.count += 1


def seed(app, n_requests: int) -> dict:
    """One department, its approver, technicians, devices and n pending requests."""
    tag = uuid.uuid4().hex[:6]
    actor = Actor(label="bench")
    now = utcnow()
    department = departments.create_department(name=f"Bench {tag}", actor=actor, now=now)
    approver_email, admin_email = f"approver-{tag}@example.com", f"admin-{tag}@example.com"
    values = departments.settings_values(department.settings) | {
        "is_confirmation_shown": True, "confirmation_timeout_seconds": 600,
        "is_email_authorization_required": True, "email_authorization_timeout_seconds": 3600,
        "email_recipients": f"{approver_email}\n{admin_email}"}
    departments.update_settings(department=department, values=values, actor=actor, now=now)
    accounts.create_or_update_user(email=approver_email, password=PASSWORD, role="approver",
                                   department=department, actor=actor, now=now)
    technicians = [accounts.create_or_update_user(
        email=f"tech{i}-{tag}@example.com", password=PASSWORD, role="technician",
        department=department, actor=actor, now=now) for i in range(TECHNICIANS)]
    names = []
    for i in range(DEVICES):
        device, _token = devices.create_device(
            department=department, name=f"WIN-{tag.upper()}-{i:03d}", os="Windows 11 Pro",
            ip_address=f"10.{i // 250}.{i % 250}.10", actor=actor, now=now)
        agents.update_state(device=device, locked=False, logged_in_user=f"user{i}",
                            actor=actor, now=now)
        names.append(device.name)
    db.session.commit()
    for i in range(n_requests):
        technician = technicians[i % TECHNICIANS]
        request_service.create_session_request(
            technician=technician, device_name=names[i % DEVICES],
            run_as=("Administrator" if i % 3 == 0 else None),
            reason=(f"Ticket INC-{100000 + i}: printer queue stuck" if i % 2 else None),
            actor=Actor(label=technician.email, user_id=technician.id),
            now=now - timedelta(seconds=(n_requests - i) * 0.2),  # over the last minutes
            base_url="http://portal.bench")
        if i % 200 == 199:
            db.session.commit()
    db.session.commit()
    return {"approver": approver_email, "technician_id": technicians[0].id,
            "device": names[0]}


def sign_in(client, email: str) -> None:
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page).group(1)
    response = client.post("/login", data={"email": email, "password": PASSWORD,
                                           "csrf_token": token})
    assert response.status_code == 303, f"sign-in failed: {response.status_code}"


def measure(client, counter: StatementCounter, url: str, runs: int) -> dict:
    for _ in range(3):  # warm-up: template compilation, connection pool
        assert client.get(url).status_code == 200
    times, statements = [], []
    for _ in range(runs):
        before = counter.count
        started = time.perf_counter()
        response = client.get(url)
        times.append((time.perf_counter() - started) * 1000)
        statements.append(counter.count - before)
        assert response.status_code == 200, (url, response.status_code)
    body = response.get_data(as_text=True)
    return {"median_ms": statistics.median(times), "p95_ms": percentile(times, 0.95),
            "statements": statistics.median(statements), "rows": body.count('<tr id="request-'),
            "kib": len(body.encode()) / 1024}


def expiry_lateness(app, info: dict, n: int, spread: float) -> dict:
    """Make n fresh requests fall due over `spread` seconds, run the real scheduler and
    report decided_at - expires_at."""
    technician = accounts.get_user(info["technician_id"])
    ids = [request_service.create_session_request(
        technician=technician, device_name=info["device"], actor=Actor(label="bench"),
        now=utcnow(), base_url="http://portal.bench").id for _ in range(n)]
    start = utcnow() + timedelta(seconds=1.5)
    for i, request_id in enumerate(ids):
        due = start + timedelta(seconds=spread * i / max(n - 1, 1))
        db.session.execute(update(SessionRequest).where(SessionRequest.id == request_id)
                           .values(expires_at=due, end_user_deadline=due, email_deadline=due))
    db.session.commit()
    scheduler = build_scheduler(app)
    scheduler.start()
    try:
        give_up = time.monotonic() + spread + 30
        while time.monotonic() < give_up:
            open_count = db.session.query(SessionRequest).filter(
                SessionRequest.id.in_(ids), SessionRequest.status == "pending").count()
            db.session.commit()
            if open_count == 0:
                break
            time.sleep(0.2)
    finally:
        scheduler.shutdown(wait=True)
    rows = db.session.execute(select(SessionRequest.status, SessionRequest.expires_at,
                                     SessionRequest.decided_at)
                              .where(SessionRequest.id.in_(ids))).all()
    db.session.commit()
    late = [(r.decided_at - r.expires_at).total_seconds() * 1000 for r in rows
            if r.status == "timed_out"]
    return {"expired": len(late), "of": n, "median_ms": statistics.median(late),
            "p95_ms": percentile(late, 0.95), "max_ms": max(late),
            "early": sum(1 for value in late if value < 0)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-uri", help="default: a temporary SQLite file")
    parser.add_argument("--requests", type=int, default=1000, help="pending requests to seed")
    parser.add_argument("--runs", type=int, default=30, help="timed GETs per URL")
    parser.add_argument("--expiring", type=int, default=200,
                        help="requests made to fall due for the expiry measurement")
    parser.add_argument("--spread", type=float, default=3.0,
                        help="seconds over which those requests fall due")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)  # the jobs log every sweep at INFO

    with tempfile.TemporaryDirectory(prefix="portal-bench-") as tmp:
        uri = args.database_uri or "sqlite:///" + str(Path(tmp) / "bench.sqlite3")
        app = create_app({"SECRET_KEY": secrets.token_urlsafe(48),
                          "TOKEN_HASH_KEY": secrets.token_urlsafe(48),
                          "AUDIT_KEY": secrets.token_urlsafe(48),
                          "SQLALCHEMY_DATABASE_URI": uri,
                          "BASE_URL": "http://portal.bench", "ARGON2_TIME_COST": 1,
                          "ARGON2_MEMORY_COST_KIB": 8, "ARGON2_PARALLELISM": 1})
        with app.app_context():
            upgrade()
            # Alembic's fileConfig() disables loggers that already exist: keep the jobs'.
            logging.getLogger().setLevel(logging.WARNING)
            for name in ("portal.jobs", "apscheduler"):
                logging.getLogger(name).disabled = False
            started = time.perf_counter()
            info = seed(app, args.requests)
            seeding = time.perf_counter() - started
            engine = db.engine
        # No app context held here: each request gets its own, and its own session, as
        # in production (a pushed context would be shared, with its identity map).
        counter = StatementCounter(engine)
        client = app.test_client()
        sign_in(client, info["approver"])
        page = measure(client, counter, "/requests/pending", args.runs)
        rows = measure(client, counter, "/requests/pending/rows", args.runs)
        with app.app_context():
            lateness = expiry_lateness(app, info, args.expiring, args.spread)
        dialect = engine.dialect.name
        engine.dispose()

    print(f"\nSession Gate benchmark — {dialect}, {args.requests} pending requests "
          f"(seeded through the service in {seeding:.1f} s), {args.runs} runs per URL")
    print(f"\n  {'GET':<26}{'median':>10}{'p95':>10}{'SQL/req':>9}{'rows':>6}{'size':>9}")
    for url, m in (("/requests/pending", page), ("/requests/pending/rows", rows)):
        print(f"  {url:<26}{m['median_ms']:>8.1f}ms{m['p95_ms']:>8.1f}ms"
              f"{m['statements']:>9.0f}{m['rows']:>6}{m['kib']:>6.0f}KiB")
    print(f"\n  Expiry (scheduler sweep every {EXPIRY_INTERVAL_SECONDS} s): "
          f"{lateness['expired']}/{lateness['of']} timed out over {args.spread:g} s; "
          f"decided_at - expires_at: median {lateness['median_ms']:.0f} ms, "
          f"p95 {lateness['p95_ms']:.0f} ms, max {lateness['max_ms']:.0f} ms"
          + (f", {lateness['early']} EARLY" if lateness["early"] else ""))
    return 0 if lateness["expired"] == lateness["of"] and not lateness["early"] else 1


if __name__ == "__main__":
    sys.exit(main())
