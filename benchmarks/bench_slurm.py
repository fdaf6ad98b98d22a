"""Benchmark: the Slurm backend's scheduler load and submission latency (issue 4).

Run: ``uv run python benchmarks/bench_slurm.py [--jobs 200] [--cycles 20] [--runs 7]``
against the cluster of ``scripts/slurm.sh start``. Prints plain ``key=value`` lines.

(a) Monitoring. ``--jobs`` held jobs, tagged as layerbot's (one bench instance), are
    submitted and recorded as submitted in a real store (SQLite); then ``Reconciler.cycle()``
    runs ``--cycles`` times. Measured: scheduler calls per cycle (``backend.calls`` before
    and after; target at most 2) and each cycle's wall time. Then 10 of the jobs are
    cancelled and one more cycle measured (the case that needs sacct). All jobs are
    cancelled at the end.
(b) Submission. ``--runs`` times: a build of 4 targets is recorded (what ``bot: build``
    selecting 4 targets writes in its transaction), and ``Submitter.submit_queued()`` is
    timed until it returns, i.e. until all 4 ``sbatch`` calls (and releases) are done:
    find by tag, worktree from a warm mirror, job files, sbatch, recording, release. The
    webhook and handler path before it is not included (see bench_webhook.py for that).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from layerbot.jobs.reconciler import Reconciler

from layerbot import clock, log
from layerbot.backends.base import SubmitRequest
from layerbot.backends.slurm import SlurmBackend
from layerbot.build.workspace import Mirrors
from layerbot.config import Config, NodeType
from layerbot.core.jobs import JobState
from layerbot.jobs.planner import BuildRequest, PlannedTarget, record_build
from layerbot.operations.agent_ledger import builtin_agent
from layerbot.store import jobs as jobstore
from layerbot.store.db import Store
from layerbot.store.models import Job

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "software-layer"
NODE_TYPES = [
    NodeType(name="zen2", cpu_target="x86_64/amd/zen2",
             options={"partition": "debug", "constraint": "zen2"}),
    NodeType(name="generic", cpu_target="x86_64/generic", options={"partition": "build"}),
    NodeType(name="haswell", cpu_target="x86_64/intel/haswell", options={"partition": "build"}),
    NodeType(name="icelake", cpu_target="x86_64/intel/icelake", options={"partition": "debug"}),
]
GIT_ENV = {"GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@example.org",
           "GIT_COMMITTER_NAME": "b", "GIT_COMMITTER_EMAIL": "b@example.org"}


def config(root: Path, instance: str) -> Config:
    return Config.model_validate({
        "instance": {"name": instance, "data_dir": str(root / "data")},
        "store": {"url": f"sqlite:///{root / 'layerbot.db'}"},
        "backend": {"kind": "slurm", "slurm": {"handover": "hold_release"}},
        "build": {"time_limit_minutes": 10, "job_script": "/bin/true"},
        "node_types": [n.model_dump() for n in NODE_TYPES],
        "repo_targets": [{"id": "eessi-2023.06"}],
    })


def scancel_tagged(instance: str) -> None:
    """Cancel every job of this bench instance (by name; other jobs are not touched)."""
    names = subprocess.run(["squeue", "-h", "-t", "PD,R", "-o", "%i %j"], capture_output=True,
                           text=True, check=False).stdout.split("\n")
    ids = [line.split()[0] for line in names if f"layerbot-{instance}-" in line]
    for start in range(0, len(ids), 500):
        subprocess.run(["scancel", *ids[start:start + 500]], check=False)


def record(store: Store, cfg: Config, count: int, clone_url: str, head: str) -> list[int]:
    request = BuildRequest(repo="bench/stack", pr=1, installation_id=None, head_sha=head,
                           base_ref="main", clone_url=clone_url, command="bot: build",
                           requested_by="bench")
    repo = cfg.repo_targets[0]
    targets = [PlannedTarget(n, repo, n.cpu_target, None, n.cpu_target)
               for n in (cfg.node_types[i % len(cfg.node_types)] for i in range(count))]
    with store.transaction() as s:
        _, jobs = record_build(s, cfg, request, targets, clock.now())
        return [j.id for j in jobs]


# --- (a) monitoring ------------------------------------------------------------------------


async def monitoring(root: Path, count: int, cycles: int) -> None:
    instance = f"bench-{uuid.uuid4().hex[:6]}"
    cfg = config(root / "a", instance)
    store = Store(cfg.store_url)
    backend = SlurmBackend(cfg.backend.slurm, cfg.node_types)
    ids = record(store, cfg, count, "unused", "0" * 40)
    try:
        t0 = time.perf_counter()
        backend_ids = await asyncio.gather(*(submit_held(backend, root, instance, i)
                                             for i in ids))
        print(f"submit_{count}_held_seconds={time.perf_counter() - t0:.2f}")
        with store.transaction() as s:
            for job_id, backend_id in zip(ids, backend_ids, strict=True):
                job = s.get(Job, job_id)
                assert job is not None
                jobstore.transition(s, job, JobState.SUBMITTED, clock.now(),
                                    backend_id=backend_id)
        reconciler = Reconciler(cfg, store, backend)
        calls, walls = [], []
        for _ in range(cycles):
            before = backend.calls
            t0 = time.perf_counter()
            await reconciler.cycle()
            walls.append(time.perf_counter() - t0)
            calls.append(backend.calls - before)
        out = (await asyncio.to_thread(subprocess.run, ["squeue", "--json"],
                                       capture_output=True)).stdout
        print(f"jobs_in_queue={count}")
        # squeue --json lists every job slurmctld knows, finished ones included (for
        # MinJobAge: an hour here), so the cycle's cost follows this, not just our jobs.
        print(f"slurmctld_jobs_known={len(json.loads(out)['jobs'])}")
        print(f"squeue_json_bytes={len(out)}")
        print(f"scheduler_calls_per_cycle_max={max(calls)}")
        print(f"scheduler_calls_per_cycle_median={statistics.median(calls):g}")
        print(f"cycle_wall_ms_median={statistics.median(walls) * 1000:.1f}")
        print(f"cycle_wall_ms_max={max(walls) * 1000:.1f}")
        # Some jobs end (cancelled from outside): the cycle now needs sacct too.
        await asyncio.to_thread(subprocess.run, ["scancel", *[b.split("/")[0]
                                                              for b in backend_ids[:10]]],
                                check=True)
        await asyncio.sleep(1)
        before = backend.calls
        t0 = time.perf_counter()
        changed = await reconciler.cycle()
        print(f"cycle_with_10_ended_calls={backend.calls - before}")
        print(f"cycle_with_10_ended_wall_ms={(time.perf_counter() - t0) * 1000:.1f}")
        print(f"cycle_with_10_ended_changed={changed}")
    finally:
        scancel_tagged(instance)
        store.close()


async def submit_held(backend: SlurmBackend, root: Path, instance: str, job_id: int) -> str:
    job_dir = root / "a" / "jobs" / str(job_id)
    job_dir.mkdir(parents=True)
    return await backend.submit(SubmitRequest(
        job_id=job_id, instance=instance, job_dir=job_dir, script=Path("/bin/true"),
        env={"PATH": "/usr/bin:/bin"}, time_limit_seconds=60,
        options={"partition": "debug"}, log_file=Path("/dev/null")))


# --- (b) submission ------------------------------------------------------------------------


def make_origin(root: Path) -> tuple[str, str]:
    origin = root / "origin"
    shutil.copytree(EXAMPLE, origin)
    env = {**os.environ, **GIT_ENV}

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(origin), *args], check=True, env=env,
                              capture_output=True, text=True).stdout.strip()

    git("init", "-q", "-b", "main")
    git("add", "-A")
    git("commit", "-q", "-m", "base")
    git("checkout", "-q", "-b", "pr")
    (origin / "NEWS").write_text("a change\n")
    git("add", "-A")
    git("commit", "-q", "-m", "the PR")
    head = git("rev-parse", "HEAD")
    git("update-ref", "refs/pull/1/head", head)
    git("checkout", "-q", "main")
    return str(origin), head


async def submission(root: Path, runs: int) -> None:
    instance = f"bench-{uuid.uuid4().hex[:6]}"
    cfg = config(root / "b", instance)
    store = Store(cfg.store_url)
    backend = SlurmBackend(cfg.backend.slurm, cfg.node_types)
    mirrors = Mirrors(cfg.mirrors_dir, attempts=1)
    url, head = make_origin(root)
    await mirrors.fetch(url, ["main", "refs/pull/1/head"])  # warm
    submitter = builtin_agent(cfg, store, backend, mirrors)
    walls, calls = [], []
    try:
        for _ in range(runs):
            ids = record(store, cfg, 4, url, head)
            before = backend.calls
            t0 = time.perf_counter()
            done = await submitter.submit_ready()
            walls.append(time.perf_counter() - t0)
            calls.append(backend.calls - before)
            with store.read() as s:
                states = {job.state for i in ids if (job := s.get(Job, i)) is not None}
            assert done == 4 and states == {JobState.SUBMITTED.value}, states
            await asyncio.to_thread(scancel_tagged, instance)
        print(f"submit_4_targets_runs={runs}")
        print(f"submit_4_targets_ms_median={statistics.median(walls) * 1000:.1f}")
        print(f"submit_4_targets_ms_min={min(walls) * 1000:.1f}")
        print(f"submit_4_targets_ms_max={max(walls) * 1000:.1f}")
        print(f"submit_4_targets_scheduler_calls={statistics.median(calls):g}")
    finally:
        scancel_tagged(instance)
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--cycles", type=int, default=20)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    log.configure("console", "warning")
    if subprocess.run(["scontrol", "ping"], capture_output=True, check=False).returncode:
        raise SystemExit("Slurm is not running: scripts/slurm.sh start")
    with tempfile.TemporaryDirectory(prefix="layerbot-bench-slurm-") as tmp:
        root = Path(tmp)
        asyncio.run(monitoring(root, args.jobs, args.cycles))
        asyncio.run(submission(root, args.runs))


if __name__ == "__main__":
    main()
