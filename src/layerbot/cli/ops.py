"""Operating the bot from a terminal: `layerbot jobs|redo|cancel|pause|resume|drain|costs|token`.

By default the commands work on the local store (the machine `layerbot serve` runs on:
having the database is the permission). With ``--remote URL --token TOKEN`` (or
``LAYERBOT_API_URL`` / ``LAYERBOT_API_TOKEN``) they go through the REST API instead, where
the token's scopes decide. Either way the answers are the same models (``--json``).

`layerbot jobs` on a SQLite store reads it without the store's machinery (``_quick_jobs``);
so this module imports the rest (the controller, SQLAlchemy, httpx, rich) where it is used.
"""

from __future__ import annotations

import getpass
import json
import sqlite3
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from pydantic import BaseModel

from layerbot import clock
from layerbot.cli.lazy import LazyConsole
from layerbot.core.jobs import JobState
from layerbot.store import joblist

if TYPE_CHECKING:
    from layerbot import control

console = LazyConsole()
err = LazyConsole(stderr=True)
M = TypeVar("M", bound=BaseModel)

ConfigOption = Annotated[Path | None, typer.Option(
    "--config", "-c", help="layerbot.toml (default: $LAYERBOT_CONFIG, ./layerbot.toml)")]
RemoteOption = Annotated[str | None, typer.Option(
    "--remote", envvar="LAYERBOT_API_URL", help="a bot's URL: use its API, not the local store")]
TokenOption = Annotated[str | None, typer.Option(
    "--token", envvar="LAYERBOT_API_TOKEN", help="API token for --remote")]
JsonOption = Annotated[bool, typer.Option("--json", help="print JSON")]
AsOption = Annotated[str | None, typer.Option(
    "--as", help="the GitHub login the PR shows as requester (local store; default: $USER)")]


def fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[red]{message}[/red]", highlight=False, soft_wrap=True)
    return typer.Exit(code)


class Remote:
    """The REST API of a running bot."""

    def __init__(self, url: str, token: str | None) -> None:
        self.url = url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    def call(self, method: str, path: str, model: type[M], **kwargs: Any) -> M:
        import httpx

        try:
            response = httpx.request(method, self.url + path, headers=self.headers,
                                     timeout=60, **kwargs)
        except httpx.HTTPError as exc:
            raise fail(f"cannot reach {self.url}: {exc}", 2) from None
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail")
            except ValueError:
                detail = response.text[:300]
            raise fail(f"{self.url} answered {response.status_code}: {detail}")
        return model.model_validate(response.json())


class Local:
    """The store of this machine's bot, from its configuration."""

    def __init__(self, config: Path | None) -> None:
        from layerbot.cli.main import load_config
        from layerbot.store.db import Store

        self.config = load_config(config)
        self.store = Store(self.config.store_url)

    def controller(self) -> control.Controller:
        from layerbot import control
        from layerbot.github.client import GitHubApp

        cfg = self.config
        github = (GitHubApp(cfg.github) if cfg.github.app_id and cfg.github.private_key
                  else None)
        return control.Controller(cfg, self.store, github)

    def act(self, coro: Any) -> control.ActionResult:
        import asyncio

        from layerbot import control

        try:
            result: control.ActionResult = asyncio.run(coro)
        except control.ControlError as exc:
            raise fail(exc.message) from None
        return result


def _target(remote: str | None, token: str | None, config: Path | None) -> Remote | Local:
    if remote:
        if not token:
            raise fail("--remote needs --token (or LAYERBOT_API_TOKEN)", 2)
        return Remote(remote, token)
    return Local(config)


def _who(login: str | None) -> str:
    return login or getpass.getuser()


