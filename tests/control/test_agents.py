"""The fleet in the control center, on a real store (SQLite and PostgreSQL): agents with
their state and load, pause/resume/drain, each job's agent and cluster, costs per cluster,
and the cluster in the PR's reply."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from layerbot import control
from layerbot.config import Config
from layerbot.core.fleet import AgentState
from layerbot.core.jobs import JobState
from layerbot.core.protocol import PROTOCOL_VERSION
from layerbot.events.reporting import report_build
from layerbot.operations import agents as agentops
from layerbot.store.db import Store
from layerbot.store.models import Agent, Build, Job, OutboxMessage
from tests.control.test_control import NOW, build, finish
from tests.support.agents import add_agent, lease
from tests.web.conftest import REPO, make_config

Env = tuple[Config, Store]


@pytest.fixture
def env(store_url: str, tmp_path: Path) -> Iterator[Env]:
    cfg = make_config(tmp_path, store_url)
    store = Store(cfg.store_url)
    yield cfg, store
    store.close()


def _fleet(cfg: Config, store: Store) -> None:
    """One agent in each state (heartbeats every 15 s, leases of 60 s)."""
    add_agent(store, cfg, "a-1", NOW, cluster="cluster-a", concurrency=4,
              node_types=[("zen2", "x86_64/amd/zen2"), ("zen3", "x86_64/amd/zen3")])
    add_agent(store, cfg, "late", NOW, cluster="cluster-b", silent_for=timedelta(seconds=50))
    add_agent(store, cfg, "gone", NOW, cluster="cluster-b", silent_for=timedelta(minutes=5))
    add_agent(store, cfg, "resting", NOW, cluster="cluster-c", paused=True)
    add_agent(store, cfg, "leaving", NOW, cluster="cluster-c", draining=True)
    add_agent(store, cfg, "new", NOW, cluster="cluster-d", registered=False)
    add_agent(store, cfg, "old", NOW, cluster="cluster-d")
    agentops.revoke(store, "old", NOW)


def test_agents_are_listed_with_state_version_capabilities_load_and_heartbeat(env: Env
                                                                              ) -> None:
    cfg, store = env
    _fleet(cfg, store)
    running, queued = build(store, cfg, 1)
    finish(store, running, JobState.RUNNING)
    lease(store, [running, queued], "a-1", NOW)
    agents = {a.name: a for a in control.agents(store, cfg, NOW)}
    assert {n: a.state for n, a in agents.items()} == {
        "a-1": AgentState.CONNECTED, "late": AgentState.DISCONNECTED,
        "gone": AgentState.LOST, "resting": AgentState.PAUSED,
        "leaving": AgentState.DRAINING, "new": AgentState.LOST, "old": AgentState.REVOKED}
    a = agents["a-1"]
    assert (a.cluster, a.version, a.protocol, a.builtin) == ("cluster-a", "1.2.3",
                                                            PROTOCOL_VERSION, False)
    assert (a.holding, a.concurrency, a.free_slots) == (2, 4, 4)
    assert [(n.name, n.cpu_target, n.repo_targets) for n in a.node_types] == [
        ("zen2", "x86_64/amd/zen2", []), ("zen3", "x86_64/amd/zen3", [])]
    assert a.heartbeat_at == NOW and a.registered_at == NOW
    assert agents["new"].heartbeat_at is None and agents["new"].version is None
    assert agents["resting"].paused and not agents["resting"].draining
    # Never a token, nor its hash.
    assert not {"token_hash", "token_prefix"} & set(control.AgentOut.model_fields)


def test_the_overview_counts_agents_by_state(env: Env) -> None:
    cfg, store = env
    _fleet(cfg, store)
    counts = control.overview(store, NOW, config=cfg).agents
    assert [(c.state.value, c.agents) for c in counts] == [
        ("connected", 1), ("disconnected", 1), ("lost", 2), ("paused", 1), ("draining", 1)]
    assert control.overview(store, NOW).agents == []  # without the config: no fleet timing


def test_agents_are_paused_resumed_and_drained(env: Env) -> None:
    cfg, store = env
    _fleet(cfg, store)
    [job] = build(store, cfg, 2, targets=1)
    lease(store, [job], "a-1", NOW)

    def flags() -> tuple[bool, bool]:
        with store.read() as s:
            agent = s.get(Agent, "a-1")
            assert agent is not None
            return agent.paused, agent.draining

    paused = control.set_agent(store, cfg, "a-1", "pause", NOW)
    assert paused.message == "agent a-1 paused: it gets no new jobs; the 1 it holds go on"
    assert flags() == (True, False)
    assert "already paused" in control.set_agent(store, cfg, "a-1", "pause", NOW).message
    assert control.agent(store, cfg, "a-1", NOW).state is AgentState.PAUSED
    drained = control.set_agent(store, cfg, "a-1", "drain", NOW)
    assert "drains" in drained.message and "the 1 it holds finish" in drained.message
    assert flags() == (True, True)
    assert "resumed" in control.set_agent(store, cfg, "a-1", "resume", NOW).message
    assert flags() == (False, False)
    assert control.agent(store, cfg, "a-1", NOW).state is AgentState.CONNECTED
    assert "was not paused" in control.set_agent(store, cfg, "a-1", "resume", NOW).message
    empty = control.set_agent(store, cfg, "leaving", "drain", NOW)
    assert "is drained: it holds no jobs" in empty.message


@pytest.mark.parametrize(("name", "verb", "status", "words"), [
    ("nobody", "pause", 404, "there is no agent nobody"),
    ("old", "resume", 409, "agent old is revoked"),
    ("a-1", "explode", 404, "not 'explode'"),
])
def test_impossible_agent_actions_say_why(env: Env, name: str, verb: str, status: int,
                                          words: str) -> None:
    cfg, store = env
    _fleet(cfg, store)
    with pytest.raises(control.ControlError) as refused:
        control.set_agent(store, cfg, name, verb, NOW)
    assert refused.value.status == status and words in refused.value.message


def test_each_job_shows_its_agent_and_cluster(env: Env) -> None:
    cfg, store = env
    _fleet(cfg, store)
    leased, waiting = build(store, cfg, 3)
    lease(store, [leased], "a-1", NOW)
    jobs = {j.id: j for j in control.list_jobs(store).jobs}
    assert (jobs[leased].agent, jobs[leased].cluster) == ("a-1", "cluster-a")
    assert (jobs[waiting].agent, jobs[waiting].cluster) == (None, None)
    assert [j.id for j in control.list_jobs(store, agent="a-1").jobs] == [leased]
    detail = control.job_detail(store, leased)
    assert (detail.job.agent, detail.job.cluster) == ("a-1", "cluster-a")
    [pulled] = control.pull_detail(store, REPO, 3).builds
    assert {j.id: j.cluster for j in pulled.jobs} == {leased: "cluster-a", waiting: None}
    active = {j.id: j.cluster for j in control.overview(store, NOW).active}
    assert active == {leased: "cluster-a", waiting: None}


def test_costs_are_summed_per_cluster(env: Env) -> None:
    cfg, store = env
    _fleet(cfg, store)
    hours = {"a-1": [1.0, 2.5], "late": [4.0], "gone": [0.5], None: [3.0]}
    for agent, values in hours.items():
        for h in values:
            [job] = build(store, cfg, 4, targets=1)
            if agent:
                lease(store, [job], agent, NOW)
            finish(store, job, JobState.SUCCEEDED, core_hours=h)
    data = control.costs(store, NOW, weeks=4)
    assert [(r.key, r.jobs, r.core_hours) for r in data.by_cluster] == [
        ("cluster-b", 2, 4.5), ("cluster-a", 2, 3.5), (control.NO_CLUSTER, 1, 3.0)]
    assert sum(r.core_hours for r in data.by_cluster) == data.total_core_hours == 11.0
    # Jobs of repositories the reader may not see are not counted.
    assert control.costs(store, NOW, weeks=4, visible=frozenset()).by_cluster == []


def test_the_reply_on_the_pr_names_each_jobs_cluster(store_url: str, tmp_path: Path) -> None:
    cfg = make_config(tmp_path, store_url, reporting={"check_runs": "live"})
    store = Store(cfg.store_url)
    _fleet(cfg, store)
    leased, waiting = build(store, cfg, 5)
    lease(store, [leased], "a-1", NOW)
    with store.transaction() as s:
        job = s.get(Job, leased)
        assert job is not None
        build_row = s.get(Build, job.build_id)
        assert build_row is not None
        report_build(s, cfg, build_row, NOW, changed=[job])
    with store.read() as s:
        comments = [m.payload["body"] for m in s.scalars(
            select(OutboxMessage).where(OutboxMessage.kind == "comment")
            .order_by(OutboxMessage.id))]
        checks = [m.payload for m in s.scalars(
            select(OutboxMessage).where(OutboxMessage.kind == "check_run"))]
    body = comments[-1]
    assert "| cluster |" in body
    assert f"| cluster-a | {leased} |" in body
    assert f"| waiting for an agent | {waiting} |" in body
    [check] = checks
    assert check["output"]["title"] == "queued on cluster-a"
    store.close()
