"""The one way background loops wait: until a timeout, a wake-up, or the stop signal."""

from __future__ import annotations

import asyncio
import contextlib


async def pause(stop: asyncio.Event, seconds: float, wakeup: asyncio.Event | None = None) -> None:
    """Sleep up to ``seconds``; return early when ``stop`` or ``wakeup`` is set.

    A wake-up set while the caller was working makes it return at once (there may be new
    work); ``wakeup`` is cleared on return, so each wake-up is consumed once.
    """
    events = [stop] if wakeup is None else [stop, wakeup]
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiter
    if wakeup is not None:
        wakeup.clear()
