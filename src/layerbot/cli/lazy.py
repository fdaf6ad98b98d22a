"""Commands loaded when they run: why `layerbot --help` answers in a tenth of a second.

Three costs are kept out of a start (``tests/cli/test_start.py`` checks each):

- Other commands' modules. Each command module (``cli_ops``, ``cli_deploy``, ``cli_init``)
  imports what its commands need: the store (SQLAlchemy), GitHub (githubkit), S3 (boto3),
  the web app (FastAPI). Importing all of them for every command took 1.7 s, most of it for
  code the command never ran. So the top-level group knows these commands by name only
  (``LazyCommand``) and imports a module the first time one of its commands is looked up
  to run. Listing commands for help needs a line of help per command and no code: the line
  is kept in the table, and ``tests/cli/test_start.py`` checks that every line matches the
  command's own docstring, so the two cannot drift apart silently.
- rich. typer formats help and errors with rich when it is installed; rich, with the
  Markdown and traceback modules typer pulls in for it, cost more than the rest of
  `layerbot --help`. The CLI's help is click's plain help instead (``MARKUP_MODE``): the
  same content, without boxes. Commands that print tables still use rich when they print.
- pydantic. typer converts each parameter's value through a pydantic ``TypeAdapter`` it
  builds on first use, even the ``--help`` flag's unset value; importing pydantic for that
  was two thirds of `layerbot version`. A flag needs no conversion, so the help flags of the
  group and of `version` use typer's pass-through converter (``plain_flag``). Commands with
  options of their own still convert them with pydantic.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from difflib import get_close_matches
from typing import TYPE_CHECKING, Any

import typer
from typer import _click as click
from typer._click.exceptions import UsageError
from typer.core import TyperCommand, TyperGroup, TyperOption

if TYPE_CHECKING:
    from rich.console import Console

#: ``ctx.meta`` key set while the group formats its help (see ``LazyGroup.format_help``).
_LISTING = "layerbot.cli.lazy.listing"
#: How the CLI's help is formatted: click's plain help, not rich's (see the module's doc).
MARKUP_MODE = None


def plain_flag(option: TyperOption | None) -> TyperOption | None:
    """``option`` (a help flag) with a converter that needs no pydantic.

    A flag's value is None (not given), True or False; typer's pass-through converter
    returns a bool as it is, which is all a flag needs. The converter is typer's lazily
    built ``_runtime_param``: if a typer release changes these, nothing is changed here and
    the flag is converted by typer as usual (the start test then sees pydantic again).
    """
    if option is None or getattr(option, "_runtime_param", False) is not None:
        return option
    try:
        from typer._coercion import PassThroughRuntimeParam

        converter = PassThroughRuntimeParam(
            parameter_info=option.type_descriptor.parameter_info, annotation=bool)
    except (ImportError, AttributeError, TypeError):  # another typer: leave it to typer
        return option
    option._runtime_param = converter
    return option


class PlainCommand(TyperCommand):
    """A command whose ``--help`` flag is converted without pydantic (see ``plain_flag``)."""

    def get_help_option(self, ctx: click.Context) -> TyperOption | None:
        return plain_flag(super().get_help_option(ctx))


@dataclass(frozen=True)
class LazyCommand:
    """A command of ``module`` (which has ``register(app)``), and the help line it lists."""

    name: str
    module: str
    summary: str


class LazyGroup(TyperGroup):
    """A typer group that adds ``LAZY_COMMANDS`` after its own, importing them on demand."""

    lazy: tuple[LazyCommand, ...] = ()

    def list_commands(self, ctx: click.Context) -> list[str]:
        own = super().list_commands(ctx)
        return own + [c.name for c in self.lazy if c.name not in own]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        found = super().get_command(ctx, cmd_name)
        entry = next((c for c in self.lazy if c.name == cmd_name), None)
        if found is not None or entry is None:
            return found
        if ctx.meta.get(_LISTING):
            # Help lists names and one line each: no need to import the module for that.
            # (short_help: click would cut a long help line to fit the terminal.)
            return TyperCommand(cmd_name, help=entry.summary, short_help=entry.summary)
        self._load(entry.module)
        return super().get_command(ctx, cmd_name)

    def resolve_command(self, ctx: click.Context, args: list[str]
                        ) -> tuple[str | None, click.Command | None, list[str]]:
        """As typer's, but "Did you mean ...?" also considers the commands not loaded yet."""
        try:
            return super().resolve_command(ctx, args)
        except UsageError as exc:
            if args and "Did you mean" not in exc.message:
                matches = get_close_matches(args[0], self.list_commands(ctx))
                if matches:
                    suggestions = ", ".join(f"{m!r}" for m in matches)
                    exc.message = f"{exc.message.rstrip('.')}. Did you mean {suggestions}?"
            raise

    def get_help_option(self, ctx: click.Context) -> TyperOption | None:
        return plain_flag(super().get_help_option(ctx))

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        ctx.meta[_LISTING] = True
        try:
            super().format_help(ctx, formatter)
        finally:
            ctx.meta.pop(_LISTING, None)

    def _load(self, module: str) -> None:
        """Import ``module`` and add every command it registers (it may register several)."""
        holder = typer.Typer(rich_markup_mode=MARKUP_MODE)
        importlib.import_module(module).register(holder)
        group = typer.main.get_group(holder)
        for name, command in group.commands.items():
            self.commands.setdefault(name, command)


class LazyConsole:
    """rich's ``Console``, made on first use: importing rich costs more than a whole
    `layerbot version`, and most commands print nothing or plain lines."""

    def __init__(self, *, stderr: bool = False) -> None:
        self._stderr = stderr
        self._console: Console | None = None

    @property
    def rich(self) -> Console:
        if self._console is None:
            from rich.console import Console

            self._console = Console(stderr=self._stderr)
        return self._console

    def print(self, *objects: object, **options: Any) -> None:
        """``Console.print``; the options are rich's (style, markup, highlight, ...)."""
        self.rich.print(*objects, **options)
