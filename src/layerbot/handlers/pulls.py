"""PR events: new commits make waiting jobs of older commits moot; closing ends them."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from layerbot.core.jobs import JobState
from layerbot.handlers.base import Context, Event, Router
from layerbot.operations.cancelling import cancel_jobs
from layerbot.store.models import Build, Job
from layerbot.store.pushes import record_push

router = Router()

#: Jobs that have not started: cancelling them loses no work.
WAITING = (JobState.QUEUED.value, JobState.SUBMITTED.value)


def _waiting_jobs(ctx: Context, number: int, keep_sha: str | None) -> list[int]:
    with ctx.services.store.read() as s:
        stmt = select(Job.id).where(Job.repo == ctx.event.repo, Job.pr == number,
                                    Job.instance == ctx.instance, Job.state.in_(WAITING))
        if keep_sha is not None:
            stmt = stmt.where(Job.head_sha != keep_sha)
        return list(s.scalars(stmt))


@router.on("pull_request", "opened")
@router.on("pull_request", "synchronize")
async def remember_push(event: Event, ctx: Context) -> str | None:
    """Record when GitHub saw this push (or the PR's first head): commands written before
    it are stale, and a head other than this one means a push not handled yet.

    GitHub's ``pull_request.updated_at`` of this very event, not the bot's clock (see
    ``core/pinning.py``); the handling time stands in only if the body lacks it.
    """
    pr = event.payload["pull_request"]
    try:
        pushed_at = datetime.fromisoformat(str(pr["updated_at"]))
    except (KeyError, ValueError):
        pushed_at = ctx.now
    number, head = int(pr["number"]), str(pr["head"]["sha"])
    ctx.write(lambda s: record_push(s, ctx.instance, event.repo, number, head, pushed_at,
                                    ctx.now))
    return f"push of {head[:12]} recorded"


@router.on("pull_request", "synchronize")
async def on_push(event: Event, ctx: Context) -> str | None:
    if not ctx.config.build.cancel_superseded:
        return None
    pr = event.payload["pull_request"]
    head = pr["head"]["sha"]
    ids = _waiting_jobs(ctx, int(pr["number"]), keep_sha=head)
    if not ids:
        return None
    note = (f"new commits were pushed ({head[:12]}): {len(ids)} waiting job(s) for older "
            "commits were cancelled")

    def write(session: Session) -> None:
        _note_builds(session, ids, note)
        cancel_jobs(session, ctx.config, ids, "superseded by a newer commit", ctx.now)
    ctx.write(write)
    return f"cancelled {len(ids)} superseded job(s)"


def _note_builds(session: Session, job_ids: list[int], note: str) -> None:
    build_ids = set(session.scalars(select(Job.build_id).where(Job.id.in_(job_ids))))
    for build in session.scalars(select(Build).where(Build.id.in_(build_ids))):
        build.note = note


@router.on("pull_request", "closed")
async def on_closed(event: Event, ctx: Context) -> str | None:
    pr = event.payload["pull_request"]
    number = int(pr["number"])
    ids = _waiting_jobs(ctx, number, keep_sha=None)
    merged = "merged" if pr.get("merged") else "closed"

    def write(session: Session) -> None:
        session.execute(update(Build).where(Build.repo == event.repo, Build.pr == number,
                                            Build.instance == ctx.instance)
                        .values(closed_at=ctx.now))
        if ids:
            _note_builds(session, ids, f"the pull request was {merged}: "
                                       f"{len(ids)} waiting job(s) were cancelled")
            cancel_jobs(session, ctx.config, ids, f"the pull request was {merged}", ctx.now)
    ctx.write(write)
    retention = timedelta(days=ctx.config.build.archive_after_days)
    return f"PR {merged}: {len(ids)} waiting job(s) cancelled; archive after {retention}"


@router.on("pull_request", "reopened")
async def on_reopened(event: Event, ctx: Context) -> str | None:
    number = int(event.payload["pull_request"]["number"])
    ctx.write(lambda s: s.execute(
        update(Build).where(Build.repo == event.repo, Build.pr == number,
                            Build.instance == ctx.instance).values(closed_at=None)))
    return "PR reopened: its job directories are kept"
