"""Session logs at scale: the Sessions page and the audit log over a million audit events
and 100,000 sessions, and an export of everything.

    python tests/benchmarks/bench_logs.py [--events N] [--sessions N] [--postgres URI]

Seeds a temporary SQLite file (and, given --postgres, that database, whose schema is
dropped and rebuilt through the migrations) with N sealed audit events (chained under the
app's audit key as the sealing job would, continuing the chain the services began) and N
sessions (half remote, each with its approved request, half client), by Core executemany
in batches. Two departments: "Bench Logs" holds 80 % of everything, "Bench Other" the rest.

Then, in-process through the Flask test client signed in as an auditor, times the first, a
middle and the last page of the Sessions page and the audit log, without a filter and with
each filter (From/To a month, Device, Person, State / Action), the median of 5 runs each
(goal: <= 50 ms); and in a child process an export of the whole department's audit log,
JSON Lines and CSV (goal: >= 100,000 rows/s, peak RSS <= 150 MB, the child's
getrusage maxrss). Prints a table per database.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from flask_migrate import upgrade
from sqlalchemy import func, insert, select, text

from portal import create_app
from portal.domain import audit as chain
from portal.domain.log_filters import session_people, time_key
from portal.extensions import db
from portal.models import (AuditEvent, AuditHead, ClientSession, RemoteSession,
                           RemoteSessionPerson, SessionRequest)
from portal.services import accounts, audit, departments, devices
from portal.services.actors import CLI

PASSWORD = "bench password, long enough"
AUDITOR = "auditor@bench.example"
END = datetime(2026, 12, 1, tzinfo=timezone.utc)
SPAN = timedelta(days=365)
BATCH = 10_000
DEVICES = 200
TECHNICIANS = 20
ACTIONS = ("request.created", "request.decided", "session.started", "session.ended",
           "email.queued", "email.sent", "link.opened", "device.state_changed",
           "otp.verified", "settings.changed")
MONTH = ("2026-06-01", "2026-06-30")


def config(uri: str, audit_key: str) -> dict:
    return {"SECRET_KEY": secrets.token_urlsafe(48), "TOKEN_HASH_KEY": secrets.token_urlsafe(48),
            "AUDIT_KEY": audit_key, "SQLALCHEMY_DATABASE_URI": uri,
            "WTF_CSRF_ENABLED": False, "ARGON2_TIME_COST": 1, "ARGON2_MEMORY_COST_KIB": 8,
            "ARGON2_PARALLELISM": 1}


# --- seeding -------------------------------------------------------------------------


def _people_and_devices() -> dict:
    now = END - SPAN
    logs = departments.create_department(name="Bench Logs", actor=CLI, now=now)
    other = departments.create_department(name="Bench Other", actor=CLI, now=now)
    accounts.create_or_update_user(email=AUDITOR, password=PASSWORD, role="auditor",
                                   department=logs, actor=CLI, now=now)
    techs = []
    for i in range(TECHNICIANS):
        for department in (logs, other):
            user = accounts.create_or_update_user(
                email=f"tech-{i:02d}@bench.example", password=PASSWORD, role="technician",
                department=department, actor=CLI, now=now)
        techs.append(user)
    names = {}
    for department, prefix in ((logs, "LOGS"), (other, "OTHER")):
        for i in range(DEVICES):
            device, _ = devices.create_device(department=department, name=f"{prefix}-{i:04d}",
                                              actor=CLI, now=now)
            names[device.id] = (device.name, department.id)
    db.session.commit()
    while audit.seal_pending(now):
        db.session.commit()
    db.session.commit()
    return {"logs": logs.id, "other": other.id, "techs": [(t.id, t.email) for t in techs],
            "devices": names}


def _insert(table, rows: list[dict]) -> None:
    db.session.execute(insert(table.__table__), rows)


def seed(events: int, sessions: int) -> dict:
    world = _people_and_devices()
    rng = random.Random(9)
    key = audit.audit_key()
    device_ids = list(world["devices"])
    logs_devices = [d for d in device_ids if world["devices"][d][1] == world["logs"]]
    other_devices = [d for d in device_ids if world["devices"][d][1] == world["other"]]

    def department_device():
        if rng.random() < 0.8:
            return world["logs"], rng.choice(logs_devices)
        return world["other"], rng.choice(other_devices)

    # Sessions: half remote (each with its approved request), half client.
    started = time.perf_counter()
    remote = sessions // 2
    step = SPAN / max(1, remote)
    request_rows, remote_rows, people_rows = [], [], []
    for i in range(1, remote + 1):
        department_id, device_id = department_device()
        tech_id, tech_email = rng.choice(world["techs"])
        at = END - SPAN + step * i
        ended = at + timedelta(minutes=rng.randint(1, 120)) if i < remote - 50 else None
        run_as = rng.choice((None, "Administrator"))
        decided_by = rng.choice(("policy", "end_user", "approver@bench.example"))
        request_rows.append({
            "id": i, "device_id": device_id, "department_id": department_id,
            "technician_id": tech_id, "run_as": run_as,
            "status": "approved", "created_at": at - timedelta(seconds=40),
            "expires_at": at, "decided_at": at - timedelta(seconds=20),
            "decided_by": decided_by, "end_user_check": "none", "email_check": "none"})
        remote_rows.append({"id": i, "request_id": i, "device_id": device_id,
                            "started_at": at, "ended_at": ended})
        people_rows += [{"remote_session_id": i, "person": person,
                         "department_id": department_id, "started_at": at}
                        for person in session_people(tech_email, run_as, decided_by)]
        if len(request_rows) == BATCH or i == remote:
            _insert(SessionRequest, request_rows)
            _insert(RemoteSession, remote_rows)
            _insert(RemoteSessionPerson, people_rows)
            request_rows, remote_rows, people_rows = [], [], []
    client_rows = []
    client = sessions - remote
    step = SPAN / max(1, client)
    for i in range(1, client + 1):
        department_id, device_id = department_device()
        at = END - SPAN + step * i
        client_rows.append({"id": i, "device_id": device_id, "department_id": department_id,
                            "username": f"user{i % 500}", "email": f"user{i % 500}@bench.example",
                            "started_at": at, "ended_at": at + timedelta(minutes=30)})
        if len(client_rows) == BATCH or i == client:
            _insert(ClientSession, client_rows)
            client_rows = []
    db.session.commit()
    sessions_s = time.perf_counter() - started

    # Audit events, sealed: the chain continues from the head the services' events made.
    started = time.perf_counter()
    head = audit.read_head()
    index, running = head.chain_index, head.hash
    first_seq = (db.session.scalar(select(func.max(AuditEvent.seq))) or 0) + 1
    step = SPAN / max(1, events)
    rows = []
    for n in range(events):
        seq = first_seq + n
        department_id, device_id = department_device()
        name = world["devices"][device_id][0]
        action = ACTIONS[n % len(ACTIONS)]
        actor = (rng.choice(world["techs"])[1] if n % 3 else
                 ("system" if n % 2 else f"device:{name}"))
        fields = chain.EventFields(
            seq=seq, occurred_at=END - SPAN + step * n, actor=actor, action=action,
            target_type="session_request", target_id=str(n // 7 + 1),
            department_id=department_id, client_ip="192.0.2.10", outcome="success",
            details={"request_id": n // 7 + 1, "device": name})
        index += 1
        leaf = chain.leaf_hash(key, fields)
        running = chain.chain_hash(key, running, leaf)
        rows.append({"seq": seq, "occurred_at": fields.occurred_at, "actor": actor,
                     "actor_user_id": None, "action": action, "target_type": "session_request",
                     "target_id": fields.target_id, "department_id": department_id,
                     "client_ip": fields.client_ip, "outcome": "success",
                     "details": fields.details, "device": name.lower(),
                     "chain_index": index, "leaf_hash": leaf,
                     "chain_hash": running})
        if len(rows) == BATCH:
            _insert(AuditEvent, rows)
            rows = []
    if rows:
        _insert(AuditEvent, rows)
    db.session.execute(AuditHead.__table__.update().where(AuditHead.id == 1).values(
        chain_index=index, seq=first_seq + events - 1, chain_hash=running, sealed_at=END))
    db.session.commit()
    if db.engine.dialect.name == "postgresql":
        with db.engine.begin() as conn:
            for table, column in (("audit_events", "seq"), ("session_requests", "id"),
                                  ("remote_sessions", "id"), ("client_sessions", "id")):
                conn.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', "
                                  f"'{column}'), (SELECT MAX({column}) FROM {table}))"))
            conn.execute(text("ANALYZE"))
    else:
        with db.engine.begin() as conn:
            conn.execute(text("ANALYZE"))
    return {**world, "sessions_s": sessions_s, "events_s": time.perf_counter() - started}


# --- timing pages --------------------------------------------------------------------


def _median_ms(client, url: str, runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        response = client.get(url)
        times.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, (url, response.status_code)
    return statistics.median(times)


def _audit_keys(department_id: int, where: list, limit: int) -> dict[str, str | None]:
    """The `before` of the first, a middle and the last page of a filtered audit log."""
    query = select(AuditEvent.seq).where(AuditEvent.department_id == department_id, *where)
    total = db.session.scalar(select(func.count()).select_from(query.subquery()))
    middle = db.session.scalar(query.order_by(AuditEvent.seq.desc()).offset(total // 2)
                               .limit(1))
    last = db.session.scalar(query.order_by(AuditEvent.seq).offset(max(0, limit - 1))
                             .limit(1))
    return {"first": None, "middle": str(middle + 1) if middle else None,
            "last": str(last + 1) if last else None, "rows": total}


def _session_keys(model, department_column, department_id, where, limit):
    query = (select(model.started_at, model.id)
             .where(department_column == department_id, *where))
    total = db.session.scalar(select(func.count()).select_from(query.subquery()))
    order_desc = (model.started_at.desc(), model.id.desc())
    middle = db.session.execute(query.order_by(*order_desc).offset(total // 2).limit(1)).first()
    last = db.session.execute(query.order_by(model.started_at, model.id)
                              .offset(max(0, limit)).limit(1)).first()
    return {"first": None, "middle": time_key(*middle) if middle else None,
            "last": time_key(*last) if last else None, "rows": total}


def time_pages(app, world) -> list[tuple[str, str, float, float, float, int]]:
    from urllib.parse import urlencode

    limit = app.config["PAGE_SIZE"]
    client = app.test_client()
    response = client.post("/login", data={"email": AUDITOR, "password": PASSWORD})
    assert response.status_code == 303, response.status_code
    dept = world["logs"]
    device_name = world["devices"][next(d for d in world["devices"]
                                        if world["devices"][d][1] == dept)][0]
    tech = world["techs"][3][1]
    start = datetime.fromisoformat(MONTH[0]).replace(tzinfo=timezone.utc)
    end = datetime.fromisoformat(MONTH[1]).replace(tzinfo=timezone.utc) + timedelta(days=1)
    results = []

    audit_filters = {
        "none": ({}, []),
        "From/To": ({"from": MONTH[0], "to": MONTH[1]},
                    [AuditEvent.occurred_at >= start, AuditEvent.occurred_at < end]),
        "Action": ({"action": "session.started"}, [AuditEvent.action == "session.started"]),
        "Person": ({"person": tech}, [AuditEvent.actor == tech]),
        "Device": ({"device": device_name},
                   [AuditEvent.device == device_name.lower()]),
    }
    for name, (args, where) in audit_filters.items():
        keys = _audit_keys(dept, where, limit * 2)
        row = []
        for position in ("first", "middle", "last"):
            query = dict(args)
            if keys[position]:
                query["before"] = keys[position]
            row.append(_median_ms(client, f"/departments/{dept}/audit?{urlencode(query)}"))
        results.append(("Audit log", name, *row, keys["rows"]))

    device_id = next(d for d in world["devices"] if world["devices"][d][1] == dept)
    session_filters = {
        "none": ({}, [], []),
        "From/To": ({"from": MONTH[0], "to": MONTH[1]},
                    [RemoteSession.started_at >= start, RemoteSession.started_at < end],
                    [ClientSession.started_at >= start, ClientSession.started_at < end]),
        "Device": ({"device": device_name}, [RemoteSession.device_id == device_id],
                   [ClientSession.device_id == device_id]),
        "Person": ({"person": tech}, [SessionRequest.technician_id == world["techs"][3][0]],
                   [ClientSession.username == tech]),
        "State": ({"state": "running"}, [RemoteSession.ended_at.is_(None)],
                  [ClientSession.ended_at.is_(None)]),
    }
    for name, (args, remote_where, client_where) in session_filters.items():
        remote_keys = _joined_keys(
            select(RemoteSession.started_at, RemoteSession.id)
            .join(SessionRequest, SessionRequest.id == RemoteSession.request_id),
            dept, remote_where, limit)
        client_keys = _session_keys(ClientSession, ClientSession.department_id, dept,
                                    client_where, limit)
        row = []
        for position in ("first", "middle", "last"):
            query = dict(args)
            if remote_keys[position]:
                query["remote_before"] = remote_keys[position]
            if client_keys[position]:
                query["client_before"] = client_keys[position]
            row.append(_median_ms(client, f"/departments/{dept}/sessions?{urlencode(query)}"))
        results.append(("Sessions", name, *row, remote_keys["rows"] + client_keys["rows"]))
    return results


def _joined_keys(query, department_id, where, limit):
    query = query.where(SessionRequest.department_id == department_id, *where)
    total = db.session.scalar(select(func.count()).select_from(query.subquery()))
    middle = db.session.execute(query.order_by(RemoteSession.started_at.desc(),
                                               RemoteSession.id.desc())
                                .offset(total // 2).limit(1)).first()
    last = db.session.execute(query.order_by(RemoteSession.started_at, RemoteSession.id)
                              .offset(max(0, limit)).limit(1)).first()
    return {"first": None, "middle": time_key(*middle) if middle else None,
            "last": time_key(*last) if last else None, "rows": total}


# --- the export, in a child process --------------------------------------------------


def child_export(uri: str, audit_key: str, department_id: int, export_format: str) -> None:
    app = create_app(config(uri, audit_key))
    client = app.test_client()
    assert client.post("/login", data={"email": AUDITOR, "password": PASSWORD}
                       ).status_code == 303
    started, cpu = time.perf_counter(), time.process_time()
    response = client.get(f"/departments/{department_id}/audit/export.{export_format}",
                          buffered=False)
    assert response.status_code == 200
    lines = size = 0
    for chunk in response.response:
        data = chunk if isinstance(chunk, bytes) else chunk.encode()
        lines += data.count(b"\n")
        size += len(data)
    response.close()
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    rows = lines - 1  # the header, or the chain head
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"rows": rows, "seconds": seconds, "cpu": cpu, "bytes": size,
                      "peak_mib": peak_kib / 1024}))


def time_export(uri: str, audit_key: str, department_id: int, export_format: str) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run(
        [sys.executable, __file__, "--child-export", uri, audit_key, str(department_id),
         export_format], capture_output=True, text=True, env=env, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


# --- one database --------------------------------------------------------------------


def run(uri: str, events: int, sessions: int) -> None:
    audit_key = secrets.token_urlsafe(48)
    app = create_app(config(uri, audit_key))
    with app.app_context():
        if db.engine.dialect.name == "postgresql":
            with db.engine.begin() as conn:
                conn.execute(text("DROP SCHEMA public CASCADE"))
                conn.execute(text("CREATE SCHEMA public"))
        upgrade()
        dialect = db.engine.dialect.name
        world = seed(events, sessions)
        print(f"\nSession logs at scale — {dialect}: {events:,} audit events seeded and "
              f"sealed in {world['events_s']:.1f} s, {sessions:,} sessions in "
              f"{world['sessions_s']:.1f} s; department \"Bench Logs\" holds ~80 %")
        pages = time_pages(app, world)
        db.session.remove()
        db.engine.dispose()
    print(f"  {'list':<10} {'filter':<8} {'first ms':>9} {'middle ms':>10} {'last ms':>8}"
          f" {'rows':>9}   (goal <= 50 ms, median of 5, in-process test client)")
    for name, flt, first, middle, last, rows in pages:
        mark = "" if max(first, middle, last) <= 50 else "  over"
        print(f"  {name:<10} {flt:<8} {first:>9.1f} {middle:>10.1f} {last:>8.1f} {rows:>9,}"
              f"{mark}")
    for export_format in ("jsonl", "csv"):
        r = time_export(uri, audit_key, world["logs"], export_format)
        rate = r["rows"] / r["seconds"]
        print(f"  export {export_format:<5} everything: {r['rows']:,} rows in "
              f"{r['seconds']:.1f} s = {rate:,.0f} rows/s ({r['rows'] / r['cpu']:,.0f} per "
              f"CPU second of the process), {r['bytes'] / 2**20:.0f} MiB, peak RSS "
              f"{r['peak_mib']:.0f} MiB (goal >= 100,000 rows/s, <= 150 MiB)")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child-export"]:
        uri, audit_key, department_id, export_format = argv[1:5]
        child_export(uri, audit_key, int(department_id), export_format)
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--sessions", type=int, default=100_000)
    parser.add_argument("--postgres", metavar="URI",
                        help="also this PostgreSQL database (its schema is rebuilt)")
    parser.add_argument("--no-sqlite", action="store_true")
    args = parser.parse_args(argv)
    if not args.no_sqlite:
        with tempfile.TemporaryDirectory(prefix="portal-bench-logs-") as tmp:
            run("sqlite:///" + str(Path(tmp) / "bench.sqlite3"), args.events, args.sessions)
    if args.postgres:
        run(args.postgres, args.events, args.sessions)
    return 0


if __name__ == "__main__":
    sys.exit(main())
