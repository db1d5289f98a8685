"""Benchmark: how late N pending requests time out under the real scheduler process.

    python tests/benchmarks/bench_expiry.py [--database-uri URI] [--requests 10000]
                                            [--spread 5] [--probes 40]

Not a test (pytest does not collect this folder). It builds an app on a temporary SQLite
file (or URI: use a scratch database; the run adds its own uniquely named department and
leaves it there), migrates it with Alembic, makes one request through the real service
(audit events, approval links, two approval emails) and copies it N times in bulk, each
copy with its two emails (already sent, as they would be by then). Then it starts
`flask --app portal scheduler` (the real job process), makes the N deadlines fall over
`--spread` seconds, and reports:

* lateness, decided_at - expires_at (the time the sweep recorded), p50/p95/p99/max;
* visible lateness: when a reader polling every 20 ms first saw the request timed out
  (so after its batch committed) - expires_at;
* late decisions: an approver tries `--probes` requests 1 ms after their deadline (the
  portal's decide service, its own app context and commit, as a web request would), and
  as many others 50 ms before it as a control; a late one must be refused, every time.

Figures only: nothing here asserts a timing. Exit status 1 when a request did not time
out, one timed out early, or a late decision was accepted.
"""
from __future__ import annotations

import argparse
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

from flask_migrate import upgrade
from sqlalchemy import bindparam, insert, select, update

from portal import create_app
from portal.domain.errors import PortalError
from portal.extensions import db
from portal.models import OutboxMessage, SessionRequest
from portal.services import accounts, decisions, departments, devices
from portal.services import requests as request_service
from portal.services.actors import Actor

PASSWORD = "correct horse battery staple"
BIN = Path(sys.executable).parent
LEAD_SECONDS = 2.0  # from setting the deadlines to the first one
POLL_SECONDS = 0.02


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def seed(n: int) -> dict:
    """A department (email authorization, two recipients), and n pending requests: one
    through the service, the rest bulk copies of it and of its two emails."""
    tag = uuid.uuid4().hex[:6]
    actor, now = Actor(label="bench"), utcnow()
    department = departments.create_department(name=f"Expiry bench {tag}", actor=actor,
                                               now=now)
    approver, admin = f"approver-{tag}@example.com", f"admin-{tag}@example.com"
    values = departments.settings_values(department.settings) | {
        "is_email_authorization_required": True, "email_recipients": f"{approver}\n{admin}"}
    departments.update_settings(department=department, values=values, actor=actor, now=now)
    accounts.create_or_update_user(email=approver, password=PASSWORD, role="approver",
                                   department=department, actor=actor, now=now)
    technician = accounts.create_or_update_user(
        email=f"tech-{tag}@example.com", password=PASSWORD, role="technician",
        department=department, actor=actor, now=now)
    device, _token = devices.create_device(department=department, name=f"WIN-{tag.upper()}",
                                           os="Windows 11 Pro", ip_address="10.0.0.10",
                                           actor=actor, now=now)
    template = request_service.create_session_request(
        technician=technician, device_name=device.name, actor=actor, now=now,
        base_url="http://portal.bench")
    db.session.flush()
    far = now + timedelta(hours=1)
    columns = [c.key for c in SessionRequest.__table__.columns if c.key != "id"]
    row = {c: getattr(template, c) for c in columns} | {
        "expires_at": far, "end_user_deadline": far, "email_deadline": far}
    mails = [{c.key: getattr(m, c.key) for c in OutboxMessage.__table__.columns
              if c.key not in ("id", "request_id")} | {"status": "sent", "sent_at": now}
             for m in db.session.scalars(select(OutboxMessage).where(
                 OutboxMessage.request_id == template.id))]
    ids = [template.id]
    for start in range(1, n, 1000):
        batch = list(db.session.scalars(insert(SessionRequest).returning(SessionRequest.id),
                                        [row] * min(1000, n - start)))
        db.session.execute(insert(OutboxMessage),
                           [m | {"request_id": i} for i in batch for m in mails])
        ids += batch
    db.session.commit()
    return {"ids": ids, "approver": approver, "department_id": department.id}


