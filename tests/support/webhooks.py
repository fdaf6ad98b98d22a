"""Webhook test support: real example payloads, their JSON Schemas, signing, builders.

Payloads and schemas come from octokit/webhooks (see ``tests/data/github/README.md``). The
builders start from a real example payload, change what a test cares about, and then
validate the result against the event's schema, so a handler under test only ever
sees payloads GitHub could have sent.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import itertools
import json
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft7Validator
from referencing import Registry
from referencing.jsonschema import DRAFT7

from tests.support.fakegithub.state import stable_id
from tests.support.shared import github_data_dir

#: Defaults shared with the ``fake_github`` fixture, so built events match its state.
DEFAULT_APP_ID = 424242
DEFAULT_INSTALLATION_ID = 4242001
DEFAULT_REPO = "octo-org/stack"
DEFAULT_HOOK_ID = 512345678
EVENTS_WITHOUT_ACTION = ("ping", "push")

_API = "https://api.github.com"
_WEB = "https://github.com"
# Comment ids for built events when the test does not pick one; far above the
# fake's own counter (which starts at 1000) so the two never collide by accident.
_comment_ids = itertools.count(2_100_000_000)


class PayloadInvalid(AssertionError):
    """A payload does not match its event schema."""


# == loading ===============================================================================


def webhooks_dir() -> Path:
    return github_data_dir() / "webhooks"


def schemas_dir() -> Path:
    return github_data_dir() / "webhook-schemas"


def load_payload(event: str, name: str) -> dict[str, Any]:
    """An example payload, e.g. ``load_payload("issue_comment", "created.payload.json")``.

    ``name`` may omit ``.json`` or ``.payload.json`` (``"created.with-installation"``).
    """
    directory = webhooks_dir() / event
    for candidate in (name, f"{name}.json", f"{name}.payload.json"):
        path = directory / candidate
        if path.is_file():
            payload: dict[str, Any] = json.loads(path.read_bytes())
            return payload
    available = sorted(p.name for p in directory.glob("*.json"))
    raise FileNotFoundError(f"no example {name!r} for event {event!r}; have {available}")


def all_payloads() -> list[tuple[str, str, dict[str, Any], bytes]]:
    """Every example as ``(event, file name, parsed payload, raw bytes)``, sorted."""
    found = []
    for path in sorted(webhooks_dir().glob("*/*.json")):
        raw = path.read_bytes()
        found.append((path.parent.name, path.name, json.loads(raw), raw))
    return found


# == schemas ===============================================================================


@cache
def _registry() -> Registry[Any]:
    """Every schema under its ``$id``.

    Event schemas say ``common/user.schema.json`` and common schemas say
    ``user.schema.json``; both resolve to the ``$id`` ``common/user.schema.json``
    relative to the referring schema's ``$id``, so files are keyed by ``$id``, not path.
    """
    resources = []
    for path in schemas_dir().glob("*/*.schema.json"):
        contents = json.loads(path.read_bytes())
        resources.append((contents["$id"], DRAFT7.create_resource(contents)))
    registry: Registry[Any] = Registry().with_resources(resources)
    return registry


def schema_path(event: str, action: str | None) -> Path:
    name = "event" if event in EVENTS_WITHOUT_ACTION or action is None else action
    return schemas_dir() / event / f"{name}.schema.json"


@cache
def _validator(event: str, action: str | None) -> Draft7Validator:
    path = schema_path(event, action)
    if not path.is_file():
        raise FileNotFoundError(f"no schema for {event}.{action} (looked for {path})")
    schema = json.loads(path.read_bytes())
    # ``tsAdditionalProperties`` is a TypeScript hint; Draft 7 ignores unknown keywords.
    return Draft7Validator(schema, registry=_registry())


def payload_errors(event: str, payload: dict[str, Any]) -> list[str]:
    """Schema violations of ``payload`` as ``"json.path: message"`` lines."""
    action = None if event in EVENTS_WITHOUT_ACTION else payload.get("action")
    validator = _validator(event, action)
    return [
        f"{error.json_path}: {error.message}"
        for error in sorted(validator.iter_errors(payload), key=lambda e: e.json_path)
    ]


def validate_payload(event: str, payload: dict[str, Any]) -> None:
    """Raise :class:`PayloadInvalid` unless ``payload`` matches its event/action schema."""
    errors = payload_errors(event, payload)
    if errors:
        shown = "\n  ".join(errors[:20])
        raise PayloadInvalid(f"{event}.{payload.get('action')} payload is invalid:\n  {shown}")


# == signing and delivery headers ==========================================================


def sign(body: bytes, secret: str) -> str:
    """``X-Hub-Signature-256`` value: ``sha256=`` + hex HMAC-SHA256 of the raw body."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def sign_sha1(body: bytes, secret: str) -> str:
    """Legacy ``X-Hub-Signature`` value (GitHub still sends it when a secret is set)."""
    digest = hmac.new(secret.encode(), body, hashlib.sha1).hexdigest()
    return f"sha1={digest}"


