"""The ledger port: where an agent takes its jobs from and records what became of them.

The submitter and the reconciler (this package) prepare, submit and watch jobs; they do not
know where jobs come from. Two ledgers stand behind this port:

* the control plane's store, for the agent inside an embedded ``serve``
  (``operations/agent_ledger.py``): one process, no HTTP;
* the control plane over HTTPS, for an agent on a cluster's login node (``agent/remote.py``):
  reports kept on disk until acknowledged, so nothing is lost across a crash or a cut.

Uploads follow the same pattern with a port of their own (:class:`UploadLedger`): the
agent that built a job stages its deployments (``agent/uploads.py``), from the store
(``operations/agent_ledger.py``) or over HTTPS with a journal (``agent/remote_uploads.py``).

On the control plane both end in the same code, so a report means the same whichever way
it came. Methods are synchronous (the loops call them in a thread).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol

from layerbot.agent.step_cache import CacheSpec
from layerbot.backends.base import JobStatus
from layerbot.build import results
from layerbot.core.jobs import JobState
from layerbot.core.protocol import (
    ArtifactInfo,
    HeartbeatResponse,
    JobSpec,
    Report,
    UploadReport,
    UploadSpec,
)


@dataclass(frozen=True)
class Outcome:
    """What the reconciler decided from the backend's status and the job's files."""

    state: JobState
    reason: str | None
    result: dict[str, object] | None
    artifacts: list[results.Artifact] = field(default_factory=list)


@dataclass(frozen=True)
class ActiveJob:
    """A job the backend has: the few things a reconcile cycle needs."""

    id: int
    backend_id: str
    job_dir: str | None
    state: JobState
    cancel_requested: bool
    #: What it runs (JobFacts.role): decides how its end is read (a plan, a step's output).
    role: str = "build"
    #: A step with a cache key: what its staged artifact is filed under (agent/step_cache).
    cache: CacheSpec | None = None


@dataclass(frozen=True)
class Accounting:
    """What the backend says a job used (for the job's row and the costs)."""

    exit_code: int | None = None
    elapsed_seconds: float | None = None
    cpus: int | None = None
    max_rss_bytes: int | None = None
    node: str | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None

    @classmethod
    def of(cls, status: JobStatus) -> Accounting:
        return cls(status.exit_code, status.elapsed_seconds, status.cpus,
                   status.max_rss_bytes, status.node, status.started_at, status.ended_at)


class LeaseLost(Exception):
    """The control plane no longer gives this job to this agent (cancelled, or leased
    elsewhere while the agent was away): whatever the agent started for it is stopped."""


class Ledger(Protocol):
    def claim(self, slots: int, wait_seconds: float) -> list[JobSpec]:
        """Lease up to ``slots`` more jobs (waiting up to ``wait_seconds`` for some)."""
        ...

    def holding(self) -> int:
        """How many unfinished jobs this agent holds (to know its free slots)."""
        ...

    def queued(self) -> list[JobSpec]:
        """Jobs leased to this agent and not yet submitted (to prepare and submit)."""
        ...

    def held(self) -> list[str]:
        """Backend ids recorded as submitted, to release after a restart (hold_release)."""
        ...

    def late_submissions(self) -> list[str]:
        """Backend ids whose submission the server accepted only after the submitter had
        given up waiting (the server was away): they are released now. Each is given once."""
        ...

    def record_job_dir(self, job: JobSpec, job_dir: Path) -> bool:
        """Record the job's new directory before anything goes in it; False: the job is
        no longer this agent's to prepare (cancelled, or its lease ended)."""
        ...

    def submitted(self, job: JobSpec, backend_id: str, base_sha: str | None,
                  job_dir: Path, facts: Mapping[str, object]) -> bool:
        """Record the submission; False: take it back (the job was cancelled meanwhile or
        its lease ended), the backend's job must not run."""
        ...

    def fail(self, job: JobSpec, reason: str) -> None:
        """The job could not be prepared or submitted; ``reason`` is shown on the PR."""
        ...

    def active(self) -> list[ActiveJob]:
        """The jobs this agent has in its backend."""
        ...

    def apply(self, outcomes: Mapping[int, tuple[Accounting, Outcome]]) -> int:
        """Record new states (with results and artifacts); returns how many changed."""
        ...

    def log_tails(self, tails: Mapping[int, str]) -> set[int]:
        """The last lines of running jobs' output, best effort; returns the jobs whose tail
        was delivered (the others are offered again, changed or not)."""
        ...

    def heartbeat(self, free_slots: int, resources: Mapping[str, object] | None
                  ) -> HeartbeatResponse:
        """Say this agent is alive; the answer says what to stop and whether to pause."""
        ...


class UploadLedger(Protocol):
    """Where an agent takes the deployments of its jobs from, and says how staging went."""

    def take_uploads(self, slots: int, resume: bool) -> list[UploadSpec]:
        """Deployments to stage now: up to ``slots``. With ``resume`` (the loop has just
        started), first any this agent was given before and did not report (it stopped in
        the middle); a ledger that knows what it holds (a journal) may always do so."""
        ...

    def report_upload(self, spec: UploadSpec, report: UploadReport) -> None:
        """Record how staging ``spec`` went; kept until the control plane has it."""
        ...


def outcome_report(seq: int, lease_id: str, acct: Accounting, outcome: Outcome) -> Report:
    """The report an outcome becomes (the same for both ledgers)."""
    return Report(
        seq=seq, lease_id=lease_id, kind="outcome", state=outcome.state.value,
        reason=outcome.reason, result=outcome.result,
        artifacts=[ArtifactInfo(name=a.name, path=str(a.path), size=a.size, sha256=a.sha256)
                   for a in outcome.artifacts],
        exit_code=acct.exit_code, elapsed_seconds=acct.elapsed_seconds, cpus=acct.cpus,
        max_rss_bytes=acct.max_rss_bytes, node=acct.node, started_at=acct.started_at,
        ended_at=acct.ended_at)
