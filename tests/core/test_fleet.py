"""The fleet's pure rules: how alive an agent is, who may and who should build a job."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from layerbot.config import RepoTarget
from layerbot.core.fleet import (
    AgentState,
    AgentView,
    NodeKind,
    Timing,
    agent_state,
    can_build,
    describe,
    names,
    node_types,
    should_take,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)
T = Timing(heartbeat_seconds=10, lease_seconds=60, grace_seconds=30)
ZEN2 = NodeKind("zen2", "x86_64/amd/zen2", None)
GPU = NodeKind("zen3-cc80", "x86_64/amd/zen3", "nvidia/cc80", ("eessi",))
REPOS = [RepoTarget(id="eessi"), RepoTarget(id="dev")]


def agent(name: str, *kinds: NodeKind, priority: int = 0, holding: int = 0,
          concurrency: int = 10, seen: float = 0, **flags: bool) -> AgentView:
    return AgentView(name=name, cluster=f"c-{name}", priority=priority,
                     concurrency=concurrency, node_types=kinds or (ZEN2,), holding=holding,
                     heartbeat_at=NOW - timedelta(seconds=seen), **flags)


def test_states_follow_the_heartbeat_and_the_flags() -> None:
    assert agent_state(agent("a"), NOW, T) is AgentState.CONNECTED
    assert agent_state(agent("a", seen=31), NOW, T) is AgentState.DISCONNECTED
    assert agent_state(agent("a", seen=61), NOW, T) is AgentState.LOST
    assert agent_state(agent("a", paused=True), NOW, T) is AgentState.PAUSED
    assert agent_state(agent("a", draining=True), NOW, T) is AgentState.DRAINING
    assert agent_state(agent("a", revoked=True), NOW, T) is AgentState.REVOKED
    assert agent_state(replace(agent("a"), heartbeat_at=None), NOW, T) is AgentState.LOST


def test_only_an_agent_with_the_node_type_and_repository_may_build() -> None:
    gpu = agent("g", GPU)
    assert can_build(gpu, "zen3-cc80", "eessi", None)
    assert not can_build(gpu, "zen3-cc80", "dev", None)  # not for that repository
    assert not can_build(gpu, "zen2", "eessi", None)
    assert can_build(gpu, "zen3-cc80", "eessi", "c-g") and not can_build(
        gpu, "zen3-cc80", "eessi", "other")


def test_the_best_able_agent_takes_the_job() -> None:
    high, low = agent("high", priority=2), agent("low")
    fleet = [high, low]
    assert should_take(high, "zen2", "eessi", None, fleet, NOW, T)
    assert not should_take(low, "zen2", "eessi", None, fleet, NOW, T)
    # The better agent is full, paused or silent: the other one takes it.
    for unable in (replace(high, holding=10), replace(high, paused=True),
                   replace(high, heartbeat_at=NOW - timedelta(seconds=40))):
        assert should_take(low, "zen2", "eessi", None, [unable, low], NOW, T)
    # Same priority: the less loaded one.
    busy, idle = agent("busy", holding=5), agent("idle", holding=1)
    assert not should_take(busy, "zen2", "eessi", None, [busy, idle], NOW, T)
    assert should_take(idle, "zen2", "eessi", None, [busy, idle], NOW, T)


def test_the_fleets_node_types_are_one_per_name_the_best_agent_first() -> None:
    other_zen2 = NodeKind("zen2", "x86_64/amd/zen2-elsewhere", None)
    unknown_repo = NodeKind("arm", "aarch64/a64fx", None, ("not-configured",))
    fleet = [agent("a", other_zen2), agent("b", ZEN2, GPU, unknown_repo, priority=1)]
    got = node_types(fleet, REPOS)
    assert [(n.name, n.cpu_target) for n in got] == [("zen2", "x86_64/amd/zen2"),
                                                    ("zen3-cc80", "x86_64/amd/zen3")]
    assert [n.name for n in node_types(fleet, REPOS, agent_filter="c-a")] == ["zen2"]
    assert names(fleet) == {"a", "b", "c-a", "c-b"}


def test_the_description_says_who_builds_what_and_who_is_alive() -> None:
    text = describe([agent("a"), agent("b", GPU, seen=100)], NOW, T, REPOS)
    assert "| `a` | `c-a` | connected | `zen2` | `x86_64/amd/zen2` | none | `eessi`, `dev` |" \
        in text
    assert "| `b` | `c-b` | lost | `zen3-cc80` | `x86_64/amd/zen3` | `nvidia/cc80` | `eessi` |" \
        in text
    assert describe([], NOW, T, REPOS).startswith("No agent has registered")