def _quick_jobs(config: Path | None, which: joblist.JobFilter, limit: int,
                offset: int) -> joblist.JobPage | None:
    """The jobs of a local SQLite store, read without loading the configuration's models,
    SQLAlchemy or the migrations: what makes `layerbot jobs` start fast (issue 10).

    None where this cannot answer for sure (another database, no store file yet, a file that
    is not TOML or has settings of the store that are not text, a store older than its
    migrations): the full path (``_jobs``) then answers as it always did, errors and
    migrations included. It checks only the settings it reads: a mistake elsewhere in the
    file is for the commands that use that part (and `layerbot doctor`) to report. Unlike the
    full path, it neither configures logging nor hardens the process: it reads no secret and
    starts no child (see app/hardening.py).
    """
    from layerbot.config_file import quick_store_url

    url = quick_store_url(config)
    path = joblist.sqlite_file(url) if url else None
    if path is None or not path.is_file():
        return None
    try:
        return joblist.list_jobs_sqlite(path, which, limit, offset)
    except sqlite3.Error:
        return None


def _jobs(where: Remote | Local, which: joblist.JobFilter, limit: int,
          offset: int) -> joblist.JobPage:
    """The jobs through the API of a running bot or through the local store, in full."""
    if isinstance(where, Remote):
        params: dict[str, Any] = {"state": list(which.state), "target": which.target,
                                  "repo": which.repo, "pr": which.pr,
                                  "instance": which.instance, "agent": which.agent,
                                  "limit": limit, "offset": offset}
        return where.call("GET", "/api/jobs", joblist.JobPage,
                          params={k: v for k, v in params.items() if v is not None})
    return joblist.list_jobs(where.store, state=which.state, target=which.target,
                             repo=which.repo, pr=which.pr, instance=which.instance,
                             limit=limit, offset=offset, agent=which.agent)


def _print(model: BaseModel, as_json: bool, table: Any) -> None:
    if as_json:
        print(model.model_dump_json(indent=2))
    else:
        table()


def _action(result: control.ActionResult, as_json: bool) -> None:
    _print(result, as_json, lambda: console.print(result.message, highlight=False))


