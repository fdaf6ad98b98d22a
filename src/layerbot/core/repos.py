"""Which repositories the bot serves (``github.repositories``): a pure match, no I/O.

An entry is ``owner/name``, ``owner/*`` (every repository of an owner) or ``*`` (every
repository of every installation: an explicit choice, never a default). GitHub treats
names case-insensitively, so the match does too.
"""

from __future__ import annotations

from collections.abc import Sequence
from fnmatch import fnmatchcase

__all__ = ["ANY", "exact_names", "is_allowed", "validate_entry"]

#: The entry that allows every repository.
ANY = "*"


def validate_entry(entry: str) -> str:
    """``entry`` if it is a valid allow-list entry, else ValueError saying what is."""
    owner, slash, name = entry.partition("/")
    if entry == ANY:
        return entry
    if not slash or not owner or not name or "/" in name or "*" in owner or (
            "*" in name and name != "*"):
        raise ValueError(f"{entry!r} is not owner/name, owner/* or *")
    return entry


def is_allowed(entries: Sequence[str], repo: str) -> bool:
    """Whether events of ``repo`` ("owner/name") are served; an empty list serves none."""
    name = repo.lower()
    return bool(repo) and any(fnmatchcase(name, e.lower()) for e in entries)


def exact_names(entries: Sequence[str]) -> list[str]:
    """The entries that name one repository (the ones whose roles decide instance-wide
    actions such as pause): a wildcard names nobody's roles."""
    return [e for e in entries if "*" not in e]
