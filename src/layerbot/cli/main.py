"""The `layerbot` command line (typer)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from layerbot import __version__
from layerbot.cli.lazy import MARKUP_MODE, LazyCommand, LazyConsole, LazyGroup, PlainCommand

if TYPE_CHECKING:
    from layerbot import config as config_mod

# Heavy modules (config/pydantic, the store, GitHub, S3, the web app) are imported inside
# the commands that use them, so `layerbot --help` and `layerbot version` stay fast
# (see cli/lazy.py; tests/cli/test_start.py keeps it so).

#: Commands of other modules (each has ``register(app)``), imported only when one of them
#: runs. ``summary`` is the line `layerbot --help` shows: the first line of its docstring.
LAZY_COMMANDS: tuple[LazyCommand, ...] = (
    LazyCommand("serve", "layerbot.cli.main", "Run the bot: webhook receiver, workers, sender, "
                "and (with a backend) jobs."),
    LazyCommand("doctor", "layerbot.cli.main", "Check the configuration and reach every "
                "configured part; exit 1 if any fails."),
    LazyCommand("replay", "layerbot.cli.main",
                "Handle a stored delivery again (e.g. one kept as failed)."),
    LazyCommand("run", "layerbot.cli.main", "Build like the bot would for a PR, without GitHub; "
                "exit 0 only if every job succeeded."),
    LazyCommand("ingest", "layerbot.cli.deploy",
                "Ingest staged artifacts into the repository (run on the repository server)."),
    LazyCommand("deploy-status", "layerbot.cli.deploy",
                "List this instance's deployments and their states (run where the bot runs)."),
    LazyCommand("jobs", "layerbot.cli.ops", "List jobs, newest first."),
    LazyCommand("redo", "layerbot.cli.ops", "Build a job's target again."),
    LazyCommand("cancel", "layerbot.cli.ops", "Cancel a waiting or running job."),
    LazyCommand("pause", "layerbot.cli.ops",
                "Stop submitting new jobs (builds are still recorded, and PRs are told)."),
    LazyCommand("resume", "layerbot.cli.ops", "Submit queued jobs again."),
    LazyCommand("drain", "layerbot.cli.ops", "Take no new jobs and let the running ones "
                "finish (`resume` takes them again)."),
    LazyCommand("costs", "layerbot.cli.ops", "Core-hours per week, target, cluster and PR, "
                "and the estimate of each target's next build."),
    LazyCommand("init", "layerbot.cli.init", "Ask the local Slurm (partitions, node features, "
                "CPUs, accounts, limits) and write a commented starting layerbot.toml with a "
                "node type per partition and CPU; or, with --from-eessi, migrate an EESSI "
                "bot's app.cfg (and repos.cfg)."),
    LazyCommand("token", "layerbot.cli.ops", "API tokens for scripts (on this machine's store)."),
    LazyCommand("agent", "layerbot.cli.fleet", "Run an agent on this cluster: pull jobs from "
                "the control plane, build them, report."),
    LazyCommand("agents", "layerbot.cli.fleet",
                "The fleet's agents (on the control plane's store; list, pause, resume and "
                "drain also with --remote)."),
)


class _Commands(LazyGroup):
    lazy = LAZY_COMMANDS


app = typer.Typer(cls=_Commands, no_args_is_help=True, add_completion=False,
                  rich_markup_mode=MARKUP_MODE,
                  help="layerbot: builds and deploys scientific software from pull requests.")
console = LazyConsole()
err = LazyConsole(stderr=True)
#: This module's own commands but `version`: typer turns each parameter into a pydantic
#: adapter when it builds a command, so they too are built only when one of them runs.
commands = typer.Typer()


def register(target: typer.Typer) -> None:
    """Add ``commands`` (serve, doctor, replay, run) to ``target``; see ``LAZY_COMMANDS``."""
    target.add_typer(commands)


@app.callback()
def _root() -> None:
    # Makes `app` a group even though `version` is its only command built up front.
    pass

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c",
                 help="layerbot.toml (default: $LAYERBOT_CONFIG, ./layerbot.toml)"),
]


def load_config(path: Path | None) -> config_mod.Config:
    """The configuration, or a clean exit with one line per problem."""
    from layerbot import config as config_mod
    from layerbot import log

    try:
        cfg = config_mod.load(path)
    except config_mod.ConfigError as exc:
        err.print(f"[red]{exc}[/red]", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    log.configure(cfg.logging.format, cfg.logging.level, cfg.logging.levels)
    # Before any child is started: not dumpable, secrets out of the environment (jobs run
    # on this machine; see docs/security.md).
    from layerbot.app.hardening import harden
    from layerbot.app.memory import limit_malloc_arenas

    harden()
    limit_malloc_arenas()  # before the first thread: memory flat over days (app/memory.py)
    return cfg


def _refuse_unisolated(cfg: config_mod.Config) -> None:
    """PR job scripts never run as the bot's own user (on any backend) unless the operator
    allowed it."""
    from layerbot.build.identity import IsolationRefused, resolve

    try:
        resolve(cfg.build.run_as, cfg.build.allow_unisolated)
    except IsolationRefused as exc:
        err.print(f"refusing to run PR job scripts: {exc}", style="red", markup=False,
                  highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


@app.command(cls=PlainCommand)
def version() -> None:
    """Print layerbot's version."""
    typer.echo(__version__)  # a plain line: rich would cost more than the whole command


