"""The fleet's rules: which agent may build a job, which of them should, and how alive each is.

Pure: agents and jobs come in as plain values with the time; the control plane's lease code
(``operations/leases.py``) asks these functions and writes what they decide.

Why the choice is made when an agent claims: agents pull (they make outbound requests only),
so the server cannot hand a job to the best agent; it can only refuse it to a worse one.
A claiming agent gets a job when no other agent that could build it right now has a higher
priority, or the same priority and a lower load. The best agent is idle and polling, so the
job waits at most one claim for it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from layerbot.config import NodeType, RepoTarget
from layerbot.core.commands import code_span, pattern_matches


class AgentState(StrEnum):
    CONNECTED = "connected"  # heartbeat fresh
    DISCONNECTED = "disconnected"  # heartbeat late; its leases still hold
    LOST = "lost"  # gone longer than a lease: its unstarted jobs went elsewhere
    PAUSED = "paused"  # connected, gets no new work until resumed
    DRAINING = "draining"  # connected, finishes what it has, gets nothing new
    REVOKED = "revoked"  # its token was revoked: refused


@dataclass(frozen=True)
class NodeKind:
    name: str
    cpu_target: str
    accelerator: str | None
    repo_targets: tuple[str, ...] = ()  # empty: all
    os: str = "linux"

    def builds(self, repo_target: str) -> bool:
        return not self.repo_targets or repo_target in self.repo_targets


@dataclass(frozen=True)
class AgentView:
    name: str
    cluster: str
    priority: int
    concurrency: int
    node_types: tuple[NodeKind, ...]
    #: Jobs leased to it and not ended.
    holding: int
    heartbeat_at: datetime | None
    paused: bool = False
    draining: bool = False
    revoked: bool = False

    @property
    def free_slots(self) -> int:
        return max(0, self.concurrency - self.holding)

    @property
    def load(self) -> float:
        return self.holding / self.concurrency if self.concurrency else 1.0


@dataclass(frozen=True)
class Timing:
    heartbeat_seconds: float
    lease_seconds: float
    #: How long a started job of a silent agent waits beyond its lease before it is lost.
    grace_seconds: float


def agent_state(agent: AgentView, now: datetime, timing: Timing) -> AgentState:
    if agent.revoked:
        return AgentState.REVOKED
    silent = (now - agent.heartbeat_at if agent.heartbeat_at else None)
    if silent is None or silent > timedelta(seconds=timing.lease_seconds):
        return AgentState.LOST
    if silent > timedelta(seconds=3 * timing.heartbeat_seconds):
        return AgentState.DISCONNECTED
    if agent.paused:
        return AgentState.PAUSED
    if agent.draining:
        return AgentState.DRAINING
    return AgentState.CONNECTED


def takes_work(agent: AgentView, now: datetime, timing: Timing) -> bool:
    return agent_state(agent, now, timing) is AgentState.CONNECTED and agent.free_slots > 0


def can_build(agent: AgentView, node_type: str, repo_target: str,
              agent_filter: str | None) -> bool:
    """Whether ``agent`` has the job's node type for its repository target, and the
    command's ``inst:`` filter (if any) names the agent or its cluster."""
    if agent_filter is not None and not (pattern_matches(agent_filter, agent.name)
                                         or pattern_matches(agent_filter, agent.cluster)):
        return False
    return any(n.name == node_type and n.builds(repo_target) for n in agent.node_types)


def _rank(agent: AgentView) -> tuple[int, float]:
    return (-agent.priority, agent.load)


def should_take(claimant: AgentView, node_type: str, repo_target: str,
                agent_filter: str | None, fleet: Sequence[AgentView], now: datetime,
                timing: Timing) -> bool:
    """Whether the claiming agent gets this job (see the module's docstring)."""
    if not can_build(claimant, node_type, repo_target, agent_filter):
        return False
    mine = _rank(claimant)
    return not any(
        _rank(other) < mine for other in fleet
        if other.name != claimant.name and takes_work(other, now, timing)
        and can_build(other, node_type, repo_target, agent_filter))


def builders(fleet: Iterable[AgentView], node_type: str, repo_target: str,
             agent_filter: str | None = None) -> list[AgentView]:
    """Every agent (whatever its state) that could build the job."""
    return [a for a in fleet if not a.revoked
            and can_build(a, node_type, repo_target, agent_filter)]


def matches(agent: AgentView, agent_filter: str | None) -> bool:
    return agent_filter is None or pattern_matches(agent_filter, agent.name) \
        or pattern_matches(agent_filter, agent.cluster)


def node_types(fleet: Sequence[AgentView], repo_targets: Sequence[RepoTarget],
               agent_filter: str | None = None) -> list[NodeType]:
    """The node types the fleet can build on (of the agents ``agent_filter`` names), one per
    name: agents that share a name share the site's meaning of it, and the higher priority
    agent's definition is taken. Repository targets the control plane does not know are
    left out (an agent cannot add one)."""
    known = {r.id for r in repo_targets}
    out: dict[str, NodeType] = {}
    for agent in sorted(fleet, key=lambda a: (-a.priority, a.name)):
        if agent.revoked or not matches(agent, agent_filter):
            continue
        for kind in agent.node_types:
            repos = [r for r in kind.repo_targets if r in known]
            if kind.name in out or (kind.repo_targets and not repos):
                continue
            out[kind.name] = NodeType(name=kind.name, cpu_target=kind.cpu_target,
                                      accelerator=kind.accelerator, os=kind.os,
                                      repo_targets=repos)
    return list(out.values())


def names(fleet: Iterable[AgentView]) -> set[str]:
    """What ``inst:`` may name: each agent and its cluster."""
    return {n for a in fleet if not a.revoked for n in (a.name, a.cluster)}


def describe(fleet: Sequence[AgentView], now: datetime, timing: Timing,
             repo_targets: Sequence[RepoTarget]) -> str:
    """Who can build what and who is alive, as a markdown table (`show_config`, `probe`,
    and the answer to a build no agent can do)."""
    shown = [a for a in sorted(fleet, key=lambda a: a.name) if not a.revoked]
    if not shown:
        return "No agent has registered yet, so nothing can be built."
    all_ids = [r.id for r in repo_targets]
    rows = ["The fleet's agents can build:", "",
            "| agent | cluster | state | node type | CPU target | accelerator | "
            "repository targets |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    for agent in shown:
        state = agent_state(agent, now, timing).value
        kinds = agent.node_types or (NodeKind("(none)", "-", None),)
        for kind in kinds:
            repos = ", ".join(code_span(i) for i in (kind.repo_targets or all_ids)) or "(none)"
            accel = code_span(kind.accelerator) if kind.accelerator else "none"
            rows.append(f"| {code_span(agent.name)} | {code_span(agent.cluster)} | {state} | "
                        f"{code_span(kind.name)} | {code_span(kind.cpu_target)} | {accel} | "
                        f"{repos} |")
    return "\n".join(rows)
