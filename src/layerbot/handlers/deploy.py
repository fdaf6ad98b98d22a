"""Deploy triggers: the ``bot:deploy`` label and the ``bot: deploy`` command.

Either one, by someone allowed to deploy, records a queued ``Deployment`` per chosen
artifact in the event's transaction; the uploader (``layerbot.deploy.service``) takes them
from there. A deployment is unique per artifact, so a label removed and added again, or a
second command, finds the artifacts already deployed and records nothing (only deployments
that failed are queued again).

Which artifacts are candidates is decided by :func:`plan_deploy`, a pure function of the
PR's jobs, their artifacts, the deployments so far, the PR's head *now* and the policy:

* only artifacts of succeeded jobs built from the current head (``force job:ID``: that
  job even if it failed, still only at the current head);
* ``all``: every such job; ``latest``: the newest such job per (target, repository
  target); ``once``: like latest, but never again for a target deployed before.

The way back: ``layerbot ingest`` reports each outcome in a comment of the App on the PR,
with the outcome hidden in it; GitHub delivers that comment to the bot, and
:func:`on_ingest_report` moves the deployment to ingested or rejected (see docs/deploy.md).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from layerbot.core.commands import BuildFilters, Command, accel_matches, pattern_matches
from layerbot.core.report import size as human_size
from layerbot.deploy.service import STATE_ICONS, deploy_report_key, job_target, report_deployments
from layerbot.handlers.base import Context, Event, Router
from layerbot.handlers.builds import allowed, fetch_pull
from layerbot.store import jobs as jobstore
from layerbot.store.models import Artifact, Deployment, Job

router = Router()

Policy = Literal["all", "latest", "once"]
#: Job states whose artifacts ``force job:ID`` may ship.
FORCEABLE = ("succeeded", "failed")


# ----------------------------------------------------------------------------- selection


@dataclass(frozen=True)
class JobView:
    id: int
    state: str
    head_sha: str
    cpu_target: str
    accelerator: str | None
    repo_target: str
    #: How the PR shows the target (``x86_64/amd/zen2 + nvidia/cc80``).
    label: str = ""

    @property
    def slot(self) -> tuple[str, str | None, str]:
        """What "the same target" means for the latest and once policies."""
        return self.cpu_target, self.accelerator, self.repo_target


@dataclass(frozen=True)
class ArtifactView:
    id: int
    job_id: int
    name: str
    size: int = 0


@dataclass(frozen=True)
class DeploymentView:
    artifact_id: int
    job_id: int
    state: str


@dataclass(frozen=True)
class Pick:
    job: JobView
    artifact: ArtifactView


@dataclass(frozen=True)
class Plan:
    #: Artifacts never deployed: new queued deployments.
    new: tuple[Pick, ...] = ()
    #: Artifacts whose deployment failed: queued again.
    retry: tuple[Pick, ...] = ()
    #: Artifacts deployed (or on their way) already, with their state: nothing to do.
    already: tuple[tuple[Pick, str], ...] = ()
    #: Jobs not deployed, and why.
    left_out: tuple[tuple[JobView, str], ...] = ()
    #: Set when the request itself cannot be followed (force of an unknown job, ...).
    refusal: str | None = None

    @property
    def queued(self) -> tuple[Pick, ...]:
        return self.new + self.retry


def job_selected(filters: BuildFilters, job: JobView) -> bool:
    """The build command's meaning of the filters, applied to a job that was built:
    ``for:arch=X`` alone is a CPU-only target; the older ``arch:``/``accel:`` take any."""
    if filters.repo is not None and not pattern_matches(filters.repo, job.repo_target):
        return False
    if filters.for_arch is not None and not pattern_matches(filters.for_arch, job.cpu_target):
        return False
    if filters.for_accel is not None:
        # accel_matches: a `+`-joined list selects the job built for that same list.
        return job.accelerator is not None and accel_matches(filters.for_accel,
                                                             job.accelerator)
    return filters.legacy or filters.for_arch is None or job.accelerator is None


def plan_deploy(jobs: Sequence[JobView], artifacts: Sequence[ArtifactView],
                deployments: Sequence[DeploymentView], *, head_sha: str, policy: Policy,
                filters: BuildFilters = BuildFilters(),
                force_job: int | None = None) -> Plan:
    """What a deploy request ships. Pure: everything it needs comes in as arguments."""
    if force_job is not None:
        chosen, left_out, refusal = _forced(jobs, artifacts, head_sha, force_job)
        if refusal is not None:
            return Plan(refusal=refusal)
    else:
        chosen, left_out = _chosen(jobs, deployments, head_sha, policy, filters)
    return _split(chosen, artifacts, deployments, left_out)


def _forced(jobs: Sequence[JobView], artifacts: Sequence[ArtifactView], head_sha: str,
            job_id: int) -> tuple[list[JobView], list[tuple[JobView, str]], str | None]:
    job = next((j for j in jobs if j.id == job_id), None)
    if job is None:
        return [], [], f"this pull request has no job {job_id} on this instance"
    if job.head_sha != head_sha:
        return [], [], (f"job {job_id} built `{job.head_sha[:12]}`, not the current head "
                        f"`{head_sha[:12]}`: artifacts of older commits are never deployed")
    if job.state not in FORCEABLE:
        return [], [], f"job {job_id} is {job.state}: only a finished job can be deployed"
    if not any(a.job_id == job_id for a in artifacts):
        return [], [], f"job {job_id} left no artifacts"
    return [job], [], None


def _chosen(jobs: Sequence[JobView], deployments: Sequence[DeploymentView], head_sha: str,
            policy: Policy, filters: BuildFilters
            ) -> tuple[list[JobView], list[tuple[JobView, str]]]:
    left_out: list[tuple[JobView, str]] = []
    eligible: list[JobView] = []
    for job in sorted(jobs, key=lambda j: j.id):
        if not job_selected(filters, job):
            continue  # not asked for: not worth a line in the reply
        if job.head_sha != head_sha:
            left_out.append((job, f"built `{job.head_sha[:12]}`, an older commit"))
        elif job.state != "succeeded":
            left_out.append((job, f"{job.state} (`force job:{job.id}` ships it anyway)"))
        else:
            eligible.append(job)
    if policy == "all":
        return eligible, left_out
    newest: dict[tuple[str, str | None, str], JobView] = {}
    for job in eligible:  # ascending ids: the last one per slot is the newest
        newest[job.slot] = job
    left_out += [(j, f"job {newest[j.slot].id} is newer (policy latest)")
                 for j in eligible if newest[j.slot] is not j]
    chosen = list(newest.values())
    if policy == "once":
        chosen, skipped = _not_deployed_before(chosen, jobs, deployments)
        left_out += skipped
    return chosen, left_out


def _not_deployed_before(chosen: list[JobView], jobs: Sequence[JobView],
                         deployments: Sequence[DeploymentView]
                         ) -> tuple[list[JobView], list[tuple[JobView, str]]]:
    """Policy once: a target with a deployment of another job (that did not fail) is done."""
    by_id = {j.id: j for j in jobs}
    deployed: dict[tuple[str, str | None, str], int] = {}
    for d in deployments:
        job = by_id.get(d.job_id)
        if job is not None and d.state != "failed":
            deployed.setdefault(job.slot, job.id)
    keep, skipped = [], []
    for job in chosen:
        earlier = deployed.get(job.slot)
        if earlier is not None and earlier != job.id:
            skipped.append((job, f"job {earlier} was deployed for this target (policy once)"))
        else:
            keep.append(job)
    return keep, skipped


def _split(chosen: Sequence[JobView], artifacts: Sequence[ArtifactView],
           deployments: Sequence[DeploymentView], left_out: list[tuple[JobView, str]]) -> Plan:
    state_of = {d.artifact_id: d.state for d in deployments}
    new: list[Pick] = []
    retry: list[Pick] = []
    already: list[tuple[Pick, str]] = []
    for job in chosen:
        mine = [a for a in artifacts if a.job_id == job.id]
        if not mine:
            left_out.append((job, "left no artifacts"))
        for artifact in sorted(mine, key=lambda a: a.id):
            pick, state = Pick(job, artifact), state_of.get(artifact.id)
            if state is None:
                new.append(pick)
            elif state == "failed":
                retry.append(pick)
            else:
                already.append((pick, state))
    return Plan(tuple(new), tuple(retry), tuple(already), tuple(left_out))


# ----------------------------------------------------------------------------- replies


def describe_plan(instance: str, plan: Plan, head_sha: str, dry_run: bool) -> str:
    """A dry run's list, or why a request queued nothing."""
    verb = "would deploy" if dry_run else "deploys"
    lines = [f"**layerbot `{instance}`** {verb} for `{head_sha[:12]}`:" if plan.queued
             else f"**layerbot `{instance}`**: nothing new to deploy for `{head_sha[:12]}`."]
    lines += [""] if plan.queued else []
    lines += [f"- job {p.job.id} `{p.job.label}` ({p.job.repo_target}): `{p.artifact.name}` "
              f"{human_size(p.artifact.size)}" + (" (failed before; again)" if p in plan.retry
                                                  else "")
              for p in plan.queued]
    if plan.already:
        lines += ["", "Already deployed:"]
        lines += [f"- job {p.job.id}: `{p.artifact.name}` {STATE_ICONS.get(s, '')} {s}"
                  for p, s in plan.already]
    if plan.left_out:
        lines += ["", "Not deployed:"]
        lines += [f"- job {j.id} `{j.label}` ({j.repo_target}): {why}" for j, why in plan.left_out]
    if dry_run:
        lines += ["", "_Dry run: nothing was recorded._"]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- handlers


