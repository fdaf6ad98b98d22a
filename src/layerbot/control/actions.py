"""The control center's actions: redo, cancel, deploy, pause, resume and drain (of this
instance, or of an agent of the fleet). Each records its change with the PR's report in one
transaction, as the command handlers do, so it reads on the PR exactly like one from a
comment.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from layerbot import clock
from layerbot.config import Config
from layerbot.control.models import (
    ActionResult,
    AgentOut,
    ControlError,
)
from layerbot.control.queries import agent as agent_summary
from layerbot.core.deploy_plan import plan_deploy
from layerbot.core.fleet import AgentState
from layerbot.core.jobs import JobState
from layerbot.events.reporting import report_build
from layerbot.jobs.planner import BuildRequest
from layerbot.operations import agents as agentops
from layerbot.operations import builds, pipelines
from layerbot.operations import fleet as fleetops
from layerbot.operations.cancelling import cancel_jobs
from layerbot.operations.pulls import GitHubReader, PullHead, PullUnavailable, fetch_pull
from layerbot.store import jobs as jobstore
from layerbot.store.db import Store
from layerbot.store.models import Build, Instance, Job

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
        if job.step_id is not None:  # a step: its own pipeline's way (same commit, agent)
            return _redo_step(s, config, job, build, now)
        nodes = fleetops.snapshot_in(s, config, now).node_types(config)
        targets, redo_of = builds.redo_targets(config, [job], nodes)
        if not targets:
            raise ControlError(409, f"job {job_id} built node type {job.node_type} and "
                                    f"repository target {job.repo_target}, which this "
                                    "fleet no longer has")
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


def _redo_step(session: Session, config: Config, job: Job, build: Build, now: datetime
               ) -> ActionResult:
    try:
        again = pipelines.redo_step(session, config, job, now)
    except ValueError as exc:
        raise ControlError(409, str(exc)) from None
    report_build(session, config, build, now, changed=[again])
    return ActionResult(message=f"step {job.step_id} (job {job.id}) redone as job {again.id} "
                                f"at {job.head_sha[:12]}", jobs=[again.id], build_id=build.id)


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
    """Queue the job's artifacts for its agent to stage, as `bot: deploy` would.

    The same plan decides (``core.deploy_plan.plan_deploy``): only jobs built from the
    PR's head now (``head_sha``), and the deploy policy picks among them; ``force`` ships
    this job even if the policy would not (as ``bot: deploy force job:ID``).
    """
    # Imported here: it loads the deploy stack (an S3 client), which the CLI's read-only
    # commands should not pay for at start (tests/cli/test_start.py).
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


#: What pause, resume and drain set on an agent (resume ends a pause and a drain).
AGENT_FLAGS: dict[str, dict[str, bool]] = {
    "pause": {"paused": True},
    "resume": {"paused": False, "draining": False},
    "drain": {"draining": True},
}


#: What can be done to an agent: its flags, and revoking its token.
AGENT_VERBS = (*AGENT_FLAGS, "revoke")


def set_agent(store: Store, config: Config, name: str, verb: str, now: datetime
              ) -> ActionResult:
    """Pause, resume or drain an agent of the fleet: the claims it makes next are answered
    by its new flags (``core.fleet``); what it holds goes on either way. Or revoke its
    token: it is refused from its next request on."""
    if verb not in AGENT_VERBS:
        raise ControlError(404, f"agents can be paused, resumed, drained or revoked, "
                                f"not {verb!r}")
    before = agent_summary(store, config, name, now)
    if before.state is AgentState.REVOKED:
        raise ControlError(409, f"agent {name} is revoked; `layerbot agents add {name}` "
                                "makes it anew")
    if verb == "revoke":
        return _revoke(store, before, now)
    flags = AGENT_FLAGS[verb]
    try:
        agentops.set_flags(store, name, **flags)
    except agentops.AgentError as exc:  # gone between the two reads
        raise ControlError(404, str(exc)) from None
    return ActionResult(message=_agent_message(before, verb))


def _revoke(store: Store, agent: AgentOut, now: datetime) -> ActionResult:
    if agent.builtin:
        raise ControlError(409, f"{agent.name} is the agent inside `serve`: it has no token "
                                "to revoke (set fleet.builtin_agent = false to stop it)")
    try:
        agentops.revoke(store, agent.name, now)
    except agentops.AgentError as exc:
        raise ControlError(404, str(exc)) from None
    held = (f"; the {agent.holding} job(s) it holds end as lost unless they are given back "
            "first" if agent.holding else "")
    return ActionResult(message=f"agent {agent.name}: token revoked, it is refused from its "
                                f"next request{held}")


def _agent_message(before: AgentOut, verb: str) -> str:
    name, holding = before.name, before.holding
    if verb == "pause":
        if before.paused:
            return f"agent {name} was already paused"
        return f"agent {name} paused: it gets no new jobs; the {holding} it holds go on"
    if verb == "drain":
        if not holding:
            return f"agent {name} is drained: it holds no jobs and gets no new ones"
        return (f"agent {name} drains: it gets no new jobs, and the {holding} it holds "
                "finish")
    if not (before.paused or before.draining):
        return f"agent {name} was not paused or draining"
    return f"agent {name} resumed: it gets jobs again"


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

    async def set_agent(self, name: str, verb: str) -> ActionResult:
        result = await asyncio.to_thread(set_agent, self.store, self.config, name, verb,
                                         clock.now())
        self.on_written()  # a resumed built-in agent claims at once
        return result

    async def _act(self, fn: Callable[..., ActionResult], job_id: int, by: str,
                   **kwargs: Any) -> ActionResult:
        result = await asyncio.to_thread(fn, self.store, self.config, job_id, by, clock.now(),
                                         **kwargs)
        self.on_written()
        return result
