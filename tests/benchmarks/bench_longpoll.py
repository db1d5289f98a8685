"""Benchmark: long-polls that cost nothing while waiting, and mail that keeps up.

    python tests/benchmarks/bench_longpoll.py [--database-uri URI] [--waiters 500]
                                              [--mail-seconds 10]

Not a test (pytest does not collect this folder). It builds an app on a temporary SQLite
file (or URI: a scratch database; the run adds its own uniquely named department, users
and devices and leaves them there), migrates it, and serves the portal as in production:
gunicorn, 2 gthread workers (enough threads for every waiter).

1. Long-polls. N requests are made pending; N clients (asyncio, raw sockets: one HTTP/1.1
   GET each, so the load tool is not the bottleneck) hold `GET …/<id>?wait=30`. While they
   wait, the database statements the workers issue are counted for a few seconds — by a
   `before_cursor_execute` counter installed in each worker through a gunicorn config
   hook (gunicorn_conf below; it writes each worker's count to a file) and, on
   PostgreSQL, also by pg_stat_database's xact_commit + xact_rollback. Then this process
   decides every request (the service, its own connection: another process, as a
   scheduler or another worker would be) and each decision's commit → response latency
   is taken (p50/p95/p99).
2. Mail. An aiosmtpd server (tests/smtp_server.py) and `flask --app portal scheduler`
   run; wrk creates requests (2 approval emails each) through the API as fast as it can
   for S seconds; delay = arrival at the SMTP server − the request's created_at, matched
   by the request's reason, quoted in the email.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from datetime import datetime, timezone
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))

from flask_migrate import upgrade  # noqa: E402
from smtp_server import SmtpServer  # noqa: E402
from sqlalchemy import select, text  # noqa: E402

from portal import create_app  # noqa: E402
from portal.extensions import db  # noqa: E402
from portal.models import SessionRequest  # noqa: E402
from portal.services import accounts, decisions, departments, devices  # noqa: E402
from portal.services import requests as request_service  # noqa: E402
from portal.services.actors import Actor  # noqa: E402

BIN = Path(sys.executable).parent
PASSWORD = "correct horse battery staple"

GUNICORN_CONF = '''
import os, threading, time
from sqlalchemy import event
from sqlalchemy.engine import Engine

def post_worker_init(worker):
    counts = {"queries": 0, "pragmas": 0}
    def count(conn, cursor, statement, *args):
        counts["pragmas" if statement.startswith("PRAGMA") else "queries"] += 1
    event.listen(Engine, "before_cursor_execute", count)
    path = os.path.join(os.environ["BENCH_COUNT_DIR"], str(os.getpid()))
    def dump():
        while True:
            with open(path + ".tmp", "w") as f:
                f.write(f"{counts['queries']} {counts['pragmas']}")
            os.replace(path + ".tmp", path)
            time.sleep(0.1)
    threading.Thread(target=dump, daemon=True).start()
'''

WRK_CREATE = '''
local counter = 0
local tag = nil
function setup(thread) thread:set("tag", tostring(math.random(1, 1e9))) end
function request()
  counter = counter + 1
  local body = '{"device": "%s", "reason": "bench ' .. tag .. '-' .. counter .. '"}'
  return wrk.format("POST", "/api/v1/session-requests",
    {["Content-Type"] = "application/json", ["Authorization"] = "Bearer %s"}, body)
end
function init(args) tag = wrk.thread:get("tag") end
'''


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def seed(app, tag: str) -> dict:
    actor = Actor(label="bench")
    now = utcnow()
    department = departments.create_department(name=f"Longpoll {tag}", actor=actor, now=now)
    approver = f"approver-{tag}@example.com"
    values = departments.settings_values(department.settings) | {
        "is_email_authorization_required": True, "email_authorization_timeout_seconds": 3600,
        "email_recipients": f"{approver}\nsecond-{tag}@example.com"}
    departments.update_settings(department=department, values=values, actor=actor, now=now)
    accounts.create_or_update_user(email=approver, password=PASSWORD, role="approver",
                                   department=department, actor=actor, now=now)
    tech = accounts.create_or_update_user(email=f"tech-{tag}@example.com", password=PASSWORD,
                                          role="technician", department=department,
                                          actor=actor, now=now)
    device, _ = devices.create_device(department=department, name=f"WIN-LP-{tag.upper()}",
                                      os="Windows 11", actor=actor, now=now)
    token = accounts.create_user_token(user=tech, actor=actor, now=now)
    db.session.commit()
    return {"tech_id": tech.id, "approver": approver, "device": device.name, "token": token}


def make_pending(info: dict, n: int) -> list[int]:
    tech = accounts.get_user(info["tech_id"])
    ids = []
    for i in range(n):
        ids.append(request_service.create_session_request(
            technician=tech, device_name=info["device"], actor=Actor(label="bench"),
            now=utcnow(), base_url="http://portal.bench").id)
        if i % 200 == 199:
            db.session.commit()
    db.session.commit()
    return ids


class Counts:
    """The statements the gunicorn workers issued so far (their files), and on PostgreSQL
    the database's transactions."""

    def __init__(self, folder: Path, engine) -> None:
        self.folder, self.engine = folder, engine

    def workers(self) -> tuple[int, int]:
        queries = pragmas = 0
        for path in self.folder.iterdir():
            if path.suffix == ".tmp":
                continue
            q, p = path.read_text().split()
            queries, pragmas = queries + int(q), pragmas + int(p)
        return queries, pragmas

    def transactions(self) -> int | None:
        if self.engine.dialect.name != "postgresql":
            return None
        with self.engine.connect() as conn:
            conn.execute(text("SELECT pg_stat_clear_snapshot()"))
            return conn.execute(text(
                "SELECT xact_commit + xact_rollback FROM pg_stat_database "
                "WHERE datname = current_database()")).scalar()


