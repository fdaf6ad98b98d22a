"""The submitter: leased jobs become prepared job directories handed to the backend.

Crossing into the batch system is the step that must not happen twice: the job's directory
(unpredictable, created exclusively) is recorded in the ledger before anything is put in it,
so a later attempt asks the backend whether it already has a job running there
(``Backend.find``); with hold_release the job is only released once the ledger has recorded
its backend id, and a job the ledger refuses (cancelled, or its lease gone) is cancelled
instead. Where jobs come from and where their states go is the ledger's business
(``agent/ledger.py``).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from layerbot import log
from layerbot.agent.ledger import ActiveJob, Ledger
from layerbot.agent.step_cache import FetchFailed, StepCache
from layerbot.backends.base import (
    OUTPUT_PATTERN,
    Backend,
    BackendUnavailable,
    SubmitError,
    SubmitRequest,
)
from layerbot.build import jobdir
from layerbot.build import steps as step_files
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
from layerbot.core.pipeline import STEP_OUTPUT, StepResources
from layerbot.core.protocol import JobSpec
from layerbot.loops import pause

_log = log.get("jobs")

#: How long to leave the backend alone after it was unavailable.
UNAVAILABLE_RETRY_SECONDS = 30.0

#: The job's output before layerbot used EESSI's ``slurm-<ID>.out`` (kept for old jobs).
LOG_NAME = "layerbot-job.log"


@dataclass(frozen=True)
class Needs:
    """What a step needs, ready to hand over: directories by step id, backend ids."""

    dirs: dict[str, Path]
    after_ok: tuple[str, ...]


def by_pipeline(jobs: list[JobSpec]) -> dict[object, list[list[JobSpec]]]:
    """Jobs grouped by pipeline, each group in levels by the steps' depth (a job outside a
    pipeline is a group of its own)."""
    groups: dict[object, dict[int, list[JobSpec]]] = {}
    for job in jobs:
        step = job.facts.get("step") or {}
        key = ("pipeline", step["pipeline"]) if step.get("pipeline") else ("job", job.id)
        groups.setdefault(key, {}).setdefault(int(step.get("depth") or 0), []).append(job)
    return {k: [levels[d] for d in sorted(levels)] for k, levels in groups.items()}


class Submitter:
    def __init__(self, config: Config, ledger: Ledger, backend: Backend, mirrors: Mirrors,
                 agent: str, concurrency: int = 4,
                 lease_valid: Callable[[], bool] = lambda: True,
                 step_cache: StepCache | None = None) -> None:
        """``agent``: the name the backend tags jobs with; ``lease_valid``: whether this
        agent's leases still hold (nothing is submitted once they may have ended);
        ``step_cache``: where artifacts of cached steps other agents built are fetched from
        (default: this configuration's staging area)."""
        self.config = config
        self.ledger = ledger
        self.backend = backend
        self.mirrors = mirrors
        self.agent = agent
        self.lease_valid = lease_valid
        self.step_cache = step_cache or StepCache.of(config)
        self.wakeup = asyncio.Event()
        self._slots = asyncio.Semaphore(concurrency)
        self._busy: set[int] = set()
        self._paused_until = 0.0  # monotonic time before which the backend is not asked

    async def run(self, stop: asyncio.Event) -> None:
        await self._release_recorded()
        while not stop.is_set():
            await self.submit_queued()
            await self._release_late()
            await pause(stop, 1.0, self.wakeup)

    async def _release_late(self) -> None:
        try:
            ids = await asyncio.to_thread(self.ledger.late_submissions)
            if ids:
                await self.backend.release(ids)
                _log.info("jobs released after their submission was accepted late", ids=ids)
        except Exception as exc:  # asked again: the ledger keeps them until released
            _log.warning("releasing late submissions failed", error=str(exc))

    async def _release_recorded(self) -> None:
        """Jobs recorded as submitted by a run that died before releasing them."""
        try:
            ids = await asyncio.to_thread(self.ledger.held)
            if ids:
                await self.backend.release(ids)
        except Exception as exc:
            _log.warning("releasing recorded jobs failed", error=str(exc))

    async def submit_queued(self) -> int:
        """Prepare and submit every job leased to this agent; returns how many."""
        if time.monotonic() < self._paused_until:
            return 0
        jobs = [j for j in await asyncio.to_thread(self.ledger.queued) if j.id not in self._busy]
        self._busy.update(j.id for j in jobs)
        try:
            await asyncio.gather(*(self._submit_levels(levels)
                                   for levels in by_pipeline(jobs).values()))
        finally:
            self._busy.difference_update(j.id for j in jobs)
        return len(jobs)

    async def _submit_levels(self, levels: list[list[JobSpec]]) -> None:
        """A pipeline's steps level by level (a step after those it needs, which it names
        to the backend by their ids): all of them in one round, as early as possible."""
        for level in levels:
            # What this agent runs, read once a level (a step names the backend ids of the
            # steps it needs, submitted by the level before).
            running = ({a.id: a for a in await asyncio.to_thread(self.ledger.active)}
                       if any(j.facts.get("role") == "step" for j in level) else {})
            await asyncio.gather(*(self._submit_one(j, running) for j in level))

    async def _submit_one(self, job: JobSpec, running: Mapping[int, ActiveJob]) -> None:
        async with self._slots:
            with log.bound(job_id=job.id):
                try:
                    await self._prepare_and_submit(job, running)
                except Exception as exc:  # never let one job stop the others
                    _log.exception("submission crashed")
                    await asyncio.to_thread(self.ledger.fail, job,
                                            f"internal error while submitting: {exc}")

    async def _prepare_and_submit(self, job: JobSpec, running: Mapping[int, ActiveJob]
                                  ) -> None:
        facts = JobFacts.from_json(job.facts)
        needs = Needs({}, ())
        if facts.role == "step":
            try:
                ready = await asyncio.to_thread(self._needs, facts, running)
            except FetchFailed as exc:
                return await self._fail(job, f"{exc}; `bot: rebuild failed` builds that "
                                        "step on this agent")
            if ready is None:
                return  # what it needs has not started here yet: asked again next round
            needs = ready
        dest = Path(job.job_dir) if job.job_dir else None
        try:
            backend_id = None
            if dest is not None:  # an earlier attempt got this far: did it submit?
                backend_id = await self.backend.find(job.id, self.agent, dest)
            base_sha = facts.base_sha
            if backend_id is None:
                dest = await self._new_job_dir(job, dest)
                if dest is None:
                    return  # cancelled meanwhile
                mirror, prepared = await self._prepare(job, dest)
                base_sha = prepared.base_sha
                # EESSI's build scripts expect the PR's diff beside the checkout.
                diff = (await self.mirrors.diff(mirror, prepared.base_sha, prepared.head_sha)
                        if job.pr else None)
                if facts.role == "build" and self._has_plan_script(dest):
                    facts = replace(facts, role="plan")
                written = jobdir.write_job_files(
                    dest, facts, prepared=prepared, site_config=self.config.build.site_config,
                    allowed_exportvars=self.config.build.allowed_exportvars, pr_diff=diff)
                facts = written.facts
                env = dict(written.env)
                if facts.role == "plan":
                    env.update(jobdir.write_plan_files(dest))
                elif facts.role == "step":
                    env.update(jobdir.write_step_files(dest, facts.step or {}, needs.dirs))
                if not self.lease_valid():
                    # The control plane may give the job to another agent any moment now.
                    _log.warning("lease may have ended; not submitting")
                    return
                backend_id = await self.backend.submit(
                    self._request(job, facts, dest, env, needs.after_ok))
        except MergeConflict as exc:
            files = ", ".join(f"`{f}`" for f in exc.files) or "(git named none)"
            return await self._fail(job, f"merge conflict with `{job.base_ref}` in {files}")
        except (FetchError, RefNotFound) as exc:
            return await self._fail(job, f"git: {exc}")
        except jobdir.ExportVariablesRefused as exc:
            return await self._fail(job, str(exc))
        except WorkspaceError as exc:
            return await self._fail(job, f"preparing the job failed: {exc}")
        except BackendUnavailable as exc:
            # The scheduler is down: the job stays queued and is submitted when it is back.
            self._paused_until = time.monotonic() + UNAVAILABLE_RETRY_SECONDS
            _log.warning("backend unavailable; job stays queued", error=str(exc))
            return None
        except SubmitError as exc:
            return await self._fail(job, f"{self.backend.name} refused the job: {exc}")
        assert dest is not None  # found in it, or made for it
        recorded = await asyncio.to_thread(self.ledger.submitted, job, backend_id, base_sha,
                                           dest, facts.to_json())
        if not recorded:  # cancelled while it was being prepared, or no longer ours
            await self.backend.cancel(backend_id)
            return
        await self.backend.release([backend_id])
        _log.info("job submitted", backend_id=backend_id)

    async def _fail(self, job: JobSpec, reason: str) -> None:
        await asyncio.to_thread(self.ledger.fail, job, reason)

    async def _new_job_dir(self, job: JobSpec, old: Path | None) -> Path | None:
        """A fresh job directory, recorded before anything is put in it, so a later
        attempt knows which directory proves a submission (``Backend.find``). What an
        attempt that died before submitting left behind is removed."""
        try:
            if old is not None:
                await asyncio.to_thread(remove_job_dir, old, self.backend.job_user)
            dest = await asyncio.to_thread(
                jobdir.create_job_dir, self.config.jobs_dir, job.repo, job.id, pr=job.pr,
                ref=None if job.pr else job.base_ref)
        except OSError as exc:  # reported as "preparing the job failed: ..."
            raise WorkspaceError(f"the job directory: {exc}") from exc
        if not await asyncio.to_thread(self.ledger.record_job_dir, job, dest):
            await asyncio.to_thread(remove_job_dir, dest, self.backend.job_user)
            return None
        return dest

    async def _prepare(self, job: JobSpec, dest: Path) -> tuple[Mirror, Prepared]:
        refs = [job.base_ref] + ([f"refs/pull/{job.pr}/head"] if job.pr else [])
        # A cluster may reach the repository its own way (a mirror, a proxy): its own
        # build.clone_url wins over the URL the control plane was given.
        url = (self.config.build.clone_url.format(repo=job.repo) if self.config.build.clone_url
               else job.clone_url)
        mirror = await self.mirrors.fetch(url, refs)
        return mirror, await self.mirrors.prepare(mirror, job.head_sha, job.base_ref, dest)

    def _request(self, job: JobSpec, facts: JobFacts, dest: Path, env: dict[str, str],
                 after_ok: tuple[str, ...] = ()) -> SubmitRequest:
        script = {"plan": self.config.pipelines.plan_script,
                  "step": jobdir.STEP_SCRIPT}.get(facts.role, self.config.build.job_script)
        path = Path(script) if os.path.isabs(script) else dest / script
        node = next((n for n in self.config.node_types if n.name == job.node_type), None)
        limit = int(self.config.build.time_limit_minutes * 60)
        # Site defaults (in the backend), then the node type, then what the command set,
        # then what the plan asked for this step (checked against the site's limits).
        options = {**(node.options if node else {}), **facts.batch_options}
        if facts.role == "step" and facts.step:
            resources = StepResources.model_validate(facts.step.get("resources") or {})
            options.update(resources.batch_options())
            if resources.time_minutes:
                limit = min(limit, resources.time_minutes * 60)
        return SubmitRequest(job_id=job.id, instance=self.agent, job_dir=dest,
                             script=path, env=self._env(env), time_limit_seconds=limit,
                             options=options,
                             # EESSI's name: its check scripts read slurm-$SLURM_JOB_ID.out
                             log_file=dest / OUTPUT_PATTERN, after_ok=after_ok)

    def _has_plan_script(self, checkout: Path) -> bool:
        """Whether the target runs a plan first: the plan script is in the checkout (or,
        absolute, on this machine). A link in the PR's content does not count."""
        script = self.config.pipelines.plan_script
        if not script:
            return False
        path = Path(script) if os.path.isabs(script) else checkout / script
        return path.is_file() and not path.is_symlink()

    def _needs(self, facts: JobFacts, active: Mapping[int, ActiveJob]) -> Needs | None:
        """The artifact directories of the steps this one needs, and the backend ids it must
        wait for; None while one of them has not been submitted here yet.

        A need that has ended is read from the artifact store (its copy, read-only to
        jobs). One of the same run that has been submitted is waited for by the backend
        (``after_ok``) and read from its own job directory. A need shared with another PR
        (``shared``: the cache) is only ever read from the store, once it is there; one
        another agent built (``staged``) is fetched into the store from the staging area
        first (FetchFailed: it cannot be)."""
        step = facts.step or {}
        shared = set(step.get("shared") or ())
        staged = step.get("staged") or {}
        dirs: dict[str, Path] = {}
        after: list[str] = []
        for step_id, job_id in (step.get("needs") or {}).items():
            kept = step_files.stored(self.config.step_artifacts_dir, int(job_id))
            running = active.get(int(job_id))
            if kept is None and str(job_id) in staged:
                kept = self.step_cache.fetch(int(job_id), facts.repo_target.id,
                                             staged[str(job_id)], facts.instance)
            if kept is not None:
                dirs[step_id] = kept
            elif running is not None and running.job_dir and int(job_id) not in shared:
                dirs[step_id] = Path(running.job_dir) / STEP_OUTPUT
                after.append(running.backend_id)
            else:
                return None
        return Needs(dirs, tuple(after))

    def _env(self, job_env: dict[str, str]) -> dict[str, str]:
        """Only allowlisted variables of the bot's own environment: never its secrets."""
        allowed = {k: os.environ[k] for k in self.config.build.env_allowlist if k in os.environ}
        return {**allowed, **self.config.build.env, **job_env}
