"""The parser's working state: the accumulator of one line's arguments and a problem
found in them (with the fix that gets closer to a valid line).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from layerbot.core.commands.parsed import BuildFilters


@dataclass(frozen=True)
class _Problem:
    message: str
    #: Replace token i by these tokens to get closer to a valid line.
    fix: tuple[int, tuple[str, ...]] | None = None
    #: The fix holds a <placeholder>: show it, do not parse it again.
    placeholder: bool = False


@dataclass
class _Acc:
    """Mutable accumulator while reading one line's arguments."""

    values: dict[str, str | None] = field(default_factory=dict)
    exports: list[tuple[str, str]] = field(default_factory=list)
    batch: list[tuple[str, str]] = field(default_factory=list)
    job_id: int | None = None
    sha: str | None = None
    flags: set[str] = field(default_factory=set)
    #: Token index of each argument key given, for messages and fixes.
    at: dict[str, int] = field(default_factory=dict)

    def filters(self) -> BuildFilters:
        v = self.values
        legacy = "architecture" in self.at or "accelerator" in self.at
        return BuildFilters(
            for_arch=v.get("for_arch"),
            for_accel=v.get("for_accel"),
            on_arch=v.get("on_arch"),
            on_accel=v.get("on_accel"),
            repo=v.get("repo"),
            inst=v.get("inst"),
            exportvariables=tuple(self.exports),
            batch_options=tuple(self.batch),
            legacy=legacy,
        )


_ValueParser = Callable[[_Acc, int, str], "_Problem | None"]
