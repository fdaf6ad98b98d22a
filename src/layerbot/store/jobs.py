"""Builds and jobs in the store; every state change goes through the state machine."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from layerbot import metrics
from layerbot.core.jobs import JobState, check_transition
from layerbot.core.rows import JobRow, StepInfo
from layerbot.store.models import Agent, Artifact, Build, Deployment, Job, JobTransition

ACTIVE = [s.value for s in JobState if s.active]


def add_job(session: Session, build: Build, *, target: str, node_type: str, repo_target: str,
            facts: dict[str, Any], backend: str, now: datetime, redo_of: int | None = None
            ) -> Job:
    job = Job(build_id=build.id, instance=build.instance, repo=build.repo, pr=build.pr,
              target=target, node_type=node_type, repo_target=repo_target,
              head_sha=build.head_sha, base_ref=build.base_ref, facts=facts,
              state=JobState.QUEUED.value, backend=backend, created_at=now, updated_at=now,
              redo_of=redo_of)
    session.add(job)
    session.flush()
    session.add(JobTransition(job_id=job.id, from_state=None, to_state=job.state, at=now,
                              reason="recorded"))
    return job


def transition(session: Session, job: Job, new: JobState, now: datetime,
               reason: str | None = None, **fields: Any) -> bool:
    """Move ``job`` to ``new`` (recorded with its time); False if it already is there."""
    current = JobState(job.state)
    if current is new:
        for key, value in fields.items():
            setattr(job, key, value)
        return False
    check_transition(current, new)
    job.state = new.value
    job.updated_at = now
    if reason is not None:
        job.reason = reason
    if new is JobState.SUBMITTED and job.submitted_at is None:
        job.submitted_at = now
    if new is JobState.RUNNING and job.started_at is None:
        job.started_at = now
    if new.terminal and job.ended_at is None:
        job.ended_at = now
    for key, value in fields.items():
        setattr(job, key, value)
    session.add(JobTransition(job_id=job.id, from_state=current.value, to_state=new.value,
                              at=now, reason=reason))
    metrics.JOB_TRANSITIONS.labels(state=new.value).inc()
    return True


def active_jobs(session: Session, instance: str) -> Sequence[Job]:
    return session.scalars(
        select(Job).where(Job.instance == instance, Job.state.in_(ACTIVE)).order_by(Job.id)
    ).all()


def job_row(job: Job, artifacts: Sequence[Artifact] = (),
            deployments: Sequence[tuple[str, str]] = (), cluster: str | None = None) -> JobRow:
    """``cluster``: of the job's agent (``rows_for_jobs`` reads them for all its jobs)."""
    result = job.result or {}
    return JobRow(
        id=job.id, target=job.target, repo_target=job.repo_target, state=JobState(job.state),
        head_sha=job.head_sha, backend_id=job.backend_id, reason=job.reason,
        summary=result.get("summary"), artifacts=[(a.name, a.size) for a in artifacts],
        started_at=job.started_at, ended_at=job.ended_at, log_tail=result.get("log_tail"),
        deploy_states=tuple(deployments), agent=job.agent, cluster=cluster,
        step=step_info(job), core_hours=job.core_hours, redo_of=job.redo_of,
    )


def step_info(job: Job) -> StepInfo | None:
    """What the reports need of a pipeline's step: its place in the plan, from the job's
    columns and the facts recorded when it was created (``operations.pipelines``)."""
    if job.pipeline_id is None or job.step_id is None:
        return None
    step = (job.facts or {}).get("step") or {}
    depth = step.get("depth")
    return StepInfo(pipeline_id=job.pipeline_id, step_id=job.step_id,
                    name=str(step.get("name") or job.step_id),
                    needs=tuple(str(n) for n in (job.needs or {})),
                    depth=depth if isinstance(depth, int) else 1,
                    reused_from=job.reused_from)


def clusters_of(session: Session, jobs: Sequence[Job]) -> dict[str, str]:
    """The cluster of each agent that holds or held one of ``jobs`` (one query)."""
    names = sorted({j.agent for j in jobs if j.agent})
    if not names:
        return {}
    rows = session.execute(select(Agent.name, Agent.cluster).where(Agent.name.in_(names)))
    return {name: cluster for name, cluster in rows}


def rows_for_jobs(session: Session, jobs: Sequence[Job]) -> list[JobRow]:
    ids = [j.id for j in jobs]
    artifacts: dict[int, list[Artifact]] = {}
    deployed: dict[int, list[tuple[str, str]]] = {}
    clusters = clusters_of(session, jobs)
    if ids:
        for a in session.scalars(select(Artifact).where(Artifact.job_id.in_(ids))):
            artifacts.setdefault(a.job_id, []).append(a)
        for d, name in session.execute(
            select(Deployment, Artifact.name).join(Artifact, Deployment.artifact_id == Artifact.id)
            .where(Deployment.job_id.in_(ids))
        ).all():
            deployed.setdefault(d.job_id, []).append((name, d.state))
    return [job_row(j, artifacts.get(j.id, []), deployed.get(j.id, []),
                    clusters.get(j.agent) if j.agent else None) for j in jobs]


def jobs_of_build(session: Session, build_id: int) -> Sequence[Job]:
    return session.scalars(select(Job).where(Job.build_id == build_id).order_by(Job.id)).all()


def jobs_of_pr(session: Session, repo: str, pr: int, instance: str) -> Sequence[Job]:
    return session.scalars(
        select(Job).where(Job.repo == repo, Job.pr == pr, Job.instance == instance)
        .order_by(Job.id)
    ).all()


def queue_counts(session: Session, instance: str) -> dict[str, int]:
    """How many of the instance's jobs are in each active state (queued, submitted, ...)."""
    return {state: n for state, n in session.execute(
        select(Job.state, func.count(Job.id))
        .where(Job.instance == instance, Job.state.in_(ACTIVE))
        .group_by(Job.state))}
