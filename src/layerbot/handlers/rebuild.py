"""`bot: rebuild`: the jobs of the PR that did not succeed (or one job) again, at the PR's
head now."""

from __future__ import annotations

import asyncio

from layerbot.core.jobs import JobState
from layerbot.handlers.builds import build_request, pin_refused, record_and_report
from layerbot.handlers.jobs import jobs_of_pr, no_such_job
from layerbot.handlers.registry import CommandBinding, Invocation
from layerbot.operations.builds import redo_targets
from layerbot.store.models import Job

#: What `failed` (the default) rebuilds: the latest job of a target ended in one of these.
NOT_SUCCEEDED = (JobState.FAILED, JobState.TIMED_OUT, JobState.LOST, JobState.CANCELLED)


async def on_rebuild(inv: Invocation) -> str | None:
    cmd, ctx, number = inv.cmd, inv.ctx, inv.number
    jobs = jobs_of_pr(ctx, number)
    if cmd.job_id is not None:
        chosen = [j for j in jobs if j.id == cmd.job_id]
        if not chosen:
            return None if not jobs else no_such_job(ctx, number, cmd)
    else:  # `failed` (the default): the latest job per target, where it did not succeed
        latest: dict[tuple[str, str], Job] = {}
        for j in jobs:
            latest[(j.target, j.repo_target)] = j
        chosen = [j for j in latest.values() if JobState(j.state) in NOT_SUCCEEDED]
        if not chosen:
            if jobs:
                ctx.reply(number, f"rebuild:{ctx.event.delivery_id}:{cmd.lineno}",
                          f"**layerbot `{ctx.instance}`**: no failed jobs to rebuild.")
                return "nothing to rebuild"
            return None
    if not await inv.permitted():
        return "rebuild refused"
    fleet = await asyncio.to_thread(ctx.fleet)
    targets, redo_of = redo_targets(ctx.config, chosen, fleet.node_types(ctx.config))
    if not targets:
        return None
    pull = await ctx.fetch_pull(number)
    if refused := await pin_refused(ctx, cmd, pull):
        return refused
    record_and_report(ctx, build_request(ctx, pull, cmd.line.strip() or cmd.render()),
                      targets, redo_of)
    return f"rebuild of {len(targets)} job(s)"


COMMAND = CommandBinding("rebuild", on_rebuild, permission="build")
