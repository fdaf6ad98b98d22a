"""Cancelling jobs: by `bot: cancel`, a push or a closed PR (handlers), or the control center."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from layerbot.config import Config
from layerbot.core.jobs import JobState
from layerbot.events.reporting import report_build
from layerbot.store import jobs as jobstore
from layerbot.store.models import Build, Job


def cancel_jobs(session: Session, config: Config, job_ids: Sequence[int], reason: str,
                now: datetime) -> list[Job]:
    """Queued jobs end at once; jobs in the backend are cancelled there by the reconciler.

    Returns the jobs touched; their builds' reports are re-derived in the same transaction.
    """
    touched: dict[int, list[Job]] = {}
    for job in session.scalars(select(Job).where(Job.id.in_(list(job_ids)))):
        state = JobState(job.state)
        if state is JobState.QUEUED:
            jobstore.transition(session, job, JobState.CANCELLED, now, reason=reason)
        elif state.active:
            job.cancel_requested = True
            job.reason = reason
        else:
            continue
        touched.setdefault(job.build_id, []).append(job)
    for build_id, jobs in touched.items():
        build = session.get(Build, build_id)
        if build is not None:
            report_build(session, config, build, now, changed=jobs)
    return [j for jobs in touched.values() for j in jobs]
