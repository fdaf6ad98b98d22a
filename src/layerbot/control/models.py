"""What the control center answers with: the API's response schemas (also the CLI's
``--json``), and the error an action ends with.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from layerbot.core.fleet import AgentState
from layerbot.store.joblist import JobSummary
from layerbot.store.models import Job


class ControlError(Exception):
    """An action cannot be done; ``status`` is the HTTP status the API answers with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# --------------------------------------------------------------------------------------------
# What the reads return
# --------------------------------------------------------------------------------------------


class Model(BaseModel):
    model_config = ConfigDict(from_attributes=True)


_SUMMARY_COLUMNS = [getattr(Job, name) for name in JobSummary.model_fields]


class TransitionOut(Model):
    from_state: str | None
    to_state: str
    at: datetime
    reason: str | None


class ArtifactOut(Model):
    id: int
    name: str
    size: int
    sha256: str


class DeploymentOut(Model):
    id: int
    artifact_id: int
    artifact: str
    state: str
    key: str | None
    url: str | None
    error: str | None
    requested_by: str
    forced: bool
    created_at: datetime
    updated_at: datetime


class JobDetail(Model):
    job: JobSummary
    command: str
    requested_by: str
    base_ref: str
    base_sha: str | None
    node: str | None
    max_rss_bytes: int | None
    facts: dict[str, Any]
    summary: str | None
    result: dict[str, Any] | None
    history: list[TransitionOut]
    artifacts: list[ArtifactOut]
    deployments: list[DeploymentOut]
    log_tail: str


class StepOut(Model):
    """A step of a pipeline, by its latest attempt (a rebuilt step has several jobs)."""

    step_id: str
    name: str
    #: The latest attempt's job, its state, and the step's status as the PR shows it
    #: (done, reused, running, waiting, failed, cancelled).
    job_id: int
    state: str
    status: str
    #: The ids of the steps it needs, and its column in the graph (1: needs nothing).
    needs: list[str]
    depth: int
    #: How long it ran (so far, while it runs); None: it has not started.
    seconds: float | None
    agent: str | None
    cluster: str | None
    #: Of the latest attempt; a reused step ran nowhere (None).
    core_hours: float | None
    reused_from: int | None
    attempts: int
    reason: str | None


class PipelineOut(Model):
    """A target's pipeline: its plan job, its steps, their progress and cost."""

    plan_job_id: int
    target: str
    repo_target: str
    head_sha: str
    #: The target's state from its steps: running, succeeded, failed or cancelled.
    state: str
    #: E.g. "3/5 done (1 reused), 1 running, 1 waiting".
    progress: str
    critical_path: list[str]
    critical_seconds: float
    #: The plan job and every attempt of every step (reused steps cost nothing).
    core_hours: float
    steps: list[StepOut]


class BuildOut(Model):
    id: int
    instance: str
    head_sha: str
    base_ref: str
    command: str
    requested_by: str
    created_at: datetime
    note: str | None
    jobs: list[JobSummary]


class PullSummary(Model):
    repo: str
    pr: int
    jobs: int
    states: dict[str, int]
    core_hours: float
    last_activity: datetime


class PullPage(Model):
    pulls: list[PullSummary]
    total: int
    limit: int
    offset: int


class PullDetail(Model):
    repo: str
    pr: int
    builds: list[BuildOut]
    core_hours: float


class PartitionOut(Model):
    name: str
    state: str
    nodes_idle: int
    nodes_allocated: int
    nodes_down: int
    cpus_total: int
    cpus_idle: int
    features: list[str] = []
    default: bool = False
    max_time: str | None = None


class ResourcesOut(Model):
    backend: str | None = None
    partitions: list[PartitionOut] = []
    updated_at: datetime | None = None
    error: str | None = None


class InstanceOut(Model):
    name: str
    version: str
    backend: str
    started_at: datetime
    heartbeat_at: datetime
    alive: bool
    paused: bool
    queued: int
    active: int
    resources: ResourcesOut | None


class NodeTypeOut(Model):
    name: str
    cpu_target: str
    accelerator: str | None
    #: The repository targets it builds for (empty: every one).
    repo_targets: list[str]


class AgentOut(Model):
    """An agent of the fleet as the control center shows it (never its token)."""

    name: str
    cluster: str
    state: AgentState
    #: The agent inside `serve` (no token; it lives and dies with the control plane).
    builtin: bool
    version: str | None
    protocol: int | None
    #: Higher first when several agents can build a job.
    priority: int
    #: Set by pause / drain; the state shows them only while the agent is connected.
    paused: bool
    draining: bool
    #: How many jobs it builds at once, how many active jobs it holds, and the free slots
    #: it reported at its last heartbeat.
    concurrency: int
    holding: int
    free_slots: int | None
    node_types: list[NodeTypeOut]
    registered_at: datetime | None
    heartbeat_at: datetime | None


class StateCount(Model):
    state: str
    jobs: int


class AgentCount(Model):
    state: AgentState
    agents: int


class Overview(Model):
    active: list[JobSummary]
    failures: list[JobSummary]
    instances: list[InstanceOut]
    counts: list[StateCount]
    #: The fleet: how many agents are in each state (revoked ones are not counted).
    agents: list[AgentCount] = Field(default_factory=list)


class CostRow(Model):
    key: str
    jobs: int
    core_hours: float


class Estimate(Model):
    target: str
    samples: int
    core_hours_median: float | None
    core_hours_p90: float | None
    duration_median_seconds: float | None
    duration_p90_seconds: float | None


class Costs(Model):
    since: datetime
    total_core_hours: float
    jobs: int
    by_week: list[CostRow]
    by_target: list[CostRow]
    by_pr: list[CostRow]
    estimates: list[Estimate]
    #: Per cluster of the agent that built the job (NO_CLUSTER: none, e.g. jobs from
    #: before the fleet).
    by_cluster: list[CostRow] = Field(default_factory=list)


class ActionResult(Model):
    message: str
    jobs: list[int] = Field(default_factory=list)
    build_id: int | None = None


