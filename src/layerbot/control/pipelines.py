"""The control center's view of a pipeline: a target's plan job and its steps.

Read from the same rows the PR reply is rendered from (``store.jobs.rows_for_jobs``,
``core.pipeline_report``), so the page, the API and the PR agree on every step's status,
the progress and the critical path.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select

from layerbot.control.models import ControlError, PipelineOut, StepOut
from layerbot.control.queries import Visible
from layerbot.core import pipeline_report
from layerbot.core.pipeline_report import PipelineRow
from layerbot.store import jobs as jobstore
from layerbot.store.db import Store
from layerbot.store.models import Job


def pipeline_of(store: Store, job_id: int, now: datetime, visible: Visible = None
                ) -> PipelineOut | None:
    """The pipeline job ``job_id`` belongs to (as its plan job or one of its steps), or
    None: a job of no pipeline, or a plan job whose plan has no steps (yet)."""
    with store.read() as s:
        job = s.get(Job, job_id)
        if job is None or (visible is not None and job.repo not in visible):
            raise ControlError(404, f"there is no job {job_id}")
        plan_id = job.pipeline_id if job.step_id is not None else job.id
        if plan_id is None:
            return None
        plan = s.get(Job, plan_id) if plan_id != job.id else job
        steps = list(s.scalars(select(Job).where(Job.pipeline_id == plan_id,
                                                 Job.step_id.is_not(None)).order_by(Job.id)))
        if plan is None or not steps:
            return None
        rows = jobstore.rows_for_jobs(s, [plan, *steps])
    (row,) = pipeline_report.group(rows)
    return pipeline_out(row, now) if isinstance(row, PipelineRow) else None


def pipeline_out(row: PipelineRow, now: datetime) -> PipelineOut:
    attempts: dict[str, int] = {}
    for a in row.attempts:
        assert a.step is not None
        attempts[a.step.step_id] = attempts.get(a.step.step_id, 0) + 1
    progress = row.progress(now)
    steps = []
    for r in row.steps():
        assert r.step is not None
        steps.append(StepOut(
            step_id=r.step.step_id, name=r.step.name, job_id=r.id, state=r.state.value,
            status=pipeline_report.step_status(r).value, needs=list(r.step.needs),
            depth=r.step.depth, seconds=pipeline_report.step_seconds(r, now), agent=r.agent,
            cluster=r.cluster, core_hours=r.core_hours, reused_from=r.step.reused_from,
            attempts=attempts[r.step.step_id], reason=r.reason))
    return PipelineOut(
        plan_job_id=row.id, target=row.target, repo_target=row.repo_target,
        head_sha=row.head_sha, state=row.state.value, progress=progress.summary(),
        critical_path=progress.critical_path, critical_seconds=progress.critical_seconds,
        core_hours=row.core_hours, steps=steps)
