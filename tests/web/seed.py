"""Fill a store with builds and jobs as a busy bot would leave them (tests, benchmark).

Rows go in with bulk inserts (thousands per statement), with states, transitions, timings,
core-hours and artifacts in realistic proportions; a seeded random makes it repeatable.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert, select

from layerbot.store import repos
from layerbot.store.db import Store
from layerbot.store.models import Artifact, Build, Instance, Job, JobTransition

TARGETS = [("zen2", "x86_64/amd/zen2"), ("zen3", "x86_64/amd/zen3"),
           ("icelake", "x86_64/intel/icelake"), ("a64fx", "aarch64/a64fx")]
REPO_TARGETS = ["eessi-2023.06", "eessi-2025.06"]
#: Terminal states first, by how often a busy bot sees them; the last few are active.
STATE_WEIGHTS = [("succeeded", 80), ("failed", 9), ("cancelled", 3), ("timed_out", 1),
                 ("lost", 1), ("running", 3), ("submitted", 2), ("queued", 1)]


@dataclass(frozen=True)
class Seeded:
    builds: int
    jobs: int
    prs: int


def sha(n: int) -> str:
    return hashlib.sha1(str(n).encode()).hexdigest()  # noqa: S324 (not security)


def seed(store: Store, *, now: datetime, prs: int = 500, jobs: int = 10_000,
         repo: str = "layerbot-test/software-layer", instance: str = "test-a",
         installation_id: int | None = 1, weeks: int = 12, rng_seed: int = 6,
         private: bool = False) -> Seeded:
    rng = random.Random(rng_seed)
    states = [s for s, _ in STATE_WEIGHTS]
    weights = [w for _, w in STATE_WEIGHTS]
    per_pr = max(1, jobs // prs)
    builds: list[dict[str, Any]] = []
    job_rows: list[dict[str, Any]] = []
    with store.read() as s:
        first_build = (s.scalar(select(Build.id).order_by(Build.id.desc()).limit(1)) or 0) + 1
        first_job = (s.scalar(select(Job.id).order_by(Job.id.desc()).limit(1)) or 0) + 1
    build_id, job_id = first_build, first_job
    for number in range(1, prs + 1):
        count = per_pr if number <= prs - 1 else jobs - len(job_rows)
        opened = now - timedelta(seconds=rng.uniform(0, weeks * 7 * 86400))
        made = 0
        while made < count:
            head = sha(number * 1000 + build_id)
            created = opened + timedelta(minutes=rng.uniform(0, 600))
            builds.append(dict(id=build_id, instance=instance, repo=repo, pr=number,
                               installation_id=installation_id, head_sha=head,
                               base_ref="main", clone_url=f"https://github.com/{repo}.git",
                               command="bot: build", requested_by="alice", created_at=created,
                               report_key=f"build:{build_id}"))
            for node, cpu in TARGETS:
                for rt in REPO_TARGETS:
                    if made >= count:
                        break
                    job_rows.append(_job(rng, job_id, build_id, number, repo, instance, node,
                                         cpu, rt, head, created, now,
                                         rng.choices(states, weights)[0]))
                    job_id += 1
                    made += 1
            build_id += 1
    transitions, artifacts = _history(job_rows)
    with store.transaction() as s:
        s.execute(insert(Build), builds)
        s.execute(insert(Job), job_rows)
        s.execute(insert(JobTransition), transitions)
        s.execute(insert(Artifact), artifacts)
        # The bot learns a repository's visibility from its events: seed what they said.
        repos.record(s, repo, private, installation_id, now)
        if s.get(Instance, instance) is None:
            s.add(Instance(name=instance, version="0.1.0", backend="local", started_at=now,
                           heartbeat_at=now, paused=False,
                           resources={"backend": "local", "partitions": [{
                               "name": "local", "state": "up", "nodes_idle": 1,
                               "nodes_allocated": 0, "nodes_down": 0, "cpus_total": 8,
                               "cpus_idle": 8, "features": [], "default": True,
                               "max_time": None}], "updated_at": now.isoformat(),
                               "error": None}))
    return Seeded(len(builds), len(job_rows), prs)


def _job(rng: random.Random, job_id: int, build_id: int, pr: int, repo: str, instance: str,
         node: str, cpu: str, rt: str, head: str, created: datetime, now: datetime,
         state: str) -> dict[str, Any]:
    # Active jobs are recent; finished ones ran for minutes to hours on 4-32 cores.
    if state in ("queued", "submitted", "running"):
        created = now - timedelta(minutes=rng.uniform(1, 120))
    cpus = rng.choice([4, 8, 16, 32])
    elapsed = rng.lognormvariate(7.5, 0.6)  # median about half an hour
    submitted = created + timedelta(seconds=rng.uniform(1, 30))
    started = submitted + timedelta(seconds=rng.uniform(1, 600))
    ended = started + timedelta(seconds=elapsed)
    terminal = state not in ("queued", "submitted", "running")
    if terminal and ended > now:
        ended = now - timedelta(seconds=rng.uniform(0, 3600))
    # Cancelled jobs have accounting only if they ran for a while.
    accounted = (terminal and state != "cancelled") or (state == "cancelled" and rng.random() < .5)
    return dict(
        id=job_id, build_id=build_id, instance=instance, repo=repo, pr=pr,
        target=cpu, node_type=node, repo_target=rt, head_sha=head, base_ref="main",
        base_sha=sha(job_id), state=state,
        reason={"failed": "the job script exited with code 1", "timed_out": "hit its time limit",
                "lost": "the batch system no longer knows this job",
                "cancelled": "cancelled by @alice"}.get(state),
        facts={"cpu_target": cpu, "accelerator": None, "build_on": cpu, "exportvariables": {}},
        backend="local", backend_id=None if state == "queued" else f"local-{job_id}",
        job_dir=None, created_at=created, updated_at=ended if terminal else started,
        submitted_at=None if state == "queued" else submitted,
        started_at=started if state not in ("queued", "submitted") else None,
        ended_at=ended if terminal else None,
        exit_code=(0 if state == "succeeded" else 1) if terminal else None,
        result={"status": "success" if state == "succeeded" else "failure",
                "summary": f"built {cpu}"} if terminal else None,
        elapsed_seconds=round(elapsed, 1) if accounted else None, cpus=cpus,
        core_hours=round(elapsed * cpus / 3600, 6) if accounted else None,
        redo_of=None, archived=False, cancel_requested=False)


def _history(jobs: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    transitions: list[dict[str, Any]] = []
    artifacts: list[dict[str, Any]] = []
    for j in jobs:
        steps = [(None, "queued", j["created_at"])]
        if j["submitted_at"]:
            steps.append(("queued", "submitted", j["submitted_at"]))
        if j["started_at"]:
            steps.append(("submitted", "running", j["started_at"]))
        if j["ended_at"]:
            steps.append((steps[-1][1], j["state"], j["ended_at"]))
        transitions += [dict(job_id=j["id"], from_state=a, to_state=b, at=at, reason=None)
                        for a, b, at in steps]
        if j["state"] == "succeeded":
            name = f"eessi-{j['repo_target']}-{j['target'].replace('/', '-')}-{j['id']}.tar.gz"
            artifacts.append(dict(job_id=j["id"], name=name, path=f"/jobs/{j['id']}/{name}",
                                  size=1_000_000 + j["id"], sha256=sha(j["id"]).ljust(64, "0")))
    return transitions, artifacts
