"""A job command on a PR with nothing built is answered, never met with silence (found by
the soak: `bot: status`, `cancel`, `rebuild` and `deploy` said nothing, and a `bot: status`
after `bot: build` in one comment went unanswered)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.web.conftest import INSTANCE, Web, handle_comment


@pytest.mark.parametrize("command, verb", [
    ("bot: status", "report"), ("bot: cancel", "cancel"), ("bot: rebuild failed", "rebuild"),
    ("bot: deploy", "deploy")])
def test_a_job_command_without_jobs_says_nothing_was_built(web_factory: Any, command: str,
                                                            verb: str) -> None:
    web: Web = web_factory(access={"command": ["alice"], "build": ["alice"],
                                   "deploy": ["alice"]})
    outcome, sent = handle_comment(web, command)
    replies = [text for kind, text in sent if kind == "comment"]
    assert outcome is not None and len(replies) == 1, (outcome, sent)
    assert f"**layerbot `{INSTANCE}`**: nothing has been built for this pull request here " \
           f"yet, so there is nothing to {verb}." in replies[0]
    assert replies[0].startswith(f"> {command}")
