"""The composition root of handlers: one router per concern, merged here at start."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import FastAPI

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
    archiver = Archiver(bot.config, bot.store, bot.mirrors)
    bot.loops += [submitter.run, reconciler.run, uploader.run, archiver.run]


def add_web(bot: Bot, app: FastAPI) -> None:
    """HTTP routes beyond the webhook and health (API, dashboard) join here."""
