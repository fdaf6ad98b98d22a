"""`bot: probe`: the instance answers with its capabilities, health, queue and resources."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from layerbot import clock
from layerbot.handlers import comments
from layerbot.handlers.base import Context, Event
from layerbot.store.models import Instance, Job, OutboxMessage
from tests.support.webhooks import encode, issue_comment_created
from tests.web.conftest import INSTANCE, REPO, Web
from tests.web.seed import seed


def _comment(web: Web, body: str, now: Any) -> list[str]:
    """Handle one PR comment as the inbox workers would; the bot's replies."""
    payload = issue_comment_created(body, "alice", repo=REPO, pr_number=3, comment_id=77)
    event = Event(id=1, delivery_id="d-1", name="issue_comment", action="created",
                  raw=encode(payload).decode(), installation_id=1, attempt=1)
    ctx = Context(web.config, now, event, web.bot.services)
    outcome = asyncio.run(comments.on_comment(event, ctx, web.bot.commands))
    assert outcome and "probe" in outcome
    with web.store.transaction() as s:
        for write in ctx.writes:
            write(s)
    with web.store.read() as s:
        return [m.payload["body"] for m in s.scalars(
            select(OutboxMessage).where(OutboxMessage.kind == "comment"))]


def test_probe_answers_with_capabilities_health_queue_and_resources(web_factory: Any) -> None:
    web: Web = web_factory(access={"command": ["alice"]})
    now = clock.now()
    seed(web.store, now=now, prs=2, jobs=40, repo=REPO, instance=INSTANCE)
    with web.store.transaction() as s:
        s.get(Instance, INSTANCE).heartbeat_at = now - timedelta(seconds=5)
    [reply] = _comment(web, "bot: probe", now)
    assert f"**layerbot `{INSTANCE}`**" in reply and "answers the probe" in reply
    assert "heartbeat 5 s ago (alive)" in reply
    with web.store.read() as s:
        states = [j.state for j in s.scalars(select(Job))]
    queued = states.count("queued")
    in_backend = states.count("submitted") + states.count("running")
    assert f"Queue: {queued} job(s) waiting to be submitted, {in_backend} in the backend." \
        in reply
    assert "| `local` | up | 1 / 0 / 0 | 8 / 8 |" in reply  # resources from the heartbeat
    assert "This instance can build:" in reply and "x86_64/amd/zen2" in reply


def test_a_paused_or_silent_instance_says_so(web_factory: Any) -> None:
    web: Web = web_factory(access={"command": ["alice"]})
    now = clock.now()
    with web.store.transaction() as s:
        s.add(Instance(name=INSTANCE, version="0.1.0", backend="local", paused=True,
                       started_at=now, heartbeat_at=now - timedelta(minutes=10),
                       resources={"error": "BackendUnavailable: sinfo failed"}))
    [reply] = _comment(web, "bot: probe", now)
    assert "(STALE)" in reply and "**paused**" in reply
    assert "the backend did not answer (BackendUnavailable: sinfo failed)" in reply
    assert "0 job(s) waiting" in reply
