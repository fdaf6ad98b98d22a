"""Two `layerbot serve` replicas on one PostgreSQL database, behind no balancer but the
test: events go to either; the replica that sends to GitHub is SIGKILLed while jobs run;
the other takes its singleton loops over and every reply arrives, each comment created once.

Both replicas run the local executor on one data directory (one machine): the job loops are
a singleton, so whichever replica holds them submits and watches every job, and the jobs
(detached launchers) outlive a replica that dies.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from tests.support.botproc import BotProcess, free_port, merged, write_config
from tests.support.e2e import BASE_CONFIG, OWNER, Session, all_done
from tests.support.fakegithub import FakeGitHub, generate_app_key
from tests.support.origin import Origin
from tests.support.webhooks import DEFAULT_APP_ID, DEFAULT_INSTALLATION_ID, DEFAULT_REPO

NAME = DEFAULT_REPO.split("/")[1]
INSTANCE = "test-a"
TTL = 3.0

SLOW_BUILD = """#!/usr/bin/env bash
echo started
sleep ${SLEEP:-30}
echo '{"status": "success", "summary": "slow build done", "artifacts": []}' > result.json
"""


class Replicas:
    def __init__(self, fake: FakeGitHub, origin: Origin, bots: list[BotProcess],
                 pg_url: str) -> None:
        self.fake = fake
        self.sessions = [Session(fake, origin, bot) for bot in bots]
        self.db = create_engine(pg_url)

    def rows(self, sql: str, **params: Any) -> list[Any]:
        with self.db.connect() as conn:
            return list(conn.execute(text(sql), params).mappings())

    def jobs(self, pr: int) -> list[Any]:
        return self.rows("SELECT * FROM jobs WHERE pr = :pr ORDER BY id", pr=pr)

    def wait(self, predicate: Any, timeout: float, what: str) -> None:
        try:
            self.fake.wait_for(predicate, timeout=timeout, message=what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.state()}") from None

    def state(self) -> str:
        """The events, jobs and locks in the store, to say what went wrong."""
        events = self.rows("SELECT id, delivery_id, status, claimed_by, attempts, outcome, "
                           "error FROM inbox_events ORDER BY id")
        jobs = self.rows("SELECT id, pr, state, reason FROM jobs ORDER BY id")
        locks = self.rows("SELECT * FROM singleton_locks")
        sessions = self.rows("SELECT pid, state, wait_event_type, wait_event, "
                             "left(query, 300) AS query FROM pg_stat_activity "
                             "WHERE datname = current_database() AND pid != pg_backend_pid()")
        return "\n".join(["events:", *map(str, events), "jobs:", *map(str, jobs),
                          "locks:", *map(str, locks), "sessions:", *map(str, sessions)])

    def holder(self, singleton: str) -> Session:
        """The replica whose process holds a singleton's lock (by its port)."""
        (row,) = self.rows("SELECT holder FROM singleton_locks WHERE name = :name",
                           name=f"{INSTANCE}/{singleton}")
        port = int(re.match(r"[^/]*:(\d+)/", row["holder"]).group(1))  # type: ignore[union-attr]
        return next(s for s in self.sessions if s.bot.port == port)


@pytest.fixture
def replicas(tmp_path: Path, pg_url: str) -> Iterator[Replicas]:
    private, _ = generate_app_key()
    fake = FakeGitHub(DEFAULT_APP_ID, private)
    fake.add_installation(DEFAULT_INSTALLATION_ID, OWNER)
    fake.set_permission(OWNER, NAME, "alice", "write")
    fake.start()
    origin = Origin(tmp_path / "origin", DEFAULT_REPO)
    settings = merged(BASE_CONFIG, {
        "build": {"clone_url": str(tmp_path / "origin" / "{repo}"),
                  "allowed_exportvars": ["SLEEP"]},
        "backend": {"local": {"max_concurrent": 8}},
        # one machine: the local executor's jobs and state are shared by both replicas
        "instance": {"data_dir": str(tmp_path / "data")},
        "server": {"singleton_ttl_seconds": TTL},
        "inbox": {"lease_seconds": 6},
    })
    bots = []
    for name in ("a", "b"):
        port = free_port()
        config = write_config(tmp_path / name, api_url=fake.url, app_id=DEFAULT_APP_ID,
                              private_key_pem=private, port=port, store_url=pg_url,
                              instance=INSTANCE, extra=settings)
        bots.append(BotProcess(config, port))
    env = Replicas(fake, origin, bots, pg_url)
    try:
        with ThreadPoolExecutor(2) as pool:  # started together: they migrate in turn
            list(pool.map(lambda bot: bot.start(), bots))
        yield env
    finally:
        for bot in bots:
            bot.stop()
        env.db.dispose()
        fake.stop()
    fake.assert_no_violations()


def test_the_sender_dies_while_jobs_run_and_the_other_replica_carries_on(
        replicas: Replicas) -> None:
    env = replicas
    first, second = env.sessions
    fake = env.fake
    prs = [1, 2, 3, 4]
    for pr in prs:
        first.pr(pr, files={"bot/build.sh": SLOW_BUILD})
    for pr in prs:  # to either replica, as a load balancer would
        (first if pr % 2 else second).comment(pr, "bot: build exportvariable:SLEEP=5")
    env.wait(lambda: all(len(env.jobs(pr)) == 1 and env.jobs(pr)[0]["state"] == "running"
                         for pr in prs), 30, "jobs not running")
    fake.wait_for(lambda: all(first.replies(pr) for pr in prs), timeout=15,
                  message="build replies not created")

    sender = env.holder("github-sender")
    survivor = second if sender is first else first
    jobs_held_by_sender = env.holder("builtin-agent") is sender
    sender.bot.kill()  # SIGKILL, web and worker process: its locks are left to run out
    killed = time.monotonic()
    # Work keeps arriving, at the replica that is left.
    for pr in (5, 6):
        survivor.pr(pr, files={"bot/build.sh": SLOW_BUILD})
        survivor.comment(pr, "bot: build exportvariable:SLEEP=1")

    def finished() -> bool:
        return all(any("build requested by" in c.body and all_done(c.body)
                       for c in survivor.replies(pr)) for pr in [*prs, 5, 6])

    env.wait(finished, 45, "not every build reply finished")
    took = time.monotonic() - killed
    assert env.holder("github-sender") is survivor
    assert env.holder("builtin-agent") is survivor
    for pr in [*prs, 5, 6]:
        (reply,) = [c for c in survivor.replies(pr) if "build requested by" in c.body]
        assert "1/1 done, 1 succeeded" in reply.body, reply.body
    # Each reply comment was created by exactly one POST: none twice, by either replica.
    posts = Counter(int(r.path_params["issue_number"])
                    for r in fake.calls("issues/create-comment")
                    if "build requested by" in (r.json or {}).get("body", ""))
    assert posts == {pr: 1 for pr in [*prs, 5, 6]}, posts
    # Events went to both replicas and each was handled once.
    handled = env.rows("SELECT status, count(*) AS n FROM inbox_events GROUP BY status")
    assert {r["status"]: r["n"] for r in handled} == {"handled": 6}
    assert "singleton lock taken" in survivor.bot.log()
    print(f"taken over and finished {took:.1f} s after the kill; "
          f"the killed replica {'also' if jobs_held_by_sender else 'did not'} ran the jobs")