class Watcher(threading.Thread):
    """A reader polling every 20 ms for requests of the department newly timed out; when
    it first saw each one."""

    def __init__(self, app, department_id: int) -> None:
        super().__init__(daemon=True)
        self.app, self.department_id = app, department_id
        self.seen: dict[int, datetime] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        floor = datetime(2000, 1, 1, tzinfo=timezone.utc)
        with self.app.app_context():
            while not self.stop.is_set():
                rows = db.session.execute(
                    select(SessionRequest.id, SessionRequest.decided_at).where(
                        SessionRequest.department_id == self.department_id,
                        SessionRequest.status == "timed_out",
                        SessionRequest.decided_at >= floor)).all()
                db.session.rollback()
                at = utcnow()
                for row in rows:
                    self.seen.setdefault(row.id, at)
                    floor = max(floor, row.decided_at)
                time.sleep(POLL_SECONDS)


def probe(app, approver: str, request_id: int, at: datetime, results: list) -> None:
    """At `at`, the approver decides `request_id` through the portal's service, in its
    own app context, and commits as a web request would: "accepted" or "refused"."""
    time.sleep(max((at - utcnow()).total_seconds(), 0))
    with app.app_context():
        try:
            user = accounts.find_user(approver)
            decisions.decide_in_portal(user=user, request_id=request_id, decision="allow",
                                       actor=Actor.for_user(user), now=utcnow())
            db.session.commit()
            results.append((request_id, "accepted"))
        except PortalError:
            db.session.commit()  # a refused late decision keeps its "timed out" change
            results.append((request_id, "refused"))
        except Exception as exc:  # e.g. SQLite's busy timeout: neither accepted nor refused
            db.session.rollback()
            results.append((request_id, type(exc).__name__))


