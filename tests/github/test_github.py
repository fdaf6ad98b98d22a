"""The GitHub side against the fake GitHub: tokens, the outbox sender, missed deliveries."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from layerbot import clock
from layerbot.config import GitHubConfig, OutboxConfig
from layerbot.github.client import GitHubApp, GitHubError
from layerbot.github.deliveries import recover_once, to_redeliver
from layerbot.github.sender import Sender, retry_at
from layerbot.github.writes import Performer, enqueue_comment, enqueue_reaction
from layerbot.store.db import Store
from layerbot.store.inbox import Delivery, Inbox
from layerbot.store.outbox import Outbox
from tests.support.fakegithub import FakeGitHub
from tests.support.fixtures import DEFAULT_INSTALLATION_ID, DEFAULT_REPO
from tests.support.webhooks import DEFAULT_APP_ID

OWNER, NAME = DEFAULT_REPO.split("/")
CONFIG = OutboxConfig(backoff_seconds=0.05, backoff_max_seconds=0.2, max_attempts=5)


def app_for(fake: FakeGitHub, key: str, timeout_seconds: float = 30.0) -> GitHubApp:
    from pydantic import SecretStr

    return GitHubApp(GitHubConfig(app_id=DEFAULT_APP_ID, api_url=fake.url,
                                  private_key=SecretStr(key), timeout_seconds=timeout_seconds))


#: Creates answered after 1 s time out (0.5 s); a retry waits 1.5 s for them to land.
LATE_CREATE = OutboxConfig(backoff_seconds=0.05, backoff_max_seconds=0.2, max_attempts=5,
                           in_flight_seconds=1.5)


def replies_once_landed(fake: FakeGitHub, issue: int) -> list[str]:
    """The bot's comments on ``issue`` once the delayed create has landed (and whatever
    else was on its way)."""
    fake.wait_for(lambda: fake.count("issues/create-comment") >= 1, timeout=5,
                  message="the delayed create never landed")
    time.sleep(0.5)
    return [c.body for c in fake.comments(OWNER, NAME, issue) if c.user == "layerbot[bot]"]


@pytest.fixture
def outbox(tmp_path: Path) -> Outbox:
    return Outbox(Store(f"sqlite:///{tmp_path / 'db'}"), "a")


def enqueue(outbox: Outbox, fn: object, **kwargs: object) -> None:
    with outbox.store.transaction() as s:
        fn(s, instance="a", repo=DEFAULT_REPO, installation_id=DEFAULT_INSTALLATION_ID,  # type: ignore[operator]
           now=clock.now(), **kwargs)


async def drain(sender: Sender, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while sender.outbox.backlog() and time.monotonic() < deadline:
        await sender.send_due()
        await asyncio.sleep(0.02)


def test_tokens_are_cached_and_renewed_after_a_401(fake_github: FakeGitHub,
                                                   github_app_key: tuple[str, str]) -> None:
    fake_github.add_pull(OWNER, NAME, 1, head_sha="a" * 40)

    async def scenario() -> None:
        app = app_for(fake_github, github_app_key[0])
        for _ in range(3):
            await app.json(DEFAULT_INSTALLATION_ID, "GET", f"/repos/{DEFAULT_REPO}/pulls/1")
        assert fake_github.tokens_issued == 1
        fake_github.expire_tokens()
        await app.json(DEFAULT_INSTALLATION_ID, "GET", f"/repos/{DEFAULT_REPO}/pulls/1")
        assert fake_github.tokens_issued == 2
        await app.close()

    asyncio.run(scenario())


def test_sender_retries_5xx_and_coalesces_edits(fake_github: FakeGitHub,
                                                github_app_key: tuple[str, str],
                                                outbox: Outbox) -> None:
    fake_github.add_pull(OWNER, NAME, 3, head_sha="b" * 40)
    comment_id = fake_github.add_comment(OWNER, NAME, 3, "bot: build")

    async def scenario() -> None:
        app = app_for(fake_github, github_app_key[0])
        sender = Sender(outbox, Performer(app, outbox.object_id), CONFIG)
        fake_github.fail_next("POST", r"/reactions$", 502, times=2)
        enqueue(outbox, enqueue_reaction, comment_id=comment_id, content="eyes")
        for body in ("queued", "running", "done"):
            enqueue(outbox, enqueue_comment, issue_number=3, key="k", body=body)
        await drain(sender)
        await app.close()

    asyncio.run(scenario())
    assert fake_github.reactions(comment_id) == ["eyes"]
    (reply,) = [c for c in fake_github.comments(OWNER, NAME, 3) if c.user == "layerbot[bot]"]
    assert reply.history[0].startswith("done")  # three edits, one request
    assert fake_github.count("issues/create-comment") == 1
    from layerbot.store.models import RateLimit

    with outbox.store.read() as s:
        (core,) = s.query(RateLimit).all()
        assert 0 < core.remaining < core.limit  # the headers GitHub sent were recorded


def test_rate_limit_answers_are_honoured(fake_github: FakeGitHub,
                                         github_app_key: tuple[str, str],
                                         outbox: Outbox) -> None:
    fake_github.add_pull(OWNER, NAME, 4, head_sha="c" * 40)
    comment_id = fake_github.add_comment(OWNER, NAME, 4, "bot: build")

    async def scenario() -> float:
        app = app_for(fake_github, github_app_key[0])
        sender = Sender(outbox, Performer(app, outbox.object_id), CONFIG)
        fake_github.fail_next("POST", r"/reactions$", 429, headers={"retry-after": "1"},
                              body={"message": "You have exceeded a secondary rate limit"})
        enqueue(outbox, enqueue_reaction, comment_id=comment_id, content="eyes")
        started = time.monotonic()
        await drain(sender)
        await app.close()
        return time.monotonic() - started

    waited = asyncio.run(scenario())
    assert waited >= 0.9  # retry-after: 1 was respected, not the 0.05 s backoff
    assert fake_github.reactions(comment_id) == ["eyes"]


def test_retry_policy() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    cfg = OutboxConfig(backoff_seconds=1, max_attempts=4)

    def err(status: int, **headers: str) -> GitHubError:
        import httpx

        return GitHubError("POST", "/x", status, "msg", httpx.Headers(headers))

    assert retry_at(err(502), 1, cfg, now) == now + timedelta(seconds=1)
    assert retry_at(err(502), 3, cfg, now) == now + timedelta(seconds=4)
    assert retry_at(err(502), 4, cfg, now) is None  # attempts used up
    assert retry_at(err(403, **{"retry-after": "30"}), 1, cfg, now) == now + timedelta(seconds=30)
    reset = int((now + timedelta(minutes=7)).timestamp())
    limited = err(403, **{"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(reset)})
    assert retry_at(limited, 1, cfg, now) == now + timedelta(minutes=7)
    assert retry_at(err(422), 1, cfg, now) is None  # a bad request stays bad
    assert retry_at(err(401), 1, cfg, now) is not None  # token renewed on the next try


def test_failed_deliveries_missing_from_the_inbox_are_redelivered(
        fake_github: FakeGitHub, github_app_key: tuple[str, str], tmp_path: Path) -> None:
    now = datetime.now(UTC)
    fake_github.add_delivery(1, "g-ok", "issue_comment", "created", 200, "OK", now)
    fake_github.add_delivery(2, "g-lost", "issue_comment", "created", 502, "Bad Gateway", now)
    fake_github.add_delivery(3, "g-stored", "issue_comment", "created", 504, "Timeout", now)
    fake_github.add_delivery(4, "g-retried", "pull_request", "opened", 500, "Error", now)
    fake_github.add_delivery(5, "g-retried", "pull_request", "opened", 202, "Accepted", now,
                             redelivery=True)
    inbox = Inbox(Store(f"sqlite:///{tmp_path / 'db'}"), "a")
    inbox.accept([Delivery("1", "g-stored", "issue_comment", "created", "k", 1, "{}")],
                 clock.now())
    from layerbot.config import DeliveriesConfig

    async def scenario() -> int:
        app = app_for(fake_github, github_app_key[0])
        asked = await recover_once(app, inbox, DeliveriesConfig())
        await app.close()
        return asked

    assert asyncio.run(scenario()) == 1
    assert [r.path for r in fake_github.calls("apps/redeliver-webhook-delivery")] == [
        "/app/hook/deliveries/2/attempts"]


def test_to_redeliver_picks_the_newest_attempt_once() -> None:
    deliveries = [
        {"id": 9, "guid": "x", "status_code": 500, "event": "issue_comment"},
        {"id": 8, "guid": "x", "status_code": 0, "event": "issue_comment"},
        {"id": 7, "guid": "p", "status_code": 500, "event": "ping"},
    ]
    assert [d["id"] for d in to_redeliver(deliveries, set())] == [9]


def test_a_create_that_timed_out_and_landed_late_is_not_made_twice(
        fake_github: FakeGitHub, github_app_key: tuple[str, str], outbox: Outbox) -> None:
    """GitHub may apply a write whose answer never came, even after the bot gave up on it
    (found by the soak: a build reply made twice). The retry waits for it to land, finds it
    by its marker and edits it."""
    fake_github.add_pull(OWNER, NAME, 5, head_sha="c" * 40)

    async def scenario() -> None:
        app = app_for(fake_github, github_app_key[0], timeout_seconds=0.5)
        sender = Sender(outbox, Performer(app, outbox.object_id), LATE_CREATE)
        fake_github.delay("POST", r"/issues/5/comments$", 1.0, times=1)
        enqueue(outbox, enqueue_comment, issue_number=5, key="k5", body="queued")
        await drain(sender, seconds=15)
        await app.close()

    asyncio.run(scenario())
    replies = replies_once_landed(fake_github, 5)
    assert len(replies) == 1, replies
    assert fake_github.count("issues/create-comment") == 1  # the one that landed late


def test_an_edit_made_while_a_create_timed_out_waits_for_it_too(
        fake_github: FakeGitHub, github_app_key: tuple[str, str], outbox: Outbox) -> None:
    """The reply is edited while its create is unanswered; the edit takes the create's place
    and must wait as it would have (found by the soak: a build reply made twice so)."""
    fake_github.add_pull(OWNER, NAME, 6, head_sha="d" * 40)

    async def scenario() -> None:
        app = app_for(fake_github, github_app_key[0], timeout_seconds=0.5)
        sender = Sender(outbox, Performer(app, outbox.object_id), LATE_CREATE)
        fake_github.delay("POST", r"/issues/6/comments$", 1.0, times=1)
        enqueue(outbox, enqueue_comment, issue_number=6, key="k6", body="queued")
        first = asyncio.create_task(sender.send_due())
        await asyncio.sleep(0.2)
        enqueue(outbox, enqueue_comment, issue_number=6, key="k6", body="running")
        await first
        await drain(sender, seconds=15)
        await app.close()

    asyncio.run(scenario())
    assert [body.split("\n")[0] for body in replies_once_landed(fake_github, 6)] == ["running"]
