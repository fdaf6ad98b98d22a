"""Assembly: build every part from the configuration and run them in one process.

`layerbot serve` = the HTTP app (webhook, health, API) + background loops: the inbox
writer and workers, the outbox sender, the missed-delivery recovery, and (with a backend)
the job submitter and reconciler. Each loop stops on the same event.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from fastapi import FastAPI

from layerbot import log, metrics
from layerbot.backends import make_backend
from layerbot.backends.base import Backend
from layerbot.build.workspace import Mirrors
from layerbot.config import Config
from layerbot.github import deliveries
from layerbot.github.access import AccessChecker
from layerbot.github.client import GitHubApp, RateLimitInfo
from layerbot.github.sender import Sender
from layerbot.github.writes import Performer
from layerbot.handlers import routes
from layerbot.processing import Processor
from layerbot.store.db import Store
from layerbot.store.inbox import Inbox
from layerbot.store.outbox import Outbox
from layerbot.web.health import health_router
from layerbot.web.webhook import InboxWriter, WebhookFirst, webhook_route

_log = log.get("app")

Loop = Callable[[asyncio.Event], Coroutine[Any, Any, None]]


@dataclass
class Services:
    """Everything handlers and loops may use; adapters are reached only through here."""

    config: Config
    store: Store
    inbox: Inbox
    outbox: Outbox
    github: GitHubApp | None
    access: AccessChecker
    backend: Backend
    mirrors: Mirrors
    extra: dict[str, Any] = field(default_factory=dict)
    #: Called after writes to the outbox were committed, to wake the sender.
    wake_sender: Callable[[], None] = lambda: None


def _note_rate_limit(info: RateLimitInfo) -> None:
    metrics.RATE_LIMIT_REMAINING.labels(resource=info.resource).set(info.remaining)


class Bot:
    def __init__(self, config: Config, store: Store | None = None) -> None:
        self.config = config
        self.store = store or Store(config.store_url)
        name = config.instance.name
        self.inbox = Inbox(self.store, name)
        self.outbox = Outbox(self.store, name,
                             timedelta(seconds=config.reporting.min_edit_interval_seconds))
        self.github = (GitHubApp(config.github, on_rate_limit=_note_rate_limit)
                       if config.github.app_id and config.github.private_key else None)
        self.backend = make_backend(config)
        self.mirrors = Mirrors(config.mirrors_dir, attempts=config.build.fetch_attempts)
        self.services = Services(config, self.store, self.inbox, self.outbox, self.github,
                                 AccessChecker(self.github, config.access), self.backend,
                                 self.mirrors)
        self.sender = (Sender(self.outbox, Performer(self.github, self.outbox.object_id),
                              config.outbox) if self.github else None)
        if self.sender:
            self.services.wake_sender = self.sender.wakeup.set
        self.processor = Processor(config, self.store, self.inbox, routes.build_router(),
                                   self.services, on_written=self.services.wake_sender)
        self.writer = InboxWriter(self.inbox, on_accept=self.processor.wakeup.set)
        self.loops: list[Loop] = [self.processor.run]
        if self.sender:
            self.loops.append(self.sender.run)
        if self.github:
            github = self.github
            self.loops.append(lambda stop: deliveries.run(github, self.inbox,
                                                          config.deliveries, stop))
        routes.add_loops(self)
        #: Set by `serve` when the loops run in a worker process: is it alive?
        self.worker_alive: Callable[[], bool] | None = None

    async def run_loops(self, stop: asyncio.Event) -> None:
        """Every background loop until ``stop`` is set (the worker side of `serve`)."""
        tasks = [asyncio.create_task(loop(stop)) for loop in self.loops]
        _log.info("loops started", instance=self.config.instance.name, loops=len(tasks),
                  github=bool(self.github))
        await stop.wait()
        await asyncio.wait(tasks, timeout=10)
        if self.github:
            await self.github.close()

    def app(self, run_loops: bool = True,
            side: Callable[[], AbstractAsyncContextManager[object]] | None = None) -> FastAPI:
        """The HTTP app; with ``run_loops`` the loops run in its event loop too.

        ``side`` is entered for the app's lifetime (`serve` uses it to supervise the
        worker process that runs the loops instead).
        """
        secret = self.config.github.webhook_secret
        stop = asyncio.Event()

        @asynccontextmanager
        async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
            self.writer.start()
            loops = asyncio.create_task(self.run_loops(stop)) if run_loops else None
            async with side() if side else nullcontext():
                try:
                    yield
                finally:
                    stop.set()
                    await self.writer.stop()
                    if loops:
                        await asyncio.wait([loops], timeout=15)

        app = FastAPI(title="layerbot", version=_version(), lifespan=lifespan,
                      openapi_url="/api/openapi.json", docs_url="/api/docs", redoc_url=None)
        self.webhook = webhook_route(secret.get_secret_value().encode() if secret else None,
                                     self.writer, self.config.server.max_body_bytes)
        app.router.routes.insert(0, self.webhook)
        app.include_router(health_router(self.store, self.inbox, self.outbox,
                                         self.config.health.max_inbox_lag_seconds,
                                         self.worker_alive))
        routes.add_web(self, app)
        return app


def asgi(app: FastAPI, bot: Bot) -> WebhookFirst:
    """What `serve` runs: the app behind a front that takes /webhook by the shortest way."""
    return WebhookFirst(app, bot.webhook)


def _version() -> str:
    from layerbot import __version__

    return __version__
