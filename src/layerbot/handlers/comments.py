"""PR comments: find the bot commands, acknowledge them, and hand each to its handler.

Each new comment with at least one command line gets an `eyes` reaction, so the author
knows at once that the bot read it. Comments by bots (this one included) are ignored.
Which handler answers a command is the :class:`~layerbot.handlers.registry.CommandRegistry`'s
business; this module knows no command by name.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from typing import Any

from layerbot.core import commands
from layerbot.core.targets import names_this
from layerbot.handlers.base import Context, Event, Router
from layerbot.handlers.permissions import allowed
from layerbot.handlers.registry import CommandRegistry, Invocation


def is_bot(user: dict[str, Any], bot_login: str) -> bool:
    login = str(user.get("login", ""))
    return user.get("type") == "Bot" or login.endswith("[bot]") or login == bot_login


def for_this_instance(item: commands.ParseResult, instance: str,
                      also_named: Collection[str] = ()) -> bool:
    """``inst:`` on any command: an instance it does not name (nor one of its fleet's
    agents or clusters, ``also_named``) neither reacts nor answers.

    Decided here, once for every command, so no command can forget it; a line that is not a
    valid command names no instance and is answered by all (each explains it the same way).
    """
    if isinstance(item, commands.CommandError) or item.filters.inst is None:
        return True
    return names_this(item.filters.inst, instance, also_named)


async def on_comment(event: Event, ctx: Context, registry: CommandRegistry) -> str | None:
    comment = event.payload["comment"]
    issue = event.payload["issue"]
    if is_bot(comment.get("user") or {}, ctx.config.bot_login):
        return None
    items = commands.parse_comment(comment.get("body") or "")
    named = (await asyncio.to_thread(ctx.fleet)).names() if any(
        not isinstance(i, commands.CommandError) and i.filters.inst for i in items) else set()
    parsed = [item for item in items if for_this_instance(item, ctx.instance, named)]
    if not parsed:
        return None  # no command, or every one names other instances with inst:: silence
    number = int(issue["number"])
    ctx.react(int(comment["id"]), "eyes")
    done = ["eyes"]
    if not await allowed(ctx, "command", number, None):
        return "eyes; commands refused"
    for item in parsed:
        if isinstance(item, commands.CommandError):
            ctx.reply(number, f"error:{event.delivery_id}:{item.lineno}",
                      commands.render_error(item))
            done.append("error reply")
            continue
        binding = registry[item.name]
        if binding.pull_requests_only and "pull_request" not in issue:
            ctx.reply(number, f"notpr:{event.delivery_id}:{item.lineno}",
                      f"`bot: {item.name}` works on pull requests only.")
            done.append("not a PR")
            continue
        outcome = await binding.handler(Invocation(item, event, ctx, binding.permission))
        if outcome:
            done.append(outcome)
    return ", ".join(done)


def router(registry: CommandRegistry) -> Router:
    """The route of new comments, answering with ``registry``'s handlers."""
    routes = Router()

    async def on_new_comment(event: Event, ctx: Context) -> str | None:
        return await on_comment(event, ctx, registry)

    routes.on("issue_comment", "created")(on_new_comment)
    return routes
