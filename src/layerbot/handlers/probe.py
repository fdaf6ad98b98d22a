"""`bot: probe`: every instance that receives the comment answers for itself.

The answer says what the instance can build, whether it is healthy (heartbeat, paused,
inbox lag), its queue, and the resources its backend reported. An instance that does not
answer is the finding: it is down, or not installed on the repository.
"""

from __future__ import annotations

import asyncio
from typing import Any

from layerbot import __version__
from layerbot.core.targets import describe_capabilities
from layerbot.handlers.base import Context
from layerbot.handlers.registry import CommandBinding, Invocation
from layerbot.operations import fleet
from layerbot.store.jobs import queue_counts
from layerbot.store.models import Instance


def probe_reply(ctx: Context) -> str:
    """The answer, from this instance's row, its queue and its configuration."""
    cfg = ctx.config
    store = ctx.services.store
    with store.read() as s:
        inst = s.get(Instance, ctx.instance)
        row = (inst.heartbeat_at, inst.paused, inst.resources) if inst else None
        queue = queue_counts(s, ctx.instance)
    lag = ctx.services.inbox.lag_seconds(ctx.now)
    lines = [f"**layerbot `{ctx.instance}`** (version {__version__}, {cfg.backend.kind} "
             "backend) answers the probe."]
    health: list[str] = []
    if row is None:
        health.append("no heartbeat recorded yet (just started)")
    else:
        heartbeat, paused, _ = row
        age = (ctx.now - heartbeat).total_seconds()
        alive = fleet.is_alive(heartbeat, ctx.now)
        health.append(f"heartbeat {age:.0f} s ago ({'alive' if alive else 'STALE'})")
        if paused:
            health.append("**paused**: builds are recorded but not submitted")
    health.append(f"inbox lag {lag:.1f} s")
    lines += ["", "Health: " + "; ".join(health) + "."]
    queued = queue.get("queued", 0)
    in_backend = sum(n for state, n in queue.items() if state != "queued")
    lines += [f"Queue: {queued} job(s) waiting to be submitted, {in_backend} in the backend."]
    agents = ctx.fleet()
    if agents.remote:
        lines += ["", agents.describe(cfg)]
    else:
        lines += ["", _resources(row[2] if row else None), "",
                  describe_capabilities(cfg.node_types, cfg.repo_targets)]
    return "\n".join(lines)


def _resources(resources: dict[str, Any] | None) -> str:
    if not resources:
        return "Resources: not reported yet."
    parts = resources.get("partitions") or []
    if not parts:
        error = resources.get("error")
        return f"Resources: the backend did not answer ({error})." if error else \
            "Resources: the backend reports no partitions."
    rows = ["| partition | state | nodes idle / allocated / down | CPUs idle / total |",
            "| --- | --- | --- | --- |"]
    for p in parts:
        rows.append(f"| `{p.get('name')}` | {p.get('state')} | {p.get('nodes_idle')} / "
                    f"{p.get('nodes_allocated')} / {p.get('nodes_down')} | "
                    f"{p.get('cpus_idle')} / {p.get('cpus_total')} |")
    return "Resources:\n\n" + "\n".join(rows)


async def on_probe(inv: Invocation) -> str | None:
    body = await asyncio.to_thread(probe_reply, inv.ctx)
    inv.ctx.reply(inv.number, f"probe:{inv.event.delivery_id}:{inv.cmd.lineno}", body)
    return "probe"


COMMAND = CommandBinding("probe", on_probe)
