"""Benchmark: the work one request of each hot path does, in-process — SQL statements
and time through the Flask test client (no server, no network), so what is measured is
the portal's own cost per request.

    python tests/benchmarks/bench_statements.py [--database-uri URI] [--runs 200]
                                                [--show PATH]

Not a test (pytest does not collect this folder). It migrates a temporary SQLite file
(or URI: use a scratch database; the run adds its own uniquely named departments, users
and devices and leaves them there), seeds two departments with email authorization on
and two recipients (one of them with session confirmation on too), a technician with a
user token and devices with device tokens, then times each path `--runs` times and
prints, per path: statements per request (median; the audit trail's own statements
apart, see tests/statement_counter.py), audit events written per request, the median /
p95 wall time, and the median CPU time of this process (the portal's Python work alone,
less disturbed by other load on the machine; a PostgreSQL server's work is not in it).

  create               POST /api/v1/session-requests (2 approval emails queued)
  create+confirm       the same with session confirmation on (an end-user prompt too)
  approval first GET   GET /approvals/<token>, a link's first opening ("link opened")
  approval later GET   GET /approvals/<token> again (must write nothing)
  prompts (none)       GET /api/v1/agent/prompts, no prompt open
  prompts (one open)   the same with one prompt open (already shown once)

`--show PATH` (e.g. --show create) prints the statements of that path's last run.
"""
from __future__ import annotations

import argparse
import logging
import secrets
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

from flask_migrate import upgrade
from sqlalchemy import func, select

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: statement_counter

from statement_counter import StatementLog  # noqa: E402

from portal import create_app  # noqa: E402
from portal.extensions import db  # noqa: E402
from portal.models import AuditEvent, OutboxMessage  # noqa: E402
from portal.services import accounts, agents, departments, devices, mail  # noqa: E402
from portal.services import requests as request_service  # noqa: E402
from portal.services.actors import Actor  # noqa: E402

PASSWORD = "correct horse battery staple"
BASE_URL = "http://portal.bench"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def seed() -> dict:
    """Two departments (email authorization with two recipients; the second with session
    confirmation too), a technician of both with a user token, and devices."""
    tag = uuid.uuid4().hex[:6]
    actor, now = Actor(label="bench"), utcnow()
    info: dict = {"tag": tag}
    technician = None
    for key, confirm in (("email", False), ("confirm", True)):
        department = departments.create_department(name=f"Bench {tag} {key}", actor=actor,
                                                   now=now)
        recipients = [f"approver-{key}-{tag}@example.com", f"second-{key}-{tag}@example.com"]
        values = departments.settings_values(department.settings) | {
            "is_confirmation_shown": confirm, "confirmation_timeout_seconds": 600,
            "is_email_authorization_required": True,
            "email_authorization_timeout_seconds": 3600,
            "email_recipients": "\n".join(recipients)}
        departments.update_settings(department=department, values=values, actor=actor,
                                    now=now)
        for email in recipients:
            accounts.create_or_update_user(email=email, password=PASSWORD, role="approver",
                                           department=department, actor=actor, now=now)
        technician = accounts.create_or_update_user(
            email=f"tech-{tag}@example.com", password=PASSWORD, role="technician",
            department=department, actor=actor, now=now)
        group = devices.create_group(department=department, name="Servers", actor=actor,
                                     now=now)
        for name in ("target", "idle", "prompt"):
            device, token = devices.create_device(
                department=department, name=f"{key}-{name}-{tag}".upper(), os="Windows 11",
                ip_address="10.0.0.5", group_id=group.id, actor=actor, now=now)
            agents.update_state(device=device, locked=False, logged_in_user="alice",
                                actor=actor, now=now)
            info[f"{key}_{name}"] = (device.name, token)
    info["technician_id"] = technician.id
    info["technician_token"] = accounts.create_user_token(user=technician, actor=actor,
                                                           now=now)
    db.session.commit()
    # One open prompt on the confirm department's "prompt" device.
    request_service.create_session_request(
        technician=technician, device_name=info["confirm_prompt"][0], actor=actor, now=now,
        base_url=BASE_URL)
    db.session.commit()
    return info


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


class HotPath:
    def __init__(self, name: str, call, expect: int = 200) -> None:
        self.name, self.call, self.expect = name, call, expect


