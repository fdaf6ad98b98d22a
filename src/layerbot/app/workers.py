"""The loops beyond the inbox and the outbox: the agent inside `serve` (claim, submit,
reconcile, upload its jobs' deployments), the lease reaper and archiving (one replica at a
time), and the fleet heartbeat (every replica)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from layerbot import clock, log, metrics
from layerbot.agent.runner import AgentRunner
from layerbot.backends.base import Backend
from layerbot.build.workspace import Mirrors
from layerbot.config import Config
from layerbot.jobs.archiver import Archiver
from layerbot.loops import pause
from layerbot.operations import fleet, leases
from layerbot.operations.agent_ledger import builtin_agent
from layerbot.store.db import Store

Loop = Callable[[asyncio.Event], Coroutine[Any, Any, None]]

_log = log.get("fleet")


class LeaseReaper:
    """Leases of agents that went silent: their unstarted jobs back to the queue, their
    started ones lost after the grace (``operations.leases.reap``). One replica runs it."""

    def __init__(self, config: Config, store: Store,
                 on_written: Callable[[], None] = lambda: None, interval: float = 1.0) -> None:
        self.config = config
        self.store = store
        self.on_written = on_written
        self.interval = interval

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await asyncio.to_thread(self.reap_once)
            except Exception as exc:  # the database may be away for a moment
                _log.warning("reaping leases failed", error=f"{type(exc).__name__}: {exc}")
            await pause(stop, self.interval)

    def reap_once(self) -> leases.Reaped:
        with self.store.transaction() as s:
            reaped = leases.reap(s, self.config, clock.now())
        if reaped.requeued or reaped.lost:
            _log.warning("leases of silent agents ended", requeued=reaped.requeued,
                         lost=reaped.lost)
            metrics.LEASES_REAPED.labels(outcome="requeued").inc(len(reaped.requeued))
            metrics.LEASES_REAPED.labels(outcome="lost").inc(len(reaped.lost))
        if reaped.lost:
            self.on_written()
        return reaped


@dataclass(frozen=True)
class Workers:
    #: The agent inside `serve` (None when the clusters run `layerbot agent`).
    agent: AgentRunner | None
    reaper: LeaseReaper
    archiver: Archiver
    #: This instance's row in `instances` (alive, version, resources).
    heartbeat: fleet.Heartbeat

    @property
    def loops(self) -> list[Loop]:
        """The loops every replica runs."""
        return [self.heartbeat.run]

    @property
    def singletons(self) -> list[tuple[str, Loop]]:
        """The loops one replica of the instance runs at a time (``app/singletons.py``).

        The built-in agent is one agent (one name, one lease holder): two replicas running
        it would each prepare the jobs leased to it, and its uploads resume every
        'uploading' row of its own at their start. The lease reaper decides once per
        expired lease. The archiver moves job directories: one.
        """
        agent = [("builtin-agent", self.agent.run)] if self.agent else []
        return [*agent, ("lease-reaper", self.reaper.run), ("job-archiver", self.archiver.run)]

    def wake(self) -> None:
        """New jobs or deployments were recorded: the loops that take them start at once
        (a cluster's agent learns of them at its next poll)."""
        if self.agent:
            self.agent.wake()


def make_workers(config: Config, store: Store, backend: Backend, mirrors: Mirrors,
                 wake_sender: Callable[[], None]) -> Workers:
    """The loops; each wakes the outbox sender after writing reports."""
    agent = (builtin_agent(config, store, backend, mirrors, on_written=wake_sender)
             if config.fleet.builtin_agent else None)
    return Workers(
        agent=agent,
        reaper=LeaseReaper(config, store, on_written=wake_sender),
        archiver=Archiver(config, store, mirrors, job_user=backend.job_user),
        heartbeat=fleet.Heartbeat(config, store, backend),
    )
