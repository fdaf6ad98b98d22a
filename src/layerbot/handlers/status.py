"""`bot: status`: the latest result per target for the PR's head now; with ``last_build``,
the jobs of the latest build only."""

from __future__ import annotations

from layerbot.core import report
from layerbot.handlers.jobs import jobs_of_pr, nothing_built, of_latest_build
from layerbot.handlers.registry import CommandBinding, Invocation
from layerbot.store import jobs as jobstore


async def on_status(inv: Invocation) -> str | None:
    cmd, ctx, number = inv.cmd, inv.ctx, inv.number
    jobs = jobs_of_pr(ctx, number)
    if not jobs:
        return nothing_built(ctx, number, cmd, "report")
    if cmd.last_build:
        jobs = of_latest_build(jobs)
    with ctx.services.store.read() as s:
        rows = jobstore.rows_for_jobs(s, jobs)
    pull = await ctx.fetch_pull(number)
    # A pipeline is one line per target: its steps' progress (core/pipeline_report.py).
    body = (report.last_build_comment(ctx.instance, pull.sha, rows, ctx.now) if cmd.last_build
            else report.status_comment(ctx.instance, pull.sha, rows, ctx.now))
    ctx.reply(number, f"status:{ctx.event.delivery_id}:{cmd.lineno}", body)
    return "status"


COMMAND = CommandBinding("status", on_status)
