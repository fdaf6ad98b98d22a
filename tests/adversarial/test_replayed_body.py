"""Attack: a captured signed webhook body, sent again under a fresh `X-GitHub-Delivery`.

The signature covers the body only, so the replay verifies. Before the fix the inbox
de-duplicated on the unsigned delivery headers alone and the replay built again; now the
event's own identity (from the body) is unique in the store, and the replay triggers
nothing. A genuine GitHub redelivery (same delivery id) stays a plain duplicate.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.adversarial.events_env import NAME, OWNER, handled, session
from tests.support.botproc import SECRET
from tests.support.e2e import Session
from tests.support.webhooks import (
    delivery_headers,
    encode,
    issue_comment_created,
    pull_request_event,
)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    with session(tmp_path_factory.mktemp("replay")) as s:
        yield s


def post(env: Session, event: str, body: bytes, delivery_id: str | None = None
         ) -> httpx.Response:
    return httpx.post(env.bot.url + "/webhook", content=body, timeout=10,
                      headers=delivery_headers(event, body, SECRET, delivery_id=delivery_id))


def test_a_replayed_build_command_builds_nothing(env: Session) -> None:
    env.pr(1)
    comment_id = env.fake.add_comment(OWNER, NAME, 1, "bot: build", login="alice")
    body = encode(issue_comment_created("bot: build", "alice", pr_number=1,
                                        comment_id=comment_id))
    first = post(env, "issue_comment", body, "genuine-1")
    assert first.status_code == 202
    env.build_reply(1)
    assert len(env.jobs(1)) == 1
    again = post(env, "issue_comment", body, "genuine-1")  # GitHub's own redelivery
    assert again.status_code == 200 and "already received" in again.text
    for n in range(3):  # the attacker's copies, each under a fresh delivery id
        replay = post(env, "issue_comment", body, f"forged-{n}")
        assert replay.status_code == 200, replay.text
        assert "another delivery id" in replay.text
    time.sleep(2)
    assert len(env.jobs(1)) == 1
    assert env.fake.reactions(comment_id) == ["eyes"]
    with env.db() as conn:
        stored = conn.execute("SELECT delivery_id FROM inbox_events WHERE event = "
                              "'issue_comment'").fetchall()
    assert [r[0] for r in stored] == ["genuine-1"]
    metrics = httpx.get(env.bot.url + "/metrics", timeout=10).text
    assert 'layerbot_deliveries_total{outcome="replayed"} 3.0' in metrics


def test_a_replayed_push_and_other_comments_still_count(env: Session) -> None:
    """Identity is per occurrence: a new comment and a new push are not replays."""
    sha = env.pr(2)
    push = encode(pull_request_event("synchronize", 2, sha))
    assert post(env, "pull_request", push).status_code == 202
    assert post(env, "pull_request", push).status_code == 200  # the same push, replayed
    handled(env, "pull_request", "synchronize", 1, 2)
    time.sleep(1.1)  # a comment in the push's second counts as older (core/pinning.py)
    env.comment(2, "bot: build")
    assert "1/1 done" in env.build_reply(2).body
    env.comment(2, "bot: build")  # a second comment is another event: it builds again
    env.fake.wait_for(lambda: len(env.jobs(2)) == 2, timeout=30)


def test_replay_dedup_survives_the_second_copy_arriving_in_the_same_batch(
        env: Session) -> None:
    env.pr(3)
    comment_id = env.fake.add_comment(OWNER, NAME, 3, "bot: status", login="alice")
    body = encode(issue_comment_created("bot: status", "alice", pr_number=3,
                                        comment_id=comment_id))

    async def burst() -> list[int]:
        async with httpx.AsyncClient(timeout=10) as client:
            responses = await asyncio.gather(*(
                client.post(env.bot.url + "/webhook", content=body,
                            headers=delivery_headers("issue_comment", body, SECRET))
                for _ in range(10)))
        return sorted(r.status_code for r in responses)

    assert asyncio.run(burst()) == [200] * 9 + [202]
