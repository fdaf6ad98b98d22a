"""Stateful property tests of the job state machine, the submitter and the reconciler,
against a model of the batch system.

The real submitter and reconciler of the built-in agent run on a real SQLite store through
its real ledger (``operations/agent_ledger.StoreLedger``); only the batch system is a model
(:class:`ModelBackend`, in memory, implementing the ``Backend`` port): a test double
inside a property test, where the point is the interleavings, not Slurm (the real
backends are tested in ``tests/backends``). Hypothesis drives it through any order of:
jobs requested, submitted, started, finished in every way (with or without a result in the
job directory), vanishing from the batch system, the batch system down and back, cancels
asked, reconcile cycles.

Invariants, after every step:

* every recorded state change is allowed by ``core/jobs.TRANSITIONS``;
* a job in a terminal state never changes again;
* a job is succeeded only if the batch system completed it (exit 0) and it left a
  successful result, or the batch system forgot it and it left a successful result (the
  reconciler's documented rule: the result file is then the only proof there is);
* a reconcile cycle asks the batch system for states at most once (one ``poll`` for all
  jobs), and asks it to cancel a job at most once;

and at the end: once the batch system is up and has finished everything, a few cycles
bring every job to a terminal state.

Derandomized (the same runs every time, in CI too), bounded to stay fast.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    multiple,
    rule,
)
from sqlalchemy import select

from layerbot import clock
from layerbot.agent.runner import AgentRunner
from layerbot.backends.base import (
    BackendState,
    BackendUnavailable,
    Check,
    JobStatus,
    Resources,
    SubmitError,
    SubmitRequest,
)
from layerbot.build.workspace import Mirrors
from layerbot.config import Config, load
from layerbot.core.jobs import TERMINAL, TRANSITIONS, JobState
from layerbot.jobs.planner import BuildRequest, PlannedTarget, record_build
from layerbot.operations.agent_ledger import builtin_agent
from layerbot.operations.cancelling import cancel_jobs
from layerbot.store.db import Store
from layerbot.store.models import Job, JobTransition
from tests.support.origin import Origin

#: Final states of the model's jobs (what a batch system may end a job with).
ENDINGS = [BackendState.COMPLETED, BackendState.FAILED, BackendState.CANCELLED,
           BackendState.TIMEOUT, BackendState.OUT_OF_MEMORY, BackendState.NODE_FAIL,
           BackendState.PREEMPTED]
ENDED = frozenset(ENDINGS)


@dataclass
class ModelJob:
    """A job as the model batch system holds it."""

    backend_id: str
    job_id: int
    job_dir: Path
    state: BackendState = BackendState.PENDING
    exit_code: int | None = None
    vanished: bool = False  # the batch system forgot it (purged from its accounting)


class ModelBackend:
    """The batch system, in memory: jobs move only when a rule moves them.

    ``unavailable`` makes every call raise :class:`BackendUnavailable` (slurmctld down);
    ``refuse`` makes the next submission raise :class:`SubmitError`. Every call is counted
    by kind, so the test can bound what one reconcile cycle asks.
    """

    name = "model"
    job_user = None

    def __init__(self) -> None:
        self.jobs: dict[str, ModelJob] = {}
        self.calls = 0
        self.by_kind: dict[str, int] = {}
        self.cancelled: list[str] = []
        self.unavailable = False
        self.refuse = False
        self._ids = itertools.count(1000)

    def _ask(self, kind: str) -> None:
        self.calls += 1
        self.by_kind[kind] = self.by_kind.get(kind, 0) + 1
        if self.unavailable:
            raise BackendUnavailable("the model batch system is down")

    async def submit(self, request: SubmitRequest) -> str:
        self._ask("submit")
        if self.refuse:
            self.refuse = False
            raise SubmitError("model: invalid partition")
        backend_id = str(next(self._ids))
        self.jobs[backend_id] = ModelJob(backend_id, request.job_id, request.job_dir)
        return backend_id

    async def release(self, backend_ids: Sequence[str]) -> None:
        self._ask("release")

    async def find(self, job_id: int, instance: str, job_dir: Path) -> str | None:
        self._ask("find")
        return next((j.backend_id for j in self.jobs.values()
                     if j.job_id == job_id and j.job_dir == job_dir and not j.vanished), None)

    async def poll(self, backend_ids: Sequence[str]) -> Mapping[str, JobStatus]:
        self._ask("poll")
        out: dict[str, JobStatus] = {}
        for backend_id in backend_ids:
            job = self.jobs.get(backend_id)
            if job is None or job.vanished:
                out[backend_id] = JobStatus(backend_id, BackendState.UNKNOWN)
            else:
                out[backend_id] = JobStatus(backend_id, job.state, job.exit_code)
        return out

    async def cancel(self, backend_id: str) -> None:
        self._ask("cancel")
        self.cancelled.append(backend_id)
        job = self.jobs.get(backend_id)
        if job is not None and job.state not in ENDED:
            job.state = BackendState.CANCELLED

    async def resources(self) -> Resources:
        return Resources("model", ())

    async def check(self) -> list[Check]:
        return []


_ORIGIN: dict[str, Origin] = {}


def _origin() -> Origin:
    """One git repository for every run (creating it is the slow part)."""
    if "o/r" not in _ORIGIN:
        _ORIGIN["o/r"] = Origin(Path(tempfile.mkdtemp(prefix="stateful-origin-")), "o/r")
    return _ORIGIN["o/r"]


def _head(origin: Origin) -> str:
    if "head" not in _HEAD:
        _HEAD["head"] = origin.git("rev-parse", "HEAD")
    return _HEAD["head"]


_HEAD: dict[str, str] = {}


def _template_db() -> Path:
    """A migrated, empty store, made once and copied for each run: migrating a new store
    for each of Hypothesis' runs (and replays while shrinking) took most of the time."""
    if "db" not in _TEMPLATE:
        path = Path(tempfile.mkdtemp(prefix="stateful-db-")) / "layerbot.db"
        Store(f"sqlite:///{path}").close()
        _TEMPLATE["db"] = path
    return _TEMPLATE["db"]


