"""The control center's operations, shared by the REST API, the dashboard and the CLI.

Reads take a :class:`Store` and return pydantic models (the API's response schemas, the
CLI's ``--json``); actions record their changes together with the PR report in one
transaction, as the command handlers do, so a redo or a cancel from here reads on the PR
exactly like one from a comment. Who may act is decided by the caller (web/auth.py).
"""

from __future__ import annotations

import asyncio
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from layerbot import clock, fleet
from layerbot.build.results import job_log_tail
from layerbot.config import Config
from layerbot.core.deploy_plan import plan_deploy
from layerbot.core.jobs import JobState
from layerbot.joblist import MAX_PAGE, JobSummary
from layerbot.joblist import JobPage as JobPage  # the job list: see joblist.py
from layerbot.joblist import list_jobs as list_jobs
from layerbot.jobs.planner import BuildRequest
from layerbot.operations import builds
from layerbot.operations.cancelling import cancel_jobs
from layerbot.operations.pulls import GitHubReader, PullHead, PullUnavailable, fetch_pull
from layerbot.store import jobs as jobstore
from layerbot.store.db import Store
from layerbot.store.models import Artifact, Build, Deployment, Instance, Job, JobTransition

#: States that count as a failure on the overview.
FAILED_STATES = (JobState.FAILED.value, JobState.TIMED_OUT.value, JobState.LOST.value)
#: How many recent successful builds of a target its estimate is taken from.
ESTIMATE_SAMPLES = 20


