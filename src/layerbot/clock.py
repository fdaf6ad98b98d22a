"""The one place the wall clock is read (the pure core takes times as arguments)."""

from datetime import UTC, datetime


def now() -> datetime:
    return datetime.now(UTC)
