"""Benchmark: the portal's hot paths beside a bare Flask endpoint, served the same way.

    python tests/benchmarks/bench_paths.py                      # SQLite (a fresh WAL file)
    python tests/benchmarks/bench_paths.py --database-uri postgresql+psycopg://…
    python tests/benchmarks/bench_paths.py --paths create,prompts --duration 30
    python tests/benchmarks/bench_paths.py --worker-class both  # sync, then gthread
    python tests/benchmarks/bench_paths.py --profile            # and where the time goes

Both servers are gunicorn with the same settings (-w 2, the worker class chosen, and the
hooks in bench_gunicorn.py); wrk drives each path with the same load (2 threads,
4 connections, --duration seconds after a short warm-up) from its own process on loopback.
Per path it prints requests/s, p50 and p95 latency (wrk's own histogram), its share of
the bare endpoint's requests/s, SQL statements per request (counted inside the workers)
and the issue's goal — one Markdown table per database and worker class. The bare
endpoint runs first and again last (the shares use the mean), so a change in the shared
machine's load during the run shows.

--database-uri EMPTIES that database first (every table, view, sequence and type of its
schema), then migrates and seeds it: give a scratch database. Without it, a fresh SQLite
file in a temporary folder, deleted afterwards. --all then runs this folder's other
benchmarks (EXTRA_BENCHMARKS: expiry; long-polls and mail), each with the same
--database-uri.

The paths (--paths, comma-separated; the bare endpoint always runs):
  create     POST /api/v1/session-requests   technician token; email authorization with
             2 recipients, confirmation off: each request is pending with 2 emails queued,
             spread over --devices devices
  approval   GET /approvals/<token>          a pending request's link, opened once before
  prompts    GET /api/v1/agent/prompts       device token, one open prompt, fetched once before
  otp_verify POST /api/v1/agent/otp/verify     device token of a department with one-time
             passwords on; a wrong code for one of 5,000 usernames in turn, so every
             answer is the 403 and the failure counter and audit event are written (a
             username locked out after 5 failures would cost less)

Data is made through the portal's CLI (`flask --app portal db upgrade`) and public services
(bench_seed.py); the paths are driven through the HTTP API only, so the script runs
unchanged while the code behind the paths changes. No mail server is configured: the
emails stay in the outbox.

Not a test (pytest collects no bench_*.py). Needs `wrk` (Debian: apt-get install wrk).
"""
from __future__ import annotations

import argparse
import json
import os
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

import bench_profile
from bench_wrk import Result, Target, run_wrk, write_lua

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
BARE_APP = '''\
from flask import Flask, jsonify

app = Flask(__name__)


@app.route("/", defaults={"path": ""}, methods=["GET", "POST"])
@app.route("/<path:path>", methods=["GET", "POST"])
def hello(path):
    return jsonify(hello="world")
'''
# Scripts measured after this one's tables, with --all: each takes
# --database-uri (the same meaning as here; it may empty that database again) and prints
# its own table. Expiry lateness, decision -> long-poll latency, mail delivery delay.
EXTRA_BENCHMARKS = ("bench_expiry.py", "bench_longpoll.py")  # (long-polls and mail)
GOALS = {"create": 20.0, "approval": 30.0, "prompts": 30.0, "otp_verify": 20.0}
TITLES = {"bare": "bare Flask endpoint (`GET /hello`)",
          "create": "`POST /api/v1/session-requests` (2 recipients)",
          "approval": "`GET /approvals/<token>`",
          "prompts": "`GET /api/v1/agent/prompts`",
          "otp_verify": "`POST /api/v1/agent/otp/verify` (wrong code, 403)"}
PATHS = ("create", "approval", "prompts", "otp_verify")
OTP_USERNAMES = 5000  # each takes a few failures: the counter and audit run, no lock-out


# --- database and data ---------------------------------------------------------------


def empty_postgresql(uri: str) -> None:
    """Drop every table, view, sequence and type of the database's current schema."""
    from sqlalchemy import create_engine, text

    engine = create_engine(uri)
    queries = {
        "VIEW": "SELECT viewname FROM pg_views WHERE schemaname = current_schema()",
        "TABLE": "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()",
        "SEQUENCE": "SELECT sequencename FROM pg_sequences WHERE schemaname = current_schema()",
        "TYPE": "SELECT t.typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace"
                " WHERE n.nspname = current_schema() AND t.typtype IN ('e', 'd')",
    }
    with engine.begin() as connection:
        for kind, query in queries.items():
            for (name,) in connection.execute(text(query)).all():
                quoted = '"' + name.replace('"', '""') + '"'
                connection.execute(text(f"DROP {kind} IF EXISTS {quoted} CASCADE"))
    engine.dispose()