class ControlError(Exception):
    """An action cannot be done; ``status`` is the HTTP status the API answers with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# --------------------------------------------------------------------------------------------
# What the reads return
# --------------------------------------------------------------------------------------------


class Model(BaseModel):
    model_config = ConfigDict(from_attributes=True)


_SUMMARY_COLUMNS = [getattr(Job, name) for name in JobSummary.model_fields]


class TransitionOut(Model):
    from_state: str | None
    to_state: str
    at: datetime
    reason: str | None


class ArtifactOut(Model):
    id: int
    name: str
    size: int
    sha256: str


class DeploymentOut(Model):
    id: int
    artifact_id: int
    artifact: str
    state: str
    key: str | None
    url: str | None
    error: str | None
    requested_by: str
    forced: bool
    created_at: datetime
    updated_at: datetime


class JobDetail(Model):
    job: JobSummary
    command: str
    requested_by: str
    base_ref: str
    base_sha: str | None
    node: str | None
    max_rss_bytes: int | None
    facts: dict[str, Any]
    summary: str | None
    result: dict[str, Any] | None
    history: list[TransitionOut]
    artifacts: list[ArtifactOut]
    deployments: list[DeploymentOut]
    log_tail: str


class BuildOut(Model):
    id: int
    instance: str
    head_sha: str
    base_ref: str
    command: str
    requested_by: str
    created_at: datetime
    note: str | None
    jobs: list[JobSummary]


class PullSummary(Model):
    repo: str
    pr: int
    jobs: int
    states: dict[str, int]
    core_hours: float
    last_activity: datetime


class PullPage(Model):
    pulls: list[PullSummary]
    total: int
    limit: int
    offset: int


class PullDetail(Model):
    repo: str
    pr: int
    builds: list[BuildOut]
    core_hours: float


class PartitionOut(Model):
    name: str
    state: str
    nodes_idle: int
    nodes_allocated: int
    nodes_down: int
    cpus_total: int
    cpus_idle: int
    features: list[str] = []
    default: bool = False
    max_time: str | None = None


class ResourcesOut(Model):
    backend: str | None = None
    partitions: list[PartitionOut] = []
    updated_at: datetime | None = None
    error: str | None = None


class InstanceOut(Model):
    name: str
    version: str
    backend: str
    started_at: datetime
    heartbeat_at: datetime
    alive: bool
    paused: bool
    queued: int
    active: int
    resources: ResourcesOut | None


class StateCount(Model):
    state: str
    jobs: int


class Overview(Model):
    active: list[JobSummary]
    failures: list[JobSummary]
    instances: list[InstanceOut]
    counts: list[StateCount]


class CostRow(Model):
    key: str
    jobs: int
    core_hours: float


class Estimate(Model):
    target: str
    samples: int
    core_hours_median: float | None
    core_hours_p90: float | None
    duration_median_seconds: float | None
    duration_p90_seconds: float | None


class Costs(Model):
    since: datetime
    total_core_hours: float
    jobs: int
    by_week: list[CostRow]
    by_target: list[CostRow]
    by_pr: list[CostRow]
    estimates: list[Estimate]


class ActionResult(Model):
    message: str
    jobs: list[int] = Field(default_factory=list)
    build_id: int | None = None


# --------------------------------------------------------------------------------------------
# Reads
# --------------------------------------------------------------------------------------------


#: The repositories a reader may see; None: every one (the CLI on the bot's own machine).
Visible = frozenset[str] | None


def _shown(visible: Visible) -> list[Any]:
    """The condition that keeps jobs of repositories the reader may not see out of every
    list, count, chart and cost (see web/auth.py ``readable``)."""
    return [] if visible is None else [Job.repo.in_(sorted(visible))]


def _hidden(visible: Visible, repo: str) -> bool:
    return visible is not None and repo not in visible


def _summaries(session: Session, query: Any) -> list[JobSummary]:
    # Columns, not ORM objects: the JSON facts and results stay in the database.
    return [JobSummary.model_validate(row._mapping) for row in session.execute(query)]


def list_pulls(store: Store, *, repo: str | None = None, limit: int = 50,
               offset: int = 0, visible: Visible = None) -> PullPage:
    """Pull requests with jobs, most recently active first."""
    limit = max(1, min(limit, MAX_PAGE))
    offset = max(0, offset)
    query = (select(Job.repo, Job.pr, Job.state, func.count(Job.id), func.max(Job.updated_at),
                    func.sum(Job.core_hours))
             .where(Job.pr.is_not(None), *_shown(visible))
             .group_by(Job.repo, Job.pr, Job.state))
    if repo:
        query = query.where(Job.repo == repo)
    pulls: dict[tuple[str, int], PullSummary] = {}
    with store.read() as s:
        for r, number, state, count, last, hours in s.execute(query):
            assert number is not None  # filtered above
            p = pulls.get((r, number))
            if p is None:
                p = pulls[(r, number)] = PullSummary(repo=r, pr=number, jobs=0, states={},
                                                     core_hours=0.0, last_activity=last)
            p.jobs += count
            p.states[state] = count
            p.core_hours = round(p.core_hours + (hours or 0.0), 6)
            p.last_activity = max(p.last_activity, _aware(last))
    ordered = sorted(pulls.values(), key=lambda p: (p.last_activity, p.repo, p.pr),
                     reverse=True)
    return PullPage(pulls=ordered[offset:offset + limit], total=len(ordered), limit=limit,
                    offset=offset)


def _aware(value: datetime) -> datetime:
    # Aggregates (max) bypass the column type, so SQLite hands back naive UTC datetimes.
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def pull_detail(store: Store, repo: str, pr: int, visible: Visible = None) -> PullDetail:
    with store.read() as s:
        builds = s.scalars(select(Build).where(Build.repo == repo, Build.pr == pr)
                           .order_by(Build.id.desc())).all()
        if not builds or _hidden(visible, repo):  # the same answer: existence is not told
            raise ControlError(404, f"no builds of {repo}#{pr} are recorded")
        jobs = _summaries(s, select(*_SUMMARY_COLUMNS)
                          .where(Job.build_id.in_([b.id for b in builds])).order_by(Job.id))
    by_build: dict[int, list[JobSummary]] = defaultdict(list)
    for j in jobs:
        by_build[j.build_id].append(j)
    out = [BuildOut(id=b.id, instance=b.instance, head_sha=b.head_sha, base_ref=b.base_ref,
                    command=b.command, requested_by=b.requested_by, created_at=b.created_at,
                    note=b.note, jobs=by_build[b.id]) for b in builds]
    hours = round(sum(j.core_hours or 0.0 for j in jobs), 6)
    return PullDetail(repo=repo, pr=pr, builds=out, core_hours=hours)


def job_detail(store: Store, job_id: int, log_lines: int = 100,
               visible: Visible = None) -> JobDetail:
    with store.read() as s:
        job = s.get(Job, job_id)
        if job is None or _hidden(visible, job.repo):
            raise ControlError(404, f"there is no job {job_id}")
        build = s.get(Build, job.build_id)
        history = s.scalars(select(JobTransition).where(JobTransition.job_id == job_id)
                            .order_by(JobTransition.id)).all()
        artifacts = s.scalars(select(Artifact).where(Artifact.job_id == job_id)
                              .order_by(Artifact.id)).all()
        deployments = s.execute(
            select(Deployment, Artifact.name).join(Artifact, Deployment.artifact_id == Artifact.id)
            .where(Deployment.job_id == job_id).order_by(Deployment.id)).all()
        summary = JobSummary.model_validate(job)
    result = job.result or None
    return JobDetail(
        job=summary, command=build.command if build else "",
        requested_by=build.requested_by if build else "", base_ref=job.base_ref,
        base_sha=job.base_sha, node=job.node, max_rss_bytes=job.max_rss_bytes,
        facts=job.facts or {}, summary=(result or {}).get("summary"), result=result,
        history=[TransitionOut.model_validate(t) for t in history],
        artifacts=[ArtifactOut.model_validate(a) for a in artifacts],
        deployments=[DeploymentOut(artifact=name, **{
            k: getattr(d, k) for k in DeploymentOut.model_fields if k != "artifact"})
            for d, name in deployments],
        log_tail=read_log(job.job_dir, (result or {}).get("log_tail"), log_lines),
    )


def job_log(store: Store, job_id: int, lines: int = 100,
            visible: Visible = None) -> tuple[str, str]:
    """(the job's state, the last ``lines`` lines of its log)."""
    with store.read() as s:
        row = s.execute(select(Job.state, Job.job_dir, Job.result, Job.repo)
                        .where(Job.id == job_id)).first()
    if row is None or _hidden(visible, row.repo):
        raise ControlError(404, f"there is no job {job_id}")
    return row.state, read_log(row.job_dir, (row.result or {}).get("log_tail"), lines)


def read_log(job_dir: str | None, fallback: str | None, lines: int) -> str:
    """The job's own log file while it exists; the tail kept in its result after archiving."""
    lines = max(1, min(lines, 5000))
    # Read as the reconciler reads it: no link followed, regular files only, time-limited.
    text = job_log_tail(Path(job_dir), lines) if job_dir else ""
    return text or (fallback or "")


def instances(store: Store, now: datetime) -> list[InstanceOut]:
    with store.read() as s:
        rows = s.scalars(select(Instance).order_by(Instance.name)).all()
        counts: dict[tuple[str, str], int] = {
            (inst, state): n for inst, state, n in s.execute(
                select(Job.instance, Job.state, func.count(Job.id))
                .where(Job.state.in_(jobstore.ACTIVE)).group_by(Job.instance, Job.state))}
    out = []
    for r in rows:
        queued = counts.get((r.name, JobState.QUEUED.value), 0)
        active = sum(n for (inst, _), n in counts.items() if inst == r.name)
        out.append(InstanceOut(
            name=r.name, version=r.version, backend=r.backend, started_at=r.started_at,
            heartbeat_at=r.heartbeat_at, alive=fleet.is_alive(r.heartbeat_at, now),
            paused=r.paused, queued=queued, active=active,
            resources=ResourcesOut.model_validate(r.resources) if r.resources else None))
    return out


def overview(store: Store, now: datetime, limit: int = 100,
             visible: Visible = None) -> Overview:
    """What runs and waits, what failed in the last 24 hours, and whether the bots live."""
    since = now - timedelta(hours=24)
    shown = _shown(visible)
    with store.read() as s:
        active = _summaries(s, select(*_SUMMARY_COLUMNS)
                            .where(Job.state.in_(jobstore.ACTIVE), *shown)
                            .order_by(Job.id.desc()).limit(limit))
        failures = _summaries(s, select(*_SUMMARY_COLUMNS)
                              .where(Job.ended_at >= since, Job.state.in_(FAILED_STATES),
                                     *shown)
                              .order_by(Job.ended_at.desc()).limit(limit))
        counts = [StateCount(state=state, jobs=n) for state, n in s.execute(
            select(Job.state, func.count(Job.id)).where(*shown).group_by(Job.state)
            .order_by(Job.state))]
    return Overview(active=active, failures=failures, instances=instances(store, now),
                    counts=counts)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), interpolated between the closest ranks."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low, high = math.floor(position), math.ceil(position)
    if low == high:
        return ordered[low]
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def iso_week(moment: datetime) -> str:
    year, week, _ = moment.isocalendar()
    return f"{year}-W{week:02d}"


