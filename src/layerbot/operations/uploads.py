"""Uploads: the control plane's side of staging a deployment, on the store.

The artifact of a job is on the machine of the agent that built it, so that agent stages
it (``deploy/upload.py``, with its own ``[deploy]``); here is what needs the store. A
deployment is due for the agent of its job (``jobs.agent``); the agent claims it
(``queued -> uploading``, through the deployments' state machine) and reports how it went
(``uploaded | skipped | failed``, or ``queued`` again after a transient failure). Each move
is one transaction with the PR's reports (the deploy reply and the build replies), so the
PR never disagrees with the rows. Reports come the same way whichever agent sent them:
over HTTP from a cluster's agent (``web/agent_api.py``), or directly from the agent inside
``serve`` (``operations/agent_ledger.py``).

Why nothing is uploaded twice: the row is unique per artifact and only ``queued`` rows are
claimed; a claim numbers the attempt, and a report counts only for the attempt it names
and only while the row is ``uploading`` (a retried report finds it settled and changes
nothing). An ``uploading`` row the agent does not hold (it crashed before its journal, or
the claim's answer was lost) is offered to it again; staging it again resumes the
multipart upload or finds the object already there.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, Select, or_, select
from sqlalchemy.orm import Session

from layerbot.config import Config
from layerbot.core.deployments import DeploymentState
from layerbot.core.protocol import (
    ArtifactInfo,
    UploadReport,
    UploadReportResponse,
    UploadSpec,
)
from layerbot.deploy.service import job_target, report_deployments
from layerbot.store.deployments import transition
from layerbot.store.models import Artifact, Build, Deployment, GitHubObject, Job

#: Transient failures are retried after this long, doubling up to the cap.
RETRY_FIRST_SECONDS = 5.0
RETRY_MAX_SECONDS = 300.0


@dataclass(frozen=True)
class Owner:
    """Whose deployments: those of the jobs the agent built (``jobs.agent``; jobs of before
    the fleet were given to the built-in agent by migration 0012)."""

    agent: str

    def clause(self) -> ColumnElement[bool]:
        return Job.agent == self.agent


def _of(owner: Owner) -> Select[Deployment]:
    return (select(Deployment).join(Job, Deployment.job_id == Job.id)
            .where(owner.clause(), Deployment.pr.is_not(None)))


def _due(owner: Owner, now: datetime) -> Select[Deployment]:
    return _of(owner).where(Deployment.state == DeploymentState.QUEUED.value,
                            or_(Deployment.retry_at.is_(None), Deployment.retry_at <= now))


def _unheld(owner: Owner, holding: Sequence[int]) -> Select[Deployment]:
    query = _of(owner).where(Deployment.state == DeploymentState.UPLOADING.value)
    return query.where(Deployment.id.not_in(list(holding))) if holding else query


def waiting(session: Session, owner: Owner, holding: Sequence[int], now: datetime, *,
            resume: bool = True) -> bool:
    """Whether a claim would give the agent anything (a cheap read before the write)."""
    due = session.scalar(_due(owner, now).with_only_columns(Deployment.id).limit(1))
    if due is None and resume:
        due = session.scalar(_unheld(owner, holding).with_only_columns(Deployment.id)
                             .limit(1))
    return due is not None


def claim(session: Session, config: Config, owner: Owner, slots: int, holding: Sequence[int],
          now: datetime, *, resume: bool = True) -> list[Deployment]:
    """The deployments the agent is to stage now: with ``resume``, first those it was given
    and does not hold; then up to ``slots`` queued ones, moved to ``uploading`` (the PR
    shows it in the same transaction)."""
    taken = list(session.scalars(_unheld(owner, holding).order_by(Deployment.id))) \
        if resume else []
    query = _due(owner, now).order_by(Deployment.id).limit(max(0, slots - len(taken)))
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True, of=Deployment)
    fresh = list(session.scalars(query)) if slots > len(taken) else []
    for d in fresh:
        transition(d, DeploymentState.UPLOADING, now)
        d.attempt += 1
    _report(session, config, fresh, now)
    return taken + fresh


def spec(session: Session, d: Deployment) -> UploadSpec:
    """What the agent needs to stage ``d``: the file as its job reported it, and what the
    metadata says. Nothing of the control plane's secrets or staging settings."""
    job = session.get(Job, d.job_id)
    artifact = session.get(Artifact, d.artifact_id)
    assert job is not None and artifact is not None and d.pr is not None
    build = session.get(Build, job.build_id)
    reply = session.get(GitHubObject, f"comment:{build.report_key}") if build else None
    cpu, accel = job_target(job)
    return UploadSpec(
        deployment_id=d.id, attempt=d.attempt, instance=job.instance, repo=d.repo, pr=d.pr,
        job_id=job.id, head_sha=job.head_sha, base_sha=job.base_sha or "", cpu_target=cpu,
        accelerator=accel, repo_target=job.repo_target, build_time=job.ended_at,
        artifact=ArtifactInfo(name=artifact.name, path=artifact.path, size=artifact.size,
                              sha256=artifact.sha256),
        comment_id=reply.github_id if reply else None)


@dataclass(frozen=True)
class Applied:
    response: UploadReportResponse
    #: The deployment's state changed (its PR's reports were re-derived).
    changed: bool = False


def apply_report(session: Session, config: Config, owner: Owner, deployment_id: int,
                 report: UploadReport, now: datetime) -> Applied | None:
    """Record how staging a deployment went, once; None: not a deployment of the agent's."""
    d = session.scalar(_of(owner).where(Deployment.id == deployment_id))
    if d is None:
        return None
    if report.attempt != d.attempt:
        return Applied(UploadReportResponse(
            accepted=False, detail=f"deployment {d.id} was given out again (attempt "
                                   f"{d.attempt}); this report of attempt {report.attempt} "
                                   "is stale"))
    if d.state != DeploymentState.UPLOADING:  # a copy of a report already applied
        return Applied(UploadReportResponse(accepted=True, detail=f"already {d.state}"))
    _settle(d, report, now)
    _report(session, config, [d], now)
    return Applied(UploadReportResponse(accepted=True), changed=True)


def _settle(d: Deployment, report: UploadReport, now: datetime) -> None:
    if report.outcome == "failed" and report.transient:
        # Back to queued: the staging area may come back (a restarted S3 server).
        d.retries += 1
        delay = retry_delay(d.retries)
        d.retry_at = now + timedelta(seconds=delay)
        transition(d, DeploymentState.QUEUED, now, f"will retry in {delay:.0f}s: {report.error}")
        return
    d.retries, d.retry_at = 0, None
    if report.outcome == "failed":
        transition(d, DeploymentState.FAILED, now, report.error)
        return
    transition(d, DeploymentState(report.outcome), now)
    d.key, d.url = report.key, report.url


def retry_delay(retries: int) -> float:
    """5 s after the first transient failure, doubling, at most 5 minutes."""
    return min(RETRY_MAX_SECONDS, RETRY_FIRST_SECONDS * 2 ** max(0, retries - 1))


def _report(session: Session, config: Config, changed: Iterable[Deployment], now: datetime
            ) -> None:
    """Re-derive the reports of each PR whose deployments changed (once per PR)."""
    by_pr: dict[tuple[str, int], set[int]] = {}
    for d in changed:
        if d.pr is not None:
            by_pr.setdefault((d.repo, d.pr), set()).add(d.job_id)
    for (repo, pr), jobs in sorted(by_pr.items()):  # PRs' report locks in one order
        report_deployments(session, config, repo, pr, now, sorted(jobs))