def portal_python(env: dict, *argv: str) -> str:
    out = subprocess.run([sys.executable, *argv], env=env, cwd=ROOT, capture_output=True,
                         text=True)
    if out.returncode:
        raise SystemExit(f"{' '.join(argv)} failed:\n{out.stdout}{out.stderr}")
    return out.stdout


def prepare_database(env: dict, args) -> dict:
    if args.database_uri:
        print(f"Emptying {args.database_uri.rsplit('@', 1)[-1]} …", file=sys.stderr)
        empty_postgresql(args.database_uri)
    portal_python(env, "-m", "flask", "--app", "portal", "db", "upgrade")
    seeded = portal_python(env, str(HERE / "bench_seed.py"), "seed", "--devices",
                           str(args.devices))
    return json.loads(seeded.strip().splitlines()[-1])


def call(port: int, method: str, path: str, token: str | None = None,
         body: dict | None = None) -> tuple[int, bytes]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data,
                                     headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def create_request(port: int, seed: dict, device: str) -> dict:
    status, body = call(port, "POST", "/api/v1/session-requests", seed["technician_token"],
                        {"device": device})
    if status != 201:
        raise SystemExit(f"creating a request on {device}: {status} {body[:300]!r}")
    return json.loads(body)


def target_for(name: str, port: int, seed: dict, env: dict) -> Target:
    """The path's wrk target, with what it needs made just before (so deadlines hold)."""
    if name == "bare":
        return Target("bare", "GET", "/hello", {}, [])
    if name == "create":
        created = create_request(port, seed, seed["email_devices"][0])
        if created["status"] != "pending" or created["checks"]["email"] != "pending":
            raise SystemExit(f"a create is not pending on email authorization: {created}")
        return Target("create", "POST", "/api/v1/session-requests",
                      {"Authorization": f"Bearer {seed['technician_token']}",
                       "Content-Type": "application/json"},
                      [json.dumps({"device": d}) for d in seed["email_devices"]])
    if name == "approval":
        created = create_request(port, seed, seed["email_devices"][-1])
        token = portal_python(env, str(HERE / "bench_seed.py"), "link",
                              str(created["id"])).strip().splitlines()[-1]
        path = f"/approvals/{token}"
        status, _ = call(port, "GET", path)  # the first opening (the one recorded)
        if status != 200:
            raise SystemExit(f"the approval page answered {status}")
        return Target("approval", "GET", path, {}, [], cleanup=str(created["id"]))
    if name == "otp_verify":
        body = {"username": "bench-user-0", "email": "user@bench.example",
                "password": "00000000"}
        status, answer = call(port, "POST", "/api/v1/agent/otp/verify", seed["otp_token"], body)
        if (status, json.loads(answer)) != (403, {"allowed": False}):
            raise SystemExit(f"a wrong code is not refused as the contract says: {status} "
                             f"{answer!r}")
        return Target("otp_verify", "POST", "/api/v1/agent/otp/verify",
                      {"Authorization": f"Bearer {seed['otp_token']}",
                       "Content-Type": "application/json"},
                      [json.dumps({**body, "username": f"bench-user-{i}"})
                       for i in range(1, OTP_USERNAMES + 1)], refused=True)
    created = create_request(port, seed, seed["prompt_device"])
    if created["checks"]["end_user"] != "pending":
        raise SystemExit(f"the prompt device's request opens no prompt: {created}")
    status, body = call(port, "GET", "/api/v1/agent/prompts", seed["device_token"])
    ids = [p["id"] for p in json.loads(body)["prompts"]] if status == 200 else []
    if ids != [created["id"]]:
        raise SystemExit(f"the agent's prompts are not the one open prompt: {status} {body!r}")
    return Target("prompts", "GET", "/api/v1/agent/prompts",
                  {"Authorization": f"Bearer {seed['device_token']}"}, [],
                  cleanup=str(created["id"]))


