"""An inbox claim that finds nothing leaves SQLite's write lock alone.

The webhook's inbox writer waits for that lock, and the worker claims many times a second:
an inbox claim held it while reading (4 to 40 ms per claim with a backlog; bench_webhook).
Here another Store's transaction holds the lock, as a busy worker process's would.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from layerbot import clock
from layerbot.store.db import Store
from layerbot.store.inbox import ClaimedEvent, Delivery, Inbox

LEASE = timedelta(seconds=60)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store(f"sqlite:///{tmp_path / 'layerbot.db'}")
    yield store
    store.close()


class HeldLock:
    """The write lock, held by a transaction of another Store until :meth:`release`."""

    def __init__(self, url: str) -> None:
        self._other = Store(url, migrate=False)
        self._release, held = threading.Event(), threading.Event()

        def hold() -> None:
            with self._other.transaction():
                held.set()
                self._release.wait(30)

        self._holder = threading.Thread(target=hold)
        self._holder.start()
        assert held.wait(10)

    def release(self) -> None:
        self._release.set()
        self._holder.join()
        self._other.close()


def in_thread(call: Callable[[], list[ClaimedEvent]]
              ) -> tuple[threading.Thread, list[list[ClaimedEvent]]]:
    result: list[list[ClaimedEvent]] = []
    thread = threading.Thread(target=lambda: result.append(call()))
    thread.start()
    return thread, result


def inbox_claim(store: Store) -> Callable[[], list[ClaimedEvent]]:
    inbox = Inbox(store, "a")
    return lambda: inbox.claim("w", clock.now(), LEASE)


def test_a_claim_that_finds_nothing_answers_while_another_writer_holds_the_lock(
        store: Store) -> None:
    lock = HeldLock(store.url)
    try:
        thread, result = in_thread(inbox_claim(store))
        thread.join(5)
        assert not thread.is_alive(), "a claim with nothing to take waited for the lock"
        assert result == [[]]
    finally:
        lock.release()


def test_a_claim_that_finds_work_waits_for_the_lock_and_then_takes_it(store: Store) -> None:
    Inbox(store, "a").accept([Delivery("1", "d-1", "issue_comment", "created", "o/r#1", 7,
                                       "{}")], clock.now())
    lock = HeldLock(store.url)
    try:
        thread, result = in_thread(inbox_claim(store))
        thread.join(1)
        assert thread.is_alive(), "it wrote while another writer held the lock"
    finally:
        lock.release()
    thread.join(10)
    (events,) = result
    assert [e.delivery_id for e in events] == ["d-1"]
