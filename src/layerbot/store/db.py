"""Engine and sessions: SQLite (WAL) by default, PostgreSQL by URL; migrations at start."""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).parent / "migrations"


class Store:
    """The database: one engine, short transactions, migrations applied on open."""

    def __init__(self, url: str, *, migrate: bool = True, durable: bool = True,
                 checkpoints: bool = True, pace: Callable[[], object] | None = None) -> None:
        """``durable=False`` (SQLite): commits reach the OS, not the disk, before returning.

        They survive a crash of the process, not of the machine. The worker process uses it
        for its bookkeeping: what GitHub sent is written durably by the receiver, and
        everything after it can be derived again from the inbox.

        ``checkpoints=False`` (SQLite): this process's commits never copy the WAL back into
        the database file (a stall of 100 ms or more); the worker process's commits do it.

        ``pace``: called before each transaction and read, outside any lock (not for a read
        made inside a transaction); the worker process's store waits there while the
        receiver is answering (``app/answers_first``).
        """
        self._pace = pace or _go
        #: Whether this thread is in a transaction (they do not nest: the write lock is not
        #: reentrant): a read inside one must not pace, it would wait with the lock held.
        self._thread_state = threading.local()
        self.url = url
        self.engine = make_engine(url, writer=True, durable=durable, checkpoints=checkpoints)
        # SQLite: readers get their own engine with deferred transactions, so that reads
        # (dashboard, API) never wait for the write lock that writers take up front.
        self.read_engine = (make_engine(url, writer=False) if url.startswith("sqlite")
                            else self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        # SQLite has one writer at a time; queueing writers on a lock here hands the database
        # over at once, where SQLite's own busy handler would sleep and retry (up to 100 ms).
        self._write_lock: Any = (_SQLiteWriteLock(url) if self.is_sqlite_url(url)
                                 else nullcontext())
        self._read_sessions = sessionmaker(self.read_engine, expire_on_commit=False)
        if migrate:
            upgrade(self.engine)

    @staticmethod
    def is_sqlite_url(url: str) -> bool:
        return url.startswith("sqlite")

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session whose work is committed on success and rolled back on error."""
        self._pace_outside_transactions()
        with self._write_lock, self._sessions() as session, session.begin():
            self._thread_state.in_transaction = True
            try:
                yield session
            finally:
                self._thread_state.in_transaction = False

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A session for reading only."""
        self._pace_outside_transactions()
        with self._read_sessions() as session, session.begin():
            yield session

    def _pace_outside_transactions(self) -> None:
        if not getattr(self._thread_state, "in_transaction", False):
            self._pace()

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def close(self) -> None:
        self.engine.dispose()
        self.read_engine.dispose()


def _go() -> None:
    """The pace of a store that waits for nothing."""


class _SQLiteWriteLock:
    """One writer at a time across threads (a lock) and processes (flock on a side file).

    `layerbot serve`, `layerbot run` and the CLI may share one SQLite file; waiting on a
    lock wakes a writer the moment the database is free.
    """

    def __init__(self, url: str) -> None:
        self._thread_lock = threading.Lock()
        path = url.split("///", 1)[1] if "///" in url else ""
        self._fd: int | None = None
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(path + ".writelock", os.O_RDWR | os.O_CREAT, 0o600)

    def __enter__(self) -> None:
        self._thread_lock.acquire()
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._thread_lock.release()


def make_engine(url: str, *, writer: bool = True, durable: bool = True,
                checkpoints: bool = True) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[1] if "///" in url else ""
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
        sync = "FULL" if durable else "NORMAL"
        every = 1000 if checkpoints else 0  # WAL pages between automatic checkpoints
        event.listen(engine, "connect", lambda conn, _rec: _sqlite_pragmas(conn, sync, every))
        # pysqlite's own transaction handling defers BEGIN; emit it ourselves so that
        # writers take the lock up front (BEGIN IMMEDIATE) instead of failing on upgrade.
        begin = "BEGIN IMMEDIATE" if writer else "BEGIN"
        event.listen(engine, "begin", lambda conn: conn.exec_driver_sql(begin))
        return engine
    return create_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True)


def _sqlite_pragmas(dbapi_conn: Any, synchronous: str, autocheckpoint: int) -> None:
    dbapi_conn.isolation_level = None  # we send BEGIN ourselves (see make_engine)
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    # FULL: a commit is on disk before we answer GitHub (a power cut loses nothing).
    cur.execute(f"PRAGMA synchronous={synchronous}")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute(f"PRAGMA wal_autocheckpoint={autocheckpoint}")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def alembic_config(engine: Engine) -> Any:
    from alembic.config import Config as AlembicConfig  # imported here: slow, needed once

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


#: PostgreSQL advisory lock held while migrating (any constant, the same in every replica).
MIGRATION_LOCK = 0x6C61796572626F74  # "layerbot"


def upgrade(engine: Engine) -> None:
    """Apply the migrations. On PostgreSQL, replicas starting together take turns (an
    advisory lock): the second finds the schema done instead of creating it twice."""
    from alembic import command

    if engine.dialect.name != "postgresql":
        command.upgrade(alembic_config(engine), "heads")
        return
    with engine.connect() as conn:
        conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK})
        try:
            command.upgrade(alembic_config(engine), "heads")
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK})
            conn.commit()
