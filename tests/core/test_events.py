"""Event identity from the signed body (core/events.py): equal for a replay, distinct for
every genuine occurrence."""

from __future__ import annotations

from layerbot.core.events import event_identity
from tests.support.webhooks import (
    issue_comment_created,
    issue_comment_edited,
    pull_request_event,
)


def test_a_comment_is_identified_by_its_id_and_action() -> None:
    a = issue_comment_created("bot: build", "alice", comment_id=7,
                              created_at="2026-01-01T00:00:00Z")
    b = issue_comment_created("bot: build", "alice", comment_id=7,
                              created_at="2026-01-01T00:00:09Z")
    other = issue_comment_created("bot: build", "alice", comment_id=8)
    assert event_identity("issue_comment", "created", a) == event_identity(
        "issue_comment", "created", b)
    assert event_identity("issue_comment", "created", a) != event_identity(
        "issue_comment", "created", other)


def test_each_edit_of_a_comment_is_its_own_event() -> None:
    def edit(at: str) -> str | None:
        payload = issue_comment_edited("x", "y", "alice", "bob", comment_id=7,
                                       created_at="2026-01-01T00:00:00Z", updated_at=at)
        return event_identity("issue_comment", "edited", payload)
    assert edit("2026-01-01T00:00:05Z") == edit("2026-01-01T00:00:05Z")
    assert edit("2026-01-01T00:00:05Z") != edit("2026-01-01T00:00:06Z")


def test_a_label_is_identified_by_pr_label_actor_and_time() -> None:
    def label(name: str, sender: str, at: str, number: int = 1) -> str | None:
        payload = pull_request_event("labeled", number, "a" * 40, label=name, sender=sender,
                                     updated_at=at)
        return event_identity("pull_request", "labeled", payload)
    base = label("bot:deploy", "maint", "2026-01-01T00:00:00Z")
    assert base == label("bot:deploy", "maint", "2026-01-01T00:00:00Z")
    assert len({base, label("other", "maint", "2026-01-01T00:00:00Z"),
                label("bot:deploy", "boss", "2026-01-01T00:00:00Z"),
                label("bot:deploy", "maint", "2026-01-01T00:01:00Z"),
                label("bot:deploy", "maint", "2026-01-01T00:00:00Z", number=2)}) == 5


def test_a_push_back_to_an_earlier_commit_is_a_new_event() -> None:
    def push(sha: str, at: str) -> str | None:
        payload = pull_request_event("synchronize", 1, sha, updated_at=at)
        return event_identity("pull_request", "synchronize", payload)
    assert push("a" * 40, "2026-01-01T00:00:00Z") != push("a" * 40, "2026-01-01T00:05:00Z")


def test_events_that_command_nothing_have_no_identity() -> None:
    assert event_identity("installation", "created", {"installation": {"id": 1}}) is None
    assert event_identity("issue_comment", "created", {"comment": {}}) is None