def register(app: typer.Typer) -> None:
    @app.command()
    def jobs(state: Annotated[list[str] | None, typer.Option(
                 "--state", help="only jobs in this state (repeatable)")] = None,
             target: Annotated[str | None, typer.Option(help="part of the target")] = None,
             repo: Annotated[str | None, typer.Option(help="owner/name")] = None,
             pr: Annotated[int | None, typer.Option(help="pull request number")] = None,
             instance: Annotated[str | None, typer.Option(help="bot instance")] = None,
             agent: Annotated[str | None, typer.Option(
                 help="the agent that holds or held the job")] = None,
             limit: Annotated[int, typer.Option(min=1, max=joblist.MAX_PAGE)] = 50,
             offset: Annotated[int, typer.Option(min=0)] = 0,
             as_json: JsonOption = False, remote: RemoteOption = None,
             token: TokenOption = None, config: ConfigOption = None) -> None:
        """List jobs, newest first."""
        states = state or []
        known = {s.value for s in JobState}
        if bad := [s for s in states if s not in known]:
            raise fail(f"unknown state(s) {', '.join(bad)}; states are "
                       + ", ".join(sorted(known)), 2)
        which = joblist.JobFilter(states, target, repo, pr, instance, agent=agent)
        page = None if remote else _quick_jobs(config, which, limit, offset)
        if page is None:
            page = _jobs(_target(remote, token, config), which, limit, offset)
        _print(page, as_json, lambda: _jobs_table(page))

    @app.command()
    def redo(job: int, head: Annotated[bool, typer.Option(
                 "--head", help="at the PR's current head (default: the job's own commit)")
             ] = False, login: AsOption = None, as_json: JsonOption = False,
             remote: RemoteOption = None, token: TokenOption = None,
             config: ConfigOption = None) -> None:
        """Build a job's target again."""
        from layerbot import control

        where = _target(remote, token, config)
        at = "head" if head else "same"
        if isinstance(where, Remote):
            result = where.call("POST", f"/api/jobs/{job}/redo", control.ActionResult,
                                json={"at": at})
        else:
            result = where.act(where.controller().redo(job, _who(login), at))
        _action(result, as_json)

    @app.command()
    def cancel(job: int, login: AsOption = None, as_json: JsonOption = False,
               remote: RemoteOption = None, token: TokenOption = None,
               config: ConfigOption = None) -> None:
        """Cancel a waiting or running job."""
        from layerbot import control

        where = _target(remote, token, config)
        if isinstance(where, Remote):
            result = where.call("POST", f"/api/jobs/{job}/cancel", control.ActionResult)
        else:
            result = where.act(where.controller().cancel(job, _who(login)))
        _action(result, as_json)

    def _pause(name: str | None, paused: bool, as_json: bool, remote: str | None,
               token: str | None, config: Path | None) -> None:
        from layerbot import control

        where = _target(remote, token, config)
        verb = "pause" if paused else "resume"
        if isinstance(where, Remote):
            if not name:
                raise fail(f"name the instance to {verb} (with --remote)", 2)
            result = where.call("POST", f"/api/instances/{name}/{verb}", control.ActionResult)
        else:
            result = where.act(where.controller().set_paused(
                name or where.config.instance.name, paused))
        _action(result, as_json)

    @app.command()
    def pause(instance: Annotated[str | None, typer.Argument(
                  help="instance name (default: this one)")] = None,
              as_json: JsonOption = False, remote: RemoteOption = None,
              token: TokenOption = None, config: ConfigOption = None) -> None:
        """Stop submitting new jobs (builds are still recorded, and PRs are told)."""
        _pause(instance, True, as_json, remote, token, config)

    @app.command()
    def resume(instance: Annotated[str | None, typer.Argument(
                   help="instance name (default: this one)")] = None,
               as_json: JsonOption = False, remote: RemoteOption = None,
               token: TokenOption = None, config: ConfigOption = None) -> None:
        """Submit queued jobs again."""
        _pause(instance, False, as_json, remote, token, config)

    @app.command()
    def drain(instance: Annotated[str | None, typer.Argument(
                  help="instance name (default: this one)")] = None,
              as_json: JsonOption = False, remote: RemoteOption = None,
              token: TokenOption = None, config: ConfigOption = None) -> None:
        """Take no new jobs and let the running ones finish (`resume` takes them again)."""
        from layerbot import control

        where = _target(remote, token, config)
        if isinstance(where, Remote):
            if not instance:
                raise fail("name the instance to drain (with --remote)", 2)
            result = where.call("POST", f"/api/instances/{instance}/drain",
                                control.ActionResult)
        else:
            result = where.act(where.controller().drain(instance or where.config.instance.name))
        _action(result, as_json)

    @app.command()
    def costs(weeks: Annotated[int, typer.Option(min=1, max=520)] = 12,
              as_json: JsonOption = False, remote: RemoteOption = None,
              token: TokenOption = None, config: ConfigOption = None) -> None:
        """Core-hours per week, target, cluster and PR, and the estimate of each target's
        next build."""
        from layerbot import control

        where = _target(remote, token, config)
        if isinstance(where, Remote):
            data = where.call("GET", "/api/costs", control.Costs, params={"weeks": weeks})
        else:
            data = control.costs(where.store, clock.now(), weeks)
        _print(data, as_json, lambda: _costs_tables(data))

    tokens = typer.Typer(no_args_is_help=True,
                         help="API tokens for scripts (on this machine's store).")
    app.add_typer(tokens, name="token")

    @tokens.command("create")
    def token_create(name: str, scope: Annotated[list[str] | None, typer.Option(
                         "--scope", help="an action it may take: build (redo), cancel, "
                                         "deploy, force_deploy, pause (repeatable)")] = None,
                     login: Annotated[str | None, typer.Option(
                         "--login", help="the GitHub login its actions are made as "
                                         "(default: the token's name)")] = None,
                     days: Annotated[float | None, typer.Option(
                         "--days", min=0.001, help="expires after this many days")] = None,
                     config: ConfigOption = None) -> None:
        """Create a token; its secret is printed once."""
        from layerbot.web.auth import create_token

        local = Local(config)
        now = clock.now()
        try:
            created, secret = create_token(local.store, name, scope or [], login or name, now,
                                           now + timedelta(days=days) if days else None)
        except ValueError as exc:
            raise fail(str(exc), 2) from None
        err.print(f"token {created.id} ({created.name}, scopes: "
                  f"{', '.join(created.scopes) or 'read only'}); keep the secret, it is not "
                  "shown again:", highlight=False)
        print(secret)

    @tokens.command("list")
    def token_list(as_json: JsonOption = False, config: ConfigOption = None) -> None:
        """The tokens (never their secrets)."""
        from rich.table import Table

        from layerbot.web.auth import list_tokens

        rows = list_tokens(Local(config).store)
        if as_json:
            print(json.dumps([{
                "id": t.id, "name": t.name, "prefix": t.prefix, "scopes": t.scopes,
                "login": t.created_by, "created_at": t.created_at.isoformat(),
                "expires_at": t.expires_at.isoformat() if t.expires_at else None,
                "last_used_at": t.last_used_at.isoformat() if t.last_used_at else None,
                "revoked": t.revoked_at is not None} for t in rows], indent=2))
            return
        table = Table(title="API tokens")
        for column in ("id", "name", "prefix", "scopes", "login", "last used", "status"):
            table.add_column(column)
        for t in rows:
            status = ("revoked" if t.revoked_at else
                      "expired" if t.expires_at and t.expires_at <= clock.now() else "active")
            table.add_row(str(t.id), t.name, t.prefix + "…", ", ".join(t.scopes) or "read",
                          t.created_by, _when(t.last_used_at), status)
        console.print(table)

    @tokens.command("revoke")
    def token_revoke(token: Annotated[str, typer.Argument(help="id or name")],
                     config: ConfigOption = None) -> None:
        """Revoke a token at once."""
        from layerbot.web.auth import revoke_token

        count = revoke_token(Local(config).store, token, clock.now())
        if not count:
            raise fail(f"no active token {token!r}")
        console.print(f"revoked {count} token(s)")


