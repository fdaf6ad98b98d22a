"""Whether a build command may build the PR's head: the commit the reviewer saw, and no other.

A command is handled some time after it was written; a push in between would otherwise
be built although nobody looked at it. Two rules guard that gap:

- ``sha:<commit>`` pins the commit: the build runs only if the PR's head is still that
  commit (``build.require_sha`` makes the pin mandatory).
- a command written before the PR's latest push is stale: it builds nothing, and the
  author is asked to look at the new commits and write it again. So is an unpinned
  command handled while a push is on its way: the head GitHub reports is not the one of
  the latest push the bot recorded, so the ``synchronize`` that would tell when it
  happened has not been handled yet (events of one PR are handled in arrival order).

Which clock: both times come from GitHub, from the signed bodies: the comment's
``created_at`` and the ``pull_request.updated_at`` of the ``synchronize`` event, which
GitHub sets when it records the push. Comparing two GitHub times needs no agreement
between GitHub's clock and the bot's, and neither delivery delay nor a backlog in the
inbox moves them. (The time the bot received the push would be later than the push by
the delivery delay, and would refuse comments written just after a push; the bot's clock
against GitHub's would add skew in either direction.) The timestamps have whole seconds,
so a comment in the same second as the push cannot be ordered: it counts as stale, since
asking again costs a comment while building an unseen commit costs trust.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class Refusal(StrEnum):
    STALE = "stale"  # written before the latest push
    MOVED = "moved"  # the pinned commit is no longer the head
    UNPINNED = "unpinned"  # build.require_sha, and no sha: given


@dataclass(frozen=True)
class PinCheck:
    """What the decision needs, gathered by the handler."""

    head_sha: str
    pinned: str | None
    require_pin: bool
    #: The command comment's ``created_at``; None when the event carries none (a re-run).
    written_at: datetime | None
    #: GitHub's time of the latest push the bot recorded for this PR, if any.
    pushed_at: datetime | None
    #: The head of that push (None when the bot recorded none).
    pushed_head: str | None = None


def check(c: PinCheck) -> Refusal | None:
    """None when the build may go ahead, else why it may not (stale first: it says more)."""
    if c.written_at is not None and c.pushed_at is not None and c.written_at <= c.pushed_at:
        return Refusal.STALE
    if c.pinned is None:
        if c.require_pin:
            return Refusal.UNPINNED
        unseen = c.pushed_head is not None and c.pushed_head.lower() != c.head_sha.lower()
        return Refusal.STALE if unseen else None
    if not c.head_sha.lower().startswith(c.pinned.lower()):
        return Refusal.MOVED
    return None


def message(refusal: Refusal, c: PinCheck, command: str) -> str:
    """The reply: why nothing was built, what the head is now, and what to write instead."""
    head = c.head_sha[:12]
    again = f"`{command} sha:{head}`" if c.pinned is None else f"the command with `sha:{head}`"
    if refusal is Refusal.STALE:
        return (f"this command was written before the latest push to this pull request "
                f"(head now `{head}`), so nothing was built. Please look at the new commits "
                f"and write the command again.")
    if refusal is Refusal.MOVED:
        return (f"the head of this pull request is now `{head}`, not `{c.pinned}` as the "
                f"command says, so nothing was built. Look at the new commits, then write "
                f"{again}.")
    return (f"this instance builds pinned commits only (`build.require_sha`): nothing was "
            f"built. The head is now `{head}`; after reviewing it, write {again}.")