def costs(store: Store, now: datetime, weeks: int = 12, top: int = 20,
          visible: Visible = None) -> Costs:
    """Core-hours of jobs that ended in the last ``weeks`` weeks, and per-target estimates."""
    weeks = max(1, min(weeks, 520))
    since = now - timedelta(weeks=weeks)
    by_week: dict[str, list[float]] = defaultdict(list)
    by_target: dict[str, list[float]] = defaultdict(list)
    by_pr: dict[str, list[float]] = defaultdict(list)
    with store.read() as s:
        rows = s.execute(select(Job.repo, Job.pr, Job.target, Job.ended_at, Job.core_hours)
                         .where(Job.ended_at >= since, Job.core_hours.is_not(None),
                                *_shown(visible))).all()
        # The latest successful builds of each target, ranked in the database: a window
        # function reads ESTIMATE_SAMPLES rows per target instead of every success.
        rank = func.row_number().over(partition_by=Job.target,
                                      order_by=Job.ended_at.desc()).label("rank")
        recent = (select(Job.target, Job.core_hours, Job.elapsed_seconds, Job.started_at,
                         Job.ended_at, rank)
                  .where(Job.state == JobState.SUCCEEDED.value, Job.ended_at.is_not(None),
                         *_shown(visible))
                  .subquery())
        samples = s.execute(
            select(recent.c.target, recent.c.core_hours, recent.c.elapsed_seconds,
                   recent.c.started_at, recent.c.ended_at)
            .where(recent.c.rank <= ESTIMATE_SAMPLES)
            .order_by(recent.c.target, recent.c.ended_at.desc())).all()
    for repo, pr, target, ended, hours in rows:
        assert ended is not None and hours is not None  # filtered in the query
        by_week[iso_week(_aware(ended))].append(hours)
        by_target[target].append(hours)
        by_pr[f"{repo}#{pr}" if pr is not None else f"{repo} (no PR)"].append(hours)
    total = round(sum(h or 0.0 for _, _, _, _, h in rows), 6)
    return Costs(
        since=since, total_core_hours=total, jobs=len(rows),
        by_week=_cost_rows(by_week, key=lambda r: r.key),
        by_target=_cost_rows(by_target, key=lambda r: -r.core_hours),
        by_pr=_cost_rows(by_pr, key=lambda r: -r.core_hours)[:top],
        estimates=_estimates(samples))


