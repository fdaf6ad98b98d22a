"""The latest push to each pull request, per instance: what makes a command stale.

Kept in the store (not in memory) so that a restart, or another worker of the same
instance, still knows a push happened; written in the transaction of the ``synchronize``
event itself, so it is recorded exactly when the event counts as handled. The time kept
is GitHub's (see ``core/pinning.py`` for why that clock).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from layerbot.store.models import PullPush


def record_push(session: Session, instance: str, repo: str, pr: int, head_sha: str,
                pushed_at: datetime, now: datetime) -> None:
    """Remember a push; an older one handled late (a redelivery) never moves time back."""
    row = session.get(PullPush, (instance, repo, pr))
    if row is None:
        session.add(PullPush(instance=instance, repo=repo, pr=pr, head_sha=head_sha,
                             pushed_at=pushed_at, recorded_at=now))
    elif pushed_at >= row.pushed_at:
        row.head_sha, row.pushed_at, row.recorded_at = head_sha, pushed_at, now


def latest_push(session: Session, instance: str, repo: str, pr: int
                ) -> tuple[str, datetime] | None:
    """(head sha, GitHub's time) of the latest push recorded, or None."""
    row = session.get(PullPush, (instance, repo, pr))
    return (row.head_sha, row.pushed_at) if row is not None else None
