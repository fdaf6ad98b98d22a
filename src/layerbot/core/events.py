"""The identity of what happened, read from the signed body, not from the delivery headers.

GitHub signs the body only; ``X-GitHub-Delivery`` and ``X-GitHub-Hook-ID`` are unsigned.
Anyone who captured one signed delivery can send the same body again under a fresh
delivery id, and de-duplication by delivery id alone lets it through: the comment
``bot: build`` builds again, the label deploys again. So every event that commands the
bot also gets an identity derived from the body itself, and the store keeps at most one
event per identity (a unique constraint): the replayed body then triggers nothing.

The identity must be the same for a replay and different for every genuine occurrence:

- ``issue_comment``: the comment id and the action. ``edited`` happens many times to one
  comment (the bot edits its own reports), so an edit adds the comment's ``updated_at``.
- ``pull_request`` ``labeled``/``unlabeled``: the PR, the label, the actor and the event's
  timestamp (``pull_request.updated_at``, which GitHub sets at the change).
- other ``pull_request`` actions (opened, synchronize, closed, ...): the PR, the action,
  the head commit and ``updated_at``: a force-push back to an earlier commit is a new
  event because its ``updated_at`` is new.
- ``check_run``: the check run id, the action, the actor and the run's own state
  (``started_at``/``completed_at``). The bot rewrites a check run when it re-runs it, so a
  genuine second re-run request sees other times; a replay of an old request does not.
- anything else: no identity (``None``). Those events command nothing (installation
  changes, pings); they are still de-duplicated by delivery id.

The result is a sha256 in hex: a fixed size for the unique index, whatever the inputs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any


def _get(payload: Mapping[str, Any], *path: str) -> object:
    node: object = payload
    for key in path:
        if not isinstance(node, Mapping):
            return None
        node = node.get(key)
    return node


def _parts(event: str, action: str | None, payload: Mapping[str, Any]) -> list[object] | None:
    repo = _get(payload, "repository", "id") or _get(payload, "repository", "full_name")
    if event == "issue_comment":
        comment_id = _get(payload, "comment", "id")
        if comment_id is None:
            return None
        edit = _get(payload, "comment", "updated_at") if action == "edited" else ""
        return [comment_id, action, edit]
    if event == "pull_request":
        pull = _get(payload, "pull_request")
        if not isinstance(pull, Mapping):
            return None
        when = pull.get("updated_at")
        if action in ("labeled", "unlabeled"):
            return [repo, pull.get("number"), action, _get(payload, "label", "name"),
                    _get(payload, "sender", "login"), when]
        return [repo, pull.get("number"), action, _get(pull, "head", "sha"), when]
    if event == "check_run":
        run = _get(payload, "check_run")
        if not isinstance(run, Mapping) or run.get("id") is None:
            return None
        return [run.get("id"), action, _get(payload, "sender", "login"),
                run.get("started_at"), run.get("completed_at")]
    return None


def event_identity(event: str, action: str | None, payload: Mapping[str, Any]) -> str | None:
    """The identity of the occurrence this body describes, or None when it has none."""
    parts = _parts(event, action, payload)
    if parts is None:
        return None
    text = "\x1f".join([event, *("" if p is None else str(p) for p in parts)])
    return hashlib.sha256(text.encode()).hexdigest()
