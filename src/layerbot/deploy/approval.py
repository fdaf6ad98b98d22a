"""Approval of an ingest by a maintainer on GitHub (``ingest.approval = "github"``).

For each verified artifact, :class:`GitHubApproval` opens one pull request in
``ingest.approval_repo``: a branch off the default branch with one file,
``ingest/<id>.json`` (the artifact's metadata and what ingestion verified), so the request
is reviewable like any change. A person allowed to deploy (``access.deploy``, checked
against the approval repository) approves with a comment ``bot: approve`` or refuses with
``bot: reject <reason>``; the newest such comment wins. Comments by others, and by bots,
are ignored, and so is every comment that was edited: GitHub lets anyone with write
access edit other people's comments, so an edited comment no longer says only what its
author wrote. The verdict that decides is recorded with the comment's id and the sha256 of
its body as read, so what was approved can be shown later even if the comment changes.

Only operations of the REST subset the App uses are needed: ``git/ref``, ``git/refs``,
``contents``, ``pulls`` (create), issue comments (list) and the collaborator permission.
What was opened is kept in ``<ingest state dir>/approvals.sqlite`` so each artifact gets
one pull request, also across restarts. Every step tolerates having been done before (a
crash between two steps): an existing branch or file is used as it is. Only a pull
request created whose number was lost cannot be found again (the subset cannot list pull
requests); the next attempt then uses a new branch, and the lost one is left for a human.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from layerbot import log
from layerbot.deploy.ingest import Decision, IngestItem
from layerbot.github.access import AccessChecker
from layerbot.github.client import GitHubApp, GitHubError

_log = log.get("ingest")

#: Tried in this order when no base branch is given (the subset has no "get repository").
DEFAULT_BRANCHES = ("main", "master")
_APPROVE = re.compile(r"^\s*bot:\s*approve\b", re.IGNORECASE)
_REJECT = re.compile(r"^\s*bot:\s*reject\b\s*(.*)$", re.IGNORECASE)
#: Attempts at a fresh branch when a pull request exists whose number was lost.
_MAX_ATTEMPTS = 5


@dataclass
class _Request:
    item_id: str
    attempt: int = 0
    number: int | None = None
    url: str = ""


class _Requests:
    """item id -> the pull request opened for it."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS requests (item_id TEXT PRIMARY KEY, "
            "attempt INTEGER NOT NULL, number INTEGER, url TEXT NOT NULL DEFAULT '')")

        self.db.execute(
            "CREATE TABLE IF NOT EXISTS verdicts (item_id TEXT PRIMARY KEY, "
            "comment_id INTEGER NOT NULL, body_sha256 TEXT NOT NULL, login TEXT NOT NULL, "
            "approve INTEGER NOT NULL)")

    def record_verdict(self, item_id: str, verdict: Verdict) -> None:
        self.db.execute("INSERT OR REPLACE INTO verdicts VALUES (?, ?, ?, ?, ?)",
                        (item_id, verdict.comment_id, verdict.body_sha256, verdict.login,
                         int(verdict.approve)))

    def get(self, item_id: str) -> _Request:
        row = self.db.execute("SELECT attempt, number, url FROM requests WHERE item_id = ?",
                              (item_id,)).fetchone()
        return _Request(item_id, *row) if row else _Request(item_id)

    def save(self, r: _Request) -> None:
        self.db.execute("INSERT OR REPLACE INTO requests VALUES (?, ?, ?, ?)",
                        (r.item_id, r.attempt, r.number, r.url))

    def close(self) -> None:
        self.db.close()


@dataclass(frozen=True)
class Verdict:
    approve: bool
    login: str
    reason: str
    #: The comment it was read from, and the sha256 of that comment's body when read.
    comment_id: int = 0
    body_sha256: str = ""


def edited(comment: dict[str, Any]) -> bool:
    """GitHub moves ``updated_at`` on every edit; a comment without both times counts as
    edited, since nothing shows it was not."""
    created, updated = comment.get("created_at"), comment.get("updated_at")
    return not created or created != updated


def verdicts(comments: Sequence[dict[str, Any]]) -> list[Verdict]:
    """The ``bot: approve`` / ``bot: reject <reason>`` lines of unedited human comments."""
    found = []
    for comment in comments:
        user = comment.get("user") or {}
        login = str(user.get("login", ""))
        if user.get("type") == "Bot" or login.endswith("[bot]"):
            continue
        body = str(comment.get("body") or "")
        if edited(comment):
            if any(_APPROVE.match(x) or _REJECT.match(x) for x in body.splitlines()):
                _log.warning("edited approval comment ignored", comment_id=comment.get("id"),
                             login=login)
            continue
        digest = hashlib.sha256(body.encode()).hexdigest()
        cid = int(comment.get("id") or 0)
        for line in body.splitlines():
            if _APPROVE.match(line):
                found.append(Verdict(True, login, "", cid, digest))
            elif m := _REJECT.match(line):
                found.append(Verdict(False, login, m.group(1).strip() or "no reason given",
                                     cid, digest))
    return found


