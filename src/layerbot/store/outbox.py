"""The outbox: every write to GitHub, recorded with the state change that causes it.

Handlers and the reconciler only ever call :func:`enqueue` inside their own transaction;
the sender (``layerbot.github.sender``) delivers. Successive edits of one comment or check
run share a coalesce key and collapse into one pending message, so a job that moves through
five states while GitHub is slow costs one request, not five.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from layerbot.store.db import Store
from layerbot.store.models import GitHubObject, OutboxMessage, RateLimit


@dataclass(frozen=True)
class Message:
    id: int
    kind: str
    repo: str
    installation_id: int | None
    coalesce_key: str | None
    payload: dict[str, Any]
    attempts: int
    was_sending: bool  # a previous sender may have sent it before dying


def enqueue(session: Session, *, instance: str, kind: str, repo: str,
            installation_id: int | None, payload: dict[str, Any], now: datetime,
            coalesce_key: str | None = None) -> None:
    """Add a write to GitHub to the caller's transaction (merging pending edits)."""
    if coalesce_key is not None:
        pending = session.scalars(
            select(OutboxMessage).where(OutboxMessage.coalesce_key == coalesce_key,
                                        OutboxMessage.status == "pending")
            .order_by(OutboxMessage.id.desc()).limit(1)
        ).first()
        # Merged only if it is still pending when written: on PostgreSQL the sender may
        # claim it meanwhile, and an edit merged into a message in flight would be lost.
        if pending is not None and _rows(session.execute(
                update(OutboxMessage)
                .where(OutboxMessage.id == pending.id, OutboxMessage.status == "pending")
                .values(payload={**pending.payload, **payload},
                        versions=OutboxMessage.versions + 1)
                .execution_options(synchronize_session=False))):
            session.expire(pending)
            return
    session.add(OutboxMessage(
        instance=instance, kind=kind, repo=repo, installation_id=installation_id,
        coalesce_key=coalesce_key, payload=payload, created_at=now, status="pending",
        attempts=0, next_attempt_at=now, versions=1,
    ))


