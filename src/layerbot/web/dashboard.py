"""The dashboard: server-rendered pages (Jinja2) over the same operations as the API.

Every page works without JavaScript; static/live.js only refreshes the parts that move
(a running job's state and log) in place. Actions are plain forms with a CSRF token that
answer with a redirect back to the page (post/redirect/get), so reloading never repeats them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from itsdangerous import BadSignature, URLSafeSerializer
from starlette.exceptions import HTTPException as StarletteHTTPException

from layerbot import clock, control
from layerbot.control import ControlError, Controller
from layerbot.core.jobs import JobState
from layerbot.web.auth import CSRF_FIELD, Auth, AuthError, Principal
from layerbot.web.pipeline_graph import layout

HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"
FLASH_COOKIE = "layerbot_flash"
STATES = [s.value for s in JobState]


def templates() -> Jinja2Templates:
    t = Jinja2Templates(directory=str(HERE / "templates"))
    t.env.filters.update(ago=ago, duration=duration, hours=hours, short=short_time)
    t.env.globals.update(states=STATES, terminal=lambda s: JobState(s).terminal)
    return t


# --- formatting -------------------------------------------------------------------------------


def ago(moment: datetime | None, now: datetime | None = None) -> str:
    if moment is None:
        return "–"
    seconds = ((now or clock.now()) - moment).total_seconds()
    if seconds < 0:
        return "just now"
    return duration(seconds) + " ago"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    s = int(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def hours(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:,.2f}" if value >= 0.01 or value == 0 else f"{value:.4f}"


def short_time(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC") if moment else "–"


# --- charts -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bar:
    label: str
    value: float
    x: float
    y: float
    width: float
    height: float


@dataclass(frozen=True)
class Chart:
    bars: list[Bar]
    width: int
    height: int
    maximum: float


def bar_chart(rows: list[control.CostRow], width: int = 640, height: int = 220) -> Chart:
    """Bar geometry for an inline SVG (drawn here, so the page needs no chart library)."""
    top, bottom = 16, 40
    maximum = max((r.core_hours for r in rows), default=0.0) or 1.0
    n = max(len(rows), 1)
    slot = width / n
    bars = []
    for i, r in enumerate(rows):
        h = (height - top - bottom) * r.core_hours / maximum
        bars.append(Bar(r.key, r.core_hours, i * slot + slot * 0.1, height - bottom - h,
                        slot * 0.8, h))
    return Chart(bars, width, height, maximum)


# --- pages ------------------------------------------------------------------------------------


def dashboard_router(controller: Controller, auth: Auth,
                     pages: Jinja2Templates | None = None) -> APIRouter:
    store, config = controller.store, controller.config
    tpl = pages or templates()
    flashes = URLSafeSerializer(auth.key, salt="layerbot-flash")
    router = APIRouter(include_in_schema=False)

    def render(request: Request, name: str, who: Principal, status: int = 200,
               **context: Any) -> HTMLResponse:
        flash = None
        raw = request.cookies.get(FLASH_COOKIE)
        if raw:
            try:
                flash = flashes.loads(raw)
            except BadSignature:
                flash = None
        response = tpl.TemplateResponse(request, name, {
            "who": who, "instance": config.instance.name, "flash": flash, "now": clock.now(),
            "login_enabled": bool(config.web.oauth_client_id), "csrf_field": CSRF_FIELD,
            **context}, status_code=status)
        if raw:
            response.delete_cookie(FLASH_COOKIE)
        response.headers["cache-control"] = "no-store"
        return response

    async def reader(request: Request) -> Principal:
        who = await auth.principal(request)
        auth.may_read(who)
        return who

    async def seen(request: Request) -> tuple[Principal, control.Visible]:
        """Who asks, and the repositories they may see (private ones need read access)."""
        who = await reader(request)
        return who, await auth.readable(who)

    @router.get("/", response_class=HTMLResponse)
    async def overview(request: Request) -> Response:
        who, visible = await seen(request)
        data = await asyncio.to_thread(control.overview, store, clock.now(), visible=visible,
                                       config=config)
        return render(request, "overview.html", who, data=data)

    @router.get("/jobs", response_class=HTMLResponse)
    async def jobs(request: Request, state: str = "", target: str = "", repo: str = "",
                   pr: str = "", instance: str = "", agent: str = "", page: int = 1
                   ) -> Response:
        who, visible = await seen(request)
        states = [s for s in state.split(",") if s in STATES]
        number = int(pr) if pr.isdigit() and int(pr) < 2**31 else None
        page = max(1, min(page, 10**6))
        limit = 50
        data = await asyncio.to_thread(
            control.list_jobs, store, state=states, target=target[:200] or None,
            repo=repo[:200] or None, pr=number, instance=instance[:200] or None, limit=limit,
            offset=(page - 1) * limit, visible=visible, agent=agent[:200] or None)
        filters = {"state": ",".join(states), "target": target, "repo": repo,
                   "pr": str(number) if number is not None else "", "instance": instance,
                   "agent": agent}
        query = "&".join(f"{k}={quote(v)}" for k, v in filters.items() if v)
        return render(request, "jobs.html", who, data=data, filters=filters, page=page,
                      pages=max(1, -(-data.total // limit)), query=query)

    @router.get("/jobs/{job_id}", response_class=HTMLResponse)
    async def job(request: Request, job_id: int) -> Response:
        who, visible = await seen(request)
        data = await asyncio.to_thread(control.job_detail, store, _id(job_id), 200, visible)
        # A plan job's page shows its pipeline; a step's page links to it.
        pipeline = await asyncio.to_thread(control.pipeline_of, store, job_id, clock.now(),
                                           visible)
        graph = layout(pipeline) if pipeline and pipeline.plan_job_id == job_id else None
        return render(request, "job.html", who, data=data, pipeline=pipeline, graph=graph)

    @router.get("/jobs/{job_id}/live", response_class=HTMLResponse)
    async def job_live(request: Request, job_id: int) -> Response:
        """The moving part of the job page, polled by static/live.js while the job runs."""
        who, visible = await seen(request)
        data = await asyncio.to_thread(control.job_detail, store, _id(job_id), 200, visible)
        response = render(request, "job_live.html", who, data=data)
        if JobState(data.job.state).terminal:
            response.headers["x-live-done"] = "1"
        return response

    @router.get("/pulls", response_class=HTMLResponse)
    async def pulls(request: Request, page: int = 1) -> Response:
        who, visible = await seen(request)
        page = max(1, min(page, 10**6))
        data = await asyncio.to_thread(control.list_pulls, store, limit=50,
                                       offset=(page - 1) * 50, visible=visible)
        return render(request, "pulls.html", who, data=data, page=page,
                      pages=max(1, -(-data.total // 50)))

    @router.get("/pulls/{owner}/{name}/{number}", response_class=HTMLResponse)
    async def pull(request: Request, owner: str, name: str, number: int) -> Response:
        who, visible = await seen(request)
        data = await asyncio.to_thread(control.pull_detail, store, f"{owner}/{name}",
                                       _id(number), visible)
        return render(request, "pull.html", who, data=data)

    @router.get("/costs", response_class=HTMLResponse)
    async def costs(request: Request, weeks: int = 12) -> Response:
        who, visible = await seen(request)
        weeks = max(1, min(weeks, 520))
        data = await asyncio.to_thread(control.costs, store, clock.now(), weeks,
                                       visible=visible)
        return render(request, "costs.html", who, data=data, weeks=weeks,
                      week_chart=bar_chart(data.by_week),
                      target_chart=bar_chart(data.by_target[:12]))

    async def may_pause(who: Principal) -> bool:
        """Whether ``who`` may pause, resume and drain (this instance, and the agents):
        the buttons are shown only to them."""
        if who.anonymous:
            return False
        scopes = await asyncio.to_thread(control.instance_scopes, store, config)
        try:
            await auth.authorize_instance(who, "pause", scopes)
        except AuthError:
            return False
        return True

    @router.get("/agents", response_class=HTMLResponse)
    async def agents(request: Request) -> Response:
        who = await reader(request)
        data = await asyncio.to_thread(control.agents, store, config, clock.now())
        return render(request, "agents.html", who, agents=data,
                      counts=control.agent_counts(data), may_pause=await may_pause(who))

    @router.get("/resources", response_class=HTMLResponse)
    async def resources(request: Request) -> Response:
        who = await reader(request)
        data = await asyncio.to_thread(control.instances, store, clock.now())
        return render(request, "resources.html", who, instances=data)

    # --- actions ---

    async def act(request: Request, csrf: str, back: str, action: str, scope: Any,
                  do: Callable[[Principal], Awaitable[control.ActionResult]],
                  goto: Callable[[control.ActionResult], str] | None = None) -> Response:
        who = await auth.principal(request)
        if who.anonymous:
            return RedirectResponse(f"/login?next={quote(back)}", 303)
        auth.check_csrf(who, csrf)
        scoped = await asyncio.to_thread(*scope)
        if isinstance(scoped, list):  # instance-wide: the configured repositories
            await auth.authorize_instance(who, action, scoped)
        else:
            await auth.must_see(who, scoped[0], f"there is no job {scope[-1]}")
            await auth.authorize(who, action, *scoped)
        result = await do(who)
        response = RedirectResponse(goto(result) if goto else back, 303)
        response.set_cookie(FLASH_COOKIE, flashes.dumps(result.message), max_age=60,
                            httponly=True, samesite="lax", secure=auth.secure)
        return response

    @router.post("/jobs/{job_id}/redo")
    async def redo(request: Request, job_id: int, csrf: str = Form(""),
                   at: str = Form("same")) -> Response:
        # Off to the new job's page, to watch it move through its states.
        return await act(request, csrf, f"/jobs/{job_id}", "build",
                         (control.job_scope, store, _id(job_id)),
                         lambda who: controller.redo(_id(job_id), who.login, at),
                         goto=lambda r: f"/jobs/{r.jobs[0]}" if r.jobs else f"/jobs/{job_id}")

    @router.post("/jobs/{job_id}/cancel")
    async def cancel(request: Request, job_id: int, csrf: str = Form("")) -> Response:
        return await act(request, csrf, f"/jobs/{job_id}", "cancel",
                         (control.job_scope, store, _id(job_id)),
                         lambda who: controller.cancel(_id(job_id), who.login))

    @router.post("/jobs/{job_id}/deploy")
    async def deploy(request: Request, job_id: int, csrf: str = Form("")) -> Response:
        return await act(request, csrf, f"/jobs/{job_id}", "deploy",
                         (control.job_scope, store, _id(job_id)),
                         lambda who: controller.deploy(_id(job_id), who.login))

    @router.post("/instances/{name}/{verb}")
    async def pause(request: Request, name: str, verb: str, csrf: str = Form("")) -> Response:
        if verb not in ("pause", "resume", "drain"):
            raise ControlError(404, f"instances can be paused, resumed or drained, not "
                                    f"{verb!r}")
        return await act(request, csrf, "/", "pause", (control.instance_scopes, store, config),
                         lambda who: controller.drain(name) if verb == "drain"
                         else controller.set_paused(name, verb == "pause"))

    @router.post("/agents/{name}/{verb}")
    async def agent_action(request: Request, name: str, verb: str, csrf: str = Form("")
                           ) -> Response:
        if verb not in control.AGENT_VERBS:
            raise ControlError(404, f"agents can be paused, resumed, drained or revoked, "
                                    f"not {verb!r}")
        return await act(request, csrf, "/agents", "pause",
                         (control.instance_scopes, store, config),
                         lambda who: controller.set_agent(name, verb))

    return router


def _id(value: int) -> int:
    """Ids beyond the store's integers name nothing (and would overflow PostgreSQL)."""
    if not 1 <= value < 2**31:
        raise ControlError(404, f"there is no {value}")
    return value


