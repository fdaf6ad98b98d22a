"""The control center's reads: job lists, PR pages, job details and logs, instances, agents,
the overview and costs. Each takes a :class:`Store` and returns the models of ``models``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from layerbot.build.results import job_log_tail
from layerbot.config import Config
from layerbot.control.models import (
    _SUMMARY_COLUMNS,
    AgentCount,
    AgentOut,
    ArtifactOut,
    BuildOut,
    ControlError,
    CostRow,
    Costs,
    DeploymentOut,
    Estimate,
    InstanceOut,
    JobDetail,
    NodeTypeOut,
    Overview,
    PullDetail,
    PullPage,
    PullSummary,
    ResourcesOut,
    StateCount,
    TransitionOut,
)
from layerbot.core.fleet import AgentState
from layerbot.core.jobs import JobState
from layerbot.operations import agents as agentops
from layerbot.operations import fleet
from layerbot.store import jobs as jobstore
from layerbot.store.db import Store
from layerbot.store.joblist import MAX_PAGE, JobSummary
from layerbot.store.models import (
    Agent,
    Artifact,
    Build,
    Deployment,
    Instance,
    Job,
    JobTransition,
)

#: States that count as a failure on the overview.
FAILED_STATES = (JobState.FAILED.value, JobState.TIMED_OUT.value, JobState.LOST.value)
#: How many recent successful builds of a target its estimate is taken from.
ESTIMATE_SAMPLES = 20
#: The cost key of jobs no agent built (jobs from before the fleet, or never leased).
NO_CLUSTER = "(no cluster)"


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
        local_dir = _local_job_dir(s, job.agent, job.job_dir)
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
        log_tail=read_log(local_dir, (result or {}).get("log_tail"), log_lines),
    )


def job_log(store: Store, job_id: int, lines: int = 100,
            visible: Visible = None) -> tuple[str, str]:
    """(the job's state, the last ``lines`` lines of its log)."""
    with store.read() as s:
        row = s.execute(select(Job.state, Job.job_dir, Job.result, Job.repo, Job.agent)
                        .where(Job.id == job_id)).first()
        local_dir = _local_job_dir(s, row.agent, row.job_dir) if row is not None else None
    if row is None or _hidden(visible, row.repo):
        raise ControlError(404, f"there is no job {job_id}")
    return row.state, read_log(local_dir, (row.result or {}).get("log_tail"), lines)


def _local_job_dir(session: Session, agent: str | None, job_dir: str | None) -> str | None:
    """The job's directory if it is on this machine: built by the agent inside `serve`.

    Another agent's directory is a path on its cluster, and what it reports is read as
    hostile: here it could name any file of the control plane's machine. Its log is the
    tail it reported."""
    if job_dir is None or agent is None:
        return None
    builtin = session.scalar(select(Agent.builtin).where(Agent.name == agent))
    return job_dir if builtin else None


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


def agents(store: Store, config: Config, now: datetime) -> list[AgentOut]:
    """The fleet's agents by name: state, version, capabilities, load, last heartbeat."""
    return [agent_out(a) for a in agentops.summaries(store, config, now)]


def agent(store: Store, config: Config, name: str, now: datetime) -> AgentOut:
    found = next((a for a in agents(store, config, now) if a.name == name), None)
    if found is None:
        raise ControlError(404, f"there is no agent {name} (GET /api/agents or "
                                "`layerbot agents list` shows them)")
    return found


def agent_out(a: agentops.AgentSummary) -> AgentOut:
    return AgentOut(
        name=a.name, cluster=a.cluster, state=a.state, builtin=a.builtin, version=a.version,
        protocol=a.protocol, priority=a.priority, paused=a.paused, draining=a.draining,
        concurrency=a.concurrency, holding=a.holding, free_slots=a.free_slots,
        node_types=[NodeTypeOut(name=k.name, cpu_target=k.cpu_target,
                                accelerator=k.accelerator, repo_targets=list(k.repo_targets))
                    for k in a.kinds],
        registered_at=a.registered_at, heartbeat_at=a.heartbeat_at)


def agent_counts(rows: Iterable[AgentOut]) -> list[AgentCount]:
    """How many agents are in each state, in the states' order (revoked ones left out)."""
    counts: dict[AgentState, int] = defaultdict(int)
    for a in rows:
        counts[a.state] += 1
    return [AgentCount(state=state, agents=counts[state]) for state in AgentState
            if counts[state] and state is not AgentState.REVOKED]


def overview(store: Store, now: datetime, limit: int = 100,
             visible: Visible = None, config: Config | None = None) -> Overview:
    """What runs and waits, what failed in the last 24 hours, and whether the bots live
    (with ``config``, also the fleet's agents by state)."""
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
    fleet_counts = agent_counts(agents(store, config, now)) if config is not None else []
    return Overview(active=active, failures=failures, instances=instances(store, now),
                    counts=counts, agents=fleet_counts)


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
    by_cluster: dict[str, list[float]] = defaultdict(list)
    with store.read() as s:
        rows = s.execute(select(Job.repo, Job.pr, Job.target, Job.ended_at, Job.core_hours,
                                Job.cluster)
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
    for repo, pr, target, ended, hours, cluster in rows:
        assert ended is not None and hours is not None  # filtered in the query
        by_week[iso_week(_aware(ended))].append(hours)
        by_target[target].append(hours)
        by_pr[f"{repo}#{pr}" if pr is not None else f"{repo} (no PR)"].append(hours)
        by_cluster[cluster or NO_CLUSTER].append(hours)
    total = round(sum(h or 0.0 for _, _, _, _, h, _ in rows), 6)
    return Costs(
        since=since, total_core_hours=total, jobs=len(rows),
        by_week=_cost_rows(by_week, key=lambda r: r.key),
        by_target=_cost_rows(by_target, key=lambda r: -r.core_hours),
        by_pr=_cost_rows(by_pr, key=lambda r: -r.core_hours)[:top],
        estimates=_estimates(samples),
        by_cluster=_cost_rows(by_cluster, key=lambda r: (-r.core_hours, r.key)))


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


