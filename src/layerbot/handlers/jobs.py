"""What the job commands (rebuild, cancel, status) read of a PR's jobs on this instance."""

from __future__ import annotations

from collections.abc import Sequence

from layerbot.core.commands import Command
from layerbot.handlers.base import Context
from layerbot.store import jobs as jobstore
from layerbot.store.models import Job


def jobs_of_pr(ctx: Context, number: int) -> list[Job]:
    """The PR's jobs on this instance, oldest first."""
    with ctx.services.store.read() as s:
        return list(jobstore.jobs_of_pr(s, ctx.event.repo, number, ctx.instance))


def of_latest_build(jobs: Sequence[Job]) -> list[Job]:
    """The jobs of the latest build among ``jobs`` (builds are numbered as recorded)."""
    if not jobs:
        return []
    latest = max(j.build_id for j in jobs)
    return [j for j in jobs if j.build_id == latest]


def no_such_job(ctx: Context, number: int, cmd: Command) -> str:
    ctx.reply(number, f"nojob:{ctx.event.delivery_id}:{cmd.lineno}",
              f"> {cmd.line.strip()}\n\n**layerbot `{ctx.instance}`**: this pull request has "
              f"no job {cmd.job_id} on this instance.")
    return "no such job"


def nothing_built(ctx: Context, number: int, cmd: Command, what: str) -> str:
    """The answer of a job command on a PR with no job here yet: said, never silence (with
    several independent instances each says it of itself, as each answers a typo)."""
    ctx.reply(number, f"nojobs:{ctx.event.delivery_id}:{cmd.lineno}",
              f"> {cmd.line.strip()}\n\n**layerbot `{ctx.instance}`**: nothing has been built "
              f"for this pull request here yet, so there is nothing to {what}.")
    return "no jobs"