#: Paths that programs call (the REST API, the agent protocol): errors there are JSON.
MACHINE_PATHS = ("/api", "/agent/")


def error_handlers(pages: Jinja2Templates, auth: Auth) -> dict[Any, Any]:
    """Errors as JSON under /api, as a page (or a redirect to log in) elsewhere."""
    from fastapi.responses import JSONResponse

    def answer(request: Request, status: int, message: str) -> Response:
        if request.url.path.startswith(MACHINE_PATHS):
            headers = {"www-authenticate": "Bearer"} if status == 401 else None
            return JSONResponse({"detail": message}, status_code=status, headers=headers)
        if status == 401:
            return RedirectResponse(f"/login?next={quote(request.url.path)}", 303)
        who = auth.session(request)
        return pages.TemplateResponse(request, "error.html", {
            "who": who, "status": status, "message": message, "flash": None,
            "instance": auth.config.instance.name, "csrf_field": CSRF_FIELD,
            "login_enabled": bool(auth.web.oauth_client_id), "now": clock.now()},
            status_code=status)

    async def on_auth(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, AuthError | ControlError)
        return answer(request, exc.status, exc.message)

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if request.url.path.startswith(MACHINE_PATHS) or exc.status_code < 400:
            from fastapi.exception_handlers import http_exception_handler

            return await http_exception_handler(request, exc)
        return answer(request, exc.status_code, str(exc.detail))

    return {AuthError: on_auth, ControlError: on_auth, StarletteHTTPException: on_http}


__all__ = ["STATIC_DIR", "dashboard_router", "error_handlers", "templates"]