def delivery_headers(
    event: str,
    body: bytes,
    secret: str | None,
    delivery_id: str | None = None,
    hook_id: int = DEFAULT_HOOK_ID,
    target_type: str = "integration",
    target_id: int = DEFAULT_APP_ID,
) -> dict[str, str]:
    """Headers GitHub sends with a delivery (no signatures when ``secret`` is None).

    For a GitHub App's webhook the installation target is the app ("integration").
    """
    headers = {
        "Accept": "*/*",
        "Content-Type": "application/json",
        "User-Agent": "GitHub-Hookshot/7c41c2e",
        "X-GitHub-Delivery": delivery_id or str(uuid.uuid4()),
        "X-GitHub-Event": event,
        "X-GitHub-Hook-ID": str(hook_id),
        "X-GitHub-Hook-Installation-Target-ID": str(target_id),
        "X-GitHub-Hook-Installation-Target-Type": target_type,
    }
    if secret is not None:
        headers["X-Hub-Signature"] = sign_sha1(body, secret)
        headers["X-Hub-Signature-256"] = sign(body, secret)
    return headers


def encode(payload: dict[str, Any]) -> bytes:
    """Serialise a payload compactly, as GitHub does (sign exactly these bytes)."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


# == building blocks for builders ==========================================================


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _node_id(kind: str, number: int) -> str:
    return base64.b64encode(f"0{len(kind)}:{kind}{number}".encode()).decode()


def webhook_user(login: str, type_: str = "User", user_id: int | None = None) -> dict[str, Any]:
    """A ``common/user`` object (exactly its fields: the schema forbids extras).

    Ids default to the fake's (derived from the login), so payloads and API responses
    agree about who is who.
    """
    uid = stable_id(login) if user_id is None else user_id
    api = f"{_API}/users/{login}"
    return {
        "login": login,
        "id": uid,
        "node_id": _node_id("Bot" if type_ == "Bot" else "User", uid),
        "avatar_url": f"https://avatars.githubusercontent.com/u/{uid}?v=4",
        "gravatar_id": "",
        "url": api,
        "html_url": f"{_WEB}/{login}",
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
        "site_admin": False,
    }


def _rewrite(value: Any, old: str, new: str) -> Any:
    if isinstance(value, str):
        return value.replace(old, new)
    if isinstance(value, list):
        return [_rewrite(item, old, new) for item in value]
    if isinstance(value, dict):
        return {key: _rewrite(item, old, new) for key, item in value.items()}
    return value


def _move_repo(value: Any, old: str, new: str) -> Any:
    """Rewrite ``owner/name`` in URLs: ``.../owner/name`` and ``git@github.com:owner/name``."""
    for separator in ("/", ":"):
        value = _rewrite(value, f"{separator}{old}", f"{separator}{new}")
    return value


def _retarget(
    payload: dict[str, Any], repo: str, owner_type: str = "Organization"
) -> dict[str, Any]:
    """Move an example payload to repository ``repo`` ("owner/name").

    Repository ids match the fake's (derived from the name).
    """
    owner, name = repo.split("/")
    old = payload["repository"]["full_name"]
    payload = _move_repo(payload, old, repo)
    repository = payload["repository"]
    repository.update(
        {
            "id": stable_id(repo.lower(), base=100_000_000),
            "node_id": _node_id("Repository", stable_id(repo.lower(), base=100_000_000)),
            "name": name,
            "full_name": repo,
            "owner": webhook_user(owner, owner_type),
            "default_branch": "main",
        }
    )
    if "organization" in payload:
        if owner_type == "Organization":
            old_org = payload["organization"]["login"]
            payload["organization"] = _rewrite(payload["organization"], old_org, owner)
            payload["organization"]["login"] = owner
            payload["organization"]["id"] = stable_id(owner)
        else:
            del payload["organization"]
    return payload


def _installation(installation_id: int) -> dict[str, Any]:
    return {"id": installation_id, "node_id": _node_id("IntegrationInstallation", installation_id)}


def _label(repo: str, name: str) -> dict[str, Any]:
    label_id = stable_id(f"{repo}:{name}")
    return {
        "id": label_id,
        "node_id": _node_id("Label", label_id),
        "url": f"{_API}/repos/{repo}/labels/{name}",
        "name": name,
        "color": "ededed",
        "default": False,
        "description": None,
    }


def _validated(event: str, payload: dict[str, Any]) -> dict[str, Any]:
    validate_payload(event, payload)
    return payload


# == builders ==============================================================================


def issue_comment_created(
    body: str,
    login: str,
    repo: str = DEFAULT_REPO,
    pr_number: int = 1,
    comment_id: int | None = None,
    installation_id: int = DEFAULT_INSTALLATION_ID,
    user_type: str = "User",
    *,
    author_association: str = "CONTRIBUTOR",
    pr_author: str = "contributor",
    labels: Iterable[str] = (),
    owner_type: str = "Organization",
    created_at: str | None = None,
) -> dict[str, Any]:
    """``issue_comment.created`` for a comment ``body`` by ``login`` on PR ``pr_number``.

    The issue carries ``pull_request`` (it is a PR conversation comment). Pass the id of
    a comment seeded with ``fake.add_comment`` as ``comment_id`` if the bot will call
    the API about this comment (e.g. react to it).
    """
    payload = _retarget(
        load_payload("issue_comment", "created.with-installation"), repo, owner_type
    )
    comment_id = next(_comment_ids) if comment_id is None else comment_id
    now = created_at or _now()
    api_issue = f"{_API}/repos/{repo}/issues/{pr_number}"
    payload["issue"].update(
        {
            "url": api_issue,
            "labels_url": f"{api_issue}/labels{{/name}}",
            "comments_url": f"{api_issue}/comments",
            "events_url": f"{api_issue}/events",
            "html_url": f"{_WEB}/{repo}/pull/{pr_number}",
            "id": stable_id(f"{repo.lower()}#{pr_number}", base=500_000_000),
            "number": pr_number,
            "title": f"Pull request #{pr_number}",
            "user": webhook_user(pr_author),
            "labels": [_label(repo, name) for name in labels],
            "assignee": None,
            "assignees": [],
            "milestone": None,
            "author_association": "CONTRIBUTOR",
            "pull_request": {
                "url": f"{_API}/repos/{repo}/pulls/{pr_number}",
                "html_url": f"{_WEB}/{repo}/pull/{pr_number}",
                "diff_url": f"{_WEB}/{repo}/pull/{pr_number}.diff",
                "patch_url": f"{_WEB}/{repo}/pull/{pr_number}.patch",
                "merged_at": None,
            },
        }
    )
    user = webhook_user(login, user_type)
    payload["comment"].update(
        {
            "url": f"{_API}/repos/{repo}/issues/comments/{comment_id}",
            "html_url": f"{_WEB}/{repo}/pull/{pr_number}#issuecomment-{comment_id}",
            "issue_url": api_issue,
            "id": comment_id,
            "node_id": _node_id("IssueComment", comment_id),
            "user": user,
            "created_at": now,
            "updated_at": now,
            "author_association": author_association,
            "body": body,
        }
    )
    payload["comment"]["reactions"]["url"] = (
        f"{_API}/repos/{repo}/issues/comments/{comment_id}/reactions"
    )
    payload["sender"] = copy.deepcopy(user)
    payload["installation"] = _installation(installation_id)
    return _validated("issue_comment", payload)


def issue_comment_edited(
    body: str,
    old_body: str,
    author: str,
    editor: str,
    *,
    comment_id: int,
    created_at: str,
    updated_at: str,
    pr_number: int = 1,
    repo: str = DEFAULT_REPO,
) -> dict[str, Any]:
    """``issue_comment.edited``: ``editor`` changed ``author``'s comment to ``body``."""
    payload = issue_comment_created(body, author, repo, pr_number, comment_id,
                                    created_at=created_at)
    payload["action"] = "edited"
    payload["changes"] = {"body": {"from": old_body}}
    payload["comment"]["updated_at"] = updated_at
    payload["sender"] = webhook_user(editor)
    return _validated("issue_comment", payload)


