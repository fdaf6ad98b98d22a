"""Job directories of closed PRs are archived after the retention, once."""

from __future__ import annotations

import asyncio
import tarfile
from datetime import timedelta
from pathlib import Path

from layerbot import clock
from layerbot.build.workspace import Mirrors
from layerbot.config import load
from layerbot.core.jobs import JobState
from layerbot.jobs.archiver import Archiver
from layerbot.jobs.planner import BuildRequest, PlannedTarget, record_build
from layerbot.store import jobs as jobstore
from layerbot.store.db import Store
from layerbot.store.models import Build, Job


def make_job(store: Store, config, job_dir: Path, closed_days_ago: float | None,
             state: JobState, agent: str | None = None) -> int:
    """A job built by ``agent`` (default: this machine's built-in agent)."""
    node, repo = config.node_types[0], config.repo_targets[0]
    request = BuildRequest(repo="o/r", pr=1, installation_id=None, head_sha="a" * 40,
                           base_ref="main", clone_url="-", command="bot: build",
                           requested_by="alice")
    with store.transaction() as s:
        build, (job,) = record_build(s, config, request,
                                     [PlannedTarget(node, repo, node.cpu_target, None, "x")],
                                     clock.now())
        if closed_days_ago is not None:
            build.closed_at = clock.now() - timedelta(days=closed_days_ago)
        job.job_dir = str(job_dir)
        job.agent = agent or config.agent_name
        if state is not JobState.QUEUED:
            jobstore.transition(s, job, state, clock.now())
        return job.id


def test_finished_jobs_of_prs_closed_past_the_retention_are_archived(tmp_path: Path) -> None:
    config = load(None, overrides={"instance": {"data_dir": str(tmp_path)},
                                   "build": {"archive_after_days": 2}})
    store = Store(config.store_url)
    dirs = {name: tmp_path / name
            for name in ("old", "recent", "open", "running", "elsewhere")}
    for d in dirs.values():
        d.mkdir()
        (d / "layerbot-job.log").write_text("built\n")
    old = make_job(store, config, dirs["old"], 3, JobState.FAILED)
    make_job(store, config, dirs["recent"], 1, JobState.FAILED)
    make_job(store, config, dirs["open"], None, JobState.FAILED)
    make_job(store, config, dirs["running"], 3, JobState.SUBMITTED)
    # Built on a cluster's agent: its directory is on that cluster, not this machine's.
    make_job(store, config, dirs["elsewhere"], 3, JobState.FAILED, agent="cluster-b")
    archiver = Archiver(config, store, Mirrors(tmp_path / "mirrors"))
    assert asyncio.run(archiver.archive_due()) == 1
    assert not dirs["old"].exists()
    assert all(dirs[n].exists() for n in ("recent", "open", "running", "elsewhere"))
    (archive,) = archiver.archive_root.rglob("*.tar.gz")
    with tarfile.open(archive) as tar:
        assert any(n.endswith("layerbot-job.log") for n in tar.getnames())
    with store.read() as s:
        assert s.get(Job, old).archived
        assert s.query(Build).count() == 5
    assert asyncio.run(archiver.archive_due()) == 0  # once
