"""The control center's REST API under /api (its OpenAPI is published at /api/openapi.json).

Reads are public or need a login, as ``web.public_read`` says; every action needs a login
or a token, and is decided like the PR command it stands for (redo = ``build``).
"""

import asyncio
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Header, Path, Query, Request
from fastapi.security import APIKeyCookie, HTTPBearer
from pydantic import BaseModel

from layerbot import __version__, clock, control
from layerbot.control import Controller
from layerbot.core.jobs import JobState
from layerbot.store.inbox import Inbox
from layerbot.store.outbox import Outbox
from layerbot.web.auth import SESSION_COOKIE, Auth, Principal

#: Ids and numbers are 32-bit in the store (PostgreSQL's integer).
MAX_INT = 2**31 - 1
#: No control characters in names: nothing real has them, and PostgreSQL refuses NUL.
SAFE_TEXT = r"^[^\x00-\x1f\x7f]*$"

StateName = Literal["queued", "submitted", "running", "succeeded", "failed", "cancelled",
                    "timed_out", "lost"]
assert set(StateName.__args__) == {s.value for s in JobState}  # type: ignore[attr-defined]

JobId = Annotated[int, Path(ge=1, le=MAX_INT, description="the job's id")]
Name = Annotated[str, Path(min_length=1, max_length=200, pattern=SAFE_TEXT)]
Filter = Annotated[str | None, Query(max_length=200, pattern=SAFE_TEXT)]
Limit = Annotated[int, Query(ge=1, le=control.MAX_PAGE)]
Offset = Annotated[int, Query(ge=0, le=MAX_INT)]
CsrfHeader = Annotated[str | None, Header(
    alias="X-CSRF-Token", description="with a session cookie: the session's CSRF token")]

_bearer = HTTPBearer(auto_error=False, description="an API token (`layerbot token create`)")
_cookie = APIKeyCookie(name=SESSION_COOKIE, auto_error=False,
                       description="the dashboard's session after logging in with GitHub")


class Problem(BaseModel):
    detail: str


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    words = {400: "the body is not valid JSON", 401: "not logged in, or the token is unknown",
             403: "not allowed (or a missing CSRF token)", 404: "no such thing",
             409: "not possible in the current state", 502: "GitHub did not answer"}
    return {code: {"model": Problem, "description": words[code]} for code in codes}


READ = _errors(401)
ACTION = _errors(401, 403, 404, 409)


class JobLog(BaseModel):
    job_id: int
    state: str
    log: str


class InstanceResources(BaseModel):
    instance: str
    alive: bool
    resources: control.ResourcesOut | None


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    instance: str
    version: str
    database: bool
    alive: bool
    paused: bool
    inbox_lag_seconds: float | None
    outbox_backlog: int | None
    instances: list[control.InstanceOut]
    checked_at: datetime


class Me(BaseModel):
    kind: Literal["anonymous", "user", "token"]
    login: str
    scopes: list[str]
    csrf: str


class RedoIn(BaseModel):
    #: same: the job's own commit; head: the pull request's head now.
    at: Literal["same", "head"] = "same"


class DeployIn(BaseModel):
    force: bool = False