@dataclass(frozen=True)
class _Request:
    number: int
    filters: BuildFilters
    dry_run: bool
    force_job: int | None
    cmd: Command | None
    #: Reply key suffix, unique per request.
    tag: str


def _views(session: Session, repo: str, pr: int, instance: str
           ) -> tuple[list[JobView], list[ArtifactView], list[DeploymentView]]:
    jobs = list(jobstore.jobs_of_pr(session, repo, pr, instance))
    ids = [j.id for j in jobs]
    job_views = []
    for j in jobs:
        cpu, accel = job_target(j)
        job_views.append(JobView(j.id, j.state, j.head_sha, cpu, accel, j.repo_target, j.target))
    artifacts = [ArtifactView(a.id, a.job_id, a.name, a.size)
                 for a in session.scalars(select(Artifact).where(Artifact.job_id.in_(ids)))]
    deployments = [DeploymentView(d.artifact_id, d.job_id, d.state)
                   for d in session.scalars(select(Deployment).where(Deployment.job_id.in_(ids)))]
    return job_views, artifacts, deployments


def _has_jobs(ctx: Context, number: int) -> bool:
    with ctx.services.store.read() as s:
        return bool(jobstore.jobs_of_pr(s, ctx.event.repo, number, ctx.instance))


@router.on("pull_request", "labeled")
async def on_label(event: Event, ctx: Context) -> str | None:
    if (event.payload.get("label") or {}).get("name") != ctx.config.deploy.label:
        return None
    number = int(event.payload["pull_request"]["number"])
    if not await asyncio.to_thread(_has_jobs, ctx, number):
        return None  # nothing built here: instances that built something answer
    if not await allowed(ctx, "deploy", number, None):
        return "deploy refused"
    request = _Request(number, BuildFilters(), False, None, None, f"label:{event.delivery_id}")
    return await _deploy(ctx, request, f"label `{ctx.config.deploy.label}`")


