"""The fleet's agents as the control center, the CLI and the agent API manage them.

An agent is added by name with a token made for it (printed once; only its sha256 is kept,
so a leaked database holds no usable token), can be paused, resumed, drained and given a
priority, and its token revoked. Whoever can run the CLI on the control plane's machine, or
has the ``pause`` permission in the control center, manages agents.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from layerbot.config import Config
from layerbot.core import fleet
from layerbot.operations import leases
from layerbot.store.db import Store
from layerbot.store.models import Agent

#: Agent tokens are told apart from API tokens at a glance (and by secret scanners).
TOKEN_PREFIX = "lba_"  # noqa: S105
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class AgentError(ValueError):
    """A request about agents that cannot be done; the message says why."""


def hash_token(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def add(store: Store, name: str, by: str, now: datetime, *, cluster: str = "",
        priority: int = 0) -> str:
    """A new agent and its token (returned once); a revoked agent's name may be reused."""
    if not NAME.match(name):
        raise AgentError(f"{name!r}: an agent name is letters, digits, '.', '_' or '-' "
                         "(at most 100), e.g. cluster-a")
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with store.transaction() as s:
        agent = s.get(Agent, name)
        if agent is not None and agent.revoked_at is None and not agent.builtin:
            raise AgentError(f"agent {name} exists; revoke it first to make a new token "
                             f"(`layerbot agents revoke {name}`)")
        if agent is not None and agent.builtin:
            raise AgentError(f"{name} is the agent inside `serve`; choose another name")
        if agent is None:
            agent = Agent(name=name, created_at=now)
            s.add(agent)
        agent.cluster = cluster or agent.cluster or name
        agent.builtin = False
        agent.created_by = by
        agent.created_at = now
        agent.revoked_at = None
        agent.priority = priority
        agent.paused = agent.draining = False
        agent.token_hash = hash_token(secret)
        agent.token_prefix = secret[:10]
    return secret


def authenticate_digest(store: Store, digest: str) -> Agent | None:
    """The agent whose token's sha256 is ``digest`` (None: unknown or revoked)."""
    with store.read() as s:
        agent = s.scalar(select(Agent).where(Agent.token_hash == digest))
    if agent is None or agent.revoked_at is not None or agent.token_hash is None:
        return None
    # The lookup was by an index; compare again in constant time all the same.
    return agent if hmac.compare_digest(agent.token_hash, digest) else None


def claimant(session: Session, config: Config, digest: str) -> leases.Claimant | None:
    """The agent whose token's sha256 is ``digest``, read as its claim needs it, in the
    claim's own transaction (None: unknown or revoked token). A claim is the agent
    protocol's busiest request: authenticating it apart would cost it a transaction."""
    me = leases.claimant(session, config, token_hash=digest)
    if me is None or me.view.revoked or me.token_hash is None:
        return None
    return me if hmac.compare_digest(me.token_hash, digest) else None


def beat(session: Session, config: Config, digest: str, holding: Mapping[int, str],
         free_slots: int, resources: Mapping[str, Any] | None, now: datetime
         ) -> leases.Beat | None:
    """The heartbeat of the agent whose token's sha256 is ``digest``, authenticated in the
    beat's own transaction (None: unknown or revoked token). The beat is written before
    the token is compared again in constant time: on None, the caller must roll back
    (raising inside ``store.transaction()`` does)."""
    done = leases.beat(session, config, digest, holding, free_slots, resources, now)
    if done is None or not hmac.compare_digest(done.token_hash, digest):
        return None
    return done


def revoke(store: Store, name: str, now: datetime) -> None:
    with store.transaction() as s:
        agent = _agent(s.get(Agent, name), name)
        agent.revoked_at = now
        agent.token_hash = None


def set_flags(store: Store, name: str, *, paused: bool | None = None,
              draining: bool | None = None, priority: int | None = None) -> Agent:
    with store.transaction() as s:
        agent = _agent(s.get(Agent, name), name)
        if paused is not None:
            agent.paused = paused
        if draining is not None:
            agent.draining = draining
        if priority is not None:
            agent.priority = priority
        return agent


def _agent(agent: Agent | None, name: str) -> Agent:
    if agent is None:
        raise AgentError(f"no agent named {name} (`layerbot agents list` shows them)")
    return agent


@dataclass(frozen=True)
class AgentSummary:
    """One agent as the control center and `layerbot agents list` show it."""

    name: str
    cluster: str
    state: fleet.AgentState
    builtin: bool
    version: str | None
    protocol: int | None
    priority: int
    concurrency: int
    holding: int
    free_slots: int | None
    node_types: list[str]
    heartbeat_at: datetime | None
    token_prefix: str | None
    created_by: str
    paused: bool = False
    draining: bool = False
    kinds: tuple[fleet.NodeKind, ...] = ()
    registered_at: datetime | None = None


def summaries(store: Store, config: Config, now: datetime) -> list[AgentSummary]:
    t = leases.timing(config)
    with store.read() as s:
        agents = {a.name: a for a in s.scalars(select(Agent).order_by(Agent.name))}
        views = leases.fleet_views(s)
    out = []
    for v in sorted(views, key=lambda v: v.name):
        a = agents[v.name]
        load = a.load or {}
        out.append(AgentSummary(
            name=v.name, cluster=v.cluster, state=fleet.agent_state(v, now, t),
            builtin=a.builtin, version=a.version, protocol=a.protocol, priority=v.priority,
            concurrency=v.concurrency, holding=v.holding, free_slots=load.get("free_slots"),
            node_types=[f"{n.name} ({n.cpu_target}{' + ' + n.accelerator if n.accelerator else ''})"
                        for n in v.node_types],
            heartbeat_at=a.heartbeat_at, token_prefix=a.token_prefix,
            created_by=a.created_by, paused=a.paused, draining=a.draining,
            kinds=v.node_types, registered_at=a.registered_at))
    return out
