"""A real `layerbot serve` with the fake GitHub, for the attacks on events (edited comments,
stale commands, replayed bodies): one node type and one repository target, so one
`bot: build` is one job."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.support.e2e import Session, start_session
from tests.support.webhooks import DEFAULT_REPO

OWNER, NAME = DEFAULT_REPO.split("/")


@contextmanager
def session(tmp: Path, **build: Any) -> Iterator[Session]:
    with start_session(tmp, permissions={"alice": "write", "mallory": "write"},
                       extra={"build": build}) as started:
        yield started


def handled(env: Session, event: str, action: str, count: int, pr: int,
            timeout: float = 30) -> None:
    """Wait until ``count`` inbox events of this kind on PR ``pr`` are finished."""
    def done() -> bool:
        with env.db() as conn:
            n = conn.execute("SELECT count(*) FROM inbox_events WHERE event = ? AND action = ? "
                             "AND ordering_key = ? AND status IN ('handled', 'ignored')",
                             (event, action, f"{OWNER}/{NAME}#{pr}")).fetchone()
        return bool(n[0] >= count)
    env.fake.wait_for(done, timeout=timeout, message=f"{count} {event}.{action} not handled")
