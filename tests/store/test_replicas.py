"""The inbox and the outbox with several processes (replicas) on one database: a claim is
given to one worker only, live claims are not given back, a lost claim commits nothing,
and an edit is never merged into a message already in flight."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from sqlalchemy import select, update

from layerbot import clock
from layerbot.store import repos
from layerbot.store.db import Store
from layerbot.store.inbox import Delivery, Inbox
from layerbot.store.models import OutboxMessage, Repository
from layerbot.store.outbox import Message, Outbox, enqueue

LEASE = timedelta(seconds=60)


def delivery(n: int, key: str = "o/r#1") -> Delivery:
    return Delivery(hook_id="1", delivery_id=f"d-{n}", event="issue_comment",
                    action="created", ordering_key=key, installation_id=7,
                    payload=f'{{"n": {n}}}')


def status_of(inbox: Inbox, delivery_id: str) -> tuple[str, str | None]:
    event = inbox.get(delivery_id)
    assert event is not None
    return event.status, event.claimed_by


def test_an_event_claimed_by_another_live_replica_is_not_given_back(store_url: str) -> None:
    inbox = Inbox(Store(store_url), "a")
    now = clock.now()
    inbox.accept([delivery(1)], now)
    assert len(inbox.claim("host:8081/run-a", now, LEASE)) == 1
    # replica host:8082 starts: it gives back its own earlier runs' claims, no others
    assert inbox.recover("host:8082/run-b", now, earlier_runs_of="host:8082/") == 0
    # "host:808/" is no prefix of "host:8081/...": a name is matched up to its end
    assert inbox.recover("host:808/run-c", now, earlier_runs_of="host:808/") == 0
    assert status_of(inbox, "d-1") == ("processing", "host:8081/run-a")
    assert inbox.claim("host:8082/run-b", now, LEASE) == []
    # its worker keeps renewing the claim while it lives...
    (event,) = [e for e in [inbox.get("d-1")] if e is not None]
    assert inbox.renew_claims("host:8082/run-b", [event.id], now, LEASE) == 0  # not its own
    assert inbox.renew_claims("host:8081/run-a", [event.id], now + timedelta(seconds=50),
                              LEASE) == 1
    assert inbox.recover("host:8082/run-b", now + timedelta(seconds=61)) == 0
    # ...and once it stopped renewing (died), any replica gives it back
    assert inbox.recover("host:8082/run-b", now + timedelta(seconds=111)) == 1
    (again,) = inbox.claim("host:8082/run-b", now + timedelta(seconds=111), LEASE)
    assert (again.delivery_id, again.attempts) == ("d-1", 2)


def test_an_outcome_whose_claim_ran_out_is_not_committed(store_url: str) -> None:
    store = Store(store_url)
    inbox = Inbox(store, "a")
    now = clock.now()
    inbox.accept([delivery(1), delivery(2, "o/r#2")], now)
    (slow,) = inbox.claim("r1/a", now, LEASE)
    later = now + LEASE + timedelta(seconds=1)
    assert inbox.recover("r2/b", later) == 1
    (taken,) = inbox.claim("r2/b", later, LEASE, limit=1)
    assert taken.id == slow.id and taken.attempts == 2
    with store.transaction() as session:
        assert not inbox.finish(session, slow.id, "handled", "late", later, owner="r1/a",
                                attempt=slow.attempts)
    assert not inbox.fail(slow.id, "late", later, None, owner="r1/a", attempt=slow.attempts)
    # the same owner with an earlier attempt of the event is just as late
    with store.transaction() as session:
        assert not inbox.finish(session, slow.id, "handled", "late", later, owner="r2/b",
                                attempt=1)
        assert inbox.finish(session, slow.id, "handled", "ok", later, owner="r2/b",
                            attempt=taken.attempts)
    event = inbox.get("d-1")
    assert event is not None and (event.status, event.outcome) == ("handled", "ok")


def test_workers_of_several_processes_never_get_one_event_twice(store_url: str) -> None:
    Store(store_url).close()  # migrated before the workers start
    keys = [f"o/r#{k}" for k in range(8)]
    Inbox(Store(store_url), "a").accept(
        [delivery(n, keys[n % len(keys)]) for n in range(48)], clock.now())
    lock = threading.Lock()
    in_flight: set[str] = set()
    order: dict[str, list[int]] = {k: [] for k in keys}
    taken: list[int] = []
    problems: list[str] = []
    start = threading.Barrier(6, timeout=30)
    # a store each, as processes have (opened here: migrations are not thread-safe)
    inboxes = [Inbox(Store(store_url, migrate=False), "a") for _ in range(6)]

    def worker(n: int) -> None:
        inbox = inboxes[n]
        owner = f"replica-{n}/x"
        start.wait()
        idle = 0
        while idle < 20:
            claimed = inbox.claim(owner, clock.now(), LEASE, limit=2)
            if not claimed:
                idle += 1
                time.sleep(0.01)
                continue
            idle = 0
            for event in claimed:
                key = keys[int(event.delivery_id[2:]) % len(keys)]
                with lock:
                    if key in in_flight:
                        problems.append(f"two events of {key} at once")
                    in_flight.add(key)
                    order[key].append(event.id)
                    taken.append(event.id)
                with lock:
                    in_flight.discard(key)
                with inbox.store.transaction() as session:
                    assert inbox.finish(session, event.id, "handled", "ok", clock.now(),
                                        owner=owner, attempt=event.attempts)

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(worker, range(6)))
    assert problems == []
    assert sorted(taken) == sorted(set(taken)) and len(taken) == 48  # each once
    assert all(ids == sorted(ids) for ids in order.values())  # in order per PR


def comment_edit(session: object, body: str, now: object) -> None:
    enqueue(session, instance="a", kind="comment", repo="o/r",  # type: ignore[arg-type]
            installation_id=1, coalesce_key="comment:k", payload={"body": body},
            now=now)  # type: ignore[arg-type]


def test_a_claim_waiting_for_an_edit_being_merged_sends_the_edit(store_url: str) -> None:
    store = Store(store_url)
    now = clock.now()
    with store.transaction() as session:
        comment_edit(session, "queued", now)
    claimed: list[Message] = []
    sender = Outbox(Store(store_url, migrate=False), "a")
    claimer = threading.Thread(target=lambda: claimed.extend(sender.claim(now, 5)))
    with store.transaction() as session:
        comment_edit(session, "running", now)  # merged, not committed yet
        claimer.start()
        time.sleep(0.3)  # the claim reads "queued" and waits for this transaction
    claimer.join(10)
    assert [m.payload["body"] for m in claimed] == ["running"]


def test_an_edit_is_not_merged_into_a_message_in_flight(store_url: str) -> None:
    store = Store(store_url)
    now = clock.now()
    with store.transaction() as session:
        comment_edit(session, "queued", now)
    other = Store(store_url, migrate=False)
    editor = threading.Thread(target=lambda: _edit(other, "running", now))
    with store.transaction() as session:
        # the sender takes the message (its claim, not committed yet)...
        session.execute(update(OutboxMessage).values(status="sending"))
        editor.start()  # ...while a handler merges an edit into it, as still pending
        time.sleep(0.3)
    editor.join(10)
    with store.read() as session:
        rows = session.execute(select(OutboxMessage.status, OutboxMessage.payload)
                               .order_by(OutboxMessage.id)).all()
    assert [(s, p["body"]) for s, p in rows] == [("sending", "queued"), ("pending", "running")]


def _edit(store: Store, body: str, now: object) -> None:
    with store.transaction() as session:
        comment_edit(session, body, now)



def test_two_workers_seeing_a_repository_first_at_once_both_commit(store_url: str) -> None:
    store, other = Store(store_url), Store(store_url, migrate=False)
    now = clock.now()
    errors: list[BaseException] = []

    def second() -> None:
        try:
            with other.transaction() as session:
                repos.record(session, "o/r", True, None, now)
        except BaseException as exc:
            errors.append(exc)

    worker = threading.Thread(target=second)
    with store.transaction() as session:
        repos.record(session, "o/r", False, 7, now)  # inserted, not committed yet
        worker.start()
        time.sleep(0.3)  # the second insert waits for this one (PostgreSQL)
    worker.join(10)
    assert errors == []
    with store.read() as session:
        row = session.get(Repository, "o/r")
        assert row is not None and (row.private, row.installation_id) == (True, 7)
