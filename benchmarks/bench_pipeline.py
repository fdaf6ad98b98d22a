"""Issue 12 figures: a pipeline of 8 steps with a critical path of 3, each step sleeping S
seconds, built by the same agent code as `layerbot run` and `serve` (plan job, steps,
reconciler), on the local executor with 4 slots and on Slurm (partition `shared` of
scripts/slurm.sh: 4 jobs per core).

    level 1:  s1   s2   s3
    level 2:  s4   s5   s6        (s4 needs s1, s5 needs s2, s6 needs s3)
    level 3:    s7      s8        (s7 needs s4 and s5, s8 needs s6)

1. Wall time from the build's request to its last step's end, divided by 3·S (target at
   most 1.2); the plan job is included.
2. The speed-up over the same work as one job (a build script running the 8 sleeps one
   after the other), measured in the same run (target at least 2.4×).
3. Scheduler calls per reconcile cycle (the backend's own count, submissions excluded;
   target at most 2).
4. From a step's end to the start of a step that needs it (as the backend recorded both).

    uv run python benchmarks/bench_pipeline.py [--seconds 10] [--backend local|slurm|both]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from layerbot import log
from layerbot.app.run import RunOptions, plan, rows
from layerbot.backends import make_backend
from layerbot.build.workspace import Mirrors
from layerbot.config import Config, load
from layerbot.operations.agent_ledger import builtin_agent
from layerbot.store.db import Store
from layerbot.store.models import Job

GRAPH = {"s1": [], "s2": [], "s3": [], "s4": ["s1"], "s5": ["s2"], "s6": ["s3"],
         "s7": ["s4", "s5"], "s8": ["s6"]}
SLURM_ENV = Path("/var/tmp/layerbot-slurm/env")


def repository(path: Path, seconds: float, pipeline: bool) -> Path:
    """A git repository whose target is the 8 steps: as a plan, or as one serial job."""
    (path / "bot").mkdir(parents=True)
    if pipeline:
        steps = [{"id": s, "command": f"sleep {seconds}", "needs": n} for s, n in GRAPH.items()]
        plan_json = json.dumps({"version": 1, "steps": steps})
        (path / "bot" / "plan.sh").write_text(
            f"#!/bin/bash\ncat > \"$LAYERBOT_PLAN_FILE\" <<'PLAN'\n{plan_json}\nPLAN\n")
    (path / "bot" / "build.sh").write_text(
        "#!/bin/bash\n" + "".join(f"sleep {seconds}\n" for _ in GRAPH)
        + "echo '{\"status\": \"success\", \"summary\": \"serial\"}' > result.json\n")
    for script in (path / "bot").iterdir():
        script.chmod(0o755)
    git = ["git", "-c", "user.name=b", "-c", "user.email=b@example.org"]
    subprocess.run([*git, "init", "-q", "-b", "main"], cwd=path, check=True)
    subprocess.run([*git, "add", "-A"], cwd=path, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "bench"], cwd=path, check=True)
    return path


def config(tmp: Path, backend: str, poll: float) -> Config:
    settings: dict[str, object] = {
        "instance": {"name": f"bench-{backend}", "data_dir": str(tmp / "data")},
        "backend": {"kind": backend, "poll_seconds": poll, "local": {"max_concurrent": 4}},
        "build": {"time_limit_minutes": 30}}
    if backend == "slurm":
        settings["node_types"] = [{"name": "generic", "cpu_target": "x86_64/generic",
                                   "options": {"partition": "shared", "mem": "100M"}}]
    return load(None, overrides=settings)


@dataclass
class Figures:
    wall: float
    #: (job, submitted, started, ended) in seconds from the request.
    timeline: list[tuple[int, float, float, float]]
    calls_per_cycle: list[int]
    gaps: list[float]
    states: list[str]


async def build(cfg: Config, repo: Path) -> Figures:
    store = Store(cfg.store_url)
    mirrors = Mirrors(cfg.mirrors_dir, attempts=1)
    backend = make_backend(cfg)
    started = time.monotonic()
    t0 = time.time()
    build_id = await plan(cfg, store, mirrors, RunOptions(repo=str(repo)))
    agent = builtin_agent(cfg, store, backend, mirrors)
    calls: list[int] = []
    while True:
        await agent.submit_ready()
        before = backend.calls
        await agent.reconciler.cycle()
        calls.append(backend.calls - before)
        _, job_rows = rows(store, build_id)
        if job_rows and all(r.state.terminal for r in job_rows):
            break
        await asyncio.sleep(cfg.backend.poll_seconds)
    wall = time.monotonic() - started
    # The wall time ends with the last step's end as the backend recorded it, not with
    # the poll that saw it.
    ends = [r.ended_at for r in job_rows if r.ended_at]
    finished = max(ends).timestamp() if ends else time.time()
    wall -= max(0.0, time.time() - finished)
    store.close()
    def at(moment: object) -> float:
        return round(moment.timestamp() - t0, 2) if moment else -1.0  # type: ignore[attr-defined]

    with Store(cfg.store_url).read() as s:
        timeline = [(j.id, at(j.submitted_at), at(j.started_at), at(j.ended_at))
                    for j in s.query(Job).filter(Job.build_id == build_id).order_by(Job.id)]
    return Figures(wall, timeline, calls, gaps(cfg, build_id),
                   [r.state.value + (f" ({r.reason})" if r.reason else "") for r in job_rows])


def gaps(cfg: Config, build_id: int) -> list[float]:
    """Seconds from each need's end to its dependent's start."""
    store = Store(cfg.store_url)
    with store.read() as s:
        jobs = {j.id: j for j in s.query(Job).filter(Job.build_id == build_id)}
    out = []
    for job in jobs.values():
        needed = [jobs[int(i)] for i in (job.needs or {}).values() if int(i) in jobs]
        ends = [n.ended_at for n in needed if n.ended_at]
        if job.started_at and ends:
            out.append((job.started_at - max(ends)).total_seconds())
    store.close()
    return out


def measure(backend: str, seconds: float, poll: float, tmp: Path, timeline: bool) -> None:
    pipeline = asyncio.run(build(config(tmp / "p", backend, poll),
                                 repository(tmp / "repo-p", seconds, True)))
    single = asyncio.run(build(config(tmp / "s", backend, poll),
                               repository(tmp / "repo-s", seconds, False)))
    ok = all(s == "succeeded" for s in pipeline.states + single.states)
    print(f"{backend}_steps_succeeded={ok} ({len(pipeline.states)} jobs: plan + steps)")
    if not ok:
        raise SystemExit(f"pipeline: {pipeline.states}; one job: {single.states}")
    print(f"{backend}_pipeline_wall_s={pipeline.wall:.2f}")
    print(f"{backend}_wall_over_3S={pipeline.wall / (3 * seconds):.3f}  (target <= 1.2)")
    print(f"{backend}_one_job_wall_s={single.wall:.2f}")
    print(f"{backend}_speedup_over_one_job={single.wall / pipeline.wall:.2f}x  (target >= 2.4)")
    print(f"{backend}_scheduler_calls_per_cycle_max={max(pipeline.calls_per_cycle)} "
          f"mean={statistics.mean(pipeline.calls_per_cycle):.2f} over "
          f"{len(pipeline.calls_per_cycle)} cycles  (target <= 2)")
    if timeline:
        print(f"# {backend} pipeline (job, submitted, started, ended; s from the request): "
              f"{pipeline.timeline}")
    g = sorted(pipeline.gaps)
    print(f"{backend}_need_end_to_dependent_start_s median={statistics.median(g):.2f} "
          f"max={g[-1]:.2f} over {len(g)} edges")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0, help="S: each step's sleep")
    parser.add_argument("--backend", choices=["local", "slurm", "both"], default="both")
    parser.add_argument("--poll", type=float, default=0.5, help="backend.poll_seconds")
    parser.add_argument("--timeline", action="store_true", help="print each job's times")
    args = parser.parse_args()
    if args.backend in ("slurm", "both") and "SLURM_CONF" not in os.environ:
        for line in SLURM_ENV.read_text().splitlines():
            if line.startswith("export ") and "=" in line:
                key, value = line[len("export "):].split("=", 1)
                os.environ[key] = value.strip("'\"")
    log.configure(level="warning")
    print(f"# S = {args.seconds} s, poll {args.poll} s, {os.cpu_count()} CPUs, load "
          f"{os.getloadavg()[0]:.2f}")
    for backend in (["local", "slurm"] if args.backend == "both" else [args.backend]):
        with tempfile.TemporaryDirectory(prefix=f"bench-pipeline-{backend}-") as tmp:
            os.chmod(tmp, 0o755)  # noqa: S103 (the job user reads the repositories)
            measure(backend, args.seconds, args.poll, Path(tmp), args.timeline)


if __name__ == "__main__":
    main()
