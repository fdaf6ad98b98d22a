"""Answers first: the worker holds its database work back while the receiver is answering.

Handling is throughput work and answering GitHub is latency work, so on a busy machine the
web process should go first. The worker's niceness alone did not do it (bench_webhook, with
a backlog being handled, answered at p99 38-54 ms where the receiver alone took 16-24 ms):

- on SQLite, the worker's transactions hold the write lock that the receiver's inbox commit
  waits for, and a niced thread holding it is preempted by everything at normal priority
  (holds of 5 to 40 ms, 40 % of the time, were measured while the receiver waited);
- on PostgreSQL, the worker's queries run in server processes that are not niced;
- processes of other sessions (the kernel's autogroups) share the CPUs whatever the nice.

So the web process marks, in memory that both processes share, until when it is busy (10 ms
after each signed delivery it receives), and the worker's store waits before each
transaction or read until that moment has passed. It waits at most 500 ms at a time and
then goes on: a flood of deliveries slows handling down but never stops it, and a web
process that died leaves a mark that runs out by itself. Why 500 ms: a burst of a thousand
deliveries is answered in about 0.4 s; held back 100 ms at a time, the worker's calls went
on during the burst and answers were 15-24 ms at the median instead of 12-14 ms.

Measured (bench_webhook, 1,000 deliveries 50 at a time while a backlog is handled): p99
13-22 ms on SQLite (6 runs) and 13-21 ms on PostgreSQL (5 runs), where the receiver alone
took 12-23 and 14-20 ms in the same runs. The slowest answers are mostly the first of a burst,
in both phases: 50 requests arrive at once on 50 new connections, which are accepted first
(with the connections opened beforehand, that first wave took 11-13 ms alone). With
handling it also meets whatever the worker had under way when the burst began. On an
earlier day, when the web process took 0.28 ms of CPU per delivery (a slower host; 0.15 to
0.20 in most of the runs above), the same code measured 22-39 ms.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable
from typing import Any

#: How long after a delivery arrives the receiver counts as busy.
BUSY_SECONDS = 0.010
#: The longest one database call of the worker is held back.
MAX_WAIT_SECONDS = 0.5
#: How often a held-back call looks again.
LOOK_SECONDS = 0.002


class ReceiverBusy:
    """Until when the receiver is busy, in shared memory (``time.monotonic`` seconds, which
    every process of a machine reads alike).

    Made by the web process before the worker is spawned and handed to it as an argument;
    ``clock`` and ``sleep`` are for tests."""

    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self._until: Any = multiprocessing.get_context("spawn").RawValue("d", 0.0)
        self._clock = clock
        self._sleep = sleep

    def __getstate__(self) -> dict[str, Any]:
        return {"until": self._until}  # to the spawned worker: the shared value only

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._until, self._clock, self._sleep = state["until"], time.monotonic, time.sleep

    def mark(self) -> None:
        """A delivery arrived: busy for the next :data:`BUSY_SECONDS`."""
        self._until.value = self._clock() + BUSY_SECONDS

    def until(self) -> float:
        return float(self._until.value)

    def wait(self) -> float:
        """Wait while the receiver is busy, at most :data:`MAX_WAIT_SECONDS`: seconds waited."""
        started = now = self._clock()
        deadline = started + MAX_WAIT_SECONDS
        while now < deadline and now < self._until.value:
            self._sleep(min(LOOK_SECONDS, deadline - now))
            now = self._clock()
        return now - started
