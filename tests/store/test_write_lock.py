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
from sqlalchemy import update
from sqlalchemy.orm import Session

from layerbot import clock
from layerbot.store.db import Store
from layerbot.store.inbox import ClaimedEvent, Delivery, Inbox
from layerbot.store.models import InboxEvent

LEASE = timedelta(seconds=60)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store(f"sqlite:///{tmp_path / 'layerbot.db'}")
    yield store
    store.close()


class HeldLock:
    """The write lock, held by a transaction of another Store until :meth:`release`.

    ``then``: what that transaction writes just before it commits (another worker's work).
    """

    def __init__(self, url: str, then: Callable[[Session], object] = lambda _s: None) -> None:
        self._other = Store(url, migrate=False)
        self._release, held = threading.Event(), threading.Event()

        def hold() -> None:
            with self._other.transaction() as session:
                held.set()
                self._release.wait(30)
                then(session)

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


def claim_of_one_event_past_a_held_lock(
        store: Store, then: Callable[[Session], object] = lambda _s: None
) -> list[ClaimedEvent]:
    """One stored event; a claim that must wait for another writer's lock, which does
    ``then`` before it lets go: what the claim took."""
    Inbox(store, "a").accept([Delivery("1", "d-1", "issue_comment", "created", "o/r#1", 7,
                                       "{}")], clock.now())
    lock = HeldLock(store.url, then)
    try:
        thread, result = in_thread(inbox_claim(store))
        thread.join(1)
        assert thread.is_alive(), "it wrote while another writer held the lock"
    finally:
        lock.release()
    thread.join(10)
    (events,) = result
    return events


def test_a_claim_that_finds_work_waits_for_the_lock_and_then_takes_it(store: Store) -> None:
    events = claim_of_one_event_past_a_held_lock(store)
    assert [e.delivery_id for e in events] == ["d-1"]


def test_an_event_put_off_between_the_read_and_the_claim_is_not_taken(store: Store) -> None:
    """The candidates are read before the lock: meanwhile another worker may have taken the
    event, failed it and put it off until GitHub's rate limit resets. The stale read must
    not hand it out again at once (a CI run caught a worker doing exactly that)."""
    put_off = update(InboxEvent).values(
        attempts=1, error="403 API rate limit exceeded",
        next_attempt_at=clock.now() + timedelta(minutes=20))
    events = claim_of_one_event_past_a_held_lock(
        store, then=lambda session: session.execute(put_off))
    assert events == []
