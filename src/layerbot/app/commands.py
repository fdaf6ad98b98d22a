"""The commands and routes the bot answers with: every handler module's binding and router.

A new command is a grammar entry in ``core/commands/grammar.py`` and a handler module that declares
its ``COMMAND`` binding, listed here; :class:`CommandRegistry` refuses to be built (so the
bot refuses to start) if the two disagree.
"""

from __future__ import annotations

from layerbot.handlers import (
    builds,
    cancel,
    checks,
    comments,
    deploy,
    help,
    probe,
    pulls,
    rebuild,
    show_config,
    status,
)
from layerbot.handlers.base import Router
from layerbot.handlers.registry import CommandBinding, CommandRegistry

BINDINGS: tuple[CommandBinding, ...] = (
    builds.COMMAND, help.COMMAND, show_config.COMMAND, status.COMMAND, cancel.COMMAND,
    rebuild.COMMAND, deploy.COMMAND, probe.COMMAND,
)


def build_router(registry: CommandRegistry) -> Router:
    """One router per concern, merged: comments (the commands), PR events, check runs,
    deploy triggers and ingest reports."""
    router = Router()
    for concern in (comments.router(registry), pulls.router, checks.router, deploy.router):
        router.include(concern)
    return router
