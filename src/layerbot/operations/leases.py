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

import json
import secrets
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Integer,
    Select,
    String,
    Table,
    Text,
    Update,
    bindparam,
    func,
    select,
    update,
)
from sqlalchemy import cast as sa_cast
from sqlalchemy.orm import Session, object_session

from layerbot import clock
from layerbot.config import Config
from layerbot.core import fleet
from layerbot.core.jobs import JobState
from layerbot.core.pipeline import PlanError
from layerbot.core.protocol import (
    Capabilities,
    HeartbeatResponse,
    HeldJob,
    JobSpec,
    Report,
    ReportResponse,
)
from layerbot.events.reporting import report_build
from layerbot.operations import fairness, pipelines
from layerbot.store import jobs as jobstore
from layerbot.store.models import Agent, Artifact, Build, Instance, Job, UTCDateTime

#: Claims look at this many candidate rows per free slot (jobs other agents should take
#: are skipped without being locked for long).
CANDIDATES_PER_SLOT = 8
#: ...and at least this many, so that a claim for one slot still sees past the queued
#: jobs of one big PR to the next PR's (round-robin, operations/fairness.py).
MIN_CANDIDATES = 64

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


#: The tables of the statements below: Core, not ORM entities, so that a claim's rows come
#: back as plain rows without the ORM's loading machinery.
_AGENTS: Table = Agent.__table__  # type: ignore[assignment]
_JOBS: Table = Job.__table__  # type: ignore[assignment]


def _capabilities_text(agents: Table) -> Any:
    """An agent's capabilities as their JSON text: parsed by :func:`_kinds`, once per text
    (a claim reads every agent's, and they change only when an agent registers)."""
    return sa_cast(agents.c.capabilities, Text).label("capabilities")


#: Every agent with how many active jobs it holds, in one statement (built once: building
#: a statement costs a claim more than running it).
_FLEET = (
    select(_AGENTS.c.name, _AGENTS.c.cluster, _AGENTS.c.priority, _capabilities_text(_AGENTS),
           _AGENTS.c.heartbeat_at, _AGENTS.c.paused, _AGENTS.c.draining,
           _AGENTS.c.revoked_at, func.coalesce(
               select(func.count()).where(_JOBS.c.agent == _AGENTS.c.name,
                                          _JOBS.c.state.in_(jobstore.ACTIVE))
               .scalar_subquery(), 0).label("holding")))


def fleet_views(session: Session) -> list[fleet.AgentView]:
    """Every agent as the pure rules see it, with how many active jobs it holds (columns,
    not rows, in one statement: every claim that finds work asks this)."""
    return [_row_view(r) for r in session.execute(_FLEET)]


def _row_view(r: Any) -> fleet.AgentView:
    """An agent's view from a row of :data:`_FLEET`'s columns."""
    concurrency, kinds = _kinds(r.capabilities)
    return fleet.AgentView(
        name=r.name, cluster=r.cluster, priority=r.priority, concurrency=concurrency,
        node_types=kinds, holding=int(r.holding or 0), heartbeat_at=r.heartbeat_at,
        paused=bool(r.paused), draining=bool(r.draining), revoked=r.revoked_at is not None)


