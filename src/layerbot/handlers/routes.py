"""The composition root of handlers: one router per concern, merged here at start."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import FastAPI

from layerbot.handlers import checks, comments, pulls
from layerbot.handlers.base import Router
from layerbot.jobs.reconciler import Reconciler
from layerbot.jobs.submitter import Submitter

if TYPE_CHECKING:
    from layerbot.app import Bot


def build_router() -> Router:
    router = Router()
    for concern in (comments.router, pulls.router, checks.router):
        router.include(concern)
    return router


def add_loops(bot: Bot) -> None:
    """The job loops: submit queued jobs, reconcile active ones."""
    wake = bot.services.wake_sender
    submitter = Submitter(bot.config, bot.store, bot.backend, bot.mirrors, on_written=wake)
    reconciler = Reconciler(bot.config, bot.store, bot.backend, on_written=wake)
    bot.services.extra["submitter"] = submitter
    bot.services.extra["reconciler"] = reconciler
    # New jobs are recorded by the inbox workers: wake the submitter at once.
    previous = bot.processor.on_written

    def written() -> None:
        previous()
        submitter.wakeup.set()

    bot.processor.on_written = written
    bot.loops += [submitter.run, reconciler.run]


def add_web(bot: Bot, app: FastAPI) -> None:
    """HTTP routes beyond the webhook and health (API, dashboard) join here."""