def _cost_rows(groups: dict[str, list[float]], key: Callable[[CostRow], Any]) -> list[CostRow]:
    rows = [CostRow(key=k, jobs=len(v), core_hours=round(sum(v), 6)) for k, v in groups.items()]
    return sorted(rows, key=key)


def _estimates(samples: Iterable[Any]) -> list[Estimate]:
    """Per target, from its latest successful jobs (newest first in ``samples``)."""
    hours: dict[str, list[float]] = defaultdict(list)
    durations: dict[str, list[float]] = defaultdict(list)
    seen: dict[str, int] = defaultdict(int)
    for target, core_hours, elapsed, started, ended in samples:
        if seen[target] >= ESTIMATE_SAMPLES:
            continue
        seen[target] += 1
        if core_hours is not None:
            hours[target].append(core_hours)
        if elapsed is not None:
            durations[target].append(elapsed)
        elif started is not None and ended is not None:
            durations[target].append((_aware(ended) - _aware(started)).total_seconds())
    out = []
    for target in sorted(seen):
        h, d = hours[target], durations[target]
        out.append(Estimate(
            target=target, samples=seen[target],
            core_hours_median=round(percentile(h, 50), 6) if h else None,
            core_hours_p90=round(percentile(h, 90), 6) if h else None,
            duration_median_seconds=round(percentile(d, 50), 3) if d else None,
            duration_p90_seconds=round(percentile(d, 90), 3) if d else None))
    return out


