"""Singletons: loops that run in one replica at a time and pass to another when it dies.

Several `layerbot serve` replicas may serve one instance from one database. Most loops are
safe in each of them (inbox workers claim events one by one); some must run once per
instance: the GitHub sender (one writer per comment, in order), delivery recovery, the job
loops. Each of those runs under :func:`run_singleton`, which holds a lock in the store
(``store/locks.py``) while the loop runs:

- a replica without the lock tries to take it every third of its time to live (``ttl``);
- the holder renews it every third of ``ttl``; a replica that dies stops renewing, its lock
  runs out, and another replica takes it: within about ``ttl`` and a third of the death;
- a holder that cannot renew (another process took the lock, or the database did not
  answer while more than a third of ``ttl`` was left) stops its loop before the lock can
  run out, then seeks the lock again;
- at the replica's stop, the loop is stopped and the lock released (taken over at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import timedelta
from enum import Enum

from layerbot import clock, log, metrics
from layerbot.app.workers import Loop
from layerbot.loops import pause
from layerbot.store.locks import SingletonLocks

_log = log.get("singletons")

#: How long a stopping loop may take before it is cancelled (`Bot.run_loops` waits 10 s).
STOP_GRACE_SECONDS = 8.0


class _End(Enum):
    STOPPED = "stopped"  # the replica stops
    ENDED = "ended"  # the loop returned by itself
    CRASHED = "crashed"  # the loop raised
    LOST = "lost"  # the lock could not be renewed in time


async def run_singleton(name: str, loop: Loop, locks: SingletonLocks, stop: asyncio.Event,
                        ttl: float, *, take_from: str | None = None,
                        retry: float | None = None) -> None:
    """Run ``loop`` while this process holds lock ``name``, until ``stop`` is set.

    ``loop`` gets a stop event of its own, set when the replica stops or the lock is lost.
    A loop that returns by itself releases the lock and ends this; one that raises is
    logged and started again (after ``retry``, a third of ``ttl`` by default) wherever the
    lock goes next. ``take_from``: the holder prefix of this replica's earlier runs (dead:
    one process at a time serves a replica), whose lock the first attempt takes at once.
    """
    period = ttl / 3
    retry = period if retry is None else retry
    lease = timedelta(seconds=ttl)
    gauge = metrics.SINGLETON_HELD.labels(name=name)
    gauge.set(0)
    first = True
    with log.bound(singleton=name):
        while not stop.is_set():
            started = time.monotonic()
            try:
                got = await asyncio.to_thread(locks.try_acquire, name, lease, clock.now(),
                                              take_from if first else None)
                first = False
            except Exception as exc:  # the database is unreachable: try again later
                _log.warning("singleton lock unreachable", error=f"{type(exc).__name__}: {exc}")
                got = False
            if not got:
                await pause(stop, retry)
                continue
            gauge.set(1)
            _log.info("singleton lock taken; running the loop", holder=locks.holder)
            try:
                end = await _hold(name, loop, locks, stop, lease, started)
            except asyncio.CancelledError:
                gauge.set(0)
                await _release(name, locks)
                raise
            gauge.set(0)
            if end is _End.LOST:
                continue  # if the lock is still ours after all, it is taken back at once
            await _release(name, locks)
            if end is _End.ENDED:
                return
            if end is _End.CRASHED:
                await pause(stop, retry)


async def _hold(name: str, loop: Loop, locks: SingletonLocks, stop: asyncio.Event,
                lease: timedelta, started: float) -> _End:
    """Run the loop and renew the lock until the replica stops, the loop ends, or the
    lock may be lost; the loop has stopped when this returns."""
    ttl = lease.total_seconds()
    period = ttl / 3
    inner = asyncio.Event()
    task = asyncio.create_task(loop(inner), name=f"singleton:{name}")
    valid_until = started + ttl  # monotonic: the lock runs out no earlier than this
    next_renewal = started + period
    try:
        while True:
            if stop.is_set():
                return _End.STOPPED
            if task.done():
                if task.cancelled() or task.exception() is not None:
                    _log.error("singleton loop crashed; it will be started again",
                               exc_info=None if task.cancelled() else task.exception())
                    return _End.CRASHED
                _log.info("singleton loop ended")
                return _End.ENDED
            now = time.monotonic()
            deadline = valid_until - period  # stop the loop while a third of it is left
            if now >= deadline:
                _log.warning("singleton lock not renewed in time (database unreachable?); "
                             "stopping the loop")
                return _End.LOST
            if now < next_renewal:
                await _wait(stop, task, min(next_renewal, deadline) - now)
                continue
            begun = time.monotonic()
            try:
                ours = await asyncio.wait_for(
                    asyncio.to_thread(locks.renew, name, lease, clock.now()),
                    timeout=deadline - begun)
            except TimeoutError:
                continue  # the deadline has passed: the top of the loop says so
            except Exception as exc:
                _log.warning("singleton lock not renewed; trying again",
                             error=f"{type(exc).__name__}: {exc}")
                next_renewal = begun + period / 4
                continue
            if not ours:
                _log.warning("singleton lock taken by another process; stopping the loop")
                return _End.LOST
            valid_until = begun + ttl
            next_renewal = begun + period
    finally:
        grace = min(STOP_GRACE_SECONDS, max(0.0, valid_until - period / 2 - time.monotonic()))
        await _stop(task, inner, grace)


async def _wait(stop: asyncio.Event, task: asyncio.Task[None], seconds: float) -> None:
    """Until ``stop``, the end of ``task``, or ``seconds``."""
    waiter = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait([waiter, task], timeout=max(0.0, seconds),
                           return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiter


async def _stop(task: asyncio.Task[None], inner: asyncio.Event, grace: float) -> None:
    """Ask the loop to stop; cancel it if it has not within ``grace`` seconds."""
    inner.set()
    if not task.done():
        await asyncio.wait([task], timeout=grace)
    if not task.done():
        _log.warning("singleton loop did not stop in time; cancelled", grace=round(grace, 2))
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    elif not task.cancelled():
        task.exception()  # retrieved (logged by _hold when it mattered)


async def _release(name: str, locks: SingletonLocks) -> None:
    try:
        await asyncio.to_thread(locks.release, name)
        _log.info("singleton lock released")
    except Exception as exc:  # it runs out by itself
        _log.warning("singleton lock not released", error=f"{type(exc).__name__}: {exc}")
