"""Turn selected targets into a recorded build and its queued jobs (inside a transaction).

Shared by `bot: build`, `bot: rebuild`, a check run's Re-run, the control center's redo and
`layerbot run`, so that every way of asking for a build records the same facts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from layerbot.config import Config, NodeType, RepoTarget
from layerbot.core.facts import JobFacts, RepoTargetFacts
from layerbot.store import jobs as jobstore
from layerbot.store.models import Build, Job


@dataclass(frozen=True)
class PlannedTarget:
    node_type: NodeType
    repo_target: RepoTarget
    cpu_target: str
    accelerator: str | None
    build_on: str
    #: The command's ``inst:`` when it names agents or clusters: only they may build it.
    agent_filter: str | None = None


@dataclass(frozen=True)
class BuildRequest:
    repo: str
    pr: int | None
    installation_id: int | None
    head_sha: str  # pinned: what the authorised person asked to build
    base_ref: str
    clone_url: str
    command: str
    requested_by: str
    comment_id: int | None = None
    delivery_id: str | None = None
    exportvariables: tuple[tuple[str, str], ...] = ()
    batch_options: tuple[tuple[str, str], ...] = ()
    #: Claimed before the jobs of other PRs (the PR has pipelines.priority_label).
    priority: int = 0


def target_label(cpu_target: str, accelerator: str | None) -> str:
    return cpu_target + (f" + {accelerator}" if accelerator else "")


def record_build(session: Session, config: Config, request: BuildRequest,
                 targets: Sequence[PlannedTarget], now: datetime,
                 redo_of: dict[int, int] | None = None) -> tuple[Build, list[Job]]:
    """The build and one queued job per target; ``redo_of`` maps target index → job id."""
    build = Build(instance=config.instance.name, repo=request.repo, pr=request.pr,
                  installation_id=request.installation_id, head_sha=request.head_sha,
                  base_ref=request.base_ref, clone_url=request.clone_url,
                  command=request.command, requested_by=request.requested_by,
                  comment_id=request.comment_id, delivery_id=request.delivery_id,
                  created_at=now, report_key="")
    session.add(build)
    session.flush()
    build.report_key = f"build:{build.id}"
    jobs: list[Job] = []
    for index, t in enumerate(targets):
        job = jobstore.add_job(
            session, build, target=target_label(t.cpu_target, t.accelerator),
            node_type=t.node_type.name, repo_target=t.repo_target.id, facts={},
            backend=config.backend.kind, now=now,
            redo_of=(redo_of or {}).get(index))
        job.agent_filter = t.agent_filter
        job.priority = request.priority
        job.facts = JobFacts(
            job_id=job.id, instance=config.instance.name, repo=request.repo, pr=request.pr,
            head_sha=request.head_sha, base_ref=request.base_ref, base_sha=None,
            node_type=t.node_type.name, cpu_target=t.cpu_target, accelerator=t.accelerator,
            build_on=t.build_on, os=t.node_type.os,
            repo_target=RepoTargetFacts(t.repo_target.id, t.repo_target.name,
                                        t.repo_target.version, t.repo_target.container,
                                        dict(t.repo_target.facts)),
            requested_by=request.requested_by, command=request.command,
            comment_id=request.comment_id, exportvariables=dict(request.exportvariables),
            build_id=build.id, batch_options=dict(request.batch_options),
        ).to_json()
        jobs.append(job)
    return build, jobs


def planned_from_job(config: Config, job: Job,
                     node_types: Sequence[NodeType] | None = None) -> PlannedTarget | None:
    """The target an earlier job built, as the fleet can build it now (None if no agent
    has its node type any more); ``node_types``: the fleet's (default: this file's)."""
    nodes = config.node_types if node_types is None else node_types
    node = next((n for n in nodes if n.name == job.node_type), None)
    repo = next((r for r in config.repo_targets if r.id == job.repo_target), None)
    if node is None or repo is None:
        return None
    facts = job.facts or {}
    return PlannedTarget(node, repo, facts.get("cpu_target", node.cpu_target),
                         facts.get("accelerator", node.accelerator),
                         facts.get("build_on", node.cpu_target), job.agent_filter)