_PULL_EXAMPLES = {
    "opened": "opened",
    "synchronize": "synchronize",
    "labeled": "labeled",
    "unlabeled": "unlabeled",
    "closed": "closed",
    "reopened": "reopened",
}


def pull_request_event(
    action: str,
    number: int,
    head_sha: str,
    base_ref: str = "main",
    *,
    head_ref: str = "feature",
    repo: str = DEFAULT_REPO,
    installation_id: int = DEFAULT_INSTALLATION_ID,
    author: str = "contributor",
    sender: str | None = None,
    title: str | None = None,
    body: str | None = "",
    labels: Iterable[str] = (),
    label: str | None = None,
    draft: bool = False,
    merged: bool = False,
    before: str | None = None,
    head_repo: str | None = None,
    base_sha: str | None = None,
    owner_type: str = "Organization",
    updated_at: str | None = None,
) -> dict[str, Any]:
    """A ``pull_request`` event (opened, synchronize, labeled, unlabeled, closed, reopened).

    ``label`` is the label added/removed for ``labeled``/``unlabeled``; ``labels`` the
    labels the PR has afterwards. ``head_repo`` (``"fork/name"``) makes it a fork PR.
    """
    if action not in _PULL_EXAMPLES:
        raise ValueError(f"unsupported pull_request action {action!r}")
    payload = _retarget(
        load_payload("pull_request", f"{_PULL_EXAMPLES[action]}.payload"), repo, owner_type
    )
    payload["number"] = number
    pull = payload["pull_request"]
    _fill_pull(pull, repo, number, head_sha, base_sha or "0" * 40, title, body, author, draft)
    label_names = list(labels)
    if label is not None and action == "labeled" and label not in label_names:
        label_names.append(label)
    pull["labels"] = [_label(repo, name) for name in label_names]
    pull["head"] = _pull_ref(payload["repository"], head_repo or repo, head_ref, head_sha)
    pull["base"] = _pull_ref(payload["repository"], repo, base_ref, base_sha or "0" * 40)
    _set_pull_state(pull, action, merged, payload["repository"]["owner"]["login"])
    pull["updated_at"] = updated_at or _now()  # GitHub stamps the change it reports
    if action == "synchronize":
        payload["before"] = before or "f" * 40
        payload["after"] = head_sha
    if action in ("labeled", "unlabeled"):
        if label is None:
            raise ValueError(f"{action} needs the label")
        payload["label"] = _label(repo, label)
    payload["sender"] = webhook_user(sender or author)
    payload["installation"] = _installation(installation_id)
    return _validated("pull_request", payload)


