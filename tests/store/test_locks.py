"""Singleton locks on SQLite and PostgreSQL: one holder at a time, taken over once it ran
out, never renewed by a holder that lost it."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from layerbot import clock
from layerbot.store.db import Store
from layerbot.store.locks import SingletonLocks, holder_prefix, new_holder

TTL = timedelta(seconds=10)


def locks(store_url: str, holder: str, instance: str = "a") -> SingletonLocks:
    return SingletonLocks(Store(store_url), instance, holder)


def race(contenders: list[SingletonLocks], name: str, at: object) -> list[bool]:
    """Every contender tries to take ``name`` at the same moment (one thread each)."""
    start = threading.Barrier(len(contenders))

    def attempt(lock: SingletonLocks) -> bool:
        start.wait()
        return lock.try_acquire(name, TTL, at)  # type: ignore[arg-type]

    with ThreadPoolExecutor(len(contenders)) as pool:
        return list(pool.map(attempt, contenders))


def test_of_holders_racing_for_a_lock_one_wins(store_url: str) -> None:
    Store(store_url).close()  # migrated once, before the race
    contenders = [locks(store_url, f"r{i}/1/x") for i in range(6)]
    now = clock.now()
    first = race(contenders, "sender", now)
    assert sum(first) == 1  # absent: one INSERT wins
    assert race(contenders, "sender", now + TTL / 2) == first  # held: only by its holder
    others = [c for c, won in zip(contenders, first, strict=True) if not won]
    results = race(others, "sender", now + TTL * 2)  # ran out: one UPDATE takes it
    assert sum(results) == 1
    winner = others[results.index(True)]
    held = winner.held("sender")
    assert held is not None and held.holder == winner.holder
    assert held.expires_at == now + TTL * 3 and held.acquired_at == now + TTL * 2


def test_a_lock_is_taken_over_when_it_runs_out_and_the_loser_cannot_renew(
        store_url: str) -> None:
    a, b = locks(store_url, "host:1/10/a"), locks(store_url, "host:2/20/b")
    now = clock.now()
    assert a.try_acquire("sender", TTL, now)
    assert not b.try_acquire("sender", TTL, now + timedelta(seconds=5))
    assert a.renew("sender", TTL, now + timedelta(seconds=8))  # now until now + 18 s
    assert not b.try_acquire("sender", TTL, now + timedelta(seconds=12))
    assert b.try_acquire("sender", TTL, now + timedelta(seconds=19))  # ran out
    assert not a.renew("sender", TTL, now + timedelta(seconds=20))  # lost: a must stop
    assert not a.try_acquire("sender", TTL, now + timedelta(seconds=20))
    assert not a.release("sender")  # not a's to release
    held = b.held("sender")
    assert held is not None and held.holder == "host:2/20/b"


def test_a_released_lock_is_free_at_once(store_url: str) -> None:
    a, b = locks(store_url, "h:1/1/a"), locks(store_url, "h:2/2/b")
    now = clock.now()
    assert a.try_acquire("sender", TTL, now)
    assert a.try_acquire("sender", TTL, now)  # ours already: renewed
    assert a.release("sender")
    assert a.held("sender") is None
    assert b.try_acquire("sender", TTL, now)
    assert not a.try_acquire("sender", TTL, now)


def test_a_replica_started_again_takes_its_dead_runs_lock_at_once(store_url: str) -> None:
    old = locks(store_url, new_holder("host:80"))
    new = locks(store_url, new_holder("host:80"))
    other = locks(store_url, new_holder("host:8080"))
    now = clock.now()
    assert old.try_acquire("sender", TTL, now)
    assert not other.try_acquire("sender", TTL, now, take_from=holder_prefix("host:8080"))
    assert not new.try_acquire("sender", TTL, now)  # without take_from: waits
    assert new.try_acquire("sender", TTL, now, take_from=holder_prefix("host:80"))
    assert not old.renew("sender", TTL, now)
    # "host:80/" is no prefix of "host:8080/...": a replica takes only its own
    assert other.try_acquire("jobs", TTL, now)
    assert not new.try_acquire("jobs", TTL, now, take_from=holder_prefix("host:80"))


def test_locks_of_two_instances_are_apart(store_url: str) -> None:
    a = locks(store_url, "h:1/1/a", instance="cluster-a")
    b = locks(store_url, "h:1/1/b", instance="cluster-b")
    now = clock.now()
    assert a.try_acquire("github-sender", TTL, now)
    assert b.try_acquire("github-sender", TTL, now)
    assert set(a.held_all(["github-sender", "jobs"])) == {"github-sender"}
    long = locks(store_url, "h:1/1/c", instance="x" * 100)
    assert long.try_acquire("delivery-recovery", TTL, now)
    assert len(long.key("delivery-recovery")) <= 100
    assert long.held("delivery-recovery") is not None
