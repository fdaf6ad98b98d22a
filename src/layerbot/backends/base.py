"""The batch-system port: what layerbot needs from a backend (local executor or Slurm).

Backends are asked in batches: :meth:`Backend.poll` answers for every active job in one
call per reconcile cycle, so the scheduler load does not grow with the number of jobs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from layerbot.build.identity import JobUser


class BackendState(StrEnum):
    """What a batch system says of a job, before layerbot maps it to a JobState."""

    PENDING = "PENDING"  # waiting (held, queued, or waiting for a free slot)
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"  # exit code 0
    FAILED = "FAILED"  # non-zero exit code
    CANCELLED = "CANCELLED"
    TIMEOUT = "TIMEOUT"
    OUT_OF_MEMORY = "OUT_OF_MEMORY"
    NODE_FAIL = "NODE_FAIL"
    PREEMPTED = "PREEMPTED"
    UNKNOWN = "UNKNOWN"  # the backend has no record of it


#: In ``SubmitRequest.log_file``: the backend's job id (``$SLURM_JOB_ID`` of the job).
JOB_ID_PLACEHOLDER = "%j"
#: The job's output as EESSI's scripts look for it: Slurm's default ``slurm-<JOBID>.out``
#: in the job directory. Both backends name it so, with the id the job sees.
OUTPUT_PATTERN = f"slurm-{JOB_ID_PLACEHOLDER}.out"


@dataclass(frozen=True)
class SubmitRequest:
    """One job to hand to the backend. ``options`` are already merged and validated."""

    job_id: int  # layerbot's id; backends tag their jobs with it
    instance: str  # this bot instance's name; part of the tag
    job_dir: Path  # the job's directory: working tree, cfg/, job.json, logs
    script: Path  # the script to run, inside job_dir or a site script
    env: Mapping[str, str]  # the job's whole environment (already allowlisted)
    time_limit_seconds: int | None = None
    options: Mapping[str, str] = field(default_factory=dict)
    #: Where stdout+stderr go (default job_dir/job.log); JOB_ID_PLACEHOLDER in it stands
    #: for the backend's job id, as in sbatch's --output (see OUTPUT_PATTERN).
    log_file: Path | None = None
    #: Backend ids of jobs that must end successfully (exit code 0) before this one may
    #: start (a pipeline's earlier steps). If one of them ends otherwise (failed,
    #: cancelled, timed out, lost, unknown), this job never starts and ends CANCELLED with
    #: a reason naming it (:func:`dependency_failed_reason`). Not an option: a command's
    #: batch options can never set or override it.
    after_ok: tuple[str, ...] = ()


def dependency_failed_reason(backend_id: str, state: BackendState | str) -> str:
    """The reason of a job that never started because a job it needs did not succeed;
    both backends word it so."""
    return f"not started: job {backend_id} it needs did not succeed ({state})"


@dataclass(frozen=True)
class JobStatus:
    backend_id: str
    state: BackendState
    exit_code: int | None = None
    reason: str | None = None  # the backend's own words, e.g. Slurm's Reason
    started_at: datetime | None = None
    ended_at: datetime | None = None
    elapsed_seconds: float | None = None
    cpus: int | None = None
    max_rss_bytes: int | None = None
    node: str | None = None


@dataclass(frozen=True)
class Partition:
    name: str
    state: str
    nodes_idle: int
    nodes_allocated: int
    nodes_down: int
    cpus_total: int
    cpus_idle: int
    features: tuple[str, ...] = ()
    default: bool = False
    max_time: str | None = None


@dataclass(frozen=True)
class Resources:
    backend: str
    partitions: tuple[Partition, ...]


@dataclass(frozen=True)
class Check:
    """One line of `layerbot doctor`."""

    name: str
    ok: bool
    detail: str
    remedy: str = ""


class SubmitError(Exception):
    """The backend refused the job; the message is the backend's own (shown on the PR)."""


class BackendUnavailable(Exception):
    """The backend cannot be asked right now (e.g. slurmctld down): try again later."""


class Backend(Protocol):
    name: str
    #: Scheduler calls made so far (for metrics and benchmarks).
    calls: int
    #: Who jobs run as (None: the bot's own user, allowed explicitly by the operator).
    job_user: JobUser | None

    async def submit(self, request: SubmitRequest) -> str:
        """Hand the job over; returns the backend's job id. Raises SubmitError."""
        ...

    async def release(self, backend_ids: Sequence[str]) -> None:
        """Let held jobs start (hold_release protocol); a no-op where nothing is held."""
        ...

    async def find(self, job_id: int, instance: str, job_dir: Path) -> str | None:
        """The backend id of a job submitted earlier for this job, if any.

        Used after a crash between submit and recording the id, so nothing is submitted
        twice. Adoption needs proof, not just a name: a backend only answers with a job that
        runs as the job user in ``job_dir``, the directory the bot created for it
        (unpredictably named, created exclusively: :func:`layerbot.build.jobdir.create_job_dir`).
        """
        ...

    async def poll(self, backend_ids: Sequence[str]) -> Mapping[str, JobStatus]:
        """The state of every given job, in as few scheduler calls as possible."""
        ...

    async def cancel(self, backend_id: str) -> None: ...

    async def resources(self) -> Resources: ...

    async def check(self) -> list[Check]:
        """Doctor checks: the backend's tools answer and its configuration is valid."""
        ...
