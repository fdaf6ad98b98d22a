"""`bot: show_config`: what this instance can build, and its batch system's partitions."""

from __future__ import annotations

import asyncio

from layerbot.core.targets import describe_capabilities
from layerbot.handlers.registry import CommandBinding, Invocation


async def on_show_config(inv: Invocation) -> str | None:
    ctx = inv.ctx
    cfg = ctx.config
    fleet = await asyncio.to_thread(ctx.fleet)
    if fleet.remote:  # one control plane, several clusters: it answers for all of them
        body = f"**layerbot `{ctx.instance}`** (control plane)\n\n" + fleet.describe(cfg)
        ctx.reply(inv.number, f"config:{ctx.event.delivery_id}:{inv.cmd.lineno}", body)
        return "show_config"
    body = (f"**layerbot `{ctx.instance}`** ({cfg.backend.kind} backend)\n\n"
            + describe_capabilities(cfg.node_types, cfg.repo_targets))
    try:  # the batch system's own view (sinfo for Slurm); its failure must not fail this
        res = await asyncio.wait_for(ctx.services.backend.resources(), timeout=15)
        body += ("\n\n**Partitions** (nodes idle/allocated/down, CPUs idle/total)\n\n"
                 "| partition | state | nodes | CPUs | features | max time |\n"
                 "|---|---|---|---|---|---|\n"
                 + "\n".join(f"| `{p.name}`{' (default)' if p.default else ''} | {p.state} | "
                             f"{p.nodes_idle}/{p.nodes_allocated}/{p.nodes_down} | "
                             f"{p.cpus_idle}/{p.cpus_total} | {', '.join(p.features)} | "
                             f"{p.max_time or 'unlimited'} |" for p in res.partitions))
    except Exception:
        body += "\n\n(the batch system could not be asked for its partitions just now)"
    ctx.reply(inv.number, f"config:{ctx.event.delivery_id}:{inv.cmd.lineno}", body)
    return "show_config"


COMMAND = CommandBinding("show_config", on_show_config)
