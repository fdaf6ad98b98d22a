"""Markdown code spans: how user text is quoted safely in every reply."""

from __future__ import annotations

import re


def code_span(text: str, limit: int = 80) -> str:
    """An inline code span; user text inside one cannot @-mention or inject markdown."""
    text = " ".join(text.split())  # one line; a code span cannot hold a line break
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    if not text:
        return "(nothing)"
    run = max((len(m) for m in re.findall(r"`+", text)), default=0)
    ticks = "`" * (run + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{ticks}{pad}{text}{pad}{ticks}"