def _fill_pull(
    pull: dict[str, Any],
    repo: str,
    number: int,
    head_sha: str,
    base_sha: str,
    title: str | None,
    body: str | None,
    author: str,
    draft: bool,
) -> None:
    api = f"{_API}/repos/{repo}"
    html = f"{_WEB}/{repo}/pull/{number}"
    pull_id = stable_id(f"{repo.lower()}#{number}", base=500_000_000)
    pull.update(
        {
            "url": f"{api}/pulls/{number}",
            "id": pull_id,
            "node_id": _node_id("PullRequest", pull_id),
            "html_url": html,
            "diff_url": f"{html}.diff",
            "patch_url": f"{html}.patch",
            "issue_url": f"{api}/issues/{number}",
            "number": number,
            "title": title or f"Pull request #{number}",
            "user": webhook_user(author),
            "body": body,
            "commits_url": f"{api}/pulls/{number}/commits",
            "review_comments_url": f"{api}/pulls/{number}/comments",
            "comments_url": f"{api}/issues/{number}/comments",
            "statuses_url": f"{api}/statuses/{head_sha}",
            "draft": draft,
            "author_association": "CONTRIBUTOR",
            "assignee": None,
            "assignees": [],
            "requested_reviewers": [],
            "requested_teams": [],
            "milestone": None,
        }
    )
    pull["_links"] = {
        "self": {"href": f"{api}/pulls/{number}"},
        "html": {"href": html},
        "issue": {"href": f"{api}/issues/{number}"},
        "comments": {"href": f"{api}/issues/{number}/comments"},
        "review_comments": {"href": f"{api}/pulls/{number}/comments"},
        "review_comment": {"href": f"{api}/pulls/comments{{/number}}"},
        "commits": {"href": f"{api}/pulls/{number}/commits"},
        "statuses": {"href": f"{api}/statuses/{head_sha}"},
    }


