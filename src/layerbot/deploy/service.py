"""Deployments on the PR: the deploy reply and the deploy state in the build replies.

A deployment row (``store.models.Deployment``, one per artifact) moves along
``core.deployments.TRANSITIONS``; the agent that built its job stages it
(``deploy/upload.py``) and the control plane records each move
(``operations/uploads.py``):

    queued ──▶ uploading ──▶ uploaded | skipped | failed
       ▲            │
       └────────────┘  a transient failure (S3 unreachable, 5xx): queued again, retried later

Each move is one transaction that also re-derives the PR's reports with
:func:`report_deployments`, so what the PR shows never disagrees with the rows. This module
reads and writes the store: the agent never imports it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from layerbot.config import Config
from layerbot.core.deployments import DeploymentState
from layerbot.core.report import size as human_size
from layerbot.events.reporting import report_build
from layerbot.github import writes
from layerbot.store.locks import serialize_reports
from layerbot.store.models import Artifact, Build, Deployment, Job

#: How the PR shows each state a deployment can be in.
STATE_ICONS: dict[str, str] = {
    DeploymentState.QUEUED: "⏳",
    DeploymentState.UPLOADING: "⬆️",
    DeploymentState.UPLOADED: "✅",
    DeploymentState.SKIPPED: "☑️",
    DeploymentState.FAILED: "❌",
    DeploymentState.INGESTED: "📦",
    DeploymentState.REJECTED: "⛔",
}


# ----------------------------------------------------------------------------- keys


def job_target(job: Job) -> tuple[str, str | None]:
    """(CPU target, accelerator) a job built for, from its facts (job.target is a label)."""
    facts = job.facts or {}
    cpu = str(facts.get("cpu_target") or job.target.split(" + ")[0])
    accel = facts.get("accelerator")
    return cpu, (str(accel) if accel else None)


def deploy_report_key(instance: str, repo: str, pr: int) -> str:
    """The one deploy reply per PR and instance, edited in place."""
    return f"deploy:{instance}:{repo}#{pr}"


# ----------------------------------------------------------------------------- the PR report


@dataclass(frozen=True)
class DeployRow:
    job_id: int
    target: str
    repo_target: str
    artifact: str
    size: int
    state: str
    url: str | None
    error: str | None
    forced: bool


def _cell(text: str, limit: int = 300) -> str:
    return text.replace("|", "\\|").replace("\n", " ").strip()[:limit]


def deploy_comment(instance: str, rows: Sequence[DeployRow]) -> str:
    """The deploy reply: each artifact's state, with where it went or why it did not."""
    done = sum(1 for r in rows if r.state in (DeploymentState.UPLOADED, DeploymentState.SKIPPED,
                                              DeploymentState.INGESTED))
    lines = [
        f"**layerbot `{instance}`**: deployment of this PR's artifacts "
        f"({done}/{len(rows)} staged)",
        "",
        "| job | target | repository | artifact | state | details |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        state = f"{STATE_ICONS.get(r.state, '')} {r.state}" + (" (forced)" if r.forced else "")
        if r.error:
            detail = _cell(r.error)
        elif r.state == DeploymentState.SKIPPED:
            detail = f"already in the staging area: `{_cell(r.url or '')}`"
        else:
            detail = f"`{_cell(r.url)}`" if r.url else ""
        lines.append(
            f"| {r.job_id} | `{r.target}` | {r.repo_target} | `{_cell(r.artifact)}` "
            f"{human_size(r.size)} | {state} | {detail} |"
        )
    return "\n".join(lines)


def _rows(session: Session, instance: str, repo: str, pr: int) -> list[DeployRow]:
    result = session.execute(
        select(Deployment, Artifact, Job)
        .join(Artifact, Deployment.artifact_id == Artifact.id)
        .join(Job, Deployment.job_id == Job.id)
        .where(Deployment.repo == repo, Deployment.pr == pr, Job.instance == instance)
        .order_by(Deployment.id)
    ).all()
    return [
        DeployRow(job.id, job.target, job.repo_target, art.name, art.size, d.state, d.url,
                  d.error, d.forced)
        for d, art, job in result
    ]


def report_deployments(session: Session, config: Config, repo: str, pr: int, now: datetime,
                       job_ids: Sequence[int] = ()) -> None:
    """Re-derive the deploy reply of a PR, and the build replies of ``job_ids``' builds
    (their artifacts column shows each artifact's deploy state). Inside the caller's
    transaction, so the report always matches the rows."""
    instance = config.instance.name
    serialize_reports(session, repo, pr)  # before reading what it renders
    rows = _rows(session, instance, repo, pr)
    builds = list(session.scalars(
        select(Build).join(Job, Job.build_id == Build.id).where(Job.id.in_(job_ids)).distinct()
    )) if job_ids else []
    installation = next((b.installation_id for b in builds if b.installation_id), None)
    if installation is None:
        installation = session.scalar(
            select(Build.installation_id).where(Build.repo == repo, Build.pr == pr,
                                                Build.instance == instance,
                                                Build.installation_id.is_not(None)).limit(1))
    if rows and installation is not None:
        writes.enqueue_comment(session, instance=instance, repo=repo,
                               installation_id=installation, issue_number=pr,
                               key=deploy_report_key(instance, repo, pr),
                               body=deploy_comment(instance, rows), now=now)
    for build in builds:
        report_build(session, config, build, now)
