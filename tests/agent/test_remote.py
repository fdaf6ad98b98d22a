"""The remote ledger against a real control plane's agent routes (uvicorn, real store): its
journal survives a restart, a submission the server did not answer stays held until it is
accepted, and an agent whose lease lapsed by its own clock prepares nothing."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI

from layerbot import clock
from layerbot.agent.client import ControlPlane
from layerbot.agent.ledger import Accounting, Outcome
from layerbot.agent.log_tails import LogTailSender
from layerbot.agent.remote import Journal, RemoteLedger
from layerbot.config import Config, load
from layerbot.core.jobs import JobState
from layerbot.core.protocol import (
    Capabilities,
    JobSpec,
    NodeTypeCapability,
    RegisterRequest,
)
from layerbot.jobs.planner import BuildRequest, PlannedTarget, record_build
from layerbot.operations import agents as agentops
from layerbot.store.db import Store
from layerbot.store.models import Job
from layerbot.web.agent_api import agent_router
from tests.support.botproc import free_port


class ControlPlaneServer:
    """The agent routes of a control plane, on a port, that can be stopped and started."""

    def __init__(self, config: Config, store: Store) -> None:
        self.app = FastAPI()
        self.app.include_router(agent_router(config, store, lambda: None))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._server = uvicorn.Server(uvicorn.Config(self.app, port=self.port,
                                                     log_level="warning"))
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        while not self._server.started:
            time.sleep(0.01)

    def stop(self) -> None:
        assert self._server is not None and self._thread is not None
        self._server.should_exit = True
        self._thread.join(10)


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[Config, Store, ControlPlaneServer, str]]:
    config = load(None, overrides={
        "instance": {"data_dir": str(tmp_path / "cp")},
        "fleet": {"builtin_agent": False, "heartbeat_seconds": 1, "lease_seconds": 8}})
    store = Store(config.store_url)
    token = agentops.add(store, "a", "test", clock.now())
    server = ControlPlaneServer(config, store)
    server.start()
    yield config, store, server, token
    server.stop()


def ledger_for(server: ControlPlaneServer, token: str, journal_dir: Path) -> RemoteLedger:
    client = ControlPlane(server.url, token, timeout=2)
    client.register(RegisterRequest(protocol=1, version="t", cluster="c", capabilities=
                                    Capabilities(backend="local", concurrency=5, node_types=[
                                        NodeTypeCapability(name="n", cpu_target="x/y")])))
    ledger = RemoteLedger(client, Journal(journal_dir), lease_seconds=8)
    ledger.renewed(time.monotonic(), 8)
    return ledger


def queue_job(config: Config, store: Store) -> int:
    from layerbot.config import NodeType

    node = NodeType(name="n", cpu_target="x/y")
    request = BuildRequest(repo="o/r", pr=1, installation_id=None, head_sha="a" * 40,
                           base_ref="main", clone_url="-", command="t", requested_by="t")
    with store.transaction() as s:
        _, (job,) = record_build(s, config, request, [
            PlannedTarget(node, config.repo_targets[0], "x/y", None, "x/y")], clock.now())
        return job.id


def submit_one(ledger: RemoteLedger, job_dir: Path) -> JobSpec:
    """Claim the one queued job and tell the server it was submitted as backend job 42."""
    (job,) = ledger.claim(slots=2, wait_seconds=0)
    assert ledger.record_job_dir(job, job_dir)
    assert ledger.submitted(job, "42", None, job_dir, job.facts)
    return job


def state(store: Store, job_id: int) -> str:
    with store.read() as s:
        job = s.get(Job, job_id)
        assert job is not None
        return job.state


def test_the_journal_keeps_what_was_submitted_across_a_restart(
        setup: tuple[Config, Store, ControlPlaneServer, str], tmp_path: Path) -> None:
    config, store, server, token = setup
    job_id = queue_job(config, store)
    ledger = ledger_for(server, token, tmp_path / "journal")
    submit_one(ledger, tmp_path / "jobdir")
    assert state(store, job_id) == JobState.SUBMITTED.value
    again = RemoteLedger(ledger.server, Journal(tmp_path / "journal"), lease_seconds=8)
    (active,) = again.active()
    assert (active.id, active.backend_id, active.job_dir) == (job_id, "42",
                                                             str(tmp_path / "jobdir"))
    assert again.held() == ["42"] and again.queued() == []


def test_a_submission_the_server_did_not_answer_stays_held_until_accepted(
        setup: tuple[Config, Store, ControlPlaneServer, str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import layerbot.agent.remote as remote

    monkeypatch.setattr(remote, "SUBMIT_ANSWER_SECONDS", 0.5)
    config, store, server, token = setup
    job_id = queue_job(config, store)
    ledger = ledger_for(server, token, tmp_path / "journal")
    (job,) = ledger.claim(slots=1, wait_seconds=0)
    assert ledger.record_job_dir(job, tmp_path / "jobdir")
    server.stop()
    # No answer: the job is neither released nor cancelled; its report waits on disk.
    assert ledger.submitted(job, "42", None, tmp_path / "jobdir", job.facts)
    assert ledger.late_submissions() == [] and ledger.held() == []
    server.start()
    ledger.flush()
    assert state(store, job_id) == JobState.SUBMITTED.value
    assert ledger.late_submissions() == ["42"]  # release it now, once
    assert ledger.late_submissions() == []


def test_an_agent_whose_lease_lapsed_prepares_nothing(
        setup: tuple[Config, Store, ControlPlaneServer, str], tmp_path: Path) -> None:
    config, store, server, token = setup
    job_id = queue_job(config, store)
    ledger = ledger_for(server, token, tmp_path / "journal")
    (job,) = ledger.claim(slots=1, wait_seconds=0)
    ledger._lease_until = time.monotonic() - 1  # its last answered beat is too old
    assert not ledger.lease_valid()
    assert not ledger.record_job_dir(job, tmp_path / "jobdir")
    with store.read() as s:
        found = s.get(Job, job_id)
        assert found is not None and found.job_dir is None


def test_a_log_tail_held_back_is_sent_once_it_can_be(
        setup: tuple[Config, Store, ControlPlaneServer, str], tmp_path: Path) -> None:
    config, store, server, token = setup
    job_id = queue_job(config, store)
    ledger = ledger_for(server, token, tmp_path / "journal")
    job_dir = tmp_path / "jobdir"
    job_dir.mkdir()
    (job_dir / "slurm-42.out").write_text("building on a\n")  # printed once, then quiet
    submit_one(ledger, job_dir)
    server.stop()
    ledger.apply({job_id: (Accounting(), Outcome(JobState.RUNNING, None, None))})
    server.start()
    tails = LogTailSender(ledger, lines=5)
    # The state change has not reached the server: the tail must wait behind it.
    assert tails.send_changed() == set()
    ledger.flush()
    assert state(store, job_id) == JobState.RUNNING.value
    # The output has not changed since, and still its tail is sent.
    assert tails.send_changed() == {job_id}
    with store.read() as s:
        found = s.get(Job, job_id)
        assert found is not None and found.result is not None
        assert found.result["log_tail"] == "building on a"
    assert tails.send_changed() == set()  # delivered and unchanged: nothing more to send
