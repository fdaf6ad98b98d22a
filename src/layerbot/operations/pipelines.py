"""Pipelines on the control plane: a plan becomes step jobs, and the end of a step moves
the steps that need it (docs/pipelines.md).

Every step is a job of its own (queued, leased, reported, costed as any job), pinned to
the agent that ran its target's plan, where the artifacts of the steps it needs are (or, for
a cached step another agent built, from where they are fetched: the staging area). What
happens here happens in the transaction that recorded the end of a plan or a step, so a
step is never created twice and a failure never leaves a dependent waiting for ever.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import case, select, text
from sqlalchemy.orm import Session

from layerbot.agent.step_cache import checked_record
from layerbot.config import Config
from layerbot.core import pipeline
from layerbot.core.jobs import JobState
from layerbot.events.reporting import report_build
from layerbot.operations.cancelling import cancel_jobs
from layerbot.store import jobs as jobstore
from layerbot.store.models import Build, Job

ROLE_PLAN = "plan"
ROLE_STEP = "step"


def role(job: Job) -> str:
    return str((job.facts or {}).get("role") or "build")


def checked_plan(config: Config, result: Mapping[str, Any] | None) -> pipeline.Plan:
    """The plan of a plan job's result, validated again by this control plane's limits
    (the agent's check is its own: an agent is not trusted to have made it)."""
    raw = (result or {}).get("plan")
    if not isinstance(raw, dict):
        raise pipeline.PlanError(["the plan job reported no plan"])
    return pipeline.parse_plan(json.dumps(raw).encode(), config.plan_limits)


def after_end(session: Session, config: Config, job: Job, now: datetime) -> list[Job]:
    """What the end of ``job`` starts or stops in its pipeline; returns the jobs changed."""
    state = JobState(job.state)
    if not state.terminal:
        return []
    if role(job) == ROLE_PLAN and state is JobState.SUCCEEDED and not job.cancel_requested:
        return create_steps(session, config, job, checked_plan(config, job.result), now)
    if role(job) != ROLE_STEP and not _has_waiters(session, job):
        return []
    return _settle_waiters(session, config, job, now) + (
        [] if state is JobState.SUCCEEDED else _cancel_dependents(session, config, job, now))


# --- a plan becomes steps -------------------------------------------------------------------

def create_steps(session: Session, config: Config, plan_job: Job, plan: pipeline.Plan,
                 now: datetime, *, done: Mapping[str, int] | None = None,
                 only: Iterable[str] | None = None,
                 not_staged: Iterable[int] = ()) -> list[Job]:
    """A job per step of ``plan`` (``only`` those, if given; the others are ``done``: step
    id -> the job whose artifact stands for it). Steps with a cache key whose artifact
    exists, or is being built, for the same target on the same agent, or exists staged by
    another agent, are reused (the staged artifacts of the jobs in ``not_staged`` are not:
    this agent could not fetch them)."""
    build = session.get(Build, plan_job.build_id)
    assert build is not None, "a job always has its build"
    artifact_of: dict[str, int] = dict(done or {})
    wanted = set(only) if only is not None else None
    depth: dict[str, int] = {}
    created: list[Job] = []
    agent = plan_job.pinned_agent or plan_job.agent
    avoid = frozenset(not_staged)
    for step_id in pipeline.topological_order(plan.needs()):
        step = plan.step(step_id)
        depth[step_id] = 1 + max((depth.get(n, 0) for n in step.needs), default=0)
        if wanted is not None and step_id not in wanted:
            continue
        source = (_cached(session, plan_job, step.cache_key, avoid) if step.cache_key
                  else None)
        job = _add_step(session, build, plan_job, step, now)
        job.needs = {n: artifact_of[n] for n in step.needs}
        artifact_of[step_id] = source.id if source is not None else job.id
        if source is not None:
            job.reused_from = source.id
        shared = [i for n, i in job.needs.items() if _is_shared(session, i, plan_job)]
        # Needs another agent built: fetched from the staging area by this one.
        staged = {str(i): record for i in shared
                  if (record := _staged_elsewhere(session, i, agent)) is not None}
        job.facts = {**plan_job.facts, "job_id": job.id, "role": ROLE_STEP, "step": {
            "id": step.id, "name": step.title, "command": step.command, "needs": job.needs,
            "shared": shared, "staged": staged,
            "resources": step.resources.model_dump(mode="json"),
            "cache_key": step.cache_key, "pipeline": job.pipeline_id,
            "depth": depth[step_id]}}
        if source is not None and JobState(source.state) is JobState.SUCCEEDED:
            jobstore.transition(session, job, JobState.SUCCEEDED, now,
                                reason=reused_reason(source))
        created.append(job)
    return created


def _add_step(session: Session, build: Build, plan_job: Job, step: pipeline.PlanStep,
              now: datetime) -> Job:
    job = jobstore.add_job(session, build, target=plan_job.target,
                           node_type=plan_job.node_type, repo_target=plan_job.repo_target,
                           facts={}, backend=plan_job.backend, now=now)
    job.pipeline_id = plan_job.pipeline_id or plan_job.id
    job.step_id = step.id
    job.cache_key = step.cache_key
    job.pinned_agent = plan_job.pinned_agent or plan_job.agent
    job.agent_filter = plan_job.agent_filter
    job.priority = plan_job.priority
    return job


def reused_reason(source: Job) -> str:
    where = f"PR #{source.pr}" if source.pr else source.head_sha[:10]
    return f"reused the artifact of job {source.id} ({where})"


#: How many earlier builds of one cache key a lookup considers (the newest).
CACHE_CANDIDATES = 20


def staged_record(job: Job) -> dict[str, Any] | None:
    """Where a step's artifact was staged for other agents (its result's ``staged``,
    checked), or None."""
    return checked_record((job.result or {}).get("staged"))


def _staged_elsewhere(session: Session, job_id: int, agent: str | None
                      ) -> dict[str, Any] | None:
    other = session.get(Job, job_id)
    if other is None or other.pinned_agent == agent:
        return None
    return staged_record(other)


def _cached(session: Session, plan_job: Job, key: str, avoid: frozenset[int] = frozenset()
            ) -> Job | None:
    """A step job with this cache key that built the same target: one that succeeded on
    the same agent, else one that succeeded on another agent and staged its artifact (not
    one of ``avoid``), else one under way on the same agent (waited for).

    Two plans applied at once must not both miss: the lookup and the new step are
    serialized per key (PostgreSQL: an advisory lock until the transaction ends; SQLite
    has one writer at a time already)."""
    agent = plan_job.pinned_agent or plan_job.agent
    if session.get_bind().dialect.name == "postgresql":
        digest = hashlib.sha256(f"step-cache:{plan_job.repo}:{key}".encode()).digest()
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"),
                        {"key": int.from_bytes(digest[:8], "big", signed=True)})
    usable = [JobState.SUCCEEDED.value, *jobstore.ACTIVE]
    candidates = list(session.scalars(
        select(Job).where(Job.cache_key == key, Job.step_id.is_not(None),
                          Job.reused_from.is_(None), Job.repo == plan_job.repo,
                          Job.target == plan_job.target, Job.node_type == plan_job.node_type,
                          Job.repo_target == plan_job.repo_target,
                          Job.state.in_(usable), Job.cancel_requested.is_(False))
        .order_by(case((Job.state == JobState.SUCCEEDED.value, 0), else_=1),
                  Job.id.desc()).limit(CACHE_CANDIDATES)))
    done = [j for j in candidates if JobState(j.state) is JobState.SUCCEEDED]
    return (next((j for j in done if j.pinned_agent == agent), None)
            or next((j for j in done if j.pinned_agent != agent and j.id not in avoid
                     and staged_record(j) is not None), None)
            or next((j for j in candidates if j.pinned_agent == agent
                     and JobState(j.state) is not JobState.SUCCEEDED), None))


