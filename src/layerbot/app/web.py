"""HTTP routes beyond the webhook and health: the control center's API and dashboard."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI

from layerbot.config import Config
from layerbot.github.access import AccessChecker
from layerbot.github.client import GitHubApp
from layerbot.store.db import Store
from layerbot.store.inbox import Inbox
from layerbot.store.outbox import Outbox


def add_web(app: FastAPI, config: Config, store: Store, github: GitHubApp | None,
            access: AccessChecker, inbox: Inbox, outbox: Outbox,
            on_written: Callable[[], None]) -> None:
    """``on_written``: actions wake the loops that carry them out (submitter, sender)
    without waiting a poll."""
    # Imported here: the web stack is loaded only when an HTTP app is built.
    from fastapi.staticfiles import StaticFiles

    from layerbot.control import Controller
    from layerbot.web import dashboard
    from layerbot.web.agent_api import agent_router
    from layerbot.web.api import api_router
    from layerbot.web.auth import Auth
    from layerbot.web.security import SecurityHeaders

    controller = Controller(config, store, github, on_written=on_written)
    auth = Auth(config, store, access)
    pages = dashboard.templates()
    app.include_router(api_router(controller, auth, inbox, outbox))
    app.include_router(agent_router(config, store, on_written))
    app.include_router(auth.router())
    app.include_router(dashboard.dashboard_router(controller, auth, pages))
    app.mount("/static", StaticFiles(directory=dashboard.STATIC_DIR), name="static")
    for exc, handler in dashboard.error_handlers(pages, auth).items():
        app.add_exception_handler(exc, handler)
    app.add_middleware(SecurityHeaders, https=config.web.base_url.startswith("https://"))