def _when(moment: Any) -> str:
    return moment.strftime("%Y-%m-%d %H:%M") if moment else "–"


def _jobs_table(page: joblist.JobPage) -> None:
    from rich.table import Table

    table = Table(title=f"jobs {page.offset + 1}–{page.offset + len(page.jobs)} of {page.total}"
                  if page.jobs else f"no jobs (of {page.total})")
    for column in ("job", "state", "PR", "target", "repository", "cluster", "instance",
                   "updated", "core-h"):
        table.add_column(column, overflow="fold")
    for j in page.jobs:
        table.add_row(str(j.id), j.state, f"{j.repo}#{j.pr}" if j.pr is not None else j.repo,
                      j.target, j.repo_target, _where(j), j.instance, _when(j.updated_at),
                      f"{j.core_hours:.3f}" if j.core_hours is not None else "–")
    console.print(table)


def _where(job: joblist.JobSummary) -> str:
    """The job's cluster (and its agent, when named otherwise), or why there is none."""
    if job.cluster:
        return job.cluster + (f" ({job.agent})" if job.agent and job.agent != job.cluster
                              else "")
    if job.agent:
        return job.agent
    return "waiting for an agent" if job.state == JobState.QUEUED.value else "–"


def _costs_tables(data: control.Costs) -> None:
    from rich.table import Table

    console.print(f"{data.total_core_hours:,.3f} core-hours in {data.jobs} jobs since "
                  f"{_when(data.since)}", highlight=False)
    for title, rows in (("per week", data.by_week), ("per target", data.by_target),
                        ("per cluster", data.by_cluster), ("most expensive PRs", data.by_pr)):
        table = Table(title=title)
        for column in ("", "jobs", "core-h"):
            table.add_column(column)
        for r in rows:
            table.add_row(r.key, str(r.jobs), f"{r.core_hours:,.3f}")
        console.print(table)
    table = Table(title="estimate of the next build (recent successful builds)")
    for column in ("target", "builds", "core-h median", "core-h p90", "time median",
                   "time p90"):
        table.add_column(column)

    def num(v: float | None, fmt: str = "{:,.3f}") -> str:
        return fmt.format(v) if v is not None else "–"

    for e in data.estimates:
        table.add_row(e.target, str(e.samples), num(e.core_hours_median),
                      num(e.core_hours_p90), num(e.duration_median_seconds, "{:,.0f} s"),
                      num(e.duration_p90_seconds, "{:,.0f} s"))
    console.print(table)