async def on_deploy_command(cmd: Command, event: Event, ctx: Context) -> str | None:
    number = int(event.payload["issue"]["number"])
    if cmd.filters.inst is not None and not pattern_matches(cmd.filters.inst, ctx.instance):
        return None  # inst: names another instance: it answers, this one stays silent
    if not await asyncio.to_thread(_has_jobs, ctx, number):
        return None
    if not await allowed(ctx, "deploy", number, cmd):
        return "deploy refused"
    if cmd.force and not await allowed(ctx, "force_deploy", number, cmd):
        return "forced deploy refused"
    request = _Request(number, cmd.filters, cmd.dry_run, cmd.job_id if cmd.force else None,
                       cmd, f"cmd:{event.delivery_id}:{cmd.lineno}")
    return await _deploy(ctx, request, f"`{cmd.line.strip() or cmd.render()}`")


async def _deploy(ctx: Context, request: _Request, via: str) -> str:
    pull = await fetch_pull(ctx, request.number)
    with ctx.services.store.read() as s:
        jobs, artifacts, deployments = _views(s, ctx.event.repo, request.number, ctx.instance)
    plan = plan_deploy(jobs, artifacts, deployments, head_sha=pull.head_sha,
                       policy=ctx.config.deploy.policy, filters=request.filters,
                       force_job=request.force_job)
    quoted = f"> {request.cmd.line.strip()}\n\n" if request.cmd and request.cmd.line else ""
    if plan.refusal is not None:
        ctx.reply(request.number, f"deploy:{request.tag}",
                  f"{quoted}**layerbot `{ctx.instance}`**: nothing deployed: {plan.refusal}.")
        return f"deploy refused: {plan.refusal}"
    if request.dry_run or not plan.queued:
        ctx.reply(request.number, f"deploy:{request.tag}",
                  quoted + describe_plan(ctx.instance, plan, pull.head_sha, request.dry_run))
        return "deploy dry-run" if request.dry_run else "deploy: nothing new"
    ctx.write(lambda s: _record(s, ctx, request, plan))
    return f"deploy of {len(plan.queued)} artifact(s) at {pull.head_sha[:12]} via {via}"


