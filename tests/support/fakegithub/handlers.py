"""Implementations of the 25 operations, one method per ``operationId``.

Handlers run under the store lock, take an already validated :class:`Call` and return
a :class:`Reply` or raise :class:`ApiError`. GitHub's semantic rules that a schema
cannot express (e.g. "``conclusion`` is required once a check run is completed")
are enforced here, with ``misuse=True`` so they count as violations.
"""

from __future__ import annotations

import base64
import binascii
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from tests.support.fakegithub.auth import new_installation_token
from tests.support.fakegithub.objects import Renderer
from tests.support.fakegithub.state import (
    CheckRun,
    Commit,
    CommitStatus,
    Delivery,
    Installation,
    Issue,
    IssuedToken,
    Reaction,
    Repo,
    blob_sha,
    iso,
    stable_id,
    utcnow,
)
from tests.support.fakegithub.store import ApiError, not_found

if TYPE_CHECKING:
    from tests.support.fakegithub.server import FakeGitHub

_LEVELS = {"read": 1, "write": 2, "admin": 3}
_SHA_RE = re.compile(r"^[0-9a-f]{40}$")

# Token permission an operation needs: any one of the (permission, level) pairs.
REQUIRED_PERMISSIONS: dict[str, tuple[tuple[str, str], ...]] = {
    "issues/list-comments": (("issues", "read"), ("pull_requests", "read")),
    "issues/get-comment": (("issues", "read"), ("pull_requests", "read")),
    "issues/create-comment": (("issues", "write"), ("pull_requests", "write")),
    "issues/update-comment": (("issues", "write"), ("pull_requests", "write")),
    "issues/add-labels": (("issues", "write"), ("pull_requests", "write")),
    "issues/remove-label": (("issues", "write"), ("pull_requests", "write")),
    "reactions/create-for-issue-comment": (("issues", "write"), ("pull_requests", "write")),
    "pulls/get": (("pull_requests", "read"),),
    "pulls/list-files": (("pull_requests", "read"),),
    "pulls/create": (("pull_requests", "write"),),
    "checks/create": (("checks", "write"),),
    "checks/update": (("checks", "write"),),
    "repos/create-commit-status": (("statuses", "write"),),
    "repos/get-collaborator-permission-level": (("metadata", "read"),),
    "teams/get-membership-for-user-in-org": (("members", "read"),),
    "git/get-ref": (("contents", "read"),),
    "git/create-ref": (("contents", "write"),),
    "repos/create-or-update-file-contents": (("contents", "write"),),
}


@dataclass
class Call:
    """One validated request, as the handlers see it."""

    operation_id: str
    method: str
    path: str
    params: dict[str, str]
    query: dict[str, str]
    body: Any
    token: IssuedToken | None = None

    def int_param(self, name: str) -> int:
        return int(self.params[name])

    def int_query(self, name: str, default: int) -> int:
        return int(self.query.get(name, default))


@dataclass
class Reply:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


def has_permission(granted: dict[str, str], name: str, level: str) -> bool:
    return _LEVELS.get(granted.get(name, ""), 0) >= _LEVELS[level]


def validation_failed(
    message: str, *, resource: str, field_name: str, code: str, misuse: bool
) -> ApiError:
    error = {"resource": resource, "field": field_name, "code": code}
    return ApiError(422, message, errors=[error], misuse=misuse)