def api_router(controller: Controller, auth: Auth, inbox: Inbox, outbox: Outbox) -> APIRouter:
    store, config = controller.store, controller.config
    router = APIRouter(prefix="/api", tags=["control"])

    async def who(request: Request, _b: Any = Depends(_bearer),
                  _c: Any = Depends(_cookie)) -> Principal:
        return await auth.principal(request)

    async def reader(principal: Principal = Depends(who)) -> Principal:
        auth.may_read(principal)
        return principal

    async def actor(principal: Principal = Depends(who), csrf: CsrfHeader = None
                    ) -> Principal:
        if principal.anonymous:
            await auth.authorize(principal, "act", "", None)  # raises 401
        auth.check_csrf(principal, csrf)
        return principal

    async def sees(principal: Principal = Depends(reader)) -> control.Visible:
        # Private repositories' PRs, jobs and logs only for those who can read them.
        return await auth.readable(principal)

    Reader = Annotated[Principal, Depends(reader)]
    Sees = Annotated[control.Visible, Depends(sees)]
    Actor = Annotated[Principal, Depends(actor)]
    # Reads of a public instance need no credentials: say so (`{}`: no requirement).
    optional: dict[str, Any] = {"security": [{}]}
    public = optional if config.web.public_read else None

    @router.get("/me", response_model=Me, responses=_errors(401), openapi_extra=optional)
    async def me(principal: Annotated[Principal, Depends(who)]) -> Me:
        """Who the API takes the caller for."""
        return Me(kind=principal.kind, login=principal.login, scopes=sorted(principal.scopes),
                  csrf=principal.csrf)

    @router.get("/overview", response_model=control.Overview, responses=READ,
                openapi_extra=public)
    async def overview(visible: Sees) -> control.Overview:
        """Running and queued jobs, failures of the last 24 hours, the instances."""
        return await asyncio.to_thread(control.overview, store, clock.now(), visible=visible,
                                       config=config)

    @router.get("/jobs", response_model=control.JobPage, responses=READ,
                openapi_extra=public)
    async def jobs(visible: Sees, state: Annotated[list[StateName], Query()] = [],  # noqa: B006
                   target: Filter = None, repo: Filter = None,
                   pr: Annotated[int | None, Query(ge=0, le=MAX_INT)] = None,
                   instance: Filter = None, agent: Filter = None, limit: Limit = 50,
                   offset: Offset = 0) -> control.JobPage:
        """Jobs, newest first, each with its agent and cluster. ``target`` matches part of
        the target's name; ``agent`` names the agent that holds or held the job."""
        return await asyncio.to_thread(control.list_jobs, store, state=state, target=target,
                                       repo=repo, pr=pr, instance=instance, limit=limit,
                                       offset=offset, visible=visible, agent=agent)

    @router.get("/jobs/{job_id}", response_model=control.JobDetail,
                responses=_errors(401, 404), openapi_extra=public)
    async def job(visible: Sees, job_id: JobId,
                  lines: Annotated[int, Query(ge=1, le=5000)] = 100) -> control.JobDetail:
        """A job's facts, state history, result, log tail, artifacts and deployments."""
        return await asyncio.to_thread(control.job_detail, store, job_id, lines, visible)

    @router.get("/jobs/{job_id}/log", response_model=JobLog, responses=_errors(401, 404),
                openapi_extra=public)
    async def job_log(visible: Sees, job_id: JobId,
                      lines: Annotated[int, Query(ge=1, le=5000)] = 100) -> JobLog:
        """The last lines of the job's log (it grows while the job runs)."""
        state, text = await asyncio.to_thread(control.job_log, store, job_id, lines, visible)
        return JobLog(job_id=job_id, state=state, log=text)

    @router.get("/jobs/{job_id}/pipeline", response_model=control.PipelineOut,
                responses=_errors(401, 404), openapi_extra=public)
    async def job_pipeline(visible: Sees, job_id: JobId) -> control.PipelineOut:
        """The pipeline the job belongs to (as its plan job or one of its steps): each
        step's latest attempt with its state, duration, needs, agent and core-hours; the
        progress, the critical path and what the target cost. 404 for a job of no
        pipeline."""
        found = await asyncio.to_thread(control.pipeline_of, store, job_id, clock.now(),
                                        visible)
        if found is None:
            raise control.ControlError(404, f"job {job_id} is not part of a pipeline")
        return found

    @router.get("/pulls", response_model=control.PullPage, responses=READ,
                openapi_extra=public)
    async def pulls(visible: Sees, repo: Filter = None, limit: Limit = 50,
                    offset: Offset = 0) -> control.PullPage:
        """Pull requests with jobs, most recently active first."""
        return await asyncio.to_thread(control.list_pulls, store, repo=repo, limit=limit,
                                       offset=offset, visible=visible)

    @router.get("/pulls/{owner}/{name}/{number}", response_model=control.PullDetail,
                responses=_errors(401, 404), openapi_extra=public)
    async def pull(visible: Sees, owner: Name, name: Name,
                   number: Annotated[int, Path(ge=1, le=MAX_INT)]) -> control.PullDetail:
        """One pull request's builds and their jobs."""
        return await asyncio.to_thread(control.pull_detail, store, f"{owner}/{name}", number,
                                       visible)

    @router.get("/instances", response_model=list[control.InstanceOut], responses=READ,
                openapi_extra=public)
    async def instances(_: Reader) -> list[control.InstanceOut]:
        """The bot instances sharing this store: version, heartbeat, paused, queue."""
        return await asyncio.to_thread(control.instances, store, clock.now())

    @router.get("/agents", response_model=list[control.AgentOut], responses=READ,
                openapi_extra=public)
    async def agents(_: Reader) -> list[control.AgentOut]:
        """The fleet's agents: state (connected, disconnected, lost, paused, draining,
        revoked), version, node types, load and last heartbeat."""
        return await asyncio.to_thread(control.agents, store, config, clock.now())

    @router.get("/resources", response_model=list[InstanceResources], responses=READ,
                openapi_extra=public)
    async def resources(_: Reader) -> list[InstanceResources]:
        """Partitions and nodes each instance's backend reported (refreshed every few
        minutes by its heartbeat)."""
        rows = await asyncio.to_thread(control.instances, store, clock.now())
        return [InstanceResources(instance=r.name, alive=r.alive, resources=r.resources)
                for r in rows]

    @router.get("/costs", response_model=control.Costs, responses=READ,
                openapi_extra=public)
    async def costs(visible: Sees, weeks: Annotated[int, Query(ge=1, le=520)] = 12
                    ) -> control.Costs:
        """Core-hours per ISO week, target and PR; estimates of the next build per target
        (median and 90th percentile of its recent successful builds)."""
        return await asyncio.to_thread(control.costs, store, clock.now(), weeks,
                                       visible=visible)

    @router.get("/health", response_model=Health, responses=READ,
                openapi_extra=public)
    async def health(_: Reader) -> Health:
        """This instance: database, heartbeat, inbox lag, outbox backlog; and the fleet."""
        return await asyncio.to_thread(_health, controller, inbox, outbox)

    @router.post("/jobs/{job_id}/redo", response_model=control.ActionResult,
                 responses=_errors(400, 401, 403, 404, 409, 502))
    async def redo(principal: Actor, job_id: JobId,
                   body: Annotated[RedoIn | None, Body()] = None) -> control.ActionResult:
        """Build the job's target again, at the same commit or at the PR's current head
        (needs the ``build`` permission)."""
        repo, installation = await asyncio.to_thread(control.job_scope, store, job_id)
        await auth.must_see(principal, repo, f"there is no job {job_id}")
        await auth.authorize(principal, "build", repo, installation)
        return await controller.redo(job_id, principal.login, (body or RedoIn()).at)

    @router.post("/jobs/{job_id}/cancel", response_model=control.ActionResult,
                 responses=ACTION)
    async def cancel(principal: Actor, job_id: JobId) -> control.ActionResult:
        """Cancel a waiting or running job (needs the ``cancel`` permission)."""
        repo, installation = await asyncio.to_thread(control.job_scope, store, job_id)
        await auth.must_see(principal, repo, f"there is no job {job_id}")
        await auth.authorize(principal, "cancel", repo, installation)
        return await controller.cancel(job_id, principal.login)

    @router.post("/jobs/{job_id}/deploy", response_model=control.ActionResult,
                 responses=_errors(400, 401, 403, 404, 409, 502))
    async def deploy(principal: Actor, job_id: JobId,
                     body: Annotated[DeployIn | None, Body()] = None) -> control.ActionResult:
        """Queue a succeeded job's artifacts for deployment (``deploy``; with force,
        ``force_deploy``)."""
        force = (body or DeployIn()).force
        repo, installation = await asyncio.to_thread(control.job_scope, store, job_id)
        await auth.must_see(principal, repo, f"there is no job {job_id}")
        await auth.authorize(principal, "force_deploy" if force else "deploy", repo,
                             installation)
        return await controller.deploy(job_id, principal.login, force)

    async def _pause(principal: Principal, name: str, paused: bool) -> control.ActionResult:
        scopes = await asyncio.to_thread(control.instance_scopes, store, config)
        await auth.authorize_instance(principal, "pause", scopes)
        return await controller.set_paused(name, paused)

    @router.post("/instances/{name}/pause", response_model=control.ActionResult,
                 responses=ACTION)
    async def pause(principal: Actor, name: Name) -> control.ActionResult:
        """Stop submitting new jobs; builds are still recorded, and the PR is told."""
        return await _pause(principal, name, True)

    @router.post("/instances/{name}/resume", response_model=control.ActionResult,
                 responses=ACTION)
    async def resume(principal: Actor, name: Name) -> control.ActionResult:
        """Submit queued jobs again."""
        return await _pause(principal, name, False)

    @router.post("/instances/{name}/drain", response_model=control.ActionResult,
                 responses=ACTION)
    async def drain(principal: Actor, name: Name) -> control.ActionResult:
        """Take no new jobs and let running ones finish (needs ``pause`` on a configured
        repository); the answer says how many still run."""
        scopes = await asyncio.to_thread(control.instance_scopes, store, config)
        await auth.authorize_instance(principal, "pause", scopes)
        return await controller.drain(name)

    async def _agent(principal: Principal, name: str, verb: str) -> control.ActionResult:
        # The same permission as pausing this instance: ``pause`` on a configured repository.
        scopes = await asyncio.to_thread(control.instance_scopes, store, config)
        await auth.authorize_instance(principal, "pause", scopes)
        return await controller.set_agent(name, verb)

    @router.post("/agents/{name}/pause", response_model=control.ActionResult,
                 responses=ACTION)
    async def pause_agent(principal: Actor, name: Name) -> control.ActionResult:
        """Give the agent no new jobs; the jobs it holds go on (needs ``pause``)."""
        return await _agent(principal, name, "pause")

    @router.post("/agents/{name}/resume", response_model=control.ActionResult,
                 responses=ACTION)
    async def resume_agent(principal: Actor, name: Name) -> control.ActionResult:
        """Give the agent jobs again: ends a pause and a drain (needs ``pause``)."""
        return await _agent(principal, name, "resume")

    @router.post("/agents/{name}/drain", response_model=control.ActionResult,
                 responses=ACTION)
    async def drain_agent(principal: Actor, name: Name) -> control.ActionResult:
        """Let the agent finish the jobs it holds and give it no new ones, e.g. before
        maintenance (needs ``pause``); the answer says how many it still holds."""
        return await _agent(principal, name, "drain")

    @router.post("/agents/{name}/revoke", response_model=control.ActionResult,
                 responses=ACTION)
    async def revoke_agent(principal: Actor, name: Name) -> control.ActionResult:
        """Revoke the agent's token: it is refused from its next request on, and the jobs it
        holds are treated as those of a silent agent (needs ``pause``)."""
        return await _agent(principal, name, "revoke")

    return router


def _health(controller: Controller, inbox: Inbox, outbox: Outbox) -> Health:
    config = controller.config
    now = clock.now()
    database = True
    lag: float | None = None
    backlog: int | None = None
    rows: list[control.InstanceOut] = []
    try:
        controller.store.ping()
        lag = round(inbox.lag_seconds(now), 3)
        backlog = outbox.backlog()
        rows = control.instances(controller.store, now)
    except Exception:  # a health answer must come even when the database is down
        database = False
    me = next((r for r in rows if r.name == config.instance.name), None)
    alive = me is not None and me.alive
    ok = database and alive and (lag or 0) <= config.health.max_inbox_lag_seconds
    return Health(status="ok" if ok else "degraded", instance=config.instance.name,
                  version=__version__, database=database, alive=alive,
                  paused=bool(me and me.paused), inbox_lag_seconds=lag,
                  outbox_backlog=backlog, instances=rows, checked_at=now)