class Outbox:
    def __init__(self, store: Store, instance: str,
                 min_edit_interval: timedelta = timedelta(0)) -> None:
        self.store = store
        self.instance = instance
        self.min_edit_interval = min_edit_interval

    def claim(self, now: datetime, limit: int) -> list[Message]:
        """Due messages, oldest first, at most one in flight per coalesce key.

        An edit of an object written less than ``min_edit_interval`` ago waits (and keeps
        absorbing newer edits), so fast-moving jobs cost one request per interval.
        """
        with self.store.transaction() as session:
            busy = set(session.scalars(
                select(OutboxMessage.coalesce_key).where(
                    OutboxMessage.instance == self.instance, OutboxMessage.status == "sending",
                    OutboxMessage.coalesce_key.is_not(None))
            ))
            rows = session.scalars(
                select(OutboxMessage)
                .where(OutboxMessage.instance == self.instance, OutboxMessage.status == "pending",
                       OutboxMessage.next_attempt_at <= now)
                .order_by(OutboxMessage.id).limit(limit * 4)
            ).all()
            recent = self._recently_written(session, rows, now)
            claimed: list[Message] = []
            for row in rows:
                if row.coalesce_key is not None and (row.coalesce_key in busy
                                                     or row.coalesce_key in recent):
                    continue
                # Taken only if still pending, with its payload as it is now: an edit may
                # have been merged into it since it was read (on PostgreSQL).
                taken = session.execute(
                    update(OutboxMessage)
                    .where(OutboxMessage.id == row.id, OutboxMessage.status == "pending")
                    .values(status="sending", attempts=OutboxMessage.attempts + 1)
                    .returning(OutboxMessage.attempts, OutboxMessage.payload)
                    .execution_options(synchronize_session=False)
                ).first()
                if taken is None:
                    continue
                if row.coalesce_key is not None:
                    busy.add(row.coalesce_key)
                attempts, payload = taken
                claimed.append(Message(row.id, row.kind, row.repo, row.installation_id,
                                       row.coalesce_key, dict(payload), int(attempts), False))
                if len(claimed) >= limit:
                    break
            return claimed

    def _recently_written(self, session: Session, rows: Sequence[OutboxMessage],
                          now: datetime) -> set[str]:
        if not self.min_edit_interval:
            return set()
        keys = [r.coalesce_key for r in rows if r.coalesce_key]
        if not keys:
            return set()
        since = now - self.min_edit_interval
        return set(session.scalars(
            select(GitHubObject.key).where(GitHubObject.key.in_(keys),
                                           GitHubObject.updated_at > since)))

    def recover(self) -> list[int]:
        """Messages left 'sending' by a dead sender: back to pending, flagged for a check."""
        with self.store.transaction() as session:
            rows = session.scalars(
                select(OutboxMessage).where(OutboxMessage.instance == self.instance,
                                            OutboxMessage.status == "sending")
            ).all()
            for row in rows:
                row.status = "pending"
                row.payload = {**row.payload, "_maybe_sent": True}
            return [row.id for row in rows]

    def sent(self, message_id: int, now: datetime, object_key: str | None = None,
             object_kind: str | None = None, github_id: int | None = None) -> None:
        with self.store.transaction() as session:
            session.execute(update(OutboxMessage).where(OutboxMessage.id == message_id)
                            .values(status="sent", sent_at=now, error=None))
            if object_key and github_id is not None and object_kind:
                if session.get(GitHubObject, object_key) is None:
                    session.add(GitHubObject(key=object_key, kind=object_kind,
                                             github_id=github_id, created_at=now,
                                             updated_at=now))
            elif object_key:
                obj = session.get(GitHubObject, object_key)
                if obj is not None:
                    obj.updated_at = now

    def retry(self, message_id: int, error: str, at: datetime | None,
              maybe_sent: bool = False) -> None:
        """Back to pending until ``at``; or failed for good when ``at`` is None.
        ``maybe_sent``: GitHub may have applied it (no answer, or a 5xx), so the next
        attempt looks for what it created before creating it again."""
        with self.store.transaction() as session:
            row = session.get(OutboxMessage, message_id)
            if row is None:
                return
            row.error = error
            if maybe_sent:
                row.payload = {**row.payload, "_maybe_sent": True}
            if at is None:
                row.status = "failed"
            else:
                row.status = "pending"
                row.next_attempt_at = at
            # A newer edit enqueued while this one was in flight wins over this one.
            if row.status == "pending" and row.coalesce_key is not None:
                newer = session.scalars(
                    select(OutboxMessage).where(OutboxMessage.coalesce_key == row.coalesce_key,
                                                OutboxMessage.status == "pending",
                                                OutboxMessage.id != row.id)
                ).first()
                if newer is not None:
                    newer.payload = {**row.payload, **newer.payload}
                    # ...but not sooner than this one could go: after a timeout, its create
                    # may still land, and the newer one must find it (see sender.py).
                    newer.next_attempt_at = max(newer.next_attempt_at, row.next_attempt_at)
                    row.status = "sent"
                    row.error = f"superseded by message {newer.id}"

    def object_id(self, key: str) -> int | None:
        with self.store.read() as session:
            obj = session.get(GitHubObject, key)
            return obj.github_id if obj else None

    def backlog(self) -> int:
        with self.store.read() as session:
            return int(session.scalar(
                select(func.count()).select_from(OutboxMessage).where(
                    OutboxMessage.instance == self.instance,
                    OutboxMessage.status.in_(("pending", "sending")))
            ) or 0)

    def record_rate_limit(self, resource: str, limit: int, remaining: int, reset_at: datetime,
                          now: datetime) -> None:
        with self.store.transaction() as session:
            row = session.get(RateLimit, resource)
            if row is None:
                session.add(RateLimit(resource=resource, limit=limit, remaining=remaining,
                                      reset_at=reset_at, updated_at=now))
            else:
                row.limit, row.remaining, row.reset_at, row.updated_at = (
                    limit, remaining, reset_at, now)


def _rows(result: object) -> int:
    return int(result.rowcount)  # type: ignore[attr-defined]
