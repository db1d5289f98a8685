"""Where a gunicorn worker's time goes under load: py-spy (a sampling profiler that attaches
to a running process; `pip install -e '.[bench]'`) records every worker while wrk drives
one path, and summary() prints two lists from the samples of all workers:

- by package: the share of samples whose innermost frame is that package's code (C calls
  count for the Python code that made them: a socket write is gunicorn's, a statement's
  execution SQLAlchemy's), the portal's own templates as "templates", the standard
  library as "stdlib";
- by call site: the portal's innermost frame in each sample and the package it was in at
  that moment (e.g. `find_link (portal/services/decisions.py:147) → sqlalchemy`: time in
  SQLAlchemy on behalf of that line); samples with no portal frame are the server and
  the framework around the portal's code.

Used by bench_paths.py --profile; not a test."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

_PACKAGE = re.compile(r"\(([^():]*)(?::\d+)?\)$")
PORTAL_CODE = ("portal/",)
# On PATH, or beside this Python (a venv run without activating it).
PY_SPY = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))


def worker_pids(master_pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(master_pid)], capture_output=True, text=True)
    return [int(pid) for pid in out.stdout.split()]


def available() -> bool:
    return Path(PY_SPY).is_file()


def start(pids: list[int], seconds: int, out_dir: Path, label: str,
          rate: int = 250) -> list[tuple[subprocess.Popen, Path]]:
    """One py-spy per worker, recording `seconds` of raw (collapsed) stacks."""
    running = []
    for pid in pids:
        path = out_dir / f"profile-{label}-{pid}.txt"
        running.append((subprocess.Popen(
            [PY_SPY, "record", "--pid", str(pid), "--duration", str(seconds),
             "--rate", str(rate), "--format", "raw", "--nonblocking",
             "--output", str(path)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), path))
    return running


def finish(running: list[tuple[subprocess.Popen, Path]],
           keep_in: Path | None = None) -> list[tuple[list[str], int]]:
    """The samples of every worker: (frames outermost first, count); the raw files are
    copied to `keep_in` if given."""
    stacks = []
    for process, path in running:
        process.wait(60)
        if not path.exists():
            continue
        if keep_in is not None:
            keep_in.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, keep_in / path.name)
        for line in path.read_text().splitlines():
            frames, _, count = line.rpartition(" ")
            if frames and count.isdigit():
                stacks.append((frames.split(";"), int(count)))
    return stacks


def _file(frame: str) -> str:
    match = _PACKAGE.search(frame)
    return match.group(1) if match else frame


def package(frame: str) -> str:
    file = _file(frame)
    if file.endswith((".html", ".txt")):
        return "templates"
    if "/" not in file:  # socket.py, <frozen runpy>, generated code
        return "sqlalchemy" if "sqlalchemy" in frame else "stdlib"
    return file.split("/", 1)[0]


def _is_portal(frame: str) -> bool:
    return _file(frame).startswith(PORTAL_CODE) or package(frame) == "templates"


def summary(stacks: list[tuple[list[str], int]], top: int = 8) -> str:
    total = sum(count for _, count in stacks)
    if not total:
        return "  (no samples: is py-spy allowed to attach? it needs ptrace rights)"
    by_package, by_site = Counter(), Counter()
    for frames, count in stacks:
        by_package[package(frames[-1])] += count
        inner = max((i for i, frame in enumerate(frames) if _is_portal(frame)), default=None)
        if inner is None:
            by_site["(outside the portal's code)"] += count
        else:
            callee = package(frames[inner + 1]) if inner + 1 < len(frames) else "itself"
            by_site[f"{frames[inner]} → {callee}"] += count

    def listing(counter: Counter) -> str:
        return "; ".join(f"{name} {100 * n / total:.0f} %"
                         for name, n in counter.most_common(top))

    return (f"  {total:,} samples. By package: {listing(by_package)}.\n"
            f"  By call site: {listing(by_site)}.")
