"""`bot: help`: the commands and their arguments, generated from the grammar; it answers
on issues too."""

from __future__ import annotations

from layerbot.core import commands
from layerbot.handlers.registry import CommandBinding, Invocation


async def on_help(inv: Invocation) -> str | None:
    inv.ctx.reply(inv.number, f"help:{inv.event.delivery_id}:{inv.cmd.lineno}",
                  commands.help_text())
    return "help"


COMMAND = CommandBinding("help", on_help, pull_requests_only=False)
