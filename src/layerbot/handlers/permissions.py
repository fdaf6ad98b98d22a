"""Who may: a refusal is answered on the PR, quoting the command it refuses."""

from __future__ import annotations

from layerbot.core.access import Action
from layerbot.core.commands import Command
from layerbot.handlers.base import Context


async def allowed(ctx: Context, action: Action, number: int, cmd: Command | None) -> bool:
    """Whether the event's sender may take ``action``; if not, the refusal is recorded as
    a reply on PR ``number``."""
    decision = await ctx.services.access.check(action, ctx.event.repo, ctx.event.sender_login,
                                               ctx.event.installation_id)
    if decision.allowed:
        return True
    quoted = f"> {cmd.line.strip()}\n\n" if cmd is not None and cmd.line else ""
    ctx.reply(number, f"refused:{ctx.event.delivery_id}:{action}:{cmd.lineno if cmd else 0}",
              f"{quoted}**layerbot `{ctx.instance}`**: @{ctx.event.sender_login}, "
              f"that is not allowed: {decision.reason}.\n\n{decision.who_may}")
    return False