def _record(session: Session, ctx: Context, request: _Request, plan: Plan) -> None:
    """Queued deployments, checked again in the transaction: the row per artifact is what
    makes a repeated trigger a no-op."""
    repo, now, who = ctx.event.repo, ctx.now, ctx.event.sender_login
    key = deploy_report_key(ctx.instance, repo, request.number)
    forced = request.force_job is not None
    for pick in plan.queued:
        existing = session.scalar(
            select(Deployment).where(Deployment.artifact_id == pick.artifact.id))
        if existing is None:
            session.add(Deployment(artifact_id=pick.artifact.id, job_id=pick.job.id, repo=repo,
                                   pr=request.number, state="queued", requested_by=who,
                                   forced=forced, created_at=now, updated_at=now,
                                   report_key=key))
        elif existing.state == "failed":
            existing.state, existing.error, existing.updated_at = "queued", None, now
            existing.requested_by, existing.forced = who, forced
    session.flush()
    report_deployments(session, ctx.config, repo, request.number, now,
                       sorted({p.job.id for p in plan.queued}))


# ----------------------------------------------------------------------------- ingest outcomes


#: What `layerbot ingest` writes into its comment on the source PR (see cli_deploy).
_INGEST_STATE = re.compile(r"<!-- layerbot-ingest-state:([A-Za-z0-9_=-]+) -->")
#: Ingest outcome -> deployment state.
_INGESTED = {"ingested": "ingested", "duplicate": "ingested", "rejected": "rejected",
             "failed": "rejected"}


def ingest_outcome(body: str) -> dict[str, str] | None:
    """The outcome hidden in an ingest report comment, if it carries one."""
    m = _INGEST_STATE.search(body)
    if m is None:
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(m.group(1)))
    except (ValueError, binascii.Error):
        return None
    fields = ("instance", "key", "sha256", "state")
    if not isinstance(data, dict) or not all(isinstance(data.get(f), str) for f in fields):
        return None
    return {k: str(v) for k, v in data.items()}


@router.on("issue_comment", "created")
@router.on("issue_comment", "edited")
async def on_ingest_report(event: Event, ctx: Context) -> str | None:
    """The repository server reported an ingest outcome on the PR: record it.

    Only the App's own comments count (nobody else can post as the App), so a person
    cannot mark an artifact ingested by pasting the marker into a comment.
    """
    comment = event.payload.get("comment") or {}
    user = comment.get("user") or {}
    if user.get("login") != ctx.config.bot_login or user.get("type") != "Bot":
        return None
    outcome = ingest_outcome(str(comment.get("body") or ""))
    if outcome is None or outcome["instance"] != ctx.instance:
        return None
    state = _INGESTED.get(outcome["state"])
    if state is None:
        return None
    number = int(event.payload["issue"]["number"])
    reason = outcome.get("reason", "") if state == "rejected" else None
    if outcome["state"] == "failed":
        reason = f"the ingest command failed: {reason}"
    ctx.write(lambda s: _record_ingest(s, ctx, number, outcome["key"], outcome["sha256"],
                                       state, reason))
    return f"ingest outcome of {outcome['key']}: {state}"


def _record_ingest(session: Session, ctx: Context, number: int, key: str, sha256: str,
                   state: str, reason: str | None) -> None:
    rows = session.scalars(
        select(Deployment).join(Artifact, Deployment.artifact_id == Artifact.id)
        .join(Job, Deployment.job_id == Job.id)
        .where(Deployment.repo == ctx.event.repo, Deployment.pr == number,
               Deployment.key == key, Artifact.sha256 == sha256,
               Job.instance == ctx.instance,
               Deployment.state.in_(("uploaded", "skipped", "ingested", "rejected")))).all()
    for d in rows:
        d.state, d.error, d.updated_at = state, reason, ctx.now
    if rows:
        report_deployments(session, ctx.config, ctx.event.repo, number, ctx.now,
                           sorted({d.job_id for d in rows}))


__all__ = ["Plan", "ingest_outcome", "on_deploy_command", "on_label", "plan_deploy", "router"]
