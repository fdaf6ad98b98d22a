"""PR comments: find the bot commands, acknowledge them, answer `help`, route the rest.

Each new comment with at least one command line gets an `eyes` reaction, so the author
knows at once that the bot read it. Comments by bots (this one included) are ignored.
"""

from __future__ import annotations

from typing import Any

from layerbot.core import commands
from layerbot.handlers.base import Context, Event, Router

router = Router()


def is_bot(user: dict[str, Any], bot_login: str) -> bool:
    login = str(user.get("login", ""))
    return user.get("type") == "Bot" or login.endswith("[bot]") or login == bot_login


@router.on("issue_comment", "created")
async def on_comment(event: Event, ctx: Context) -> str | None:
    comment = event.payload["comment"]
    issue = event.payload["issue"]
    if is_bot(comment.get("user") or {}, ctx.config.bot_login):
        return None
    parsed = commands.parse_comment(comment.get("body") or "")
    if not parsed:
        return None
    ctx.react(int(comment["id"]), "eyes")
    done = ["eyes"]
    for item in parsed:
        if isinstance(item, commands.CommandError):
            ctx.reply(int(issue["number"]), f"error:{comment['id']}:{item.line_number}",
                      commands.render_error(item))
            done.append("error reply")
        elif item.name == "help":
            ctx.reply(int(issue["number"]), f"help:{comment['id']}", commands.help_text())
            done.append("help")
        else:
            handler = COMMAND_HANDLERS.get(item.name)
            if handler is not None:
                outcome = await handler(item, event, ctx)
                if outcome:
                    done.append(outcome)
    return ", ".join(done)


COMMAND_HANDLERS: dict[str, Any] = {}
