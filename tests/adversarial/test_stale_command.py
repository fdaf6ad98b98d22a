"""Attack: a push between review and handling gets built although nobody saw it.

A reviewer writes `bot: build` (or pins `sha:`) for the commit they read; the author pushes
another commit before the bot handles the command. Before the fix the bot built whatever
the head was when it handled the command. Now a pinned command builds only its commit, a
command written before the latest push builds nothing and asks again, and
`build.require_sha` makes the pin mandatory. Every reply states the SHA.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from tests.adversarial.events_env import NAME, OWNER, handled, session
from tests.support.e2e import Session
from tests.support.webhooks import issue_comment_created, pull_request_event


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    with session(tmp_path_factory.mktemp("stale")) as s:
        yield s


def stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def push(env: Session, number: int) -> str:
    """The author pushes a new commit; GitHub sends `synchronize` (handled before we go on)."""
    sha = env.origin.push_pr(number, {"NEWS": f"push to {number}\n"})
    env.fake.update_pull(OWNER, NAME, number, head_sha=sha)
    env.send("pull_request", pull_request_event("synchronize", number, sha))
    handled(env, "pull_request", "synchronize", 1, number)
    return sha


def reply_with(env: Session, number: int, text: str) -> str:
    found = env.fake.wait_for(
        lambda: next((c for c in env.replies(number) if text in c.body), None), timeout=30,
        message=f"no reply with {text!r} on PR {number}")
    return str(found.body)


def test_a_command_written_before_the_latest_push_builds_nothing(env: Session) -> None:
    env.pr(1)
    written = datetime.now(UTC) - timedelta(seconds=5)  # the reviewer, before the push
    new = push(env, 1)
    comment_id = env.fake.add_comment(OWNER, NAME, 1, "bot: build", login="alice")
    env.send("issue_comment", issue_comment_created(
        "bot: build", "alice", pr_number=1, comment_id=comment_id, created_at=stamp(written)))
    body = reply_with(env, 1, "written before the latest push")
    assert "write the command again" in body and new[:12] in body
    time.sleep(1)
    assert env.jobs(1) == []
    time.sleep(1.1)  # the same command written after the push builds, and says what
    env.comment(1, "bot: build")
    reply = env.build_reply(1)
    assert new[:12] in reply.body
    assert {j["head_sha"] for j in env.jobs(1)} == {new}


def test_a_pinned_commit_that_is_no_longer_the_head_is_not_built(env: Session) -> None:
    seen = env.pr(2)
    new = push(env, 2)
    time.sleep(1.1)
    env.comment(2, f"bot: build sha:{seen[:7]}")  # what the reviewer saw; the head moved
    body = reply_with(env, 2, "nothing was built")
    assert f"now `{new[:12]}`" in body and seen[:7] in body and f"sha:{new[:12]}" in body
    time.sleep(1)
    assert env.jobs(2) == []
    env.comment(2, f"bot: build sha:{new[:10]}")
    assert new[:12] in env.build_reply(2).body
    assert {j["head_sha"] for j in env.jobs(2)} == {new}


def test_require_sha_refuses_an_unpinned_build(tmp_path_factory: pytest.TempPathFactory
                                                ) -> None:
    with session(tmp_path_factory.mktemp("require-sha"), require_sha=True) as env:
        head = env.pr(3)
        env.comment(3, "bot: build")
        body = reply_with(env, 3, "pinned commits only")
        assert f"bot: build sha:{head[:12]}" in body
        time.sleep(1)
        assert env.jobs(3) == []
        env.comment(3, f"bot: build sha:{head}")
        assert head[:12] in env.build_reply(3).body


def test_a_push_whose_event_has_not_arrived_yet_is_not_built(env: Session) -> None:
    """The race: the command is handled after the push but before its `synchronize`."""
    seen = env.pr(4)
    env.send("pull_request", pull_request_event("opened", 4, seen))
    handled(env, "pull_request", "opened", 1, 4)
    new = env.origin.push_pr(4, {"NEWS": "sneaked in\n"})
    env.fake.update_pull(OWNER, NAME, 4, head_sha=new)  # GitHub has it; the event is late
    time.sleep(1.1)
    env.comment(4, "bot: build")
    body = reply_with(env, 4, "written before the latest push")
    assert new[:12] in body
    time.sleep(1)
    assert env.jobs(4) == []
    env.send("pull_request", pull_request_event("synchronize", 4, new))
    handled(env, "pull_request", "synchronize", 1, 4)
    time.sleep(1.1)
    env.comment(4, "bot: build")
    assert new[:12] in env.build_reply(4).body
