"""The loops beyond the inbox and the outbox: submit queued jobs, reconcile active ones,
upload deployments, archive job directories (one replica at a time), beat the fleet
heartbeat (every replica)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from layerbot.backends.base import Backend
from layerbot.build.workspace import Mirrors
from layerbot.config import Config
from layerbot.deploy.service import Uploader
from layerbot.jobs.archiver import Archiver
from layerbot.jobs.reconciler import Reconciler
from layerbot.jobs.submitter import Submitter
from layerbot.operations import fleet
from layerbot.store.db import Store

Loop = Callable[[asyncio.Event], Coroutine[Any, Any, None]]


@dataclass(frozen=True)
class Workers:
    submitter: Submitter
    reconciler: Reconciler
    uploader: Uploader
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

        The submitter and the reconciler go together: each expects to be the only one
        acting on the instance's jobs (a second submitter would take the same queued job;
        the reconciler releases what the submitter recorded). The uploader resumes every
        'uploading' row at its start, and the archiver moves job directories: one each.
        """
        return [("jobs", self._jobs), ("deploy-uploader", self.uploader.run),
                ("job-archiver", self.archiver.run)]

    async def _jobs(self, stop: asyncio.Event) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self.submitter.run(stop))
            group.create_task(self.reconciler.run(stop))

    def wake(self) -> None:
        """New jobs or deployments were recorded: the loops that take them start at once."""
        self.submitter.wakeup.set()
        self.uploader.wakeup.set()


def make_workers(config: Config, store: Store, backend: Backend, mirrors: Mirrors,
                 wake_sender: Callable[[], None]) -> Workers:
    """The loops; each wakes the outbox sender after writing reports."""
    return Workers(
        submitter=Submitter(config, store, backend, mirrors, on_written=wake_sender),
        reconciler=Reconciler(config, store, backend, on_written=wake_sender),
        uploader=Uploader(config, store, on_written=wake_sender),
        archiver=Archiver(config, store, mirrors, job_user=backend.job_user),
        heartbeat=fleet.Heartbeat(config, store, backend),
    )
