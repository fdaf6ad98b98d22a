"""Leases on a real store (SQLite and PostgreSQL): who gets a job, reports applied once,
and what happens to the jobs of an agent that went silent."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta
from typing import Any

import pytest

from layerbot import clock
from layerbot.config import Config, load
from layerbot.core.jobs import JobState
from layerbot.core.protocol import Capabilities, NodeTypeCapability, Report
from layerbot.jobs.planner import BuildRequest, PlannedTarget, record_build
from layerbot.operations import agents as agentops
from layerbot.operations import leases
from layerbot.operations.agent_ledger import register_builtin
from layerbot.store.db import Store
from layerbot.store.models import Agent, Instance, Job, JobTransition


def config() -> Config:
    return load(None, overrides={
        "fleet": {"builtin_agent": False, "heartbeat_seconds": 1, "lease_seconds": 10,
                  "grace_seconds": 5},
        "node_types": [{"name": "zen2", "cpu_target": "x86_64/amd/zen2"},
                       {"name": "a64fx", "cpu_target": "aarch64/a64fx"}]})


def add_agent(store: Store, cfg: Config, name: str, nodes: list[str], *, priority: int = 0,
              concurrency: int = 10, now: datetime | None = None) -> None:
    now = now or clock.now()
    agentops.add(store, name, "test", now, cluster=f"cluster-{name}", priority=priority)
    caps = Capabilities(backend="local", concurrency=concurrency, node_types=[
        NodeTypeCapability(name=n, cpu_target=f"x86_64/{n}") for n in nodes])
    with store.transaction() as s:
        agent = s.get(Agent, name)
        assert agent is not None
        leases.register(s, cfg, agent, 1, "test", f"cluster-{name}", caps, now)


def queue_jobs(store: Store, cfg: Config, count: int, node: str = "zen2",
               agent_filter: str | None = None) -> list[int]:
    nt = next(n for n in cfg.node_types if n.name == node)
    target = PlannedTarget(nt, cfg.repo_targets[0], nt.cpu_target, None, nt.cpu_target,
                           agent_filter)
    request = BuildRequest(repo="o/r", pr=1, installation_id=None, head_sha="a" * 40,
                           base_ref="main", clone_url="-", command="test", requested_by="t")
    with store.transaction() as s:
        _, jobs = record_build(s, cfg, request, [target] * count, clock.now())
        return [j.id for j in jobs]


def claim(store: Store, cfg: Config, agent: str, slots: int = 10,
          now: datetime | None = None) -> list[int]:
    with store.transaction() as s:
        return [j.id for j in leases.claim(s, cfg, agent, slots, now or clock.now())]


def job(store: Store, job_id: int) -> Job:
    with store.read() as s:
        found = s.get(Job, job_id)
        assert found is not None
        return found


@pytest.fixture
def store(store_url: str) -> Store:
    return Store(store_url)


def test_the_higher_priority_agent_gets_the_job(store: Store) -> None:
    cfg = config()
    add_agent(store, cfg, "low", ["zen2"])
    add_agent(store, cfg, "high", ["zen2"], priority=5)
    (job_id,) = queue_jobs(store, cfg, 1)
    assert claim(store, cfg, "low") == []  # high is alive and free: it should build it
    assert claim(store, cfg, "high") == [job_id]
    assert job(store, job_id).agent == "high"


def test_equal_priorities_go_to_the_less_loaded_agent(store: Store) -> None:
    cfg = config()
    add_agent(store, cfg, "a", ["zen2"], concurrency=4)
    add_agent(store, cfg, "b", ["zen2"], concurrency=4)
    first = queue_jobs(store, cfg, 2)
    assert claim(store, cfg, "a", slots=2) == first  # both idle: a ties and takes them
    second = queue_jobs(store, cfg, 1)
    assert claim(store, cfg, "a") == []  # a holds 2 of 4, b holds none
    assert claim(store, cfg, "b") == second


def test_paused_draining_and_revoked_agents_get_nothing(store: Store) -> None:
    cfg = config()
    for name in ("paused", "draining", "revoked"):
        add_agent(store, cfg, name, ["zen2"])
    agentops.set_flags(store, "paused", paused=True)
    agentops.set_flags(store, "draining", draining=True)
    agentops.revoke(store, "revoked", clock.now())
    queue_jobs(store, cfg, 1)
    for name in ("paused", "draining", "revoked"):
        assert claim(store, cfg, name) == [], name


def test_a_claim_gives_each_job_a_lease_of_its_own_and_its_whole_spec(store: Store) -> None:
    cfg = config()
    add_agent(store, cfg, "a", ["zen2"])
    ids = queue_jobs(store, cfg, 3)
    with store.transaction() as s:
        specs = leases.claim(s, cfg, "a", 3, clock.now())
    assert [j.id for j in specs] == ids
    assert len({j.lease_id for j in specs}) == 3  # one claim, three leases
    for spec in specs:
        row = job(store, spec.id)
        assert (row.agent, row.lease_id, row.report_seq, row.job_dir) == \
            ("a", spec.lease_id, 0, None)
        assert len(spec.lease_id) <= 40  # the column's width (PostgreSQL enforces it)
        assert (spec.clone_url, spec.node_type, spec.repo, spec.state) == \
            ("-", "zen2", "o/r", "queued")
    # Leased again (the reaper gave it back): a new lease id, never the old one.
    with store.transaction() as s:
        again = s.get(Job, ids[0])
        assert again is not None
        again.agent = again.lease_id = None
    with store.transaction() as s:
        (relet,) = leases.claim(s, cfg, "a", 1, clock.now())
    assert relet.id == ids[0] and relet.lease_id not in {j.lease_id for j in specs}


def test_a_claim_by_token_authenticates_in_its_transaction(store: Store) -> None:
    cfg = config()
    add_agent(store, cfg, "a", ["zen2"])
    token = agentops.add(store, "b", "test", clock.now())
    with store.read() as s:
        assert agentops.claimant(s, cfg, agentops.hash_token("lba_unknown")) is None
        me = agentops.claimant(s, cfg, agentops.hash_token(token))
        assert me is not None and me.name == "b" and not me.instance_paused
    agentops.revoke(store, "b", clock.now())
    with store.read() as s:
        assert agentops.claimant(s, cfg, agentops.hash_token(token)) is None


def test_a_paused_instance_leases_nothing(store: Store) -> None:
    cfg = config()
    add_agent(store, cfg, "a", ["zen2"])
    queue_jobs(store, cfg, 1)
    now = clock.now()
    with store.transaction() as s:
        s.add(Instance(name=cfg.instance.name, version="t", backend="local", started_at=now,
                       heartbeat_at=now, paused=True))
    assert claim(store, cfg, "a") == []


def test_an_agent_gets_only_its_node_types_and_what_inst_names(store: Store) -> None:
    cfg = config()
    add_agent(store, cfg, "x", ["zen2"])
    add_agent(store, cfg, "y", ["zen2", "a64fx"])
    arm = queue_jobs(store, cfg, 1, node="a64fx")
    pinned = queue_jobs(store, cfg, 1, agent_filter="cluster-y")
    assert claim(store, cfg, "x") == []
    assert sorted(claim(store, cfg, "y")) == sorted(arm + pinned)


def test_an_agent_cannot_move_itself_into_another_cluster(store: Store) -> None:
    cfg = config()
    add_agent(store, cfg, "x", ["zen2"])
    caps = Capabilities(backend="local", concurrency=1, node_types=[])
    with store.transaction() as s:
        agent = s.get(Agent, "x")
        assert agent is not None
        leases.register(s, cfg, agent, 1, "test", "cluster-of-someone-else", caps,
                        clock.now())
    with store.read() as s:
        found = s.get(Agent, "x")
        assert found is not None and found.cluster == "cluster-x"


def test_concurrent_claims_never_lease_a_job_twice(store: Store) -> None:
    cfg = config()
    names = [f"agent{i}" for i in range(6)]
    for name in names:
        add_agent(store, cfg, name, ["zen2"], concurrency=1000)
    ids = queue_jobs(store, cfg, 120)
    got: dict[str, list[int]] = {n: [] for n in names}

    def run(name: str) -> None:
        # Each takes work only while no other agent is less loaded: go on until all is
        # leased (the agents take turns).
        deadline = time.monotonic() + 20
        while sum(map(len, got.values())) < len(ids) and time.monotonic() < deadline:
            got[name] += claim(store, cfg, name, slots=3)

    threads = [threading.Thread(target=run, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    leased = [i for ids_ in got.values() for i in ids_]
    assert len(leased) == len(set(leased)), "a job was leased twice"
    assert sorted(leased) == ids
    with store.read() as s:
        assert {j.id: j.agent for j in s.query(Job)} == {
            i: n for n, ids_ in got.items() for i in ids_}


def report(store: Store, agent: str, job_id: int, **fields: Any) -> Any:
    with store.transaction() as s:
        return leases.apply_report(s, config(), agent, job_id, Report(**fields), clock.now())


def test_a_report_is_applied_once_and_only_under_its_own_lease(store: Store) -> None:
    cfg = config()
    add_agent(store, cfg, "a", ["zen2"])
    add_agent(store, cfg, "b", ["zen2"])
    (job_id,) = queue_jobs(store, cfg, 1)
    assert claim(store, cfg, "a") == [job_id]
    lease = job(store, job_id).lease_id
    submitted = {"seq": 1, "lease_id": lease, "kind": "submitted", "backend_id": "42",
                 "job_dir": "/jobs/x"}
    assert report(store, "a", job_id, **submitted).changed is not None
    again = report(store, "a", job_id, **submitted)  # a retry of the same report
    assert again.response.accepted and again.changed is None
    with store.read() as s:
        assert [t.to_state for t in s.query(JobTransition).filter_by(job_id=job_id)
                ] == ["queued", "submitted"]
    other = report(store, "b", job_id, seq=2, lease_id=lease, kind="failed", reason="x")
    assert not other.response.accepted and other.response.cancel
    stale = report(store, "a", job_id, seq=2, lease_id="an-old-lease", kind="failed",
                   reason="x")
    assert not stale.response.accepted
    assert job(store, job_id).state == JobState.SUBMITTED.value


def test_a_silent_agents_unstarted_jobs_go_back_and_started_ones_are_lost(
        store: Store) -> None:
    cfg = config()
    start = clock.now()
    add_agent(store, cfg, "a", ["zen2"], now=start)
    add_agent(store, cfg, "b", ["zen2"], now=start)
    unstarted, started = queue_jobs(store, cfg, 2)
    assert claim(store, cfg, "a", slots=2, now=start) == [unstarted, started]
    lease = job(store, started).lease_id
    report(store, "a", started, seq=1, lease_id=lease, kind="submitted", backend_id="7")

    def reap(at: datetime) -> leases.Reaped:
        with store.transaction() as s:
            return leases.reap(s, cfg, at)

    assert reap(start + timedelta(seconds=9)) == leases.Reaped([], [])  # lease holds
    assert reap(start + timedelta(seconds=11)) == leases.Reaped([unstarted], [])
    assert job(store, unstarted).agent is None
    assert reap(start + timedelta(seconds=16)) == leases.Reaped([], [started])  # + grace
    lost = job(store, started)
    assert lost.state == JobState.LOST.value and "agent a stopped answering" in (
        lost.reason or "")
    # The old agent's late word about either job is refused; b builds the unstarted one.
    late = report(store, "a", unstarted, seq=1, lease_id=lease, kind="job_dir",
                  job_dir="/x")
    assert not late.response.accepted
    assert claim(store, cfg, "b", now=start + timedelta(seconds=16)) == [unstarted]


def test_a_heartbeat_renews_held_leases_and_says_what_is_gone(store: Store) -> None:
    cfg = config()
    now = clock.now()
    add_agent(store, cfg, "a", ["zen2"], now=now)
    first, second = queue_jobs(store, cfg, 2)
    claim(store, cfg, "a", now=now)
    lease = job(store, first).lease_id
    assert lease is not None
    later = now + timedelta(seconds=8)
    with store.transaction() as s:
        agent = s.get(Agent, "a")
        assert agent is not None
        answer = leases.heartbeat(s, cfg, agent, {first: lease, second: "not-its-lease",
                                                  999: "x"}, 3, None, later)
    assert answer.gone == [second, 999]
    assert job(store, first).lease_until == later + timedelta(seconds=10)
    assert job(store, second).lease_until == now + timedelta(seconds=10)


def test_a_beat_by_token_authenticates_renews_and_keeps_the_load(store: Store) -> None:
    cfg = config()
    now = clock.now()
    token = agentops.add(store, "a", "test", now)
    with store.transaction() as s:
        agent = s.get(Agent, "a")
        assert agent is not None
        leases.register(s, cfg, agent, 1, "test", "a", Capabilities(
            backend="local", concurrency=4, resources={"idle_cpus": 8},
            node_types=[NodeTypeCapability(name="zen2", cpu_target="x86_64/zen2")]), now)
    first, second = queue_jobs(store, cfg, 2)
    claim(store, cfg, "a", now=now)
    lease = job(store, first).lease_id
    assert lease is not None
    digest, later = agentops.hash_token(token), now + timedelta(seconds=8)

    def beat(free: int, at: datetime, key: str = digest) -> leases.Beat | None:
        with store.transaction() as s:
            return agentops.beat(s, cfg, key, {first: lease, 999: "x"}, free, None, at)

    done = beat(2, later)
    assert done is not None and done.agent == "a"
    assert done.response.gone == [999] and not done.response.paused
    assert job(store, first).lease_until == later + timedelta(seconds=10)
    assert job(store, second).lease_until == now + timedelta(seconds=10)  # not held: kept
    with store.read() as s:
        row = s.get(Agent, "a")
        assert row is not None and row.heartbeat_at == later
        # A beat without resources keeps the last ones the agent sent.
        assert row.load == {"free_slots": 2, "resources": {"idle_cpus": 8}}
    assert beat(2, later + timedelta(seconds=1)) is not None  # the same load again
    with store.read() as s:
        row = s.get(Agent, "a")
        assert row is not None and row.load == {"free_slots": 2, "resources": {"idle_cpus": 8}}
    with store.transaction() as s:
        inst = s.get(Instance, cfg.instance.name)
        if inst is None:
            s.add(Instance(name=cfg.instance.name, version="x", backend="local",
                           started_at=now, heartbeat_at=now, paused=True))
        else:
            inst.paused = True
    paused = beat(2, later)
    assert paused is not None and paused.response.paused
    assert beat(2, later, agentops.hash_token("lba_unknown")) is None
    agentops.revoke(store, "a", clock.now())
    assert beat(2, later) is None


def test_warming_the_statements_changes_nothing(store: Store) -> None:
    cfg = config()
    add_agent(store, cfg, "a", ["zen2"])
    (queued,) = queue_jobs(store, cfg, 1)
    with store.read() as s:
        before = s.get(Agent, "a")
        assert before is not None
    with store.transaction() as s:
        leases.warm(s, cfg)
    with store.read() as s:
        after = s.get(Agent, "a")
        assert after is not None
        assert (after.heartbeat_at, after.load) == (before.heartbeat_at, before.load)
    assert job(store, queued).agent is None
    assert claim(store, cfg, "a") == [queued]


def test_replicas_starting_at_once_register_one_builtin_agent(store: Store) -> None:
    """Every ``serve`` replica registers its built-in agent as it starts; replicas started
    together against one PostgreSQL raced on the insert (seen in CI as a duplicate key)."""
    cfg = load(None, overrides={"agent": {"name": "replica-agent"}})
    replicas = [Store(store.url) for _ in range(6)]
    start = threading.Barrier(len(replicas))
    errors: list[BaseException] = []

    def start_replica(replica: Store) -> None:
        start.wait()
        try:
            register_builtin(replica, cfg, clock.now())
        except BaseException as e:  # the assertion below names it
            errors.append(e)

    threads = [threading.Thread(target=start_replica, args=(r,)) for r in replicas]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with store.read() as s:
        agents = s.query(Agent).all()
    assert [(a.name, a.builtin) for a in agents] == [("replica-agent", True)]
