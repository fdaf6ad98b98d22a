"""Leases: the control plane's side of the agent protocol, on the store.

A queued job is leased to one agent at a time (``jobs.agent``, ``lease_id``,
``lease_until``). The claim that takes it locks the rows it looks at and skips rows another
claim holds (``FOR UPDATE SKIP LOCKED`` on PostgreSQL; SQLite has one writer at a time), so
two agents, or two replicas answering two agents, never lease one job twice.

Reports are applied here whichever way they came (HTTP from a cluster's agent, or directly
from the agent inside an embedded ``serve``): under the lease they were sent with, once
(``report_seq``), in the same transaction as the PR's report.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, object_session

from layerbot.config import Config
from layerbot.core import fleet
from layerbot.core.jobs import JobState
from layerbot.core.protocol import (
    Capabilities,
    HeartbeatResponse,
    HeldJob,
    JobSpec,
    Report,
    ReportResponse,
)
from layerbot.events.reporting import report_build
from layerbot.store import jobs as jobstore
from layerbot.store.models import Agent, Artifact, Build, Instance, Job

#: Claims look at this many candidate rows per free slot (jobs other agents should take
#: are skipped without being locked for long).
CANDIDATES_PER_SLOT = 8

#: How a backend's final word maps to a job state is the agent's; this is what a report
#: may say a job became.
REPORTABLE = frozenset(JobState) - {JobState.QUEUED, JobState.SUBMITTED}


def timing(config: Config) -> fleet.Timing:
    f = config.fleet
    return fleet.Timing(f.heartbeat_seconds, f.lease_seconds, f.grace_seconds)


def node_kinds(capabilities: Mapping[str, Any] | None) -> tuple[fleet.NodeKind, ...]:
    if not capabilities:
        return ()
    return tuple(fleet.NodeKind(n["name"], n["cpu_target"], n.get("accelerator"),
                                tuple(n.get("repo_targets") or ()), n.get("os") or "linux")
                 for n in capabilities.get("node_types", []))


def fleet_views(session: Session) -> list[fleet.AgentView]:
    """Every agent as the pure rules see it, with how many active jobs it holds (columns,
    not rows: every claim asks this, so it is read the cheap way)."""
    holding = dict(session.execute(
        select(Job.agent, func.count(Job.id))
        .where(Job.agent.is_not(None), Job.state.in_(jobstore.ACTIVE))
        .group_by(Job.agent)).all())
    rows = session.execute(select(Agent.name, Agent.cluster, Agent.priority,
                                  Agent.capabilities, Agent.heartbeat_at, Agent.paused,
                                  Agent.draining, Agent.revoked_at))
    return [_view(r.name, r.cluster, r.priority, r.capabilities, r.heartbeat_at, r.paused,
                  r.draining, r.revoked_at is not None, int(holding.get(r.name, 0)))
            for r in rows]


def _view(name: str, cluster: str, priority: int, capabilities: Mapping[str, Any] | None,
          heartbeat_at: datetime | None, paused: bool, draining: bool, revoked: bool,
          holding: int) -> fleet.AgentView:
    caps = capabilities or {}
    return fleet.AgentView(
        name=name, cluster=cluster, priority=priority,
        concurrency=int(caps.get("concurrency") or 1), node_types=node_kinds(caps),
        holding=holding, heartbeat_at=heartbeat_at, paused=paused, draining=draining,
        revoked=revoked)


# --- registration and heartbeats -----------------------------------------------------------

def register(session: Session, config: Config, agent: Agent, protocol: int, version: str,
             cluster: str, capabilities: Capabilities, now: datetime) -> list[HeldJob]:
    """Record what the agent says it is; returns what the server believes it holds.

    The cluster of an agent with a token is the operator's (`layerbot agents add
    --cluster`): ``inst:`` and the costs name it, so an agent cannot move itself into
    another cluster by saying so. Only the built-in agent names its own."""
    agent.protocol = protocol
    agent.version = version
    if agent.builtin or not agent.cluster:
        agent.cluster = cluster
    agent.capabilities = capabilities.model_dump(mode="json")
    agent.registered_at = now
    agent.heartbeat_at = now
    agent.load = {"free_slots": capabilities.concurrency, "resources": capabilities.resources}
    lease = timedelta(seconds=config.fleet.lease_seconds)
    held = []
    for job in session.scalars(select(Job).where(Job.agent == agent.name,
                                                 Job.state.in_(jobstore.ACTIVE))):
        job.lease_until = now + lease
        held.append(HeldJob(id=job.id, lease_id=job.lease_id or "", state=job.state,
                            cancel=job.cancel_requested))
    return held


def heartbeat(session: Session, config: Config, agent: Agent, holding: Mapping[int, str],
              free_slots: int, resources: Mapping[str, Any] | None, now: datetime,
              renew_all: bool = False) -> HeartbeatResponse:
    """Renew the leases of the jobs the agent still holds under their own lease; say which
    to cancel and which are no longer its own. ``renew_all``: every job leased to the agent
    (the agent inside ``serve`` holds exactly what the store says)."""
    agent.heartbeat_at = now
    load: dict[str, Any] = {"free_slots": free_slots}
    if resources is not None:
        load["resources"] = dict(resources)
    elif agent.load and "resources" in agent.load:
        load["resources"] = agent.load["resources"]
    agent.load = load
    until = now + timedelta(seconds=config.fleet.lease_seconds)
    # Columns, not jobs: a beat renews what may be thousands of leases, and loading each
    # job (its facts and all) only to set one column cost more than the rest of the beat.
    rows = session.execute(
        select(Job.id, Job.lease_id, Job.state, Job.cancel_requested)
        .where(Job.agent == agent.name, Job.state.in_(jobstore.ACTIVE))).all()
    renew = [r for r in rows if renew_all or holding.get(r.id) == r.lease_id]
    _renew(session, agent.name, [r.id for r in renew], len(renew) == len(rows), until)
    cancel = [r.id for r in renew
              if r.cancel_requested and JobState(r.state) is not JobState.QUEUED]
    mine = {r.id: r.lease_id for r in rows}
    gone = sorted(i for i, lease in holding.items() if mine.get(i) != lease)
    return HeartbeatResponse(paused=agent.paused or _instance_paused(session, config),
                             draining=agent.draining,
                             lease_seconds=config.fleet.lease_seconds,
                             cancel=sorted(cancel), gone=gone)


#: Leases renewed by one statement when a beat renews only some of an agent's jobs.
RENEW_CHUNK = 5000


def _renew(session: Session, agent_name: str, ids: Sequence[int], every: bool,
           until: datetime) -> None:
    """Set ``lease_until`` of the agent's active jobs ``ids`` (``every``: they are all of
    them, the usual beat: one statement without the list)."""
    if not ids:
        return
    mine = (Job.agent == agent_name, Job.state.in_(jobstore.ACTIVE))
    if every:
        session.execute(update(Job).where(*mine).values(lease_until=until))
        return
    for i in range(0, len(ids), RENEW_CHUNK):
        session.execute(update(Job).where(*mine, Job.id.in_(ids[i:i + RENEW_CHUNK]))
                        .values(lease_until=until))


def _instance_paused(session: Session, config: Config) -> bool:
    inst = session.get(Instance, config.instance.name)
    return bool(inst and inst.paused)


# --- claims --------------------------------------------------------------------------------

def claim(session: Session, config: Config, agent_name: str, slots: int, now: datetime
          ) -> list[Job]:
    """Lease up to ``slots`` queued jobs to the agent, those it is the best agent for."""
    views = fleet_views(session)
    me = next((v for v in views if v.name == agent_name), None)
    t = timing(config)
    # The claiming agent is alive by definition: count its heartbeat as now.
    if me is None or _instance_paused(session, config):
        return []
    me = fleet.AgentView(**{**me.__dict__, "heartbeat_at": now})
    if not fleet.takes_work(me, now, t):
        return []
    wanted = min(slots, me.free_slots)
    names = [n.name for n in me.node_types]
    if wanted <= 0 or not names:
        return []
    # The decision needs four columns: candidates are read (and locked) as such, and only
    # the jobs taken are loaded whole.
    query = (select(Job.id, Job.node_type, Job.repo_target, Job.agent_filter)
             .where(Job.state == JobState.QUEUED.value, Job.agent.is_(None),
                    Job.node_type.in_(names))
             .order_by(Job.id).limit(wanted * CANDIDATES_PER_SLOT))
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    taken: list[int] = []
    # Candidates share a few kinds (node type, repository target, filter): ask once a kind.
    decided: dict[tuple[str, str, str | None], bool] = {}
    for job_id, node_type, repo_target, agent_filter in session.execute(query):
        kind = (node_type, repo_target, agent_filter)
        if kind not in decided:
            decided[kind] = fleet.should_take(me, *kind, views, now, t)
        if decided[kind]:
            taken.append(job_id)
            if len(taken) >= wanted:
                break
    if not taken:
        return []
    # Locked by this transaction (PostgreSQL), or the database is this writer's (SQLite).
    leased = list(session.scalars(select(Job).where(Job.id.in_(taken)).order_by(Job.id)))
    for job in leased:
        lease(job, agent_name, now, config)
    return leased


def work_waiting(session: Session, agent_name: str) -> bool:
    """Whether any unleased queued job has one of the agent's node types (a cheap read)."""
    caps = session.scalar(select(Agent.capabilities).where(Agent.name == agent_name))
    names = [n.name for n in node_kinds(caps)]
    return bool(names) and session.scalar(
        select(Job.id).where(Job.state == JobState.QUEUED.value, Job.agent.is_(None),
                             Job.node_type.in_(names)).limit(1)) is not None


def lease(job: Job, agent: str, now: datetime, config: Config) -> None:
    job.agent = agent
    job.lease_id = uuid.uuid4().hex
    job.lease_until = now + timedelta(seconds=config.fleet.lease_seconds)
    job.report_seq = 0
    job.job_dir = None  # a directory of an earlier agent is not this one's


def specs(session: Session, jobs: Sequence[Job]) -> list[JobSpec]:
    """The specs of ``jobs``, their builds read in one query (the session keeps only weak
    references: one ``get`` per job would read a build again for each of its jobs)."""
    ids = {j.build_id for j in jobs}
    builds = {b.id: b for b in session.scalars(select(Build).where(Build.id.in_(ids)))} \
        if ids else {}
    return [spec(session, j, builds.get(j.build_id)) for j in jobs]


def spec(session: Session, job: Job, build: Build | None = None) -> JobSpec:
    build = build or session.get(Build, job.build_id)
    assert build is not None, "a job always has its build"
    return JobSpec(id=job.id, lease_id=job.lease_id or "", build_id=job.build_id,
                   repo=job.repo, pr=job.pr, clone_url=build.clone_url,
                   head_sha=job.head_sha, base_ref=job.base_ref, node_type=job.node_type,
                   target=job.target, repo_target=job.repo_target, facts=dict(job.facts),
                   job_dir=job.job_dir, state=job.state, backend_id=job.backend_id)


# --- reports -------------------------------------------------------------------------------

@dataclass
class Applied:
    response: ReportResponse
    #: The job, when the report changed its state (its build's report is due).
    changed: Job | None = None


def apply_report(session: Session, agent: str, job_id: int, report: Report, now: datetime
                 ) -> Applied:
    """Apply one report of ``agent`` about one job, once, under the lease it names."""
    job = session.get(Job, job_id)
    if job is None or job.agent != agent:
        return Applied(ReportResponse(accepted=False, cancel=True,
                                      detail=f"job {job_id} is not leased to agent {agent}"))
    if job.lease_id != report.lease_id:
        return Applied(ReportResponse(
            accepted=False, cancel=True,
            detail=f"job {job_id} was leased again after this agent's lease ended"))
    state = JobState(job.state)
    if report.seq <= job.report_seq:  # a retry of a report already applied
        return Applied(ReportResponse(accepted=True, cancel=_stop(job)))
    if state.terminal:
        job.report_seq = report.seq
        return Applied(ReportResponse(accepted=False, cancel=True,
                                      detail=f"job {job_id} has ended ({state.value})"))
    changed = _apply(job, state, report, now)
    job.report_seq = report.seq
    if isinstance(changed, str):
        return Applied(ReportResponse(accepted=False, cancel=True, detail=changed))
    return Applied(ReportResponse(accepted=True, cancel=_stop(job)),
                   job if changed else None)


def _stop(job: Job) -> bool:
    return bool(job.cancel_requested) or JobState(job.state).terminal


def _apply(job: Job, state: JobState, report: Report, now: datetime) -> bool | str:
    """True: the state changed; False: recorded without a change; a string: refused."""
    session = object_session(job)
    assert session is not None
    if report.kind == "job_dir":
        if state is not JobState.QUEUED:
            return f"job {job.id} is {state.value}, not waiting to be prepared"
        job.job_dir = report.job_dir
        return False
    if report.kind == "submitted":
        if state is not JobState.QUEUED:
            return f"job {job.id} is {state.value}: its submission is not wanted"
        return jobstore.transition(session, job, JobState.SUBMITTED, now,
                                   backend_id=report.backend_id, base_sha=report.base_sha,
                                   job_dir=report.job_dir, facts=report.facts or job.facts)
    if report.kind == "failed":
        return jobstore.transition(session, job, JobState.FAILED, now, reason=report.reason)
    if report.kind == "log":
        # The tail of a running job's output: kept with its result until the job ends.
        job.result = {**(job.result or {}), "log_tail": report.log_tail or ""}
        return False
    return _outcome(session, job, state, report, now)


def _outcome(session: Session, job: Job, state: JobState, report: Report, now: datetime
             ) -> bool | str:
    try:
        new = JobState(report.state or "")
    except ValueError:
        return f"unknown state {report.state!r}"
    if new not in REPORTABLE:
        return f"a report cannot make a job {new.value}"
    if state is JobState.QUEUED:
        return f"job {job.id} was never reported submitted"
    if new is state:
        return False
    if new.terminal and state is JobState.SUBMITTED:
        jobstore.transition(session, job, JobState.RUNNING, report.started_at or now)
    fields: dict[str, object] = {}
    for name in ("exit_code", "elapsed_seconds", "cpus", "max_rss_bytes", "node"):
        value = getattr(report, name)
        if value is not None:
            fields[name] = value
    if report.elapsed_seconds is not None and report.cpus:
        fields["core_hours"] = round(report.elapsed_seconds * report.cpus / 3600, 6)
    if report.result is not None:
        fields["result"] = report.result
    reason = report.reason
    if new is JobState.CANCELLED and job.cancel_requested and job.reason:
        reason = job.reason  # who cancelled it, rather than the backend's word
    jobstore.transition(session, job, new, now, reason=reason, **fields)
    if report.started_at:
        job.started_at = report.started_at
    if new.terminal and report.ended_at:
        job.ended_at = report.ended_at
    for a in report.artifacts:
        session.add(Artifact(job_id=job.id, name=a.name, path=a.path, size=a.size,
                             sha256=a.sha256))
    return True


def report_changed(session: Session, config: Config, jobs: Iterable[Job], now: datetime
                   ) -> None:
    """Re-derive the PR reports of the builds whose jobs changed (one per build)."""
    by_build: dict[int, list[Job]] = {}
    for job in jobs:
        by_build.setdefault(job.build_id, []).append(job)
    for build_id, changed in by_build.items():
        build = session.get(Build, build_id)
        if build is not None:
            report_build(session, config, build, now, changed=changed)


# --- the reaper ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Reaped:
    requeued: list[int]
    lost: list[int]


LOST_REASON = ("agent {agent} stopped answering; its lease ended at {until} (UTC) and the "
               "job's state is unknown. `bot: rebuild failed` builds it again")


def reap(session: Session, config: Config, now: datetime) -> Reaped:
    """Leases of silent agents: unstarted jobs go back to the queue for another agent;
    started ones become ``lost`` once the grace after their lease has passed too. The
    agent inside ``serve`` is never reaped: it lives and dies with the control plane."""
    builtin = select(Agent.name).where(Agent.builtin.is_(True))
    expired = list(session.scalars(
        select(Job).where(Job.agent.is_not(None), Job.agent.not_in(builtin),
                          Job.state.in_(jobstore.ACTIVE), Job.lease_until < now)
        .order_by(Job.id)))
    requeued: list[int] = []
    lost: list[Job] = []
    grace = timedelta(seconds=config.fleet.grace_seconds)
    for job in expired:
        assert job.lease_until is not None
        if JobState(job.state) is JobState.QUEUED:
            job.agent = None
            job.lease_id = None
            job.lease_until = None
            job.job_dir = None
            requeued.append(job.id)
        elif job.lease_until + grace < now:
            until = job.lease_until.strftime("%Y-%m-%d %H:%M:%S")
            jobstore.transition(session, job, JobState.LOST, now,
                                reason=LOST_REASON.format(agent=job.agent, until=until))
            lost.append(job)
    report_changed(session, config, lost, now)
    return Reaped(requeued, [j.id for j in lost])
