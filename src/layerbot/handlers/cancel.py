"""`bot: cancel`: the unfinished jobs of the PR's latest build (``all``: of every build;
``job:ID``: that one). Queued jobs end at once, jobs in the backend are cancelled there."""

from __future__ import annotations

from layerbot.core.jobs import JobState
from layerbot.handlers.jobs import jobs_of_pr, no_such_job, nothing_built, of_latest_build
from layerbot.handlers.registry import CommandBinding, Invocation
from layerbot.operations.cancelling import cancel_jobs


async def on_cancel(inv: Invocation) -> str | None:
    cmd, ctx, number = inv.cmd, inv.ctx, inv.number
    jobs = jobs_of_pr(ctx, number)
    if cmd.job_id is not None and jobs and not any(j.id == cmd.job_id for j in jobs):
        return no_such_job(ctx, number, cmd)
    if not jobs:
        return nothing_built(ctx, number, cmd, "cancel")
    unfinished = [j for j in jobs if JobState(j.state).active]
    if cmd.job_id is not None:
        chosen = [j for j in unfinished if j.id == cmd.job_id]
    elif cmd.all:
        chosen = unfinished
    else:  # as help says: by default those of the latest build
        chosen = [j for j in of_latest_build(jobs) if JobState(j.state).active]
    if not await inv.permitted():
        return "cancel refused"
    ids = [j.id for j in chosen]
    reason = f"cancelled by @{ctx.event.sender_login}"
    ctx.write(lambda s: cancel_jobs(s, ctx.config, ids, reason, ctx.now))
    # Answered either way (the soak found a cancel that acted met with silence but for the
    # build's reply, which may be far up the conversation).
    ctx.reply(number, f"cancel:{ctx.event.delivery_id}:{cmd.lineno}",
              f"> {cmd.line.strip()}\n\n**layerbot `{ctx.instance}`**: "
              + (f"cancelling {_jobs(ids)}; the build's reply shows them end." if ids else
                 "no waiting or running job to cancel" + _earlier(len(unfinished)) + "."))
    return f"cancel of {len(ids)} job(s)"


def _jobs(ids: list[int]) -> str:
    shown = ", ".join(str(i) for i in ids[:20]) + (", ..." if len(ids) > 20 else "")
    return f"{len(ids)} job(s) ({shown})"


def _earlier(unfinished: int) -> str:
    """Nothing of the latest build to cancel, but of earlier ones: say how to reach them."""
    if not unfinished:
        return ""
    return (f" in the latest build; {unfinished} job(s) of earlier builds have not ended "
            "(`bot: cancel all` cancels them)")


COMMAND = CommandBinding("cancel", on_cancel, permission="cancel")
