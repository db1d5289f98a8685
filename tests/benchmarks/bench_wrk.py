"""wrk for bench_paths.py: a Lua script per target, and the figures wrk's `done` hook
prints (requests/s, p50 and p95 from wrk's own latency histogram, errors)."""
from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

REPORT_PREFIX = "BENCH-RESULT "
# wrk's Lua: `request` builds each request (the create path cycles through the devices,
# each wrk thread from its own offset); `done` prints the figures on one line.
LUA = '''\
local method, path = "%(method)s", "%(path)s"
local headers = %(headers)s
local bodies = %(bodies)s
local threads = {}
local counter = 0

function setup(thread)
  thread:set("offset", #threads)
  table.insert(threads, thread)
end

function init(args)
  counter = tonumber(offset) or 0
end

function request()
  local body = nil
  if #bodies > 0 then
    body = bodies[(counter %% #bodies) + 1]
    counter = counter + %(threads)d
  end
  return wrk.format(method, path, headers, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("%(prefix)s%%d %%d %%d %%d %%d %%d %%d %%d %%d\\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(95),
    e.status, e.connect, e.read, e.write, e.timeout))
end
'''


@dataclass
class Target:
    name: str
    method: str
    path: str
    headers: dict
    bodies: list
    cleanup: str | None = None  # a request id to cancel afterwards
    refused: bool = False  # every answer is meant to be a 4xx (the OTP verify path)


@dataclass
class Result:
    requests_per_second: float
    p50_ms: float
    p95_ms: float
    requests: int
    errors: str  # "" or what went wrong (non-2xx/3xx answers, socket errors)
    statements: float | None = None
    worker_cpu_ms: float = 0.0  # the server's workers' CPU time per request


def lua_string(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid Lua string for what we send


def write_lua(work: Path, target: Target, label: str | None, threads: int) -> Path:
    headers = dict(target.headers)
    if label:
        headers["X-Bench-Path"] = label
    script = LUA % {
        "method": target.method, "path": target.path, "threads": threads,
        "headers": "{" + ", ".join(f"[{lua_string(k)}] = {lua_string(v)}"
                                   for k, v in headers.items()) + "}",
        "bodies": "{" + ", ".join(lua_string(b) for b in target.bodies) + "}",
        "prefix": REPORT_PREFIX}
    path = work / f"{target.name}-{'measure' if label else 'warmup'}.lua"
    path.write_text(script)
    return path


def run_wrk(port: int, script: Path, seconds: int, args, refused: bool = False) -> Result:
    out = subprocess.run(
        ["wrk", "-t", str(args.wrk_threads), "-c", str(args.connections),
         "-d", f"{seconds}s", "--timeout", "10s", "-s", str(script),
         f"http://127.0.0.1:{port}/"], capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"wrk failed ({out.returncode}):\n{out.stdout}{out.stderr}")
    out = out.stdout
    line = next(l for l in out.splitlines() if l.startswith(REPORT_PREFIX))
    requests, duration_us, p50, p95, status, connect, read, write, timeout = map(
        int, line.removeprefix(REPORT_PREFIX).split())
    problems = []
    if refused and status != requests:
        problems.append(f"{requests - status} answers that were not the expected refusal")
    elif status and not refused:
        problems.append(f"{status} non-2xx/3xx answers")
    sockets = {"connect": connect, "read": read, "write": write, "timeout": timeout}
    problems += [f"{n} {kind} errors" for kind, n in sockets.items() if n]
    return Result(requests * 1e6 / duration_us, p50 / 1000, p95 / 1000, requests,
                  ", ".join(problems))