def start_scheduler(app, uri: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1",
           "PORTAL_SECRET_KEY": app.config["SECRET_KEY"],
           "PORTAL_TOKEN_HASH_KEY": app.config["TOKEN_HASH_KEY"],
           "PORTAL_AUDIT_KEY": app.config["AUDIT_KEY"],
           "PORTAL_SQLALCHEMY_DATABASE_URI": uri}
    proc = subprocess.Popen([str(BIN / "flask"), "--app", "portal", "scheduler"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        if "Scheduler running" in line:
            threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
            return proc
        if "standing by" in line:
            proc.terminate()
            sys.exit("Another scheduler holds this database's lock: stop it first.")
    sys.exit("The scheduler did not start.")


def run(app, uri: str, n: int, spread: float, n_probes: int) -> dict:
    started = time.perf_counter()
    info = seed(n)
    seeding = time.perf_counter() - started
    ids = info["ids"]
    step = max(n // max(n_probes * 2, 1), 1)
    late_probes = set(ids[step // 2::step * 2][:n_probes])
    control = set(ids[step + step // 2::step * 2][:n_probes]) - late_probes
    scheduler = start_scheduler(app, uri)
    try:
        watcher = Watcher(app, info["department_id"])
        watcher.start()
        first = utcnow() + timedelta(seconds=LEAD_SECONDS)
        due = {i: first + timedelta(seconds=spread * k / max(n - 1, 1))
               for k, i in enumerate(ids)}
        db.session.connection().execute(
            update(SessionRequest.__table__).where(SessionRequest.__table__.c.id
                                                   == bindparam("rid"))
            .values(expires_at=bindparam("due"), end_user_deadline=bindparam("due"),
                    email_deadline=bindparam("due")),
            [{"rid": i, "due": d} for i, d in due.items()])
        db.session.commit()
        results: list = []
        probes = [threading.Thread(target=probe, args=(
            app, info["approver"], i, due[i] + timedelta(milliseconds=1), results))
            for i in late_probes]
        probes += [threading.Thread(target=probe, args=(
            app, info["approver"], i, due[i] - timedelta(milliseconds=50), results))
            for i in control]
        for thread in probes:
            thread.start()
        expected = set(ids) - control
        give_up = time.monotonic() + LEAD_SECONDS + spread + 60
        while time.monotonic() < give_up and not expected <= watcher.seen.keys():
            time.sleep(0.2)
        for thread in probes:
            thread.join(timeout=30)
        watcher.stop.set()
        watcher.join()
    finally:
        scheduler.terminate()
        scheduler.wait(timeout=30)
    rows = {r.id: r for r in db.session.execute(
        select(SessionRequest.id, SessionRequest.status, SessionRequest.expires_at,
               SessionRequest.decided_at).where(SessionRequest.department_id
                                                == info["department_id"]))}
    db.session.commit()
    timed_out = [i for i in expected if rows[i].status == "timed_out"]
    recorded = [(rows[i].decided_at - rows[i].expires_at).total_seconds() * 1000
                for i in timed_out]
    visible = [(watcher.seen[i] - rows[i].expires_at).total_seconds() * 1000
               for i in timed_out if i in watcher.seen]
    outcome = dict(results)
    return {
        "seeding_s": seeding, "n": n, "expected": len(expected), "timed_out": len(timed_out),
        "recorded": recorded, "visible": visible, "early": sum(v < 0 for v in recorded),
        "late_accepted": sum(outcome.get(i) == "accepted" for i in late_probes),
        "late_refused": sum(outcome.get(i) == "refused" for i in late_probes),
        "control_accepted": sum(outcome.get(i) == "accepted" for i in control),
        "control": len(control), "probes": len(late_probes),
        "probe_errors": Counter(v for v in outcome.values() if v not in ("accepted", "refused")),
    }


def line(name: str, values: list[float]) -> str:
    if not values:
        return f"  {name:<34} (none)"
    return (f"  {name:<34}p50 {percentile(values, 0.5):6.1f}  p95 {percentile(values, 0.95):6.1f}"
            f"  p99 {percentile(values, 0.99):6.1f}  max {max(values):7.1f}  ms")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-uri", help="default: a temporary SQLite file")
    parser.add_argument("--requests", type=int, default=10_000, help="pending requests")
    parser.add_argument("--spread", type=float, default=5.0,
                        help="seconds over which their deadlines fall")
    parser.add_argument("--probes", type=int, default=40,
                        help="decisions tried just after a deadline (and as many before)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="portal-bench-") as tmp:
        uri = args.database_uri or "sqlite:///" + str(Path(tmp) / "bench.sqlite3")
        app = create_app({"SECRET_KEY": secrets.token_urlsafe(48),
                          "TOKEN_HASH_KEY": secrets.token_urlsafe(48),
                          "AUDIT_KEY": secrets.token_urlsafe(48),
                          "SQLALCHEMY_DATABASE_URI": uri, "BASE_URL": "http://portal.bench",
                          "ARGON2_TIME_COST": 1, "ARGON2_MEMORY_COST_KIB": 8,
                          "ARGON2_PARALLELISM": 1})
        with app.app_context():
            upgrade()
            dialect = db.engine.dialect.name
            result = run(app, uri, args.requests, args.spread, args.probes)
            db.engine.dispose()

    r = result
    print(f"\nExpiry at scale — {dialect}: {r['n']} pending requests (seeded in "
          f"{r['seeding_s']:.1f} s), deadlines over {args.spread:g} s, real scheduler process")
    print(f"  timed out: {r['timed_out']}/{r['expected']}"
          + (f", {r['early']} EARLY" if r["early"] else ""))
    print(line("decided_at - expires_at", r["recorded"]))
    print(line(f"seen by a {POLL_SECONDS * 1000:.0f} ms poller - expires_at", r["visible"]))
    print(f"  late decisions accepted: {r['late_accepted']} of {r['probes']} tried 1 ms after"
          f" the deadline ({r['late_refused']} refused); control, 50 ms before: "
          f"{r['control_accepted']}/{r['control']} accepted"
          + (f"; failed otherwise: {dict(r['probe_errors'])}" if r["probe_errors"] else ""))
    ok = r["timed_out"] == r["expected"] and not r["early"] and not r["late_accepted"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