def run(app, path: HotPath, runs: int, warmup: int = 3) -> dict:
    client = app.test_client()
    with app.app_context():
        engine = db.engine
        events_before = db.session.scalar(select(func.count()).select_from(AuditEvent))
    times, cpu, counts, own, writes = [], [], [], [], []
    log = StatementLog(engine)
    for i in range(warmup + runs):
        with log:
            started, started_cpu = time.perf_counter(), time.process_time()
            response = path.call(client, i)
            elapsed = (time.perf_counter() - started) * 1000
            elapsed_cpu = (time.process_time() - started_cpu) * 1000
        assert response.status_code == path.expect, (path.name, response.status_code,
                                                     response.get_data(as_text=True)[:300])
        if i >= warmup:
            times.append(elapsed)
            cpu.append(elapsed_cpu)
            counts.append(log.count)
            own.append(len(log.own))
            writes.append(len(log.writes))
    with app.app_context():
        events = db.session.scalar(select(func.count()).select_from(AuditEvent)) \
            - events_before
    return {"name": path.name, "statements": statistics.median(counts),
            "own": statistics.median(own), "writes": statistics.median(writes),
            "events": events / (warmup + runs), "median_ms": statistics.median(times),
            "p95_ms": percentile(times, 0.95), "cpu_ms": statistics.median(cpu),
            "last": log}


def approval_tokens(app, after_id: int, department_recipient: str) -> list[str]:
    """The approval links mailed since `after_id` (fresh, never opened)."""
    with app.app_context():
        messages = db.session.scalars(
            select(OutboxMessage).where(OutboxMessage.id > after_id,
                                        OutboxMessage.recipient == department_recipient)
            .order_by(OutboxMessage.id)).all()
        return [url.rsplit("/", 1)[1] for message in messages
                for url in mail.approval_links_in(message, BASE_URL)]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-uri", help="default: a temporary SQLite file")
    parser.add_argument("--runs", type=int, default=200, help="timed requests per path")
    parser.add_argument("--show", help="print the statements of this path's last run "
                                       "(a prefix of its name, e.g. create)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    with tempfile.TemporaryDirectory(prefix="portal-bench-") as tmp:
        uri = args.database_uri or "sqlite:///" + str(Path(tmp) / "bench.sqlite3")
        app = create_app({"SECRET_KEY": secrets.token_urlsafe(48),
                          "TOKEN_HASH_KEY": secrets.token_urlsafe(48),
                          "AUDIT_KEY": secrets.token_urlsafe(48),
                          "SQLALCHEMY_DATABASE_URI": uri, "BASE_URL": BASE_URL,
                          "ARGON2_TIME_COST": 1, "ARGON2_MEMORY_COST_KIB": 8,
                          "ARGON2_PARALLELISM": 1})
        with app.app_context():
            upgrade()
            logging.getLogger().setLevel(logging.WARNING)
            info = seed()
            first_message = db.session.scalar(select(func.max(OutboxMessage.id))) or 0
            dialect = db.engine.dialect.name
        tech = bearer(info["technician_token"])
        recipient = f"approver-email-{info['tag']}@example.com"

        def create(key):
            body = {"device": info[f"{key}_target"][0], "run_as": "Administrator",
                    "reason": "Ticket INC-100042: printer queue stuck"}
            return lambda client, i: client.post("/api/v1/session-requests", json=body,
                                                 headers=tech)

        def prompts(key):
            headers = bearer(info[key][1])
            return lambda client, i: client.get("/api/v1/agent/prompts", headers=headers)

        results = [run(app, HotPath("create", create("email"), 201), args.runs),
                   run(app, HotPath("create+confirm", create("confirm"), 201), args.runs)]
        tokens = approval_tokens(app, first_message, recipient)
        assert len(tokens) >= args.runs + 3, len(tokens)
        results.append(run(app, HotPath(
            "approval first GET", lambda client, i: client.get(f"/approvals/{tokens[i]}")),
            args.runs))
        results.append(run(app, HotPath(
            "approval later GET", lambda client, i: client.get(f"/approvals/{tokens[0]}")),
            args.runs))
        results.append(run(app, HotPath("prompts (none)", prompts("email_idle")), args.runs))
        results.append(run(app, HotPath("prompts (one open)", prompts("confirm_prompt")),
                           args.runs))

    print(f"\n{dialect}, {args.runs} runs per path (Flask test client, in-process)\n")
    print(f"{'path':<20} {'statements':>10} {'w/o audit':>9} {'writes':>6} "
          f"{'audit events':>12} {'median ms':>9} {'p95 ms':>7} {'cpu ms':>6}")
    for r in results:
        print(f"{r['name']:<20} {r['statements']:>10g} {r['own']:>9g} {r['writes']:>6g} "
              f"{r['events']:>12.2f} {r['median_ms']:>9.2f} {r['p95_ms']:>7.2f} "
              f"{r['cpu_ms']:>6.2f}")
    if args.show:
        for r in results:
            if r["name"].startswith(args.show):
                print(f"\n{r['name']}, last run:\n{r['last'].listing()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
