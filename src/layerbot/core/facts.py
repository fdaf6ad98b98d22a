"""The facts of one build job: everything a job directory, a report or a redo needs.

Plain data, written to ``job.json`` in the job directory and kept in the store.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class RepoTargetFacts:
    id: str
    name: str = ""
    version: str = ""
    container: str = ""
    facts: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class JobFacts:
    job_id: int
    instance: str
    repo: str  # owner/name of the repository the PR is against
    pr: int | None  # None for `layerbot run --ref`
    head_sha: str  # the PR head as it was when the authorised command was handled
    base_ref: str  # the base branch, e.g. main
    base_sha: str | None  # the base tip it was merged onto (known once prepared)
    node_type: str
    cpu_target: str  # for: arch, e.g. x86_64/amd/zen2
    accelerator: str | None  # for: accel, e.g. nvidia/cc80
    build_on: str  # on: arch (differs from cpu_target in a cross build)
    os: str
    repo_target: RepoTargetFacts
    requested_by: str
    command: str  # the command line as written
    comment_id: int | None = None
    exportvariables: dict[str, str] = field(default_factory=dict)
    build_id: int | None = None
    #: Batch-system options a command set (allowed by backend.slurm.overridable).
    batch_options: dict[str, str] = field(default_factory=dict)
    #: What the job runs: "build" (the job script), "plan" (the plan script: its job writes
    #: the target's plan) or "step" (one step of a target's plan, described by ``step``).
    role: str = "build"
    #: A step's id, name, command, needs ({step id: job id}), resources and cache key.
    step: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> JobFacts:
        data = dict(data)
        data["repo_target"] = RepoTargetFacts(**data["repo_target"])
        return cls(**data)
