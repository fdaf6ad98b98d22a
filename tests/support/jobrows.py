"""Jobs written straight into a store: lists to read for the job-list tests and benchmark.

The rows vary in every way a summary shows (states, targets, PRs or none, finished or not,
times with microseconds, cancel requests), without going through planning or a backend.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from layerbot.core.jobs import JobState
from layerbot.store.db import Store
from layerbot.store.models import Build, Job

START = datetime(2026, 11, 2, 8, 30, 15, 123456, tzinfo=UTC)
TARGETS = ("x86_64/amd/zen2", "x86_64/amd/zen3", "x86_64/intel/sapphirerapids",
           "aarch64/neoverse_v1", "x86_64/amd/zen4/nvidia/cc90")
STATES = tuple(JobState)


def seed_jobs(store: Store, count: int, *, repo: str = "EESSI/software-layer",
              instance: str = "bench") -> list[int]:
    """``count`` jobs in builds of up to five, one build per PR; returns the job ids."""
    ids: list[int] = []
    with store.transaction() as s:
        build: Build | None = None
        for i in range(count):
            at = START + timedelta(minutes=7 * i)
            if i % len(TARGETS) == 0:
                build = _build(repo, instance, pr=None if i % 35 == 0 else 1 + i // 5, at=at)
                s.add(build)
                s.flush()
            assert build is not None
            job = _job(build, i, at)
            s.add(job)
            s.flush()
            ids.append(job.id)
    return ids


def _build(repo: str, instance: str, *, pr: int | None, at: datetime) -> Build:
    return Build(instance=instance, repo=repo, pr=pr, installation_id=1, head_sha="c" * 40,
                 base_ref="main", clone_url="https://example.invalid/x.git",
                 command="bot: build", requested_by="alice", created_at=at,
                 report_key=f"reply:{pr}:{at.timestamp()}")


def _job(build: Build, i: int, at: datetime) -> Job:
    state = STATES[i % len(STATES)]
    finished = state.terminal
    return Job(build_id=build.id, instance=build.instance, repo=build.repo, pr=build.pr,
               target=TARGETS[i % len(TARGETS)], node_type=f"node{i % 3}",
               repo_target="eessi-2025.06", head_sha=build.head_sha, base_ref="main",
               facts={"i": i}, state=state.value,
               reason=f"it {state.value}" if finished else None, backend="local",
               backend_id=f"local-{i}" if state is not JobState.QUEUED else None,
               created_at=at, updated_at=at + timedelta(seconds=i % 60, microseconds=i),
               submitted_at=at + timedelta(seconds=5) if state is not JobState.QUEUED else None,
               started_at=at + timedelta(seconds=30) if finished else None,
               ended_at=at + timedelta(minutes=5) if finished else None,
               exit_code=0 if state is JobState.SUCCEEDED else (1 if finished else None),
               elapsed_seconds=270.5 if finished else None, cpus=8 if finished else None,
               core_hours=round(0.601 * (i % 4), 3) if finished else None,
               redo_of=i - 1 if i % 11 == 0 and i else None,
               cancel_requested=i % 13 == 0)
