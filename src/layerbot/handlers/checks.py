"""Check runs: GitHub's Re-run button rebuilds that job's target, for the check run's commit.

The person who clicks Re-run saw the check run of one commit; a push since then is not what
they approved (issue 9, item 9), so the re-run builds only if that commit is still the PR's
head, and otherwise says what the head is now and builds nothing.
"""

from __future__ import annotations

import asyncio

from layerbot.handlers.base import Context, Event, Router
from layerbot.handlers.builds import record_and_report
from layerbot.jobs.planner import BuildRequest
from layerbot.operations.builds import redo_targets
from layerbot.store.models import Build, Job

router = Router()


@router.on("check_run", "rerequested")
async def on_rerun(event: Event, ctx: Context) -> str | None:
    run = event.payload["check_run"]
    if (run.get("app") or {}).get("id") not in (None, ctx.config.github.app_id):
        return None  # another App's check run
    try:
        job_id = int(run.get("external_id") or "")
    except ValueError:
        return None
    with ctx.services.store.read() as s:
        job = s.get(Job, job_id)
        build = s.get(Build, job.build_id) if job else None
    if job is None or build is None or job.instance != ctx.instance or build.pr is None:
        return None
    if build.repo.lower() != event.repo.lower():
        # The external id is just a number: a check run of another repository (one the
        # sender controls) must not rebuild, or report on, this repository's job.
        return f"re-run ignored: job {job.id} belongs to {build.repo}, not {event.repo}"
    decision = await ctx.services.access.check("build", event.repo, event.sender_login,
                                               event.installation_id)
    if not decision.allowed:
        ctx.reply(build.pr, f"refused:{event.delivery_id}:rerun",
                  f"**layerbot `{ctx.instance}`**: @{event.sender_login}, the re-run of job "
                  f"{job.id} is not allowed: {decision.reason}.\n\n{decision.who_may}")
        return "re-run refused"
    fleet = await asyncio.to_thread(ctx.fleet)
    targets, redo_of = redo_targets(ctx.config, [job], fleet.node_types(ctx.config))
    if not targets:
        return "re-run impossible: target no longer configured"
    pull = await ctx.fetch_pull(build.pr)
    seen = str(run.get("head_sha") or job.head_sha)
    if pull.sha != seen:
        ctx.reply(build.pr, f"stale:{event.delivery_id}:rerun",
                  f"**layerbot `{ctx.instance}`**: @{event.sender_login}, the re-run of job "
                  f"{job.id} builds nothing: its check run is for `{seen[:12]}`, and the PR's "
                  f"head is now `{pull.sha[:12]}`. Re-run the check of the new head, or "
                  f"write `bot: build sha:{pull.sha[:12]}`.")
        return f"re-run refused: check run for {seen[:12]}, head is {pull.sha[:12]}"
    request = BuildRequest(
        repo=event.repo, pr=build.pr, installation_id=event.installation_id,
        head_sha=pull.sha, base_ref=pull.base_ref, clone_url=pull.clone_url,
        command=f"Re-run of job {job.id} (check run)", requested_by=event.sender_login,
        delivery_id=event.delivery_id)
    record_and_report(ctx, request, targets, redo_of)
    return f"re-run of job {job.id} at {pull.sha[:12]}"