# --------------------------------------------------------------------------------------------
# Actions
# --------------------------------------------------------------------------------------------


def job_scope(store: Store, job_id: int) -> tuple[str, int | None]:
    """(repository, installation id) of a job: what an access decision about it needs."""
    with store.read() as s:
        row = s.execute(select(Job.repo, Build.installation_id)
                        .join(Build, Build.id == Job.build_id).where(Job.id == job_id)).first()
    if row is None:
        raise ControlError(404, f"there is no job {job_id}")
    return row.repo, row.installation_id


def instance_scopes(store: Store, config: Config) -> list[tuple[str, int | None]]:
    """The configured repositories whose roles decide instance-wide actions (pause,
    resume, drain), each with its installation: ``web.repository``, else the exact names
    of ``github.repositories``. Never the repository built last: whoever gets a build
    recorded in a repository of their own would otherwise decide for the whole instance.
    """
    from layerbot.core.repos import exact_names
    from layerbot.store.models import Repository

    names = ([config.web.repository] if config.web.repository
             else exact_names(config.github.repositories))
    scopes: list[tuple[str, int | None]] = []
    with store.read() as s:
        for name in names:
            installation = s.scalar(select(Repository.installation_id)
                                    .where(func.lower(Repository.name) == name.lower()))
            if installation is None:
                installation = s.scalar(
                    select(Build.installation_id).where(
                        func.lower(Build.repo) == name.lower(),
                        Build.installation_id.is_not(None)).order_by(Build.id.desc()).limit(1))
            scopes.append((name, installation))
    return scopes


def _own_job(session: Session, config: Config, job_id: int) -> Job:
    job = session.get(Job, job_id)
    if job is None:
        raise ControlError(404, f"there is no job {job_id}")
    if job.instance != config.instance.name:
        # Its backend and its job directories are that instance's: only it can act on them.
        raise ControlError(409, f"job {job_id} belongs to instance {job.instance}; "
                                f"act on it there")
    return job


def cancel(store: Store, config: Config, job_id: int, by: str, now: datetime) -> ActionResult:
    with store.transaction() as s:
        job = _own_job(s, config, job_id)
        if JobState(job.state).terminal:
            raise ControlError(409, f"job {job_id} has already ended ({job.state})")
        if job.cancel_requested:
            return ActionResult(message=f"job {job_id} is already being cancelled",
                                jobs=[job_id])
        cancel_jobs(s, config, [job_id], f"cancelled by @{by}", now)
        state = job.state
    done = "cancelled" if state == JobState.CANCELLED.value else "will be cancelled"
    return ActionResult(message=f"job {job_id} {done}", jobs=[job_id])


def redo(store: Store, config: Config, job_id: int, by: str, now: datetime,
         head: PullHead | None = None) -> ActionResult:
    """Build the job's target again: at its own commit, or at ``head`` (the PR's head now)."""
    with store.transaction() as s:
        job = _own_job(s, config, job_id)
        build = s.get(Build, job.build_id)
        if build is None:
            raise ControlError(404, f"the build of job {job_id} is gone")
        if JobState(job.state).active:
            raise ControlError(409, f"job {job_id} is still {job.state}; cancel it first")
        targets, redo_of = builds.redo_targets(config, [job])
        if not targets:
            raise ControlError(409, f"job {job_id} built node type {job.node_type} and "
                                    f"repository target {job.repo_target}, which this "
                                    "instance no longer has")
        exported = (job.facts or {}).get("exportvariables") or {}
        where = head.sha if head is not None else job.head_sha
        request = BuildRequest(
            repo=build.repo, pr=build.pr, installation_id=build.installation_id,
            head_sha=where, base_ref=head.base_ref if head else build.base_ref,
            clone_url=head.clone_url if head else build.clone_url,
            command=f"redo of job {job_id} at {where[:12]} (control center)",
            requested_by=by, exportvariables=tuple(sorted(exported.items())))
        new_build, jobs = builds.record_and_report(s, config, request, targets, now, redo_of)
        new_ids = [j.id for j in jobs]
    return ActionResult(message=f"job {job_id} redone as job {new_ids[0]} at {where[:12]}",
                        jobs=new_ids, build_id=new_build.id)


