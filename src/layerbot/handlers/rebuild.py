"""`bot: rebuild`: the jobs of the PR that did not succeed (or one job) again, at the PR's
head now."""

from __future__ import annotations

import asyncio

from layerbot.core.jobs import JobState
from layerbot.handlers.builds import build_request, pin_refused, record_and_report
from layerbot.handlers.jobs import jobs_of_pr, no_such_job, nothing_built
from layerbot.handlers.registry import CommandBinding, Invocation
from layerbot.operations.builds import redo_targets
from layerbot.operations.pipelines import rebuild_failed, unfinished_steps
from layerbot.store.models import Job

#: What `failed` (the default) rebuilds: the latest job of a target ended in one of these.
NOT_SUCCEEDED = (JobState.FAILED, JobState.TIMED_OUT, JobState.LOST, JobState.CANCELLED)


async def on_rebuild(inv: Invocation) -> str | None:
    cmd, ctx, number = inv.cmd, inv.ctx, inv.number
    jobs = jobs_of_pr(ctx, number)
    if cmd.job_id is not None:
        chosen = [j for j in jobs if j.id == cmd.job_id]
        if not chosen:
            return no_such_job(ctx, number, cmd)
    else:  # `failed` (the default): the latest job per target, where it did not succeed
        latest: dict[tuple[str, str], Job] = {}
        for j in jobs:
            if j.step_id is None:  # a pipeline's steps are its plan job's target
                latest[(j.target, j.repo_target)] = j
        chosen = [j for j in latest.values() if JobState(j.state) in NOT_SUCCEEDED]
        pipelines_to_redo = [j.id for j in latest.values() if unfinished_steps(
            s for s in jobs if s.pipeline_id == j.id)]
        if pipelines_to_redo:
            if not await inv.permitted():
                return "rebuild refused"
            done = _rebuild_steps(inv, pipelines_to_redo)
            if not chosen:
                return done
        if not chosen:
            if jobs:
                ctx.reply(number, f"rebuild:{ctx.event.delivery_id}:{cmd.lineno}",
                          f"**layerbot `{ctx.instance}`**: no failed jobs to rebuild.")
                return "nothing to rebuild"
            return nothing_built(ctx, number, cmd, "rebuild")
    if not await inv.permitted():
        return "rebuild refused"
    fleet = await asyncio.to_thread(ctx.fleet)
    targets, redo_of = redo_targets(ctx.config, chosen, fleet.node_types(ctx.config))
    if not targets:
        ctx.reply(number, f"rebuild:{ctx.event.delivery_id}:{cmd.lineno}",
                  f"**layerbot `{ctx.instance}`**: nothing rebuilt: no agent builds the "
                  "targets of those jobs now (see `bot: show_config`).")
        return "nothing to rebuild: no agent for the targets"
    pull = await ctx.fetch_pull(number)
    if refused := await pin_refused(ctx, cmd, pull):
        return refused
    record_and_report(ctx, build_request(ctx, pull, cmd.line.strip() or cmd.render()),
                      targets, redo_of)
    return f"rebuild of {len(targets)} job(s)"


def _rebuild_steps(inv: Invocation, pipelines: list[int]) -> str:
    """Only the failed and cancelled steps of each pipeline, at the commit it was built
    at, on the agent that holds its artifacts; the build's reply shows their progress.
    (Other failed targets are rebuilt whole, at the PR's head, as before.)"""
    ctx, cmd = inv.ctx, inv.cmd
    ctx.write(lambda s: [rebuild_failed(s, ctx.config, p, ctx.now) for p in pipelines])
    ctx.reply(inv.number, f"rebuild-steps:{ctx.event.delivery_id}:{cmd.lineno}",
              f"**layerbot `{ctx.instance}`**: rebuilding the failed and cancelled steps of "
              f"{len(pipelines)} pipeline(s) at the commit they were built at; the steps "
              "that succeeded are reused. Their progress is in the build's reply.")
    return f"rebuild of the failed steps of {len(pipelines)} pipeline(s)"


COMMAND = CommandBinding("rebuild", on_rebuild, permission="build")
