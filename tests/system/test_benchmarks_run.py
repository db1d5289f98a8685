"""The benchmarks in tests/benchmarks/ still run and print their tables (issue 8, point 8):
each script, for a second or two at a small size, as the README's commands run it at
full size. The figures themselves are not judged here (a busy machine changes them);
what is checked is that every path, row and goal line is there and reads as a number —
a script that broke, or a counter that stopped counting, fails here rather than on the
day someone needs the figures.

They make their own SQLite databases (a temporary folder each), so they run once, with
the suite on SQLite. They need gunicorn (a dependency) and wrk (Debian's package;
.ci/run installs it)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"

pytestmark = [
    pytest.mark.skipif(
        os.environ.get("PORTAL_TEST_DATABASE_URI", "").startswith("postgresql"),
        reason="the benchmarks make their own SQLite databases: run with the SQLite suite"),
]

NUMBER = r"[\d,]+(?:\.\d+)?"


def run(script: str, *args: str, codes: tuple[int, ...] = (0,), timeout: int = 240) -> str:
    result = subprocess.run([sys.executable, str(BENCHMARKS / script), *args],
                            capture_output=True, text=True, timeout=timeout,
                            cwd=BENCHMARKS.parents[1])
    assert result.returncode in codes, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def value(text: str) -> float:
    return float(text.replace(",", ""))


@pytest.mark.skipif(shutil.which("wrk") is None, reason="needs wrk (apt-get install wrk)")
def test_bench_paths_prints_every_path_beside_the_bare_endpoint():
    out = run("bench_paths.py", "--duration", "1", "--warmup", "1")
    rows = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 8 and cells[1].replace(",", "").isdigit():
            rows[cells[0]] = cells
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import bench_paths
    finally:
        sys.path.remove(str(BENCHMARKS))
    assert set(rows) == {bench_paths.TITLES[name] for name in ("bare", *bench_paths.PATHS)}, out
    for title, (_, rate, p50, p95, share, cpu, statements, goal) in rows.items():
        assert value(rate) > 0, title
        assert re.fullmatch(rf"{NUMBER} ms", p50) and re.fullmatch(rf"{NUMBER} ms", p95), title
        assert re.fullmatch(rf"{NUMBER} %", share) and re.fullmatch(rf"{NUMBER} ms", cpu), title
        is_bare = title == bench_paths.TITLES["bare"]
        # The statements are counted inside the workers: the bare endpoint sends none,
        # every portal path at least its one read.
        assert (value(statements) == 0) if is_bare else (value(statements) >= 1), title
        assert goal == "—" if is_bare else re.fullmatch(rf"≥ {NUMBER} % (met|\*\*not met\*\*)",
                                                        goal), title
    assert "The bare endpoint ran first and last" in out


def test_bench_statements_counts_each_hot_path():
    out = run("bench_statements.py", "--runs", "3")
    for path in ("create", "create+confirm", "approval first GET", "approval later GET",
                 "prompts (none)", "prompts (one open)"):
        match = re.search(rf"^{re.escape(path)}\s+(\d+)\s+(\d+)\s+(\d+)\s+({NUMBER})\s+"
                          rf"({NUMBER})\s+({NUMBER})\s+({NUMBER})\s*$", out, re.MULTILINE)
        assert match, (path, out[-2000:])
        assert int(match[1]) >= 1, path


def test_bench_expiry_times_out_every_request_and_accepts_no_late_decision():
    out = run("bench_expiry.py", "--requests", "200", "--spread", "1", "--probes", "5")
    timed_out = re.search(r"timed out: (\d+)/(\d+)", out)
    assert timed_out and timed_out[1] == timed_out[2] and int(timed_out[2]) > 0, out
    assert re.search(rf"decided_at - expires_at\s+p50\s+{NUMBER}\s+p95\s+{NUMBER}\s+"
                     rf"p99\s+{NUMBER}", out), out
    assert re.search(r"late decisions accepted: 0 of 5", out), out


@pytest.mark.skipif(shutil.which("wrk") is None, reason="needs wrk (apt-get install wrk)")
def test_bench_longpoll_measures_waiting_decisions_and_mail():
    # It exits 1 when a figure misses its goal, which a busy machine may make it do: the
    # figures are not judged here, the rest is.
    out = run("bench_longpoll.py", "--waiters", "20", "--window", "1", "--mail-seconds", "2",
              codes=(0, 1))
    assert re.search(rf"while waiting: {NUMBER} queries/s", out), out
    assert re.search(rf"decision commit → response: p50 {NUMBER} ms, p95 {NUMBER} ms", out), out
    delivered = re.search(r"delivered (\d+)/(\d+)", out)
    assert delivered and delivered[1] == delivered[2] and int(delivered[2]) > 0, out
    assert re.search(r"^  goals \(.*\): (met|NOT met)$", out, re.MULTILINE), out
