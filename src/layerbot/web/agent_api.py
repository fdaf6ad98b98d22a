"""The agent protocol over HTTP: ``/agent/v1/...`` (in the OpenAPI description at
``/api/openapi.json``, tag ``agent``).

Each request carries the agent's own token (``Authorization: Bearer lba_...``) and the
protocol version it speaks (header ``Layerbot-Agent-Protocol``). A token sees only its own
agent's jobs and the deployments of those jobs: reading or reporting another agent's job or
deployment is answered 404, as if it did not exist. An agent of a protocol this server does
not speak gets 426 and a message that says which release to install.
"""

# No `from __future__ import annotations`: FastAPI reads the routes' annotations at run
# time, and ``Me`` below is local to the router's function.
import asyncio
import time
from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Header, HTTPException, Path, Request, Response

from layerbot import clock, log, metrics
from layerbot.config import Config
from layerbot.core.protocol import (
    MAX_ID,
    PREFIX,
    PROTOCOL_HEADER,
    ClaimRequest,
    ClaimResponse,
    HeartbeatRequest,
    HeartbeatResponse,
    JobSpec,
    RegisterRequest,
    RegisterResponse,
    Report,
    ReportResponse,
    UploadClaimRequest,
    UploadClaimResponse,
    UploadReport,
    UploadReportResponse,
    UploadSpec,
    refusal,
)
from layerbot.operations import agents as agentops
from layerbot.operations import leases, uploads
from layerbot.store.db import Store
from layerbot.store.models import Agent, Job

_log = log.get("agent-api")

#: A long-polling claim looks for new work this often.
CLAIM_POLL_SECONDS = 0.25

#: Ids in paths are bounded as the columns are (the fuzzing sent ids past 2**63: a 500).
JobId = Annotated[int, Path(ge=1, le=MAX_ID, description="the job's id")]
DeploymentId = Annotated[int, Path(ge=1, le=MAX_ID, description="the deployment's id")]


def agent_router(config: Config, store: Store, on_written: Callable[[], None]) -> APIRouter:
    # Every route may answer these (the token, the protocol version, a job or deployment
    # not the agent's): documented, so the OpenAPI is what agents actually get (the
    # schemathesis fuzzing found 400 and 426 undocumented).
    router = APIRouter(prefix=PREFIX, tags=["agent"], responses={
        400: {"description": "a body that is not JSON"},
        401: {"description": "no agent token, or an unknown or revoked one"},
        404: {"description": "the job or deployment is not this agent's"},
        426: {"description": "an agent protocol this control plane does not speak"}})
    # Made before the server's event loop runs: asyncio binds a semaphore to the loop that
    # first waits on it.
    claim_turns = asyncio.Semaphore(config.fleet.claims_at_once)

    async def agent_token(
        request: Request,
        protocol: Annotated[str | None, Header(alias=PROTOCOL_HEADER)] = None,
    ) -> str:
        """The sha256 of the request's agent token, from its headers alone (async: no
        thread, no store). The route looks the agent up, in its own transaction."""
        version = int(protocol) if protocol and protocol.isdigit() else None
        if why := refusal(version):
            raise HTTPException(426, why)
        auth = request.headers.get("authorization", "")
        scheme, _, secret = auth.partition(" ")
        if scheme.lower() != "bearer" or not secret:
            raise HTTPException(401, "an agent token is required: Authorization: Bearer lba_...",
                                headers={"WWW-Authenticate": "Bearer"})
        return agentops.hash_token(secret.strip())

    def current_agent(request: Request, digest: Annotated[str, Depends(agent_token)]) -> str:
        """The name of the request's agent (a read of its own; the claim reads it in its
        transaction instead)."""
        agent = agentops.authenticate_digest(store, digest)
        if agent is None:
            raise _unknown_token()
        return agent.name

    Token = Annotated[str, Depends(agent_token)]
    Me = Annotated[str, Depends(current_agent)]

    @router.post("/register", response_model=RegisterResponse)
    async def register(body: RegisterRequest, me: Me) -> RegisterResponse:
        if why := refusal(body.protocol):
            raise HTTPException(426, why)

        def work() -> RegisterResponse:
            now = clock.now()
            with store.transaction() as s:
                agent = s.get(Agent, me)
                assert agent is not None
                held = leases.register(s, config, agent, body.protocol, body.version,
                                       body.cluster, body.capabilities, now)
            return RegisterResponse(agent=me, heartbeat_seconds=config.fleet.heartbeat_seconds,
                                    lease_seconds=config.fleet.lease_seconds, jobs=held)

        _log.info("agent registered", agent=me, version=body.version, cluster=body.cluster)
        return await asyncio.to_thread(work)

    @router.post("/heartbeat", response_model=HeartbeatResponse)
    async def heartbeat(body: HeartbeatRequest, token: Token) -> Response:
        """Renew the agent's leases; authenticated in the beat's own transaction (a fleet
        beats many times a second: a transaction of its own to authenticate each beat cost
        it as much again)."""
        def work() -> HeartbeatResponse:
            with store.transaction() as s:
                done = agentops.beat(s, config, token, body.holding, body.free_slots,
                                     body.resources, clock.now())
                if done is None:
                    raise _unknown_token()  # inside the transaction: the beat is undone
                return done.response

        answer = await asyncio.to_thread(work)
        # Serialized here, once, as the claim's answer is (see there).
        return Response(answer.model_dump_json(), media_type="application/json")

    @router.post("/claim", response_model=ClaimResponse)
    async def claim(body: ClaimRequest, token: Token) -> Response:
        """Lease up to ``slots`` jobs; waits up to ``wait_seconds`` for some (long poll)."""
        started = time.monotonic()
        end = started + min(body.wait_seconds, config.fleet.claim_wait_seconds)

        def work() -> tuple[str, list[JobSpec]]:
            if store.is_sqlite:
                # A look first, so that waiting agents do not queue for SQLite's write lock
                # (PostgreSQL has none: there the claim's own candidates answer it).
                with store.read() as s:
                    me = agentops.claimant(s, config, token)
                    if me is None:
                        raise _unknown_token()
                    if not leases.work_waiting(s, [n.name for n in me.view.node_types]):
                        return me.name, []
                with store.transaction() as s:
                    return me.name, leases.claim(s, config, me.name, body.slots, clock.now())
            with store.transaction() as s:
                me = agentops.claimant(s, config, token)
                if me is None:
                    raise _unknown_token()
                jobs = leases.claim(s, config, me, body.slots, clock.now())
                if not jobs:
                    # Nothing leased, nothing to keep: a rollback ends the transaction
                    # without a commit, which the candidates' row locks alone would make
                    # PostgreSQL flush to disk (half the claims of a busy fleet are such).
                    s.rollback()
                return me.name, jobs

        while True:
            async with claim_turns:  # see FleetConfig.claims_at_once
                me, jobs = await asyncio.to_thread(work)
            if jobs or time.monotonic() >= end:
                break
            await asyncio.sleep(CLAIM_POLL_SECONDS)
        if jobs:
            metrics.AGENT_CLAIMS.labels(agent=me).inc(len(jobs))
            _log.info("jobs leased", agent=me, jobs=[j.id for j in jobs])
        # Serialized here, once: the specs were built from the store just now, and letting
        # FastAPI validate them again against the response model doubled a claim's CPU.
        return Response(ClaimResponse(jobs=jobs).model_dump_json(),
                        media_type="application/json")

    @router.get("/jobs/{job_id}", response_model=JobSpec)
    async def job(job_id: JobId, me: Me) -> JobSpec:
        def work() -> JobSpec | None:
            with store.read() as s:
                row = s.get(Job, job_id)
                if row is None or row.agent != me:
                    return None
                return leases.spec(s, row)

        spec = await asyncio.to_thread(work)
        if spec is None:
            raise HTTPException(404, f"job {job_id} is not leased to agent {me}")
        return spec

    @router.post("/jobs/{job_id}/reports", response_model=ReportResponse)
    async def report(job_id: JobId, body: Report, me: Me) -> ReportResponse:
        def work() -> leases.Applied | None:
            now = clock.now()
            with store.transaction() as s:
                row = s.get(Job, job_id)
                if row is None or row.agent != me:
                    return None  # as if it did not exist: another agent's job
                applied = leases.apply_report(s, config, me, job_id, body, now)
                if applied.changed is not None:
                    leases.report_changed(s, config, [applied.changed], now)
                return applied

        applied = await asyncio.to_thread(work)
        if applied is None:
            raise HTTPException(404, f"job {job_id} is not leased to agent {me}")
        if applied.changed is not None:
            on_written()
        return applied.response

    _upload_routes(router, config, store, on_written, current_agent)
    return router


