"""Every command of the grammar has exactly one handler, checked when the bot is built
(issue 10, item 9): a command that would only be answered with 👀 cannot ship."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from layerbot.app import Bot
from layerbot.app.commands import BINDINGS
from layerbot.config import Config
from layerbot.core.commands import COMMANDS
from layerbot.handlers.registry import CommandBinding, CommandRegistry, Invocation, RegistryError
from layerbot.store.db import Store
from tests.web.conftest import make_config


@pytest.fixture
def config(tmp_path: Path) -> Iterator[Config]:
    yield make_config(tmp_path)


def _bot(config: Config, commands: list[CommandBinding]) -> Bot:
    store = Store(config.store_url)
    try:
        return Bot(config, store, commands=commands)
    finally:
        store.close()


async def _nothing(inv: Invocation) -> str | None:
    return None


def test_the_shipped_bot_binds_every_command_of_the_grammar(config: Config) -> None:
    bot = _bot(config, list(BINDINGS))
    assert sorted(bot.commands.names) == sorted(spec.name for spec in COMMANDS)


def test_a_command_without_a_handler_stops_the_bot_from_being_built(config: Config) -> None:
    without_status = [b for b in BINDINGS if b.name != "status"]
    with pytest.raises(RegistryError, match="the command `status` has no handler"):
        _bot(config, without_status)


def test_a_handler_without_a_command_stops_the_bot_from_being_built(config: Config) -> None:
    extra = [*BINDINGS, CommandBinding("frobnicate", _nothing)]
    with pytest.raises(RegistryError, match="`frobnicate`, which is not a command"):
        _bot(config, extra)


def test_two_handlers_for_one_command_stop_the_bot_from_being_built(config: Config) -> None:
    twice = [*BINDINGS, CommandBinding("build", _nothing)]
    with pytest.raises(RegistryError, match="the command `build` has 2 handlers"):
        _bot(config, twice)


def test_every_problem_is_named_at_once() -> None:
    with pytest.raises(RegistryError) as raised:
        CommandRegistry([CommandBinding("frobnicate", _nothing)])
    message = str(raised.value)
    assert all(f"`{spec.name}` has no handler" in message for spec in COMMANDS)
    assert "`frobnicate`" in message


def test_only_help_answers_outside_pull_requests() -> None:
    assert [b.name for b in BINDINGS if not b.pull_requests_only] == ["help"]
