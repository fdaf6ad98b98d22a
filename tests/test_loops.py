"""Background loops wait with `pause`: a timeout, a wake-up or the stop signal ends it."""

from __future__ import annotations

import asyncio
import time

from layerbot.loops import pause


def timed(coro_factory) -> float:  # type: ignore[no-untyped-def]
    async def main() -> float:
        started = time.monotonic()
        await coro_factory()
        return time.monotonic() - started
    return asyncio.run(main())


def test_pause_times_out() -> None:
    assert 0.09 < timed(lambda: pause(asyncio.Event(), 0.1)) < 1


def test_pause_ends_at_stop_or_wakeup_and_consumes_the_wakeup() -> None:
    async def scenario() -> None:
        stop, wakeup = asyncio.Event(), asyncio.Event()
        asyncio.get_running_loop().call_later(0.05, wakeup.set)
        started = time.monotonic()
        await pause(stop, 10, wakeup)
        assert time.monotonic() - started < 1 and not wakeup.is_set()
        wakeup.set()  # set while the caller worked: return at once
        await pause(stop, 10, wakeup)
        asyncio.get_running_loop().call_later(0.05, stop.set)
        await pause(stop, 10, wakeup)
        assert time.monotonic() - started < 2

    asyncio.run(scenario())
