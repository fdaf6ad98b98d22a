"""PR comments: find the bot commands, acknowledge them, answer `help`, route the rest.

Each new comment with at least one command line gets an `eyes` reaction, so the author
knows at once that the bot read it. Comments by bots (this one included) are ignored.
"""

from __future__ import annotations

from typing import Any

from layerbot.core import commands
from layerbot.handlers import builds, deploy, probe
from layerbot.handlers.base import Context, Event, Router

router = Router()

#: Command name -> handler(command, event, context); other concerns register theirs here.
COMMAND_HANDLERS: dict[str, Any] = dict(builds.HANDLERS)
COMMAND_HANDLERS["deploy"] = deploy.on_deploy_command
COMMAND_HANDLERS["probe"] = probe.on_probe


def is_bot(user: dict[str, Any], bot_login: str) -> bool:
    login = str(user.get("login", ""))
    return user.get("type") == "Bot" or login.endswith("[bot]") or login == bot_login


def for_this_instance(item: commands.ParseResult, instance: str) -> bool:
    """``inst:`` on any command: an instance it does not name neither reacts nor answers.

    Decided here, once for every command, so no command can forget it; a line that is not a
    valid command names no instance and is answered by all (each explains it the same way).
    """
    if isinstance(item, commands.CommandError) or item.filters.inst is None:
        return True
    return commands.pattern_matches(item.filters.inst, instance)


@router.on("issue_comment", "created")
async def on_comment(event: Event, ctx: Context) -> str | None:
    comment = event.payload["comment"]
    issue = event.payload["issue"]
    if is_bot(comment.get("user") or {}, ctx.config.bot_login):
        return None
    parsed = [item for item in commands.parse_comment(comment.get("body") or "")
              if for_this_instance(item, ctx.instance)]
    if not parsed:
        return None  # no command, or every one names other instances with inst:: silence
    number = int(issue["number"])
    ctx.react(int(comment["id"]), "eyes")
    done = ["eyes"]
    if not await builds.allowed(ctx, "command", number, None):
        return "eyes; commands refused"
    for item in parsed:
        if isinstance(item, commands.CommandError):
            ctx.reply(number, f"error:{event.delivery_id}:{item.lineno}",
                      commands.render_error(item))
            done.append("error reply")
        elif item.name == "help":
            ctx.reply(number, f"help:{event.delivery_id}:{item.lineno}", commands.help_text())
            done.append("help")
        elif "pull_request" not in issue:
            ctx.reply(number, f"notpr:{event.delivery_id}:{item.lineno}",
                      f"`bot: {item.name}` works on pull requests only.")
            done.append("not a PR")
        else:
            handler = COMMAND_HANDLERS.get(item.name)
            outcome = await handler(item, event, ctx) if handler is not None else None
            if outcome:
                done.append(outcome)
    return ", ".join(done)
