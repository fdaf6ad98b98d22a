"""A real `layerbot serve` for the web-authorization attacks: the fake GitHub knows three
repositories and three people, and the bot serves two of the repositories.

* ``octo-org/stack`` (served; alice writes, mona maintains, eve is nobody there),
* ``octo-org/other`` (served; mallory writes there, and only there),
* ``mallory-org/evil`` (not served: another installation, where mallory is admin).

The loops run in the web process (``worker_process = false``), so /metrics counts what
the event workers do.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from tests.support.e2e import Session, start_session
from tests.support.fakegithub import FakeGitHub
from tests.support.webhooks import DEFAULT_REPO

OWNER, NAME = DEFAULT_REPO.split("/")
OTHER = f"{OWNER}/other"
EVIL = "mallory-org/evil"
EVIL_INSTALLATION = 9_990_001


@contextmanager
def session(tmp: Path, **extra: Any) -> Iterator[Session]:
    def others(fake: FakeGitHub) -> None:
        fake.add_installation(EVIL_INSTALLATION, "mallory-org")
        for repo, login, role in ((DEFAULT_REPO, "mona", "maintain"),
                                  (OTHER, "mallory", "write"), (EVIL, "mallory", "admin")):
            fake.set_permission(*repo.split("/"), login, role)

    with start_session(tmp, prepare=others, extra={
            "github": {"repositories": [DEFAULT_REPO, OTHER]},
            "server": {"worker_process": False},
            "repo_targets": [{"id": "eessi-2023.06"}], **extra}) as started:
        yield started


def finished_events(env: Session, event: str) -> list[tuple[str, str]]:
    """(status, outcome) of the finished inbox events of this kind, oldest first."""
    with env.db() as conn:
        rows = conn.execute("SELECT status, outcome FROM inbox_events WHERE event = ? AND "
                            "status IN ('handled', 'ignored') ORDER BY id", (event,)).fetchall()
    return [(r["status"], r["outcome"] or "") for r in rows]


def wait_finished(env: Session, event: str, count: int, timeout: float = 30
                  ) -> list[tuple[str, str]]:
    env.fake.wait_for(lambda: len(finished_events(env, event)) >= count, timeout=timeout,
                      message=f"{count} {event} events not finished")
    return finished_events(env, event)


def metric(env: Session, name: str, **labels: str) -> float:
    """A sample of the bot's /metrics (0 when absent)."""
    text = httpx.get(env.bot.url + "/metrics", timeout=10).text
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        sample, _, value = line.rpartition(" ")
        if sample in (f"{name}{{{want}}}", name if not labels else ""):
            return float(value)
    return 0.0