async def hold(port: int, path: str, token: str, started: asyncio.Event) -> tuple[float, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write((f"GET {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\n"
                  "Connection: close\r\n\r\n").encode())
    await writer.drain()
    started.set()
    data = await reader.read(1)  # the answer's first byte
    answered = time.monotonic()
    data += await reader.read()
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    if b" 200 " not in head.split(b"\r\n")[0]:
        raise RuntimeError(head[:200])
    return answered, json.loads(body)["status"]


async def settle(counts: Counts, quiet: float = 1.0, longest: float = 60.0) -> None:
    """Wait until a whole `quiet` second passes with (almost) no new statements."""
    give_up = time.monotonic() + longest
    await asyncio.sleep(3)
    before = counts.workers()[0]
    while time.monotonic() < give_up:
        await asyncio.sleep(quiet)
        now = counts.workers()[0]
        if now - before <= 2:
            return
        before = now


def longpolls(app, info, port: int, counts: Counts, n: int, window: float) -> dict:
    with app.app_context():
        ids = make_pending(info, n)
    results: dict[int, tuple[float, str]] = {}
    decided: dict[int, float] = {}

    async def run():
        started = [asyncio.Event() for _ in ids]
        tasks = {rid: asyncio.create_task(hold(port, f"/api/v1/session-requests/{rid}?wait=30",
                                                info["token"], ev))
                 for rid, ev in zip(ids, started)}
        await asyncio.gather(*(ev.wait() for ev in started))
        # Every GET has made its first reads and sleeps once the workers' statement count
        # stops growing (500 requests starting at once queue for the pool's connections).
        await settle(counts)
        q0, p0, x0, t0 = *counts.workers(), counts.transactions(), time.monotonic()
        await asyncio.sleep(window)
        q1, p1, x1, t1 = *counts.workers(), counts.transactions(), time.monotonic()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, decide_all, app, info, ids, decided)
        for rid, task in tasks.items():
            results[rid] = await task
        return (q1 - q0) / (t1 - t0), (p1 - p0) / (t1 - t0), \
            None if x0 is None else (x1 - x0) / (t1 - t0)

    queries, pragmas, xacts = asyncio.run(run())
    latencies = [(results[rid][0] - decided[rid]) * 1000 for rid in ids]
    wrong = sum(1 for rid in ids if results[rid][1] != "denied")
    return {"n": n, "queries_s": queries, "pragmas_s": pragmas, "xacts_s": xacts,
            "p50": percentile(latencies, 0.5), "p95": percentile(latencies, 0.95),
            "p99": percentile(latencies, 0.99), "max": max(latencies), "wrong": wrong}


