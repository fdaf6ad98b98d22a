"""Comments: which lines of a comment count (not code, quotes or HTML comments)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import replace

from layerbot.core.commands.parsed import ParseResult
from layerbot.core.commands.parser import parse_line

_FENCE_OPEN = re.compile(r"\s*(?P<fence>`{3,}|~{3,})(?P<info>.*)", re.S)
_QUOTE = re.compile(r"\s*>")


def parse_comment(text: str) -> list[ParseResult]:
    """Every command (or failed attempt at one) in a comment, in order."""
    results: list[ParseResult] = []
    for lineno, raw, visible in _visible_lines(text):
        result = parse_line(visible, lineno)
        if result is not None:
            results.append(replace(result, line=raw))
    return results


def _visible_lines(text: str) -> Iterator[tuple[int, str, str]]:
    """(line number, line as written, its text without HTML comments) of the lines that can
    hold commands: not in fenced or indented code, block quotes or HTML comments.

    A simplification of CommonMark that errs on the side of "not a command": any fence opens
    a block whatever its indentation, an unclosed fence or HTML comment runs to the end, and a
    line indented by 4+ columns after a blank line is code.
    """
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    fence: str | None = None
    in_comment = False
    in_code = False
    block_start = True  # whether an indented code block may start here
    for lineno, raw in enumerate(lines, 1):
        if fence is not None:
            if _closes(raw, fence):
                fence, block_start = None, True
            continue
        visible, in_comment = _strip_html_comments(raw, in_comment)
        if not visible.strip():
            block_start = True
            continue
        expanded = visible.expandtabs(4)
        if len(expanded) - len(expanded.lstrip(" ")) >= 4 and (block_start or in_code):
            in_code = True
            continue
        in_code = False
        if (fence := _opens(visible)) is not None or _QUOTE.match(visible):
            # A line after a quote is its lazy continuation when indented; treat as a break.
            block_start = True
            continue
        block_start = False
        yield lineno, raw, visible


def _opens(line: str) -> str | None:
    m = _FENCE_OPEN.fullmatch(line)
    if m is None or (m["fence"][0] == "`" and "`" in m["info"]):
        return None  # ```code``` on one line is a code span, not a fence
    return m["fence"]


def _closes(line: str, fence: str) -> bool:
    stripped = line.strip()
    return len(stripped) >= len(fence) and set(stripped) == {fence[0]}


def _strip_html_comments(line: str, inside: bool) -> tuple[str, bool]:
    out: list[str] = []
    pos = 0
    while True:
        if inside:
            end = line.find("-->", pos)
            if end < 0:
                return "".join(out), True
            pos, inside = end + 3, False
        start = line.find("<!--", pos)
        if start < 0:
            out.append(line[pos:])
            return "".join(out), False
        out.append(line[pos:start])
        pos, inside = start + 4, True
