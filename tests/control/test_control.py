"""The control center's operations on a real store (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from layerbot import control
from layerbot.backends.base import BackendUnavailable, Partition, Resources
from layerbot.config import Config
from layerbot.core.jobs import JobState
from layerbot.jobs.planner import BuildRequest, planned_from_job, record_build
from layerbot.operations import agents as agentops
from layerbot.operations import fleet
from layerbot.operations.agent_ledger import register_builtin
from layerbot.store import jobs as jobstore
from layerbot.store.db import Store
from layerbot.store.models import Artifact, Build, Deployment, Instance, Job, OutboxMessage
from tests.web.conftest import INSTANCE, REPO, make_config

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)  # a Wednesday of ISO week 48


@pytest.fixture
def env(store_url: str, tmp_path: Path) -> Any:
    cfg = make_config(tmp_path, store_url)
    store = Store(cfg.store_url)
    yield cfg, store
    store.close()


def build(store: Store, cfg: Config, pr: int, *, sha: str = "a" * 40, at: datetime = NOW,
          instance: str | None = None, targets: int = 2) -> list[int]:
    """Record a build of ``targets`` targets as `bot: build` would; returns the job ids."""
    request = BuildRequest(repo=REPO, pr=pr, installation_id=1, head_sha=sha, base_ref="main",
                           clone_url="https://example.invalid/x.git", command="bot: build",
                           requested_by="alice")
    with store.transaction() as s:
        probe = Job(node_type="zen2", repo_target="eessi-2023.06", facts={})
        planned = planned_from_job(cfg, probe)
        other = planned_from_job(cfg, Job(node_type="zen3", repo_target="eessi-2025.06",
                                          facts={}))
        assert planned and other
        b, jobs = record_build(s, cfg, request, [planned, other][:targets], at)
        if instance:
            b.instance = instance
            for j in jobs:
                j.instance = instance
        return [j.id for j in jobs]


def finish(store: Store, job_id: int, state: JobState, *, at: datetime = NOW,
           core_hours: float | None = None, elapsed: float | None = None,
           job_dir: str | None = None, agent: str | None = None) -> None:
    with store.transaction() as s:
        job = s.get(Job, job_id)
        assert job is not None
        if agent is not None:
            job.agent = agent
        jobstore.transition(s, job, JobState.SUBMITTED, at - timedelta(hours=1),
                            backend_id=f"local-{job_id}", job_dir=job_dir)
        jobstore.transition(s, job, JobState.RUNNING, at - timedelta(minutes=50))
        if state.terminal:
            jobstore.transition(s, job, state, at, core_hours=core_hours,
                                elapsed_seconds=elapsed, reason=f"it {state}")


def test_jobs_are_listed_newest_first_with_filters_and_paging(env: Any) -> None:
    cfg, store = env
    ids = build(store, cfg, 1) + build(store, cfg, 2) + build(store, cfg, 3)
    finish(store, ids[0], JobState.FAILED)
    page = control.list_jobs(store, limit=4)
    assert [j.id for j in page.jobs] == sorted(ids, reverse=True)[:4]
    assert page.total == 6
    assert [j.id for j in control.list_jobs(store, limit=4, offset=4).jobs] == ids[1::-1]
    assert [j.id for j in control.list_jobs(store, state=["failed"]).jobs] == [ids[0]]
    assert control.list_jobs(store, pr=2).total == 2
    assert {j.target for j in control.list_jobs(store, target="zen3").jobs} == {
        "x86_64/amd/zen3"}
    assert control.list_jobs(store, target="zen%").total == 0  # no LIKE wildcards
    assert control.list_jobs(store, instance="elsewhere").total == 0
    assert control.list_jobs(store, limit=10_000).limit == control.MAX_PAGE


def test_pull_requests_are_summarised_and_detailed(env: Any) -> None:
    cfg, store = env
    first = build(store, cfg, 7, at=NOW - timedelta(hours=2))
    build(store, cfg, 8, at=NOW - timedelta(hours=1))
    finish(store, first[0], JobState.SUCCEEDED, core_hours=1.5)
    finish(store, first[1], JobState.FAILED, core_hours=0.25)
    pulls = control.list_pulls(store)
    assert pulls.total == 2
    seven = next(p for p in pulls.pulls if p.pr == 7)
    assert seven.states == {"succeeded": 1, "failed": 1} and seven.core_hours == 1.75
    detail = control.pull_detail(store, REPO, 7)
    assert len(detail.builds) == 1 and [j.id for j in detail.builds[0].jobs] == first
    with pytest.raises(control.ControlError) as missing:
        control.pull_detail(store, REPO, 99)
    assert missing.value.status == 404


def test_job_detail_has_history_log_tail_artifacts_and_deployments(env: Any,
                                                                    tmp_path: Path) -> None:
    cfg, store = env
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    (job_dir / "layerbot-job.log").write_text("".join(f"line {i}\n" for i in range(500)))
    [job_id] = build(store, cfg, 3, targets=1)
    register_builtin(store, cfg, NOW)  # built on this machine, by serve's own agent
    finish(store, job_id, JobState.SUCCEEDED, job_dir=str(job_dir), core_hours=2.0,
           agent=cfg.agent_name)
    with store.transaction() as s:
        a = Artifact(job_id=job_id, name="x.tar.gz", path=str(job_dir / "x.tar.gz"), size=5,
                     sha256="0" * 64)
        s.add(a)
        s.flush()
        s.add(Deployment(artifact_id=a.id, job_id=job_id, repo=REPO, pr=3, state="uploaded",
                         requested_by="alice", created_at=NOW, updated_at=NOW))
    detail = control.job_detail(store, job_id, log_lines=3)
    assert [t.to_state for t in detail.history] == ["queued", "submitted", "running",
                                                     "succeeded"]
    assert detail.log_tail == "line 497\nline 498\nline 499"
    assert [a.name for a in detail.artifacts] == ["x.tar.gz"]
    assert [(d.artifact, d.state) for d in detail.deployments] == [("x.tar.gz", "uploaded")]
    assert detail.command == "bot: build" and detail.requested_by == "alice"
    assert control.job_log(store, job_id, 1) == ("succeeded", "line 499")
    with pytest.raises(control.ControlError):
        control.job_detail(store, 12345)


def test_a_remote_agents_job_dir_is_never_read_on_the_control_plane(env: Any,
                                                                    tmp_path: Path) -> None:
    """A cluster's agent reports its job's directory: a path on its own machine. A hostile
    agent naming a directory of the control plane's machine must not get its files shown
    (here a "log" holding a secret); its job's log is the tail it reported."""
    cfg, store = env
    here = tmp_path / "bot-secrets"
    here.mkdir()
    (here / "layerbot-job.log").write_text("SECRET-OF-THE-CONTROL-PLANE\n")
    agentops.add(store, "cluster-x", "test", NOW)
    [job_id] = build(store, cfg, 3, targets=1)
    finish(store, job_id, JobState.FAILED, job_dir=str(here), agent="cluster-x")
    with store.transaction() as s:
        job = s.get(Job, job_id)
        assert job is not None
        job.result = {"log_tail": "what the agent said"}
    assert control.job_detail(store, job_id, log_lines=3).log_tail == "what the agent said"
    assert control.job_log(store, job_id, 5) == ("failed", "what the agent said")


