"""Check runs: GitHub's Re-run button rebuilds that job's target at the PR's current head."""

from __future__ import annotations

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
    targets, redo_of = redo_targets(ctx.config, [job])
    if not targets:
        return "re-run impossible: target no longer configured"
    pull = await ctx.fetch_pull(build.pr)
    request = BuildRequest(
        repo=event.repo, pr=build.pr, installation_id=event.installation_id,
        head_sha=pull.sha, base_ref=pull.base_ref, clone_url=pull.clone_url,
        command=f"Re-run of job {job.id} (check run)", requested_by=event.sender_login,
        delivery_id=event.delivery_id)
    record_and_report(ctx, request, targets, redo_of)
    return f"re-run of job {job.id} at {pull.sha[:12]}"

