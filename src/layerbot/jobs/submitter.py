"""The submitter: queued jobs become prepared job directories handed to the backend.

Crossing into the batch system is the step that must not happen twice: before submitting,
the backend is asked whether it already has a job under this job's tag (a crash between
submit and recording the backend id); with hold_release the job is only released once its
id is recorded.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from sqlalchemy import select

from layerbot import clock, log
from layerbot.backends.base import (
    OUTPUT_PATTERN,
    Backend,
    BackendUnavailable,
    SubmitError,
    SubmitRequest,
)
from layerbot.build import jobdir
from layerbot.build.handover import remove_job_dir
from layerbot.build.workspace import (
    FetchError,
    MergeConflict,
    Mirror,
    Mirrors,
    Prepared,
    RefNotFound,
    WorkspaceError,
)
from layerbot.config import Config
from layerbot.core.facts import JobFacts
from layerbot.core.jobs import JobState
from layerbot.events.reporting import report_build
from layerbot.loops import pause
from layerbot.store import jobs as jobstore
from layerbot.store.db import Store
from layerbot.store.models import Build, Instance, Job

_log = log.get("jobs")

#: How long to leave the backend alone after it was unavailable.
UNAVAILABLE_RETRY_SECONDS = 30.0

#: The job's stdout and stderr, in its directory.
#: The job's output before layerbot used EESSI's ``slurm-<ID>.out`` (kept for old jobs).
LOG_NAME = "layerbot-job.log"


class Submitter:
    def __init__(self, config: Config, store: Store, backend: Backend, mirrors: Mirrors,
                 on_written: object = None, concurrency: int = 4) -> None:
        self.config = config
        self.store = store
        self.backend = backend
        self.mirrors = mirrors
        self.on_written = on_written if callable(on_written) else (lambda: None)
        self.wakeup = asyncio.Event()
        self._slots = asyncio.Semaphore(concurrency)
        self._busy: set[int] = set()
        self._paused_until = 0.0  # monotonic time before which the backend is not asked

    async def run(self, stop: asyncio.Event) -> None:
        await self._release_recorded()
        while not stop.is_set():
            await self.submit_queued()
            await pause(stop, 1.0, self.wakeup)

    async def _release_recorded(self) -> None:
        """Jobs recorded as submitted by a run that died before releasing them."""
        with self.store.read() as s:
            ids = [j.backend_id for j in jobstore.active_jobs(s, self.config.instance.name)
                   if j.state == JobState.SUBMITTED.value and j.backend_id]
        if ids:
            try:
                await self.backend.release([i for i in ids if i])
            except Exception as exc:
                _log.warning("releasing recorded jobs failed", error=str(exc))

    def _paused(self) -> bool:
        with self.store.read() as s:
            inst = s.get(Instance, self.config.instance.name)
            return bool(inst and inst.paused)

    async def submit_queued(self) -> int:
        """Prepare and submit every queued job of this instance; returns how many."""
        if time.monotonic() < self._paused_until or await asyncio.to_thread(self._paused):
            return 0
        with self.store.read() as s:
            ids = list(s.scalars(select(Job.id).where(
                Job.instance == self.config.instance.name,
                Job.state == JobState.QUEUED.value).order_by(Job.id)))
        ids = [i for i in ids if i not in self._busy]
        self._busy.update(ids)
        try:
            await asyncio.gather(*(self._submit_one(i) for i in ids))
        finally:
            self._busy.difference_update(ids)
        return len(ids)

    async def _submit_one(self, job_id: int) -> None:
        async with self._slots:
            with log.bound(job_id=job_id):
                try:
                    await self._prepare_and_submit(job_id)
                except Exception as exc:  # never let one job stop the others
                    _log.exception("submission crashed")
                    await asyncio.to_thread(self._fail, job_id,
                                            f"internal error while submitting: {exc}")

    async def _prepare_and_submit(self, job_id: int) -> None:
        with self.store.read() as s:
            job = s.get(Job, job_id)
            build = s.get(Build, job.build_id) if job else None
        if job is None or build is None or job.state != JobState.QUEUED.value:
            return
        facts = JobFacts.from_json(job.facts)
        dest = Path(job.job_dir) if job.job_dir else None
        try:
            backend_id = None
            if dest is not None:  # an earlier attempt got this far: did it submit?
                backend_id = await self.backend.find(job.id, self.config.instance.name, dest)
            base_sha = job.base_sha
            if backend_id is None:
                dest = await self._new_job_dir(build, job, dest)
                if dest is None:
                    return  # cancelled meanwhile
                mirror, prepared = await self._prepare(build, job, dest)
                base_sha = prepared.base_sha
                # EESSI's build scripts expect the PR's diff beside the checkout.
                diff = (await self.mirrors.diff(mirror, prepared.base_sha, prepared.head_sha)
                        if build.pr else None)
                written = jobdir.write_job_files(
                    dest, facts, prepared=prepared, site_config=self.config.build.site_config,
                    allowed_exportvars=self.config.build.allowed_exportvars, pr_diff=diff)
                facts = written.facts
                backend_id = await self.backend.submit(
                    self._request(job, facts, dest, written.env))
        except MergeConflict as exc:
            files = ", ".join(f"`{f}`" for f in exc.files) or "(git named none)"
            return await asyncio.to_thread(
                self._fail, job_id, f"merge conflict with `{build.base_ref}` in {files}")
        except (FetchError, RefNotFound) as exc:
            return await asyncio.to_thread(self._fail, job_id, f"git: {exc}")
        except jobdir.ExportVariablesRefused as exc:
            return await asyncio.to_thread(self._fail, job_id, str(exc))
        except WorkspaceError as exc:
            return await asyncio.to_thread(self._fail, job_id, f"preparing the job failed: {exc}")
        except BackendUnavailable as exc:
            # The scheduler is down: the job stays queued and is submitted when it is back.
            self._paused_until = time.monotonic() + UNAVAILABLE_RETRY_SECONDS
            _log.warning("backend unavailable; job stays queued", error=str(exc))
            return None
        except SubmitError as exc:
            return await asyncio.to_thread(
                self._fail, job_id, f"{self.backend.name} refused the job: {exc}")
        recorded = await asyncio.to_thread(self._submitted, job_id, backend_id, base_sha,
                                           str(dest), facts)
        if not recorded:  # cancelled while it was being prepared: take it back
            await self.backend.cancel(backend_id)
            return
        await self.backend.release([backend_id])
        _log.info("job submitted", backend_id=backend_id)

    async def _new_job_dir(self, build: Build, job: Job, old: Path | None) -> Path | None:
        """A fresh job directory, recorded on the job before anything is put in it, so a
        later attempt knows which directory proves a submission (``Backend.find``). What an
        attempt that died before submitting left behind is removed."""
        try:
            if old is not None:
                await asyncio.to_thread(remove_job_dir, old, self.backend.job_user)
            dest = await asyncio.to_thread(
                jobdir.create_job_dir, self.config.jobs_dir, build.repo, job.id, pr=build.pr,
                ref=None if build.pr else build.base_ref)
        except OSError as exc:  # reported as "preparing the job failed: ..."
            raise WorkspaceError(f"the job directory: {exc}") from exc
        if not await asyncio.to_thread(self._record_job_dir, job.id, dest):
            await asyncio.to_thread(remove_job_dir, dest, self.backend.job_user)
            return None
        return dest

    def _record_job_dir(self, job_id: int, dest: Path) -> bool:
        with self.store.transaction() as s:
            job = s.get(Job, job_id)
            if job is None or JobState(job.state) is not JobState.QUEUED:
                return False
            job.job_dir = str(dest)
        return True

    async def _prepare(self, build: Build, job: Job, dest: Path) -> tuple[Mirror, Prepared]:
        refs = [build.base_ref] + ([f"refs/pull/{build.pr}/head"] if build.pr else [])
        mirror = await self.mirrors.fetch(build.clone_url, refs)
        return mirror, await self.mirrors.prepare(mirror, job.head_sha, build.base_ref, dest)

    def _request(self, job: Job, facts: JobFacts, dest: Path, env: dict[str, str]) -> SubmitRequest:
        script = self.config.build.job_script
        path = Path(script) if os.path.isabs(script) else dest / script
        node = next((n for n in self.config.node_types if n.name == job.node_type), None)
        limit = int(self.config.build.time_limit_minutes * 60)
        # Site defaults (in the backend), then the node type, then what the command set.
        options = {**(node.options if node else {}), **facts.batch_options}
        return SubmitRequest(job_id=job.id, instance=self.config.instance.name, job_dir=dest,
                             script=path, env=self._env(env), time_limit_seconds=limit,
                             options=options,
                             # EESSI's name: its check scripts read slurm-$SLURM_JOB_ID.out
                             log_file=dest / OUTPUT_PATTERN)

    def _env(self, job_env: dict[str, str]) -> dict[str, str]:
        """Only allowlisted variables of the bot's own environment: never its secrets."""
        allowed = {k: os.environ[k] for k in self.config.build.env_allowlist if k in os.environ}
        return {**allowed, **self.config.build.env, **job_env}

    def _submitted(self, job_id: int, backend_id: str, base_sha: str | None, dest: str,
                   facts: JobFacts) -> bool:
        now = clock.now()
        with self.store.transaction() as s:
            job = s.get(Job, job_id)
            if job is None or JobState(job.state) is not JobState.QUEUED:
                return False
            jobstore.transition(s, job, JobState.SUBMITTED, now, backend_id=backend_id,
                                base_sha=base_sha, job_dir=dest, facts=facts.to_json())
            build = s.get(Build, job.build_id)
            if build is not None:
                report_build(s, self.config, build, now, changed=[job])
        self.on_written()
        return True

    def _fail(self, job_id: int, reason: str) -> None:
        now = clock.now()
        _log.warning("job failed before it ran", reason=reason, job_id=job_id)
        with self.store.transaction() as s:
            job = s.get(Job, job_id)
            if job is None or JobState(job.state).terminal:
                return
            jobstore.transition(s, job, JobState.FAILED, now, reason=reason)
            build = s.get(Build, job.build_id)
            if build is not None:
                report_build(s, self.config, build, now, changed=[job])
        self.on_written()
