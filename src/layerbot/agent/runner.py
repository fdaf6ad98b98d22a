"""An agent's loops: claim jobs, prepare and submit them, watch them, beat the heartbeat,
and stage the deployments of the jobs it built.

The same loops run in a cluster's ``layerbot agent`` (a remote ledger over HTTPS) and
inside an embedded ``serve`` (the store's ledger). They share one stop event and wait the
one way loops wait (``layerbot.loops.pause``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from layerbot import log
from layerbot.agent.ledger import Ledger, UploadLedger
from layerbot.agent.log_tails import LogTailSender
from layerbot.agent.reconciler import Reconciler
from layerbot.agent.step_cache import StepCache
from layerbot.agent.submitter import Submitter
from layerbot.agent.uploads import UploadLoop
from layerbot.backends.base import Backend
from layerbot.build.workspace import Mirrors
from layerbot.config import Config
from layerbot.core.protocol import Capabilities, HeartbeatResponse, NodeTypeCapability
from layerbot.deploy.upload import Stager, Stagings
from layerbot.loops import pause

_log = log.get("agent")

Loop = Callable[[asyncio.Event], Coroutine[Any, Any, None]]

#: How often the backend is asked for resources (they go with the next heartbeat).
RESOURCES_SECONDS = 300.0
RESOURCES_TIMEOUT_SECONDS = 30.0


class AgentRunner:
    def __init__(self, config: Config, ledger: Ledger, backend: Backend, mirrors: Mirrors,
                 *, claim_wait_seconds: float = 0.0,
                 lease_valid: Callable[[], bool] = lambda: True,
                 heartbeat_seconds: float | None = None,
                 uploads: UploadLedger | None = None, stager: Stager | None = None,
                 stagings: Stagings | None = None, upload_poll_seconds: float = 5.0,
                 send_log_tails: bool = True) -> None:
        """``claim_wait_seconds``: how long a claim may wait for work at the server (long
        poll; 0 for the store's ledger, which is woken when jobs are recorded).
        ``uploads``: where the deployments of this agent's jobs come from (None: it stages
        nothing); ``stager`` stages them (default: with this configuration's ``[deploy]``).
        ``stagings``: the staging areas, shared by the stager and the step cache.
        ``send_log_tails``: False where the control plane reads the job directories itself
        (the built-in agent), so running jobs' output is not read for nothing."""
        self.config = config
        self.ledger = ledger
        self.backend = backend
        self.concurrency = config.agent.concurrency
        self.claim_wait_seconds = claim_wait_seconds
        self.heartbeat_seconds = heartbeat_seconds or config.fleet.heartbeat_seconds
        stagings = stagings or Stagings(config)
        step_cache = StepCache.of(config, stagings)
        self.submitter = Submitter(config, ledger, backend, mirrors, config.agent_name,
                                   lease_valid=lease_valid, step_cache=step_cache)
        self.reconciler = Reconciler(config, ledger, backend, step_cache=step_cache)
        self.uploader = (UploadLoop(uploads, stager or Stager(config, stagings),
                                    upload_poll_seconds)
                         if uploads is not None else None)
        self.log_tails = (LogTailSender(ledger, config.reporting.log_tail_lines)
                          if send_log_tails and config.agent.log_tail_seconds > 0 else None)
        self.wakeup = asyncio.Event()
        self.paused = False
        self.draining = False
        self._next_resources = 0.0
        self._asking: asyncio.Task[dict[str, object]] | None = None

    @property
    def loops(self) -> list[Loop]:
        loops: list[Loop] = [self.submitter.run, self.reconciler.run, self.claim_loop,
                              self.heartbeat_loop]
        if self.log_tails is not None:
            loops.append(self.log_loop)
        return loops + ([self.uploader.run] if self.uploader else [])

    def wake(self) -> None:
        """New jobs or deployments may be waiting: claim at once."""
        self.wakeup.set()
        if self.uploader:
            self.uploader.wakeup.set()

    async def run(self, stop: asyncio.Event) -> None:
        await asyncio.gather(*(loop(stop) for loop in self.loops))

    # --- claims -------------------------------------------------------------------------

    async def claim_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            got = 0
            try:
                got = await self.claim_once()
            except Exception as exc:
                _log.warning("claiming jobs failed", error=f"{type(exc).__name__}: {exc}")
                await pause(stop, 5.0)
                continue
            if got:
                self.submitter.wakeup.set()
                continue  # more may be waiting
            await pause(stop, 1.0, self.wakeup)

    async def claim_once(self) -> int:
        if self.paused or self.draining:
            return 0
        slots = await asyncio.to_thread(self._free_slots)
        if slots <= 0:
            return 0
        jobs = await asyncio.to_thread(self.ledger.claim, slots, self.claim_wait_seconds)
        if jobs:
            _log.info("jobs claimed", jobs=[j.id for j in jobs])
        return len(jobs)

    async def submit_ready(self) -> int:
        """Claim what this agent may, and prepare and submit it (one pass, for scripts)."""
        await self.claim_once()
        return await self.submitter.submit_queued()

    def _free_slots(self) -> int:
        return max(0, self.concurrency - self.ledger.holding())

    # --- log tails ----------------------------------------------------------------------

    async def log_loop(self, stop: asyncio.Event) -> None:
        """The last lines of each running job's output, sent when they changed (and again
        until delivered: ``agent/log_tails.py``)."""
        while not stop.is_set():
            await pause(stop, self.config.agent.log_tail_seconds)
            try:
                if self.log_tails is not None:
                    await asyncio.to_thread(self.log_tails.send_changed)
            except Exception as exc:
                _log.warning("sending log tails failed", error=f"{type(exc).__name__}: {exc}")

    # --- heartbeat ----------------------------------------------------------------------

    async def heartbeat_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.beat()
            await pause(stop, self.heartbeat_seconds)

    async def beat(self) -> HeartbeatResponse | None:
        """One heartbeat; never raises (a server away for a moment is retried)."""
        resources = await self._resources()
        try:
            slots = await asyncio.to_thread(self._free_slots)
            answer = await asyncio.to_thread(self.ledger.heartbeat, slots, resources)
        except Exception as exc:
            _log.warning("heartbeat failed", error=f"{type(exc).__name__}: {exc}")
            return None
        if (answer.paused, answer.draining) != (self.paused, self.draining):
            _log.info("agent state", paused=answer.paused, draining=answer.draining)
        self.paused, self.draining = answer.paused, answer.draining
        return answer

    async def _resources(self) -> dict[str, object] | None:
        """The backend's resources when a refresh has just come in (else None: the server
        keeps the last ones). The backend is asked beside the beat, never in its way: a
        slow scheduler must not make the agent look dead."""
        if self._asking is not None and self._asking.done():
            task, self._asking = self._asking, None
            return task.result()
        if self._asking is None and time.monotonic() >= self._next_resources:
            self._asking = asyncio.create_task(self._ask_resources())
        return None

    async def _ask_resources(self) -> dict[str, object]:
        try:
            res = await asyncio.wait_for(self.backend.resources(),
                                         timeout=RESOURCES_TIMEOUT_SECONDS)
        except Exception as exc:
            self._next_resources = time.monotonic() + RESOURCES_TIMEOUT_SECONDS
            return {"error": f"{type(exc).__name__}: {exc}"[:500]}
        self._next_resources = time.monotonic() + RESOURCES_SECONDS
        return dataclasses.asdict(res)


def capabilities_of(config: Config, resources: Mapping[str, object] | None = None
                    ) -> Capabilities:
    """What this configuration's node types and backend can build."""
    return Capabilities(
        backend=config.backend.kind, concurrency=config.agent.concurrency,
        node_types=[NodeTypeCapability(name=n.name, cpu_target=n.cpu_target,
                                       accelerator=n.accelerator, os=n.os,
                                       repo_targets=list(n.repo_targets))
                    for n in config.node_types],
        resources=dict(resources) if resources is not None else None)
