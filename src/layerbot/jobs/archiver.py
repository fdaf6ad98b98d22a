"""Job directories of closed PRs are packed away after a retention, freeing the disk.

Artifacts that were deployed stay in staging; the archive keeps logs and results for later
inspection. A job is archived once: the `archived` flag is set in the same step.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select

from layerbot import clock, log
from layerbot.build import jobdir
from layerbot.build.handover import remove_job_dir
from layerbot.build.identity import JobUser
from layerbot.build.workspace import Mirrors
from layerbot.config import Config
from layerbot.core.jobs import TERMINAL
from layerbot.store.db import Store
from layerbot.store.models import Build, Job

_log = log.get("jobs")

INTERVAL_SECONDS = 600


class Archiver:
    def __init__(self, config: Config, store: Store, mirrors: Mirrors,
                 job_user: JobUser | None = None) -> None:
        self.config = config
        self.store = store
        self.mirrors = mirrors
        #: Who the jobs ran as: without root, it removes what it created (handover).
        self.job_user = job_user

    @property
    def archive_root(self) -> Path:
        return self.config.instance.data_dir / "archive"

    def due(self) -> list[tuple[int, str]]:
        """(job id, job dir) of finished jobs of PRs closed longer than the retention, of
        this machine's own (built-in) agent: another agent's directories are on its
        cluster, not here."""
        cutoff = clock.now() - timedelta(days=self.config.build.archive_after_days)
        with self.store.read() as s:
            rows = s.execute(
                select(Job.id, Job.job_dir).join(Build, Build.id == Job.build_id)
                .where(Job.instance == self.config.instance.name,
                       Job.agent == self.config.agent_name, Build.closed_at.is_not(None),
                       Build.closed_at <= cutoff, Job.archived.is_(False),
                       Job.state.in_([s.value for s in TERMINAL]))
            ).all()
        return [(int(i), str(d)) for i, d in rows if d]

    async def archive_due(self) -> int:
        done = 0
        for job_id, directory in self.due():
            path = Path(directory)
            try:
                target = await asyncio.to_thread(self._archive, path)
                if target is not None:
                    _log.info("job directory archived", job_id=job_id, archive=str(target))
            except OSError as exc:
                _log.warning("archiving failed", job_id=job_id, error=str(exc))
                continue
            with self.store.transaction() as s:
                job = s.get(Job, job_id)
                if job is not None:
                    job.archived = True
            done += 1
        if done:
            await self.mirrors.prune()
        return done

    def _archive(self, path: Path) -> Path | None:
        if not path.is_dir():
            return None
        return jobdir.archive(path, self.archive_root,
                              remove=lambda p: remove_job_dir(p, self.job_user))

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.archive_due()
            except Exception:
                _log.exception("archiver crashed")
            try:
                await asyncio.wait_for(stop.wait(), timeout=INTERVAL_SECONDS)
            except TimeoutError:
                pass
