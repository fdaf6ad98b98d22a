"""The reconciler: one backend query per cycle for every active job, then transitions.

A job that ended is read for its result (result.json or EESSI's _bot_job<ID>.result) and
its artifacts. The changes of a cycle go to the ledger together: on the control plane's
store, in one transaction whose reports are one outbox message per changed object (edits
coalesce), so GitHub traffic does not grow with polling.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from layerbot import log, metrics
from layerbot.agent.ledger import Accounting, ActiveJob, Ledger, Outcome
from layerbot.agent.step_cache import CacheSpec, StepCache
from layerbot.backends.base import Backend, BackendState, BackendUnavailable, JobStatus
from layerbot.build import results
from layerbot.build import steps as step_files
from layerbot.config import Config
from layerbot.core.jobs import JobState
from layerbot.core.pipeline import PlanError, PlanLimits

_log = log.get("jobs")

#: Job directories read at the same time, and how long a cycle waits for them.
READERS = 4
READ_BUDGET_SECONDS = 20.0

#: How a backend's final word maps to a job state, and the reason shown on the PR.
FINAL: dict[BackendState, tuple[JobState, str | None]] = {
    BackendState.CANCELLED: (JobState.CANCELLED, "cancelled in the batch system"),
    BackendState.TIMEOUT: (JobState.TIMED_OUT, "hit its time limit"),
    BackendState.OUT_OF_MEMORY: (JobState.FAILED, "ran out of memory"),
    BackendState.NODE_FAIL: (JobState.FAILED, "its node failed"),
    BackendState.PREEMPTED: (JobState.FAILED, "preempted by the batch system"),
}


@dataclass(frozen=True)
class StepReading:
    """How the end of a pipeline's jobs is read: the limits of a plan, where a step's
    artifact is kept (build/steps.py), and where a cached one is shared (agent/step_cache)."""

    limits: PlanLimits
    store: Path
    cache: StepCache | None = None


def decide(status: JobStatus, job_dir: Path | None, tail_lines: int,
           job_id: int | None = None, role: str = "build",
           steps: StepReading | None = None, cache: CacheSpec | None = None
           ) -> Outcome | None:
    """The job's next state from the backend's status (None: nothing new to record).

    ``job_id`` (layerbot's) is another name of the job's files (the local executor's
    ``SLURM_JOB_ID``). A plan or step job that ended well is read by ``steps``: its plan,
    or its output copied into the artifact store (and, with a cache key, staged: ``cache``)."""
    if role != "build" and steps is not None and status.state is BackendState.COMPLETED \
            and job_dir is not None and job_id is not None:
        return _pipeline_outcome(status, job_dir, tail_lines, job_id, role, steps, cache)
    if status.state is BackendState.PENDING:
        return None
    if status.state is BackendState.RUNNING:
        return Outcome(JobState.RUNNING, None, None, [])
    if status.state in FINAL:
        state, reason = FINAL[status.state]
        detail = f"{reason} ({status.reason})" if status.reason else reason
        res = _read(job_dir, status, tail_lines, job_id)
        return Outcome(state, detail, _result_json(res) if res else None, [])
    res = _read(job_dir, status, tail_lines, job_id)
    if status.state is BackendState.UNKNOWN and (res is None or res.source is None):
        return Outcome(JobState.LOST, "the batch system no longer knows this job and it left "
                       "no result", _result_json(res) if res else None, [])
    if res is None:
        return Outcome(JobState.FAILED, "no job directory to read a result from", None, [])
    if status.state is BackendState.FAILED:
        # The backend's own word first ("exit code 3", "killed by signal SIGKILL").
        reason = status.reason or f"exit code {status.exit_code}"
        if res.status == "failure" and res.source is not None:
            reason = f"{reason}: {results.failure_reason(res)}"  # what the job itself said
        return Outcome(JobState.FAILED, reason, _result_json(res), res.artifacts)
    if res.status == "success":
        return Outcome(JobState.SUCCEEDED, None, _result_json(res), res.artifacts)
    return Outcome(JobState.FAILED, results.failure_reason(res), _result_json(res),
                   res.artifacts)


def _pipeline_outcome(status: JobStatus, job_dir: Path, tail_lines: int, job_id: int,
                      role: str, steps: StepReading, cache: CacheSpec | None = None
                      ) -> Outcome:
    res = _read(job_dir, status, tail_lines, job_id)
    result: dict[str, object] = _result_json(res) if res else {}
    try:
        if role == "plan":
            plan = step_files.read_plan(job_dir, steps.limits)
            result.update(status="success", plan=plan.model_dump(mode="json"),
                          summary=f"a plan of {len(plan.steps)} steps")
        else:
            kept = step_files.collect_output(job_dir, steps.store, job_id)
            result.update(status="success", artifact=str(kept.path),
                          summary=f"{kept.files} files ({kept.bytes:,} bytes) in its artifact")
            # Shared with the other agents before the success is reported, so that the
            # control plane knows it is staged when it knows the step succeeded.
            if cache is not None and steps.cache is not None and \
                    (staged := steps.cache.stage(cache, kept.path, job_id)) is not None:
                result["staged"] = staged
    except (PlanError, step_files.OutputRefused) as exc:
        return Outcome(JobState.FAILED, str(exc), {**result, "status": "failure"}, [])
    except OSError as exc:
        return Outcome(JobState.FAILED, f"reading its {role} failed: {exc}",
                       {**result, "status": "failure"}, [])
    return Outcome(JobState.SUCCEEDED, None, result, res.artifacts if res else [])


def _read(job_dir: Path | None, status: JobStatus, tail_lines: int,
          job_id: int | None) -> results.JobResult | None:
    if job_dir is None or not job_dir.is_dir():
        return None
    # Every file is read without following links and with a time limit (build.hostile):
    # the job directory belongs to the job.
    ids = [str(job_id)] if job_id is not None else []
    return results.read_result(job_dir, status.backend_id, None, tail_lines, job_ids=ids)


def _result_json(res: results.JobResult) -> dict[str, object]:
    return {"status": res.status, "summary": res.summary, "problems": res.problems,
            "log_tail": res.log_tail,
            "tests": None if res.tests is None else {
                "status": res.tests.status, "summary": res.tests.summary,
                "passed": res.tests.passed, "failed": res.tests.failed}}


class Reconciler:
    def __init__(self, config: Config, ledger: Ledger, backend: Backend, *,
                 step_cache: StepCache | None = None) -> None:
        self.config = config
        self.ledger = ledger
        self.backend = backend
        self.cycles = 0
        self._failures = 0
        #: Cancels already asked of the backend by this process (asked again after a restart).
        self._cancel_sent: set[str] = set()
        #: Reads of job directories still going on, by job id (see _decide_all).
        self._reads: dict[int, tuple[JobStatus, Future[Outcome | None]]] = {}
        self._readers = ThreadPoolExecutor(READERS, thread_name_prefix="reconciler-read")
        self.steps = StepReading(config.plan_limits, config.step_artifacts_dir,
                                 step_cache or StepCache.of(config))

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            delay = self.config.backend.poll_seconds
            try:
                await self.cycle()
                self._failures = 0
            except BackendUnavailable as exc:
                # Back off while the scheduler is down; jobs keep their recorded state.
                self._failures += 1
                delay = min(delay * 2 ** self._failures, 300)
                _log.warning("backend unavailable; backing off", error=str(exc),
                             retry_in=delay)
            except Exception:
                _log.exception("reconcile cycle crashed")
            try:
                await asyncio.wait_for(stop.wait(), timeout=delay)
            except TimeoutError:
                pass

    async def cycle(self) -> int:
        """One pass over all active jobs; returns how many changed state."""
        self.cycles += 1
        active = await asyncio.to_thread(self.ledger.active)
        to_cancel = [j.backend_id for j in active
                     if j.cancel_requested and j.backend_id not in self._cancel_sent]
        if to_cancel:
            await asyncio.gather(*(self.backend.cancel(b) for b in to_cancel))
            self._cancel_sent.update(to_cancel)
        ids = [j.backend_id for j in active]
        if not ids:
            return 0
        statuses = await self.backend.poll(ids)
        metrics.BACKEND_CALLS.labels(backend=self.backend.name).inc()
        outcomes = await asyncio.to_thread(self._decide_all, active, statuses)
        if not outcomes:
            return 0
        return await asyncio.to_thread(
            self.ledger.apply, {job_id: (Accounting.of(status), outcome)
                                for job_id, (status, outcome) in outcomes.items()})

    def _decide_all(self, active: list[ActiveJob], statuses: Mapping[str, JobStatus]
                    ) -> dict[int, tuple[JobStatus, Outcome]]:
        """Each job's outcome, its directory read in a pool of readers.

        Why a pool and a budget: reading a job directory (hashing a large artifact, a slow
        file system) must not hold up the other jobs. A read not done within
        READ_BUDGET_SECONDS keeps going and is collected by a later cycle (never started
        twice); every single file read is bounded itself (build.hostile), so none runs for
        ever.
        """
        tail = self.config.reporting.log_tail_lines
        for job in active:
            status = statuses.get(job.backend_id)
            if status is None or job.id in self._reads:
                continue
            job_dir = Path(job.job_dir) if job.job_dir else None
            future = self._readers.submit(decide, status, job_dir, tail, job.id, job.role,
                                          self.steps, job.cache)
            self._reads[job.id] = (status, future)
        wait([f for _, f in self._reads.values()], timeout=READ_BUDGET_SECONDS)
        states = {job.id: job.state for job in active}
        outcomes: dict[int, tuple[JobStatus, Outcome]] = {}
        for job_id, (status, future) in list(self._reads.items()):
            if not future.done():
                _log.warning("job directory still being read", job_id=job_id)
                continue
            del self._reads[job_id]
            try:
                outcome = future.result()
            except Exception:  # read again next cycle; the others go on
                _log.exception("reading a job directory failed", job_id=job_id)
                continue
            if job_id in states and outcome is not None and outcome.state is not states[job_id]:
                outcomes[job_id] = (status, outcome)
        return outcomes