_TEMPLATE: dict[str, Path] = {}


def _config(root: Path) -> Config:
    db = root / "layerbot.db"
    root.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_template_db(), db)
    return load(None, overrides={
        "instance": {"data_dir": str(root / "data")},
        "store": {"url": f"sqlite:///{db}"},
        "agent": {"concurrency": 3},
        "node_types": [{"name": "n", "cpu_target": "x86_64/generic"}]})


def _write_result(job: ModelJob, status: str | None) -> None:
    """What the job leaves: result.json with ``status``, or nothing (None)."""
    if status is None or not job.job_dir.is_dir():
        return
    (job.job_dir / "result.json").write_text(json.dumps({"status": status,
                                                         "summary": f"model: {status}"}))


class JobLifecycle(RuleBasedStateMachine):
    """Jobs through the real submitter, ledger and reconciler, the batch system a model."""

    backend_jobs = Bundle("backend_jobs")

    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp(prefix="stateful-"))
        self.config = _config(self.root)
        self.store = Store(self.config.store_url)
        self.backend = ModelBackend()
        self.loop = asyncio.new_event_loop()
        self.agent: AgentRunner = builtin_agent(self.config, self.store, self.backend,
                                                Mirrors(self.root / "mirrors"))
        #: Jobs ever seen terminal, with their state: they must never change again.
        self.terminal: dict[int, str] = {}
        #: Backend ids the model completed with exit 0 and a successful result.
        self.completed_ok: set[str] = set()
        self.transitions_seen = 0

    # --- helpers -----------------------------------------------------------------------

    def run(self, coro: object) -> object:
        return self.loop.run_until_complete(coro)  # type: ignore[arg-type]

    def jobs(self) -> list[Job]:
        with self.store.read() as s:
            rows = list(s.scalars(select(Job).order_by(Job.id)))
            s.expunge_all()
            return rows

    def cycle(self) -> None:
        """One reconcile cycle, bounded: one poll at most, no cancel asked twice."""
        before = dict(self.backend.by_kind)
        cancelled = list(self.backend.cancelled)
        try:
            self.run(self.agent.reconciler.cycle())
        except BackendUnavailable:
            pass
        polls = self.backend.by_kind.get("poll", 0) - before.get("poll", 0)
        assert polls <= 1, f"{polls} polls in one cycle"
        new = self.backend.cancelled[len(cancelled):]
        assert len(set(new)) == len(new), new
        # The process keeps what it asked; after a restart it may ask again (idempotent).
        assert not set(new) & set(cancelled), f"cancel asked again for {set(new) & set(cancelled)}"

    # --- rules -------------------------------------------------------------------------

    @initialize()
    def start(self) -> None:
        _origin()

    @rule(count=st.integers(1, 2))
    def request_build(self, count: int) -> None:
        origin = _origin()
        node, repo = self.config.node_types[0], self.config.repo_targets[0]
        request = BuildRequest(repo="o/r", pr=None, installation_id=None,
                               head_sha=_head(origin), base_ref="main",
                               clone_url=str(origin.path), command="test",
                               requested_by="alice")
        with self.store.transaction() as s:
            record_build(s, self.config, request,
                         [PlannedTarget(node, repo, node.cpu_target, None, f"t{i}")
                          for i in range(count)], clock.now())

    @rule(target=backend_jobs, refuse=st.booleans())
    def submit(self, refuse: bool) -> object:
        """The agent claims and submits what it may; new backend jobs go to the bundle."""
        known = set(self.backend.jobs)
        self.backend.refuse = refuse
        self.agent.submitter._paused_until = 0.0  # the back-off after "down" has passed
        self.run(self.agent.submit_ready())
        self.backend.refuse = False
        new = [b for b in self.backend.jobs if b not in known]
        return multiple(*sorted(new))

    @rule(job=backend_jobs)
    def start_running(self, job: str) -> None:
        model = self.backend.jobs.get(job)
        if model is not None and model.state is BackendState.PENDING:
            model.state = BackendState.RUNNING

    @rule(job=backend_jobs, ending=st.sampled_from(ENDINGS),
          result=st.sampled_from(["success", "failure", None]))
    def finish(self, job: str, ending: BackendState, result: str | None) -> None:
        model = self.backend.jobs.get(job)
        if model is None or model.state in ENDED:
            return
        model.state = ending
        model.exit_code = 0 if ending is BackendState.COMPLETED else 1
        _write_result(model, result)
        if ending is BackendState.COMPLETED and result == "success":
            self.completed_ok.add(job)

    @rule(job=consumes(backend_jobs), result=st.sampled_from(["success", None]))
    def vanish(self, job: str, result: str | None) -> None:
        """The batch system forgets the job (purged), perhaps after it wrote a result."""
        model = self.backend.jobs.get(job)
        if model is not None:
            _write_result(model, result)
            model.vanished = True
            if result == "success" and model.state not in ENDED - {BackendState.COMPLETED}:
                # The documented rule (reconciler.decide): a job the batch system forgot
                # is read from its directory; a successful result.json is its proof of
                # success (Slurm purges its accounting), none makes it lost.
                self.completed_ok.add(job)

    @rule(down=st.booleans())
    def backend_availability(self, down: bool) -> None:
        self.backend.unavailable = down

    @rule(index=st.integers(0, 7))
    def ask_cancel(self, index: int) -> None:
        """Someone cancels an active job (picked by index: what is drawn must not depend
        on the store, or Hypothesis cannot replay a run)."""
        jobs = [j for j in self.jobs() if JobState(j.state).active]
        if not jobs:
            return
        chosen = jobs[index % len(jobs)]
        with self.store.transaction() as s:
            cancel_jobs(s, self.config, [chosen.id], "cancelled by a test", clock.now())

    @rule()
    def reconcile(self) -> None:
        self.cycle()

    # --- invariants --------------------------------------------------------------------

    @invariant()
    def transitions_are_allowed(self) -> None:
        with self.store.read() as s:
            rows = s.execute(select(JobTransition.job_id, JobTransition.from_state,
                                    JobTransition.to_state).order_by(JobTransition.id)).all()
        for job_id, old, new in rows:
            if old is not None:
                assert JobState(new) in TRANSITIONS[JobState(old)], (job_id, old, new)
        self.transitions_seen = len(rows)

    @invariant()
    def terminal_jobs_never_change(self) -> None:
        for job in self.jobs():
            if job.id in self.terminal:
                assert job.state == self.terminal[job.id], (job.id, self.terminal[job.id],
                                                            job.state)
            elif JobState(job.state) in TERMINAL:
                self.terminal[job.id] = job.state

    @invariant()
    def success_only_from_the_batch_system(self) -> None:
        for job in self.jobs():
            if job.state == JobState.SUCCEEDED.value:
                assert job.backend_id in self.completed_ok, (job.id, job.backend_id)

    def teardown(self) -> None:
        """The batch system comes back and finishes everything: every job then ends."""
        try:
            self.backend.unavailable = False
            # The agent holds at most ``concurrency`` jobs: enough rounds for all of them.
            for _ in range(len(self.jobs()) // self.config.agent.concurrency + 3):
                self.agent.submitter._paused_until = 0.0
                self.run(self.agent.submit_ready())
                for model in self.backend.jobs.values():
                    if model.state not in ENDED:
                        model.state, model.exit_code = BackendState.COMPLETED, 0
                        _write_result(model, "success")
                        self.completed_ok.add(model.backend_id)
                for _ in range(2):
                    self.cycle()
            unfinished = [(j.id, j.state, j.backend_id) for j in self.jobs()
                          if JobState(j.state) not in TERMINAL]
            assert not unfinished, unfinished
            self.success_only_from_the_batch_system()
            self.transitions_are_allowed()
        finally:
            # Threads of this run end with it (hundreds of runs would pile them up).
            self.agent.reconciler._readers.shutdown(wait=True)
            self.loop.run_until_complete(self.loop.shutdown_default_executor())
            self.loop.close()
            self.store.close()
            shutil.rmtree(self.root, ignore_errors=True)


JobLifecycle.TestCase.settings = settings(
    max_examples=30, stateful_step_count=20, deadline=None, derandomize=True, database=None,
    suppress_health_check=list(HealthCheck),
    phases=[Phase.explicit, Phase.reuse, Phase.generate])
test_job_lifecycle = JobLifecycle.TestCase
