"""Matching words: flag spellings, key prefixes (EESSI's 3-letter rule) and typos."""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence


def _norm_word(word: str) -> str:
    return word.lower().replace("-", "_")


def _flag_key(word: str) -> str:
    """last_build, last-build and LastBuild all name the same flag."""
    return re.sub(r"[-_]", "", word.lower())


def _resolve_prefix(word: str, names: Sequence[str]) -> str | None:
    """EESSI's rule: a key may be shortened to any prefix of 3+ letters (or be whole)."""
    word = word.lower()
    for name in names:
        if name.startswith(word) and len(word) >= min(3, len(name)):
            return name
    return None


def _close(word: str, candidates: Sequence[str], cutoff: float = 0.6) -> str | None:
    matches = difflib.get_close_matches(word.lower()[:60], list(candidates), n=1, cutoff=cutoff)
    return matches[0] if matches else None
