"""Benchmark: how long `layerbot` commands take to start, beside `python -c pass`.

Run: ``uv run python benchmarks/bench_cli.py [--runs N]``.

Each command runs N times as a fresh process through the installed entry point
(``.venv/bin/layerbot``, what a user types), after one unmeasured warm-up run that fills
the page cache. Reported per command: the median wall time and the median CPU time
(user + system of the child, from ``wait4``). On a machine shared with other work the wall
time is the figure a user sees but it moves with the load; the CPU time moves much less, so
both are printed, as is the load average. ``jobs`` lists the newest 50 of ``--jobs`` jobs
(default 500) of a local SQLite store made for the run, as a table (``jobs_table``) and as JSON
(``jobs_json``).

Python reads compiled bytecode of the installed packages where it finds it and compiles
every module it imports otherwise; with ``PYTHONDONTWRITEBYTECODE`` set (as on the
development machines) it never keeps what it compiled, and every start pays for it again.
``bytecode=`` says which case was measured: ``compiled`` (as after ``pip install`` or
``uv sync --compile-bytecode``) or ``source``.

Prints plain ``key=value`` lines.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.jobrows import seed_jobs

from layerbot.store.db import Store


@dataclass(frozen=True)
class Timing:
    wall_ms: float
    cpu_ms: float


def _once(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    start = time.perf_counter()
    child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    stderr = child.stderr.read() if child.stderr else b""
    if child.stderr:
        child.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {stderr.decode(errors='replace')[-500:]}")
    return wall * 1000, (usage.ru_utime + usage.ru_stime) * 1000


def measure(argv: list[str], runs: int, env: dict[str, str]) -> Timing:
    _once(argv, env)  # warm-up: page cache, .pyc files
    samples = [_once(argv, env) for _ in range(runs)]
    return Timing(statistics.median(s[0] for s in samples),
                  statistics.median(s[1] for s in samples))


def _bytecode() -> str:
    """Whether the installed packages come with their bytecode (typer stands for all)."""
    import importlib.util

    import typer

    cached = importlib.util.cache_from_source(typer.__file__)
    return "compiled" if Path(cached).exists() else "source"


def _store(directory: Path, jobs: int) -> Path:
    """A configuration whose SQLite store holds ``jobs`` jobs."""
    url = f"sqlite:///{directory / 'bot.db'}"
    store = Store(url)
    seed_jobs(store, jobs)
    store.close()
    config = directory / "layerbot.toml"
    config.write_text(f'[store]\nurl = "{url}"\n')
    return config


def _entry_point() -> str:
    beside = Path(sys.executable).with_name("layerbot")
    found = str(beside) if beside.exists() else shutil.which("layerbot")
    if not found:
        raise SystemExit("no `layerbot` entry point; run `uv sync` first")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--jobs", type=int, default=500, help="jobs in the store")
    args = parser.parse_args()
    layerbot = _entry_point()
    with tempfile.TemporaryDirectory(prefix="layerbot-bench-cli-") as tmp:
        config = _store(Path(tmp), args.jobs)
        env = {**os.environ, "LAYERBOT_CONFIG": str(config)}
        cases = {
            "python_pass": [sys.executable, "-c", "pass"],
            "help": [layerbot, "--help"],
            "version": [layerbot, "version"],
            "jobs_table": [layerbot, "jobs"],
            "jobs_json": [layerbot, "jobs", "--json"],
        }
        print(f"runs={args.runs} loadavg={os.getloadavg()[0]:.2f} cpus={os.cpu_count()} "
              f"bytecode={_bytecode()} jobs_in_store={args.jobs}")
        for name, argv in cases.items():
            t = measure(argv, args.runs, env)
            print(f"{name}_wall_ms={t.wall_ms:.0f} {name}_cpu_ms={t.cpu_ms:.0f}")


if __name__ == "__main__":
    main()