@lru_cache(maxsize=1024)
def _kinds(capabilities: str | None) -> tuple[int, tuple[fleet.NodeKind, ...]]:
    """An agent's concurrency and node kinds from its capabilities' JSON text."""
    caps = json.loads(capabilities) if capabilities else None
    caps = caps if isinstance(caps, dict) else {}
    return int(caps.get("concurrency") or 1), node_kinds(caps)


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
    (the agent inside ``serve`` holds exactly what the store says). For an agent row
    already loaded (the built-in agent's); the agent API's beats go by :func:`beat`."""
    agent.heartbeat_at = now
    agent.load = _load(agent.load, free_slots, resources)
    cancel, gone = _held_jobs(session, config, agent.name, holding, now, renew_all)
    return HeartbeatResponse(paused=agent.paused or _instance_paused(session, config),
                             draining=agent.draining,
                             lease_seconds=config.fleet.lease_seconds,
                             cancel=cancel, gone=gone)


def _load(before: Mapping[str, Any] | None, free_slots: int,
          resources: Mapping[str, Any] | None) -> dict[str, Any]:
    """An agent's load after a beat: its free slots, and its resources (the last ones it
    sent, when this beat sends none)."""
    load: dict[str, Any] = {"free_slots": free_slots}
    if resources is not None:
        load["resources"] = dict(resources)
    elif before and "resources" in before:
        load["resources"] = before["resources"]
    return load


def _beat_statement() -> Any:
    """The beat of the agent whose token's sha256 is ``key``: its ``heartbeat_at`` set to
    ``now``, returning what the beat needs (parameters ``key``, ``now``, ``instance``)."""
    paused = (select(Instance.__table__.c.paused)
              .where(Instance.__table__.c.name == bindparam("instance"))
              .scalar_subquery())
    return (update(_AGENTS)
            .where(_AGENTS.c.token_hash == bindparam("key"), _AGENTS.c.revoked_at.is_(None))
            .values(heartbeat_at=bindparam("now", type_=UTCDateTime()))
            .returning(_AGENTS.c.name, _AGENTS.c.token_hash, _AGENTS.c.paused,
                       _AGENTS.c.draining, _AGENTS.c.load,
                       paused.label("instance_paused")))


_BEAT = _beat_statement()
_SET_LOAD = (update(_AGENTS).where(_AGENTS.c.name == bindparam("key"))
             .values(load=bindparam("new_load", type_=_AGENTS.c.load.type)))


@dataclass(frozen=True)
class Beat:
    """A beat of the agent API, done: who beat (to check its token) and the answer."""

    agent: str
    token_hash: str
    response: HeartbeatResponse


def beat(session: Session, config: Config, token_hash: str, holding: Mapping[int, str],
         free_slots: int, resources: Mapping[str, Any] | None, now: datetime
         ) -> Beat | None:
    """:func:`heartbeat` for the agent whose token's sha256 is ``token_hash`` (None: no
    such agent, or revoked), authenticated in the beat's own transaction, as a claim is.

    A fleet beats many times a second and each beat competes with the claims for the same
    CPU, so it is a few prebuilt statements on columns: the agent's row is updated and
    read back in one (its load only when it changed: free slots move only as jobs come and
    go), then its jobs are read and their leases renewed. The caller checks ``token_hash``
    again in constant time and rolls back on a mismatch."""
    row = session.execute(_BEAT, {"key": token_hash, "now": now,
                                  "instance": config.instance.name}).one_or_none()
    if row is None or row.token_hash is None:
        return None
    load = _load(row.load, free_slots, resources)
    if load != row.load:
        session.execute(_SET_LOAD, {"key": row.name, "new_load": load})
    cancel, gone = _held_jobs(session, config, row.name, holding, now)
    return Beat(row.name, row.token_hash, HeartbeatResponse(
        paused=bool(row.paused or row.instance_paused), draining=bool(row.draining),
        lease_seconds=config.fleet.lease_seconds, cancel=cancel, gone=gone))


#: The active jobs leased to an agent (``agent``), as columns.
_HELD_ROWS = (select(_JOBS.c.id, _JOBS.c.lease_id, _JOBS.c.state, _JOBS.c.cancel_requested)
              .where(_JOBS.c.agent == bindparam("agent", type_=String),
                     _JOBS.c.state.in_(jobstore.ACTIVE)))


def _held_jobs(session: Session, config: Config, agent: str, holding: Mapping[int, str],
               now: datetime, renew_all: bool = False) -> tuple[list[int], list[int]]:
    """Renew the leases of the agent's jobs it holds under their own lease (``renew_all``:
    every one); returns the ids of those to cancel and of those in ``holding`` no longer
    its own.

    Columns, not jobs: a beat renews what may be thousands of leases, and loading each
    job (its facts and all) only to set one column cost more than the rest of the beat."""
    until = now + timedelta(seconds=config.fleet.lease_seconds)
    rows = session.execute(_HELD_ROWS, {"agent": agent}).all()
    renew = [r for r in rows if renew_all or holding.get(r.id) == r.lease_id]
    _renew(session, agent, [r.id for r in renew], len(renew) == len(rows), until)
    cancel = [r.id for r in renew
              if r.cancel_requested and JobState(r.state) is not JobState.QUEUED]
    mine = {r.id: r.lease_id for r in rows}
    gone = sorted(i for i, lease in holding.items() if mine.get(i) != lease)
    return sorted(cancel), gone


#: Leases renewed by one statement when a beat renews only some of an agent's jobs.
RENEW_CHUNK = 5000

#: (Not ``agent``: an UPDATE keeps a column's own name for the values it sets.)
_MINE = (_JOBS.c.agent == bindparam("holder", type_=String), _JOBS.c.state.in_(jobstore.ACTIVE))
_RENEW_ALL = (update(_JOBS).where(*_MINE)
              .values(lease_until=bindparam("until", type_=UTCDateTime())))
_RENEW_SOME = _RENEW_ALL.where(_JOBS.c.id.in_(bindparam("ids", expanding=True)))


def _renew(session: Session, agent_name: str, ids: Sequence[int], every: bool,
           until: datetime) -> None:
    """Set ``lease_until`` of the agent's active jobs ``ids`` (``every``: they are all of
    them, the usual beat: one statement without the list)."""
    if not ids:
        return
    params: dict[str, Any] = {"holder": agent_name, "until": until}
    if every:
        session.execute(_RENEW_ALL, params)
        return
    for i in range(0, len(ids), RENEW_CHUNK):
        session.execute(_RENEW_SOME, {**params, "ids": list(ids[i:i + RENEW_CHUNK])})


def _instance_paused(session: Session, config: Config) -> bool:
    inst = session.get(Instance, config.instance.name)
    return bool(inst and inst.paused)


# --- claims --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Claimant:
    """The claiming agent as its claim reads it, in one query: its row, how many active
    jobs it holds, and whether the instance is paused."""

    view: fleet.AgentView
    #: To authenticate the claim in its own transaction (``operations/agents.claimant``).
    token_hash: str | None
    instance_paused: bool

    @property
    def name(self) -> str:
        return self.view.name


def _claimant_query(by_token: bool) -> Select[Any]:
    """One agent's :data:`_FLEET` columns, its token's hash and whether the instance is
    paused, by name or by token hash (parameters ``key`` and ``instance``)."""
    key = _AGENTS.c.token_hash if by_token else _AGENTS.c.name
    paused = (select(Instance.__table__.c.paused)
              .where(Instance.__table__.c.name == bindparam("instance"))
              .scalar_subquery())
    return (_FLEET.add_columns(_AGENTS.c.token_hash, paused.label("instance_paused"))
            .where(key == bindparam("key")))


_CLAIMANT_BY_NAME = _claimant_query(by_token=False)
_CLAIMANT_BY_TOKEN = _claimant_query(by_token=True)


def claimant(session: Session, config: Config, *, name: str | None = None,
             token_hash: str | None = None) -> Claimant | None:
    """The agent named ``name``, or whose token's sha256 is ``token_hash``, as a claim needs
    it (None: there is none). One statement: a claim's every query is a round trip, and it
    is asked many times a second by a busy fleet."""
    if (name is None) == (token_hash is None):
        raise ValueError("give the agent's name or its token's hash, one of them")
    query = _CLAIMANT_BY_NAME if name is not None else _CLAIMANT_BY_TOKEN
    row = session.execute(query, {"key": name if name is not None else token_hash,
                                  "instance": config.instance.name}).one_or_none()
    if row is None:
        return None
    return Claimant(_row_view(row), row.token_hash, bool(row.instance_paused))


def claim(session: Session, config: Config, agent: str | Claimant, slots: int,
          now: datetime) -> list[JobSpec]:
    """Lease up to ``slots`` queued jobs to the agent (by name, or as :func:`claimant`
    read it in this transaction), those it is the best agent for; returns their specs.

    At most five statements: the agent (unless given), the candidates (locked), the other
    agents (only when there are candidates), what the PRs of those this agent should take
    hold (only when it can change their order: ``fairness.candidates``) and the lease
    itself, which returns the specs.
    """
    me = agent if isinstance(agent, Claimant) else claimant(session, config, name=agent)
    if me is None or me.instance_paused:
        return []
    t = timing(config)
    # The claiming agent is alive by definition: count its heartbeat as now.
    view = replace(me.view, heartbeat_at=now)
    if not fleet.takes_work(view, now, t):
        return []
    wanted = min(slots, view.free_slots)
    names = [n.name for n in view.node_types]
    if wanted <= 0 or not names:
        return []
    # The decision needs a few columns: candidates are read (and locked) as such, the
    # least served PRs first (operations/fairness.py), and only those this agent should
    # take are kept.
    acceptable = _acceptable(session, view, now, t)
    found = fairness.candidates(session, config, me.name, names,
                                max(wanted * CANDIDATES_PER_SLOT, MIN_CANDIDATES),
                                acceptable)
    taken = fairness.pick(found, wanted, config)
    if not taken:
        return []
    return _lease(session, config, me.name, taken, now)


def _acceptable(session: Session, me: fleet.AgentView, now: datetime, t: fleet.Timing
                ) -> Callable[[fairness.Candidate], bool]:
    """Whether the claiming agent ``me`` should take a candidate (``fleet.should_take``).

    The other agents are read at the first candidate, so a claim that finds none (the usual
    answer of an idle fleet) does not read them; candidates share a few kinds (node type,
    repository target, filter), so each kind is decided once."""
    views: list[fleet.AgentView] | None = None
    decided: dict[tuple[str, str, str | None], bool] = {}

    def acceptable(c: fairness.Candidate) -> bool:
        nonlocal views
        # A pipeline's step is pinned to the agent that ran its plan: it is this one's.
        if c.pinned_agent == me.name:
            return True
        kind = (c.node_type, c.repo_target, c.agent_filter)
        if kind not in decided:
            if views is None:
                views = fleet_views(session)
            decided[kind] = fleet.should_take(me, *kind, views, now, t)
        return decided[kind]

    return acceptable


#: Unleased queued jobs of some node types (``names``), oldest first, ``limit`` of them.
_CANDIDATES = (select(_JOBS.c.id, _JOBS.c.node_type, _JOBS.c.repo_target,
                      _JOBS.c.agent_filter)
               .where(_JOBS.c.state == JobState.QUEUED.value, _JOBS.c.agent.is_(None),
                      _JOBS.c.reused_from.is_(None),  # a step waiting for another's artifact
                      _JOBS.c.node_type.in_(bindparam("names", expanding=True)))
               .order_by(_JOBS.c.id).limit(bindparam("limit", type_=Integer)))

def _lease_statement(guarded: bool) -> Update:
    """Lease the jobs ``ids`` to ``agent`` until ``until``, returning their specs' columns.

    ``guarded`` adds "still queued and unleased" to the ids. On PostgreSQL the candidates
    statement locked these rows for this transaction after checking just that, so the
    lease goes by primary key alone: with the guard, a planner whose statistics predate a
    burst of queued jobs (autoanalyze runs a minute later at best) chose to scan every
    queued job for the ten ids, and a claim took twice as long."""
    where: list[ColumnElement[bool]] = [_JOBS.c.id.in_(bindparam("ids", expanding=True))]
    if guarded:
        where += [_JOBS.c.agent.is_(None), _JOBS.c.state == JobState.QUEUED.value]
    return (
        update(_JOBS)
        .where(*where)
        .values(agent=bindparam("agent", type_=String),
                lease_id=bindparam("prefix", type_=String) + sa_cast(_JOBS.c.id, String),
                lease_until=bindparam("until", type_=UTCDateTime()), report_seq=0,
                job_dir=None)  # a directory of an earlier agent is not this one's
        .returning(_JOBS.c.id, _JOBS.c.lease_id, _JOBS.c.build_id, _JOBS.c.repo, _JOBS.c.pr,
                   select(Build.__table__.c.clone_url)
                   .where(Build.__table__.c.id == _JOBS.c.build_id)
                   .scalar_subquery().label("clone_url"),
                   _JOBS.c.head_sha, _JOBS.c.base_ref, _JOBS.c.node_type, _JOBS.c.target,
                   _JOBS.c.repo_target, _JOBS.c.facts, _JOBS.c.state, _JOBS.c.backend_id))


_LEASE_GUARDED = _lease_statement(guarded=True)
_LEASE_LOCKED = _lease_statement(guarded=False)


def _lease(session: Session, config: Config, agent: str, ids: Sequence[int], now: datetime
           ) -> list[JobSpec]:
    """Lease the jobs ``ids`` to ``agent`` in one statement that returns their specs.

    Each job gets a lease id of its own: a prefix drawn once per claim (so a job leased
    again never gets its old lease id back) and the job's id (so the jobs of one claim do
    not share one). The rows are locked by this transaction (PostgreSQL: see
    :func:`_lease_statement`) or the database is this writer's (SQLite, where the guard
    stays: its planner looks the ids up by rowid whatever else the statement says).
    """
    locked = session.get_bind().dialect.name == "postgresql"
    rows = session.execute(_LEASE_LOCKED if locked else _LEASE_GUARDED, {
        "ids": list(ids), "agent": agent, "prefix": secrets.token_hex(LEASE_PREFIX_BYTES) + "-",
        "until": now + timedelta(seconds=config.fleet.lease_seconds)}).all()
    return sorted((_leased_spec(r) for r in rows), key=lambda j: j.id)


#: Random bytes of a claim's lease-id prefix (hex: twice as many characters; with ``-``
#: and a job id it stays within the column's 40).
LEASE_PREFIX_BYTES = 12


def _leased_spec(row: Any) -> JobSpec:
    return JobSpec(id=row.id, lease_id=row.lease_id, build_id=row.build_id, repo=row.repo,
                   pr=row.pr, clone_url=row.clone_url, head_sha=row.head_sha,
                   base_ref=row.base_ref, node_type=row.node_type, target=row.target,
                   repo_target=row.repo_target, facts=dict(row.facts or {}), job_dir=None,
                   state=row.state, backend_id=row.backend_id)


def work_waiting(session: Session, node_types: Collection[str]) -> bool:
    """Whether any unleased queued job has one of ``node_types`` (a cheap read)."""
    return bool(node_types) and session.execute(
        _CANDIDATES, {"names": list(node_types), "limit": 1}).first() is not None


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


def warm(session: Session, config: Config) -> None:
    """Run the claim's and the beat's statements once, matching nothing, and roll back.

    SQLAlchemy compiles a statement at its first run (a millisecond or more each), and
    every thread that runs it before that compile is cached compiles it too: the first
    claims of a fleet come together (agents start, or the control plane restarts under
    them), so without this each of them paid every compile at once."""
    now = clock.now()
    claimant(session, config, token_hash="")
    fairness.warm(session, config)
    fleet_views(session)
    _lease(session, config, "", [], now)
    beat(session, config, "", {}, 0, None, now)
    session.execute(_SET_LOAD, {"key": "", "new_load": None})
    session.execute(_HELD_ROWS, {"agent": ""}).all()
    session.execute(_RENEW_ALL, {"holder": "", "until": now})
    session.execute(_RENEW_SOME, {"holder": "", "until": now, "ids": [0]})
    session.rollback()


# --- reports -------------------------------------------------------------------------------

@dataclass
class Applied:
    response: ReportResponse
    #: The job, when the report changed its state (its build's report is due).
    changed: Job | None = None


def apply_report(session: Session, config: Config, agent: str, job_id: int, report: Report,
                 now: datetime) -> Applied:
    """Apply one report of ``agent`` about one job, once, under the lease it names; the
    end of a plan or a step moves its pipeline in the same transaction."""
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
    changed = _apply(config, job, state, report, now)
    job.report_seq = report.seq
    if isinstance(changed, str):
        return Applied(ReportResponse(accepted=False, cancel=True, detail=changed))
    if changed:
        moved = [j for j in pipelines.after_end(session, config, job, now)
                 if j.build_id != job.build_id]
        report_changed(session, config, moved, now)
    return Applied(ReportResponse(accepted=True, cancel=_stop(job)),
                   job if changed else None)


def _stop(job: Job) -> bool:
    return bool(job.cancel_requested) or JobState(job.state).terminal


def _apply(config: Config, job: Job, state: JobState, report: Report, now: datetime
           ) -> bool | str:
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
    return _outcome(config, session, job, state, report, now)


def _outcome(config: Config, session: Session, job: Job, state: JobState, report: Report,
             now: datetime) -> bool | str:
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
    reason = report.reason
    if new is JobState.SUCCEEDED and pipelines.role(job) == pipelines.ROLE_PLAN:
        try:
            pipelines.checked_plan(config, report.result)
        except PlanError as exc:  # the agent's check is not this control plane's
            new, reason = JobState.FAILED, str(exc)
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
    moved = [m for job in lost for m in pipelines.after_end(session, config, job, now)]
    report_changed(session, config, lost + moved, now)
    return Reaped(requeued, [j.id for j in lost])
