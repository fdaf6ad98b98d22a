"""A real `layerbot serve` with the fake GitHub, for the attacks on events (edited comments,
stale commands, replayed bodies): one node type and one repository target, so one
`bot: build` is one job."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.support.botproc import BotProcess, free_port, write_config
from tests.support.e2e import Session
from tests.support.fakegithub import FakeGitHub, generate_app_key
from tests.support.origin import Origin
from tests.support.webhooks import DEFAULT_APP_ID, DEFAULT_INSTALLATION_ID, DEFAULT_REPO

OWNER, NAME = DEFAULT_REPO.split("/")


@contextmanager
def session(tmp: Path, **build: Any) -> Iterator[Session]:
    private, _ = generate_app_key()
    fake = FakeGitHub(DEFAULT_APP_ID, private)
    fake.add_installation(DEFAULT_INSTALLATION_ID, OWNER)
    fake.set_permission(OWNER, NAME, "alice", "write")
    fake.set_permission(OWNER, NAME, "mallory", "write")
    fake.start()
    origin = Origin(tmp / "origin", DEFAULT_REPO)
    port = free_port()
    config = write_config(tmp / "bot", api_url=fake.url, app_id=DEFAULT_APP_ID,
                          private_key_pem=private, port=port, extra={
                              "build": {"clone_url": str(tmp / "origin" / "{repo}"),
                                        "time_limit_minutes": 2, **build},
                              "backend": {"poll_seconds": 0.3},
                              "node_types": [{"name": "zen2",
                                              "cpu_target": "x86_64/amd/zen2"}],
                              "repo_targets": [{"id": "eessi-2023.06",
                                                "name": "software.eessi.io",
                                                "version": "2023.06"}]})
    bot = BotProcess(config, port)
    bot.start()
    try:
        yield Session(fake, origin, bot)
    finally:
        bot.stop()
        fake.stop()
    fake.assert_no_violations()


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
