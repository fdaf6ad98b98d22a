"""Deploy requests: what the planner sees of a PR, and recording the deployments it picks.

`bot: deploy`, the deploy label (handlers) and the control center's deploy action read the
same views, ask the same planner (``core.deploy_plan``) and record the same way: a row per
artifact (a repeated request finds it and records nothing), a failed one queued again.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from layerbot.config import Config
from layerbot.core.deploy_plan import ArtifactView, DeploymentView, JobView, Pick
from layerbot.core.deployments import DeploymentState
from layerbot.deploy.service import deploy_report_key, job_target, report_deployments
from layerbot.store import jobs as jobstore
from layerbot.store.deployments import transition
from layerbot.store.models import Artifact, Deployment

Views = tuple[list[JobView], list[ArtifactView], list[DeploymentView]]


def plan_views(session: Session, repo: str, pr: int, instance: str) -> Views:
    """The PR's jobs on ``instance``, their artifacts and deployments, as the planner sees
    them."""
    jobs = list(jobstore.jobs_of_pr(session, repo, pr, instance))
    ids = [j.id for j in jobs]
    views = [JobView(j.id, j.state, j.head_sha, *job_target(j), j.repo_target, j.target)
             for j in jobs]
    artifacts = [ArtifactView(a.id, a.job_id, a.name, a.size)
                 for a in session.scalars(select(Artifact).where(Artifact.job_id.in_(ids)))]
    deployments = [DeploymentView(d.artifact_id, d.job_id, d.state) for d in
                   session.scalars(select(Deployment).where(Deployment.job_id.in_(ids)))]
    return views, artifacts, deployments


def queue_deployments(session: Session, config: Config, repo: str, pr: int,
                      picks: Sequence[Pick], *, by: str, forced: bool, now: datetime) -> None:
    """Queued deployments for ``picks``, checked again in the transaction (the row per
    artifact is what makes a repeated trigger a no-op), and the PR's reports re-derived."""
    key = deploy_report_key(config.instance.name, repo, pr)
    for pick in picks:
        existing = session.scalar(
            select(Deployment).where(Deployment.artifact_id == pick.artifact.id))
        if existing is None:
            session.add(Deployment(artifact_id=pick.artifact.id, job_id=pick.job.id, repo=repo,
                                   pr=pr, state=DeploymentState.QUEUED.value, requested_by=by,
                                   forced=forced, created_at=now, updated_at=now,
                                   report_key=key))
        elif existing.state == DeploymentState.FAILED:
            transition(existing, DeploymentState.QUEUED, now)
            existing.requested_by, existing.forced = by, forced
    session.flush()
    report_deployments(session, config, repo, pr, now, sorted({p.job.id for p in picks}))
