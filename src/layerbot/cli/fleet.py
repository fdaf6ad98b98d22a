"""The fleet from a terminal: `layerbot agent` (run an agent on a cluster) and
`layerbot agents add|list|revoke|pause|resume|drain|priority` (on the control plane).

`layerbot agent` imports only the agent's side (no store, no web, no GitHub): what a login
node needs. `layerbot agents` works on the control plane's store, like `layerbot token`;
`list`, `pause`, `resume` and `drain` also through a running bot's API
(``--remote URL --token TOKEN``, where the token's ``pause`` scope decides).
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
    from pydantic import RootModel

    from layerbot import control
    from layerbot.cli.ops import Remote
    from layerbot.config import Config
    from layerbot.store.db import Store

console = LazyConsole()
err = LazyConsole(stderr=True)

ConfigOption = Annotated[Path | None, typer.Option(
    "--config", "-c", help="layerbot.toml (default: $LAYERBOT_CONFIG, ./layerbot.toml)")]
JsonOption = Annotated[bool, typer.Option("--json", help="print JSON")]
NameArgument = Annotated[str, typer.Argument(help="the agent's name")]
RemoteOption = Annotated[str | None, typer.Option(
    "--remote", envvar="LAYERBOT_API_URL", help="a bot's URL: use its API, not the local store")]
TokenOption = Annotated[str | None, typer.Option(
    "--token", envvar="LAYERBOT_API_TOKEN", help="API token for --remote")]


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
                         help="The fleet's agents (on the control plane's store; list, "
                              "pause, resume and drain also with --remote).")
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
    def list_(as_json: JsonOption = False, remote: RemoteOption = None,
              token: TokenOption = None, config: ConfigOption = None) -> None:
        """Agents with their state, version, load and last heartbeat (never their tokens)."""
        if remote:
            rows = _remote(remote, token).call("GET", "/api/agents", _agent_list()).root
            prefixes: dict[str, str | None] = {}
        else:
            from layerbot import control
            from layerbot.operations import agents as ops

            cfg, store = _config_and_store(config)
            summaries = ops.summaries(store, cfg, clock.now())
            rows = [control.agent_out(a) for a in summaries]
            # On the control plane's own machine: which token each agent has.
            prefixes = {a.name: a.token_prefix for a in summaries}
        if as_json:
            print(json.dumps([{**r.model_dump(mode="json"), **(
                {"token_prefix": prefixes.get(r.name)} if not remote else {})} for r in rows],
                indent=2))
            return
        _agents_table(rows)

    def _act(name: str, verb: str, remote: str | None, token: str | None,
             config: Path | None, as_json: bool) -> None:
        if remote:
            from layerbot import control

            result = _remote(remote, token).call("POST", f"/api/agents/{name}/{verb}",
                                                 control.ActionResult)
        else:
            result = _local_act(name, verb, config)
        print(result.model_dump_json(indent=2) if as_json else result.message)

    @agents.command("pause")
    def pause(name: NameArgument, as_json: JsonOption = False, remote: RemoteOption = None,
              token: TokenOption = None, config: ConfigOption = None) -> None:
        """Give the agent no new jobs (it keeps watching what it has)."""
        _act(name, "pause", remote, token, config, as_json)

    @agents.command("resume")
    def resume(name: NameArgument, as_json: JsonOption = False, remote: RemoteOption = None,
               token: TokenOption = None, config: ConfigOption = None) -> None:
        """Give the agent jobs again (ends a pause or a drain)."""
        _act(name, "resume", remote, token, config, as_json)

    @agents.command("drain")
    def drain(name: NameArgument, as_json: JsonOption = False, remote: RemoteOption = None,
              token: TokenOption = None, config: ConfigOption = None) -> None:
        """Let the agent finish its jobs and take no new ones (e.g. before maintenance)."""
        _act(name, "drain", remote, token, config, as_json)

    def _flags(name: str, config: Path | None, said: str, *, priority: int) -> None:
        from layerbot.operations import agents as ops

        try:
            ops.set_flags(_store(config), name, priority=priority)
        except ops.AgentError as exc:
            raise fail(str(exc), 2) from None
        print(f"agent {name} {said}")

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


def _remote(url: str, token: str | None) -> Remote:
    from layerbot.cli.ops import Remote

    if not token:
        raise fail("--remote needs --token (or LAYERBOT_API_TOKEN)", 2)
    return Remote(url, token)


def _agent_list() -> type[RootModel[list[control.AgentOut]]]:
    """What GET /api/agents answers, as one model (``Remote.call`` validates a model)."""
    from pydantic import RootModel

    from layerbot import control

    return RootModel[list[control.AgentOut]]


def _local_act(name: str, verb: str, config: Path | None) -> control.ActionResult:
    from layerbot import control

    cfg, store = _config_and_store(config)
    try:
        return control.set_agent(store, cfg, name, verb, clock.now())
    except control.ControlError as exc:
        raise fail(exc.message, 2 if exc.status == 404 else 1) from None


def _agents_table(rows: list[control.AgentOut]) -> None:
    from rich.table import Table

    table = Table(title="agents")
    for column in ("name", "cluster", "state", "version", "priority", "jobs",
                   "node types", "last heartbeat"):
        table.add_column(column)
    for r in rows:
        state = r.state.value + "".join(
            f" ({flag})" for flag, on in (("paused", r.paused), ("draining", r.draining))
            if on and r.state.value != flag)
        table.add_row(r.name + (" (built in)" if r.builtin else ""), r.cluster, state,
                      r.version or "-", str(r.priority), f"{r.holding}/{r.concurrency}",
                      ", ".join(n.name for n in r.node_types) or "-",
                      r.heartbeat_at.strftime("%Y-%m-%d %H:%M:%S") if r.heartbeat_at
                      else "never")
    console.print(table)


def _config_and_store(config: Path | None) -> tuple[Config, Store]:
    from layerbot.cli.main import load_config
    from layerbot.store.db import Store

    cfg = load_config(config)
    return cfg, Store(cfg.store_url)


def _store(config: Path | None) -> Store:
    return _config_and_store(config)[1]
