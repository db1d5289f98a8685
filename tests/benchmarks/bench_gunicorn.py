"""gunicorn settings for both servers of bench_paths.py (the bare endpoint and the portal
get exactly the same hooks): SQL statements counted per labelled request.

    gunicorn -c tests/benchmarks/bench_gunicorn.py …

A request carrying `X-Bench-Path: <label>` (the measured wrk runs send it; warm-ups and
set-up requests do not) adds its SQL statement count — SQLAlchemy's before_cursor_execute,
on every engine — to the label's totals. Each worker writes its totals as JSON to
$BENCH_STATS_DIR/<pid>.json when it exits. Nothing here touches the portal's code.
"""
from __future__ import annotations

import json
import os
import threading
from collections import defaultdict

loglevel = "warning"
accesslog = None

_local = threading.local()  # gthread workers: one count per request thread
_lock = threading.Lock()
_totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # label -> [requests, statements]


def _count(*_args, **_kwargs) -> None:
    _local.statements = getattr(_local, "statements", 0) + 1


def post_worker_init(worker) -> None:
    try:
        from sqlalchemy import event
        from sqlalchemy.engine import Engine
    except ImportError:  # a bare app without SQLAlchemy installed: nothing to count
        return
    event.listen(Engine, "before_cursor_execute", _count)


def pre_request(worker, req) -> None:
    _local.statements = 0


def post_request(worker, req, environ, resp) -> None:
    label = environ.get("HTTP_X_BENCH_PATH")
    if label:
        with _lock:
            totals = _totals[label]
            totals[0] += 1
            totals[1] += getattr(_local, "statements", 0)


def worker_exit(server, worker) -> None:
    """Runs in the worker process as it exits (gunicorn's arbiter, spawn_worker)."""
    directory = os.environ.get("BENCH_STATS_DIR")
    if directory and _totals:
        path = os.path.join(directory, f"{os.getpid()}.json")
        with open(path, "w", encoding="utf-8") as out:
            json.dump(dict(_totals), out)
