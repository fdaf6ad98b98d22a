"""Singleton locks: a named lease in the store, held by one process at a time.

Several replicas of one instance may share a database; a loop that must run once per
instance (the GitHub sender, delivery recovery) runs where its lock is held
(``app/singletons.py``). A lock is a row: who holds it and until when. Every change is
one statement whose WHERE clause is the rule, so the database itself decides a race, the
same way on SQLite (one writer at a time) and PostgreSQL (the second UPDATE of a row waits
for the first and then sees its result; a second INSERT of a key does nothing):

- take it: the row is absent, or it ran out, or it is already ours;
- renew it: only while it is still ours (False: another process took it);
- release it: delete it, if it is still ours.

Times come from the caller's clock (``layerbot.clock``): replicas on several machines must
have clocks that agree to well within the lock's time to live.

Apart from those, :func:`serialize_reports`: a lock for the length of one transaction, so
that the PR's reports are derived by one writer at a time.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from layerbot import clock
from layerbot.store.db import Store
from layerbot.store.models import SingletonLock

#: The longest key the table holds (``singleton_locks.name``).
MAX_KEY = 100


def new_holder(replica: str) -> str:
    """A holder id unique to this process: ``replica/pid/random``; ``replica/`` is its
    prefix, shared by the earlier runs of the same replica."""
    return f"{replica}/{os.getpid()}/{uuid.uuid4().hex[:8]}"[:200]


def holder_prefix(replica: str) -> str:
    return f"{replica}/"


@dataclass(frozen=True)
class Held:
    """A lock as the store has it."""

    name: str
    holder: str
    acquired_at: datetime
    expires_at: datetime


class SingletonLocks:
    """The locks of one instance, taken as ``holder``."""

    def __init__(self, store: Store, instance: str, holder: str) -> None:
        self.store = store
        self.instance = instance
        self.holder = holder

    def key(self, name: str) -> str:
        """The row of lock ``name`` of this instance (instances may share a database)."""
        key = f"{self.instance}/{name}"
        if len(key) <= MAX_KEY:
            return key
        digest = hashlib.sha256(self.instance.encode()).hexdigest()[:12]
        return f"{self.instance[:MAX_KEY - len(name) - 14]}~{digest}/{name}"[:MAX_KEY]

    def try_acquire(self, name: str, ttl: timedelta, now: datetime | None = None,
                    take_from: str | None = None) -> bool:
        """Take lock ``name`` for ``ttl`` if it is free, ran out, or is ours already.

        ``take_from``: a holder prefix (an earlier, dead run of this replica) whose lock
        may be taken before it runs out.
        """
        now = now or clock.now()
        key = self.key(name)
        with self.store.transaction() as session:
            ours = _rows(session.execute(
                update(SingletonLock)
                .where(SingletonLock.name == key, SingletonLock.holder == self.holder)
                .values(expires_at=now + ttl)
                .execution_options(synchronize_session=False)))
            if ours:
                return True
            free = [SingletonLock.expires_at < now]
            if take_from:
                free.append(SingletonLock.holder.startswith(take_from, autoescape=True))
            taken = _rows(session.execute(
                update(SingletonLock)
                .where(SingletonLock.name == key, or_(*free))
                .values(holder=self.holder, acquired_at=now, expires_at=now + ttl)
                .execution_options(synchronize_session=False)))
            if taken:
                return True
            insert = sqlite_insert if self.store.is_sqlite else pg_insert
            # The row comes back if it was inserted (an INSERT's row count is not
            # reported on every driver).
            return session.execute(
                insert(SingletonLock)
                .values(name=key, holder=self.holder, acquired_at=now, expires_at=now + ttl)
                .on_conflict_do_nothing()
                .returning(SingletonLock.name)).first() is not None

    def renew(self, name: str, ttl: timedelta, now: datetime | None = None) -> bool:
        """Extend lock ``name`` if it is still ours; False if another process took it."""
        now = now or clock.now()
        with self.store.transaction() as session:
            return _rows(session.execute(
                update(SingletonLock)
                .where(SingletonLock.name == self.key(name),
                       SingletonLock.holder == self.holder)
                .values(expires_at=now + ttl)
                .execution_options(synchronize_session=False))) == 1

    def release(self, name: str) -> bool:
        """Free lock ``name`` if it is ours (another replica may take it at once)."""
        with self.store.transaction() as session:
            return _rows(session.execute(
                delete(SingletonLock)
                .where(SingletonLock.name == self.key(name),
                       SingletonLock.holder == self.holder)
                .execution_options(synchronize_session=False))) == 1

    def held(self, name: str) -> Held | None:
        """Lock ``name`` as stored (whoever holds it, expired or not)."""
        with self.store.read() as session:
            row = session.get(SingletonLock, self.key(name))
            return (Held(name, row.holder, row.acquired_at, row.expires_at)
                    if row is not None else None)

    def held_all(self, names: list[str]) -> dict[str, Held]:
        """Locks ``names`` as stored (one query; a lock never taken is left out)."""
        keys = {self.key(n): n for n in names}
        with self.store.read() as session:
            rows = session.scalars(select(SingletonLock).where(
                SingletonLock.name.in_(list(keys)))).all()
            return {keys[r.name]: Held(keys[r.name], r.holder, r.acquired_at, r.expires_at)
                    for r in rows}


def _rows(result: object) -> int:
    return int(result.rowcount)  # type: ignore[attr-defined]


def serialize_reports(session: Session, repo: str, pr: int) -> None:
    """Until the caller's transaction ends, no other transaction derives this PR's reports.

    A report (the build reply, the deploy reply) is rendered from the rows as the
    transaction reads them and replaces the comment's whole body. Two transactions that
    change the same PR at once (two agents reporting, or an agent and the worker) would
    each render without the other's change, and the one committed last would leave the PR
    showing a state that is no longer true, for good. Taken before the rows are read, this
    lock makes the second wait for the first's commit and then read its rows (PostgreSQL
    reads each statement afresh). On PostgreSQL a transaction-level advisory lock (taken
    again by its holder at once, released with the transaction); SQLite runs one writing
    transaction at a time already.
    """
    if session.get_bind().dialect.name != "postgresql":
        return
    digest = hashlib.sha256(f"report:{repo}#{pr}".encode()).digest()
    key = int.from_bytes(digest[:8], "big", signed=True)
    session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
