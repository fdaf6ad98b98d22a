"""The composition root of handlers: one router per concern, merged here at start."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import FastAPI

from layerbot import fleet
from layerbot.deploy.service import Uploader
from layerbot.handlers import checks, comments, deploy, pulls
from layerbot.handlers.base import Router
from layerbot.jobs.archiver import Archiver
from layerbot.jobs.reconciler import Reconciler
from layerbot.jobs.submitter import Submitter

if TYPE_CHECKING:
    from layerbot.app import Bot


def build_router() -> Router:
    router = Router()
    for concern in (comments.router, pulls.router, checks.router, deploy.router):
        router.include(concern)
    return router


def add_loops(bot: Bot) -> None:
    """The job loops: submit queued jobs, reconcile active ones."""
    wake = bot.services.wake_sender
    submitter = Submitter(bot.config, bot.store, bot.backend, bot.mirrors, on_written=wake)
    reconciler = Reconciler(bot.config, bot.store, bot.backend, on_written=wake)
    bot.services.extra["submitter"] = submitter
    bot.services.extra["reconciler"] = reconciler
    uploader = Uploader(bot.config, bot.store, on_written=wake)
    bot.services.extra["uploader"] = uploader
    # New jobs are recorded by the inbox workers: wake the submitter at once.
    previous = bot.processor.on_written

    def written() -> None:
        previous()
        submitter.wakeup.set()
        uploader.wakeup.set()  # and the uploader: deployments are recorded there too

    bot.processor.on_written = written
    archiver = Archiver(bot.config, bot.store, bot.mirrors, job_user=bot.backend.job_user)
    bot.loops += [submitter.run, reconciler.run, uploader.run, archiver.run]
    # The fleet heartbeat: this instance's row in `instances` (alive, version, resources).
    heartbeat = fleet.Heartbeat(bot.config, bot.store, bot.backend)
    bot.services.extra["heartbeat"] = heartbeat
    bot.loops.append(heartbeat.run)


def add_web(bot: Bot, app: FastAPI) -> None:
    """HTTP routes beyond the webhook and health (API, dashboard) join here."""
    from fastapi.staticfiles import StaticFiles

    from layerbot.control import Controller
    from layerbot.web import dashboard
    from layerbot.web.api import api_router
    from layerbot.web.auth import Auth
    from layerbot.web.security import SecurityHeaders

    # Actions wake the loops that carry them out (submitter, sender) without waiting a poll.
    controller = Controller(bot.config, bot.store, bot.github,
                            on_written=lambda: bot.processor.on_written())
    auth = Auth(bot.config, bot.store, bot.services.access)
    pages = dashboard.templates()
    app.include_router(api_router(controller, auth, bot.inbox, bot.outbox))
    app.include_router(auth.router())
    app.include_router(dashboard.dashboard_router(controller, auth, pages))
    app.mount("/static", StaticFiles(directory=dashboard.STATIC_DIR), name="static")
    for exc, handler in dashboard.error_handlers(pages, auth).items():
        app.add_exception_handler(exc, handler)
    app.add_middleware(SecurityHeaders, https=bot.config.web.base_url.startswith("https://"))
