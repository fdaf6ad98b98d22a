"""Render the fake's state as GitHub REST JSON objects.

Where the description ships an example object (pull request, repository, ...) it is
used as the template, so responses carry every field real GitHub sends (githubkit's
models need all ``required`` fields); values that identify things are overwritten.
API URLs point at the fake itself, so a client that follows ``url`` fields stays there.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tests.support.fakegithub.spec import OpenApiSpec
from tests.support.fakegithub.state import (
    CheckRun,
    Comment,
    CommitStatus,
    Delivery,
    Installation,
    Issue,
    Reaction,
    Repo,
    fake_sha,
    iso,
    stable_id,
)

WEB = "https://github.com"
# The URL prefix of GitHub's own examples, rewritten to the fake's URL.
_EXAMPLE_API = "https://api.github.com"
_REACTIONS = ("+1", "-1", "laugh", "confused", "heart", "hooray", "eyes", "rocket")


def node_id(kind: str, number: int) -> str:
    """GitHub's legacy global node id format, e.g. ``MDQ6VXNlcjE=`` for User 1."""
    return base64.b64encode(f"0{len(kind)}:{kind}{number}".encode()).decode()


def _rewrite(value: Any, old: str, new: str) -> Any:
    """Replace ``old`` by ``new`` inside every string of a JSON value."""
    if isinstance(value, str):
        return value.replace(old, new)
    if isinstance(value, list):
        return [_rewrite(item, old, new) for item in value]
    if isinstance(value, dict):
        return {key: _rewrite(item, old, new) for key, item in value.items()}
    return value


@dataclass
class AppInfo:
    id: int
    slug: str
    name: str
    client_id: str
    owner: str

    @property
    def bot_login(self) -> str:
        return f"{self.slug}[bot]"