class Handlers:
    """The operations; ``fake`` is the server (store + configuration)."""

    def __init__(self, fake: FakeGitHub, render: Renderer) -> None:
        self.fake = fake
        self.render = render

    def dispatch(self, call: Call) -> Reply:
        handler: Callable[[Call], Reply] = getattr(self, _method_name(call.operation_id))
        return handler(call)

    # -- shared helpers ---------------------------------------------------------------

    def _repo(self, call: Call) -> Repo:
        """The call's repository: 404 if the token cannot see it, then 403 if it may not
        do this operation there (GitHub checks in that order)."""
        assert call.token is not None, "repository operations need an installation token"
        repo = self.fake.repo_for_token(call.params["owner"], call.params["repo"], call.token)
        self._require_permission(call)
        return repo

    @staticmethod
    def _require_permission(call: Call) -> None:
        needed = REQUIRED_PERMISSIONS.get(call.operation_id, ())
        granted = call.token.permissions if call.token else {}
        if needed and not any(has_permission(granted, name, lvl) for name, lvl in needed):
            raise ApiError(403, "Resource not accessible by integration")

    def _paginate(self, call: Call, items: Sequence[Any]) -> tuple[list[Any], dict[str, str]]:
        """GitHub's page/per_page pagination with a ``Link`` header."""
        per_page = min(max(call.int_query("per_page", 30), 1), 100)
        page = max(call.int_query("page", 1), 1)
        last = max((len(items) + per_page - 1) // per_page, 1)
        chunk = list(items[(page - 1) * per_page : page * per_page])
        links = []
        if page < last:
            links += [(page + 1, "next"), (last, "last")]
        if page > 1:
            links += [(1, "first"), (page - 1, "prev")]
        headers = {}
        if links:
            headers["Link"] = ", ".join(
                f'<{self._page_url(call, {"per_page": per_page, "page": n})}>; rel="{rel}"'
                for n, rel in links
            )
        return chunk, headers

    def _page_url(self, call: Call, overrides: dict[str, Any]) -> str:
        query = {**call.query, **{k: str(v) for k, v in overrides.items()}}
        return f"{self.render.base}{call.path}?{urlencode(query)}"

    def _require_commit(self, repo: Repo, sha: str) -> None:
        known = sha in repo.commits or any(
            i.head_sha == sha for (key, _), i in self.fake.issues.items() if key == repo.key
        )
        if not known:
            raise ApiError(
                422,
                f"No commit found for SHA: {sha} (fake: register it with add_pull/set_ref/"
                "add_commit)",
                misuse=True,
            )

    def _bot(self) -> str:
        return self.render.app.bot_login

    # == apps ==========================================================================

    def apps_get_authenticated(self, call: Call) -> Reply:
        permissions: dict[str, str] = {}
        for inst in self.fake.installations.values():
            for name, level in inst.permissions.items():
                if _LEVELS.get(level, 0) > _LEVELS.get(permissions.get(name, ""), 0):
                    permissions[name] = level
        events = sorted({e for i in self.fake.installations.values() for e in i.events})
        body = self.render.integration(permissions, events)
        body["installations_count"] = len(self.fake.installations)
        return Reply(200, body)

    def apps_list_installations(self, call: Call) -> Reply:
        installations = sorted(self.fake.installations.values(), key=lambda i: i.id)
        chunk, headers = self._paginate(call, installations)
        return Reply(200, [self.render.installation(i) for i in chunk], headers)

    def apps_get_repo_installation(self, call: Call) -> Reply:
        inst = self.fake.installation_for_repo(call.params["owner"], call.params["repo"])
        if inst is None:
            raise not_found()
        return Reply(200, self.render.installation(inst))

    def apps_create_installation_access_token(self, call: Call) -> Reply:
        inst = self.fake.installations.get(call.int_param("installation_id"))
        if inst is None:
            raise not_found()
        if inst.suspended:
            raise ApiError(403, "This installation has been suspended")
        body = call.body or {}
        permissions = self._narrow_permissions(inst, body.get("permissions"))
        repos = self._narrow_repositories(inst, body)
        token = IssuedToken(
            token=new_installation_token(self.render.app.id, self.fake.stateless_tokens),
            installation_id=inst.id,
            expires_at=utcnow() + self.fake.token_lifetime,
            permissions=permissions,
            repositories=[r.key for r in repos] if repos is not None else None,
        )
        self.fake.tokens[token.token] = token
        self.fake.tokens_issued += 1
        selection = "selected" if repos is not None else inst.repository_selection
        listed = repos if repos is not None else self._selected_repos(inst)
        return Reply(
            201,
            self.render.installation_token(
                token.token, token.expires_at, permissions, selection, listed
            ),
        )

    def _narrow_permissions(self, inst: Installation, wanted: Any) -> dict[str, str]:
        if not wanted:
            return dict(inst.permissions)
        for name, level in wanted.items():
            if not has_permission(inst.permissions, name, level):
                raise ApiError(
                    422, "The permissions requested are not granted to this installation."
                )
        return dict(wanted)

    def _narrow_repositories(self, inst: Installation, body: dict[str, Any]) -> list[Repo] | None:
        """Repositories a token request narrows to (``None``: all of the installation's)."""
        names, ids = body.get("repositories") or [], body.get("repository_ids") or []
        if not names and not ids:
            return None
        by_id = {r.id: r for r in self.fake.repos.values() if r.installation_id == inst.id}
        found: list[Repo | None] = [
            self.fake._ensure_repo(inst.account, name, inst.id)
            if self.fake._covers(inst, inst.account, name)
            else None
            for name in names
        ]
        found += [by_id.get(repo_id) for repo_id in ids]
        repos = [repo for repo in found if repo is not None]
        if len(repos) != len(found):
            raise ApiError(
                422,
                "There is at least one repository that does not exist or is not accessible "
                "to the parent installation.",
            )
        return repos

    def _selected_repos(self, inst: Installation) -> list[Repo] | None:
        if inst.repository_selection != "selected":
            return None
        return [self.fake.repos[key] for key in inst.repositories if key in self.fake.repos]

    def apps_list_webhook_deliveries(self, call: Call) -> Reply:
        per_page = min(max(call.int_query("per_page", 30), 1), 100)
        items = sorted(self.fake.deliveries.values(), key=lambda d: d.id, reverse=True)
        wanted = call.query.get("status")
        if wanted:
            failed = wanted == "failure"
            items = [d for d in items if (400 <= d.status_code <= 599) == failed]
        start = self._cursor_start(call.query.get("cursor"), items)
        chunk = items[start : start + per_page]
        headers = {}
        if start + per_page < len(items):
            cursor = f"v1_{items[start + per_page].id}"
            url = self._page_url(call, {"per_page": per_page, "cursor": cursor})
            headers["Link"] = f'<{url}>; rel="next"'
        return Reply(200, [self.render.delivery(d) for d in chunk], headers)

    @staticmethod
    def _cursor_start(cursor: str | None, items: list[Delivery]) -> int:
        """Cursors are opaque to clients; the fake's encode the first delivery id."""
        if not cursor:
            return 0
        match = re.fullmatch(r"v1_(\d+)", cursor)
        if not match:
            raise ApiError(400, f"Invalid cursor: {cursor}", misuse=True)
        first_id = int(match.group(1))
        return next((n for n, d in enumerate(items) if d.id <= first_id), len(items))

    def apps_redeliver_webhook_delivery(self, call: Call) -> Reply:
        delivery_id = call.int_param("delivery_id")
        original = self.fake.deliveries.get(delivery_id)
        if original is None:
            raise not_found()
        self.fake.redeliveries.append(delivery_id)
        if self.fake.on_redeliver is not None:
            threading.Thread(target=self.fake.on_redeliver, args=(original,), daemon=True).start()
        outcome = self.fake.redelivery_outcome
        if outcome is not None:
            # GitHub logs the attempt as a new delivery of the same event (same guid).
            new_id = max(self.fake.deliveries) + 1
            self.fake.deliveries[new_id] = Delivery(
                new_id,
                original.guid,
                original.event,
                original.action,
                outcome[0],
                outcome[1],
                utcnow(),
                True,
                original.installation_id,
                original.repository_id,
            )
        return Reply(202, {})

    def rate_limit_get(self, call: Call) -> Reply:
        limit, used, reset = self.fake.rate_limit_state(call)
        return Reply(200, self.render.rate_limit(limit, used, reset))

    # == issues, comments, labels, reactions ==========================================

    def issues_list_comments(self, call: Call) -> Reply:
        repo = self._repo(call)
        issue = self.fake.issue_of(repo, call.int_param("issue_number"))
        since = call.query.get("since")
        found = [
            c
            for c in self.fake._comments.values()
            if c.repo_key == repo.key
            and c.issue_number == issue.number
            and (since is None or iso(c.updated_at) >= _normalise_time(since))
        ]
        found.sort(key=lambda c: c.id)
        chunk, headers = self._paginate(call, found)
        return Reply(200, [self.render.comment(repo, c, issue) for c in chunk], headers)

    def issues_create_comment(self, call: Call) -> Reply:
        repo = self._repo(call)
        issue = self.fake.issue_of(repo, call.int_param("issue_number"))
        comment = self.fake._new_comment(
            repo, issue.number, call.body["body"], self._bot(), "Bot", "NONE"
        )
        rendered = self.render.comment(repo, comment, issue)
        return Reply(201, rendered, {"Location": rendered["url"]})

    def issues_get_comment(self, call: Call) -> Reply:
        repo = self._repo(call)
        comment = self.fake.comment_of(repo, call.int_param("comment_id"))
        issue = self.fake.issue_of(repo, comment.issue_number)
        return Reply(200, self.render.comment(repo, comment, issue))

    def issues_update_comment(self, call: Call) -> Reply:
        repo = self._repo(call)
        comment = self.fake.comment_of(repo, call.int_param("comment_id"))
        if comment.user != self._bot():
            # An app may only edit its own comments (unless it has admin-ish rights).
            raise ApiError(403, "Resource not accessible by integration")
        comment.body = call.body["body"]
        comment.history.append(comment.body)
        comment.updated_at = utcnow()
        issue = self.fake.issue_of(repo, comment.issue_number)
        return Reply(200, self.render.comment(repo, comment, issue))

    def reactions_create_for_issue_comment(self, call: Call) -> Reply:
        repo = self._repo(call)
        comment = self.fake.comment_of(repo, call.int_param("comment_id"))
        content = call.body["content"]
        existing = next(
            (r for r in comment.reactions if r.content == content and r.user == self._bot()),
            None,
        )
        if existing is not None:
            return Reply(200, self.render.reaction(existing))  # GitHub: 200 = already there
        reaction = Reaction(next(self.fake._reaction_ids), content, self._bot())
        comment.reactions.append(reaction)
        return Reply(201, self.render.reaction(reaction))

    def issues_add_labels(self, call: Call) -> Reply:
        repo = self._repo(call)
        issue = self.fake.issue_of(repo, call.int_param("issue_number"))
        for name in _label_names(call.body):
            self.fake._attach_label(repo, issue, name)
        issue.updated_at = utcnow()
        return Reply(200, [self.render.label(repo, n, repo.label_ids[n]) for n in issue.labels])

    def issues_remove_label(self, call: Call) -> Reply:
        repo = self._repo(call)
        issue = self.fake.issue_of(repo, call.int_param("issue_number"))
        name = call.params["name"]
        if name not in issue.labels:
            raise ApiError(404, "Label does not exist")
        issue.labels.remove(name)
        issue.updated_at = utcnow()
        return Reply(200, [self.render.label(repo, n, repo.label_ids[n]) for n in issue.labels])

    # == pull requests ==================================================================

    def pulls_get(self, call: Call) -> Reply:
        repo = self._repo(call)
        pull = self.fake.issue_of(repo, call.int_param("pull_number"))
        if not pull.is_pull:
            raise not_found()
        return Reply(200, self.render.pull_request(repo, pull, self._head_repo(repo, pull)))

    def _head_repo(self, repo: Repo, pull: Issue) -> Repo:
        if pull.head_repo:
            return self.fake.repos[pull.head_repo.lower()]
        return repo

    def pulls_list_files(self, call: Call) -> Reply:
        repo = self._repo(call)
        pull = self.fake.issue_of(repo, call.int_param("pull_number"))
        if not pull.is_pull:
            raise not_found()
        chunk, headers = self._paginate(call, pull.files)
        assert pull.head_sha is not None
        return Reply(200, [self.render.diff_entry(repo, pull.head_sha, f) for f in chunk], headers)

    def pulls_create(self, call: Call) -> Reply:
        repo = self._repo(call)
        body = call.body
        head_repo, head_ref = self._resolve_head(repo, body["head"])
        head_sha = head_repo.refs.get(f"refs/heads/{head_ref}")
        if head_sha is None:
            raise validation_failed(
                "Validation Failed",
                resource="PullRequest",
                field_name="head",
                code="invalid",
                misuse=True,
            )
        if f"refs/heads/{body['base']}" not in repo.refs:
            raise validation_failed(
                "Validation Failed",
                resource="PullRequest",
                field_name="base",
                code="invalid",
                misuse=True,
            )
        self._refuse_duplicate_pull(repo, head_repo, head_ref, body["base"])
        title = body.get("title")
        if title is None and "issue" in body:
            title = self.fake.issue_of(repo, int(body["issue"])).title
        if title is None:
            raise validation_failed(
                "Validation Failed",
                resource="PullRequest",
                field_name="title",
                code="missing_field",
                misuse=True,
            )
        number = max((n for (key, n) in self.fake.issues if key == repo.key), default=0) + 1
        self.fake.add_pull(
            repo.owner,
            repo.name,
            number,
            head_sha,
            head_ref,
            body["base"],
            title=title,
            body=body.get("body"),
            user=self._bot(),
            draft=body.get("draft", False),
            head_repo=head_repo.full_name if head_repo is not repo else None,
            author_association="NONE",
        )
        pull = self.fake.issues[(repo.key, number)]
        rendered = self.render.pull_request(repo, pull, head_repo)
        return Reply(201, rendered, {"Location": rendered["url"]})

    def _resolve_head(self, repo: Repo, head: str) -> tuple[Repo, str]:
        owner, sep, ref = head.partition(":")
        if not sep or owner.lower() == repo.owner.lower():
            return repo, ref if sep else head
        fork = self.fake.repos.get(f"{owner}/{repo.name}".lower())
        if fork is None:
            raise validation_failed(
                "Validation Failed",
                resource="PullRequest",
                field_name="head",
                code="invalid",
                misuse=True,
            )
        return fork, ref

    def _refuse_duplicate_pull(self, repo: Repo, head_repo: Repo, head: str, base: str) -> None:
        for (key, _), issue in self.fake.issues.items():
            same_head = (
                issue.head_ref == head
                and (issue.head_repo or repo.full_name).lower() == head_repo.key
            )
            if (
                key == repo.key
                and issue.is_pull
                and issue.state == "open"
                and same_head
                and issue.base_ref == base
            ):
                message = f"A pull request already exists for {head_repo.owner}:{head}."
                error = {"resource": "PullRequest", "code": "custom", "message": message}
                raise ApiError(422, "Validation Failed", errors=[error])

    # == checks and statuses ============================================================

    def checks_create(self, call: Call) -> Reply:
        repo = self._repo(call)
        body = call.body
        self._require_commit(repo, body["head_sha"])
        suite = self.fake._check_suites.setdefault(
            (repo.key, body["head_sha"]), stable_id(f"{repo.key}@{body['head_sha']}")
        )
        run = CheckRun(
            id=next(self.fake._check_run_ids),
            repo_key=repo.key,
            name=body["name"],
            head_sha=body["head_sha"],
            status=body.get("status", "queued"),
            conclusion=None,
            started_at=utcnow(),
            completed_at=None,
            details_url=body.get("details_url"),
            external_id=body.get("external_id"),
            output={},
            check_suite_id=suite,
        )
        self._apply_check_fields(run, body)
        self.fake._check_runs[run.id] = run
        return Reply(201, self._render_run(repo, run))

    def checks_update(self, call: Call) -> Reply:
        repo = self._repo(call)
        run = self.fake._check_runs.get(call.int_param("check_run_id"))
        if run is None or run.repo_key != repo.key:
            raise not_found()
        self._apply_check_fields(run, call.body)
        return Reply(200, self._render_run(repo, run))

    def _apply_check_fields(self, run: CheckRun, body: dict[str, Any]) -> None:
        for name in ("name", "details_url", "external_id"):
            if name in body:
                setattr(run, name, body[name])
        if "started_at" in body:
            run.started_at = _parse_time(body["started_at"])
        if "status" in body:
            run.status = body["status"]
            if body["status"] != "completed":
                run.conclusion, run.completed_at = None, None
        if "conclusion" in body:
            # GitHub: providing a conclusion automatically sets status to completed.
            run.conclusion, run.status = body["conclusion"], "completed"
        if run.status == "completed" and run.conclusion is None:
            raise validation_failed(
                "Invalid request: 'conclusion' is required when 'status' is 'completed'",
                resource="CheckRun",
                field_name="conclusion",
                code="missing_field",
                misuse=True,
            )
        if run.status == "completed":
            completed = body.get("completed_at")
            run.completed_at = _parse_time(completed) if completed else run.completed_at or utcnow()
        output = body.get("output") or {}
        for key in ("title", "summary", "text"):
            if key in output:
                run.output[key] = output[key]
        run.annotations_count += len(output.get("annotations") or [])
        if "actions" in body:
            run.actions = list(body["actions"])
        run.history.append(run.snapshot())

    def _render_run(self, repo: Repo, run: CheckRun) -> dict[str, Any]:
        pulls = [
            i
            for (key, _), i in self.fake.issues.items()
            if key == repo.key and i.head_sha == run.head_sha and i.state == "open"
        ]
        return self.render.check_run(repo, run, pulls)

    def repos_create_commit_status(self, call: Call) -> Reply:
        repo = self._repo(call)
        sha = call.params["sha"]
        self._require_commit(repo, sha)
        status = CommitStatus(
            id=next(self.fake._status_ids),
            repo_key=repo.key,
            sha=sha,
            state=call.body["state"],
            target_url=call.body.get("target_url"),
            description=call.body.get("description"),
            context=call.body.get("context", "default"),
        )
        self.fake._statuses.append(status)
        rendered = self.render.status(repo, status)
        return Reply(201, rendered, {"Location": rendered["url"]})

    # == people ==========================================================================

    def repos_get_collaborator_permission_level(self, call: Call) -> Reply:
        repo = self._repo(call)
        login = call.params["username"]
        default = "none" if repo.private else "read"  # public repos: everyone can read
        role = repo.permissions.get(login.lower(), default)
        return Reply(200, self.render.collaborator_permission(login, role))

    def teams_get_membership_for_user_in_org(self, call: Call) -> Reply:
        org, slug = call.params["org"].lower(), call.params["team_slug"].lower()
        assert call.token is not None
        inst = self.fake.installations[call.token.installation_id]
        if inst.account.lower() != org:
            raise not_found()  # the installation cannot see another org's teams
        self._require_permission(call)
        member = self.fake.teams.get((org, slug), {}).get(call.params["username"].lower())
        if member is None:
            raise not_found()
        team_id = stable_id(f"{org}/{slug}", base=3_000_000)
        return Reply(
            200,
            self.render.team_membership(
                team_id, call.params["username"], member.role, member.state
            ),
        )

    # == git data and contents ===========================================================

    def git_get_ref(self, call: Call) -> Reply:
        repo = self._repo(call)
        ref = call.params["ref"]
        full = ref if ref.startswith("refs/") else f"refs/{ref}"
        sha = repo.refs.get(full)
        if sha is None:
            raise not_found()
        return Reply(200, self.render.git_ref(repo, full, sha))

    def git_create_ref(self, call: Call) -> Reply:
        repo = self._repo(call)
        ref, sha = call.body["ref"], call.body["sha"]
        if not ref.startswith("refs/") or ref.count("/") < 2:
            raise ApiError(
                422,
                "Reference name must start with 'refs/' and have at least two slashes.",
                misuse=True,
            )
        if ref in repo.refs:
            raise ApiError(422, "Reference already exists")
        if not _SHA_RE.match(sha):
            raise ApiError(422, "Object does not exist", misuse=True)
        self._require_commit(repo, sha)
        repo.refs[ref] = sha
        repo.commits.setdefault(sha, Commit(sha, {}))
        rendered = self.render.git_ref(repo, ref, sha)
        return Reply(201, rendered, {"Location": rendered["url"]})

    def repos_create_or_update_file_contents(self, call: Call) -> Reply:
        repo = self._repo(call)
        body, path = call.body, call.params["path"]
        try:
            data = base64.b64decode(body["content"], validate=True)
        except (binascii.Error, ValueError):
            raise ApiError(422, "content is not valid Base64", misuse=True) from None
        branch = body.get("branch") or repo.default_branch
        parent = repo.refs.get(f"refs/heads/{branch}")
        if parent is None:
            raise ApiError(404, f"Branch {branch} not found")
        current = repo.commits[parent].files.get(path) if parent in repo.commits else None
        if current is not None:
            if "sha" not in body:
                raise ApiError(422, 'Invalid request.\n\n"sha" wasn\'t supplied.', misuse=True)
            if body["sha"] != blob_sha(current):
                raise ApiError(409, f"{path} does not match {body['sha']}")
        commit_sha = self.fake._commit_file(repo, branch, path, data, body["message"])
        noreply = f"{self.render.user_id(self._bot())}+{self._bot()}@users.noreply.github.com"
        person = (
            body.get("author") or body.get("committer") or {"name": self._bot(), "email": noreply}
        )
        rendered = self.render.file_commit(
            repo,
            path,
            branch,
            blob_sha(data),
            len(data),
            commit_sha,
            parent,
            body["message"],
            {**person, "date": iso(utcnow())},
        )
        return Reply(200 if current is not None else 201, rendered)


def _method_name(operation_id: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", operation_id.lower())


def _label_names(body: Any) -> list[str]:
    """The add-labels body comes in four documented shapes; flatten to names."""
    items = body.get("labels", []) if isinstance(body, dict) else body or []
    return [item["name"] if isinstance(item, dict) else item for item in items]


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _normalise_time(text: str) -> str:
    return iso(_parse_time(text))
