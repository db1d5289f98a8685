"""The production shape for real: gunicorn with several threaded workers and separate
scheduler processes, sharing the test database.

- web workers never run jobs (overdue rows stay pending until a scheduler runs, though
  the API already reads them as timed out);
- a held long-poll doesn't take a worker away from everyone else, and answers soon
  after the change;
- with two scheduler processes (PostgreSQL elects one by advisory lock) every overdue
  request times out exactly once.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import select, update

from portal.extensions import db
from portal.models import AuditEvent, SessionRequest
from portal.services import accounts
from portal.services.actors import CLI

BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _call(url: str, method: str = "GET", token: str | None = None, body=None,
          timeout: float = 15):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


@pytest.fixture
def env(app):
    return {
        **os.environ,
        "PORTAL_SECRET_KEY": app.config["SECRET_KEY"],
        "PORTAL_TOKEN_HASH_KEY": app.config["TOKEN_HASH_KEY"],  # token hashes are keyed by it
        "PORTAL_AUDIT_KEY": app.config["AUDIT_KEY"],
        "PORTAL_SQLALCHEMY_DATABASE_URI": app.config["SQLALCHEMY_DATABASE_URI"],
        "PORTAL_ARGON2_TIME_COST": "1",
        "PORTAL_ARGON2_MEMORY_COST_KIB": "8",
        "PORTAL_ARGON2_PARALLELISM": "1",
    }


@pytest.fixture
def processes():
    started: list[subprocess.Popen] = []
    yield started
    for proc in started:
        proc.terminate()
    for proc in started:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _wait_until(predicate, timeout: float, step: float = 0.1):
    give_up = time.monotonic() + timeout
    while time.monotonic() < give_up:
        if predicate():
            return True
        time.sleep(step)
    return False


def test_gunicorn_workers_and_schedulers(app, make, env, processes):
    department = make.department("QA Team")
    department.settings.is_confirmation_shown = True
    department.settings.confirmation_timeout_seconds = 600
    technician = make.user("tech@example.com", "technician", department)
    device = make.device(department, "WIN-0859G9I39J0")
    device.logged_in_user = "jsmith"
    now = datetime.now(timezone.utc)
    user_token = accounts.create_user_token(user=technician, actor=CLI, now=now)
    device_token = accounts.create_device_token(device=device, actor=CLI, now=now)
    db.session.commit()

    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    processes.append(subprocess.Popen(
        [str(BIN / "gunicorn"), "--workers", "3", "--worker-class", "gthread",
         "--threads", "4", "--bind", f"127.0.0.1:{port}", "portal.wsgi:app"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    assert _wait_until(lambda: _up(base), 30), "gunicorn did not start"

    ids = []
    for _ in range(6):
        status, body = _call(f"{base}/api/v1/session-requests", "POST", user_token,
                             {"device": "WIN-0859G9I39J0"})
        assert status == 201, body
        assert body["status"] == "pending"
        ids.append(body["id"])

    # A held long-poll leaves the other workers and threads free, and answers soon
    # after the change.
    held: dict = {}

    def hold():
        start = time.monotonic()
        held["answer"] = _call(f"{base}/api/v1/session-requests/{ids[0]}?wait=20",
                               token=user_token, timeout=30)
        held["done_at"] = time.monotonic()
        held["took"] = held["done_at"] - start

    thread = threading.Thread(target=hold)
    thread.start()
    time.sleep(0.5)
    quick = time.monotonic()
    for _ in range(5):
        assert _call(f"{base}/api/v1/session-requests/{ids[1]}", token=user_token)[0] == 200
    assert time.monotonic() - quick < 5
    status, body = _call(f"{base}/api/v1/agent/prompts/{ids[0]}", "POST", device_token,
                         {"decision": "accept"})
    decided = time.monotonic()
    assert status == 200 and body["status"] == "approved"
    thread.join(timeout=25)
    assert held["answer"][1]["status"] == "approved"
    assert held["done_at"] - decided < 1.0  # ~100 ms poll, with room for a busy machine
    assert held["took"] < 10

    # Deadlines pass with only web workers running: nothing moves the rows...
    soon = datetime.now(timezone.utc) + timedelta(seconds=1)
    db.session.execute(update(SessionRequest).where(SessionRequest.id.in_(ids[1:]))
                       .values(expires_at=soon, end_user_deadline=soon))
    db.session.commit()
    time.sleep(2.5)
    assert _statuses(ids[1:]) == {"pending"}
    # ...yet the API already reads them as timed out (deadlines live in the data).
    status, body = _call(f"{base}/api/v1/session-requests/{ids[1]}", token=user_token)
    assert body["status"] == "timed_out"
    assert body["outcome_message"] == "The Session Confirmation request has timed out."

    # Two scheduler processes: one transition and one audit event per request.
    is_postgres = db.engine.dialect.name == "postgresql"
    for _ in range(2 if is_postgres else 1):
        processes.append(subprocess.Popen(
            [str(BIN / "flask"), "--app", "portal", "scheduler"], env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    assert _wait_until(lambda: _statuses(ids[1:]) == {"timed_out"}, 20)
    time.sleep(1.5)  # let any second sweep try, too
    db.session.expire_all()
    events = db.session.scalars(select(AuditEvent).where(
        AuditEvent.action == "request.timed_out")).all()
    assert sorted(int(e.target_id) for e in events) == sorted(ids[1:])


def _up(base: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base}/login", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def _statuses(ids) -> set[str]:
    db.session.rollback()
    return set(db.session.scalars(select(SessionRequest.status)
                                  .where(SessionRequest.id.in_(ids))))
