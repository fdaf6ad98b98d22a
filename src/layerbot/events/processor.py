"""Inbox workers: take events in order per pull request, run their handlers, record outcomes.

A worker claims an event (a lease in the store, renewed while this process lives), runs
the handlers, then in ONE transaction applies the handlers' writes and marks the event
handled, if the claim still holds. A crash anywhere before that commit leaves the event
claimed; the next start of this replica (or, in any replica, the lease running out) gives
it back, and it is handled again from scratch, with nothing applied twice. Several
replicas may run workers on one inbox: a claim is taken by one of them only.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import timedelta

from layerbot import clock, log, metrics
from layerbot.config import Config
from layerbot.github.client import GitHubError
from layerbot.github.sender import rate_limited_until
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
        #: Who claims events: ``replica/random``. The replica's prefix is shared by its
        #: earlier runs (one at a time), whose claims are given back at this run's start.
        self.replica_prefix = f"{config.replica_id}/"
        self.owner = f"{self.replica_prefix}{uuid.uuid4().hex[:12]}"
        self.wakeup = asyncio.Event()
        #: Events this process is handling now: their claims are renewed.
        self._working: set[int] = set()

    async def run(self, stop: asyncio.Event) -> None:
        given_back = await asyncio.to_thread(self.inbox.recover, self.owner, clock.now(),
                                             self.replica_prefix)
        if given_back:
            _log.info("events of an earlier run given back for handling", count=given_back)
        workers = [asyncio.create_task(self._worker(stop), name=f"inbox-worker-{i}")
                   for i in range(self.config.inbox.workers)]
        workers.append(asyncio.create_task(self._keep_claims(stop), name="inbox-claims"))
        await stop.wait()
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)

    async def _keep_claims(self, stop: asyncio.Event) -> None:
        """Renew the claims of the events being handled here, and give back those that ran
        out (their worker died, in this replica or another), every third of the lease."""
        lease = timedelta(seconds=self.config.inbox.lease_seconds)
        while not stop.is_set():
            await pause(stop, lease.total_seconds() / 3)
            if stop.is_set():
                return
            try:
                await asyncio.to_thread(self.inbox.renew_claims, self.owner,
                                        sorted(self._working), clock.now(), lease)
                given_back = await asyncio.to_thread(self.inbox.recover, self.owner,
                                                     clock.now())
            except Exception as exc:  # the database may be unreachable for a while
                _log.warning("inbox claims not renewed", error=f"{type(exc).__name__}: {exc}")
                continue
            if given_back:
                _log.warning("events of a worker that stopped renewing given back",
                             count=given_back)
                self.wakeup.set()

    async def _worker(self, stop: asyncio.Event) -> None:
        lease = timedelta(seconds=self.config.inbox.lease_seconds)
        while not stop.is_set():
            try:
                claimed = await asyncio.to_thread(self.inbox.claim, self.owner, clock.now(),
                                                  lease)
            except Exception as exc:  # the database may be unreachable for a while
                _log.warning("inbox claim failed", error=f"{type(exc).__name__}: {exc}")
                await pause(stop, 1.0)
                continue
            if not claimed:
                await pause(stop, 0.5, self.wakeup)
                continue
            for item in claimed:
                self._working.add(item.id)
                try:
                    await self.process(item)
                except Exception as exc:  # committing failed: a failed attempt as well
                    with log.bound(delivery_id=item.delivery_id):
                        await self._failed(_event(item), exc)
                finally:
                    self._working.discard(item.id)
            self.wakeup.set()  # the next event of the same PR may be free now

    async def process(self, item: ClaimedEvent) -> None:
        event = _event(item)
        with log.bound(delivery_id=event.delivery_id, github_event=event.name,
                       action=event.action):
            handlers = self.router.handlers_for(event.name, event.action)
            ctx = Context(self.config, clock.now(), event, self.services)
            refusal = gate.admit(event, ctx)
            if refusal is not None:  # not a repository this bot serves
                if await asyncio.to_thread(self._commit, ctx, "ignored", refusal):
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
            if not await asyncio.to_thread(self._commit, ctx, status, outcome):
                return
            metrics.EVENTS.labels(event=event.name, outcome=status).inc()
            _log.info("event " + status, outcome=outcome)
            if ctx.writes:
                self.on_written()

    def _commit(self, ctx: Context, status: str, outcome: str) -> bool:
        """Apply the handler's writes and the outcome, if the claim still holds (False:
        the event went to another worker, which handles it from scratch; nothing here is
        applied)."""
        try:
            with self.store.transaction() as session:
                for write in ctx.writes:
                    write(session)
                if not self.inbox.finish(session, ctx.event.id, status, outcome, clock.now(),
                                         owner=self.owner, attempt=ctx.event.attempt):
                    raise _ClaimLost
        except _ClaimLost:
            _log.warning("claim ran out while handling; the event went to another worker "
                         "and this outcome was dropped")
            return False
        return True

    async def _failed(self, event: Event, exc: Exception) -> None:
        cfg = self.config.inbox
        error = f"{type(exc).__name__}: {exc}"
        now = clock.now()
        # GitHub's rate limit is waited out, whatever the attempt: the event is fine, the
        # installation is out of requests until the reset (the soak's hour ran into it).
        limited = rate_limited_until(exc, now) if isinstance(exc, GitHubError) else None
        retry = limited is not None or event.attempt < cfg.max_attempts
        at = limited or (now + backoff(event.attempt, cfg.backoff_seconds,
                                       cfg.backoff_max_seconds) if retry else None)
        _log.error("handler failed", error=error, attempt=event.attempt,
                   retry_at=at.isoformat() if at else None, exc_info=not retry)
        metrics.EVENTS.labels(event=event.name, outcome="retry" if retry else "failed").inc()
        try:
            await asyncio.to_thread(self.inbox.fail, event.id, error, clock.now(), at,
                                    self.owner, event.attempt)
        except Exception as store_exc:  # unreachable store: the claim runs out instead
            _log.warning("failed attempt not recorded; the event comes back when its claim "
                         "runs out", error=f"{type(store_exc).__name__}: {store_exc}")


def _event(item: ClaimedEvent) -> Event:
    return Event(item.id, item.delivery_id, item.event, item.action, item.payload,
                 item.installation_id, item.attempts)


class _ClaimLost(Exception):
    """The event's claim ran out before its outcome was committed: roll back."""