def _is_shared(session: Session, job_id: int, plan_job: Job) -> bool:
    """A job of another pipeline (reused through the cache)."""
    other = session.get(Job, job_id)
    return other is not None and other.pipeline_id != (plan_job.pipeline_id or plan_job.id)


# --- the end of a step ----------------------------------------------------------------------

def _has_waiters(session: Session, job: Job) -> bool:
    return session.scalar(select(Job.id).where(Job.reused_from == job.id).limit(1)) is not None


def _settle_waiters(session: Session, config: Config, source: Job, now: datetime
                    ) -> list[Job]:
    """Steps that reuse ``source``'s artifact end as it ended."""
    waiters = list(session.scalars(select(Job).where(
        Job.reused_from == source.id, Job.state == JobState.QUEUED.value)))
    ok = JobState(source.state) is JobState.SUCCEEDED
    changed = []
    for w in waiters:
        if ok:
            jobstore.transition(session, w, JobState.SUCCEEDED, now, reason=reused_reason(source))
        else:
            jobstore.transition(session, w, JobState.FAILED, now,
                                reason=f"job {source.id}, whose artifact it was to reuse, "
                                f"ended {source.state}")
        changed.append(w)
        changed += after_end(session, config, w, now)
    return changed


def _cancel_dependents(session: Session, config: Config, failed: Job, now: datetime
                       ) -> list[Job]:
    """Every step of the pipeline that needs ``failed``, directly or not, is cancelled,
    each with the reason."""
    if failed.pipeline_id is None:
        return []
    steps = list(session.scalars(select(Job).where(Job.pipeline_id == failed.pipeline_id,
                                                   Job.step_id.is_not(None))))
    by_job = {j.id: j for j in steps}
    needs = {j.id: [int(i) for i in (j.needs or {}).values()] for j in steps}
    # A step reused from another pipeline's job is named by that job in its dependents'
    # needs (its artifact is that job's).
    roots = [failed.id] + ([failed.reused_from] if failed.reused_from else [])
    doomed = [by_job[i] for i in sorted(pipeline.dependents(needs, roots))
              if i in by_job and JobState(by_job[i].state).active]
    what = failed.step_id or f"job {failed.id}"
    reason = f"not run: it needs step {what}, which {_ended(failed)}"
    return cancel_jobs(session, config, [j.id for j in doomed], reason, now) if doomed else []


