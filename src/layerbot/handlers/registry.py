"""Commands bound to their handlers: the typed registry every `bot:` command goes through.

The grammar (name, arguments, help) is pure data in ``core/commands/grammar.py``; each command
module of this package binds its handler to a grammar entry with a
:class:`CommandBinding`, which also says which permission the command needs and whether it
works outside pull requests. The app builds a :class:`CommandRegistry` from the bindings
at start-up, and the registry refuses to exist unless every command of the grammar has
exactly one handler and every handler a command: a command that would only be answered
with 👀 cannot ship.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from layerbot.core.access import Action
from layerbot.core.commands import COMMANDS, Command, CommandSpec
from layerbot.handlers.base import Context, Event
from layerbot.handlers.permissions import allowed


@dataclass(frozen=True)
class Invocation:
    """One command of a comment on a PR, as its handler receives it."""

    cmd: Command
    event: Event
    ctx: Context
    #: The binding's permission (see :class:`CommandBinding`).
    permission: Action | None

    @property
    def number(self) -> int:
        """The PR (or issue) the comment is on."""
        return int(self.event.payload["issue"]["number"])

    async def permitted(self) -> bool:
        """Whether the sender holds the command's permission; a refusal is answered.

        Handlers ask once they know this instance answers at all: with several instances
        on a PR, one that has nothing to do with the command stays silent rather than
        refusing it.
        """
        if self.permission is None:
            return True
        return await allowed(self.ctx, self.permission, self.number, self.cmd)


class CommandHandler(Protocol):
    async def __call__(self, inv: Invocation, /) -> str | None:
        """Handle the command: read what is needed, record writes and replies in
        ``inv.ctx``; return what was done (for the inbox's outcome), or None when this
        instance has nothing to say."""


@dataclass(frozen=True)
class CommandBinding:
    #: The grammar entry's name (``core.commands.COMMANDS``).
    name: str
    handler: CommandHandler
    #: What the sender needs beyond ``access.command`` (which every command needs);
    #: None: nothing more.
    permission: Action | None = None
    #: False for commands that also answer on plain issues (help).
    pull_requests_only: bool = True


class RegistryError(Exception):
    """The grammar and the handlers disagree; raised when the app is built."""


def binding_problems(grammar: Sequence[CommandSpec],
                     bindings: Sequence[CommandBinding]) -> list[str]:
    """What is wrong between the grammar and the bindings; empty when each command of the
    grammar has exactly one handler and each handler a command."""
    names = [spec.name for spec in grammar]
    bound = Counter(b.name for b in bindings)
    problems = [f"the command `{name}` has no handler" for name in names if name not in bound]
    problems += [f"the command `{name}` has {n} handlers" for name, n in bound.items()
                 if n > 1]
    problems += [f"a handler is bound to `{name}`, which is not a command of the grammar"
                 for name in bound if name not in names]
    return problems


class CommandRegistry:
    """The bindings of the grammar's commands, checked complete when it is made."""

    def __init__(self, bindings: Iterable[CommandBinding],
                 grammar: Sequence[CommandSpec] = COMMANDS) -> None:
        listed = list(bindings)
        problems = binding_problems(grammar, listed)
        if problems:
            raise RegistryError("commands and handlers do not match: " + "; ".join(problems))
        self._by_name = {b.name: b for b in listed}

    def __getitem__(self, name: str) -> CommandBinding:
        return self._by_name[name]

    def __len__(self) -> int:
        return len(self._by_name)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._by_name)
