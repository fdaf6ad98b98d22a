"""The uploader: queued deployments go to the staging area, and the PR is told how it went.

A deployment row (``store.models.Deployment``, one per artifact) moves along
``core.deployments.TRANSITIONS``; here:

    queued ──▶ uploading ──▶ uploaded | skipped | failed
       ▲            │
       └────────────┘  a transient failure (S3 unreachable, 5xx): queued again, retried later

Each move is one transaction that also re-derives the PR's reports (the deploy reply and the
build replies whose artifacts changed state), so what the PR shows never disagrees with the
rows. The upload itself (``stage_artifact``) happens between two transactions: a crash
there leaves the row ``uploading``, and the next start takes it again. That is safe because
the library resumes a multipart upload from its state file in ``Config.uploads_dir`` and
skips an object already stored with the same sha256, so nothing is sent twice.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from layerbot import clock, log
from layerbot.config import Config
from layerbot.core.deployments import PENDING, DeploymentState
from layerbot.core.report import size as human_size
from layerbot.deploy.metadata import LayerbotInfo, Link2PR, file_sha256
from layerbot.deploy.signing import Signer
from layerbot.deploy.staging import (
    StagedArtifact,
    Staging,
    StagingError,
    artifact_key,
    is_transient,
    key_template,
    stage_artifact,
    staging_for,
)
from layerbot.events.reporting import report_build
from layerbot.github import writes
from layerbot.loops import pause
from layerbot.store.db import Store
from layerbot.store.deployments import transition
from layerbot.store.models import Artifact, Build, Deployment, GitHubObject, Job

_log = log.get("deploy")

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
#: Transient failures are retried after this long, doubling up to the cap.
RETRY_FIRST_SECONDS = 5.0
RETRY_MAX_SECONDS = 300.0


# ----------------------------------------------------------------------------- keys


def staging_target(cpu_target: str, accelerator: str | None) -> str:
    """The target as a key component, EESSI's way: ``x86_64/amd/zen2[/accel/nvidia/cc80]``."""
    return cpu_target + (f"/accel/{accelerator}" if accelerator else "")


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


# ----------------------------------------------------------------------------- staging


def make_staging(config: Config, repo_target: str) -> Staging:
    """The staging area of a repository target, with every deploy.* transfer setting."""
    return staging_for(config.deploy, repo_target, staging_dir=config.staging_dir,
                       state_dir=config.uploads_dir)


@dataclass(frozen=True)
class _Work:
    """What one upload needs, read in the claiming transaction."""

    deployment_id: int
    repo: str
    pr: int
    job_id: int
    head_sha: str
    base_sha: str
    cpu_target: str
    accelerator: str | None
    repo_target: str
    build_time: datetime | None
    path: Path
    name: str
    sha256: str
    comment_id: int | None


class UploadFailed(Exception):
    """A deployment that cannot succeed as it is; the message is shown on the PR."""


