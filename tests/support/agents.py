"""Agents of the fleet in a store, as registration and heartbeats leave them (tests)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta

from layerbot.config import Config
from layerbot.core.protocol import PROTOCOL_VERSION, Capabilities, NodeTypeCapability
from layerbot.operations import agents, leases
from layerbot.store.db import Store
from layerbot.store.models import Agent, Job

ZEN2 = ("zen2", "x86_64/amd/zen2")


def add_agent(store: Store, config: Config, name: str, now: datetime, *, cluster: str,
              silent_for: timedelta = timedelta(0), concurrency: int = 2,
              node_types: Sequence[tuple[str, str]] = (ZEN2,), version: str = "1.2.3",
              paused: bool = False, draining: bool = False, registered: bool = True) -> None:
    """An agent added with a token, registered (unless not ``registered``) with its node
    types, last heard of ``silent_for`` before ``now``."""
    agents.add(store, name, "operator", now - timedelta(hours=1), cluster=cluster)
    with store.transaction() as s:
        agent = s.get(Agent, name)
        assert agent is not None
        if registered:
            caps = Capabilities(backend="slurm", concurrency=concurrency, node_types=[
                NodeTypeCapability(name=n, cpu_target=c) for n, c in node_types])
            leases.register(s, config, agent, PROTOCOL_VERSION, version, cluster, caps,
                            now - silent_for)
        agent.paused = paused
        agent.draining = draining


def lease(store: Store, job_ids: Sequence[int], agent: str, now: datetime) -> None:
    """Lease jobs to ``agent`` as a claim would."""
    with store.transaction() as s:
        for job_id in job_ids:
            job = s.get(Job, job_id)
            assert job is not None
            job.agent = agent
            job.lease_id = uuid.uuid4().hex
            job.lease_until = now + timedelta(minutes=1)
