"""`layerbot run`: the build pipeline without GitHub, for a local directory or a git URL.

The same planner, workspace, job directories, backend and reconciler as `layerbot serve`;
only the trigger (the command line) and the report (the terminal) differ.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table
from sqlalchemy import select

from layerbot import clock
from layerbot.backends import make_backend
from layerbot.build.gitenv import run_git
from layerbot.build.workspace import Mirrors, WorkspaceError
from layerbot.config import Config
from layerbot.core import report
from layerbot.core.commands import BuildFilters
from layerbot.core.jobs import JobState
from layerbot.core.targets import select_targets
from layerbot.jobs.planner import BuildRequest, PlannedTarget, record_build
from layerbot.operations.agent_ledger import builtin_agent
from layerbot.store import jobs as jobstore
from layerbot.store.db import Store
from layerbot.store.models import Artifact, Build


class RunError(Exception):
    """Something the user asked for cannot be done; the message says what to change."""


@dataclass(frozen=True)
class RunOptions:
    repo: str
    pr: int | None = None
    ref: str | None = None
    base: str | None = None
    for_arch: str | None = None
    repo_target: str | None = None
    poll_seconds: float = 0.5


def snapshot(directory: Path, git_dir: Path) -> str:
    """A plain directory (not a git repository) committed into a bare repo of its own.

    Lets `layerbot run examples/software-layer` build files that are not under git; the
    commit is only made when the content changed, so repeated runs reuse the mirror.
    """
    git_dir.parent.mkdir(parents=True, exist_ok=True)
    env = {"GIT_AUTHOR_NAME": "layerbot", "GIT_AUTHOR_EMAIL": "layerbot@localhost",
           "GIT_COMMITTER_NAME": "layerbot", "GIT_COMMITTER_EMAIL": "layerbot@localhost"}

    def git(*args: str) -> str:
        # gitenv: the same fixed environment and safe options as every other git call.
        return run_git([f"--work-tree={directory}", *args], git_dir=git_dir, env=env)

    if not git_dir.exists():
        run_git(["init", "--bare", "-q", "--template=", "-b", "main", str(git_dir)])
    git("add", "-A")
    if git("status", "--porcelain"):
        git("commit", "-q", "-m", f"snapshot of {directory}")
    return str(git_dir)


def source_of(config: Config, repo: str) -> tuple[str, str]:
    """(clone URL, owner/name) for REPO: a git directory, a plain directory, or a URL."""
    path = Path(repo)
    if path.is_dir():
        name = path.resolve().name or "repo"
        # Its own repository (work tree or bare), not merely a folder inside another one.
        if (path / ".git").exists() or ((path / "HEAD").is_file() and (path / "objects").is_dir()):
            return str(path.resolve()), f"local/{name}"
        git_dir = config.instance.data_dir / "snapshots" / f"{name}.git"
        return snapshot(path.resolve(), git_dir), f"local/{name}"
    if "://" in repo or repo.startswith("git@"):
        tail = repo.rstrip("/").removesuffix(".git").split("/")[-2:]
        return repo, "/".join(tail) if len(tail) == 2 else f"remote/{tail[-1]}"
    raise RunError(f"{repo}: not a directory and not a git URL")


async def plan(config: Config, store: Store, mirrors: Mirrors, options: RunOptions) -> int:
    """Record the build and its queued jobs; returns the build id."""
    url, repo = source_of(config, options.repo)
    if options.pr is not None:
        head_ref = f"refs/pull/{options.pr}/head"
        base = options.base or "main"
    else:
        head_ref = options.ref or "HEAD"
        base = options.base or head_ref
    try:
        head = await mirrors.prepare_ref(url, head_ref)
        if base != head_ref:
            await mirrors.fetch(url, [base])
        base_ref = head.ref if base == head_ref else base
    except WorkspaceError as exc:
        raise RunError(str(exc)) from None
    filters = BuildFilters(for_arch=options.for_arch, repo=options.repo_target)
    selection = select_targets(filters, config.instance.name, config.node_types,
                               config.repo_targets)
    if not selection.targets:
        raise RunError(selection.message or "no target selected")
    targets = [PlannedTarget(t.node_type, t.repo_target, t.cpu_target, t.accelerator,
                             t.build_on) for t in selection.targets]
    request = BuildRequest(repo=repo, pr=options.pr, installation_id=None, head_sha=head.sha,
                           base_ref=base_ref, clone_url=url, command="layerbot run",
                           requested_by="layerbot-run")
    with store.transaction() as session:
        build, _ = record_build(session, config, request, targets, clock.now())
        return build.id


def rows(store: Store, build_id: int) -> tuple[Build, list[report.JobRow]]:
    with store.read() as session:
        build = session.get(Build, build_id)
        assert build is not None
        return build, jobstore.rows_for_jobs(session, jobstore.jobs_of_build(session, build_id))


def progress_table(job_rows: list[report.JobRow]) -> Table:
    table = Table(title="layerbot run")
    for column in ("job", "target", "repository", "state", "duration"):
        table.add_column(column)
    for r in job_rows:
        table.add_row(str(r.id), r.target, r.repo_target,
                      f"{report.ICONS[r.state]} {r.state.value}", report.duration(r))
    return table


async def execute(config: Config, options: RunOptions, console: Console,
                  live: bool = True) -> tuple[Build, list[report.JobRow]]:
    store = Store(config.store_url)
    mirrors = Mirrors(config.mirrors_dir, attempts=config.build.fetch_attempts)
    backend = make_backend(config)
    build_id = await plan(config, store, mirrors, options)
    agent = builtin_agent(config, store, backend, mirrors)
    await agent.submit_ready()
    display = Live(progress_table(rows(store, build_id)[1]), console=console,
                   refresh_per_second=4, transient=True)
    with display if live else contextlib.nullcontext():
        while True:
            await agent.reconciler.cycle()
            await agent.submit_ready()  # jobs left by an earlier run that stopped
            build, job_rows = rows(store, build_id)
            if live:
                display.update(progress_table(job_rows))
            if all(r.state.terminal for r in job_rows):
                return build, job_rows
            await asyncio.sleep(options.poll_seconds)


def artifact_digests(config: Config, build_id: int) -> dict[tuple[int, str], str]:
    """(job id, artifact name) -> sha256 of what the job reported, as recorded in the store:
    the same digest the deploy signs, so a script can check a tarball before staging it."""
    store = Store(config.store_url)
    with store.read() as session:
        jobs = jobstore.jobs_of_build(session, build_id)
        found = session.execute(
            select(Artifact.job_id, Artifact.name, Artifact.sha256)
            .where(Artifact.job_id.in_([j.id for j in jobs]))
        ).all()
    return {(job_id, name): sha256 for job_id, name, sha256 in found}


def as_json(build: Build, job_rows: list[report.JobRow],
            digests: Mapping[tuple[int, str], str] | None = None) -> str:
    digests = digests or {}
    out: dict[str, Any] = {
        "build": build.id, "repo": build.repo, "head_sha": build.head_sha,
        "base_ref": build.base_ref,
        "succeeded": all(r.state is JobState.SUCCEEDED for r in job_rows),
        "jobs": [{"id": r.id, "target": r.target, "repo_target": r.repo_target,
                  "state": r.state.value, "reason": r.reason, "summary": r.summary,
                  "backend_id": r.backend_id,
                  "artifacts": [{"name": n, "size": s, "sha256": digests.get((r.id, n))}
                                for n, s in r.artifacts],
                  "started_at": r.started_at.isoformat() if r.started_at else None,
                  "ended_at": r.ended_at.isoformat() if r.ended_at else None}
                 for r in job_rows],
    }
    return json.dumps(out, indent=2)


def text_report(config: Config, build: Build, job_rows: list[report.JobRow]) -> str:
    header = report.BuildHeader(config.instance.name, build.requested_by, build.command,
                                build.head_sha, build.base_ref)
    body = report.build_comment(header, job_rows)
    failed = [r for r in job_rows if r.state is not JobState.SUCCEEDED and r.log_tail]
    for r in failed:
        body += f"\n\nJob {r.id} ({r.target}), last lines of its log:\n{r.log_tail}"
    return body