def pull_of_job(store: Store, job_id: int) -> tuple[str, int, int]:
    """(repository, PR number, installation id) of a job built for a PR."""
    with store.read() as s:
        row = s.execute(select(Job.repo, Job.pr, Build.installation_id)
                        .join(Build, Build.id == Job.build_id).where(Job.id == job_id)).first()
    if row is None:
        raise ControlError(404, f"there is no job {job_id}")
    if row.pr is None or row.installation_id is None:
        raise ControlError(409, f"job {job_id} was not built for a pull request; "
                                "redo it at its own commit")
    return row.repo, row.pr, row.installation_id


def deploy(store: Store, config: Config, job_id: int, by: str, now: datetime,
           head_sha: str, force: bool = False) -> ActionResult:
    """Queue the job's artifacts for the uploader, as `bot: deploy` would.

    The same plan decides (``core.deploy_plan.plan_deploy``): only jobs built from the
    PR's head now (``head_sha``), and the deploy policy picks among them; ``force`` ships
    this job even if the policy would not (as ``bot: deploy force job:ID``).
    """
    # Imported here: it loads the deploy stack (an S3 client), which the CLI's read-only
    # commands should not pay for at start (tests/test_cli_start.py).
    from layerbot.operations import deployments

    with store.transaction() as s:
        job = _own_job(s, config, job_id)
        if job.pr is None:
            raise ControlError(409, f"job {job_id} was not built for a pull request")
        jobs, artifacts, done = deployments.plan_views(s, job.repo, job.pr, job.instance)
        plan = plan_deploy(jobs, artifacts, done, head_sha=head_sha,
                           policy=config.deploy.policy, force_job=job_id if force else None)
        if plan.refusal is not None:
            raise ControlError(409, f"nothing deployed: {plan.refusal}")
        picks = [p for p in plan.queued if p.job.id == job_id]
        if not picks:
            already = [state for pick, state in plan.already if pick.job.id == job_id]
            if already:
                return ActionResult(message=f"the artifacts of job {job_id} are deployed "
                                            f"already ({', '.join(sorted(set(already)))})",
                                    jobs=[job_id])
            why = next((reason for j, reason in plan.left_out if j.id == job_id),
                       "the deploy policy does not pick it")
            raise ControlError(409, f"job {job_id} is not deployed: {why.replace('`', '')}")
        deployments.queue_deployments(s, config, job.repo, job.pr, picks, by=by,
                                      forced=force, now=now)
    return ActionResult(message=f"{len(picks)} artifact(s) of job {job_id} queued for deploy",
                        jobs=[job_id])


def set_paused(store: Store, config: Config, name: str, paused: bool, now: datetime
               ) -> ActionResult:
    own_instance(store, config, name)
    with store.transaction() as s:
        inst = s.get(Instance, name)
        if inst is None:
            # Paused before its first heartbeat: the row is created here.
            inst = Instance(name=name, version="", backend=config.backend.kind,
                            started_at=now, heartbeat_at=now, paused=paused)
            s.add(inst)
        changed = inst.paused != paused
        inst.paused = paused
    word = "paused" if paused else "resumed"
    if not changed:
        return ActionResult(message=f"instance {name} was already {word}")
    detail = (": it records builds but submits nothing new" if paused
              else ": queued jobs are submitted again")
    return ActionResult(message=f"instance {name} {word}{detail}")


