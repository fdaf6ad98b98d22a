"""Attack: anyone with write access edits someone else's comment to command or approve.

GitHub lets collaborators with write access edit other people's comments. An edited
comment therefore no longer says only what its author wrote: it must never command a
build (only `created` comments do) and never approve an ingest (approvals are read from
unedited comments only, and record the comment id and body hash they were read from).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from typing import Any

import pytest

from layerbot.deploy.approval import verdicts
from tests.adversarial.events_env import NAME, OWNER, handled, session
from tests.support.e2e import Session
from tests.support.fakegithub.state import iso
from tests.support.webhooks import DEFAULT_INSTALLATION_ID, issue_comment_edited


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    with session(tmp_path_factory.mktemp("edited")) as s:
        yield s


def test_an_edited_comment_never_commands(env: Session) -> None:
    env.pr(1)
    comment_id = env.fake.add_comment(OWNER, NAME, 1, "Nice work!", login="alice")
    edited = env.fake.edit_comment(comment_id, "Nice work!\nbot: build")  # by mallory
    env.send("issue_comment", issue_comment_edited(
        edited.body, "Nice work!", "alice", "mallory", comment_id=comment_id, pr_number=1,
        created_at=iso(edited.created_at), updated_at=iso(edited.updated_at)))
    handled(env, "issue_comment", "edited", 1, 1)
    time.sleep(1)
    assert env.jobs(1) == []
    assert env.fake.reactions(comment_id) == []
    assert env.replies(1) == []


def _listed(env: Session, number: int) -> list[dict[str, Any]]:
    """The comments as GitHub's REST API lists them (what the approval policy reads)."""
    client = env.fake.installation_client(DEFAULT_INSTALLATION_ID)
    response = client.request("GET", f"/repos/{OWNER}/{NAME}/issues/{number}/comments")
    data: list[dict[str, Any]] = response.json()
    return data


def test_an_edited_comment_never_approves(env: Session) -> None:
    env.fake.add_pull(OWNER, NAME, 2, head_sha="a" * 40)
    honest = env.fake.add_comment(OWNER, NAME, 2, "bot: reject not yet", login="maint")
    env.fake.edit_comment(honest, "bot: approve")  # mallory turns a rejection into approval
    planted = env.fake.add_comment(OWNER, NAME, 2, "Thanks", login="maint")
    env.fake.edit_comment(planted, "Thanks\nbot: approve")
    assert verdicts(_listed(env, 2)) == []  # neither edited comment counts
    fresh = env.fake.add_comment(OWNER, NAME, 2, "ok\nbot: approve", login="maint")
    [verdict] = verdicts(_listed(env, 2))
    assert (verdict.approve, verdict.login, verdict.comment_id) == (True, "maint", fresh)
    assert verdict.body_sha256 == hashlib.sha256(b"ok\nbot: approve").hexdigest()