def test_redo_at_the_same_commit_records_a_build_and_reports_it(env: Any) -> None:
    cfg, store = env
    [job_id] = build(store, cfg, 4, targets=1, sha="b" * 40)
    finish(store, job_id, JobState.FAILED)
    result = control.redo(store, cfg, job_id, "carol", NOW)
    [new] = result.jobs
    with store.read() as s:
        job = s.get(Job, new)
        b = s.get(Build, job.build_id)
        reports = s.scalars(select(OutboxMessage).where(
            OutboxMessage.coalesce_key.contains(b.report_key))).all()
    assert job.state == "queued" and job.redo_of == job_id and job.head_sha == "b" * 40
    assert b.requested_by == "carol" and b.pr == 4 and b.note is None
    assert reports, "the redo is reported on the PR in the same transaction"


def test_redo_at_the_head_uses_the_prs_head_now(env: Any) -> None:
    cfg, store = env
    [job_id] = build(store, cfg, 5, targets=1, sha="c" * 40)
    finish(store, job_id, JobState.FAILED)

    class GitHub:
        async def json(self, installation: int, method: str, url: str) -> Any:
            assert (installation, method, url) == (1, "GET", f"/repos/{REPO}/pulls/5")
            return {"head": {"sha": "d" * 40}, "state": "open",
                    "base": {"ref": "main", "repo": {"clone_url": "https://x.invalid/r"}}}

    result = asyncio.run(control.Controller(cfg, store, GitHub()).redo(job_id, "carol", "head"))
    with store.read() as s:
        assert s.get(Job, result.jobs[0]).head_sha == "d" * 40


