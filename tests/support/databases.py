"""Fresh PostgreSQL databases for tests and benchmarks: made, handed over, dropped."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError


@contextmanager
def fresh_database(admin_url: str, prefix: str = "t") -> Iterator[str]:
    """The URL of a new, empty database on the server of ``admin_url``; dropped after,
    even with connections still open (a killed bot's)."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        for attempt in range(5):  # a backend of another role (autovacuum) may be on it
            try:
                with admin.connect() as conn:
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                break
            except DBAPIError:
                if attempt == 4:
                    raise
                time.sleep(0.2 * (attempt + 1))
        admin.dispose()
