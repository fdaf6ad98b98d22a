"""The submitter keeps jobs queued while the batch system cannot be asked."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from pathlib import Path

from layerbot import clock
from layerbot.agent.runner import AgentRunner
from layerbot.backends.base import (
    BackendUnavailable,
    Check,
    JobStatus,
    Resources,
    SubmitRequest,
)
from layerbot.build.workspace import Mirrors
from layerbot.config import load
from layerbot.core.jobs import JobState
from layerbot.jobs.planner import BuildRequest, PlannedTarget, record_build
from layerbot.operations.agent_ledger import builtin_agent
from layerbot.store.db import Store
from layerbot.store.models import Job
from tests.support.origin import Origin


class DownThenUpBackend:
    """A batch system that is down for the first ``down`` calls (a port double)."""

    name = "test"
    job_user = None

    def __init__(self, down: int) -> None:
        self.down = down
        self.calls = 0
        self.submitted: list[SubmitRequest] = []

    def _ask(self) -> None:
        self.calls += 1
        if self.calls <= self.down:
            raise BackendUnavailable("slurmctld is not answering")

    async def submit(self, request: SubmitRequest) -> str:
        self._ask()
        self.submitted.append(request)
        return f"b{request.job_id}"

    async def release(self, backend_ids: Sequence[str]) -> None:
        return None

    async def find(self, job_id: int, instance: str, job_dir: Path) -> str | None:
        self._ask()
        return None

    async def poll(self, backend_ids: Sequence[str]) -> Mapping[str, JobStatus]:
        return {}

    async def cancel(self, backend_id: str) -> None:
        return None

    async def resources(self) -> Resources:
        return Resources("test", ())

    async def check(self) -> list[Check]:
        return []


def queued_job(tmp_path: Path, batch: tuple[tuple[str, str], ...] = ()) -> tuple[Store, int]:
    origin = Origin(tmp_path / "origin", "o/r")
    head = origin.git("rev-parse", "HEAD")
    config = load(None, overrides={
        "instance": {"data_dir": str(tmp_path / "data")},
        "node_types": [{"name": "n", "cpu_target": "x86_64/generic",
                        "options": {"partition": "build", "time": "01:00:00"}}]})
    store = Store(config.store_url)
    node, repo = config.node_types[0], config.repo_targets[0]
    request = BuildRequest(repo="o/r", pr=None, installation_id=None, head_sha=head,
                           base_ref="main", clone_url=str(origin.path), command="test",
                           requested_by="alice", batch_options=batch)
    with store.transaction() as s:
        _, (job,) = record_build(s, config, request,
                                 [PlannedTarget(node, repo, node.cpu_target, None, "x")],
                                 clock.now())
        return store, job.id


def submitter_for(tmp_path: Path, store: Store, backend: DownThenUpBackend) -> AgentRunner:
    config = load(None, overrides={
        "instance": {"data_dir": str(tmp_path / "data")},
        "node_types": [{"name": "n", "cpu_target": "x86_64/generic",
                        "options": {"partition": "build", "time": "01:00:00"}}]})
    return builtin_agent(config, store, backend, Mirrors(tmp_path / "mirrors"))


def test_a_commands_batch_options_come_after_the_node_types(tmp_path: Path) -> None:
    store, _ = queued_job(tmp_path, batch=(("time", "04:00:00"),))
    backend = DownThenUpBackend(down=0)
    asyncio.run(submitter_for(tmp_path, store, backend).submit_ready())
    (request,) = backend.submitted
    assert request.options == {"partition": "build", "time": "04:00:00"}


def test_jobs_wait_queued_while_the_backend_is_down(tmp_path: Path) -> None:
    store, job_id = queued_job(tmp_path)
    backend = DownThenUpBackend(down=1)
    submitter = submitter_for(tmp_path, store, backend)

    def state() -> str:
        with store.read() as s:
            found = s.get(Job, job_id)
            assert found is not None
            return found.state

    asyncio.run(submitter.submit_ready())
    assert state() == JobState.QUEUED.value  # not failed: the scheduler was only away
    assert asyncio.run(submitter.submit_ready()) == 0  # it is left alone for a while
    submitter.submitter._paused_until = 0.0  # the while has passed
    asyncio.run(submitter.submit_ready())
    assert state() == JobState.SUBMITTED.value
    assert [r.job_id for r in backend.submitted] == [job_id]


def test_the_builtin_agent_reads_no_log_tails_the_control_plane_reads_itself(
        tmp_path: Path) -> None:
    store, _ = queued_job(tmp_path)
    runner = submitter_for(tmp_path, store, DownThenUpBackend(down=0))
    assert runner.log_tails is None and runner.log_loop not in runner.loops