@commands.command()
def serve(config: ConfigOption = None,
          host: Annotated[str | None, typer.Option(help="override server.host")] = None,
          port: Annotated[int | None, typer.Option(help="override server.port")] = None) -> None:
    """Run the bot: webhook receiver, workers, sender, and (with a backend) jobs."""
    import gc

    import uvicorn

    from layerbot.app import Bot, asgi
    from layerbot.app.supervisor import WorkerSupervisor
    from layerbot.store.db import Store

    cfg = load_config(config)
    if port:  # the worker process and the replica's name (host:port) need it too
        cfg = cfg.model_copy(update={"server": cfg.server.model_copy(update={"port": port})})
    if cfg.github.app_id is not None and not cfg.github.repositories:
        # A public App can be installed by anyone: say which repositories are served.
        err.print("github.repositories is empty, so this bot would serve no repository. "
                  "List the repositories whose PRs it builds, e.g. repositories = "
                  "[\"EESSI/software-layer\"] (or \"owner/*\", or \"*\" for every "
                  "repository the App is installed on).", style="red", markup=False,
                  highlight=False, soft_wrap=True)
        raise typer.Exit(2)
    _refuse_unisolated(cfg)
    split = cfg.server.worker_process
    bot = Bot(cfg, Store(cfg.store_url, checkpoints=not split))
    if split:
        # The web process has two busy threads, the event loop and the inbox writer; a short
        # switch interval keeps either from holding the other's answers back for 5 ms.
        sys.setswitchinterval(0.0005)
        supervisor = WorkerSupervisor(cfg)
        bot.writer.on_accept = supervisor.nudge
        bot.writer.on_write = supervisor.receiver.mark
        bot.worker_alive = supervisor.alive
        app = bot.app(run_loops=False, side=supervisor.running)
    else:
        app = bot.app()
    # Everything built so far lives as long as the process: keep it out of the garbage
    # collector's full passes, which would otherwise stall answers for 100 ms and more.
    gc.collect()
    gc.freeze()
    uvicorn.run(asgi(app, bot), host=host or cfg.server.host, port=cfg.server.port,
                log_level="warning", access_log=False, timeout_graceful_shutdown=5)


@commands.command()
def doctor(config: ConfigOption = None) -> None:
    """Check the configuration and reach every configured part; exit 1 if any fails."""
    import asyncio

    from rich.table import Table

    from layerbot.cli.doctor import run_checks

    cfg = load_config(config)
    checks = asyncio.run(run_checks(cfg))
    table = Table(title=f"layerbot doctor: {cfg.instance.name}")
    for column in ("check", "result", "detail", "remedy"):
        table.add_column(column, overflow="fold")
    for check in checks:
        table.add_row(check.name, "[green]pass[/green]" if check.ok else "[red]FAIL[/red]",
                      check.detail, check.remedy)
    console.print(table)
    raise typer.Exit(0 if all(c.ok for c in checks) else 1)


@commands.command()
def replay(delivery_id: str, config: ConfigOption = None) -> None:
    """Handle a stored delivery again (e.g. one kept as failed)."""
    from layerbot import clock
    from layerbot.store.db import Store
    from layerbot.store.inbox import Inbox

    cfg = load_config(config)
    inbox = Inbox(Store(cfg.store_url), cfg.instance.name)
    if inbox.replay(delivery_id, clock.now()) == 0:
        event = inbox.get(delivery_id)
        reason = ("it is being handled right now" if event is not None
                  else "no delivery with this id is stored on this instance")
        err.print(f"cannot replay {delivery_id}: {reason}")
        raise typer.Exit(1)
    console.print(f"delivery {delivery_id} queued again; a running `layerbot serve` handles it")


@commands.command()
def run(
    repo: Annotated[str, typer.Argument(help="a git directory, a plain directory, or a git URL")],
    pr: Annotated[int | None, typer.Option("--pr", help="build refs/pull/N/head")] = None,
    ref: Annotated[str | None, typer.Option("--ref", help="build a branch, tag or SHA")] = None,
    base: Annotated[str | None, typer.Option("--base", help="merge onto this branch")] = None,
    for_arch: Annotated[str | None, typer.Option("--for", help="CPU target pattern")] = None,
    repo_target: Annotated[str | None,
                           typer.Option("--repo-target", help="repository target id")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print results as JSON")] = False,
    config: ConfigOption = None,
) -> None:
    """Build like the bot would for a PR, without GitHub; exit 0 only if every job succeeded."""
    import asyncio

    from layerbot import log
    from layerbot.app import run as runner
    from layerbot.core.jobs import JobState

    if pr is not None and ref is not None:
        err.print("give --pr or --ref, not both")
        raise typer.Exit(2)
    cfg = load_config(config)
    # The terminal shows progress and the report; log lines only for problems.
    log.configure(cfg.logging.format, "warning", cfg.logging.levels)
    options = runner.RunOptions(repo, pr, ref, base, for_arch, repo_target)
    try:
        build, rows = asyncio.run(runner.execute(cfg, options, err.rich, live=not as_json))
    except runner.RunError as exc:
        err.print(f"[red]layerbot run: {exc}[/red]", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    if as_json:
        print(runner.as_json(build, rows, runner.artifact_digests(cfg, build.id)))
    else:
        console.print(runner.text_report(cfg, build, rows), highlight=False, markup=False)
    raise typer.Exit(0 if all(r.state is JobState.SUCCEEDED for r in rows) else 1)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
