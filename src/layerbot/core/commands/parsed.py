"""Parsed values: the build filters, a valid command, a failed one."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from layerbot.core.commands.grammar import _BY_NAME, ArgKind, CommandSpec
from layerbot.core.commands.patterns import pattern_matches


@dataclass(frozen=True)
class BuildFilters:
    """What a build (or deploy) command selects. Patterns are stored normalised (``-``→``/``)."""

    for_arch: str | None = None
    for_accel: str | None = None
    on_arch: str | None = None
    on_accel: str | None = None
    repo: str | None = None
    inst: str | None = None
    #: In the order written; names are unique.
    exportvariables: tuple[tuple[str, str], ...] = ()
    #: Batch-system options (``batch:time=04:00:00``), in the order written; names unique.
    batch_options: tuple[tuple[str, str], ...] = ()
    #: Written with the older ``arch:``/``accel:``. It changes the meaning: there an absent
    #: ``accel:`` means any accelerator, while ``for:arch=X`` alone means a CPU-only target.
    legacy: bool = False

    @property
    def accel_list(self) -> tuple[str, ...]:
        """The accelerators of ``for:...,accel=A+B+C`` (one job for all), else ``()``."""
        return accelerator_list(self.for_accel) if not self.legacy else ()

    @property
    def cross(self) -> bool:
        """``on:`` names other nodes than the target's own."""
        return self.on_arch is not None and (self.on_arch, self.on_accel) != (
            self.for_arch,
            self.for_accel,
        )

    @property
    def empty(self) -> bool:
        return self == BuildFilters() or self == BuildFilters(legacy=True)

    @property
    def exportvars(self) -> dict[str, str]:
        return dict(self.exportvariables)

    def tokens(self) -> list[str]:
        out: list[str] = []
        if self.legacy:
            out += [f"arch:{self.for_arch}"] if self.for_arch is not None else []
            out += [f"accel:{self.for_accel}"] if self.for_accel is not None else []
        elif self.for_arch is not None:
            out.append("for:" + _target_value(self.for_arch, self.for_accel))
        elif self.for_accel is not None:  # only built by hand; the parser always sets arch
            out.append(f"accel:{self.for_accel}")
        if self.on_arch is not None:
            out.append("on:" + _target_value(self.on_arch, self.on_accel))
        out += [f"repo:{self.repo}"] if self.repo is not None else []
        out += [f"inst:{self.inst}"] if self.inst is not None else []
        out += [f"exportvariable:{name}={value}" for name, value in self.exportvariables]
        out += [f"batch:{name}={value}" for name, value in self.batch_options]
        return out

    def render(self) -> str:
        return " ".join(self.tokens())


#: One accelerator written literally (``nvidia/cc90``, ``amd/gfx90a``): no regex syntax.
_LITERAL_ACCEL = re.compile(r"[A-Za-z0-9_]+(?:/[A-Za-z0-9_]+)+")


def accelerator_list(value: str | None) -> tuple[str, ...]:
    """``nvidia/cc70+nvidia/cc90`` -> its items; ``()`` for one accelerator or a pattern.

    EESSI's ``bot/build.sh`` reads such a ``+``-joined list from ``cfg/job.cfg`` and builds
    for every generation in one job. A ``+`` is also a regex quantifier, so a value is a list
    only when every item is a literal ``vendor/name`` (``nvidia/cc[78]0+`` stays a pattern).
    """
    if value is None or "+" not in value:
        return ()
    items = tuple(value.split("+"))
    if len(items) < 2 or not all(_LITERAL_ACCEL.fullmatch(item) for item in items):
        return ()
    return items


def accel_matches(pattern: str, accelerator: str) -> bool:
    """A filter's accelerator against a job's or node's: a list matches the same list (in
    any order), a pattern as usual."""
    wanted = accelerator_list(pattern)
    if wanted:
        return sorted(wanted) == sorted(accelerator_list(accelerator) or (accelerator,))
    return pattern_matches(pattern, accelerator)


def _target_value(arch: str, accel: str | None) -> str:
    return f"arch={arch}" + (f",accel={accel}" if accel is not None else "")


@dataclass(frozen=True)
class Command:
    """A valid command. ``line`` and ``lineno`` do not take part in equality."""

    name: str
    filters: BuildFilters = field(default_factory=BuildFilters)
    job_id: int | None = None
    #: Canonical flag words given: last_build, all, failed, dry-run, force.
    flags: frozenset[str] = frozenset()
    #: ``sha:`` as written, lower-cased: a prefix of the commit the author means.
    sha: str | None = None
    line: str = field(default="", compare=False)
    lineno: int = field(default=0, compare=False)

    @property
    def spec(self) -> CommandSpec:
        return _BY_NAME[self.name]

    def has(self, flag: str) -> bool:
        return flag in self.flags

    @property
    def last_build(self) -> bool:
        return "last_build" in self.flags

    @property
    def all(self) -> bool:
        return "all" in self.flags

    @property
    def failed(self) -> bool:
        return "failed" in self.flags

    @property
    def dry_run(self) -> bool:
        return "dry-run" in self.flags

    @property
    def force(self) -> bool:
        return "force" in self.flags

    def render(self) -> str:
        """The canonical line; it parses back to an equal command."""
        tokens: list[str] = [f"bot: {self.name}"]
        filter_tokens = self.filters.tokens()
        first_filter = next((a.key for a in self.spec.args if a.kind is ArgKind.FILTER), None)
        for arg in self.spec.args:
            if arg.key == first_filter:
                tokens += filter_tokens  # all filters render together, in a fixed order
            elif arg.kind is ArgKind.JOB and self.job_id is not None:
                tokens.append(f"job:{self.job_id}")
            elif arg.kind is ArgKind.FLAG and arg.key in self.flags:
                tokens.append(arg.key)
            elif arg.kind is ArgKind.PIN and self.sha is not None:
                tokens.append(f"sha:{self.sha}")
        return " ".join(tokens)


@dataclass(frozen=True)
class CommandError:
    """A line meant as a command that is not a valid one."""

    line: str
    lineno: int
    message: str
    #: The closest valid form, a whole line (may hold a <placeholder> when a value is missing).
    suggestion: str | None = None
    #: The command it was meant to be, when that is known.
    command: str | None = None


ParseResult = Command | CommandError
