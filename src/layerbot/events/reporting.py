"""Keeping the PR informed: derive the reply and the check runs from the jobs, enqueue them.

Called inside the transaction that changed the jobs, so the report can never be lost nor
disagree with the state; the outbox coalesces the edits of one cycle into one request.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy.orm import Session

from layerbot.config import Config
from layerbot.core import report
from layerbot.github import writes
from layerbot.store import jobs as jobstore
from layerbot.store.locks import serialize_reports
from layerbot.store.models import Build, Job


def report_build(session: Session, config: Config, build: Build, now: datetime,
                 changed: Iterable[Job] = (), note: str | None = None) -> None:
    """Edit the build's reply (per chat level) and the check runs of the changed jobs'
    targets: one per target, a pipeline's steps moving its plan job's run."""
    if build.pr is None or build.installation_id is None:
        return  # `layerbot run`: nobody on GitHub to tell
    serialize_reports(session, build.repo, build.pr)  # before reading what it renders
    all_jobs = jobstore.jobs_of_build(session, build.id)
    rows = jobstore.rows_for_jobs(session, all_jobs)
    level = config.reporting.chatlevel
    finished = all(r.state.terminal for r in rows)  # steps too: nothing left to move
    if level != "quiet" or finished:
        header = report.BuildHeader(config.instance.name, build.requested_by, build.command,
                                    build.head_sha, build.base_ref, note or build.note)
        writes.enqueue_comment(session, instance=build.instance, repo=build.repo,
                               installation_id=build.installation_id, issue_number=build.pr,
                               key=build.report_key, body=report.build_comment(header, rows, now),
                               now=now)
    mode = config.reporting.check_runs
    if mode == "off":
        return
    base_url = config.web.base_url
    for target in report.check_runs_changed(rows, {j.id for j in changed}):
        if mode == "live" or target.state.terminal:
            writes.enqueue_check_run(
                session, instance=build.instance, repo=build.repo,
                installation_id=build.installation_id, key=report.check_run_key(target),
                fields=report.check_run_fields(config.instance.name, target,
                                               config.reporting.log_tail_lines, base_url, now),
                now=now)
