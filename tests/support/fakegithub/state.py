"""In-memory records of the fake's GitHub state.

These dataclasses are the fake's storage *and* what tests get back from the
inspection helpers (as deep copies, so a test never races with the server thread).
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    """GitHub's timestamp format; githubkit parses ``expires_at`` with exactly this."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def stable_id(text: str, base: int = 1_000_000) -> int:
    """Deterministic numeric id for a name (same login -> same user id in every test)."""
    return base + zlib.crc32(text.lower().encode()) % 90_000_000


def fake_sha(*parts: object) -> str:
    """A 40-hex "commit" id derived from its inputs."""
    return hashlib.sha1(repr(parts).encode(), usedforsecurity=False).hexdigest()


def blob_sha(content: bytes) -> str:
    """The real git blob id of ``content`` (what the contents API reports as ``sha``)."""
    header = f"blob {len(content)}\0".encode()
    return hashlib.sha1(header + content, usedforsecurity=False).hexdigest()


@dataclass
class Installation:
    id: int
    account: str
    account_type: str  # "Organization" or "User"
    repository_selection: str  # "all" or "selected"
    repositories: list[str]  # lower-case "owner/name" when selection is "selected"
    permissions: dict[str, str]
    events: list[str]
    suspended: bool = False
    created_at: datetime = field(default_factory=utcnow)


@dataclass
class IssuedToken:
    token: str
    installation_id: int
    expires_at: datetime
    permissions: dict[str, str]
    repositories: list[str] | None  # lower-case full names the token is narrowed to


@dataclass
class Commit:
    sha: str
    files: dict[str, bytes]  # path -> content (the whole tree of this commit)
    message: str = ""
    parent: str | None = None


@dataclass
class Repo:
    id: int
    owner: str
    name: str
    private: bool
    default_branch: str
    installation_id: int | None
    refs: dict[str, str] = field(default_factory=dict)  # "refs/heads/main" -> sha
    commits: dict[str, Commit] = field(default_factory=dict)
    permissions: dict[str, str] = field(default_factory=dict)  # login (lower) -> role
    label_ids: dict[str, int] = field(default_factory=dict)
    created_at: datetime = field(default_factory=utcnow)

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"

    @property
    def key(self) -> str:
        return self.full_name.lower()


@dataclass
class Issue:
    """An issue or pull request (they share the number space, as on GitHub)."""

    repo_key: str
    number: int
    title: str
    body: str | None
    user: str
    state: str = "open"
    labels: list[str] = field(default_factory=list)
    author_association: str = "CONTRIBUTOR"
    created_at: datetime = field(default_factory=utcnow)
    updated_at: datetime = field(default_factory=utcnow)
    # Pull request only (``head_sha is None`` means a plain issue).
    head_sha: str | None = None
    head_ref: str = ""
    base_ref: str = ""
    head_repo: str | None = None  # full name when the PR comes from a fork
    draft: bool = False
    merged: bool = False
    mergeable: bool | None = True
    files: list[dict[str, Any]] = field(default_factory=list)
    id: int = 0

    @property
    def is_pull(self) -> bool:
        return self.head_sha is not None


@dataclass
class Comment:
    id: int
    repo_key: str
    issue_number: int
    body: str
    user: str
    user_type: str
    author_association: str
    created_at: datetime = field(default_factory=utcnow)
    updated_at: datetime = field(default_factory=utcnow)
    history: list[str] = field(default_factory=list)  # every body it had, oldest first
    reactions: list[Reaction] = field(default_factory=list)


@dataclass
class Reaction:
    id: int
    content: str
    user: str
    created_at: datetime = field(default_factory=utcnow)


@dataclass
class CheckRun:
    id: int
    repo_key: str
    name: str
    head_sha: str
    status: str
    conclusion: str | None
    started_at: datetime | None
    completed_at: datetime | None
    details_url: str | None
    external_id: str | None
    output: dict[str, Any]
    check_suite_id: int
    actions: list[dict[str, Any]] = field(default_factory=list)
    annotations_count: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)  # state after each call

    def snapshot(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "conclusion": self.conclusion,
            "title": self.output.get("title"),
            "summary": self.output.get("summary"),
            "text": self.output.get("text"),
            "details_url": self.details_url,
            "external_id": self.external_id,
        }


@dataclass
class CommitStatus:
    id: int
    repo_key: str
    sha: str
    state: str
    target_url: str | None
    description: str | None
    context: str
    created_at: datetime = field(default_factory=utcnow)


@dataclass
class Delivery:
    id: int
    guid: str
    event: str
    action: str | None
    status_code: int
    status: str
    delivered_at: datetime
    redelivery: bool = False
    installation_id: int | None = None
    repository_id: int | None = None
    duration: float = 0.1


@dataclass
class TeamMember:
    role: str  # "member" or "maintainer"
    state: str  # "active" or "pending"
