"""The fleet from a terminal: `layerbot agent` (run an agent on a cluster) and
`layerbot agents add|list|revoke|pause|resume|drain|priority` (on the control plane).

`layerbot agent` imports only the agent's side (no store, no web, no GitHub): what a login
node needs. `layerbot agents` works on the control plane's store, like `layerbot token`.
"""

from __future__ import annotations

import getpass
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from layerbot import clock
from layerbot.cli.lazy import LazyConsole

if TYPE_CHECKING:
    from layerbot.config import Config
    from layerbot.store.db import Store

console = LazyConsole()
err = LazyConsole(stderr=True)

ConfigOption = Annotated[Path | None, typer.Option(
    "--config", "-c", help="layerbot.toml (default: $LAYERBOT_CONFIG, ./layerbot.toml)")]
JsonOption = Annotated[bool, typer.Option("--json", help="print JSON")]
NameArgument = Annotated[str, typer.Argument(help="the agent's name")]


def fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[red]{message}[/red]", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def register(app: typer.Typer) -> None:
    @app.command("agent")
    def agent(server: Annotated[str | None, typer.Option(
                  "--server", help="the control plane's URL (default: agent.server_url)")] = None,
              config: ConfigOption = None) -> None:
        """Run an agent on this cluster: pull jobs from the control plane, build them, report."""
        import asyncio

        from layerbot.agent.main import AgentError, run
        from layerbot.cli.main import _refuse_unisolated, load_config

        cfg = load_config(config)
        url = (server or cfg.agent.server_url).rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise fail("the control plane's URL is needed: --server https://... "
                       "(or agent.server_url)", 2)
        _refuse_unisolated(cfg)
        try:
            asyncio.run(run(cfg, url))
        except AgentError as exc:
            raise fail(str(exc), 2) from None

    agents = typer.Typer(no_args_is_help=True,
                         help="The fleet's agents (on the control plane's store).")
    app.add_typer(agents, name="agents")

    @agents.command("add")
    def add(name: NameArgument,
            cluster: Annotated[str, typer.Option(help="its cluster (default: its name)")] = "",
            priority: Annotated[int, typer.Option(
                help="higher first when several agents can build a job")] = 0,
            config: ConfigOption = None) -> None:
        """Add an agent and print its token (once; only its hash is kept)."""
        from layerbot.operations import agents as ops

        store = _store(config)
        try:
            secret = ops.add(store, name, getpass.getuser(), clock.now(), cluster=cluster,
                             priority=priority)
        except ops.AgentError as exc:
            raise fail(str(exc), 2) from None
        err.print(f"agent {name} added; give it this token (agent.token_file or "
                  "LAYERBOT_AGENT_TOKEN), it is not shown again:", highlight=False)
        print(secret)

    @agents.command("list")
    def list_(as_json: JsonOption = False, config: ConfigOption = None) -> None:
        """Agents with their state, version, load and last heartbeat (never their tokens)."""
        from layerbot.operations import agents as ops

        cfg, store = _config_and_store(config)
        rows = ops.summaries(store, cfg, clock.now())
        if as_json:
            print(json.dumps([{
                "name": r.name, "cluster": r.cluster, "state": r.state.value,
                "builtin": r.builtin, "version": r.version, "protocol": r.protocol,
                "priority": r.priority, "concurrency": r.concurrency, "holding": r.holding,
                "free_slots": r.free_slots, "node_types": r.node_types,
                "heartbeat_at": r.heartbeat_at.isoformat() if r.heartbeat_at else None,
                "token_prefix": r.token_prefix} for r in rows], indent=2))
            return
        from rich.table import Table

        table = Table(title="agents")
        for column in ("name", "cluster", "state", "version", "priority", "jobs",
                       "node types", "last heartbeat"):
            table.add_column(column)
        for r in rows:
            table.add_row(r.name + (" (built in)" if r.builtin else ""), r.cluster,
                          r.state.value, r.version or "-", str(r.priority),
                          f"{r.holding}/{r.concurrency}", ", ".join(r.node_types) or "-",
                          r.heartbeat_at.strftime("%Y-%m-%d %H:%M:%S") if r.heartbeat_at
                          else "never")
        console.print(table)

    def _flags(name: str, config: Path | None, said: str, *, paused: bool | None = None,
               draining: bool | None = None, priority: int | None = None) -> None:
        from layerbot.operations import agents as ops

        try:
            ops.set_flags(_store(config), name, paused=paused, draining=draining,
                          priority=priority)
        except ops.AgentError as exc:
            raise fail(str(exc), 2) from None
        print(f"agent {name} {said}")

    @agents.command("pause")
    def pause(name: NameArgument, config: ConfigOption = None) -> None:
        """Give the agent no new jobs (it keeps watching what it has)."""
        _flags(name, config, "paused: it gets no new jobs", paused=True)

    @agents.command("resume")
    def resume(name: NameArgument, config: ConfigOption = None) -> None:
        """Give the agent jobs again (ends a pause or a drain)."""
        _flags(name, config, "resumed", paused=False, draining=False)

    @agents.command("drain")
    def drain(name: NameArgument, config: ConfigOption = None) -> None:
        """Let the agent finish its jobs and take no new ones (e.g. before maintenance)."""
        _flags(name, config, "draining: it finishes its jobs and takes no new ones",
               draining=True)

    @agents.command("priority")
    def priority(name: NameArgument, value: Annotated[int, typer.Argument(
                     help="higher first when several agents can build a job")],
                 config: ConfigOption = None) -> None:
        """Set which agent builds first when several can."""
        _flags(name, config, f"has priority {value}", priority=value)

    @agents.command("revoke")
    def revoke(name: NameArgument, config: ConfigOption = None) -> None:
        """Revoke the agent's token: it is refused from its next request on."""
        from layerbot.operations import agents as ops

        try:
            ops.revoke(_store(config), name, clock.now())
        except ops.AgentError as exc:
            raise fail(str(exc), 2) from None
        print(f"agent {name}: token revoked")


def _config_and_store(config: Path | None) -> tuple[Config, Store]:
    from layerbot.cli.main import load_config
    from layerbot.store.db import Store

    cfg = load_config(config)
    return cfg, Store(cfg.store_url)


def _store(config: Path | None) -> Store:
    return _config_and_store(config)[1]
