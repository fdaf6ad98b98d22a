"""`bot: status`: the latest result per target for the PR's head now."""

from __future__ import annotations

from layerbot.core import report
from layerbot.handlers.jobs import jobs_of_pr
from layerbot.handlers.registry import CommandBinding, Invocation
from layerbot.store import jobs as jobstore


async def on_status(inv: Invocation) -> str | None:
    cmd, ctx, number = inv.cmd, inv.ctx, inv.number
    jobs = jobs_of_pr(ctx, number)
    if not jobs:
        return None  # nothing built here; instances that built something answer
    with ctx.services.store.read() as s:
        rows = jobstore.rows_for_jobs(s, jobs)
    pull = await ctx.fetch_pull(number)
    ctx.reply(number, f"status:{ctx.event.delivery_id}:{cmd.lineno}",
              report.status_comment(ctx.instance, pull.sha, rows))
    return "status"


COMMAND = CommandBinding("status", on_status)
