"""The bot: build every part from the configuration and run them in one process.

`layerbot serve` = the HTTP app (webhook, health, API) + background loops: the inbox
writer and workers, the outbox sender, the missed-delivery recovery, and (with a backend)
the job submitter and reconciler. Each loop stops on the same event. Several replicas may
serve one instance from one database: the loops that must run once per instance run as
singletons (``app/singletons.py``), in whichever replica holds their lock.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from datetime import timedelta

from fastapi import FastAPI

from layerbot import clock, log, metrics
from layerbot.app.commands import BINDINGS, build_router
from layerbot.app.singletons import run_singleton
from layerbot.app.web import add_web
from layerbot.app.workers import Loop, make_workers
from layerbot.backends import make_backend
from layerbot.build.workspace import Mirrors
from layerbot.config import Config
from layerbot.events.processor import Processor
from layerbot.github import deliveries
from layerbot.github.access import AccessChecker
from layerbot.github.client import GitHubApp, RateLimitInfo
from layerbot.github.sender import Sender
from layerbot.github.writes import Performer
from layerbot.handlers.base import Services
from layerbot.handlers.registry import CommandBinding, CommandRegistry
from layerbot.operations import leases
from layerbot.store.db import Store
from layerbot.store.inbox import Inbox
from layerbot.store.locks import SingletonLocks, holder_prefix, new_holder
from layerbot.store.outbox import Outbox
from layerbot.web.health import health_router
from layerbot.web.webhook import InboxWriter, WebhookFirst, webhook_route

_log = log.get("app")


def _note_rate_limit(info: RateLimitInfo) -> None:
    metrics.RATE_LIMIT_REMAINING.labels(resource=info.resource).set(info.remaining)


class Bot:
    def __init__(self, config: Config, store: Store | None = None,
                 commands: Iterable[CommandBinding] = BINDINGS) -> None:
        """``commands``: the handlers of the grammar's commands; :class:`RegistryError`
        (before anything is started) if a command has none, or a handler no command."""
        self.commands = CommandRegistry(commands)
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
        self.access = AccessChecker(self.github, config.access)
        self.services = Services(self.store, self.inbox, self.github, self.access,
                                 self.backend)
        self.sender = (Sender(self.outbox, Performer(self.github, self.outbox.object_id),
                              config.outbox) if self.github else None)
        #: Called after writes to the outbox were committed, to wake the sender.
        self.wake_sender: Callable[[], None] = (self.sender.wakeup.set if self.sender
                                                else lambda: None)
        self.workers = make_workers(config, self.store, self.backend, self.mirrors,
                                    self.wake_sender)
        self.processor = Processor(config, self.store, self.inbox,
                                   build_router(self.commands), self.services,
                                   on_written=self._written)
        self.writer = InboxWriter(self.inbox, on_accept=self.processor.wakeup.set)
        #: The loops every replica runs.
        self.loops: list[Loop] = [self.processor.run, *self.workers.loops]
        #: The loops one replica of the instance runs at a time, by lock name: each runs
        #: where its lock is held, and passes to another replica when that one dies
        #: (``app/singletons.py``).
        self.singletons: list[tuple[str, Loop]] = []
        if self.sender:
            # The sender starts by taking back messages left 'sending': right only while
            # no other replica sends, which its lock ensures.
            self.singletons.append(("github-sender", self.sender.run))
        if self.github:
            github = self.github
            self.singletons.append(("delivery-recovery", lambda stop: deliveries.run(
                github, self.inbox, config.deliveries, stop)))
        self.singletons += self.workers.singletons
        self.replica = config.replica_id
        self.locks = SingletonLocks(self.store, name, new_holder(self.replica))
        #: Set by `serve` when the loops run in a worker process: is it alive?
        self.worker_alive: Callable[[], bool] | None = None

    def singletons_held(self) -> dict[str, bool]:
        """Which singleton loops a process of this replica holds now, from the store."""
        prefix, now = holder_prefix(self.replica), clock.now()
        held = self.locks.held_all([name for name, _ in self.singletons])
        return {name: name in held and held[name].holder.startswith(prefix)
                and held[name].expires_at > now for name, _ in self.singletons}

    def _written(self) -> None:
        """Handlers recorded writes: reports for the sender, and perhaps new jobs for the
        submitter or deployments for the built-in agent's uploads (wake them at once)."""
        self.wake_sender()
        self.workers.wake()

    async def run_loops(self, stop: asyncio.Event) -> None:
        """Every background loop until ``stop`` is set (the worker side of `serve`)."""
        tasks = [asyncio.create_task(loop(stop)) for loop in self.loops]
        ttl = self.config.server.singleton_ttl_seconds
        earlier_runs = holder_prefix(self.replica)
        tasks += [asyncio.create_task(run_singleton(name, loop, self.locks, stop, ttl,
                                                    take_from=earlier_runs),
                                      name=f"singleton-{name}")
                  for name, loop in self.singletons]
        _log.info("loops started", instance=self.config.instance.name, loops=len(tasks),
                  singletons=[name for name, _ in self.singletons], replica=self.replica,
                  github=bool(self.github))
        await stop.wait()
        await asyncio.wait(tasks, timeout=10)
        if self.github:
            await self.github.close()

    def _warm(self) -> None:
        """The agent protocol's statements compiled before the first agent asks
        (``leases.warm``); a failure only leaves them to be compiled on first use."""
        try:
            with self.store.transaction() as s:
                leases.warm(s, self.config)
        except Exception as exc:  # an optimisation must not stop the start
            _log.warning("agent statements not warmed", error=str(exc))

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
            await asyncio.to_thread(self._warm)
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
                                         self.worker_alive,
                                         None if run_loops else self.singletons_held))
        add_web(app, self.config, self.store, self.github, self.access, self.inbox,
                self.outbox, on_written=lambda: self.processor.on_written())
        return app


def asgi(app: FastAPI, bot: Bot) -> WebhookFirst:
    """What `serve` runs: the app behind a front that takes /webhook by the shortest way."""
    return WebhookFirst(app, bot.webhook)


def _version() -> str:
    from layerbot import __version__

    return __version__
