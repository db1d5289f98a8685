"""`flask --app portal scheduler` as a real process for the system tests: its output read
line by line as it comes, and the environment that points it at the test database and a
loopback SMTP server."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

BIN = Path(sys.executable).parent
RUNNING = "Scheduler running"
STANDING_BY = "standing by"


class Scheduler:
    """One `flask --app portal scheduler` process, its output lines read as they come."""

    def __init__(self, env: dict) -> None:
        self.lines: list[tuple[float, str]] = []
        self.proc = subprocess.Popen(
            [str(BIN / "flask"), "--app", "portal", "scheduler"], env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append((time.monotonic(), line.rstrip()))

    def said(self, words: str) -> float | None:
        """When (time.monotonic()) the process first printed a line with `words`."""
        return next((at for at, line in self.lines if words in line), None)

    def output(self) -> str:
        return "\n".join(line for _, line in self.lines)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()

    def reap(self) -> None:
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.reader.join(timeout=5)
        self.proc.stdout.close()


def scheduler_env(app, smtp_port: int) -> dict:
    """The environment of a scheduler process sharing the test app's database and keys,
    delivering to the SMTP server on `smtp_port`."""
    return {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "PORTAL_SECRET_KEY": app.config["SECRET_KEY"],
        "PORTAL_TOKEN_HASH_KEY": app.config["TOKEN_HASH_KEY"],
        "PORTAL_AUDIT_KEY": app.config["AUDIT_KEY"],
        "PORTAL_SQLALCHEMY_DATABASE_URI": app.config["SQLALCHEMY_DATABASE_URI"],
        "PORTAL_MAIL_SERVER": "127.0.0.1",
        "PORTAL_MAIL_PORT": str(smtp_port),
        "PORTAL_MAIL_SUPPRESS_SEND": "false",
        "PORTAL_MAIL_DEFAULT_SENDER": "session-gate@example.com",
        "PORTAL_BASE_URL": "http://portal.test",
    }


def run_schedulers(env: dict):
    """A fixture body: yields a starter; every process started is stopped afterwards."""
    started: list[Scheduler] = []
    yield lambda: started.append(Scheduler(env)) or started[-1]
    for scheduler in started:
        scheduler.stop()
    for scheduler in started:
        scheduler.reap()