# --- servers -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """gunicorn serving `app_spec` with the benchmark's settings; the statement totals
    its workers wrote on exit are read by stop()."""

    def __init__(self, app_spec: str, cwd: Path, env: dict, work: Path, args,
                 worker_class: str) -> None:
        self.port = free_port()
        self.stats = Path(tempfile.mkdtemp(prefix="stats-", dir=work))
        command = [sys.executable, "-m", "gunicorn", "-c", str(HERE / "bench_gunicorn.py"),
                   "-w", str(args.workers), "-k", worker_class,
                   "-b", f"127.0.0.1:{self.port}", "--chdir", str(cwd)]
        if worker_class == "gthread":
            command += ["--threads", str(args.threads)]
        self.process = subprocess.Popen(command + [app_spec],
                                        env={**env, "BENCH_STATS_DIR": str(self.stats)})
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"gunicorn {app_spec} exited ({self.process.returncode})")
            try:
                call(self.port, "GET", "/")
                return
            except OSError:
                time.sleep(0.2)
        self.process.kill()
        raise SystemExit(f"gunicorn {app_spec} did not start")

    def stop(self) -> dict[str, float]:
        """Stop gracefully; statements per request by label."""
        self.process.terminate()
        self.process.wait(30)
        totals: dict[str, list[int]] = {}
        for path in self.stats.glob("*.json"):
            for label, (requests, statements) in json.loads(path.read_text()).items():
                sums = totals.setdefault(label, [0, 0])
                sums[0] += requests
                sums[1] += statements
        return {label: statements / requests
                for label, (requests, statements) in totals.items() if requests}


def workers_cpu_seconds(pids: list[int]) -> float:
    """The CPU time (user + system) the processes have used so far, from /proc: per
    request, a figure that another process's load on the machine changes far less than
    it changes requests/s."""
    ticks = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rpartition(")")[2].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return ticks / os.sysconf("SC_CLK_TCK")


def measure_all(env: dict, work: Path, seed: dict, args, worker_class: str,
                profiles: dict[str, str]) -> dict:
    """Each path's Result by name; the bare endpoint is measured first and again last
    ("bare-after"), so a drift in the machine's load shows. With --profile, each portal
    path then runs as long again with py-spy on its workers (bench_profile.py): its
    summary goes into `profiles`."""
    bare = Server("bare:app", work, env, work, args, worker_class)
    portal = Server("portal.wsgi:app", ROOT, env, work, args, worker_class)
    results: dict[str, Result] = {}
    try:
        for key in ("bare", *args.paths, "bare-after"):
            name = key.removesuffix("-after")
            server = bare if name == "bare" else portal
            target = target_for(name, server.port, seed, env)
            run_wrk(server.port, write_lua(work, target, None, args.wrk_threads),
                    args.warmup, args, refused=target.refused)
            workers = bench_profile.worker_pids(server.process.pid)
            cpu_before = workers_cpu_seconds(workers)
            results[key] = run_wrk(server.port,
                                   write_lua(work, target, name, args.wrk_threads),
                                   args.duration, args, refused=target.refused)
            results[key].worker_cpu_ms = 1000 * (workers_cpu_seconds(workers) - cpu_before) \
                / max(results[key].requests, 1)
            print(f"  {worker_class:>7} {key:<10} {results[key].requests_per_second:9.1f} "
                  "req/s", file=sys.stderr)
            if args.profile and name != "bare":  # a run of its own: the figure is clean
                running = bench_profile.start(bench_profile.worker_pids(portal.process.pid),
                                              args.duration, work, f"{worker_class}-{name}")
                run_wrk(server.port, write_lua(work, target, None, args.wrk_threads),
                        args.duration, args, refused=target.refused)
                profiles[key] = bench_profile.summary(
                    bench_profile.finish(running, keep_in=args.profile_dir))
            if target.cleanup:  # no open request left behind for the next round
                call(portal.port, "POST", f"/api/v1/session-requests/{target.cleanup}/cancel",
                     seed["technician_token"])
    finally:
        statements = {**bare.stop(), **portal.stop()}
    for key, result in results.items():
        name = key.removesuffix("-after")
        result.statements = statements.get(name, 0.0 if name == "bare" else None)
    return results


# --- report --------------------------------------------------------------------------


def table(results: dict[str, Result], heading: str) -> str:
    before, after = results.pop("bare"), results.pop("bare-after")
    bare = (before.requests_per_second + after.requests_per_second) / 2
    rows = {"bare": Result(bare, (before.p50_ms + after.p50_ms) / 2,
                           (before.p95_ms + after.p95_ms) / 2,
                           before.requests + after.requests,
                           ", ".join(e for e in (before.errors, after.errors) if e),
                           before.statements,
                           (before.worker_cpu_ms + after.worker_cpu_ms) / 2), **results}
    lines = [heading, "",
             "| path | req/s | p50 | p95 | share of bare | workers' CPU/req | statements/req "
             "| goal |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    notes = [f"The bare endpoint ran first and last: {before.requests_per_second:,.0f} and "
             f"{after.requests_per_second:,.0f} req/s; its row and the shares use the mean."]
    for name, result in rows.items():
        share = 100 * result.requests_per_second / bare if bare else 0.0
        goal = "—"
        if name in GOALS:
            goal = f"≥ {GOALS[name]:.0f} % " + ("met" if share >= GOALS[name] else "**not met**")
        statements = "?" if result.statements is None else f"{result.statements:.1f}"
        lines.append(f"| {TITLES[name]} | {result.requests_per_second:,.0f} | "
                     f"{result.p50_ms:.1f} ms | {result.p95_ms:.1f} ms | {share:.1f} % | "
                     f"{result.worker_cpu_ms:.2f} ms | {statements} | {goal} |")
        if result.errors:
            notes.append(f"Errors on {TITLES[name]}: {result.errors} of "
                         f"{result.requests:,} requests (counted in its req/s).")
    return "\n".join(lines + [""] + notes)


def run_extras(args) -> None:
    for name in EXTRA_BENCHMARKS:
        script = HERE / name
        print(f"\n## {name}\n", flush=True)
        command = [sys.executable, str(script)]
        if args.database_uri:
            command += ["--database-uri", args.database_uri]
        subprocess.run(command, cwd=ROOT, check=False)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\nNot a test")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="With --database-uri the database is EMPTIED first (every table, view, "
               "sequence and type of its schema is dropped), then migrated and seeded: "
               "give a scratch database. Without it, a fresh SQLite file (WAL) in a "
               "temporary folder is used.")
    parser.add_argument("--database-uri", help="a scratch PostgreSQL database, e.g. "
                        "postgresql+psycopg://portal:portal@127.0.0.1:5432/bench "
                        "(it will be emptied)")
    parser.add_argument("--paths", default=",".join(PATHS),
                        help=f"comma-separated subset of {','.join(PATHS)} (default: all)")
    parser.add_argument("--duration", type=int, default=10,
                        help="whole seconds per path (10)")
    parser.add_argument("--warmup", type=int, default=2, help="whole seconds of warm-up (2)")
    parser.add_argument("--worker-class", choices=("sync", "gthread", "both"),
                        default="sync", help="gunicorn worker class (sync, as the issue's "
                        "figures; gthread, as production)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8, help="threads per gthread worker")
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--wrk-threads", type=int, default=2)
    parser.add_argument("--devices", type=int, default=200,
                        help="devices the creates are spread over (200)")
    parser.add_argument("--profile", action="store_true", help="then run each portal path "
                        "as long again with py-spy attached to the workers, and print where "
                        "their time goes (pip install -e '.[bench]')")
    parser.add_argument("--profile-dir", type=Path, help="with --profile, keep py-spy's "
                        "raw stacks there (one file per path and worker; flamegraph.pl "
                        "reads them)")
    parser.add_argument("--all", action="store_true", help="then run this folder's other "
                        f"benchmarks ({', '.join(EXTRA_BENCHMARKS)})")
    args = parser.parse_args(argv)
    args.paths = [p.strip() for p in args.paths.split(",") if p.strip() and p != "bare"]
    unknown = sorted(set(args.paths) - set(PATHS))
    if unknown:
        parser.error(f"unknown path(s): {', '.join(unknown)} (choose from {', '.join(PATHS)})")
    if "prompts" in args.paths and args.duration * (2 if args.profile else 1) \
            + args.warmup > 590:
        parser.error("a prompt stays open 600 s at most: keep --duration under 590 "
                     "(under 295 with --profile)")
    if args.profile and not bench_profile.available():
        parser.error("--profile needs py-spy (pip install -e '.[bench]')")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    work = Path(tempfile.mkdtemp(prefix="bench-paths-"))
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("PORTAL_")}  # no mail server, nothing inherited
    env.update({
        "PORTAL_SECRET_KEY": secrets.token_urlsafe(48),
        "PORTAL_TOKEN_HASH_KEY": secrets.token_urlsafe(48),
        "PORTAL_AUDIT_KEY": secrets.token_urlsafe(48),
        "PORTAL_INSTANCE_PATH": str(work / "instance"),
        "PORTAL_BASE_URL": "http://portal.bench",
        "PORTAL_SQLALCHEMY_DATABASE_URI": args.database_uri
        or f"sqlite:///{work / 'portal.sqlite3'}",
    })
    (work / "bare.py").write_text(BARE_APP)
    database = "PostgreSQL" if args.database_uri else "SQLite (WAL)"
    print(f"Seeding {database} in {work} …", file=sys.stderr)
    try:
        seed = prepare_database(env, args)
        classes = ("sync", "gthread") if args.worker_class == "both" else (args.worker_class,)
        tables = []
        for worker_class in classes:
            profiles: dict[str, str] = {}
            results = measure_all(env, work, seed, args, worker_class, profiles)
            threads = f", {args.threads} threads each" if worker_class == "gthread" else ""
            tables.append(table(results, (
                f"### {database} — gunicorn -w {args.workers} ({worker_class}{threads}), "
                f"wrk {args.wrk_threads} threads × {args.connections} connections, "
                f"{args.duration:g} s per path")))
            if profiles:
                tables.append(f"Where the workers' time goes (py-spy, {worker_class}, "
                              "another run of each path as long):\n\n" + "\n\n".join(
                                  f"- {TITLES[name]}\n{text}"
                                  for name, text in profiles.items()))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("\n" + "\n\n".join(tables))
    if args.all:
        run_extras(args)


if __name__ == "__main__":
    main()
