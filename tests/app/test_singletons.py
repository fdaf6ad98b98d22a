"""Singleton loops: one runner at a time; the lock passes on when its holder stops or dies,
and a holder that cannot renew stops its loop before the lock can run out."""

from __future__ import annotations

import asyncio
import fcntl
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from layerbot import clock
from layerbot.app.singletons import run_singleton
from layerbot.store.db import Store
from layerbot.store.locks import SingletonLocks

TTL = 0.6  # renewals and attempts every 0.2 s


class Runs:
    """What the loops did: who ran when, and whether two ever ran at once."""

    def __init__(self) -> None:
        self.running: set[str] = set()
        self.started: list[tuple[str, float]] = []
        self.stopped: list[tuple[str, float]] = []
        self.overlaps = 0

    def loop(self, who: str) -> Callable[[asyncio.Event], object]:
        async def run(stop: asyncio.Event) -> None:
            if self.running:
                self.overlaps += 1
            self.running.add(who)
            self.started.append((who, time.monotonic()))
            try:
                await stop.wait()
            finally:
                self.running.discard(who)
                self.stopped.append((who, time.monotonic()))
        return run

    def who_started(self) -> list[str]:
        return [who for who, _ in self.started]


async def until(predicate: Callable[[], bool], timeout: float) -> float:
    """Seconds until ``predicate`` holds; fails after ``timeout``."""
    began = time.monotonic()
    while not predicate():
        assert time.monotonic() - began < timeout, "timed out"
        await asyncio.sleep(0.01)
    return time.monotonic() - began


def test_one_runner_at_a_time_and_the_other_takes_over_when_it_stops(
        store_url: str) -> None:
    async def scenario() -> None:
        runs = Runs()
        stops = {who: asyncio.Event() for who in "ab"}
        locks = {who: SingletonLocks(Store(store_url), "i", f"{who}/1/x") for who in "ab"}
        tasks = {who: asyncio.create_task(run_singleton(
            "sender", runs.loop(who), locks[who], stops[who], TTL)) for who in "ab"}
        await until(lambda: len(runs.started) == 1, 5)
        await asyncio.sleep(TTL * 2)  # several renewals and attempts later: still one
        assert len(runs.started) == 1 and runs.overlaps == 0
        (holder,) = runs.who_started()
        other = "b" if holder == "a" else "a"
        stops[holder].set()  # a normal stop: released, taken at the other's next attempt
        await tasks[holder]
        assert await until(lambda: len(runs.started) == 2, 5) < TTL / 3 + 0.3
        assert runs.who_started() == [holder, other] and runs.overlaps == 0
        stops[other].set()
        await tasks[other]
        assert locks[other].held("sender") is None  # released at the stop

    asyncio.run(scenario())


DEAD_HOLDER = """
import asyncio, sys, pathlib
from layerbot.app.singletons import run_singleton
from layerbot.store.db import Store
from layerbot.store.locks import SingletonLocks

url, marker, ttl = sys.argv[1], pathlib.Path(sys.argv[2]), float(sys.argv[3])

async def loop(stop):
    marker.write_text("running")
    await stop.wait()

async def main():
    locks = SingletonLocks(Store(url, migrate=False), "i", "doomed/1/x")
    await run_singleton("sender", loop, locks, asyncio.Event(), ttl)

asyncio.run(main())
"""


def test_a_holder_that_dies_is_taken_over_once_its_lock_runs_out(store_url: str,
                                                                 tmp_path: Path) -> None:
    ttl = 1.5
    store = Store(store_url)
    marker = tmp_path / "running"
    doomed = subprocess.Popen([sys.executable, "-c", DEAD_HOLDER, store_url, str(marker),
                               str(ttl)])

    async def scenario() -> None:
        runs = Runs()
        stop = asyncio.Event()
        try:
            await until(marker.exists, 30)
            survivor = asyncio.create_task(run_singleton(
                "sender", runs.loop("survivor"), SingletonLocks(store, "i", "s/2/y"), stop,
                ttl))
            await asyncio.sleep(ttl * 1.5)  # the holder lives and renews: nothing runs here
            assert runs.started == []
            doomed.send_signal(signal.SIGKILL)
            doomed.wait(10)
            took = await until(lambda: bool(runs.started), 10)
            # not before the lock ran out (renewed at most a third before the death), and
            # then at the next attempt
            assert ttl - ttl / 3 - 0.2 < took < ttl + ttl / 3 + 0.5, took
        finally:
            stop.set()
        await survivor

    try:
        asyncio.run(scenario())
    finally:
        if doomed.poll() is None:
            doomed.kill()
            doomed.wait()


def test_a_holder_whose_lock_was_taken_stops_its_loop(store_url: str) -> None:
    async def scenario() -> None:
        runs = Runs()
        stop = asyncio.Event()
        store = Store(store_url)
        mine = SingletonLocks(store, "i", "mine/1/x")
        task = asyncio.create_task(run_singleton("sender", runs.loop("mine"), mine, stop,
                                                 TTL))
        await until(lambda: bool(runs.started), 5)
        # another process holds it now (say its clock ran ahead): the next renewal fails
        thief = SingletonLocks(store, "i", "thief/2/y")
        ttl = timedelta(seconds=TTL)
        assert thief.try_acquire("sender", ttl, clock.now() + ttl)
        assert await until(lambda: bool(runs.stopped), 2) < TTL / 3 + 0.3
        # it seeks the lock again, and gets it once the thief's runs out
        await until(lambda: len(runs.started) == 2, 5)
        held = mine.held("sender")
        assert held is not None and held.holder == "mine/1/x"
        stop.set()
        await task

    asyncio.run(scenario())


def test_a_holder_that_cannot_reach_the_database_stops_before_its_lock_runs_out(
        tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'layerbot.db'}"

    async def scenario() -> None:
        runs = Runs()
        stop = asyncio.Event()
        locks = SingletonLocks(Store(url), "i", "mine/1/x")
        task = asyncio.create_task(run_singleton("sender", runs.loop("mine"), locks, stop,
                                                 TTL))
        await until(lambda: bool(runs.started), 5)
        # The database stops answering writers: its write lock is held elsewhere.
        fd = os.open(str(tmp_path / "layerbot.db.writelock"), os.O_RDWR)
        await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
        try:
            held = locks.held("sender")  # reads still work; no renewal can land now
            assert held is not None
            await until(lambda: bool(runs.stopped), 2)
            assert clock.now() < held.expires_at  # stopped while the lock was still ours
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        # The database is back and the lock still ours: taken again, the loop restarted.
        await until(lambda: len(runs.started) == 2, 5)
        assert runs.overlaps == 0
        stop.set()
        await task

    asyncio.run(scenario())


def test_a_loop_that_crashes_is_started_again_and_one_that_ends_lets_go(
        store_url: str) -> None:
    async def scenario() -> None:
        store = Store(store_url)
        locks = SingletonLocks(store, "i", "mine/1/x")
        calls: list[int] = []

        async def flaky(stop: asyncio.Event) -> None:
            calls.append(1)
            if len(calls) == 1:
                raise RuntimeError("boom")
            # the second run ends by itself (e.g. recovery run once at start)

        await asyncio.wait_for(run_singleton("once", flaky, locks, asyncio.Event(), TTL), 5)
        assert len(calls) == 2
        assert locks.held("once") is None  # released: another replica may run it

    asyncio.run(scenario())

