"""Deploy triggers: the ``bot:deploy`` label and the ``bot: deploy`` command.

Either one, by someone allowed to deploy, records a queued ``Deployment`` per chosen
artifact in the event's transaction; the agent that built each job stages them from there
(``layerbot.operations.uploads``, ``layerbot.deploy.upload``). A deployment is unique per
artifact, so a label removed and added again, or a second command, finds the artifacts
already deployed and records nothing (only deployments that failed are queued again).

Which artifacts are candidates is decided by ``core.deploy_plan.plan_deploy``, a pure
function of the PR's jobs, their artifacts, the deployments so far, the PR's head *now* and
the policy; the control center's deploy action asks the same planner
(``operations/deployments.py`` reads its views and records what it picks).

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
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from layerbot.core.commands import BuildFilters, Command, pattern_matches
from layerbot.core.deploy_plan import Plan, plan_deploy
from layerbot.core.deployments import STAGED, DeploymentState
from layerbot.core.report import size as human_size
from layerbot.deploy.service import STATE_ICONS, report_deployments
from layerbot.handlers.base import Context, Event, Router
from layerbot.handlers.jobs import nothing_built
from layerbot.handlers.permissions import allowed
from layerbot.handlers.registry import CommandBinding, Invocation
from layerbot.operations.deployments import plan_views, queue_deployments
from layerbot.store import jobs as jobstore
from layerbot.store.deployments import transition
from layerbot.store.models import Artifact, Deployment, Job

router = Router()


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


async def on_deploy_command(inv: Invocation) -> str | None:
    cmd, ctx, number, event = inv.cmd, inv.ctx, inv.number, inv.event
    if cmd.filters.inst is not None and not pattern_matches(cmd.filters.inst, ctx.instance):
        return None  # inst: names another instance: it answers, this one stays silent
    if not await asyncio.to_thread(_has_jobs, ctx, number):
        return nothing_built(ctx, number, cmd, "deploy")
    if not await inv.permitted():
        return "deploy refused"
    if cmd.force and not await allowed(ctx, "force_deploy", number, cmd):
        return "forced deploy refused"
    request = _Request(number, cmd.filters, cmd.dry_run, cmd.job_id if cmd.force else None,
                       cmd, f"cmd:{event.delivery_id}:{cmd.lineno}")
    return await _deploy(ctx, request, f"`{cmd.line.strip() or cmd.render()}`")


async def _deploy(ctx: Context, request: _Request, via: str) -> str:
    pull = await ctx.fetch_pull(request.number)
    with ctx.services.store.read() as s:
        jobs, artifacts, deployments = plan_views(s, ctx.event.repo, request.number,
                                                  ctx.instance)
    plan = plan_deploy(jobs, artifacts, deployments, head_sha=pull.sha,
                       policy=ctx.config.deploy.policy, filters=request.filters,
                       force_job=request.force_job)
    quoted = f"> {request.cmd.line.strip()}\n\n" if request.cmd and request.cmd.line else ""
    if plan.refusal is not None:
        ctx.reply(request.number, f"deploy:{request.tag}",
                  f"{quoted}**layerbot `{ctx.instance}`**: nothing deployed: {plan.refusal}.")
        return f"deploy refused: {plan.refusal}"
    if request.dry_run or not plan.queued:
        ctx.reply(request.number, f"deploy:{request.tag}",
                  quoted + describe_plan(ctx.instance, plan, pull.sha, request.dry_run))
        return "deploy dry-run" if request.dry_run else "deploy: nothing new"
    ctx.write(lambda s: queue_deployments(
        s, ctx.config, ctx.event.repo, request.number, plan.queued, by=ctx.event.sender_login,
        forced=request.force_job is not None, now=ctx.now))
    return f"deploy of {len(plan.queued)} artifact(s) at {pull.sha[:12]} via {via}"


# ----------------------------------------------------------------------------- ingest outcomes


#: What `layerbot ingest` writes into its comment on the source PR (see cli_deploy).
_INGEST_STATE = re.compile(r"<!-- layerbot-ingest-state:([A-Za-z0-9_=-]+) -->")
#: Ingest outcome -> deployment state.
_INGESTED = {"ingested": DeploymentState.INGESTED, "duplicate": DeploymentState.INGESTED,
             "rejected": DeploymentState.REJECTED, "failed": DeploymentState.REJECTED}


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
    reason = outcome.get("reason", "") if state is DeploymentState.REJECTED else None
    if outcome["state"] == "failed":
        reason = f"the ingest command failed: {reason}"
    ctx.write(lambda s: _record_ingest(s, ctx, number, outcome["key"], outcome["sha256"],
                                       state, reason))
    return f"ingest outcome of {outcome['key']}: {state}"


def _record_ingest(session: Session, ctx: Context, number: int, key: str, sha256: str,
                   state: DeploymentState, reason: str | None) -> None:
    rows = session.scalars(
        select(Deployment).join(Artifact, Deployment.artifact_id == Artifact.id)
        .join(Job, Deployment.job_id == Job.id)
        .where(Deployment.repo == ctx.event.repo, Deployment.pr == number,
               Deployment.key == key, Artifact.sha256 == sha256,
               Job.instance == ctx.instance,
               Deployment.state.in_(sorted(s.value for s in STAGED)))).all()
    for d in rows:
        transition(d, state, ctx.now, reason)
    if rows:
        report_deployments(session, ctx.config, ctx.event.repo, number, ctx.now,
                           sorted({d.job_id for d in rows}))


COMMAND = CommandBinding("deploy", on_deploy_command, permission="deploy")

__all__ = ["COMMAND", "describe_plan", "ingest_outcome", "on_label", "router"]
