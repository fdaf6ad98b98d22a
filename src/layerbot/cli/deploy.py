"""Deploy commands of the command line: ``layerbot ingest`` and ``layerbot deploy-status``.

``layerbot ingest`` runs on the repository server (a CernVM-FS Stratum 0). It reads the
same layerbot.toml as the bot (``deploy.*`` says where the staging area is, ``ingest.*``
what to trust and what to run) and needs no database of the bot: its own state is in
``ingest.state_dir``.

Outcomes are reported on the source PR by posting directly through the GitHub App (the
ingest server runs no outbox). That is safe to repeat: the ingestor re-sends an outcome
whose report failed on its next poll, and the reporter edits the one comment it keeps per
artifact (found by id in ``<state dir>/reports.sqlite``, else by its hidden marker), so a
retry never posts a second comment.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import signal
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from layerbot import log
from layerbot.config import Config
from layerbot.deploy.ingest import (
    ApprovalPolicy,
    AutoApprove,
    IngestError,
    IngestEvent,
    Ingestor,
    Record,
)
from layerbot.deploy.layout import layout_named
from layerbot.deploy.staging import DirStaging, S3Staging, Staging, StagingError
from layerbot.github.client import GitHubApp, GitHubError

_log = log.get("ingest")
console = Console()
err = Console(stderr=True)

# Not imported from layerbot.cli.main: that module imports this one while it is being loaded.
ConfigOption = Annotated[Path | None, typer.Option(
    "--config", "-c", help="layerbot.toml (default: $LAYERBOT_CONFIG, ./layerbot.toml)")]

#: How the source PR shows each ingest state.
INGEST_ICONS = {"pending": "⏳", "ingested": "✅", "rejected": "⛔", "failed": "❌",
                "duplicate": "☑️"}
_REPORT_ATTEMPTS = 3


# ----------------------------------------------------------------------------- reporting


def ingest_comment(event: IngestEvent) -> str:
    """What the source PR is told about one artifact (the comment is edited as it moves)."""
    md = event.metadata
    name = md.payload.filename if md else event.key
    info = md.layerbot if md else None
    where = f" into `{event.repository}`" if event.repository else ""
    origin = (f" (job {info.job_id} on `{info.instance}`, `{info.target}`)" if info else "")
    head = f"**layerbot ingest**{where}: `{name}`{origin}"
    icon = INGEST_ICONS.get(event.state, "")
    if event.state == "pending":
        status = f"{icon} {event.reason}"
    elif event.state == "ingested":
        status = f"{icon} ingested"
    elif event.state == "duplicate":
        status = f"{icon} not ingested again: {event.reason}"
    else:
        verb = "rejected" if event.state == "rejected" else "failed"
        status = f"{icon} {verb}:\n\n```\n{event.reason.strip()[-3000:]}\n```"
    lines = [head, "", status]
    if not event.metadata_verified:
        lines += ["", "_The metadata's signature did not verify: this pull request is named "
                  "by metadata nobody vouched for._"]
    return "\n".join(lines)


def state_marker(event: IngestEvent) -> str:
    """The outcome for the bot that staged the artifact (``handlers.deploy`` reads it from
    the App's own comment and moves the deployment to ingested or rejected). Only for
    verified metadata: an unverified claim must not change what the bot believes."""
    info = event.metadata.layerbot if event.metadata else None
    if info is None or not event.metadata_verified or event.state == "pending":
        return ""
    data = {"instance": info.instance, "key": event.key, "sha256":
            event.metadata.payload.sha256sum if event.metadata else "", "state": event.state,
            "reason": event.reason[-1000:]}
    encoded = base64.urlsafe_b64encode(json.dumps(data).encode()).decode()
    return f"<!-- layerbot-ingest-state:{encoded} -->\n"


class PRReporter:
    """Posts (then edits) one comment per artifact on its source PR."""

    def __init__(self, github: GitHubApp, state_dir: Path) -> None:
        self.github = github
        state_dir.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(state_dir / "reports.sqlite", isolation_level=None)
        self.db.execute("CREATE TABLE IF NOT EXISTS comments (item_id TEXT PRIMARY KEY, "
                        "repo TEXT NOT NULL, comment_id INTEGER NOT NULL)")
        self._installations: dict[str, int] = {}

    def close(self) -> None:
        self.db.close()

    async def __call__(self, event: IngestEvent) -> None:
        md = event.metadata
        if md is None:
            _log.warning("ingest outcome not reported: no readable metadata", key=event.key,
                         state=event.state, reason=event.reason)
            return
        repo, pr = md.link2pr.repo, md.link2pr.pr
        slug = hashlib.sha256(event.item_id.encode()).hexdigest()[:20]
        marker = f"<!-- layerbot:ingest:{slug} -->"
        body = f"{ingest_comment(event)}\n\n{state_marker(event)}{marker}"
        for attempt in range(1, _REPORT_ATTEMPTS + 1):
            try:
                await self._post(repo, pr, event.item_id, marker, body)
                return
            except GitHubError as exc:
                # Only GitHub's own trouble is worth waiting for; the ingestor re-sends
                # the outcome on its next poll anyway.
                if attempt == _REPORT_ATTEMPTS or not (exc.status == 0 or exc.status >= 500):
                    raise
                await asyncio.sleep(2 ** attempt)

    async def _post(self, repo: str, pr: int, item_id: str, marker: str, body: str) -> None:
        inst = await self._installation(repo)
        row = self.db.execute("SELECT comment_id FROM comments WHERE item_id = ?",
                              (item_id,)).fetchone()
        comment_id = int(row[0]) if row else await self._find(inst, repo, pr, marker)
        if comment_id is not None:
            await self.github.request(inst, "PATCH",
                                      f"/repos/{repo}/issues/comments/{comment_id}",
                                      json={"body": body})
        else:
            data = await self.github.json(inst, "POST", f"/repos/{repo}/issues/{pr}/comments",
                                          json={"body": body})
            comment_id = int(data["id"])
        self.db.execute("INSERT OR REPLACE INTO comments VALUES (?, ?, ?)",
                        (item_id, repo, comment_id))

    async def _installation(self, repo: str) -> int:
        if repo not in self._installations:
            data = await self.github.app_request("GET", f"/repos/{repo}/installation")
            self._installations[repo] = int(data["id"])
        return self._installations[repo]

    async def _find(self, inst: int, repo: str, pr: int, marker: str) -> int | None:
        """A comment posted by an earlier run that died before it noted the id."""
        for page in range(1, 21):
            chunk: list[dict[str, Any]] = await self.github.json(
                inst, "GET", f"/repos/{repo}/issues/{pr}/comments",
                params={"per_page": 100, "page": page}) or []
            for comment in chunk:
                if marker in (comment.get("body") or ""):
                    return int(comment["id"])
            if len(chunk) < 100:
                return None
        return None


# ----------------------------------------------------------------------------- assembly


def stagings(cfg: Config) -> list[tuple[str, Staging]]:
    """(name, staging area) to watch: the directory, or every configured S3 bucket."""
    layout = layout_named(cfg.deploy.layout)
    if cfg.deploy.staging == "dir":
        return [("", DirStaging(cfg.staging_dir, layout=layout))]
    buckets = sorted(set(cfg.deploy.s3.buckets.values()))
    if not buckets:
        raise IngestError("deploy.s3.buckets names no bucket to watch")
    # Ingestion only downloads; the state dir is where S3Staging would keep uploads.
    return [(b, S3Staging(cfg.deploy.s3, b, state_dir=cfg.ingest_state_dir / "s3",
                          layout=layout))
            for b in buckets]


def make_approval(cfg: Config, github: GitHubApp | None, state_dir: Path) -> ApprovalPolicy:
    ingest = cfg.ingest
    if ingest.approval == "auto":
        return AutoApprove(ingest.auto_approve_principals or None)
    if github is None:
        raise IngestError('ingest.approval = "github" needs github.app_id and '
                          "github.private_key_file")
    if not ingest.approval_repo:
        raise IngestError('ingest.approval = "github" needs ingest.approval_repo (owner/name)')
    from layerbot.deploy.approval import GitHubApproval
    from layerbot.github.access import AccessChecker

    return GitHubApproval(github, ingest.approval_repo, AccessChecker(github, cfg.access),
                          state_dir, installation_id=ingest.approval_installation_id)


def make_ingestors(cfg: Config, github: GitHubApp | None,
                   approval: ApprovalPolicy | None = None) -> list[Ingestor]:
    """One ingestor per staging area; each keeps its own state (a subdirectory per bucket
    when there are several), and they run one after the other, never side by side."""
    ing = cfg.ingest
    if ing.allowed_signers_file is None:
        raise IngestError("ingest.allowed_signers_file is not set: ingestion trusts only "
                          "artifacts signed by a key listed there")
    areas = stagings(cfg)
    base = cfg.ingest_state_dir
    reporter = PRReporter(github, base) if github is not None else None
    approval = approval or make_approval(cfg, github, base)
    return [
        Ingestor(staging, ing.allowed_signers_file, approval, ing.command,
                 base / name if len(areas) > 1 else base, prefix=ing.prefix,
                 repositories=ing.repositories, default_repository=ing.default_repository or None,
                 base_dir_template=ing.base_dir, namespaces=ing.namespaces or None,
                 allowed_link_prefixes=ing.allowed_link_prefixes, on_event=reporter,
                 command_timeout=ing.command_timeout_seconds)
        for name, staging in areas
    ]


def _github(cfg: Config) -> GitHubApp | None:
    if cfg.github.app_id and cfg.github.private_key:
        return GitHubApp(cfg.github)
    return None


async def _poll(ingestors: Sequence[Ingestor]) -> list[Record]:
    changed: list[Record] = []
    for ingestor in ingestors:
        changed += await ingestor.run_once()
    return changed


async def _serve(cfg: Config, ingestors: Sequence[Ingestor]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    while not stop.is_set():
        try:
            await _poll(ingestors)
        except (StagingError, GitHubError, OSError, sqlite3.Error) as exc:
            # The staging area, GitHub or the disk may come back: the next poll tries again.
            _log.error("ingest poll failed", error=str(exc))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), cfg.ingest.poll_seconds)


async def _ingest(cfg: Config, once: bool, force: Sequence[str] = ()) -> list[Record]:
    github = _github(cfg)
    ingestors = make_ingestors(cfg, github)
    try:
        for ingestor in ingestors:
            for sha256 in force:
                ingestor.force(sha256)
        if once:
            return await _poll(ingestors)
        await _serve(cfg, ingestors)
        return []
    finally:
        for ingestor in ingestors:
            ingestor.close()
        # The approval policy and the reporter are shared by the ingestors: close once.
        for part in (ingestors[0].approval, ingestors[0].on_event) if ingestors else ():
            close = getattr(part, "close", None)
            if close is not None:
                close()
        if github is not None:
            await github.close()


def load_config(path: Path | None) -> Config:
    from layerbot.cli.main import load_config as load

    return load(path)


def _forget(cfg: Config, key: str) -> int:
    # Only the outcome store is touched: no approval, no GitHub.
    ingestors = make_ingestors(cfg, None, AutoApprove())
    try:
        return sum(i.forget(key) for i in ingestors)
    finally:
        for ingestor in ingestors:
            ingestor.close()


def ingest(
    config: ConfigOption = None,
    once: Annotated[bool, typer.Option("--once", help="one poll, then exit")] = False,
    forget: Annotated[str | None, typer.Option(
        "--forget", metavar="KEY",
        help="make the artifact at KEY new again (retry after a failure), then exit")] = None,
    force: Annotated[list[str] | None, typer.Option(
        "--force", metavar="SHA256",
        help="an admin's decision: ingest the artifact with this sha256 although it was "
             "ingested before (repeatable; implies --once)")] = None,
) -> None:
    """Ingest staged artifacts into the repository (run on the repository server)."""
    cfg = load_config(config)
    forced = [f.lower() for f in force or []]
    if bad := [f for f in forced if len(f) != 64 or any(c not in "0123456789abcdef" for c in f)]:
        err.print(f"[red]layerbot ingest: --force takes a sha256 (64 hex digits), not "
                  f"{', '.join(bad)}[/red]", highlight=False)
        raise typer.Exit(2)
    try:
        if forget is not None:
            console.print(f"forgot {_forget(cfg, forget)} record(s) of {forget}")
            return
        changed = asyncio.run(_ingest(cfg, once or bool(forced), forced))
    except (IngestError, StagingError) as exc:
        err.print(f"[red]layerbot ingest: {exc}[/red]", highlight=False)
        raise typer.Exit(2) from None
    for record in changed:
        console.print(f"{record.state:9} {record.key}  {record.reason}", highlight=False,
                      markup=False)


def deploy_status(
    config: ConfigOption = None,
    repo: Annotated[str | None, typer.Option(help="only this repository (owner/name)")] = None,
    pr: Annotated[int | None, typer.Option(help="only this pull request")] = None,
) -> None:
    """List this instance's deployments and their states (run where the bot runs)."""
    from rich.table import Table
    from sqlalchemy import select

    from layerbot.store.db import Store
    from layerbot.store.models import Artifact, Deployment, Job

    cfg = load_config(config)
    store = Store(cfg.store_url)
    stmt = (select(Deployment, Artifact.name).join(Artifact, Deployment.artifact_id == Artifact.id)
            .join(Job, Deployment.job_id == Job.id)
            .where(Job.instance == cfg.instance.name).order_by(Deployment.id))
    if repo:
        stmt = stmt.where(Deployment.repo == repo)
    if pr is not None:
        stmt = stmt.where(Deployment.pr == pr)
    table = Table(title=f"deployments of {cfg.instance.name}")
    for column in ("PR", "job", "artifact", "state", "key / error"):
        table.add_column(column, overflow="fold")
    with store.read() as s:
        for d, name in s.execute(stmt).all():
            table.add_row(f"{d.repo}#{d.pr}", str(d.job_id), name, d.state,
                          d.error or d.key or "")
    console.print(table)


def register(app: typer.Typer) -> None:
    app.command("ingest")(ingest)
    app.command("deploy-status")(deploy_status)