def drain(store: Store, config: Config, name: str, now: datetime) -> ActionResult:
    """Stop taking new jobs and let the ones in the backend finish: the instance is paused
    (new builds are recorded and wait, as under pause) and the answer says what still runs,
    so an operator knows when it is empty (``queued`` and ``active`` in /api/instances)."""
    set_paused(store, config, name, True, now)
    counts = queue_counts(store, name)
    queued = counts.get(JobState.QUEUED.value, 0)
    running = sum(counts.values()) - queued
    if not running:
        return ActionResult(message=f"instance {name} is drained: nothing runs; "
                                    f"{queued} queued job(s) wait for resume")
    return ActionResult(message=f"instance {name} drains: it submits nothing new, and "
                                f"{running} job(s) in the backend finish; {queued} queued "
                                "job(s) wait for resume")


def own_instance(store: Store, config: Config, name: str) -> None:
    """Instance-wide actions are scoped to this instance: another instance of the fleet
    (sharing the store) is paused, resumed or drained by itself, under its own
    configuration's repositories and access policy."""
    if name == config.instance.name:
        return
    with store.read() as s:
        known = s.get(Instance, name) is not None
    if not known:
        raise ControlError(404, f"there is no instance {name}")
    raise ControlError(409, f"instance {name} is not this one ({config.instance.name}); "
                            f"act on it there")


def queue_counts(store: Store, instance: str) -> dict[str, int]:
    with store.read() as s:
        return jobstore.queue_counts(s, instance)


async def fetch_head(github: GitHubReader | None, config: Config, repo: str, pr: int,
                     installation_id: int) -> PullHead:
    """The PR's head now (through the GitHub App), for a redo at the current head."""
    from layerbot.github.client import GitHubError

    try:
        return await fetch_pull(github, config, repo, pr, installation_id)
    except PullUnavailable as exc:
        raise ControlError(409, f"{exc}; redo at the same commit") from None
    except GitHubError as exc:
        raise ControlError(502, f"GitHub did not answer for {repo}#{pr}: {exc}") from None


class Controller:
    """The actions for async callers (API, dashboard, CLI): store work in a thread, then
    wake the loops that act on it (the submitter for new jobs, the sender for reports)."""

    def __init__(self, config: Config, store: Store, github: GitHubReader | None = None,
                 on_written: Callable[[], None] = lambda: None) -> None:
        self.config = config
        self.store = store
        self.github = github
        self.on_written = on_written

    async def redo(self, job_id: int, by: str, at: str = "same") -> ActionResult:
        head = None
        if at == "head":
            repo, pr, installation = await asyncio.to_thread(pull_of_job, self.store, job_id)
            head = await fetch_head(self.github, self.config, repo, pr, installation)
            if head.state != "open":
                raise ControlError(409, f"{repo}#{pr} is {head.state}; nothing was built")
        elif at != "same":
            raise ControlError(422, f"redo at {at!r}: give 'same' or 'head'")
        return await self._act(redo, job_id, by, head=head)

    async def cancel(self, job_id: int, by: str) -> ActionResult:
        return await self._act(cancel, job_id, by)

    async def deploy(self, job_id: int, by: str, force: bool = False) -> ActionResult:
        # Only what was built from the PR's head now is deployed: ask GitHub for it.
        repo, pr, installation = await asyncio.to_thread(pull_of_job, self.store, job_id)
        head = await fetch_head(self.github, self.config, repo, pr, installation)
        return await self._act(deploy, job_id, by, head_sha=head.sha, force=force)

    async def set_paused(self, name: str, paused: bool) -> ActionResult:
        result = await asyncio.to_thread(set_paused, self.store, self.config, name, paused,
                                         clock.now())
        self.on_written()
        return result

    async def drain(self, name: str) -> ActionResult:
        result = await asyncio.to_thread(drain, self.store, self.config, name, clock.now())
        self.on_written()
        return result

    async def _act(self, fn: Callable[..., ActionResult], job_id: int, by: str,
                   **kwargs: Any) -> ActionResult:
        result = await asyncio.to_thread(fn, self.store, self.config, job_id, by, clock.now(),
                                         **kwargs)
        self.on_written()
        return result
