"""`inst:`/`instance:` on every command: only the instances it names answer; the others
neither react nor reply (issue 10, item 4)."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import select

from layerbot import clock
from layerbot.handlers import comments
from layerbot.handlers.base import Context, Event
from layerbot.store.models import OutboxMessage
from tests.support.webhooks import encode, issue_comment_created
from tests.web.conftest import INSTANCE, REPO, Web

ANSWERING = ["bot: show_config", "bot: status", "bot: probe", "bot: help",
             "bot: status last_build"]


def _handle(web: Web, body: str) -> tuple[str | None, list[tuple[str, str]]]:
    """One PR comment handled as the inbox workers would: the outcome, and what the bot
    would send to GitHub (kind, comment body or reaction)."""
    payload = issue_comment_created(body, "alice", repo=REPO, pr_number=3, comment_id=77)
    event = Event(id=1, delivery_id="d-1", name="issue_comment", action="created",
                  raw=encode(payload).decode(), installation_id=1, attempt=1)
    ctx = Context(web.config, clock.now(), event, web.bot.services)
    outcome = asyncio.run(comments.on_comment(event, ctx, web.bot.commands))
    with web.store.transaction() as s:
        for write in ctx.writes:
            write(s)
    with web.store.read() as s:
        sent = [(m.kind, str(m.payload.get("body") or m.payload.get("content")))
                for m in s.scalars(select(OutboxMessage))]
    return outcome, sent


def test_commands_for_other_instances_get_no_reaction_and_no_reply(web_factory: Any) -> None:
    web: Web = web_factory(access={"command": ["alice"]})
    lines = [f"{line} {key}:other-.*" for line in ANSWERING for key in ("inst", "instance")]
    outcome, sent = _handle(web, "\n".join(lines))
    assert outcome is None and sent == []


def test_the_named_instance_answers_each_command(web_factory: Any) -> None:
    web: Web = web_factory(access={"command": ["alice"]})
    body = "\n".join([f"bot: show_config instance:{INSTANCE}", "bot: probe inst:test-.*",
                      "bot: help inst:other", f"bot: help inst:{INSTANCE.upper()}"])
    outcome, sent = _handle(web, body)
    assert outcome is not None
    kinds = [kind for kind, _ in sent]
    assert kinds.count("reaction") == 1
    replies = [text for kind, text in sent if kind == "comment"]
    # show_config, probe and one help (the one naming this instance; not the other's)
    assert len(replies) == 3, replies
    assert any("This instance can build:" in r and "answers the probe" not in r for r in replies)
    assert any("answers the probe" in r for r in replies)
    assert sum("### layerbot commands" in r for r in replies) == 1


def test_a_mixed_comment_answers_only_its_own_lines(web_factory: Any) -> None:
    web: Web = web_factory(access={"command": ["alice"]})
    outcome, sent = _handle(web, "bot: show_config inst:other\nbot: help")
    replies = [text for kind, text in sent if kind == "comment"]
    assert outcome is not None and len(replies) == 1 and "### layerbot commands" in replies[0]
