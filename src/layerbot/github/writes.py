"""What each kind of outbox message does on GitHub, and how handlers ask for it.

The ``enqueue_*`` helpers are what the rest of the bot calls (inside its transaction);
:func:`perform` is what the sender calls. Comments and check runs are upserts by a stable
key: the first send creates the object and records its id, later sends edit it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from layerbot.github.client import GitHubApp
from layerbot.store.outbox import Message, enqueue

#: Hidden in every comment the bot writes, so a comment whose creation was interrupted
#: (sent, but the sender died before recording its id) is found instead of posted twice.
MARKER = "<!-- layerbot:{key} -->"


def enqueue_reaction(session: Session, *, instance: str, repo: str, installation_id: int | None,
                     comment_id: int, content: str, now: datetime) -> None:
    enqueue(session, instance=instance, kind="reaction", repo=repo,
            installation_id=installation_id, now=now,
            payload={"comment_id": comment_id, "content": content})


def enqueue_comment(session: Session, *, instance: str, repo: str, installation_id: int | None,
                    issue_number: int, key: str, body: str, now: datetime) -> None:
    """Create, or edit in place, the comment known by ``key`` (one reply per command)."""
    enqueue(session, instance=instance, kind="comment", repo=repo,
            installation_id=installation_id, now=now, coalesce_key=f"comment:{key}",
            payload={"issue_number": issue_number, "key": key, "body": body})


def enqueue_check_run(session: Session, *, instance: str, repo: str,
                      installation_id: int | None, key: str, fields: dict[str, Any],
                      now: datetime) -> None:
    """Create, or update, the check run known by ``key`` (one per job)."""
    enqueue(session, instance=instance, kind="check_run", repo=repo,
            installation_id=installation_id, now=now, coalesce_key=f"check_run:{key}",
            payload={"key": key, **fields})


def enqueue_label(session: Session, *, instance: str, repo: str, installation_id: int | None,
                  issue_number: int, label: str, add: bool, now: datetime) -> None:
    enqueue(session, instance=instance, kind="label_add" if add else "label_remove",
            repo=repo, installation_id=installation_id, now=now,
            payload={"issue_number": issue_number, "label": label})


class Performer:
    """Turns one outbox message into GitHub requests."""

    def __init__(self, github: GitHubApp, object_id: Any) -> None:
        self.github = github
        self._object_id = object_id  # Callable[[str], int | None]

    async def perform(self, message: Message) -> tuple[str, str, int | None] | None:
        """Send it; for comments and check runs returns (object key, kind, id if created)."""
        if message.installation_id is None:
            raise ValueError("message has no installation id")
        handler = getattr(self, f"_{message.kind}", None)
        if handler is None:
            raise ValueError(f"unknown outbox message kind {message.kind!r}")
        result: tuple[str, str, int | None] | None = await handler(message, message.payload)
        return result

    async def _reaction(self, m: Message, p: dict[str, Any]) -> None:
        await self.github.request(m.installation_id or 0, "POST",
                                  f"/repos/{m.repo}/issues/comments/{p['comment_id']}/reactions",
                                  json={"content": p["content"]})

    async def _comment(self, m: Message, p: dict[str, Any]) -> tuple[str, str, int | None]:
        key = f"comment:{p['key']}"
        body = f"{p['body']}\n\n{MARKER.format(key=p['key'])}"
        inst = m.installation_id or 0
        existing = self._object_id(key)
        if existing is None and p.get("_maybe_sent"):
            existing = await self._find_comment(inst, m.repo, p["issue_number"], p["key"])
            if existing is not None:
                await self.github.request(inst, "PATCH",
                                          f"/repos/{m.repo}/issues/comments/{existing}",
                                          json={"body": body})
                return key, "comment", existing
        if existing is not None:
            await self.github.request(inst, "PATCH", f"/repos/{m.repo}/issues/comments/{existing}",
                                      json={"body": body})
            return key, "comment", None
        response = await self.github.request(
            inst, "POST", f"/repos/{m.repo}/issues/{p['issue_number']}/comments",
            json={"body": body})
        return key, "comment", int(response.json()["id"])

    async def _find_comment(self, inst: int, repo: str, issue: int, key: str) -> int | None:
        marker = MARKER.format(key=key)
        page = 1
        while page <= 20:
            comments = await self.github.json(
                inst, "GET", f"/repos/{repo}/issues/{issue}/comments",
                params={"per_page": 100, "page": page})
            for comment in comments or []:
                if marker in (comment.get("body") or ""):
                    return int(comment["id"])
            if not comments or len(comments) < 100:
                return None
            page += 1
        return None

    async def _check_run(self, m: Message, p: dict[str, Any]) -> tuple[str, str, int | None]:
        key = f"check_run:{p['key']}"
        fields = {k: v for k, v in p.items() if k not in ("key", "_maybe_sent")}
        inst = m.installation_id or 0
        existing = self._object_id(key)
        if existing is not None:
            fields.pop("head_sha", None)
            await self.github.request(inst, "PATCH", f"/repos/{m.repo}/check-runs/{existing}",
                                      json=fields)
            return key, "check_run", None
        response = await self.github.request(inst, "POST", f"/repos/{m.repo}/check-runs",
                                             json=fields)
        return key, "check_run", int(response.json()["id"])

    async def _label_add(self, m: Message, p: dict[str, Any]) -> None:
        await self.github.request(m.installation_id or 0, "POST",
                                  f"/repos/{m.repo}/issues/{p['issue_number']}/labels",
                                  json={"labels": [p["label"]]})

    async def _label_remove(self, m: Message, p: dict[str, Any]) -> None:
        await self.github.request(m.installation_id or 0, "DELETE",
                                  f"/repos/{m.repo}/issues/{p['issue_number']}/labels/{p['label']}")
