"""The loops beyond the inbox and the outbox: submit queued jobs, reconcile active ones,
upload deployments, archive job directories, beat the fleet heartbeat."""

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
        return [self.submitter.run, self.reconciler.run, self.uploader.run, self.archiver.run,
                self.heartbeat.run]

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
