"""The fleet: each instance keeps its own row in ``instances`` fresh, so others can see it.

The heartbeat says the instance is alive; the resources (partitions and nodes from the
backend) are refreshed less often, because asking Slurm costs more than a database write.
A backend that does not answer never stops the heartbeat: the row keeps the last resources
it had, with the error beside them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from layerbot import __version__, clock, log
from layerbot.agent.runner import capabilities_of
from layerbot.backends.base import Backend
from layerbot.config import Config, NodeType
from layerbot.core import fleet as core_fleet
from layerbot.operations import leases
from layerbot.store.db import Store
from layerbot.store.models import Instance

_log = log.get("fleet")

#: How often an instance writes its heartbeat.
HEARTBEAT_SECONDS = 15.0
#: How often it asks its backend for resources.
RESOURCES_SECONDS = 300.0
#: A heartbeat older than this many intervals means the instance is gone (or stuck).
ALIVE_FACTOR = 3
#: The backend gets this long to answer for resources before the beat goes on without.
RESOURCES_TIMEOUT_SECONDS = 30.0


def is_alive(heartbeat_at: datetime | None, now: datetime,
             interval: float = HEARTBEAT_SECONDS) -> bool:
    if heartbeat_at is None:
        return False
    return now - heartbeat_at < timedelta(seconds=ALIVE_FACTOR * interval)


class Heartbeat:
    def __init__(self, config: Config, store: Store, backend: Backend,
                 interval: float = HEARTBEAT_SECONDS,
                 resources_interval: float = RESOURCES_SECONDS) -> None:
        self.config = config
        self.store = store
        self.backend = backend
        self.interval = interval
        self.resources_interval = resources_interval
        self.started_at = clock.now()
        self._next_resources = 0.0  # monotonic time; 0: at the first beat

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.beat()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.interval)

    async def beat(self) -> None:
        """One heartbeat (with resources when they are due); never raises."""
        resources: dict[str, Any] | None = None
        if time.monotonic() >= self._next_resources:
            resources = await self._resources()
        try:
            await asyncio.to_thread(self._write, clock.now(), resources)
        except Exception as exc:  # the database may be down for a moment: beat again later
            _log.warning("heartbeat not written", error=f"{type(exc).__name__}: {exc}")

    async def _resources(self) -> dict[str, Any]:
        now = clock.now()
        try:
            res = await asyncio.wait_for(self.backend.resources(),
                                         timeout=RESOURCES_TIMEOUT_SECONDS)
        except Exception as exc:
            # Retry at the next beat rather than in minutes: the backend may be back soon.
            self._next_resources = time.monotonic() + self.interval
            _log.warning("backend resources unavailable", error=f"{type(exc).__name__}: {exc}")
            return {"error": f"{type(exc).__name__}: {exc}"[:500], "updated_at": now.isoformat()}
        self._next_resources = time.monotonic() + self.resources_interval
        data = dataclasses.asdict(res)
        data["updated_at"] = now.isoformat()
        data["error"] = None
        return data

    def _write(self, now: datetime, resources: dict[str, Any] | None) -> None:
        name = self.config.instance.name
        with self.store.transaction() as s:
            row = s.get(Instance, name)
            if row is None:
                row = Instance(name=name, paused=False, started_at=self.started_at)
                s.add(row)
            row.version = __version__
            row.backend = self.config.backend.kind
            row.started_at = self.started_at
            row.heartbeat_at = now
            if resources is not None:
                if resources.get("error") and row.resources and row.resources.get("partitions"):
                    # Keep what was last known, and say that it could not be refreshed.
                    resources = {**row.resources, "error": resources["error"]}
                row.resources = resources


@dataclass(frozen=True)
class FleetSnapshot:
    """The fleet as a handler sees it while it decides: who can build what."""

    agents: list[core_fleet.AgentView]
    timing: core_fleet.Timing
    now: datetime
    #: Whether any agent besides the one inside `serve` is registered.
    remote: bool

    def node_types(self, config: Config, agent_filter: str | None = None) -> list[NodeType]:
        return core_fleet.node_types(self.agents, config.repo_targets, agent_filter)

    def names(self) -> set[str]:
        return core_fleet.names(self.agents)

    def describe(self, config: Config) -> str:
        return core_fleet.describe(self.agents, self.now, self.timing, config.repo_targets)


def snapshot(store: Store, config: Config, now: datetime) -> FleetSnapshot:
    with store.read() as s:
        return snapshot_in(s, config, now)


def snapshot_in(session: Session, config: Config, now: datetime) -> FleetSnapshot:
    views = leases.fleet_views(session)
    if config.fleet.builtin_agent and not any(v.name == config.agent_name for v in views):
        # `serve` registers its agent at start; until then it is known from the file.
        caps = capabilities_of(config)
        views.append(core_fleet.AgentView(
            name=config.agent_name, cluster=config.agent_cluster, priority=0,
            concurrency=caps.concurrency, node_types=leases.node_kinds(caps.model_dump()),
            holding=0, heartbeat_at=now))
    builtin = config.agent_name if config.fleet.builtin_agent else None
    return FleetSnapshot([v for v in views if not v.revoked], leases.timing(config), now,
                         remote=any(v.name != builtin for v in views if not v.revoked))