def _ended(job: Job) -> str:
    return {JobState.FAILED: "failed", JobState.CANCELLED: "was cancelled",
            JobState.TIMED_OUT: "hit its time limit",
            JobState.LOST: "was lost"}.get(JobState(job.state), f"ended {job.state}")


def pipeline_steps(session: Session, pipeline_ids: Sequence[int]) -> list[Job]:
    """The step jobs of the given pipelines, in order of creation."""
    if not pipeline_ids:
        return []
    return list(session.scalars(select(Job).where(Job.pipeline_id.in_(list(pipeline_ids)))
                                .order_by(Job.id)))


# --- rebuilding what failed -----------------------------------------------------------------

#: A step whose latest attempt ended so is built again by `bot: rebuild failed`.
REDO_STATES = frozenset({JobState.FAILED, JobState.TIMED_OUT, JobState.LOST,
                         JobState.CANCELLED})


def latest_attempts(steps: Iterable[Job]) -> dict[str, Job]:
    """Each step's latest job (a step rebuilt has several), by step id."""
    latest: dict[str, Job] = {}
    for job in sorted(steps, key=lambda j: j.id):
        if job.step_id is not None:
            latest[job.step_id] = job
    return latest


def unfinished_steps(steps: Iterable[Job]) -> list[str]:
    """Ids of the steps whose latest attempt failed or was cancelled."""
    return [sid for sid, j in latest_attempts(steps).items()
            if JobState(j.state) in REDO_STATES]


_UNFETCHED = re.compile(re.escape(pipeline.UNFETCHED) + r"(\d+)")


def rebuild_failed(session: Session, config: Config, plan_job_id: int, now: datetime
                   ) -> list[Job]:
    """The failed and cancelled steps of a pipeline again, at the same commit and on the
    same agent, reusing every step that succeeded; returns the new step jobs."""
    plan_job = session.get(Job, plan_job_id)
    if plan_job is None or role(plan_job) != ROLE_PLAN:
        return []
    latest = latest_attempts(pipeline_steps(session, [plan_job_id]))
    redo = {sid for sid, j in latest.items() if JobState(j.state) in REDO_STATES}
    if not redo:
        return []
    # A step reused from another agent's staged artifact that could not be fetched here is
    # built again on this agent (not reused from the same staged artifact again).
    unfetched = {int(i) for j in latest.values() if JobState(j.state) in REDO_STATES
                 for i in _UNFETCHED.findall(j.reason or "")}
    redo |= {sid for sid, j in latest.items() if j.reused_from in unfetched}
    done = {sid: j.reused_from or j.id for sid, j in latest.items() if sid not in redo}
    plan = checked_plan(config, plan_job.result)
    created = create_steps(session, config, plan_job, plan, now, done=done, only=redo,
                           not_staged=unfetched)
    for job in created:
        job.redo_of = latest[job.step_id].id if job.step_id in latest else None
    build = session.get(Build, plan_job.build_id)
    if build is not None:  # the PR's reply and check run show the steps queued again
        report_build(session, config, build, now, changed=created)
    return created


def redo_step(session: Session, config: Config, step_job: Job, now: datetime) -> Job:
    """One step again (the control center's redo), at the same commit, on the same agent,
    reading the artifacts of the steps it needs; ValueError if one of them has not
    succeeded (`rebuild failed` redoes those too)."""
    plan_job = session.get(Job, step_job.pipeline_id) if step_job.pipeline_id else None
    if plan_job is None or step_job.step_id is None:
        raise ValueError(f"job {step_job.id} is not a step of a pipeline")
    latest = latest_attempts(pipeline_steps(session, [plan_job.id]))
    plan = checked_plan(config, plan_job.result)
    unmet = [n for n in plan.step(step_job.step_id).needs
             if n not in latest or JobState(latest[n].state) is not JobState.SUCCEEDED]
    if unmet:
        raise ValueError(f"step {step_job.step_id} needs {', '.join(unmet)}, which did not "
                         "succeed: `bot: rebuild failed` builds them and it again")
    done = {sid: j.reused_from or j.id for sid, j in latest.items()}
    (created,) = create_steps(session, config, plan_job, plan, now, done=done,
                              only=[step_job.step_id])
    created.redo_of = step_job.id
    return created