def decide_all(app, info, ids, decided) -> None:
    with app.app_context():
        approver = accounts.find_user(info["approver"])
        for rid in ids:
            decisions.decide_in_portal(user=approver, request_id=rid, decision="deny",
                                       actor=Actor.for_user(approver), now=utcnow())
            db.session.commit()
            decided[rid] = time.monotonic()
            time.sleep(0.002)  # a busy approver crowd: ~400 decisions/s


def mail(app, info, port: int, env: dict, seconds: float, smtp: SmtpServer,
         processes: list) -> dict:
    arrivals: dict[str, datetime] = {}
    handler = smtp.handler

    async def timed(server, session, envelope):
        # Only the arrival is recorded: parsing every message (as the tests' handler does)
        # cost this process more CPU than the scheduler's whole delivery, on the same two
        # cores — a harness cost, not the portal's.
        stamp = utcnow()
        found = re.search(rb"bench [0-9]+-[0-9]+", envelope.content)
        if found:
            key = found.group().decode() + "|" + envelope.rcpt_tos[0]
            arrivals[key] = stamp
        return "250 Message accepted for delivery"

    handler.handle_DATA = timed
    processes.append(subprocess.Popen([str(BIN / "flask"), "--app", "portal", "scheduler"],
                                      env=env, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL))
    # The scheduler is up, and through the backlog of the long-poll phase (its audit
    # events to seal, its mail to cancel), once a warm-up request's emails arrive: the
    # figures are for a scheduler that was running, not one starting.
    warm_up = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/v1/session-requests", method="POST",
        data=json.dumps({"device": info["device"], "reason": "bench 0-0"}).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {info['token']}"})
    urllib.request.urlopen(warm_up, timeout=30).close()
    give_up = time.monotonic() + 120
    while time.monotonic() < give_up and sum(k.startswith("bench 0-0|") for k in arrivals) < 2:
        time.sleep(0.1)
    arrivals.clear()
    script = Path(env["BENCH_COUNT_DIR"]).parent / "create.lua"
    script.write_text(WRK_CREATE % (info["device"], info["token"]))
    out = subprocess.run(["wrk", "-t2", "-c4", f"-d{seconds:g}s", "-s", str(script),
                          f"http://127.0.0.1:{port}"], capture_output=True, text=True,
                         check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1))
    with app.app_context():
        rows = db.session.execute(select(SessionRequest.reason, SessionRequest.created_at)
                                  .where(SessionRequest.reason.like("bench %"),
                                         SessionRequest.reason != "bench 0-0")).all()
        recipients = departments.find_department(f"Longpoll {info['tag']}").settings.recipients
    expected = {f"{r.reason}|{rcpt}": r.created_at for r in rows for rcpt in recipients}
    give_up = time.monotonic() + 120
    while time.monotonic() < give_up and len(set(expected) & set(arrivals)) < len(expected):
        time.sleep(0.2)
    delays = [(arrivals[k] - created).total_seconds() for k, created in expected.items()
              if k in arrivals]
    within = sum(1 for d in delays if d <= 5)
    return {"rate": rate, "emails": len(expected), "delivered": len(delays),
            "within_5s": within / max(len(expected), 1),
            "p50": percentile(delays, 0.5) if delays else None,
            "p95": percentile(delays, 0.95) if delays else None,
            "max": max(delays) if delays else None}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-uri", help="default: a temporary SQLite file")
    parser.add_argument("--waiters", type=int, default=500)
    parser.add_argument("--window", type=float, default=5.0,
                        help="seconds over which the waiting clients' queries are counted")
    parser.add_argument("--mail-seconds", type=float, default=10.0,
                        help="seconds of creates for the mail measurement (0: skip)")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="portal-longpoll-") as tmp:
        uri = args.database_uri or "sqlite:///" + str(Path(tmp) / "bench.sqlite3")
        keys = {"SECRET_KEY": secrets.token_urlsafe(48),
                "TOKEN_HASH_KEY": secrets.token_urlsafe(48),
                "AUDIT_KEY": secrets.token_urlsafe(48)}
        app = create_app({**keys, "SQLALCHEMY_DATABASE_URI": uri,
                          "BASE_URL": "http://portal.bench"})
        tag = uuid.uuid4().hex[:6]
        with app.app_context():
            upgrade()
            info = seed(app, tag) | {"tag": tag}
            engine = db.engine
        count_dir = Path(tmp) / "counts"
        count_dir.mkdir()
        conf = Path(tmp) / "gunicorn_conf.py"
        conf.write_text(GUNICORN_CONF)
        smtp = SmtpServer()
        smtp.start()
        env = {**os.environ, "PORTAL_SECRET_KEY": keys["SECRET_KEY"],
               "PORTAL_TOKEN_HASH_KEY": keys["TOKEN_HASH_KEY"],
               "PORTAL_AUDIT_KEY": keys["AUDIT_KEY"],
               "PORTAL_SQLALCHEMY_DATABASE_URI": uri, "PORTAL_BASE_URL": "http://portal.bench",
               "PORTAL_MAIL_SERVER": "127.0.0.1", "PORTAL_MAIL_PORT": str(smtp.port),
               "PORTAL_MAIL_DEFAULT_SENDER": "gate@portal.bench",
               "BENCH_COUNT_DIR": str(count_dir)}
        port = free_port()
        threads = args.waiters // args.workers + 20
        processes = [subprocess.Popen(
            [str(BIN / "gunicorn"), "--workers", str(args.workers), "--worker-class",
             "gthread", "--threads", str(threads), "--backlog", "2048", "-c", str(conf),
             "--bind", f"127.0.0.1:{port}", "portal.wsgi:app"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
        try:
            for _ in range(150):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.2)
            time.sleep(1)
            counts = Counts(count_dir, engine)
            poll = longpolls(app, info, port, counts, args.waiters, args.window)
            sent = mail(app, info, port, env, args.mail_seconds, smtp, processes) \
                if args.mail_seconds else None
        finally:
            for proc in processes:
                proc.terminate()
            for proc in processes:
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
            smtp.stop()
        dialect = engine.dialect.name
        engine.dispose()

    print(f"\nLong-polls — {dialect}, gunicorn {args.workers} gthread workers, "
          f"{poll['n']} clients holding ?wait=30")
    print(f"  while waiting: {poll['queries_s']:.1f} queries/s (workers' counter)"
          + (f", {poll['pragmas_s']:.1f} PRAGMA data_version/s" if dialect == "sqlite" else "")
          + (f", {poll['xacts_s']:.1f} transactions/s (pg_stat_database)"
             if poll["xacts_s"] is not None else ""))
    print(f"  decision commit → response: p50 {poll['p50']:.1f} ms, p95 {poll['p95']:.1f} ms, "
          f"p99 {poll['p99']:.1f} ms, max {poll['max']:.1f} ms"
          + (f"; {poll['wrong']} answered something else" if poll["wrong"] else ""))
    ok = poll["queries_s"] + poll["pragmas_s"] <= 50 and poll["p95"] <= 100 \
        and not poll["wrong"]
    if sent:
        print(f"\nMail — creates through the API with wrk (2 threads, 4 connections) for "
              f"{args.mail_seconds:g} s: {sent['rate']:.0f} creates/s, {sent['emails']} emails")
        if sent["delivered"]:
            print(f"  delivered {sent['delivered']}/{sent['emails']}; within 5 s of creation: "
                  f"{sent['within_5s']:.1%}; delay p50 {sent['p50']:.2f} s, "
                  f"p95 {sent['p95']:.2f} s, max {sent['max']:.2f} s")
        ok = ok and sent["within_5s"] >= 0.95
    print("\n  goals (≤ 50 statements/s waiting, p95 ≤ 100 ms, ≥ 95 % mail in 5 s): "
          + ("met" if ok else "NOT met"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