def _pull_ref(repository: dict[str, Any], full_name: str, ref: str, sha: str) -> dict[str, Any]:
    owner, name = full_name.split("/")
    repo = _move_repo(copy.deepcopy(repository), repository["full_name"], full_name)
    repo_id = stable_id(full_name.lower(), base=100_000_000)
    repo.update(
        {
            "id": repo_id,
            "node_id": _node_id("Repository", repo_id),
            "name": name,
            "full_name": full_name,
            "owner": webhook_user(owner, repository["owner"]["type"]),
            "fork": full_name != repository["full_name"],
        }
    )
    return {
        "label": f"{owner}:{ref}",
        "ref": ref,
        "sha": sha,
        "user": webhook_user(owner),
        "repo": repo,
    }


def _set_pull_state(pull: dict[str, Any], action: str, merged: bool, merger: str) -> None:
    closed = action == "closed"
    now = _now()
    pull.update(
        {
            "state": "closed" if closed else "open",
            "closed_at": now if closed else None,
            "merged": closed and merged,
            "merged_at": now if closed and merged else None,
            "merged_by": webhook_user(merger) if closed and merged else None,
            "merge_commit_sha": ("e" * 40) if closed and merged else None,
            "active_lock_reason": None,
        }
    )


def check_run_rerequested(
    check_run_id: int,
    head_sha: str,
    name: str = "build",
    *,
    repo: str = DEFAULT_REPO,
    installation_id: int = DEFAULT_INSTALLATION_ID,
    external_id: str = "",
    conclusion: str = "failure",
    head_branch: str = "feature",
    app_id: int = DEFAULT_APP_ID,
    app_slug: str = "layerbot",
    sender: str = "contributor",
    pull_number: int | None = None,
    base_ref: str = "main",
    owner_type: str = "Organization",
) -> dict[str, Any]:
    """``check_run.rerequested``: someone clicked "Re-run" on one of the app's check runs."""
    payload = _retarget(load_payload("check_run", "rerequested.payload"), repo, owner_type)
    run = payload["check_run"]
    api = f"{_API}/repos/{repo}"
    run.update(
        {
            "id": check_run_id,
            "node_id": _node_id("CheckRun", check_run_id),
            "head_sha": head_sha,
            "external_id": external_id,
            "url": f"{api}/check-runs/{check_run_id}",
            "html_url": f"{_WEB}/{repo}/runs/{check_run_id}",
            "details_url": f"{_WEB}/apps/{app_slug}",
            "conclusion": conclusion,
            "name": name,
        }
    )
    run["output"]["annotations_url"] = f"{api}/check-runs/{check_run_id}/annotations"
    suite_id = stable_id(f"{repo.lower()}@{head_sha}")
    suite = run["check_suite"]
    suite.update(
        {
            "id": suite_id,
            "head_branch": head_branch,
            "head_sha": head_sha,
            "after": head_sha,
            "url": f"{api}/check-suites/{suite_id}",
            "conclusion": conclusion,
        }
    )
    for app in (run["app"], suite["app"]):
        app.update({"id": app_id, "slug": app_slug, "html_url": f"{_WEB}/apps/{app_slug}"})
    pulls = (
        []
        if pull_number is None
        else [_check_run_pull(repo, pull_number, head_branch, head_sha, base_ref)]
    )
    run["pull_requests"] = pulls
    suite["pull_requests"] = copy.deepcopy(pulls)
    payload["sender"] = webhook_user(sender)
    payload["installation"] = _installation(installation_id)
    return _validated("check_run", payload)


def _check_run_pull(
    repo: str, number: int, head_ref: str, head_sha: str, base_ref: str
) -> dict[str, Any]:
    repo_id = stable_id(repo.lower(), base=100_000_000)
    api_repo = {"id": repo_id, "url": f"{_API}/repos/{repo}", "name": repo.split("/")[1]}
    return {
        "url": f"{_API}/repos/{repo}/pulls/{number}",
        "id": stable_id(f"{repo.lower()}#{number}", base=500_000_000),
        "number": number,
        "head": {"ref": head_ref, "sha": head_sha, "repo": api_repo},
        "base": {"ref": base_ref, "sha": "0" * 40, "repo": copy.deepcopy(api_repo)},
    }