def test_redo_is_refused_for_active_jobs_other_instances_and_unknown_targets(env: Any) -> None:
    cfg, store = env
    [active] = build(store, cfg, 6, targets=1)
    with pytest.raises(control.ControlError, match="still queued") as e:
        control.redo(store, cfg, active, "carol", NOW)
    assert e.value.status == 409
    [foreign] = build(store, cfg, 6, targets=1, instance="other")
    finish(store, foreign, JobState.FAILED)
    with pytest.raises(control.ControlError, match="belongs to instance other"):
        control.redo(store, cfg, foreign, "carol", NOW)
    finish(store, active, JobState.FAILED)
    with store.transaction() as s:
        s.get(Job, active).node_type = "gone"
    with pytest.raises(control.ControlError, match="no longer has"):
        control.redo(store, cfg, active, "carol", NOW)


def test_a_redo_on_a_paused_instance_says_so(env: Any) -> None:
    cfg, store = env
    [job_id] = build(store, cfg, 9, targets=1)
    finish(store, job_id, JobState.FAILED)
    control.set_paused(store, cfg, INSTANCE, True, NOW)
    [new] = control.redo(store, cfg, job_id, "carol", NOW).jobs
    with store.read() as s:
        assert "paused" in (s.get(Build, s.get(Job, new).build_id).note or "")


def test_cancel_ends_queued_jobs_and_asks_the_reconciler_for_running_ones(env: Any) -> None:
    cfg, store = env
    queued, running = build(store, cfg, 10)
    finish(store, running, JobState.RUNNING)
    assert "cancelled" in control.cancel(store, cfg, queued, "dave", NOW).message
    assert "will be cancelled" in control.cancel(store, cfg, running, "dave", NOW).message
    with store.read() as s:
        q, r = s.get(Job, queued), s.get(Job, running)
    assert q.state == "cancelled" and q.reason == "cancelled by @dave"
    assert r.state == "running" and r.cancel_requested
    assert "already" in control.cancel(store, cfg, running, "dave", NOW).message
    with pytest.raises(control.ControlError, match="already ended"):
        control.cancel(store, cfg, queued, "dave", NOW)


def test_pause_and_resume(env: Any) -> None:
    cfg, store = env
    assert "paused" in control.set_paused(store, cfg, INSTANCE, True, NOW).message
    assert "already" in control.set_paused(store, cfg, INSTANCE, True, NOW).message
    with store.read() as s:
        assert s.get(Instance, INSTANCE).paused
    control.set_paused(store, cfg, INSTANCE, False, NOW)
    with store.read() as s:
        assert not s.get(Instance, INSTANCE).paused
    with pytest.raises(control.ControlError) as e:
        control.set_paused(store, cfg, "nobody", True, NOW)
    assert e.value.status == 404


def test_deploy_queues_the_artifacts_of_a_job_at_the_prs_head(env: Any) -> None:
    cfg, store = env
    old, new = build(store, cfg, 11, targets=1, sha="e" * 40), build(store, cfg, 11, targets=1,
                                                                     sha="f" * 40)
    for job_id in old + new:
        finish(store, job_id, JobState.SUCCEEDED)
        with store.transaction() as s:
            s.add(Artifact(job_id=job_id, name=f"a{job_id}.tar.gz", path="/x", size=1,
                           sha256="0" * 64))
    with pytest.raises(control.ControlError, match="older commit"):
        control.deploy(store, cfg, old[0], "erin", NOW, head_sha="f" * 40)
    result = control.deploy(store, cfg, new[0], "erin", NOW, head_sha="f" * 40)
    assert "1 artifact(s)" in result.message
    with store.read() as s:
        [d] = s.scalars(select(Deployment)).all()
    assert (d.job_id, d.state, d.requested_by) == (new[0], "queued", "erin")
    again = control.deploy(store, cfg, new[0], "erin", NOW, head_sha="f" * 40)
    assert "already" in again.message


