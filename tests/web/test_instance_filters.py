"""`inst:`/`instance:` on every command: only the instances it names answer; the others
neither react nor reply (issue 10, item 4)."""

from __future__ import annotations

from typing import Any

from tests.web.conftest import INSTANCE, Web, handle_comment

ANSWERING = ["bot: show_config", "bot: status", "bot: probe", "bot: help",
             "bot: status last_build"]


def test_commands_for_other_instances_get_no_reaction_and_no_reply(web_factory: Any) -> None:
    web: Web = web_factory(access={"command": ["alice"]})
    lines = [f"{line} {key}:other-.*" for line in ANSWERING for key in ("inst", "instance")]
    outcome, sent = handle_comment(web, "\n".join(lines))
    assert outcome is None and sent == []


def test_the_named_instance_answers_each_command(web_factory: Any) -> None:
    web: Web = web_factory(access={"command": ["alice"]})
    body = "\n".join([f"bot: show_config instance:{INSTANCE}", "bot: probe inst:test-.*",
                      "bot: help inst:other", f"bot: help inst:{INSTANCE.upper()}"])
    outcome, sent = handle_comment(web, body)
    assert outcome is not None
    kinds = [kind for kind, _ in sent]
    assert kinds.count("reaction") == 1
    replies = [text for kind, text in sent if kind == "comment"]
    # show_config, probe and one help (the one naming this instance; not the other's)
    assert len(replies) == 3, replies
    assert any("This instance can build:" in r and "answers the probe" not in r for r in replies)
    assert any("answers the probe" in r for r in replies)
    assert sum("### layerbot commands" in r for r in replies) == 1


def test_a_mixed_comment_answers_only_its_own_lines(web_factory: Any) -> None:
    web: Web = web_factory(access={"command": ["alice"]})
    outcome, sent = handle_comment(web, "bot: show_config inst:other\nbot: help")
    replies = [text for kind, text in sent if kind == "comment"]
    assert outcome is not None and len(replies) == 1 and "### layerbot commands" in replies[0]
