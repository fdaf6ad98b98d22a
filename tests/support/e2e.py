"""An end-to-end session: a fake GitHub, a real git origin and a real `layerbot serve`.

What a test does to a PR (open it, comment, push) and what it reads back (the bot's
replies, the jobs in the store), shared by the end-to-end modules.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from tests.support.botproc import SECRET, BotProcess, free_port, merged, write_config
from tests.support.fakegithub import FakeGitHub, generate_app_key
from tests.support.origin import Origin
from tests.support.webhooks import (
    DEFAULT_APP_ID,
    DEFAULT_INSTALLATION_ID,
    DEFAULT_REPO,
    delivery_headers,
    encode,
    issue_comment_created,
)

OWNER, NAME = DEFAULT_REPO.split("/")
BOT_LOGIN = "layerbot[bot]"


def all_done(body: str) -> bool:
    """A build reply whose jobs have all ended ("(n/n done, ...)")."""
    m = re.search(r"\((\d+)/(\d+) done", body)
    return m is not None and m.group(1) == m.group(2)


class Session:
    def __init__(self, fake: FakeGitHub, origin: Origin, bot: BotProcess) -> None:
        self.fake = fake
        self.origin = origin
        self.bot = bot

    def send(self, event: str, payload: dict[str, Any]) -> None:
        body = encode(payload)
        response = httpx.post(self.bot.url + "/webhook", content=body,
                              headers=delivery_headers(event, body, SECRET), timeout=10)
        assert response.status_code == 202, response.text

    def comment(self, number: int, body: str, login: str = "alice") -> int:
        comment_id = self.fake.add_comment(OWNER, NAME, number, body, login=login)
        self.send("issue_comment", issue_comment_created(body, login, pr_number=number,
                                                         comment_id=comment_id))
        return comment_id

    def pr(self, number: int, **kwargs: Any) -> str:
        sha = self.origin.open_pr(number, **kwargs)
        self.fake.add_pull(OWNER, NAME, number, head_sha=sha)
        return sha

    def replies(self, number: int) -> list[Any]:
        return [c for c in self.fake.comments(OWNER, NAME, number) if c.user == BOT_LOGIN]

    def build_reply(self, number: int, timeout: float = 60, done: bool = True) -> Any:
        def find() -> Any:
            for c in self.replies(number):
                if "build requested by" in c.body and (not done or all_done(c.body)):
                    return c
            return None
        return self.fake.wait_for(find, timeout=timeout,
                                  message=f"no finished build reply on PR {number}; jobs: "
                                          f"{[dict(j) for j in self.jobs(number)]}")

    def db(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.bot.config.parent / "layerbot.db")
        conn.row_factory = sqlite3.Row
        return conn

    def jobs(self, number: int) -> list[sqlite3.Row]:
        with self.db() as conn:
            return conn.execute("SELECT * FROM jobs WHERE pr = ? ORDER BY id",
                                (number,)).fetchall()

    def wait_jobs(self, number: int, state: str, count: int, timeout: float = 60) -> list[Any]:
        def ready() -> list[Any]:
            jobs = self.jobs(number)
            ok = len(jobs) == count and all(j["state"] == state for j in jobs)
            return list(jobs) if ok else []
        return self.fake.wait_for(ready, timeout=timeout,
                                  message=f"PR {number}: not {count} jobs {state}")


#: The bot of an end-to-end session unless a test says otherwise: one node type, one
#: repository target, quick polls, PRs fetched from the session's origin.
BASE_CONFIG: dict[str, Any] = {
    "build": {"time_limit_minutes": 2},
    "backend": {"poll_seconds": 0.3},
    "node_types": [{"name": "zen2", "cpu_target": "x86_64/amd/zen2"}],
    "repo_targets": [{"id": "eessi-2023.06", "name": "software.eessi.io",
                      "version": "2023.06"}],
}


@contextmanager
def start_session(
    tmp: Path,
    *,
    extra: Mapping[str, Any] | None = None,
    permissions: Mapping[str, str] | None = None,
    instance: str = "test-a",
    bot_env: Mapping[str, str] | None = None,
    prepare: Callable[[FakeGitHub], None] | None = None,
) -> Iterator[Session]:
    """A fake GitHub (``permissions``: login -> role on the default repository), a real
    origin under ``tmp`` and a started `layerbot serve` configured by ``BASE_CONFIG`` and
    ``extra``; stopped afterwards, and every request the fake saw checked against the
    OpenAPI description. ``prepare(fake)`` may add installations or permissions first."""
    private, _ = generate_app_key()
    fake = FakeGitHub(DEFAULT_APP_ID, private)
    fake.add_installation(DEFAULT_INSTALLATION_ID, OWNER)
    for login, role in (permissions or {"alice": "write"}).items():
        fake.set_permission(OWNER, NAME, login, role)
    if prepare is not None:
        prepare(fake)
    fake.start()
    origin = Origin(tmp / "origin", DEFAULT_REPO)
    port = free_port()
    settings = merged(BASE_CONFIG, {"build": {"clone_url": str(tmp / "origin" / "{repo}")}})
    config = write_config(tmp / "bot", api_url=fake.url, app_id=DEFAULT_APP_ID,
                          private_key_pem=private, port=port, instance=instance,
                          extra=merged(settings, extra or {}))
    bot = BotProcess(config, port, env=dict(bot_env or {}))
    try:
        bot.start()
        yield Session(fake, origin, bot)
    finally:
        bot.stop()
        fake.stop()
    fake.assert_no_violations()