def test_costs_per_week_target_and_pr_and_estimates(env: Any) -> None:
    cfg, store = env
    hours = [1.0, 2.0, 3.0, 4.0, 10.0]
    for i, h in enumerate(hours):
        [job_id] = build(store, cfg, 20 + i % 2, targets=1)
        finish(store, job_id, JobState.SUCCEEDED, at=NOW - timedelta(days=7 * (i % 2)),
               core_hours=h, elapsed=h * 600)
    [failed] = build(store, cfg, 22, targets=1)
    finish(store, failed, JobState.FAILED, core_hours=0.5)
    data = control.costs(store, NOW, weeks=4)
    assert data.total_core_hours == 20.5 and data.jobs == 6
    assert [(r.key, r.core_hours) for r in data.by_week] == [("2026-W47", 6.0),
                                                             ("2026-W48", 14.5)]
    assert [(r.key, r.jobs) for r in data.by_target] == [("x86_64/amd/zen2", 6)]
    assert data.by_pr[0].key == f"{REPO}#20" and data.by_pr[0].core_hours == 14.0
    [estimate] = data.estimates  # from successful builds only
    assert estimate.samples == 5 and estimate.core_hours_median == 3.0
    assert estimate.core_hours_p90 == pytest.approx(7.6)  # 4 + 0.6 * (10 - 4)
    assert estimate.duration_median_seconds == 1800.0


def test_percentile_interpolates_between_ranks() -> None:
    assert control.percentile([5.0], 90) == 5.0
    assert control.percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert control.percentile([4.0, 1.0, 3.0, 2.0, 10.0], 90) == pytest.approx(7.6)
    with pytest.raises(ValueError):
        control.percentile([], 50)


def test_overview_shows_active_jobs_recent_failures_and_instances(env: Any) -> None:
    cfg, store = env
    a, b = build(store, cfg, 30)
    finish(store, a, JobState.FAILED, at=NOW - timedelta(hours=1))
    c, d = build(store, cfg, 31)
    finish(store, c, JobState.FAILED, at=NOW - timedelta(hours=30))  # too old
    finish(store, d, JobState.RUNNING)
    control.set_paused(store, cfg, INSTANCE, False, NOW - timedelta(minutes=5))
    data = control.overview(store, NOW)
    assert [j.id for j in data.active] == [d, b]
    assert [j.id for j in data.failures] == [a]
    [inst] = data.instances
    assert inst.name == INSTANCE and not inst.alive  # its heartbeat is 5 minutes old
    assert inst.queued == 1 and inst.active == 2


class FlakyBackend:
    name = "local"
    calls = 0

    def __init__(self) -> None:
        self.fail = False

    async def resources(self) -> Resources:
        if self.fail:
            raise BackendUnavailable("slurmctld is down")
        return Resources("local", (Partition("p1", "up", 2, 1, 0, 96, 64),))


def test_heartbeat_records_the_instance_and_survives_backend_errors(env: Any) -> None:
    cfg, store = env
    backend = FlakyBackend()
    beat = fleet.Heartbeat(cfg, store, backend, interval=0.01,  # type: ignore[arg-type]
                           resources_interval=0)
    asyncio.run(beat.beat())
    with store.read() as s:
        row = s.get(Instance, INSTANCE)
    assert row.backend == "local" and row.version and not row.paused
    assert row.resources["partitions"][0]["cpus_total"] == 96
    first = row.heartbeat_at
    backend.fail = True
    asyncio.run(beat.beat())
    with store.read() as s:
        row = s.get(Instance, INSTANCE)
    assert row.heartbeat_at > first
    assert row.resources["partitions"][0]["name"] == "p1"  # the last known ones stay
    assert "slurmctld is down" in row.resources["error"]
    assert fleet.is_alive(row.heartbeat_at, row.heartbeat_at + timedelta(seconds=44))
    assert not fleet.is_alive(row.heartbeat_at, row.heartbeat_at + timedelta(seconds=46))


def test_heartbeat_loop_stops_on_the_stop_event(env: Any) -> None:
    cfg, store = env
    beat = fleet.Heartbeat(cfg, store, FlakyBackend(), interval=0.01)  # type: ignore[arg-type]

    async def run() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(beat.run(stop))
        await asyncio.sleep(0.1)
        stop.set()
        await asyncio.wait_for(task, 5)

    asyncio.run(run())
    with store.read() as s:
        assert s.get(Instance, INSTANCE) is not None
