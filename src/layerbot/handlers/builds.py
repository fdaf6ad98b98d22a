"""Build commands in PR comments: build, rebuild, cancel, status, show_config.

Each reads what it needs (who may, the PR's head now), then records a build with queued
jobs, or cancel requests, plus the reply: all applied in the event's transaction.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from layerbot import control
from layerbot.core import commands, pinning, report
from layerbot.core.commands import Command
from layerbot.core.jobs import JobState
from layerbot.core.targets import (
    describe_capabilities,
    select_targets,
    validate_batch_options,
    validate_exportvariables,
)
from layerbot.handlers.base import Context, Event
from layerbot.jobs.planner import BuildRequest, PlannedTarget, planned_from_job, record_build
from layerbot.reporting import report_build
from layerbot.store import jobs as jobstore
from layerbot.store.models import Instance, Job
from layerbot.store.pushes import latest_push


@dataclass(frozen=True)
class PullRequest:
    number: int
    head_sha: str
    base_ref: str
    clone_url: str
    state: str


async def fetch_pull(ctx: Context, number: int) -> PullRequest:
    """The PR as it is now: its head is what a command handled now pins."""
    github = ctx.services.github
    data = await github.json(ctx.event.installation_id, "GET",
                             f"/repos/{ctx.event.repo}/pulls/{number}")
    clone_url = data["base"]["repo"]["clone_url"]
    if ctx.config.build.clone_url:
        clone_url = ctx.config.build.clone_url.format(repo=ctx.event.repo)
    return PullRequest(number, data["head"]["sha"], data["base"]["ref"], clone_url,
                       data["state"])


async def allowed(ctx: Context, action: str, number: int, cmd: Command | None) -> bool:
    """Check who may; a refusal is answered on the PR, quoting the command."""
    decision = await ctx.services.access.check(action, ctx.event.repo, ctx.event.sender_login,
                                               ctx.event.installation_id)
    if decision.allowed:
        return True
    quoted = f"> {cmd.line.strip()}\n\n" if cmd is not None and cmd.line else ""
    ctx.reply(number, f"refused:{ctx.event.delivery_id}:{action}:{cmd.lineno if cmd else 0}",
              f"{quoted}**layerbot `{ctx.instance}`**: @{ctx.event.sender_login}, "
              f"that is not allowed: {decision.reason}.\n\n{decision.who_may}")
    return False


def paused_note(ctx: Context) -> str | None:
    with ctx.services.store.read() as s:
        inst = s.get(Instance, ctx.instance)
    if inst is not None and inst.paused:
        return ("this instance is paused: the jobs are recorded and will be submitted "
                "when it is resumed")
    return None


def _issue_number(event: Event) -> int:
    return int(event.payload["issue"]["number"])


def _written_at(event: Event) -> datetime | None:
    created = (event.payload.get("comment") or {}).get("created_at")
    try:
        return datetime.fromisoformat(created) if isinstance(created, str) else None
    except ValueError:
        return None


def _latest_push(ctx: Context, number: int) -> tuple[str, datetime] | None:
    with ctx.services.store.read() as s:
        return latest_push(s, ctx.instance, ctx.event.repo, number)


async def pin_refused(ctx: Context, cmd: Command, pull: PullRequest) -> str | None:
    """Refuse, with a reply, a build of anything but the commit the author saw.

    See ``core/pinning.py``: a pinned head that moved, a command older than the latest
    push, or no pin when ``build.require_sha`` asks for one.
    """
    pushed = await asyncio.to_thread(_latest_push, ctx, pull.number)
    check = pinning.PinCheck(
        head_sha=pull.head_sha, pinned=cmd.sha, require_pin=ctx.config.build.require_sha,
        written_at=_written_at(ctx.event), pushed_at=pushed[1] if pushed else None,
        pushed_head=pushed[0] if pushed else None)
    refusal = pinning.check(check)
    if refusal is None:
        return None
    ctx.reply(pull.number, f"pin:{ctx.event.delivery_id}:{cmd.lineno}",
              f"> {cmd.line.strip()}\n\n**layerbot `{ctx.instance}`**: "
              + pinning.message(refusal, check, f"bot: {cmd.name}"))
    return f"{cmd.name} refused: {refusal.value} (head {pull.head_sha[:12]})"


async def on_build(cmd: Command, event: Event, ctx: Context) -> str | None:
    number = _issue_number(event)
    selection = select_targets(cmd.filters, ctx.instance, ctx.config.node_types,
                               ctx.config.repo_targets)
    if not selection.for_this_instance:
        return None  # inst: names another instance: it answers, this one stays silent
    if not await allowed(ctx, "build", number, cmd):
        return "build refused"
    if not selection.targets:
        ctx.reply(number, f"nothing:{event.delivery_id}:{cmd.lineno}",
                  f"> {cmd.line.strip()}\n\n**layerbot `{ctx.instance}`**: "
                  f"{selection.message}")
        return "build selected nothing"
    backend = ctx.config.backend
    overridable = backend.slurm.overridable if backend.kind == "slurm" else []
    problems = validate_exportvariables(cmd.filters.exportvars,
                                        ctx.config.build.allowed_exportvars)
    problems += validate_batch_options(cmd.filters.batch_options, overridable, backend.kind)
    if problems:
        ctx.reply(number, f"exportvars:{event.delivery_id}:{cmd.lineno}",
                  f"> {cmd.line.strip()}\n\n**layerbot `{ctx.instance}`**: "
                  + "; ".join(problems))
        return "build refused: exportvariable"
    pull = await fetch_pull(ctx, number)
    if pull.state != "open":
        ctx.reply(number, f"closed:{event.delivery_id}:{cmd.lineno}",
                  f"**layerbot `{ctx.instance}`**: this pull request is {pull.state}; "
                  "nothing was built.")
        return "build refused: PR not open"
    if refused := await pin_refused(ctx, cmd, pull):
        return refused
    targets = [PlannedTarget(t.node_type, t.repo_target, t.cpu_target, t.accelerator,
                             t.build_on) for t in selection.targets]
    request = _request(ctx, pull, cmd.line.strip() or cmd.render(), cmd.filters.exportvariables,
                       cmd.filters.batch_options)
    note = await asyncio.to_thread(paused_note, ctx)
    record_and_report(ctx, request, targets, note)
    return f"build of {len(targets)} target(s) at {pull.head_sha[:12]}"


def _request(ctx: Context, pull: PullRequest, command: str,
             exportvariables: tuple[tuple[str, str], ...] = (),
             batch_options: tuple[tuple[str, str], ...] = ()) -> BuildRequest:
    comment = ctx.event.payload.get("comment") or {}
    return BuildRequest(
        repo=ctx.event.repo, pr=pull.number, installation_id=ctx.event.installation_id,
        head_sha=pull.head_sha, base_ref=pull.base_ref, clone_url=pull.clone_url,
        command=command, requested_by=ctx.event.sender_login,
        comment_id=comment.get("id"), delivery_id=ctx.event.delivery_id,
        exportvariables=exportvariables, batch_options=batch_options)


def record_and_report(ctx: Context, request: BuildRequest, targets: list[PlannedTarget],
            note: str | None, redo_of: dict[int, int] | None = None) -> None:
    def write(session: Session) -> None:
        build, jobs = record_build(session, ctx.config, request, targets, ctx.now, redo_of)
        build.note = note
        report_build(session, ctx.config, build, ctx.now, changed=jobs)
    ctx.write(write)


async def on_rebuild(cmd: Command, event: Event, ctx: Context) -> str | None:
    number = _issue_number(event)
    with ctx.services.store.read() as s:
        jobs = list(jobstore.jobs_of_pr(s, event.repo, number, ctx.instance))
    if cmd.job_id is not None:
        chosen = [j for j in jobs if j.id == cmd.job_id]
        if not chosen:
            return None if not jobs else _no_such_job(ctx, number, cmd)
    else:  # `failed` (the default): the latest job per target, where it did not succeed
        latest: dict[tuple[str, str], Job] = {}
        for j in jobs:
            latest[(j.target, j.repo_target)] = j
        chosen = [j for j in latest.values()
                  if JobState(j.state) in (JobState.FAILED, JobState.TIMED_OUT, JobState.LOST,
                                           JobState.CANCELLED)]
        if not chosen:
            if jobs:
                ctx.reply(number, f"rebuild:{event.delivery_id}:{cmd.lineno}",
                          f"**layerbot `{ctx.instance}`**: no failed jobs to rebuild.")
                return "nothing to rebuild"
            return None
    if not await allowed(ctx, "build", number, cmd):
        return "rebuild refused"
    targets: list[PlannedTarget] = []
    redo: dict[int, int] = {}
    for job in chosen:
        planned = planned_from_job(ctx.config, job)
        if planned is not None:
            redo[len(targets)] = job.id
            targets.append(planned)
    if not targets:
        return None
    pull = await fetch_pull(ctx, number)
    if refused := await pin_refused(ctx, cmd, pull):
        return refused
    note = await asyncio.to_thread(paused_note, ctx)
    record_and_report(ctx, _request(ctx, pull, cmd.line.strip() or cmd.render()), targets,
                      note, redo)
    return f"rebuild of {len(targets)} job(s)"


def _no_such_job(ctx: Context, number: int, cmd: Command) -> str:
    ctx.reply(number, f"nojob:{ctx.event.delivery_id}:{cmd.lineno}",
              f"> {cmd.line.strip()}\n\n**layerbot `{ctx.instance}`**: this pull request has "
              f"no job {cmd.job_id} on this instance.")
    return "no such job"


async def on_cancel(cmd: Command, event: Event, ctx: Context) -> str | None:
    number = _issue_number(event)
    with ctx.services.store.read() as s:
        jobs = [j for j in jobstore.jobs_of_pr(s, event.repo, number, ctx.instance)
                if JobState(j.state).active]
        all_ids = {j.id for j in jobstore.jobs_of_pr(s, event.repo, number, ctx.instance)}
    if cmd.job_id is not None:
        if cmd.job_id not in all_ids:
            return None if not all_ids else _no_such_job(ctx, number, cmd)
        jobs = [j for j in jobs if j.id == cmd.job_id]
    if not all_ids:
        return None  # this instance has nothing for this PR: another one will answer
    if not await allowed(ctx, "cancel", number, cmd):
        return "cancel refused"
    ids = [j.id for j in jobs]
    ctx.write(lambda s: request_cancel(s, ctx, ids, f"cancelled by @{event.sender_login}"))
    if not ids:
        ctx.reply(number, f"cancel:{event.delivery_id}:{cmd.lineno}",
                  f"**layerbot `{ctx.instance}`**: no waiting or running job to cancel.")
    return f"cancel of {len(ids)} job(s)"


def request_cancel(session: Session, ctx: Context, job_ids: list[int], reason: str) -> int:
    """Queued jobs end at once; jobs in the backend are cancelled there by the reconciler."""
    return len(control.cancel_jobs(session, ctx.config, job_ids, reason, ctx.now))


async def on_status(cmd: Command, event: Event, ctx: Context) -> str | None:
    number = _issue_number(event)
    with ctx.services.store.read() as s:
        jobs = list(jobstore.jobs_of_pr(s, event.repo, number, ctx.instance))
        rows = jobstore.rows_for_jobs(s, jobs)
    if not jobs:
        return None  # nothing built here; instances that built something answer
    pull = await fetch_pull(ctx, number)
    ctx.reply(number, f"status:{event.delivery_id}:{cmd.lineno}",
              report.status_comment(ctx.instance, pull.head_sha, rows))
    return "status"


async def on_show_config(cmd: Command, event: Event, ctx: Context) -> str | None:
    cfg = ctx.config
    body = (f"**layerbot `{ctx.instance}`** ({cfg.backend.kind} backend)\n\n"
            + describe_capabilities(cfg.node_types, cfg.repo_targets))
    try:  # the batch system's own view (sinfo for Slurm); its failure must not fail this
        res = await asyncio.wait_for(ctx.services.backend.resources(), timeout=15)
        body += ("\n\n**Partitions** (nodes idle/allocated/down, CPUs idle/total)\n\n"
                 "| partition | state | nodes | CPUs | features | max time |\n"
                 "|---|---|---|---|---|---|\n"
                 + "\n".join(f"| `{p.name}`{' (default)' if p.default else ''} | {p.state} | "
                             f"{p.nodes_idle}/{p.nodes_allocated}/{p.nodes_down} | "
                             f"{p.cpus_idle}/{p.cpus_total} | {', '.join(p.features)} | "
                             f"{p.max_time or 'unlimited'} |" for p in res.partitions))
    except Exception:
        body += "\n\n(the batch system could not be asked for its partitions just now)"
    ctx.reply(_issue_number(event), f"config:{event.delivery_id}:{cmd.lineno}", body)
    return "show_config"


HANDLERS: dict[str, Any] = {
    "build": on_build, "rebuild": on_rebuild, "cancel": on_cancel, "status": on_status,
    "show_config": on_show_config,
}

__all__ = ["HANDLERS", "commands", "fetch_pull", "request_cancel"]
