"""Thread-safe in-memory GitHub state, with the setup and inspection API for tests.

The server thread and the test thread both go through ``self._lock``; everything a
test reads back is a deep copy, so it can never observe a half-applied request.
"""

from __future__ import annotations

import copy
import itertools
import threading
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from tests.support.fakegithub.state import (
    CheckRun,
    Comment,
    Commit,
    CommitStatus,
    Delivery,
    Installation,
    Issue,
    IssuedToken,
    Repo,
    TeamMember,
    fake_sha,
    stable_id,
    utcnow,
)

#: What a fresh installation may do (enough for every operation of the subset).
DEFAULT_PERMISSIONS = {
    "checks": "write",
    "contents": "write",
    "issues": "write",
    "members": "read",
    "metadata": "read",
    "pull_requests": "write",
    "statuses": "write",
}
DEFAULT_EVENTS = ["check_run", "check_suite", "issue_comment", "pull_request", "push"]
ROLES = ("admin", "maintain", "write", "triage", "read", "none")


class ApiError(Exception):
    """An error response, as GitHub would send it.

    ``misuse`` marks errors that only a buggy client provokes (GitHub would reject the
    request as invalid); those are also recorded as violations.
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
        misuse: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors
        self.headers = headers or {}
        self.misuse = misuse


def not_found() -> ApiError:
    return ApiError(404, "Not Found")


class Store:
    """State plus the test-facing setup/inspection helpers (mixed into FakeGitHub)."""

    def _init_store(self) -> None:
        self._lock = threading.RLock()
        self.installations: dict[int, Installation] = {}
        self.repos: dict[str, Repo] = {}
        self.issues: dict[tuple[str, int], Issue] = {}
        self._comments: dict[int, Comment] = {}
        self._check_runs: dict[int, CheckRun] = {}
        self._statuses: list[CommitStatus] = []
        self.deliveries: dict[int, Delivery] = {}
        self.teams: dict[tuple[str, str], dict[str, TeamMember]] = {}
        self.tokens: dict[str, IssuedToken] = {}
        #: Delivery ids that clients asked to redeliver, in order.
        self.redeliveries: list[int] = []
        self._comment_ids = itertools.count(1000)
        self._reaction_ids = itertools.count(500)
        self._check_run_ids = itertools.count(5000)
        self._status_ids = itertools.count(7000)
        self._label_ids = itertools.count(300)
        self._delivery_ids = itertools.count(90_000_000)
        self._check_suites: dict[tuple[str, str], int] = {}
        self._user_types: dict[str, str] = {}

    # == setup ============================================================================

    def add_installation(
        self,
        installation_id: int,
        account: str,
        *,
        account_type: str = "Organization",
        repository_selection: str = "all",
        repositories: Iterable[str] = (),
        permissions: dict[str, str] | None = None,
        events: Iterable[str] = DEFAULT_EVENTS,
        suspended: bool = False,
    ) -> None:
        """Install the app on ``account``.

        With ``repository_selection="all"`` every ``account/*`` repository is reachable
        (and created on first use); with ``"selected"`` only ``repositories``
        (``"owner/name"``).
        """
        with self._lock:
            self._user_types[account.lower()] = account_type
            self.installations[installation_id] = Installation(
                id=installation_id,
                account=account,
                account_type=account_type,
                repository_selection=repository_selection,
                repositories=[name.lower() for name in repositories],
                permissions=dict(permissions or DEFAULT_PERMISSIONS),
                events=list(events),
                suspended=suspended,
            )
            for full_name in repositories:
                owner, name = full_name.split("/")
                self._ensure_repo(owner, name, installation_id)

    def add_repo(
        self,
        owner: str,
        name: str,
        *,
        installation_id: int | None = None,
        private: bool = False,
        default_branch: str = "main",
    ) -> int:
        """Create a repository (with ``default_branch`` at an initial commit); returns its id."""
        with self._lock:
            repo = self._ensure_repo(owner, name, installation_id, private, default_branch)
            return repo.id

    def _ensure_repo(
        self,
        owner: str,
        name: str,
        installation_id: int | None = None,
        private: bool = False,
        default_branch: str = "main",
    ) -> Repo:
        key = f"{owner}/{name}".lower()
        if key in self.repos:
            repo = self.repos[key]
            if installation_id is not None:
                repo.installation_id = installation_id
            return repo
        if installation_id is None:
            installation_id = next(
                (i.id for i in self.installations.values() if self._covers(i, owner, name)),
                None,
            )
        repo = Repo(
            id=stable_id(key, base=100_000_000),
            owner=owner,
            name=name,
            private=private,
            default_branch=default_branch,
            installation_id=installation_id,
        )
        root = fake_sha("root", key)
        repo.commits[root] = Commit(root, {}, "Initial commit")
        repo.refs[f"refs/heads/{default_branch}"] = root
        self.repos[key] = repo
        return repo

    def add_issue(
        self,
        owner: str,
        repo: str,
        number: int,
        *,
        title: str = "An issue",
        body: str | None = "",
        user: str = "contributor",
        labels: Iterable[str] = (),
    ) -> None:
        with self._lock:
            record = self._ensure_repo(owner, repo)
            issue = Issue(record.key, number, title, body, user)
            issue.id = stable_id(f"{record.key}#{number}", base=500_000_000)
            self.issues[(record.key, number)] = issue
            for label in labels:
                self._attach_label(record, issue, label)

    def add_pull(
        self,
        owner: str,
        repo: str,
        number: int,
        head_sha: str,
        head_ref: str = "feature",
        base_ref: str = "main",
        *,
        title: str | None = None,
        body: str | None = "",
        user: str = "contributor",
        state: str = "open",
        draft: bool = False,
        merged: bool = False,
        mergeable: bool | None = True,
        head_repo: str | None = None,
        files: Iterable[str | dict[str, Any]] = (),
        labels: Iterable[str] = (),
        author_association: str = "CONTRIBUTOR",
    ) -> None:
        """Create (or replace) pull request ``number``; ``GET pulls/{n}`` then serves it.

        ``head_repo`` (``"fork-owner/name"``) makes it a cross-repository PR. ``files``
        are file names or ``diff-entry``-like dicts for ``GET pulls/{n}/files``.
        """
        with self._lock:
            record = self._ensure_repo(owner, repo)
            if head_repo:
                fork_owner, fork_name = head_repo.split("/")
                self._ensure_repo(fork_owner, fork_name)
            else:
                record.refs.setdefault(f"refs/heads/{head_ref}", head_sha)
            record.commits.setdefault(head_sha, Commit(head_sha, {}, "PR head"))
            pull = Issue(
                record.key,
                number,
                title or f"Pull request #{number}",
                body,
                user,
                state=state,
                author_association=author_association,
                head_sha=head_sha,
                head_ref=head_ref,
                base_ref=base_ref,
                head_repo=head_repo,
                draft=draft,
                merged=merged,
                mergeable=mergeable,
                files=[{"filename": f} if isinstance(f, str) else dict(f) for f in files],
            )
            pull.id = stable_id(f"{record.key}#{number}", base=500_000_000)
            self.issues[(record.key, number)] = pull
            for label in labels:
                self._attach_label(record, pull, label)

    def update_pull(self, owner: str, repo: str, number: int, **changes: Any) -> None:
        """Change fields of a pull request (e.g. ``head_sha`` after a push, ``state``)."""
        with self._lock:
            pull = self.issues[(f"{owner}/{repo}".lower(), number)]
            for name, value in changes.items():
                if not hasattr(pull, name):
                    raise AttributeError(f"pull requests have no field {name!r}")
                setattr(pull, name, value)
            pull.updated_at = utcnow()

    def add_comment(
        self,
        owner: str,
        repo: str,
        issue_number: int,
        body: str,
        *,
        login: str = "contributor",
        user_type: str = "User",
        author_association: str = "CONTRIBUTOR",
    ) -> int:
        """Seed a comment written by someone (not via the API); returns its id."""
        with self._lock:
            record = self._ensure_repo(owner, repo)
            if (record.key, issue_number) not in self.issues:
                raise KeyError(f"no issue/PR #{issue_number} in {owner}/{repo}; add it first")
            return self._new_comment(
                record, issue_number, body, login, user_type, author_association
            ).id

    def _new_comment(
        self,
        repo: Repo,
        issue_number: int,
        body: str,
        login: str,
        user_type: str,
        author_association: str,
    ) -> Comment:
        comment = Comment(
            id=next(self._comment_ids),
            repo_key=repo.key,
            issue_number=issue_number,
            body=body,
            user=login,
            user_type=user_type,
            author_association=author_association,
            history=[body],
        )
        self._comments[comment.id] = comment
        return comment

    def edit_comment(self, comment_id: int, body: str) -> Comment:
        """Someone edits a comment in the web UI (anyone with write access may edit others').

        As GitHub does: the body changes, ``created_at`` stays, ``updated_at`` moves. GitHub
        shows whole seconds; the edit is kept at least a second after the creation so the
        two times differ as they do for any edit a person can make.
        """
        with self._lock:
            comment = self._comments[comment_id]
            comment.body = body
            comment.history.append(body)
            comment.updated_at = max(utcnow(), comment.created_at + timedelta(seconds=1))
            return copy.deepcopy(comment)

    def set_permission(self, owner: str, repo: str, login: str, role: str) -> None:
        """Collaborator role of ``login``: admin, maintain, write, triage, read or none."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, not {role!r}")
        with self._lock:
            self._ensure_repo(owner, repo).permissions[login.lower()] = role

    def add_team_member(
        self, org: str, team_slug: str, login: str, role: str = "member", state: str = "active"
    ) -> None:
        with self._lock:
            team = self.teams.setdefault((org.lower(), team_slug.lower()), {})
            team[login.lower()] = TeamMember(role, state)

    def add_delivery(
        self,
        id: int,
        guid: str,
        event: str,
        action: str | None,
        status_code: int,
        status: str,
        delivered_at: datetime,
        redelivery: bool = False,
        *,
        installation_id: int | None = None,
        repository_id: int | None = None,
        duration: float = 0.1,
    ) -> None:
        """A webhook delivery as listed by ``GET /app/hook/deliveries``."""
        with self._lock:
            self.deliveries[id] = Delivery(
                id,
                guid,
                event,
                action,
                status_code,
                status,
                delivered_at,
                redelivery,
                installation_id,
                repository_id,
                duration,
            )

    def add_file(
        self, owner: str, repo: str, path: str, content: bytes | str, branch: str | None = None
    ) -> str:
        """Commit a file onto ``branch`` (default branch); returns the new commit sha."""
        data = content.encode() if isinstance(content, str) else content
        with self._lock:
            record = self._ensure_repo(owner, repo)
            return self._commit_file(record, branch or record.default_branch, path, data, "seed")

    def _commit_file(self, repo: Repo, branch: str, path: str, data: bytes, message: str) -> str:
        ref = f"refs/heads/{branch}"
        parent = repo.refs[ref]
        tree = dict(repo.commits[parent].files) if parent in repo.commits else {}
        tree[path] = data
        sha = fake_sha(parent, path, data, message, len(repo.commits))
        repo.commits[sha] = Commit(sha, tree, message, parent)
        repo.refs[ref] = sha
        return sha

    def add_commit(self, owner: str, repo: str, sha: str) -> None:
        """Make ``sha`` a known commit (check runs and statuses need an existing commit)."""
        with self._lock:
            record = self._ensure_repo(owner, repo)
            record.commits.setdefault(sha, Commit(sha, {}, ""))

    def set_ref(self, owner: str, repo: str, ref: str, sha: str) -> None:
        """Point ``refs/...`` (e.g. ``refs/heads/topic``) at ``sha``."""
        with self._lock:
            record = self._ensure_repo(owner, repo)
            record.refs[ref] = sha
            record.commits.setdefault(sha, Commit(sha, {}, ""))

    # == inspection =======================================================================

    def comments(self, owner: str, repo: str, issue_number: int) -> list[Comment]:
        """All comments of an issue/PR, oldest first; each has ``history`` of bodies."""
        key = f"{owner}/{repo}".lower()
        with self._lock:
            found = [
                c
                for c in self._comments.values()
                if c.repo_key == key and c.issue_number == issue_number
            ]
            return copy.deepcopy(sorted(found, key=lambda c: c.id))

    def comment(self, comment_id: int) -> Comment:
        with self._lock:
            return copy.deepcopy(self._comments[comment_id])

    def reactions(self, comment_id: int) -> list[str]:
        """Reaction contents on a comment in creation order, e.g. ``["eyes", "rocket"]``."""
        with self._lock:
            return [r.content for r in self._comments[comment_id].reactions]

    def labels(self, owner: str, repo: str, number: int) -> list[str]:
        with self._lock:
            return list(self.issues[(f"{owner}/{repo}".lower(), number)].labels)

    def check_runs(self, owner: str, repo: str) -> list[CheckRun]:
        """Check runs of a repository in creation order; ``history`` has every state."""
        key = f"{owner}/{repo}".lower()
        with self._lock:
            found = [run for run in self._check_runs.values() if run.repo_key == key]
            return copy.deepcopy(sorted(found, key=lambda r: r.id))

    def check_run(self, check_run_id: int) -> CheckRun:
        with self._lock:
            return copy.deepcopy(self._check_runs[check_run_id])

    def statuses(self, owner: str, repo: str, sha: str | None = None) -> list[CommitStatus]:
        key = f"{owner}/{repo}".lower()
        with self._lock:
            return copy.deepcopy(
                [s for s in self._statuses if s.repo_key == key and sha in (None, s.sha)]
            )

    def pull(self, owner: str, repo: str, number: int) -> Issue:
        with self._lock:
            return copy.deepcopy(self.issues[(f"{owner}/{repo}".lower(), number)])

    def pulls(self, owner: str, repo: str) -> list[Issue]:
        key = f"{owner}/{repo}".lower()
        with self._lock:
            found = [i for (k, _), i in self.issues.items() if k == key and i.is_pull]
            return copy.deepcopy(sorted(found, key=lambda i: i.number))

    def ref(self, owner: str, repo: str, ref: str) -> str | None:
        """The sha ``refs/...`` points at, or ``None``."""
        with self._lock:
            record = self.repos.get(f"{owner}/{repo}".lower())
            return record.refs.get(ref) if record else None

    def file_content(
        self, owner: str, repo: str, path: str, branch: str | None = None
    ) -> bytes | None:
        with self._lock:
            record = self.repos.get(f"{owner}/{repo}".lower())
            if record is None:
                return None
            sha = record.refs.get(f"refs/heads/{branch or record.default_branch}")
            commit = record.commits.get(sha or "")
            return commit.files.get(path) if commit else None

    # == internal helpers shared with the handlers ========================================

    @staticmethod
    def _covers(inst: Installation, owner: str, name: str) -> bool:
        if inst.repository_selection == "all":
            return inst.account.lower() == owner.lower()
        return f"{owner}/{name}".lower() in inst.repositories

    def installation_for_repo(self, owner: str, name: str) -> Installation | None:
        repo = self.repos.get(f"{owner}/{name}".lower())
        if repo and repo.installation_id in self.installations:
            return self.installations[repo.installation_id]
        return next((i for i in self.installations.values() if self._covers(i, owner, name)), None)

    def repo_for_token(self, owner: str, name: str, token: IssuedToken) -> Repo:
        """The repository if the token may see it (GitHub answers 404 otherwise)."""
        inst = self.installations[token.installation_id]
        repo = self.repos.get(f"{owner}/{name}".lower())
        covered = (repo is not None and repo.installation_id == inst.id) or self._covers(
            inst, owner, name
        )
        if not covered:
            raise not_found()
        if token.repositories is not None and f"{owner}/{name}".lower() not in token.repositories:
            raise not_found()
        return repo or self._ensure_repo(owner, name, inst.id)

    def issue_of(self, repo: Repo, number: int) -> Issue:
        issue = self.issues.get((repo.key, number))
        if issue is None:
            raise not_found()
        return issue

    def comment_of(self, repo: Repo, comment_id: int) -> Comment:
        comment = self._comments.get(comment_id)
        if comment is None or comment.repo_key != repo.key:
            raise not_found()
        return comment

    def _attach_label(self, repo: Repo, issue: Issue, name: str) -> None:
        if name not in repo.label_ids:
            repo.label_ids[name] = next(self._label_ids)
        if name not in issue.labels:
            issue.labels.append(name)

    def user_type(self, login: str) -> str:
        return self._user_types.get(login.lower(), "Bot" if login.endswith("[bot]") else "User")
