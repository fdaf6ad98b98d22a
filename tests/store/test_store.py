"""The store on SQLite and on PostgreSQL: migrations, inbox order and dedup, outbox."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from sqlalchemy import inspect, text

from layerbot import clock
from layerbot.store.db import Store
from layerbot.store.inbox import Delivery, Inbox, Stored
from layerbot.store.models import Base
from layerbot.store.outbox import Outbox, enqueue
from layerbot.store.pushes import latest_push, record_push

LEASE = timedelta(seconds=60)


def delivery(n: int, key: str = "o/r#1", hook: str = "1") -> Delivery:
    return Delivery(
        hook_id=hook,
        delivery_id=f"d-{n}",
        event="issue_comment",
        action="created",
        ordering_key=key,
        installation_id=7,
        payload=f'{{"n": {n}}}',
    )


def test_migrations_create_every_table_and_are_idempotent(store_url: str) -> None:
    Store(store_url).close()
    store = Store(store_url)  # a second start applies nothing and fails nothing
    tables = set(inspect(store.engine).get_table_names())
    assert {
        "inbox_events",
        "outbox",
        "jobs",
        "job_transitions",
        "builds",
        "artifacts",
        "deployments",
        "instances",
        "github_objects",
        "alembic_version",
    } <= tables


def test_accept_is_idempotent_per_hook_and_delivery(store_url: str) -> None:
    inbox = Inbox(Store(store_url), "a")
    now = clock.now()
    assert inbox.accept([delivery(1), delivery(2)], now) == [True, True]
    assert inbox.accept([delivery(1), delivery(3)], now) == [False, True]
    # the same delivery id from another hook is another delivery
    assert inbox.accept([delivery(1, hook="2")], now) == [True]
    assert inbox.counts() == {"pending": 4}


def test_events_of_one_pr_are_claimed_one_at_a_time_in_order(store_url: str) -> None:
    inbox = Inbox(Store(store_url), "a")
    now = clock.now()
    inbox.accept([delivery(1, "o/r#1"), delivery(2, "o/r#1"), delivery(3, "o/r#2")], now)
    first = inbox.claim("w1", now, LEASE, limit=10)
    assert [e.delivery_id for e in first] == ["d-1", "d-3"]
    assert inbox.claim("w2", now, LEASE, limit=10) == []  # d-2 waits for d-1
    with inbox.store.transaction() as session:
        inbox.finish(session, first[0].id, "handled", "ok", now)
    assert [e.delivery_id for e in inbox.claim("w2", now, LEASE)] == ["d-2"]


def test_a_retried_event_keeps_its_place_in_line(store_url: str) -> None:
    inbox = Inbox(Store(store_url), "a")
    now = clock.now()
    inbox.accept([delivery(1), delivery(2)], now)
    (first,) = inbox.claim("w", now, LEASE)
    inbox.fail(first.id, "boom", now, retry_at=now + timedelta(seconds=30))
    assert inbox.claim("w", now, LEASE) == []  # d-1 waits for its retry; d-2 waits for d-1
    later = now + timedelta(seconds=31)
    (again,) = inbox.claim("w", later, LEASE)
    assert (again.delivery_id, again.attempts) == ("d-1", 2)


def test_failed_for_good_no_longer_blocks_and_can_be_replayed(store_url: str) -> None:
    inbox = Inbox(Store(store_url), "a")
    now = clock.now()
    inbox.accept([delivery(1), delivery(2)], now)
    (first,) = inbox.claim("w", now, LEASE)
    inbox.fail(first.id, "boom", now, retry_at=None)
    assert [e.delivery_id for e in inbox.claim("w", now, LEASE)] == ["d-2"]
    assert inbox.replay("d-1", now) == 1
    assert inbox.replay("unknown", now) == 0
    event = inbox.get("d-1")
    assert event is not None and event.status == "pending"


def test_recover_gives_back_events_of_a_dead_run(store_url: str) -> None:
    inbox = Inbox(Store(store_url), "a")
    now = clock.now()
    inbox.accept([delivery(1)], now)
    assert len(inbox.claim("host:8080/old-run", now, LEASE)) == 1
    # the same replica started again: its earlier run is dead
    assert inbox.recover("host:8080/new-run", now, earlier_runs_of="host:8080/") == 1
    assert [e.delivery_id for e in inbox.claim("host:8080/new-run", now, LEASE)] == ["d-1"]


def test_inbox_lag(store_url: str) -> None:
    inbox = Inbox(Store(store_url), "a")
    now = clock.now()
    assert inbox.lag_seconds(now) == 0.0
    inbox.accept([delivery(1)], now - timedelta(seconds=42))
    assert 41.5 < inbox.lag_seconds(now) < 43


def test_outbox_coalesces_pending_edits_of_one_comment(store_url: str) -> None:
    store = Store(store_url)
    outbox = Outbox(store, "a")
    now = clock.now()
    with store.transaction() as s:
        for body in ("queued", "running", "done"):
            enqueue(
                s,
                instance="a",
                kind="comment",
                repo="o/r",
                installation_id=1,
                coalesce_key="comment:k",
                payload={"body": body},
                now=now,
            )
        enqueue(
            s,
            instance="a",
            kind="reaction",
            repo="o/r",
            installation_id=1,
            payload={"content": "eyes"},
            now=now,
        )
    claimed = outbox.claim(now, limit=10)
    assert sorted((m.kind, m.payload.get("body")) for m in claimed) == [
        ("comment", "done"),
        ("reaction", None),
    ]
    # while an edit is in flight, the next edit of the same comment waits
    with store.transaction() as s:
        enqueue(
            s,
            instance="a",
            kind="comment",
            repo="o/r",
            installation_id=1,
            coalesce_key="comment:k",
            payload={"body": "again"},
            now=now,
        )
    assert outbox.claim(now, limit=10) == []
    comment = next(m for m in claimed if m.kind == "comment")
    outbox.sent(comment.id, now, "comment:k", "comment", 555)
    assert outbox.object_id("comment:k") == 555
    (edit,) = outbox.claim(now, limit=10)
    assert edit.payload["body"] == "again"


def test_outbox_retry_and_recovery(store_url: str) -> None:
    store = Store(store_url)
    outbox = Outbox(store, "a")
    now = clock.now()
    with store.transaction() as s:
        enqueue(
            s,
            instance="a",
            kind="reaction",
            repo="o/r",
            installation_id=1,
            payload={"content": "eyes"},
            now=now,
        )
    (m,) = outbox.claim(now, 5)
    outbox.retry(m.id, "502", now + timedelta(seconds=5))
    assert outbox.claim(now, 5) == []
    (m2,) = outbox.claim(now + timedelta(seconds=6), 5)
    assert m2.attempts == 2
    # a sender that died mid-send: the message comes back flagged as possibly sent
    assert outbox.recover() == [m2.id]
    (m3,) = outbox.claim(now + timedelta(seconds=6), 5)
    assert m3.payload.get("_maybe_sent") is True
    outbox.retry(m3.id, "404", None)
    assert outbox.backlog() == 0


def test_edits_of_one_object_are_spaced_and_absorb_each_other(store_url: str) -> None:
    store = Store(store_url)
    outbox = Outbox(store, "a", min_edit_interval=timedelta(seconds=10))
    now = clock.now()

    def edit(body: str) -> None:
        with store.transaction() as s:
            enqueue(s, instance="a", kind="comment", repo="o/r", installation_id=1,
                    coalesce_key="comment:k", payload={"body": body}, now=now)

    edit("created")
    (create,) = outbox.claim(now, 10)
    outbox.sent(create.id, now, "comment:k", "comment", 99)
    edit("running")
    edit("done")
    assert outbox.claim(now + timedelta(seconds=5), 10) == []  # too soon after the last write
    (late,) = outbox.claim(now + timedelta(seconds=11), 10)
    assert late.payload["body"] == "done"
    outbox.sent(late.id, now + timedelta(seconds=11), "comment:k", "comment", None)
    edit("again")
    assert outbox.claim(now + timedelta(seconds=15), 10) == []
    assert len(outbox.claim(now + timedelta(seconds=22), 10)) == 1


def test_a_replayed_event_under_a_new_delivery_id_is_turned_away(store_url: str) -> None:
    inbox = Inbox(Store(store_url), "a")
    other = Inbox(inbox.store, "b")  # another instance keeps its own copy
    now = clock.now()
    first = replace(delivery(1), identity="i" * 64)
    replayed = replace(delivery(2), identity="i" * 64)
    plain = delivery(3)  # no identity: only the delivery id counts
    assert inbox.store_all([first, replayed, plain], now) == [
        Stored.NEW, Stored.REPLAYED, Stored.NEW]
    assert inbox.store_all([first, replace(delivery(4), identity="i" * 64), delivery(5)],
                           now) == [Stored.DUPLICATE, Stored.REPLAYED, Stored.NEW]
    assert inbox.accept([replace(delivery(6), identity="j" * 64)], now) == [True]
    assert other.store_all([replace(delivery(7), identity="i" * 64)], now) == [Stored.NEW]
    assert inbox.counts() == {"pending": 4}


def test_the_latest_push_never_moves_back(store_url: str) -> None:
    store = Store(store_url)
    now = clock.now()
    with store.transaction() as s:
        record_push(s, "a", "o/r", 1, "b" * 40, now, now)
    with store.transaction() as s:
        record_push(s, "a", "o/r", 1, "a" * 40, now - timedelta(minutes=1), now)
    with store.read() as s:
        assert latest_push(s, "a", "o/r", 1) == ("b" * 40, now)
        assert latest_push(s, "b", "o/r", 1) is None


def test_the_migrated_schema_is_the_models_schema(store_url: str) -> None:
    """What the migrations build is what the models describe: a migration that forgot an
    index (or a model that forgot one a migration made) shows here."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    store = Store(store_url)
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    store.close()
    assert diff == []


def test_inbox_payloads_are_compressed_with_lz4_on_postgresql(pg_url: str) -> None:
    """The receiver's answer waits for its batch's commit; pglz made that twice as slow."""
    store = Store(pg_url)
    with store.read() as session:
        available = session.execute(text(
            "SELECT 'lz4' = ANY(enumvals) FROM pg_settings "
            "WHERE name = 'default_toast_compression'")).scalar()
        method = session.execute(text(
            "SELECT attcompression FROM pg_attribute WHERE attname = 'payload' "
            "AND attrelid = 'inbox_events'::regclass")).scalar()
    assert available, "this server has no lz4: the migration leaves pglz"
    assert method == "l"
    store.close()