def _unknown_token() -> HTTPException:
    return HTTPException(401, "unknown or revoked agent token",
                         headers={"WWW-Authenticate": "Bearer"})


def _upload_routes(router: APIRouter, config: Config, store: Store,
                   on_written: Callable[[], None], current_agent: Callable[..., str]) -> None:
    """The deployments of an agent's jobs: it stages them with its own ``[deploy]``."""
    Me = Annotated[str, Depends(current_agent)]

    @router.post("/uploads/claim", response_model=UploadClaimResponse)
    async def claim_uploads(body: UploadClaimRequest, me: Me) -> UploadClaimResponse:
        """Up to ``slots`` deployments of the agent's jobs to stage, after any it was given
        and does not hold (``holding``): a lost answer or a lost journal loses nothing."""
        owner = uploads.Owner(me)

        def work() -> list[UploadSpec]:
            now = clock.now()
            with store.read() as s:  # a look first: most polls find nothing
                if not uploads.waiting(s, owner, body.holding, now):
                    return []
            with store.transaction() as s:
                taken = uploads.claim(s, config, owner, body.slots, body.holding, now)
                return [uploads.spec(s, d) for d in taken]

        specs = await asyncio.to_thread(work)
        if specs:
            _log.info("uploads given", agent=me, deployments=[u.deployment_id for u in specs])
            on_written()
        return UploadClaimResponse(uploads=specs)

    @router.post("/uploads/{deployment_id}/reports", response_model=UploadReportResponse)
    async def report_upload(deployment_id: DeploymentId, body: UploadReport,
                            me: Me) -> UploadReportResponse:
        """How staging went; applied once (a copy of a report changes nothing)."""
        def work() -> uploads.Applied | None:
            with store.transaction() as s:
                return uploads.apply_report(s, config, uploads.Owner(me), deployment_id, body,
                                            clock.now())

        applied = await asyncio.to_thread(work)
        if applied is None:
            raise HTTPException(404, f"deployment {deployment_id} is not of a job of agent {me}")
        if applied.changed:
            on_written()
        return applied.response
