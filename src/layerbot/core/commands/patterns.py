"""User patterns: regular expressions matched in full, and the scanning of for:/on:
values that tells regex syntax from separators.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from layerbot.core.commands.markdown import code_span as _code

#: Longer patterns are refused: nobody needs them, and they bound the cost of matching.
MAX_PATTERN_LENGTH = 200


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """A user's pattern, case-insensitive; ValueError (with re's reason) if invalid.

    Patterns are anchored by matching with ``fullmatch`` (not by wrapping them, which would
    garble re's error positions and break a leading ``(?i)``).
    """
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise ValueError(f"longer than {MAX_PATTERN_LENGTH} characters")
    try:
        return re.compile(pattern, re.IGNORECASE)
    except (re.error, RecursionError, OverflowError, ValueError) as exc:
        raise ValueError(str(exc)) from None


def pattern_matches(pattern: str, value: str) -> bool:
    """Whether the whole of ``value`` matches ``pattern`` (ValueError if it is invalid)."""
    return compile_pattern(pattern).fullmatch(value) is not None


def _pattern_problem(pattern: str) -> str | None:
    try:
        compile_pattern(pattern)
    except ValueError as exc:
        return f"{_code(pattern)} is not a valid regular expression: {exc}"
    return None


@dataclass(frozen=True)
class _Char:
    char: str
    syntax: bool  # neither escaped nor inside a [...] class: `-` and `,` here are separators
    depth: int  # nesting in (...) and {...}


def _scan(value: str) -> tuple[list[_Char], bool]:
    """Classify a pattern's characters; also say whether it ends balanced.

    ``-`` is rewritten to ``/`` and ``,`` splits for:/on: items only where they are not regex
    syntax, so ``zen[2-4]`` and ``zen{2,3}`` keep their meaning.
    """
    out: list[_Char] = []
    escaped = in_class = False
    class_start = depth = 0
    for i, ch in enumerate(value):
        if escaped or ch == "\\" or in_class:
            out.append(_Char(ch, False, depth))
            if in_class and not escaped and ch == "]" and i > class_start + 1:
                in_class = value[class_start + 1 : i] == "^"  # `[^]` is still open
            escaped = not escaped and ch == "\\"
            continue
        if ch == "[":
            in_class, class_start = True, i
            out.append(_Char(ch, False, depth))
            continue
        if ch in ")}":
            depth = max(0, depth - 1)
        out.append(_Char(ch, True, depth))
        if ch in "({":
            depth += 1
    return out, not (escaped or in_class or depth)


def _normalise_target(value: str) -> str:
    """EESSI writes x86_64-amd-zen2 for x86_64/amd/zen2 (a `/` is awkward in some places)."""
    chars, _ = _scan(value)
    return "".join("/" if c.syntax and c.char == "-" else c.char for c in chars)


def _split_items(value: str) -> list[str]:
    chars, _ = _scan(value)
    items: list[str] = []
    current: list[str] = []
    for c in chars:
        if c.syntax and c.char == "," and c.depth == 0:
            items.append("".join(current))
            current = []
        else:
            current.append(c.char)
    items.append("".join(current))
    return items


def _target_pattern_problem(value: str) -> str | None:
    if problem := _pattern_problem(value):
        return problem
    if not _scan(value)[1]:
        # An unbalanced `{` is a literal to Python's re, but would let a rendered
        # `arch=a{,accel=b` read differently; refuse it.
        return f"{_code(value)} has unbalanced brackets"
    return None
