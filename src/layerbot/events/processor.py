"""Inbox workers: take events in order per pull request, run their handlers, record outcomes.

A worker claims an event (a lease in the store), runs the handlers, then in ONE
transaction applies the handlers' writes and marks the event handled. A crash anywhere
before that commit leaves the event claimed; the next start (or the lease running out)
gives it back, and it is handled again from scratch, with nothing applied twice.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import timedelta

from layerbot import clock, log, metrics
from layerbot.config import Config
from layerbot.handlers import gate
from layerbot.handlers.base import Context, Event, Router, Services
from layerbot.loops import pause
from layerbot.store.db import Store
from layerbot.store.inbox import ClaimedEvent, Inbox

_log = log.get("inbox")


def backoff(attempt: int, base: float, cap: float) -> timedelta:
    return timedelta(seconds=min(base * 2 ** (attempt - 1), cap))


class Processor:
    def __init__(self, config: Config, store: Store, inbox: Inbox, router: Router,
                 services: Services, on_written: Callable[[], None] = lambda: None) -> None:
        self.config = config
        self.store = store
        self.inbox = inbox
        self.router = router
        self.services = services
        self.on_written = on_written
        self.owner = f"{config.instance.name}:{uuid.uuid4().hex[:12]}"
        self.wakeup = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        given_back = await asyncio.to_thread(self.inbox.recover, self.owner, clock.now())
        if given_back:
            _log.info("events of an earlier run given back for handling", count=given_back)
        workers = [asyncio.create_task(self._worker(stop), name=f"inbox-worker-{i}")
                   for i in range(self.config.inbox.workers)]
        await stop.wait()
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)

    async def _worker(self, stop: asyncio.Event) -> None:
        lease = timedelta(seconds=self.config.inbox.lease_seconds)
        while not stop.is_set():
            claimed = await asyncio.to_thread(self.inbox.claim, self.owner, clock.now(), lease)
            if not claimed:
                await pause(stop, 0.5, self.wakeup)
                continue
            for item in claimed:
                await self.process(item)
            self.wakeup.set()  # the next event of the same PR may be free now

    async def process(self, item: ClaimedEvent) -> None:
        event = Event(item.id, item.delivery_id, item.event, item.action, item.payload,
                      item.installation_id, item.attempts)
        with log.bound(delivery_id=event.delivery_id, github_event=event.name,
                       action=event.action):
            handlers = self.router.handlers_for(event.name, event.action)
            ctx = Context(self.config, clock.now(), event, self.services)
            refusal = gate.admit(event, ctx)
            if refusal is not None:  # not a repository this bot serves
                await asyncio.to_thread(self._commit, ctx, "ignored", refusal)
                metrics.EVENTS.labels(event=event.name, outcome="ignored").inc()
                return
            try:
                outcomes = [await handler(event, ctx) for handler in handlers]
            except Exception as exc:
                await self._failed(event, exc)
                return
            done = [o for o in outcomes if o]
            status = "handled" if done else "ignored"
            outcome = "; ".join(done) or "no handler acted on it"
            await asyncio.to_thread(self._commit, ctx, status, outcome)
            metrics.EVENTS.labels(event=event.name, outcome=status).inc()
            _log.info("event " + status, outcome=outcome)
            if ctx.writes:
                self.on_written()

    def _commit(self, ctx: Context, status: str, outcome: str) -> None:
        with self.store.transaction() as session:
            for write in ctx.writes:
                write(session)
            self.inbox.finish(session, ctx.event.id, status, outcome, clock.now())

    async def _failed(self, event: Event, exc: Exception) -> None:
        cfg = self.config.inbox
        error = f"{type(exc).__name__}: {exc}"
        retry = event.attempt < cfg.max_attempts
        at = clock.now() + backoff(event.attempt, cfg.backoff_seconds,
                                   cfg.backoff_max_seconds) if retry else None
        _log.error("handler failed", error=error, attempt=event.attempt,
                   retry_at=at.isoformat() if at else None, exc_info=not retry)
        metrics.EVENTS.labels(event=event.name, outcome="retry" if retry else "failed").inc()
        await asyncio.to_thread(self.inbox.fail, event.id, error, clock.now(), at)
