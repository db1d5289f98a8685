"""Benchmark: `POST /api/v1/agent/otp/verify` with a wrong code (so the failure counter
and the audit trail are written on every request) beside a bare Flask endpoint, both
served the same way in the same run: gunicorn, 2 sync workers, loaded by wrk with 4
connections from a second process on loopback.

    python tests/benchmarks/bench_otp_verify.py [--database-uri URI] [--seconds 10]

Not a test (pytest does not collect this folder). It migrates a scratch database (a
temporary SQLite file by default; with a URI, use a scratch PostgreSQL database), seeds a
department with one-time passwords on and a device with its token, then prints requests
per second for both endpoints and the ratio (the figure the issue asks for).
Needs `wrk` (Debian: apt-get install wrk).
"""
from __future__ import annotations

import argparse
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
BARE_APP = '''
from flask import Flask, request, jsonify

app = Flask(__name__)


@app.post("/api/v1/agent/otp/verify")
def verify():
    request.get_json()
    return jsonify(allowed=False), 403
'''
WRK_SCRIPT = '''
wrk.method = "POST"
wrk.body = '{"username": "jsmith", "email": "j.smith@example.com", "password": "00000000"}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %s"
'''


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def seed(env: dict) -> str:
    """Migrate and seed through the app itself; the device token."""
    code = (
        "from flask_migrate import upgrade\n"
        "from portal import create_app\n"
        "from portal.extensions import db\n"
        "from portal.services import departments, devices\n"
        "from portal.services.actors import CLI\n"
        "from portal.clock import SystemClock\n"
        "import uuid\n"
        "app = create_app()\n"
        "with app.app_context():\n"
        "    upgrade()\n"
        "    now = SystemClock()()\n"
        "    d = departments.create_department(name='Bench ' + uuid.uuid4().hex[:8], actor=CLI, now=now)\n"
        "    values = {**departments.settings_values(d.settings), 'is_otp_allowed': True}\n"
        "    departments.update_settings(department=d, values=values, actor=CLI, now=now)\n"
        "    _device, token = devices.create_device(department=d, name='BENCH-' + uuid.uuid4().hex[:8], actor=CLI, now=now)\n"
        "    db.session.commit()\n"
        "    print(token)\n")
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, check=True,
                         capture_output=True, text=True)
    return out.stdout.strip().splitlines()[-1]


def serve(app_spec: str, env: dict, cwd: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-w", "2", "-b", f"127.0.0.1:{port}",
         "--log-level", "warning", app_spec], env=env, cwd=cwd)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1)
        except urllib.error.HTTPError:
            return process, port  # it answers (404 is fine)
        except OSError:
            time.sleep(0.2)
        else:
            return process, port
    process.kill()
    raise SystemExit(f"{app_spec} did not start")


def measure(port: int, script: Path, seconds: int) -> float:
    out = subprocess.run(["wrk", "-t", "2", "-c", "4", "-d", f"{seconds}s", "-s", str(script),
                          f"http://127.0.0.1:{port}/api/v1/agent/otp/verify"],
                         check=True, capture_output=True, text=True).stdout
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-uri")
    parser.add_argument("--seconds", type=int, default=10)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    work = Path(tempfile.mkdtemp(prefix="bench-otp-"))
    env = {**os.environ,
           "PORTAL_SECRET_KEY": secrets.token_urlsafe(48),
           "PORTAL_TOKEN_HASH_KEY": secrets.token_urlsafe(48),
           "PORTAL_INSTANCE_PATH": str(work),
           "PORTAL_SQLALCHEMY_DATABASE_URI": args.database_uri
           or f"sqlite:///{work / 'portal.sqlite3'}"}
    token = seed(env)
    (work / "bare.py").write_text(BARE_APP)
    script = work / "verify.lua"
    script.write_text(WRK_SCRIPT % token)
    results = {}
    for name, spec, cwd in (("bare Flask endpoint", "bare:app", work),
                            ("POST /api/v1/agent/otp/verify", "portal.wsgi:app", ROOT)):
        process, port = serve(spec, env, cwd)
        try:
            measure(port, script, 2)  # warm-up
            results[name] = measure(port, script, args.seconds)
        finally:
            process.terminate()
            process.wait(10)
    database = "PostgreSQL" if args.database_uri else "SQLite"
    print(f"\nOTP verify (wrong code) vs a bare Flask endpoint — {database}, gunicorn -w 2 "
          f"(sync), wrk -c 4, {args.seconds} s each")
    for name, rps in results.items():
        print(f"  {name:<32} {rps:8.1f} req/s")
    bare, portal = results["bare Flask endpoint"], results["POST /api/v1/agent/otp/verify"]
    print(f"  ratio: {100 * portal / bare:.1f} % of the bare endpoint (goal: ≥ 20 %)")


if __name__ == "__main__":
    main()