class Renderer:
    """Turns state records into JSON for one fake server (whose URL is ``base``)."""

    def __init__(
        self,
        spec: OpenApiSpec,
        base: str,
        app: AppInfo,
        user_type: Callable[[str], str],
    ) -> None:
        self.spec = spec
        self.base = base.rstrip("/")
        self.app = app
        self.user_type = user_type

    # -- people ----------------------------------------------------------------------

    def user(self, login: str, type_: str | None = None) -> dict[str, Any]:
        type_ = type_ or self.user_type(login)
        uid = self.user_id(login)
        api = f"{self.base}/users/{login}"
        html = f"{WEB}/apps/{self.app.slug}" if login == self.app.bot_login else f"{WEB}/{login}"
        return {
            "login": login,
            "id": uid,
            "node_id": node_id("Bot" if type_ == "Bot" else "User", uid),
            "avatar_url": f"https://avatars.githubusercontent.com/u/{uid}?v=4",
            "gravatar_id": "",
            "url": api,
            "html_url": html,
            "followers_url": f"{api}/followers",
            "following_url": f"{api}/following{{/other_user}}",
            "gists_url": f"{api}/gists{{/gist_id}}",
            "starred_url": f"{api}/starred{{/owner}}{{/repo}}",
            "subscriptions_url": f"{api}/subscriptions",
            "organizations_url": f"{api}/orgs",
            "repos_url": f"{api}/repos",
            "events_url": f"{api}/events{{/privacy}}",
            "received_events_url": f"{api}/received_events",
            "type": type_,
            "user_view_type": "public",
            "site_admin": False,
        }

    def user_id(self, login: str) -> int:
        if login == self.app.bot_login:
            return 41_000_000 + self.app.id  # bots get their own id range on GitHub too
        return stable_id(login)

    def integration(self, permissions: dict[str, str], events: list[str]) -> dict[str, Any]:
        app = self.app
        return {
            "id": app.id,
            "slug": app.slug,
            "client_id": app.client_id,
            "node_id": node_id("Integration", app.id),
            "owner": self.user(app.owner),
            "name": app.name,
            "description": "Fake GitHub App used in tests",
            "external_url": "https://example.invalid/layerbot",
            "html_url": f"{WEB}/apps/{app.slug}",
            "created_at": "2024-01-01T00:00:00Z",
            "updated_at": "2024-01-01T00:00:00Z",
            "permissions": dict(permissions),
            "events": list(events),
        }

    # -- installations and tokens -------------------------------------------------------

    def installation(self, inst: Installation) -> dict[str, Any]:
        account = self.user(inst.account, inst.account_type)
        settings = (
            f"{WEB}/organizations/{inst.account}/settings/installations/{inst.id}"
            if inst.account_type == "Organization"
            else f"{WEB}/settings/installations/{inst.id}"
        )
        return {
            "id": inst.id,
            "account": account,
            "repository_selection": inst.repository_selection,
            "access_tokens_url": f"{self.base}/app/installations/{inst.id}/access_tokens",
            "repositories_url": f"{self.base}/installation/repositories",
            "html_url": settings,
            "app_id": self.app.id,
            "client_id": self.app.client_id,
            "target_id": account["id"],
            "target_type": inst.account_type,
            "permissions": dict(inst.permissions),
            "events": list(inst.events),
            "created_at": iso(inst.created_at),
            "updated_at": iso(inst.created_at),
            "single_file_name": None,
            "has_multiple_single_files": False,
            "single_file_paths": [],
            "app_slug": self.app.slug,
            "suspended_at": iso(inst.created_at) if inst.suspended else None,
            "suspended_by": self.user(inst.account) if inst.suspended else None,
        }

    def installation_token(
        self,
        token: str,
        expires_at: datetime,
        permissions: dict[str, str],
        selection: str,
        repositories: Iterable[Repo] | None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "token": token,
            "expires_at": iso(expires_at),
            "permissions": dict(permissions),
            "repository_selection": selection,
        }
        if repositories is not None:
            body["repositories"] = [self.repository(repo) for repo in repositories]
        return body

    # -- repositories -------------------------------------------------------------------

    def repository(self, repo: Repo) -> dict[str, Any]:
        template = self.spec.example("pull-request")["head"]["repo"]
        template = _rewrite(template, "octocat/Hello-World", repo.full_name)
        template = _rewrite(template, _EXAMPLE_API, self.base)
        template.pop("temp_clone_token", None)
        now = iso(repo.created_at)
        template.update(
            {
                "id": repo.id,
                "node_id": node_id("Repository", repo.id),
                "name": repo.name,
                "full_name": repo.full_name,
                "owner": self.user(repo.owner),
                "private": repo.private,
                "visibility": "private" if repo.private else "public",
                "description": f"{repo.name} (fake)",
                "default_branch": repo.default_branch,
                "homepage": None,
                "mirror_url": None,
                "license": None,
                "topics": [],
                "forks": 0,
                "forks_count": 0,
                "open_issues": 0,
                "open_issues_count": 0,
                "stargazers_count": 0,
                "watchers": 0,
                "watchers_count": 0,
                "created_at": now,
                "updated_at": now,
                "pushed_at": now,
            }
        )
        return template

    def label(self, repo: Repo, name: str, label_id: int) -> dict[str, Any]:
        return {
            "id": label_id,
            "node_id": node_id("Label", label_id),
            "url": f"{self.base}/repos/{repo.full_name}/labels/{name}",
            "name": name,
            "description": None,
            "color": "ededed",
            "default": False,
            # Not in the OpenAPI subset, but githubkit's (newer) Label model requires them.
            "archived_at": None,
            "archived_by": None,
        }

    # -- issues, comments, reactions ---------------------------------------------------

    def comment(self, repo: Repo, comment: Comment, issue: Issue) -> dict[str, Any]:
        kind = "pull" if issue.is_pull else "issues"
        is_bot = comment.user == self.app.bot_login
        body = {
            "id": comment.id,
            "node_id": node_id("IssueComment", comment.id),
            "url": f"{self.base}/repos/{repo.full_name}/issues/comments/{comment.id}",
            "html_url": (f"{WEB}/{repo.full_name}/{kind}/{issue.number}#issuecomment-{comment.id}"),
            "body": comment.body,
            "user": self.user(comment.user, comment.user_type),
            "created_at": iso(comment.created_at),
            "updated_at": iso(comment.updated_at),
            "issue_url": f"{self.base}/repos/{repo.full_name}/issues/{issue.number}",
            "author_association": comment.author_association,
            "performed_via_github_app": self.integration({}, []) if is_bot else None,
            "reactions": self.reaction_rollup(repo, comment),
            "pin": None,
            "minimized": None,
        }
        return body

    def reaction_rollup(self, repo: Repo, comment: Comment) -> dict[str, Any]:
        counts = {content: 0 for content in _REACTIONS}
        for reaction in comment.reactions:
            counts[reaction.content] += 1
        return {
            "url": f"{self.base}/repos/{repo.full_name}/issues/comments/{comment.id}/reactions",
            "total_count": len(comment.reactions),
            **counts,
        }

    def reaction(self, reaction: Reaction) -> dict[str, Any]:
        return {
            "id": reaction.id,
            "node_id": node_id("Reaction", reaction.id),
            "user": self.user(reaction.user),
            "content": reaction.content,
            "created_at": iso(reaction.created_at),
        }

    # -- pull requests ------------------------------------------------------------------

    def pull_request(self, repo: Repo, pull: Issue, head_repo: Repo) -> dict[str, Any]:
        template = self.spec.example("pull-request")
        assert pull.head_sha is not None
        api = f"{self.base}/repos/{repo.full_name}"
        html = f"{WEB}/{repo.full_name}/pull/{pull.number}"
        labels = [self.label(repo, name, repo.label_ids[name]) for name in pull.labels]
        updated = iso(pull.updated_at)
        template.update(
            {
                "url": f"{api}/pulls/{pull.number}",
                "id": pull.id,
                "node_id": node_id("PullRequest", pull.id),
                "html_url": html,
                "diff_url": f"{html}.diff",
                "patch_url": f"{html}.patch",
                "issue_url": f"{api}/issues/{pull.number}",
                "commits_url": f"{api}/pulls/{pull.number}/commits",
                "review_comments_url": f"{api}/pulls/{pull.number}/comments",
                "review_comment_url": f"{api}/pulls/comments{{/number}}",
                "comments_url": f"{api}/issues/{pull.number}/comments",
                "statuses_url": f"{api}/statuses/{pull.head_sha}",
                "number": pull.number,
                "state": pull.state,
                "locked": False,
                "title": pull.title,
                "user": self.user(pull.user),
                "body": pull.body,
                "labels": labels,
                "milestone": None,
                "active_lock_reason": None,
                "created_at": iso(pull.created_at),
                "updated_at": updated,
                "closed_at": updated if pull.state == "closed" else None,
                "merged_at": updated if pull.merged else None,
                "merge_commit_sha": None,
                "assignee": None,
                "assignees": [],
                "requested_reviewers": [],
                "requested_teams": [],
                "head": self._pull_ref(head_repo, pull.head_ref, pull.head_sha),
                "base": self._pull_ref(
                    repo, pull.base_ref, repo.refs.get(f"refs/heads/{pull.base_ref}", pull.head_sha)
                ),
                "author_association": pull.author_association,
                "auto_merge": None,
                "draft": pull.draft,
                "merged": pull.merged,
                "mergeable": pull.mergeable,
                "rebaseable": pull.mergeable,
                "mergeable_state": "clean" if pull.mergeable else "dirty",
                "merged_by": self.user(repo.owner) if pull.merged else None,
                "comments": 0,
                "review_comments": 0,
                "maintainer_can_modify": False,
                "commits": 1,
                "additions": sum(int(f.get("additions", 0)) for f in pull.files),
                "deletions": sum(int(f.get("deletions", 0)) for f in pull.files),
                "changed_files": len(pull.files),
            }
        )
        template["_links"] = {
            "self": {"href": f"{api}/pulls/{pull.number}"},
            "html": {"href": html},
            "issue": {"href": f"{api}/issues/{pull.number}"},
            "comments": {"href": f"{api}/issues/{pull.number}/comments"},
            "review_comments": {"href": f"{api}/pulls/{pull.number}/comments"},
            "review_comment": {"href": f"{api}/pulls/comments{{/number}}"},
            "commits": {"href": f"{api}/pulls/{pull.number}/commits"},
            "statuses": {"href": f"{api}/statuses/{pull.head_sha}"},
        }
        return template

    def _pull_ref(self, repo: Repo, ref: str, sha: str) -> dict[str, Any]:
        return {
            "label": f"{repo.owner}:{ref}",
            "ref": ref,
            "sha": sha,
            "user": self.user(repo.owner),
            "repo": self.repository(repo),
        }

    def diff_entry(self, repo: Repo, head_sha: str, entry: dict[str, Any]) -> dict[str, Any]:
        filename = entry["filename"]
        api = f"{self.base}/repos/{repo.full_name}"
        additions = int(entry.get("additions", 1))
        deletions = int(entry.get("deletions", 0))
        body = {
            "sha": entry.get("sha") or fake_sha(filename, head_sha),
            "filename": filename,
            "status": entry.get("status", "modified"),
            "additions": additions,
            "deletions": deletions,
            "changes": additions + deletions,
            "blob_url": f"{WEB}/{repo.full_name}/blob/{head_sha}/{filename}",
            "raw_url": f"{WEB}/{repo.full_name}/raw/{head_sha}/{filename}",
            "contents_url": f"{api}/contents/{filename}?ref={head_sha}",
            "patch": entry.get("patch", "@@ -1 +1 @@"),
        }
        if "previous_filename" in entry:
            body["previous_filename"] = entry["previous_filename"]
        return body

    # -- checks and statuses -------------------------------------------------------------

    def check_run(self, repo: Repo, run: CheckRun, pulls: list[Issue]) -> dict[str, Any]:
        api = f"{self.base}/repos/{repo.full_name}/check-runs/{run.id}"
        return {
            "id": run.id,
            "head_sha": run.head_sha,
            "node_id": node_id("CheckRun", run.id),
            "external_id": run.external_id or "",
            "url": api,
            "html_url": f"{WEB}/{repo.full_name}/runs/{run.id}",
            "details_url": run.details_url or f"{WEB}/apps/{self.app.slug}",
            "status": run.status,
            "conclusion": run.conclusion,
            "started_at": iso(run.started_at) if run.started_at else None,
            "completed_at": iso(run.completed_at) if run.completed_at else None,
            "output": {
                "title": run.output.get("title"),
                "summary": run.output.get("summary"),
                "text": run.output.get("text"),
                "annotations_count": run.annotations_count,
                "annotations_url": f"{api}/annotations",
            },
            "name": run.name,
            "check_suite": {"id": run.check_suite_id},
            "app": self.integration({}, []),
            "pull_requests": [self._minimal_pull(repo, pull) for pull in pulls],
        }

    def _minimal_pull(self, repo: Repo, pull: Issue) -> dict[str, Any]:
        api_repo = {"id": repo.id, "url": f"{self.base}/repos/{repo.full_name}", "name": repo.name}
        return {
            "id": pull.id,
            "number": pull.number,
            "url": f"{self.base}/repos/{repo.full_name}/pulls/{pull.number}",
            "head": {"ref": pull.head_ref, "sha": pull.head_sha, "repo": api_repo},
            "base": {
                "ref": pull.base_ref,
                "sha": repo.refs.get(f"refs/heads/{pull.base_ref}", pull.head_sha),
                "repo": api_repo,
            },
        }

    def status(self, repo: Repo, status: CommitStatus) -> dict[str, Any]:
        when = iso(status.created_at)
        creator = self.user(self.app.bot_login, "Bot")
        return {
            "url": f"{self.base}/repos/{repo.full_name}/statuses/{status.sha}",
            "avatar_url": creator["avatar_url"],
            "id": status.id,
            "node_id": node_id("StatusContext", status.id),
            "state": status.state,
            "description": status.description,
            "target_url": status.target_url,
            "context": status.context,
            "created_at": when,
            "updated_at": when,
            "creator": creator,
        }

    # -- git data --------------------------------------------------------------------------

    def git_ref(self, repo: Repo, ref: str, sha: str) -> dict[str, Any]:
        api = f"{self.base}/repos/{repo.full_name}/git"
        return {
            "ref": ref,
            "node_id": base64.b64encode(f"03:Ref{repo.id}:{ref}".encode()).decode(),
            "url": f"{api}/{ref}",
            "object": {"type": "commit", "sha": sha, "url": f"{api}/commits/{sha}"},
        }

    def file_commit(
        self,
        repo: Repo,
        path: str,
        branch: str,
        blob: str,
        size: int,
        commit_sha: str,
        parent: str | None,
        message: str,
        author: dict[str, str],
    ) -> dict[str, Any]:
        api = f"{self.base}/repos/{repo.full_name}"
        now = author.get("date") or iso(repo.created_at)
        person = {"date": now, "name": author["name"], "email": author["email"]}
        parents = (
            [
                {
                    "url": f"{api}/git/commits/{parent}",
                    "html_url": f"{WEB}/{repo.full_name}/commit/{parent}",
                    "sha": parent,
                }
            ]
            if parent
            else []
        )
        return {
            "content": {
                "name": path.rsplit("/", 1)[-1],
                "path": path,
                "sha": blob,
                "size": size,
                "url": f"{api}/contents/{path}?ref={branch}",
                "html_url": f"{WEB}/{repo.full_name}/blob/{branch}/{path}",
                "git_url": f"{api}/git/blobs/{blob}",
                "download_url": f"https://raw.githubusercontent.com/{repo.full_name}/{branch}/{path}",
                "type": "file",
                "_links": {
                    "self": f"{api}/contents/{path}?ref={branch}",
                    "git": f"{api}/git/blobs/{blob}",
                    "html": f"{WEB}/{repo.full_name}/blob/{branch}/{path}",
                },
            },
            "commit": {
                "sha": commit_sha,
                "node_id": node_id("Commit", int(commit_sha[:7], 16)),
                "url": f"{api}/git/commits/{commit_sha}",
                "html_url": f"{WEB}/{repo.full_name}/commit/{commit_sha}",
                "author": person,
                "committer": person,
                "message": message,
                "tree": {"url": f"{api}/git/trees/{commit_sha[::-1]}", "sha": commit_sha[::-1]},
                "parents": parents,
                "verification": {
                    "verified": False,
                    "reason": "unsigned",
                    "signature": None,
                    "payload": None,
                    "verified_at": None,
                },
            },
        }

    # -- app-level -------------------------------------------------------------------------

    def delivery(self, delivery: Delivery) -> dict[str, Any]:
        return {
            "id": delivery.id,
            "guid": delivery.guid,
            "delivered_at": iso(delivery.delivered_at),
            "redelivery": delivery.redelivery,
            "duration": delivery.duration,
            "status": delivery.status,
            "status_code": delivery.status_code,
            "event": delivery.event,
            "action": delivery.action,
            "installation_id": delivery.installation_id,
            "repository_id": delivery.repository_id,
            "throttled_at": None,
        }

    def team_membership(self, team_id: int, login: str, role: str, state: str) -> dict[str, Any]:
        return {
            "url": f"{self.base}/teams/{team_id}/memberships/{login}",
            "role": role,
            "state": state,
        }

    def collaborator_permission(self, login: str, role: str) -> dict[str, Any]:
        # ``permission`` is the legacy base role: maintain -> write, triage -> read.
        legacy = {"maintain": "write", "triage": "read"}.get(role, role)
        user = self.user(login)
        user["role_name"] = role
        user["permissions"] = {
            "admin": role == "admin",
            "maintain": role in ("admin", "maintain"),
            "push": role in ("admin", "maintain", "write"),
            "triage": role in ("admin", "maintain", "write", "triage"),
            "pull": role != "none",
        }
        return {"permission": legacy, "role_name": role, "user": user}

    def rate_limit(self, limit: int, used: int, reset: int) -> dict[str, Any]:
        core = {"limit": limit, "used": used, "remaining": max(limit - used, 0), "reset": reset}
        overview = self.spec.example("rate-limit-overview")
        overview["resources"]["core"] = dict(core)
        overview["rate"] = dict(core)
        return dict(overview)
