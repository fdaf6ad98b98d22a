"""The composition root of handlers: one router per concern, merged here at start."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import FastAPI

from layerbot.handlers import comments
from layerbot.handlers.base import Router

if TYPE_CHECKING:
    from layerbot.app import Bot


def build_router() -> Router:
    router = Router()
    router.include(comments.router)
    return router


def add_loops(bot: Bot) -> None:
    """Background loops that belong to handled concerns (jobs, deploy) join here."""


def add_web(bot: Bot, app: FastAPI) -> None:
    """HTTP routes beyond the webhook and health (API, dashboard) join here."""