class Uploader:
    """The loop that takes queued deployments to the staging area, one at a time."""

    def __init__(self, config: Config, store: Store,
                 on_written: Callable[[], None] | None = None,
                 staging: Callable[[str], Staging] | None = None,
                 poll_seconds: float = 5.0) -> None:
        self.config = config
        self.store = store
        self.on_written = on_written or (lambda: None)
        self._make_staging = staging or (lambda target: make_staging(config, target))
        self._stagings: dict[str, Staging] = {}
        self.poll_seconds = poll_seconds
        self.wakeup = asyncio.Event()
        #: deployment id -> (monotonic time of the next try, delay used) after a transient failure
        self._backoff: dict[int, tuple[float, float]] = {}

    async def run(self, stop: asyncio.Event) -> None:
        # 'uploading' rows at start were cut short by a crash or a stop: take them again.
        resume = True
        while not stop.is_set():
            try:
                await self.upload_pending(resume=resume)
                resume = False
            except Exception:  # the store may be briefly unavailable; never stop the loop
                _log.exception("deploy loop failed; trying again")
            await pause(stop, self.poll_seconds, self.wakeup)

    async def upload_pending(self, resume: bool = False) -> int:
        """Upload every due deployment of this instance; returns how many were tried."""
        states = sorted(s.value for s in PENDING) if resume else [DeploymentState.QUEUED.value]
        ids = await asyncio.to_thread(self._due, states)
        now = time.monotonic()
        ids = [i for i in ids if self._backoff.get(i, (0.0, 0.0))[0] <= now]
        for deployment_id in ids:
            await self._upload_one(deployment_id, states)
        return len(ids)

    def _due(self, states: Sequence[str]) -> list[int]:
        with self.store.read() as s:
            return list(s.scalars(
                select(Deployment.id).join(Job, Deployment.job_id == Job.id)
                .where(Job.instance == self.config.instance.name,
                       Deployment.state.in_(states))
                .order_by(Deployment.id)))

    async def _upload_one(self, deployment_id: int, states: Sequence[str]) -> None:
        with log.bound(deployment_id=deployment_id):
            work = await asyncio.to_thread(self._claim, deployment_id, states)
            if work is None:
                return
            self.on_written()
            try:
                staged = await asyncio.to_thread(self._stage, work)
            except UploadFailed as exc:
                await asyncio.to_thread(self._fail, work, str(exc))
            except StagingError as exc:
                if exc.__cause__ is not None and is_transient(exc.__cause__):
                    await asyncio.to_thread(self._later, work, str(exc))
                else:
                    await asyncio.to_thread(self._fail, work, str(exc))
            except Exception as exc:  # signing, metadata, disk: say what, keep the loop
                _log.exception("deployment failed")
                await asyncio.to_thread(self._fail, work, f"{type(exc).__name__}: {exc}")
            else:
                await asyncio.to_thread(self._done, work, staged)
            self.on_written()

    # -------------------------------------------------------------- transactions

    def _claim(self, deployment_id: int, states: Sequence[str]) -> _Work | None:
        now = clock.now()
        with self.store.transaction() as s:
            d = s.get(Deployment, deployment_id)
            if d is None or d.state not in states or d.pr is None:
                return None
            job = s.get(Job, d.job_id)
            artifact = s.get(Artifact, d.artifact_id)
            build = s.get(Build, job.build_id) if job else None
            if job is None or artifact is None or build is None:
                return None
            transition(d, DeploymentState.UPLOADING, now)
            report_deployments(s, self.config, d.repo, d.pr, now, [job.id])
            cpu, accel = job_target(job)
            reply = s.get(GitHubObject, f"comment:{build.report_key}")
            return _Work(d.id, d.repo, d.pr, job.id, job.head_sha, job.base_sha or "", cpu,
                         accel, job.repo_target, job.ended_at, Path(artifact.path),
                         artifact.name, artifact.sha256, reply.github_id if reply else None)

    def _settle(self, work: _Work, state: DeploymentState, error: str | None,
                key: str | None = None, url: str | None = None) -> None:
        now = clock.now()
        with self.store.transaction() as s:
            d = s.get(Deployment, work.deployment_id)
            if d is None or d.state != DeploymentState.UPLOADING:
                return
            transition(d, state, now, error)
            if key is not None:
                d.key, d.url = key, url
            report_deployments(s, self.config, work.repo, work.pr, now, [work.job_id])

    def _done(self, work: _Work, staged: StagedArtifact) -> None:
        self._backoff.pop(work.deployment_id, None)
        outcome = staged.outcome
        _log.info("artifact " + outcome.state, key=outcome.key, bytes=outcome.bytes)
        self._settle(work, DeploymentState(outcome.state), None, outcome.key, outcome.url)

    def _fail(self, work: _Work, reason: str) -> None:
        self._backoff.pop(work.deployment_id, None)
        _log.warning("deployment failed", reason=reason)
        self._settle(work, DeploymentState.FAILED, reason)

    def _later(self, work: _Work, reason: str) -> None:
        """Back to queued: the staging area may come back (a restarted S3 server)."""
        _, last = self._backoff.get(work.deployment_id, (0.0, 0.0))
        delay = min(RETRY_MAX_SECONDS, last * 2 if last else RETRY_FIRST_SECONDS)
        self._backoff[work.deployment_id] = (time.monotonic() + delay, delay)
        _log.warning("upload interrupted; retrying", reason=reason, retry_in=delay)
        self._settle(work, DeploymentState.QUEUED, f"will retry in {delay:.0f}s: {reason}")

    # -------------------------------------------------------------- the upload

    def _staging(self, repo_target: str) -> Staging:
        if repo_target not in self._stagings:
            self._stagings[repo_target] = self._make_staging(repo_target)
        return self._stagings[repo_target]

    def _stage(self, work: _Work) -> StagedArtifact:
        cfg = self.config
        if not work.path.is_file():
            raise UploadFailed(f"the artifact {work.path} is gone (was the job directory "
                               "archived or removed?)")
        # What the job reported is what gets deployed: a file changed since is refused.
        if file_sha256(work.path) != work.sha256:
            raise UploadFailed(f"the artifact {work.name} changed since its job recorded it "
                               f"(sha256 {work.sha256[:12]}…); rebuild to deploy it")
        target = staging_target(work.cpu_target, work.accelerator)
        key = artifact_key(key_template(cfg.deploy, work.repo_target), work.name,
                           repo=work.repo, pr=work.pr, repo_target=work.repo_target,
                           target=target, job=work.job_id)
        signer = (Signer(cfg.deploy.signing_key_file, cfg.instance.name)
                  if cfg.deploy.signing_key_file else None)
        info = LayerbotInfo(instance=cfg.instance.name, head_sha=work.head_sha,
                            base_sha=work.base_sha, job_id=str(work.job_id), target=target,
                            repo_target=work.repo_target, build_time=work.build_time,
                            uploaded_at=clock.now(), key=key, sequence=work.job_id)
        link = Link2PR(repo=work.repo, pr=work.pr, pr_comment_id=work.comment_id)
        return stage_artifact(self._staging(work.repo_target), work.path, key, link2pr=link,
                              info=info, signer=signer, sha256=work.sha256)
