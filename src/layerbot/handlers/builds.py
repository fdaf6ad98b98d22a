"""`bot: build`: build the PR's head for the targets the filters select.

It reads what it needs (who may, the PR's head now), then records a build with queued jobs
and the reply: all applied in the event's transaction. The pin check and the build request
are shared with `bot: rebuild` (``rebuild.py``).
"""

from __future__ import annotations

import asyncio
from datetime import datetime

from layerbot.core import pinning
from layerbot.core.commands import Command
from layerbot.core.targets import (
    names_this,
    select_targets,
    validate_batch_options,
    validate_exportvariables,
)
from layerbot.handlers.base import Context, Event
from layerbot.handlers.registry import CommandBinding, Invocation
from layerbot.jobs.planner import BuildRequest, PlannedTarget
from layerbot.operations import builds
from layerbot.operations.pulls import PullHead
from layerbot.store.pushes import latest_push


def _written_at(event: Event) -> datetime | None:
    created = (event.payload.get("comment") or {}).get("created_at")
    try:
        return datetime.fromisoformat(created) if isinstance(created, str) else None
    except ValueError:
        return None


def _latest_push(ctx: Context, number: int) -> tuple[str, datetime] | None:
    with ctx.services.store.read() as s:
        return latest_push(s, ctx.instance, ctx.event.repo, number)


async def pin_refused(ctx: Context, cmd: Command, pull: PullHead) -> str | None:
    """Refuse, with a reply, a build of anything but the commit the author saw.

    See ``core/pinning.py``: a pinned head that moved, a command older than the latest
    push, or no pin when ``build.require_sha`` asks for one.
    """
    pushed = await asyncio.to_thread(_latest_push, ctx, pull.number)
    check = pinning.PinCheck(
        head_sha=pull.sha, pinned=cmd.sha, require_pin=ctx.config.build.require_sha,
        written_at=_written_at(ctx.event), pushed_at=pushed[1] if pushed else None,
        pushed_head=pushed[0] if pushed else None)
    refusal = pinning.check(check)
    if refusal is None:
        return None
    ctx.reply(pull.number, f"pin:{ctx.event.delivery_id}:{cmd.lineno}",
              f"> {cmd.line.strip()}\n\n**layerbot `{ctx.instance}`**: "
              + pinning.message(refusal, check, f"bot: {cmd.name}"))
    return f"{cmd.name} refused: {refusal.value} (head {pull.sha[:12]})"


def build_request(ctx: Context, pull: PullHead, command: str,
                  exportvariables: tuple[tuple[str, str], ...] = (),
                  batch_options: tuple[tuple[str, str], ...] = ()) -> BuildRequest:
    """A build of the PR's head ``pull`` asked for by the event's comment."""
    comment = ctx.event.payload.get("comment") or {}
    return BuildRequest(
        repo=ctx.event.repo, pr=pull.number, installation_id=ctx.event.installation_id,
        head_sha=pull.sha, base_ref=pull.base_ref, clone_url=pull.clone_url,
        command=command, requested_by=ctx.event.sender_login,
        comment_id=comment.get("id"), delivery_id=ctx.event.delivery_id,
        exportvariables=exportvariables, batch_options=batch_options,
        priority=int(ctx.config.pipelines.priority_label in pull.labels))


def record_and_report(ctx: Context, request: BuildRequest, targets: list[PlannedTarget],
                      redo_of: dict[int, int] | None = None) -> None:
    """Record the build, its jobs and its reply in the event's transaction."""
    ctx.write(lambda s: builds.record_and_report(s, ctx.config, request, targets, ctx.now,
                                                 redo_of))


async def on_build(inv: Invocation) -> str | None:
    cmd, ctx, number = inv.cmd, inv.ctx, inv.number
    fleet = await asyncio.to_thread(ctx.fleet)
    inst = cmd.filters.inst
    # inst: naming agents or clusters (not this control plane) limits who may build.
    agent_filter = inst if inst is not None and not names_this(inst, ctx.instance) else None
    selection = select_targets(
        cmd.filters, ctx.instance, fleet.node_types(ctx.config, agent_filter),
        ctx.config.repo_targets, also_named=fleet.names(),
        capabilities=fleet.describe(ctx.config) if fleet.remote else None)
    if not selection.for_this_instance:
        return None  # inst: names another instance: it answers, this one stays silent
    if not await inv.permitted():
        return "build refused"
    if not selection.targets:
        ctx.reply(number, f"nothing:{ctx.event.delivery_id}:{cmd.lineno}",
                  f"> {cmd.line.strip()}\n\n**layerbot `{ctx.instance}`**: "
                  f"{selection.message}")
        return "build selected nothing"
    backend = ctx.config.backend
    overridable = backend.slurm.overridable if backend.kind == "slurm" else []
    problems = validate_exportvariables(cmd.filters.exportvars,
                                        ctx.config.build.allowed_exportvars)
    problems += validate_batch_options(cmd.filters.batch_options, overridable, backend.kind)
    if problems:
        ctx.reply(number, f"exportvars:{ctx.event.delivery_id}:{cmd.lineno}",
                  f"> {cmd.line.strip()}\n\n**layerbot `{ctx.instance}`**: "
                  + "; ".join(problems))
        return "build refused: exportvariable"
    pull = await ctx.fetch_pull(number)
    if pull.state != "open":
        ctx.reply(number, f"closed:{ctx.event.delivery_id}:{cmd.lineno}",
                  f"**layerbot `{ctx.instance}`**: this pull request is {pull.state}; "
                  "nothing was built.")
        return "build refused: PR not open"
    if refused := await pin_refused(ctx, cmd, pull):
        return refused
    targets = [PlannedTarget(t.node_type, t.repo_target, t.cpu_target, t.accelerator,
                             t.build_on, agent_filter) for t in selection.targets]
    request = build_request(ctx, pull, cmd.line.strip() or cmd.render(),
                            cmd.filters.exportvariables, cmd.filters.batch_options)
    record_and_report(ctx, request, targets)
    return f"build of {len(targets)} target(s) at {pull.sha[:12]}"


COMMAND = CommandBinding("build", on_build, permission="build")
