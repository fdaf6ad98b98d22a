"""The worker's database work waits while the receiver answers, and never for long."""

from __future__ import annotations

import multiprocessing
import threading
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event
from pathlib import Path

from layerbot.app.answers_first import (
    BUSY_SECONDS,
    MAX_WAIT_SECONDS,
    ReceiverBusy,
)
from layerbot.store.db import Store


class FakeTime:
    """A clock that moves only when someone sleeps; ``on_sleep`` runs at each sleep."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept = 0
        self.on_sleep = lambda: None

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept += 1
        self.now += seconds
        self.on_sleep()


def test_without_a_mark_the_worker_goes_on_at_once() -> None:
    time = FakeTime()
    busy = ReceiverBusy(time.clock, time.sleep)
    assert busy.wait() == 0 and time.slept == 0


def test_after_a_delivery_the_worker_waits_until_the_mark_runs_out() -> None:
    time = FakeTime()
    busy = ReceiverBusy(time.clock, time.sleep)
    busy.mark()
    waited = busy.wait()
    assert abs(waited - BUSY_SECONDS) < 0.0025
    assert busy.wait() == 0  # run out: no wait


def test_a_flood_of_deliveries_holds_each_call_back_for_at_most_the_limit() -> None:
    time = FakeTime()
    busy = ReceiverBusy(time.clock, time.sleep)
    time.on_sleep = busy.mark  # a delivery arrives at every look
    busy.mark()
    assert abs(busy.wait() - MAX_WAIT_SECONDS) < 1e-9


def _report_mark(busy: ReceiverBusy, marked: Event, out: Connection) -> None:
    assert marked.wait(30)
    out.send(busy.until())


def test_the_mark_of_the_web_process_reaches_the_spawned_worker() -> None:
    context = multiprocessing.get_context("spawn")
    busy = ReceiverBusy()
    marked = context.Event()
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_report_mark, args=(busy, marked, send))
    child.start()
    busy.mark()
    marked.set()
    assert receive.poll(30)
    assert receive.recv() == busy.until() > 0
    child.join(30)


def test_the_store_paces_each_transaction_and_read_before_taking_any_lock(
        tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'layerbot.db'}"
    other = Store(url)
    outcomes: list[bool] = []

    def pace() -> None:
        # Another writer can write now: the pace is not called with the write lock held.
        done = threading.Event()

        def write() -> None:
            with other.transaction():
                done.set()

        thread = threading.Thread(target=write, daemon=True)
        thread.start()
        outcomes.append(done.wait(5))

    store = Store(url, pace=pace)
    # A read inside a transaction is not paced: it would wait holding the write lock.
    with store.transaction(), store.read():
        pass
    with store.read():
        pass
    assert outcomes == [True, True]
    store.close()
    other.close()
