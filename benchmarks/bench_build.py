"""Issue 3 figures, measured on a real `layerbot serve` (local backend, fake GitHub).

1. From a `bot: build` comment selecting 4 targets to all 4 jobs submitted, on an origin with
   5,000 commits and a warm mirror: median; beside the anchor's way (a fresh full clone plus
   `git apply` of the PR diff, for the same 4 jobs) measured in the same run.
2. GitHub API requests for one `bot: build` of 4 targets, from the command to all finished.
3. A reconciler cycle with 1,000 active jobs on the local backend: backend calls and CPU ms.

    uv run python benchmarks/bench_build.py [--runs 7] [--job-seconds 15]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from tests.support.botproc import SECRET, BotProcess, free_port, write_config
from tests.support.fakegithub import FakeGitHub, generate_app_key
from tests.support.webhooks import (
    DEFAULT_APP_ID,
    DEFAULT_INSTALLATION_ID,
    DEFAULT_REPO,
    delivery_headers,
    encode,
    issue_comment_created,
)

import bench_workspace as ws
from layerbot import clock
from layerbot.backends.base import SubmitRequest
from layerbot.backends.local import LocalBackend
from layerbot.build.workspace import Mirrors
from layerbot.config import LocalBackendConfig, load
from layerbot.core.jobs import JobState
from layerbot.jobs.planner import BuildRequest, PlannedTarget, record_build
from layerbot.operations import leases
from layerbot.operations.agent_ledger import builtin_agent
from layerbot.store import jobs as jobstore
from layerbot.store.db import Store
from layerbot.store.models import Job

OWNER, NAME = DEFAULT_REPO.split("/")
NODE_TYPES = [{"name": "zen2", "cpu_target": "x86_64/amd/zen2"},
              {"name": "zen3", "cpu_target": "x86_64/amd/zen3"}]
REPO_TARGETS = [{"id": "r2023"}, {"id": "r2025"}]


def site_script(directory: Path, seconds: float) -> Path:
    script = directory / "site-build.sh"
    script.write_text("#!/bin/sh\n"
                      f"sleep {seconds}\n"
                      'echo \'{"status": "success", "summary": "ok"}\' > result.json\n')
    script.chmod(0o755)
    return script


def start_bot(tmp: Path, fake: FakeGitHub, private: str, job_seconds: float,
              extra: dict[str, object] | None = None) -> BotProcess:
    port = free_port()
    config = write_config(tmp, api_url=fake.url, app_id=DEFAULT_APP_ID, private_key_pem=private,
                          port=port, extra={
                              "build": {"clone_url": str(ws.ORIGIN),
                                        "job_script": str(site_script(tmp, job_seconds))},
                              "backend": {"poll_seconds": 1.0,
                                          "local": {"max_concurrent": 8}},
                              "logging": {"level": "warning"},
                              "node_types": NODE_TYPES, "repo_targets": REPO_TARGETS,
                              **(extra or {})})
    return BotProcess(config, port).start()


def comment(bot: BotProcess, fake: FakeGitHub, number: int, text: str) -> None:
    comment_id = fake.add_comment(OWNER, NAME, number, text, login="alice")
    body = encode(issue_comment_created(text, "alice", pr_number=number, comment_id=comment_id))
    response = httpx.post(bot.url + "/webhook", content=body,
                          headers=delivery_headers("issue_comment", body, SECRET))
    assert response.status_code == 202, response.text


def submitted(db: Path, number: int) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute(
            "SELECT count(*) FROM jobs WHERE pr = ? AND backend_id IS NOT NULL",
            (number,)).fetchone()[0])


def command_to_submitted(runs: int, job_seconds: float) -> tuple[list[float], list[float]]:
    head = ws.git(ws.ORIGIN, "rev-parse", f"refs/pull/{ws.PR}/head")
    private, _ = generate_app_key()
    warm: list[float] = []
    anchor: list[float] = []
    with tempfile.TemporaryDirectory() as tmp, FakeGitHub(DEFAULT_APP_ID, private) as fake:
        fake.add_installation(DEFAULT_INSTALLATION_ID, OWNER)
        fake.set_permission(OWNER, NAME, "alice", "write")
        bot = start_bot(Path(tmp), fake, private, job_seconds)
        db = bot.config.parent / "layerbot.db"
        try:
            for run in range(runs + 1):  # run 0 makes the mirror (a cold start); not counted
                number = 100 + run
                fake.add_pull(OWNER, NAME, number, head_sha=head)
                ws.git(ws.ORIGIN, "update-ref", f"refs/pull/{number}/head", head)
                started = time.perf_counter()
                comment(bot, fake, number, "bot: build")
                while submitted(db, number) < 4:
                    time.sleep(0.002)
                if run:
                    warm.append(time.perf_counter() - started)
                    anchor.append(anchor_way(head))
        finally:
            bot.stop()
    return warm, anchor


def anchor_way(head: str) -> float:
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
        dests = [Path(tmp) / f"job{i}" for i in range(4)]
        started = time.perf_counter()
        ws.anchor_jobs(head, dests)
        return time.perf_counter() - started


def requests_for_one_build(job_seconds: float, chatlevel: str) -> tuple[int, dict[str, int]]:
    head = ws.git(ws.ORIGIN, "rev-parse", f"refs/pull/{ws.PR}/head")
    private, _ = generate_app_key()
    with tempfile.TemporaryDirectory() as tmp, FakeGitHub(DEFAULT_APP_ID, private) as fake:
        fake.add_installation(DEFAULT_INSTALLATION_ID, OWNER)
        fake.set_permission(OWNER, NAME, "alice", "write")
        fake.add_pull(OWNER, NAME, ws.PR, head_sha=head)
        bot = start_bot(Path(tmp), fake, private, job_seconds, {
            "reporting": {"chatlevel": chatlevel, "min_edit_interval_seconds": 10}})
        try:
            before = len(fake.requests)
            comment(bot, fake, ws.PR, "bot: build")
            fake.wait_for(lambda: len(fake.check_runs(OWNER, NAME)) == 4 and all(
                r.conclusion for r in fake.check_runs(OWNER, NAME)), timeout=300)
            time.sleep(12)  # let any last edit go out
            calls = fake.requests[before:]
        finally:
            bot.stop()
    by_op = collections.Counter(r.operation_id or r.path for r in calls)
    return len(calls), dict(by_op)


async def reconcile_1000() -> tuple[int, float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        config = load(None, overrides={"instance": {"name": "bench", "data_dir": str(root)}})
        store = Store(config.store_url)
        backend = LocalBackend(LocalBackendConfig(max_concurrent=2), root / "local")
        script = site_script(root, 120)
        target = PlannedTarget(config.node_types[0], config.repo_targets[0],
                               config.node_types[0].cpu_target, None, "x")
        request = BuildRequest(repo="o/r", pr=1, installation_id=None, head_sha="a" * 40,
                               base_ref="main", clone_url="-", command="bench",
                               requested_by="bench")
        with store.transaction() as s:
            _, jobs = record_build(s, config, request, [target] * 1000, clock.now())
            ids = [j.id for j in jobs]
        for job_id in ids:
            job_dir = root / "jobs" / str(job_id)
            job_dir.mkdir(parents=True)
            backend_id = await backend.submit(SubmitRequest(
                job_id=job_id, instance="bench", job_dir=job_dir, script=script,
                env={"PATH": "/usr/bin:/bin"}, time_limit_seconds=600))
            with store.transaction() as s:
                job = s.get(Job, job_id)
                assert job is not None
                leases.lease(job, config.agent_name, clock.now(), config)
                jobstore.transition(s, job, JobState.SUBMITTED, clock.now(),
                                    backend_id=backend_id, job_dir=str(job_dir))
        reconciler = builtin_agent(config, store, backend, Mirrors(root / "m")).reconciler
        await reconciler.cycle()  # first cycle starts the 2 runnable jobs
        calls_before = backend.calls
        cpu, wall = time.process_time(), time.perf_counter()
        cycles = 5
        for _ in range(cycles):
            await reconciler.cycle()
        cpu_ms = (time.process_time() - cpu) / cycles * 1000
        wall_ms = (time.perf_counter() - wall) / cycles * 1000
        calls = (backend.calls - calls_before) // cycles
        for job_id in ids:  # clean up the running ones
            await backend.cancel(str(root / "jobs" / str(job_id)))
        return calls, cpu_ms, wall_ms


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--job-seconds", type=float, default=15)
    parser.add_argument("--skip", nargs="*", default=[],
                        choices=["submit", "requests", "reconcile"])
    args = parser.parse_args()
    ws.ensure_origin()
    if "submit" not in args.skip:
        warm, anchor = command_to_submitted(args.runs, args.job_seconds)
        print(f"command_to_4_submitted_warm_median_s={statistics.median(warm):.3f}")
        print(f"anchor_clone_and_apply_4_jobs_median_s={statistics.median(anchor):.3f}")
        print(f"speedup={statistics.median(anchor) / statistics.median(warm):.1f}x")
    if "requests" not in args.skip:
        for level in ("normal", "quiet"):
            total, by_op = requests_for_one_build(args.job_seconds, level)
            print(f"github_requests_one_build_4_targets_{level}={total} {by_op}")
    if "reconcile" not in args.skip:
        calls, cpu_ms, wall_ms = asyncio.run(reconcile_1000())
        print(f"reconcile_1000_active_backend_calls_per_cycle={calls}")
        print(f"reconcile_1000_active_cpu_ms_per_cycle={cpu_ms:.1f}")
        print(f"reconcile_1000_active_wall_ms_per_cycle={wall_ms:.1f}")


if __name__ == "__main__":
    main()
