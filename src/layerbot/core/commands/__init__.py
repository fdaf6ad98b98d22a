"""The command grammar: one table of command specs, from which the parser and `bot: help` derive.

A comment holds commands one a line: ``bot: <command> [arguments]`` (``bot:`` and the command
word in any case). Lines in block quotes, fenced or indented code blocks and HTML comments are
not commands, so quoting or documenting a command never triggers it.

Parsing is total: every line that is, or looks like an attempt at, a command gives either a
:class:`Command` or a :class:`CommandError` carrying what is wrong and the closest valid form;
nothing here raises on user input, reads the clock or does I/O.

Build filters accept both syntaxes EESSI users know:

* ``for:arch=<cpu target>[,accel=<vendor/ccXX>] [on:arch=<pattern>[,accel=<pattern>]]`` (v0.9);
* ``arch:<pattern> accel:<pattern>`` (older), plus ``repo:``, ``inst:``, ``exportvariable:``.

Keys match by prefix of three letters or more (``repository:``, ``inst:``, ``architecture=``),
patterns are regular expressions matched in full, and in arch/accel values ``-`` means ``/``.

The package, one concern a module (imports go down this list, never up):

- ``markdown``: code spans, how user text is quoted in replies;
- ``grammar``: the command specs, as data (:data:`COMMANDS`);
- ``patterns``: user patterns and the scanning of for:/on: values;
- ``parsed``: :class:`BuildFilters`, :class:`Command`, :class:`CommandError`;
- ``state``, ``words``: the parser's working state, matching of words;
- ``keyvalues``, ``rules``, ``arguments``: the arguments of one command;
- ``parser``: one line; ``comments``: which lines of a comment count;
- ``help``: error replies and ``bot: help``, generated from the grammar.
"""

from __future__ import annotations

from layerbot.core.commands.comments import parse_comment
from layerbot.core.commands.grammar import COMMANDS, ArgKind, ArgSpec, CommandSpec, command_spec
from layerbot.core.commands.help import help_text, render_error
from layerbot.core.commands.markdown import code_span
from layerbot.core.commands.parsed import (
    BuildFilters,
    Command,
    CommandError,
    ParseResult,
    accel_matches,
    accelerator_list,
)
from layerbot.core.commands.parser import parse_line
from layerbot.core.commands.patterns import MAX_PATTERN_LENGTH, compile_pattern, pattern_matches

__all__ = [
    "COMMANDS",
    "MAX_PATTERN_LENGTH",
    "ArgKind",
    "ArgSpec",
    "BuildFilters",
    "Command",
    "CommandError",
    "CommandSpec",
    "ParseResult",
    "accel_matches",
    "accelerator_list",
    "code_span",
    "command_spec",
    "compile_pattern",
    "help_text",
    "parse_comment",
    "parse_line",
    "pattern_matches",
    "render_error",
]
