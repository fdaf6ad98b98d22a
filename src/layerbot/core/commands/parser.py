"""Parsing one line: a command, an error for a line meant as one (with the closest valid
form), or nothing.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from layerbot.core.commands.arguments import _parse_args
from layerbot.core.commands.grammar import _ALL_FLAGS, _BY_NAME, CommandSpec
from layerbot.core.commands.markdown import code_span as _code
from layerbot.core.commands.parsed import Command, CommandError, ParseResult
from layerbot.core.commands.state import _Problem
from layerbot.core.commands.words import _close, _flag_key, _norm_word

#: A command line (EESSI: ``^bot:[ ]?(.*)$``; here also indented and in any case).
_COMMAND = re.compile(r"\s*bot:\s?(?P<rest>.*)", re.IGNORECASE | re.DOTALL)
#: ``- bot: build`` in a list: meant as a command, but not one.
_LIST_ITEM = re.compile(r"\s*(?:[-*+]|[0-9]{1,9}[.)])\s+bot:\s?(?P<rest>.*)", re.I | re.S)
#: ``bot build``, ``bot- build``, ``@bot build``: perhaps meant as a command.
_NEAR = re.compile(r"\s*[@/]?bot(?P<sep>[^\w\n]+)(?P<word>[^\W\d_][\w-]*)(?P<rest>.*)", re.I | re.S)


def parse_line(line: str, lineno: int = 1) -> ParseResult | None:
    """One line: a command, an error for a line meant as one, or None for anything else."""
    if m := _COMMAND.fullmatch(line):
        return _parse_command(m["rest"], line, lineno)
    if m := _LIST_ITEM.fullmatch(line):
        why = "a command must begin its line; remove the list marker"
        return _attempt(m["rest"], line, lineno, why)
    if m := _NEAR.fullmatch(line):
        return _attempt(
            m["word"] + m["rest"], line, lineno, f"a command begins with {_code('bot:')}"
        )
    return None


def _parse_command(rest: str, line: str, lineno: int) -> ParseResult:
    tokens = rest.split()
    if not tokens:
        return CommandError(line, lineno, f"no command after {_code('bot:')}", "bot: help")
    spec = _BY_NAME.get(_norm_word(tokens[0]))
    if spec is None:
        return _unknown_command(tokens, line, lineno)
    result = _parse_args(spec, tokens[1:])
    if isinstance(result, _Problem):
        suggestion = _suggest(spec, tokens[1:], result)
        return CommandError(line, lineno, result.message, suggestion, spec.name)
    return Command(
        name=spec.name,
        filters=result.filters(),
        job_id=result.job_id,
        flags=frozenset(result.flags),
        sha=result.sha,
        line=line,
        lineno=lineno,
    )


def _unknown_command(tokens: Sequence[str], line: str, lineno: int) -> CommandError:
    word = tokens[0]
    guess = _close(_norm_word(word), list(_BY_NAME))
    if guess is None:
        names = ", ".join(_code(name) for name in _BY_NAME)
        return CommandError(
            line, lineno, f"unknown command {_code(word)}; the commands are {names}", "bot: help"
        )
    spec = _BY_NAME[guess]
    return CommandError(
        line,
        lineno,
        f"unknown command {_code(word)}; did you mean {_code('bot: ' + guess)}?",
        _suggest_line(spec, tokens[1:]),
        guess,
    )


def _attempt(text: str, line: str, lineno: int, why: str) -> CommandError | None:
    """A line that is not a command but looks meant as one; prose that mentions bot is not."""
    tokens = text.split()
    if not tokens or not all(_looks_like_argument(t) for t in tokens[1:]):
        return None
    word = _norm_word(tokens[0])
    name = word if word in _BY_NAME else _close(word, list(_BY_NAME), cutoff=0.75)
    if name is None:
        return None
    if name != word:
        why += f", and {_code(tokens[0])} is not a command: did you mean {_code(name)}?"
    return CommandError(line, lineno, why, _suggest_line(_BY_NAME[name], tokens[1:]), name)


def _looks_like_argument(token: str) -> bool:
    return ":" in token or "=" in token or _flag_key(token) in {_flag_key(f) for f in _ALL_FLAGS}


def _suggest_line(spec: CommandSpec, args: Sequence[str]) -> str:
    result = _parse_args(spec, args)
    if isinstance(result, _Problem):
        return _suggest(spec, args, result)
    return _join(spec.name, args)


def _suggest(spec: CommandSpec, args: Sequence[str], problem: _Problem) -> str:
    """Apply fixes one after the other until the line parses: the closest valid form."""
    tokens = list(args)
    for _ in range(8):
        if problem.fix is None:
            break
        i, replacement = problem.fix
        tokens[i : i + 1] = replacement
        if problem.placeholder:
            return _join(spec.name, tokens)
        result = _parse_args(spec, tokens)
        if not isinstance(result, _Problem):
            return _join(spec.name, tokens)
        problem = result
    return spec.usage


def _join(name: str, tokens: Sequence[str]) -> str:
    return " ".join([f"bot: {name}", *tokens])