class GitHubApproval:
    """The ingestor's approval policy: a maintainer decides on a pull request."""

    def __init__(self, github: GitHubApp, repo: str, access: AccessChecker, state_dir: Path,
                 *, installation_id: int | None = None, base_branch: str | None = None) -> None:
        if repo.count("/") != 1:
            raise ValueError(f"ingest.approval_repo must be owner/name, got {repo!r}")
        self.github = github
        self.repo = repo
        self.access = access
        self.requests = _Requests(state_dir / "approvals.sqlite")
        self._installation = installation_id
        self._base_branch = base_branch

    def close(self) -> None:
        self.requests.close()

    async def decide(self, item: IngestItem) -> Decision:
        inst = await self._installation_id()
        request = self.requests.get(item.id)
        if request.number is None:
            await self._open(inst, item, request)
        assert request.number is not None
        comments = await self._comments(inst, request.number)
        for verdict in reversed(verdicts(comments)):
            decision = await self.access.check("deploy", self.repo, verdict.login, inst)
            if not decision.allowed:
                _log.info("approval ignored", login=verdict.login, reason=decision.reason)
                continue
            self.requests.record_verdict(item.id, verdict)
            where = (f"{request.url} (comment {verdict.comment_id}, body sha256 "
                     f"{verdict.body_sha256[:16]})")
            if verdict.approve:
                return Decision.approved(by=verdict.login, reason=f"approved on {where}")
            return Decision.rejected(f"{verdict.reason} (by {verdict.login} on {where})",
                                     by=verdict.login)
        return Decision.pending(f"waiting for approval on {request.url}")

    # -------------------------------------------------------------- GitHub

    async def _installation_id(self) -> int:
        if self._installation is None:
            data = await self.github.app_request("GET", f"/repos/{self.repo}/installation")
            self._installation = int(data["id"])
        return self._installation

    async def _base(self, inst: int) -> tuple[str, str]:
        """(branch, sha) of the approval repository's base branch."""
        names = (self._base_branch,) if self._base_branch else DEFAULT_BRANCHES
        for name in names:
            try:
                ref = await self.github.json(inst, "GET",
                                             f"/repos/{self.repo}/git/ref/heads/{name}")
            except GitHubError as exc:
                if exc.status == 404:
                    continue
                raise
            return name, str(ref["object"]["sha"])
        raise GitHubError("GET", f"/repos/{self.repo}/git/ref/heads/…", 404,
                          f"no branch {' or '.join(names)} in {self.repo}")

    async def _open(self, inst: int, item: IngestItem, request: _Request) -> None:
        base, sha = await self._base(inst)
        slug = hashlib.sha256(item.id.encode()).hexdigest()[:16]
        while request.number is None:
            if request.attempt >= _MAX_ATTEMPTS:
                raise RuntimeError(f"could not open an approval pull request in {self.repo}")
            branch = f"layerbot-ingest/{slug}" + (f"-{request.attempt}" if request.attempt else "")
            await self._branch(inst, branch, sha)
            await self._file(inst, branch, f"ingest/{slug}.json", item)
            try:
                pull = await self.github.json(inst, "POST", f"/repos/{self.repo}/pulls", json={
                    "title": _title(item), "head": branch, "base": base, "body": _body(item)})
            except GitHubError as exc:
                if exc.status == 422 and "already exists" in str(exc):
                    request.attempt += 1  # opened before, number lost: see the module doc
                    self.requests.save(request)
                    continue
                raise
            request.number, request.url = int(pull["number"]), str(pull["html_url"])
            self.requests.save(request)
            _log.info("approval requested", item=item.id, url=request.url)

    async def _branch(self, inst: int, branch: str, sha: str) -> None:
        try:
            await self.github.request(inst, "POST", f"/repos/{self.repo}/git/refs",
                                      json={"ref": f"refs/heads/{branch}", "sha": sha})
        except GitHubError as exc:
            if not (exc.status == 422 and "already exists" in str(exc)):
                raise

    async def _file(self, inst: int, branch: str, path: str, item: IngestItem) -> None:
        content = json.dumps(_request_document(item), indent=2, sort_keys=True) + "\n"
        try:
            await self.github.request(inst, "PUT", f"/repos/{self.repo}/contents/{path}", json={
                "message": f"Ingest request: {item.key}", "branch": branch,
                "content": base64.b64encode(content.encode()).decode()})
        except GitHubError as exc:
            # 422 "sha wasn't supplied": the file is there from an earlier attempt.
            if exc.status != 422:
                raise

    async def _comments(self, inst: int, number: int) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        for page in range(1, 51):
            chunk = await self.github.json(inst, "GET",
                                           f"/repos/{self.repo}/issues/{number}/comments",
                                           params={"per_page": 100, "page": page})
            found += chunk or []
            if not chunk or len(chunk) < 100:
                break
        return found


def _request_document(item: IngestItem) -> dict[str, Any]:
    return {
        "key": item.key,
        "sha256": item.sha256,
        "repository": item.repository,
        "repo_target": item.repo_target,
        "signer": item.signer,
        "warnings": list(item.warnings),
        "staged_at": item.staged_at.isoformat(),
        "metadata": item.metadata.model_dump(mode="json"),
    }


def _title(item: IngestItem) -> str:
    return f"Ingest {item.metadata.payload.filename} into {item.repository}"


def _body(item: IngestItem) -> str:
    link = item.metadata.link2pr
    info = item.metadata.layerbot
    lines = [
        f"layerbot asks to ingest `{item.key}` into `{item.repository}`.",
        "",
        f"- from {link.repo}#{link.pr}" + (f", job {info.job_id} on `{info.instance}`, "
                                            f"commit `{info.head_sha[:12]}`" if info else ""),
        f"- sha256 `{item.sha256}`, {item.metadata.payload.size} bytes",
        f"- signed by `{item.signer}` (checked against the allowed signers)",
    ]
    if item.warnings:
        lines += ["", "**Warnings from the tarball check:**", ""]
        lines += [f"- {w}" for w in item.warnings]
    lines += ["", "Comment `bot: approve` to ingest it, or `bot: reject <reason>` to refuse it "
              "(people allowed to deploy only). Merging this pull request keeps a record of "
              "the request; it does not ingest anything."]
    return "\n".join(lines)
